//! Several `moat serve` processes on one PostgreSQL database, behind no sticky load balancer: two
//! real server processes (the `moat` binary, started as the benchmark starts it), raters whose
//! requests alternate between them, and one rater whose votes reach both at the same moment.

use std::path::Path;

use moat_server::client::{ClientError, RaterClient};
use sqlx::{Connection, Row};

use crate::support::{open_study_at, sample_jsonl, TestDb, ADMIN_TOKEN};

const ITEMS_PER_RATER: usize = 5;
const PROMPTS: usize = 12;
const RATERS: usize = 12;

/// Starts `moat serve` as its own process on `database_url`; returns it and its base URL.
async fn start_process(database_url: &str, data_dir: &Path) -> (tokio::process::Child, String) {
    moat_server::bench::spawn_server_process_with(
        Path::new(env!("CARGO_BIN_EXE_moat")),
        data_dir,
        ADMIN_TOKEN,
        &["--database-url", database_url],
        None,
    )
    .await
    .expect("moat serve starts")
}

/// One number from the database.
async fn count(connection: &mut sqlx::AnyConnection, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&mut *connection)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_get::<i64, _>(0)
        .unwrap()
}

/// A rater whose every request goes to the process the last one did not: the comparison from one,
/// the vote to the other. Returns the votes the servers acknowledged.
async fn alternating_rater(first: RaterClient, second: RaterClient) -> usize {
    let processes = [first, second];
    let mut acknowledged = 0;
    for step in 0usize.. {
        let ask = &processes[step % 2];
        let cast = &processes[(step + 1) % 2];
        let Some(comparison) = ask.next_comparison().await.expect("next comparison") else {
            break;
        };
        cast.vote(&comparison.assignment, "left")
            .await
            .expect("a vote on the other process");
        acknowledged += 1;
    }
    acknowledged
}

