//! The defences of SECURITY.md against a real server on a free port: CSV injection, unrequested vote
//! fields, remote resources in markdown, study links, closed studies, cross-origin requests and the
//! security headers.

use moat_server::client::RaterClient;

use crate::support::{spawn_server, TestDb};

fn no_site() -> std::path::PathBuf {
    std::path::PathBuf::from("/nonexistent-site")
}

/// The votes export of a study, as JSON rows.
async fn exported_votes(server: &crate::support::TestServer, slug: &str) -> Vec<serde_json::Value> {
    let response = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/{slug}/export?format=votes",
            server.base
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

const HYPERLINK: &str = "=HYPERLINK(\"http://evil\",\"x\")";

/// A rationale a spreadsheet would run goes out of the CSV export with a leading `'`; what the
/// study does not ask for (here the source guess, and in the second study the rationale) is stored
/// as nothing even when a script posts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_neutralizes_formulas_and_unrequested_fields_are_dropped() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server
        .open_study(
            "asks",
            2,
            serde_json::json!({ "items_per_rater": 1, "ask_rationale": true }),
        )
        .await;
    let rater = RaterClient::join(&server.base, "asks", None).await.unwrap();
    let comparison = rater.next_comparison().await.unwrap().unwrap();
    rater
        .vote_with(
            &comparison.assignment,
            "left",
            &[
                ("rationale", HYPERLINK),
                ("source_guess", "left"),
                ("source_confidence", "5"),
            ],
        )
        .await
        .unwrap();
    let votes = exported_votes(&server, "asks").await;
    assert_eq!(votes.len(), 1);
    assert_eq!(
        votes[0]["rationale"], HYPERLINK,
        "JSON keeps the text as written"
    );
    assert!(votes[0]["source_guess"].is_null(), "{}", votes[0]);
    assert!(votes[0]["source_confidence"].is_null(), "{}", votes[0]);

    let csv = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/asks/export?format=votes&container=csv",
            server.base
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // RFC 4180 quoting doubles the quotes; the field starts with the neutralizing `'`.
    let field = format!("\"'{}\"", HYPERLINK.replace('"', "\"\""));
    assert!(csv.contains(&field), "{csv}");
    assert!(!csv.contains(&format!(",{HYPERLINK}")), "{csv}");

    // A study that asks for neither stores neither, and does not even check their form.
    server
        .open_study("silent", 2, serde_json::json!({ "items_per_rater": 1 }))
        .await;
    let rater = RaterClient::join(&server.base, "silent", None)
        .await
        .unwrap();
    let comparison = rater.next_comparison().await.unwrap().unwrap();
    rater
        .vote_with(
            &comparison.assignment,
            "right",
            &[
                ("rationale", HYPERLINK),
                ("source_guess", "neither"),
                ("source_confidence", "99"),
            ],
        )
        .await
        .unwrap();
    let votes = exported_votes(&server, "silent").await;
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0]["choice"], "right");
    assert!(votes[0]["rationale"].is_null(), "{}", votes[0]);
    assert!(votes[0]["source_guess"].is_null(), "{}", votes[0]);
    db.cleanup().await;
}
