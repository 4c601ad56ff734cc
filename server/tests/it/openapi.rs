//! The OpenAPI description at `/api/v1/openapi.json`: it parses as OpenAPI 3, names the bearer
//! scheme, and lists every `/api/v1` route the server serves.

use std::collections::BTreeSet;

use crate::support::{spawn_server, TestDb};

/// Every `(METHOD, path)` the document describes.
fn documented_operations(document: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// Paths of `/api` and `/v1` routes registered by hand (`.route("/api/…", …)` and its relatives)
/// anywhere in the server's source. The JSON API's routes come from `http::api_routes`, which
/// registers a handler only together with its `#[utoipa::path]`; a route added next to it by hand
/// would be served without a description, and this finds it. The `/v1` routes are registered by hand
/// (`openai_api::router`), so each must appear in the document too.
fn hand_registered_api_paths() -> BTreeSet<String> {
    let pattern = regex::Regex::new(
        r#"\.(?:route|route_service|nest|nest_service)\(\s*"(/(?:api|v1)/[^"]*)""#,
    )
    .unwrap();
    let source_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeSet::new();
    let mut dirs = vec![source_dir];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for capture in pattern.captures_iter(&text) {
                    found.insert(capture[1].to_string());
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_api_route() {
    let db = TestDb::sqlite();
    let site = tempfile::tempdir().unwrap();
    let server = spawn_server(db.url(), site.path()).await;

    // Public: it describes the API and holds nothing secret.
    let response = server
        .http
        .get(format!("{}/api/v1/openapi.json", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();

    // An OpenAPI 3 parser other than the generator's own reads it.
    let parsed = oas3::from_json(&text).expect("the document parses as OpenAPI 3.1");
    assert!(parsed.openapi.starts_with("3."), "{}", parsed.openapi);

    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        serde_json::json!({ "type": "http", "scheme": "bearer", "description": "the admin token (`moat serve --admin-token`)" })
    );
    assert_eq!(document["security"], serde_json::json!([{ "bearer": [] }]));

    // The document and the router come from the same entries; the document has each route once.
    let operations = documented_operations(&document);
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/studies"),
        ("POST", "/api/v1/studies"),
        ("GET", "/api/v1/studies/{slug}"),
        ("PUT", "/api/v1/studies/{slug}"),
        ("POST", "/api/v1/studies/{slug}/status"),
        ("POST", "/api/v1/studies/{slug}/import"),
        ("GET", "/api/v1/studies/{slug}/export"),
        ("GET", "/api/v1/studies/{slug}/leaderboard"),
        ("POST", "/api/v1/leaderboard"),
        ("POST", "/api/v1/studies/{slug}/raters/{pseudonym}/status"),
        ("GET", "/api/v1/studies/{slug}/completion-codes/{code}"),
        ("GET", "/api/v1/admin-tokens"),
        ("POST", "/api/v1/admin-tokens"),
        ("DELETE", "/api/v1/admin-tokens/{name}"),
        ("PUT", "/api/v1/admin-tokens/{name}/studies"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/whoami"),
        ("POST", "/api/v1/logout"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(operations, expected);
    assert_eq!(
        moat_server::http::openapi().paths.paths.len(),
        document["paths"].as_object().unwrap().len()
    );

    // No `/api` or `/v1` route is registered beside the described ones.
    let documented_paths: BTreeSet<String> = operations.iter().map(|(_, p)| p.clone()).collect();
    let by_hand = hand_registered_api_paths();
    assert!(
        by_hand.is_subset(&documented_paths),
        "served without a description: {:?}",
        by_hand.difference(&documented_paths).collect::<Vec<_>>()
    );

    // Every described operation is served (answered by its handler, not the pages' 404) and, but the
    // document itself, refuses a request without the token with the documented JSON error.
    for (method, path) in &operations {
        let url = format!(
            "{}{}",
            server.base,
            path.replace("{slug}", "no-such-study")
                .replace("{pseudonym}", "nobody")
        );
        let request = server
            .http
            .request(method.parse().unwrap(), &url)
            // Same origin, so the CSRF check lets the token-less POSTs through to the token check.
            .header("origin", &server.base)
            .header("content-type", "application/json");
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let operation = &document["paths"][path][method.to_lowercase()];
        // The document and logout (which ends whatever session the cookie names, if any) need no
        // token.
        if path == "/api/v1/openapi.json" || path == "/api/v1/logout" {
            assert_eq!(status, 200, "{method} {path}");
            assert_eq!(operation["security"], serde_json::json!([{}]));
            continue;
        }
        assert_eq!(status, 401, "{method} {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        if path.starts_with("/v1/") {
            // The OpenAI protocol's error shape, under the API key scheme.
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            assert_eq!(
                operation["security"],
                serde_json::json!([{ "api_key": [] }])
            );
        } else {
            assert!(body["error"].as_str().unwrap().contains("admin token"));
        }
        assert!(
            operation["responses"]["401"].is_object(),
            "{method} {path} documents its 401"
        );
    }
    db.cleanup().await;
}

/// The JSON API answers a query string that does not parse with its JSON error, as the document
/// says, not with axum's plain-text rejection (found by schemathesis: `rounds=-1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_string_that_does_not_parse_is_a_json_400() {
    let db = TestDb::sqlite();
    let site = tempfile::tempdir().unwrap();
    let server = spawn_server(db.url(), site.path()).await;
    server.open_study("q", 2, serde_json::json!({})).await;
    for path in [
        "/api/v1/studies/q/leaderboard?rounds=-1",
        "/api/v1/studies/q/export?exclude_ties=maybe",
        "/api/v1/studies/q/leaderboard?seed=x",
    ] {
        let response = server
            .admin(server.http.get(format!("{}{path}", server.base)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid query string"),
            "{path}: {body}"
        );
    }
    let response = server
        .admin(server.http.post(format!(
            "{}/api/v1/leaderboard?davidson=perhaps",
            server.base
        )))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    db.cleanup().await;
}

/// An export whose options the writer refuses (a minimum agreement without `majority`) is a JSON 400
/// before any byte is sent. Found by schemathesis: the check ran only inside the streaming task, so
/// the client got 200 and then a broken chunked transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_the_writer_refuses_is_a_400_not_a_broken_transfer() {
    let db = TestDb::sqlite();
    let site = tempfile::tempdir().unwrap();
    let server = spawn_server(db.url(), site.path()).await;
    server.open_study("agree", 2, serde_json::json!({})).await;
    let response = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/agree/export?min_agreement=0.5",
            server.base
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("majority"),
        "{body}"
    );
    // With majority it is a whole file.
    let response = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/agree/export?min_agreement=0.5&majority=true",
            server.base
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("a complete transfer");
    db.cleanup().await;
}
