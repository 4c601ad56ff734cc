//! Every acknowledged vote survives `kill -9` of the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moat_app::wire::RaterView;
use moat_server::client::RaterClient;
use tokio::process::Child;

use crate::support::{open_study_at, ADMIN_TOKEN};

async fn start(data_dir: &std::path::Path) -> (Child, String) {
    moat_server::bench::spawn_server_process(
        std::path::Path::new(env!("CARGO_BIN_EXE_moat")),
        data_dir,
        ADMIN_TOKEN,
    )
    .await
    .expect("moat starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_votes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base) = start(dir.path()).await;
    let http = reqwest::Client::new();
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(ADMIN_TOKEN);
    let opened = open_study_at(
        &http,
        &base,
        ADMIN_TOKEN,
        "kill",
        400,
        serde_json::json!({ "items_per_rater": 1000 }),
    )
    .await;
    assert_eq!(opened.status(), 200);

    // Eight raters vote as fast as they can; each remembers the votes the server acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let base = base.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // (votes acknowledged, comparisons a vote answered with)
            let (mut acknowledged, mut issued) = (Vec::new(), Vec::new());
            let Ok(rater) = RaterClient::join(&base, "kill", None).await else {
                return (acknowledged, issued);
            };
            let Ok(Some(mut comparison)) = rater.next_comparison().await else {
                return (acknowledged, issued);
            };
            while !stop.load(Ordering::Relaxed) {
                // The vote answers with the next comparison, written in the vote's transaction.
                match rater.vote_then_next(&comparison.assignment, "left").await {
                    Ok(RaterView::Compare(next)) => {
                        acknowledged.push(comparison.assignment);
                        issued.push(next.assignment.clone());
                        comparison = next;
                    }
                    _ => break,
                }
            }
            (acknowledged, issued)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL while votes are in flight.
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut acknowledged, mut issued) = (Vec::new(), Vec::new());
    for task in tasks {
        let (votes, comparisons) = task.await.unwrap();
        acknowledged.extend(votes);
        issued.extend(comparisons);
    }
    assert!(
        acknowledged.len() >= 20,
        "too few votes before the kill to mean anything: {}",
        acknowledged.len()
    );

    let (mut server, base) = start(dir.path()).await;
    let report: serde_json::Value = admin(http.get(format!("{base}/api/v1/studies/kill")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = report["summary"]["votes"].as_i64().unwrap() as usize;
    // Votes in flight at the kill may or may not have landed; every acknowledged one must have.
    assert!(
        stored >= acknowledged.len(),
        "{stored} votes stored, {} acknowledged",
        acknowledged.len()
    );
    let store = moat_server::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("moat.db").display()
    ))
    .await
    .unwrap();
    let study = store.study("kill").await.unwrap();
    let stored_ids: std::collections::HashSet<String> = store
        .voted_assignment_ids(study.id)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|a| !stored_ids.contains(*a))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged votes lost: {missing:?}",
        missing.len()
    );
    // Every comparison a vote answered with was committed with that vote.
    let db = rusqlite::Connection::open(dir.path().join("moat.db")).unwrap();
    let mut rows = db.prepare("SELECT public_id FROM assignments").unwrap();
    let written: std::collections::HashSet<String> = rows
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lost: Vec<&String> = issued.iter().filter(|a| !written.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} comparisons answered with were lost: {lost:?}",
        lost.len()
    );
    // The counts the assigner's memory is rebuilt from agree with the rows after the kill: each
    // prompt's and each pair's showing count is its number of comparisons.
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM prompts p WHERE p.times_assigned <> \
             (SELECT COUNT(*) FROM assignments a WHERE a.prompt_id = p.id)"
        ),
        0,
        "a prompt's count differs from its comparisons"
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM (SELECT model_low, model_high, SUM(shown) AS shown \
             FROM pair_counts GROUP BY model_low, model_high) c WHERE c.shown <> \
             (SELECT COUNT(*) FROM assignments a WHERE a.kind = 'regular' \
              AND a.model_low = c.model_low AND a.model_high = c.model_high)"
        ),
        0,
        "a pair's count differs from its comparisons"
    );
    let (memory, read) = store.assigner_snapshots(study.id).unwrap();
    assert!(memory.is_none(), "nothing chosen yet in this process");
    assert_eq!(
        read.0.iter().map(|(times, _)| times).sum::<i64>(),
        count("SELECT COUNT(*) FROM assignments")
    );
    server.start_kill().unwrap();
}
