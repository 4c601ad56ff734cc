//! Rigged and careless raters (`moat_stats::rigging`) through the server: the JSON API's leaderboard
//! with `drop_flagged=true` leaves out a vote-rigger's votes, the default counts them, and the rater
//! table names the rigger's flag. On both backends.

use moat_app::backend::Backend;
use moat_server::domain::StudySlug;

use crate::on_both_backends;
use crate::support::spawn_server;

const TARGET: &str = "target-llm";
const OTHERS: [&str; 3] = ["alpha-llm", "beta-llm", "gamma-llm"];
const RIGGER: &str = "judge-rigger";
const JUDGES: usize = 30;
const RIGGER_VOTES: usize = 40;

/// One Arena battle line; `a_wins` says whether `model_a` won. Responses never name a model (an
/// identity flag would take the vote out of the default leaderboard and muddle the counts).
fn battle(n: usize, judge: &str, model_a: &str, model_b: &str, a_wins: bool) -> String {
    let conversation = |which: &str| {
        serde_json::json!([
            {"role": "user", "content": format!("Question {n}?")},
            {"role": "assistant", "content": format!("The {which} reply to question {n}.")}
        ])
    };
    serde_json::json!({
        "question_id": format!("q{n}"),
        "model_a": model_a,
        "model_b": model_b,
        "winner": if a_wins { "model_a" } else { "model_b" },
        "judge": judge,
        "conversation_a": conversation("first"),
        "conversation_b": conversation("second"),
    })
    .to_string()
}

/// Thirty honest judges with six votes each: alpha beats beta and gamma, beta beats gamma, four
/// times out of five (each judge disagrees with the crowd at most once), and the target wins half of
/// its battles. Then a rigger with the omnipresent strategy: every battle with the target goes to
/// the target, every other one to the crowd's favourite.
fn battles() -> String {
    let mut lines = Vec::new();
    let mut n = 0;
    let mut push = |lines: &mut Vec<String>, judge: &str, winner: &str, loser: &str| {
        n += 1;
        // Alternate sides, so nobody looks one-sided.
        lines.push(if n % 2 == 0 {
            battle(n, judge, winner, loser, true)
        } else {
            battle(n, judge, loser, winner, false)
        });
    };
    let ordered = [(0, 1), (0, 2), (1, 2)];
    for judge in 0..JUDGES {
        let name = format!("judge-{judge:02}");
        for (pair, &(w, l)) in ordered.iter().enumerate() {
            let (w, l) = (OTHERS[w], OTHERS[l]);
            if judge % 5 == pair {
                push(&mut lines, &name, l, w);
            } else {
                push(&mut lines, &name, w, l);
            }
        }
        for (i, other) in OTHERS.iter().enumerate() {
            if (judge + i) % 2 == 0 {
                push(&mut lines, &name, TARGET, other);
            } else {
                push(&mut lines, &name, other, TARGET);
            }
        }
    }
    for i in 0..RIGGER_VOTES {
        if i % 5 < 2 {
            push(&mut lines, RIGGER, TARGET, OTHERS[i % 3]);
        } else {
            let (w, l) = ordered[i % 3];
            push(&mut lines, RIGGER, OTHERS[w], OTHERS[l]);
        }
    }
    lines.join("\n") + "\n"
}

