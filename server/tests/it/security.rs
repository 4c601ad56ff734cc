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

/// Creates a draft study `slug` with `title` and `instructions`, one prompt whose responses are
/// `response`, without opening it.
async fn draft_study(
    server: &crate::support::TestServer,
    slug: &str,
    title: &str,
    instructions: &str,
    response: &str,
) {
    let created = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&serde_json::json!({ "slug": slug, "title": title, "instructions": instructions }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let file = format!(
        "{}\n{}\n",
        serde_json::json!({ "models": [{ "name": "m1", "openness": "open" }, { "name": "m2", "openness": "closed" }] }),
        serde_json::json!({ "id": "p", "prompt": "Question?", "responses": { "m1": response, "m2": response } })
    );
    let imported = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/{slug}/import", server.base)),
        )
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);
}

async fn set_status(server: &crate::support::TestServer, slug: &str, status: &str) {
    let response = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/{slug}/status", server.base)),
        )
        .json(&serde_json::json!({ "status": status }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A model's markdown image would load from its host when the rater's page shows it (a tracking
/// pixel): it arrives as alt text and a plain link, and raw `<img>` tags are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_images_in_model_output_never_load() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let response = "Look: ![a chart](https://tracker.example/pixel.gif?id=7) and \
                    <img src=\"https://tracker.example/raw.gif\"> done.";
    draft_study(&server, "pixels", "Pixels", "Compare.", response).await;
    set_status(&server, "pixels", "open").await;
    let rater = RaterClient::join(&server.base, "pixels", None)
        .await
        .unwrap();
    let comparison = rater.next_comparison().await.unwrap().unwrap();
    for html in [&comparison.left_html, &comparison.right_html] {
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("raw.gif"), "{html}");
        assert!(html.contains("a chart"), "{html}");
        assert!(
            html.contains(">https://tracker.example/pixel.gif?id=7</a>"),
            "{html}"
        );
    }
    let (_, page) = rater.page("/s/pixels/compare").await.unwrap();
    assert!(!page.contains("<img"), "an image tag reached the page");
    db.cleanup().await;
}
