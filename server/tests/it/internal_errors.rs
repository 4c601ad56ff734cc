//! A 500 never echoes an internal error's text: with a table dropped under a running server, the
//! JSON API, a server function and a page answer with a generic message and an incident id, and
//! `/v1` answers an upstream's failure without the upstream's address or words.

use std::path::Path;

use crate::on_both_backends;
use crate::support::{spawn_server, spawn_server_with_models, TestServer};

/// Text of the database's own error messages, of sqlx and of the queries; none may reach a client.
const INTERNAL_TEXT: [&str; 8] = [
    "no such table",
    "does not exist",
    "error returned from database",
    "sqlx",
    "(code:",
    "SELECT",
    "JOIN assignments",
    "moat.db",
];

/// Fails naming the leaked text, and checks the incident id is there for the log.
fn assert_generic(what: &str, body: &str, database_url: &str) {
    for text in INTERNAL_TEXT {
        assert!(!body.contains(text), "{what} leaks {text:?}: {body}");
    }
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        assert!(
            !body.contains(path),
            "{what} leaks the database path: {body}"
        );
    }
    let incident = body
        .split("internal error (incident ")
        .nth(1)
        .unwrap_or_else(|| panic!("{what} has no incident id: {body}"));
    let id: String = incident
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(id.len(), 8, "{what}: incident id {id:?} in {body}");
}

/// Drops the `votes` table from another connection while the server runs.
async fn drop_votes_table(database_url: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(database_url).await.unwrap();
    sqlx::raw_sql("DROP TABLE votes")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

async fn store_failures_answer_with_an_incident_id_only(url: &str) {
    let server = spawn_server(url, Path::new("/nonexistent-site")).await;
    let opened = server.open_study("broken", 3, serde_json::json!({})).await;
    assert_eq!(opened.status(), 200);
    let cookie = server.owner_cookie().await;
    // Before the failure, the same requests work: what follows is the failure, not the request.
    let listed = server
        .admin(server.http.get(format!("{}/api/v1/studies", server.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    drop_votes_table(url).await;

    // The JSON API.
    let listed = server
        .admin(server.http.get(format!("{}/api/v1/studies", server.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 500);
    let body: serde_json::Value = listed.json().await.unwrap();
    assert_generic("GET /api/v1/studies", body["error"].as_str().unwrap(), url);

    // A server function, as the admin page calls it.
    let studies = server
        .http
        .post(format!("{}/rpc/admin_studies", server.base))
        .header("Cookie", &cookie)
        .header("Origin", &server.base)
        .header("Accept", "application/json")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(studies.status(), 500);
    assert_generic("/rpc/admin_studies", &studies.text().await.unwrap(), url);

    // The pages that list the studies and show one, rendered on the server.
    for page in ["/admin", "/admin/studies/broken"] {
        let response = server
            .http
            .get(format!("{}{page}", server.base))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_generic(page, &response.text().await.unwrap(), url);
    }
}
on_both_backends!(store_failures_answer_with_an_incident_id_only);

/// An upstream that fails with its own internal details in the body.
async fn failing_upstream() -> std::net::SocketAddr {
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "upstream stack trace: /srv/upstream/weights.bin failed",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// `/v1/chat/completions` through a failing upstream and an unreachable one: a 5xx that says what
/// kind of failure it was, with an incident id, never the upstream's address or its words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_failures_answer_without_the_upstream_s_address_or_words() {
    let failing = failing_upstream().await;
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models.toml");
    std::fs::write(
        &registry,
        format!(
            r#"
[[model]]
name = "failing"
provider = "Nobody"
openness = "open"
kind = "openai"
base_url = "http://{failing}/v1"
model = "x"
retries = 0

[[model]]
name = "refused"
provider = "Nobody"
openness = "open"
kind = "openai"
base_url = "http://{refused}/v1"
model = "y"
retries = 0
"#
        ),
    )
    .unwrap();
    let db = crate::support::TestDb::sqlite();
    let server: TestServer =
        spawn_server_with_models(db.url(), Path::new("/nonexistent-site"), Some(&registry)).await;
    let key = server.backend.store.create_api_key("tests").await.unwrap();
    for (model, upstream, expected) in [
        ("failing", failing, "the model's server answered HTTP 500"),
        ("refused", refused, "the model's server failed"),
    ] {
        for stream in [false, true] {
            let response = server
                .http
                .post(format!("{}/v1/chat/completions", server.base))
                .bearer_auth(&key)
                .json(&serde_json::json!({
                    "model": model,
                    "stream": stream,
                    "messages": [{ "role": "user", "content": "Hello?" }],
                }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            let what = format!("{model} (stream {stream}): {status} {body}");
            if !stream {
                assert_eq!(status, 502, "{what}");
            }
            assert!(body.contains(expected), "{what}");
            assert!(body.contains("(incident "), "{what}");
            for leak in [&upstream.to_string(), "/srv/upstream", "stack trace"] {
                assert!(!body.contains(leak), "{what} leaks {leak:?}");
            }
        }
    }
    db.cleanup().await;
}