/// Whether an error is the 409 a second, different vote on one comparison gets.
fn is_conflict(result: &Result<(), ClientError>) -> bool {
    matches!(result, Err(ClientError::Status { status: 409, .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_count_every_vote_once() {
    let db = TestDb::postgres().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both start at once on the empty database: their migrations take turns (sqlx's advisory lock).
    let ((mut process_a, a), (mut process_b, b)) = tokio::join!(
        start_process(db.url(), dir_a.path()),
        start_process(db.url(), dir_b.path())
    );
    let http = reqwest::Client::new();
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(ADMIN_TOKEN);
    // The study is made on one process and opened on the other.
    let settings = serde_json::json!({
        "items_per_rater": ITEMS_PER_RATER,
        "sessions_per_ip": 0,
        "consents_per_minute": 0,
    });
    let created = admin(http.post(format!("{a}/api/v1/studies")))
        .json(&serde_json::json!({ "slug": "scale", "title": "Scale", "settings": settings }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let imported = admin(http.post(format!("{a}/api/v1/studies/scale/import")))
        .body(sample_jsonl(PROMPTS))
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);
    let opened = admin(http.post(format!("{b}/api/v1/studies/scale/status")))
        .json(&serde_json::json!({ "status": "open" }))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    // Process A read the study as a draft when it imported; its cached row lives a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Raters join on either process and then alternate, all at once.
    let mut raters = Vec::new();
    for i in 0..RATERS {
        let (home, away) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (home, away) = (home.clone(), away.clone());
        raters.push(tokio::spawn(async move {
            let first = RaterClient::join(&home, "scale", None)
                .await
                .expect("consent");
            let second = first.rebased(&away).unwrap();
            alternating_rater(first, second).await
        }));
    }

    // Meanwhile one rater's requests reach both processes at the same moment.
    let racer_a = RaterClient::join(&a, "scale", None).await.unwrap();
    let racer_b = racer_a.rebased(&b).unwrap();
    let (shown_a, shown_b) = tokio::join!(racer_a.next_comparison(), racer_b.next_comparison());
    let (shown_a, shown_b) = (shown_a.unwrap().unwrap(), shown_b.unwrap().unwrap());
    assert_eq!(
        shown_a.assignment, shown_b.assignment,
        "one unvoted comparison at a time, whichever process is asked"
    );
    // The same vote twice at once: both acknowledged, counted once.
    let (first, second) = tokio::join!(
        racer_a.vote(&shown_a.assignment, "left"),
        racer_b.vote(&shown_a.assignment, "left")
    );
    first.expect("the same vote on process A");
    second.expect("the same vote on process B");
    // Two different votes at once: one wins, the other is the 409 a serial second vote gets.
    let next = racer_b.next_comparison().await.unwrap().unwrap();
    assert_ne!(next.assignment, shown_a.assignment);
    let (left, right) = tokio::join!(
        racer_a.vote(&next.assignment, "left"),
        racer_b.vote(&next.assignment, "right")
    );
    assert!(
        (left.is_ok() && is_conflict(&right)) || (right.is_ok() && is_conflict(&left)),
        "one vote recorded, the other refused: {left:?} / {right:?}"
    );
    let racer_votes = 2 + alternating_rater(racer_a, racer_b).await;
    assert_eq!(racer_votes, ITEMS_PER_RATER);

    for rater in raters {
        assert_eq!(
            rater.await.unwrap(),
            ITEMS_PER_RATER,
            "every rater gets exactly items_per_rater comparisons"
        );
    }
    let total_raters = (RATERS + 1) as i64;
    let total_votes = total_raters * ITEMS_PER_RATER as i64;

    // The database agrees with what the raters were told, and every rule holds.
    let mut connection = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    assert_eq!(
        count(&mut connection, "SELECT COUNT(*) FROM votes").await,
        total_votes
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT COUNT(*) FROM (SELECT assignment_id FROM votes GROUP BY assignment_id \
             HAVING COUNT(*) > 1) AS twice"
        )
        .await,
        0,
        "no comparison voted twice"
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT COUNT(*) FROM (SELECT rater_id, prompt_id FROM assignments \
             GROUP BY rater_id, prompt_id HAVING COUNT(*) > 1) AS again"
        )
        .await,
        0,
        "no prompt shown twice to one rater"
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT COUNT(*) FROM (SELECT rater_id FROM assignments GROUP BY rater_id \
             HAVING COUNT(*) <> 5) AS off"
        )
        .await,
        0,
        "every rater got exactly items_per_rater comparisons"
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT COUNT(*) FROM assignments WHERE state = 'issued'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT CAST(COALESCE(SUM(shown), 0) AS BIGINT) FROM pair_counts"
        )
        .await,
        total_votes,
        "pair counts match the comparisons shown"
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT COUNT(*) FROM prompts p WHERE p.times_assigned <> \
             (SELECT COUNT(*) FROM assignments a WHERE a.prompt_id = p.id)"
        )
        .await,
        0,
        "every prompt's count matches its comparisons"
    );
    connection.close().await.unwrap();

    // The admin API and page of either process show the exact counts.
    for base in [&a, &b] {
        let studies: serde_json::Value = admin(http.get(format!("{base}/api/v1/studies")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(studies[0]["votes"], total_votes, "{base}: {studies}");
        assert_eq!(studies[0]["raters"], total_raters, "{base}: {studies}");
    }
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{a}/rpc/admin_login"))
        .header("Origin", &a)
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let session = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("moat_admin="))
        .expect("the login sets the admin cookie");
    let cookie = session.split(';').next().unwrap().to_string();
    // The session made on A is valid on B: it is a row, not process memory.
    let page = http
        .get(format!("{b}/admin/studies/scale"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected =
        format!("{PROMPTS} prompts, 3 models, {total_raters} raters, {total_votes} votes");
    assert!(page.contains(&expected), "the admin page on B: {page}");

    // The first consents that need the address key reach both processes at once: each process
    // reads or makes the key then, and they must agree, or one address would get a session per
    // process.
    let limited =
        serde_json::json!({ "items_per_rater": 1, "sessions_per_ip": 1, "consents_per_minute": 0 });
    let opened = open_study_at(&http, &a, ADMIN_TOKEN, "limited", 2, limited).await;
    assert_eq!(opened.status(), 200);
    let consents = futures::future::join_all((0..6).map(|i| {
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { RaterClient::join(&base, "limited", None).await }
    }))
    .await;
    let accepted = consents.iter().filter(|c| c.is_ok()).count();
    let limited_out = consents
        .iter()
        .filter(|c| matches!(c, Err(ClientError::Status { status: 429, .. })))
        .count();
    assert_eq!(
        (accepted, limited_out),
        (1, 5),
        "one session per address over both processes: {:?}",
        consents
            .iter()
            .map(|c| c.as_ref().err())
            .collect::<Vec<_>>()
    );

    // A status change through one process reaches the other within its cache's second.
    let closed = admin(http.post(format!("{a}/api/v1/studies/scale/status")))
        .json(&serde_json::json!({ "status": "closed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = RaterClient::join(&b, "scale", None).await;
    assert!(
        matches!(late, Err(ClientError::Status { status: 409, .. })),
        "a consent on B after A closed the study: {:?}",
        late.err()
    );

    process_a.start_kill().unwrap();
    process_b.start_kill().unwrap();
    let _ = process_a.wait().await;
    let _ = process_b.wait().await;
    db.cleanup().await;
}

/// `moat bench votes --postgres URL --processes 2`: the raters' requests spread over two server
/// processes on a fresh database, every vote acknowledged without an error, the database dropped
/// after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vote_benchmark_runs_two_processes_on_postgres() {
    let server_url = std::env::var("MOAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["bench", "votes", "--postgres", &server_url])
        .args(["--processes", "2", "--raters", "4", "--seconds", "2"])
        .args(["--prompts", "40", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["database"], "postgres", "{report}");
    assert_eq!(report["processes"], 2, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["votes"].as_u64().unwrap() > 0, "{report}");

    // Refused without PostgreSQL: a SQLite file is one process's.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["bench", "votes", "--processes", "2", "--seconds", "1"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--processes 2 needs --postgres"));
}