fn rating(analysis: &serde_json::Value, model: &str) -> f64 {
    analysis["leaderboard"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .unwrap()["rating"]
        .as_f64()
        .unwrap()
}

async fn drop_flagged_leaves_out_a_riggers_votes(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("battles.jsonl");
    std::fs::write(&path, battles()).unwrap();
    let site = dir.path().join("no-site");
    let server = spawn_server(url, &site).await;
    let report = moat_server::import::import_dataset(
        &server.backend.store,
        &StudySlug::parse("rig").unwrap(),
        moat_exports::import::ImportFormat::Arena,
        &path,
        &[],
    )
    .await
    .unwrap();
    let all_votes = JUDGES * 6 + RIGGER_VOTES;
    assert_eq!(report.votes_imported as usize, all_votes, "{report}");

    // By default the rigger's votes count, and the analysis names the rigger and why.
    let counted = server
        .admin_get_json("/api/v1/studies/rig/leaderboard?rounds=0")
        .await;
    assert_eq!(counted["leaderboard"]["n_battles"], all_votes, "{counted}");
    assert_eq!(counted["flagged_raters_left_out"], false);
    assert_eq!(counted["flagged_rater_votes"], RIGGER_VOTES);
    let flagged = counted["flagged_raters"].as_array().unwrap();
    assert_eq!(flagged.len(), 1, "only the rigger: {flagged:?}");
    assert_eq!(flagged[0]["rater"], RIGGER);
    let flag = &flagged[0]["flags"][0];
    assert_eq!(flag["kind"], "model_loyalty", "{flag}");
    assert!(
        flag["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("voted for {TARGET} in 16 of 16")),
        "{flag}"
    );

    // With drop_flagged=true they are left out, and the target loses what the rigger gave it.
    let dropped = server
        .admin_get_json("/api/v1/studies/rig/leaderboard?rounds=0&drop_flagged=true")
        .await;
    assert_eq!(dropped["leaderboard"]["n_battles"], JUDGES * 6, "{dropped}");
    assert_eq!(dropped["flagged_raters_left_out"], true);
    assert_eq!(dropped["flagged_raters"][0]["rater"], RIGGER);
    let (with, without) = (rating(&counted, TARGET), rating(&dropped, TARGET));
    assert!(
        with > without + 20.0,
        "the rigger's 16 wins lift the target: {with} with them, {without} without"
    );

    // The admin's leaderboard page switches the same way.
    let page = server.backend.leaderboard("rig", true).await.unwrap();
    assert_eq!(page.votes as usize, JUDGES * 6);
    assert!(page.flagged_raters_left_out);
    assert_eq!(page.flagged_raters, 1);
    let page = server.backend.leaderboard("rig", false).await.unwrap();
    assert_eq!(page.votes as usize, all_votes);
    assert!(page
        .sections
        .iter()
        .any(|s| s.title == "Flagged raters" && s.text.contains("40 votes")));

    // The rater table (the study report) lists the flag on the rigger's row and on no other.
    let study = server.admin_get_json("/api/v1/studies/rig").await;
    let raters = study["raters"].as_array().unwrap();
    assert_eq!(raters.len(), JUDGES + 1);
    for rater in raters {
        let flags = rater["flags"].as_array().unwrap();
        if rater["pseudonym"] == RIGGER {
            assert_eq!(flags.len(), 1, "{rater}");
            assert_eq!(flags[0]["kind"], "model_loyalty");
            assert!(flags[0]["reason"].as_str().unwrap().contains(TARGET));
        } else {
            assert!(flags.is_empty(), "{rater}");
        }
    }
    server.backend.store.close().await;
}
on_both_backends!(drop_flagged_leaves_out_a_riggers_votes);

/// A rater marked excluded is already out of every figure: the tests neither see nor flag them,
/// so `drop_flagged` changes nothing more.
async fn an_excluded_rigger_is_not_tested_again(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("battles.jsonl");
    std::fs::write(&path, battles()).unwrap();
    let server = spawn_server(url, &dir.path().join("no-site")).await;
    moat_server::import::import_dataset(
        &server.backend.store,
        &StudySlug::parse("rig").unwrap(),
        moat_exports::import::ImportFormat::Arena,
        &path,
        &[],
    )
    .await
    .unwrap();
    let response = server
        .admin(server.http.post(format!(
            "{}/api/v1/studies/rig/raters/{RIGGER}/status",
            server.base
        )))
        .json(&serde_json::json!({ "status": "excluded" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let analysis = server
        .admin_get_json("/api/v1/studies/rig/leaderboard?rounds=0&drop_flagged=true")
        .await;
    assert_eq!(analysis["leaderboard"]["n_battles"], JUDGES * 6);
    assert_eq!(analysis["flagged_raters"], serde_json::json!([]));
    server.backend.store.close().await;
}
on_both_backends!(an_excluded_rigger_is_not_tested_again);
