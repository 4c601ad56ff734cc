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

/// `redirect_url` and `screen_out_url` must be http(s): a `javascript:` link is refused by the JSON
/// API (create and update), the admin settings form and `moat study`, with an error naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_links_must_be_http_urls_everywhere_settings_are_checked() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let create = |settings: serde_json::Value| {
        server
            .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
            .json(&serde_json::json!({ "slug": "links", "title": "Links", "settings": settings }))
            .send()
    };
    let refused =
        create(serde_json::json!({ "redirect_url": "javascript:alert(document.cookie)" }))
            .await
            .unwrap();
    assert_eq!(refused.status(), 400);
    let error = refused.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("redirect_url") && error.contains("http"),
        "{error}"
    );
    let created = create(serde_json::json!({
        "redirect_url": "https://app.prolific.com/submissions/complete?cc=C0DE",
        "screen_out_url": "https://app.prolific.com/submissions/complete?cc=OUT",
    }))
    .await
    .unwrap();
    assert_eq!(created.status(), 201);

    let put = server
        .admin(
            server
                .http
                .put(format!("{}/api/v1/studies/links", server.base)),
        )
        .json(&serde_json::json!({ "title": "Links", "settings": { "screen_out_url": "data:text/html,<script>alert(1)</script>" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 400);
    let error = put.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("screen_out_url"), "{error}");

    // The admin's settings form (a plain form post to the server function, as the browser sends it).
    let form = server
        .http
        .post(format!("{}/rpc/update_study", server.base))
        .header("Cookie", server.owner_cookie().await)
        .header("Origin", &server.base)
        .header("Accept", "application/json")
        .form(&[
            ("slug", "links"),
            ("title", "Links"),
            ("instructions", ""),
            ("settings[redirect_url]", "javascript:alert(1)"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    let body = form.text().await.unwrap();
    assert!(body.contains("redirect_url"), "{body}");
    let report = server.admin_get_json("/api/v1/studies/links").await;
    assert_eq!(
        report["settings"]["redirect_url"], "https://app.prolific.com/submissions/complete?cc=C0DE",
        "nothing was changed"
    );

    // `moat study create` and `moat study update`.
    use moat_server::study_cli::{run, StudyCommand};
    let parse = |args: &[&str]| -> StudyCommand {
        let words = ["moat", "study"].iter().chain(args).copied();
        let cli = <moat_server::cli::Cli as clap::Parser>::try_parse_from(words).unwrap();
        let moat_server::cli::Command::Study(command) = cli.command else {
            panic!("parsed as study")
        };
        command
    };
    let error = run(
        &server.backend,
        parse(&[
            "create",
            "cli-links",
            "--title",
            "T",
            "--redirect-url",
            "javascript:alert(1)",
        ]),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("redirect_url"), "{error}");
    let error = run(
        &server.backend,
        parse(&["update", "links", "--screen-out-url", "vbscript:msgbox(1)"]),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("screen_out_url"), "{error}");
    run(
        &server.backend,
        parse(&[
            "update",
            "links",
            "--screen-out-url",
            "http://example.org/out",
        ]),
    )
    .await
    .unwrap();
    db.cleanup().await;
}

/// A draft or closed study's link shows only "This study is not open." (no title, no
/// instructions, in the page or in the data serialized into it), and the rater server functions
/// refuse it: no consent, no comparison, no vote.
async fn only_open_studies_reach_raters(url: &str) {
    let server = spawn_server(url, &no_site()).await;
    draft_study(
        &server,
        "hidden",
        "Secret title xyzzy",
        "Secret instructions plugh",
        "An answer.",
    )
    .await;
    let anonymous = reqwest::Client::new();
    let entry_page = || async {
        let response = anonymous
            .get(format!("{}/s/hidden", server.base))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    };
    let entry_data = || async {
        anonymous
            .post(format!("{}/rpc/study_entry", server.base))
            .header("Origin", &server.base)
            .header("Accept", "application/json")
            .form(&[("slug", "hidden")])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let assert_neutral = |page: &str, data: &str| {
        assert!(page.contains("This study is not open."), "{page}");
        for secret in ["xyzzy", "plugh"] {
            assert!(!page.contains(secret), "{secret} in the page");
            assert!(!data.contains(secret), "{secret} in {data}");
        }
    };
    assert_neutral(&entry_page().await, &entry_data().await);
    match RaterClient::join(&server.base, "hidden", None).await {
        Err(moat_server::client::ClientError::Status { status: 409, .. }) => {}
        Err(other) => panic!("expected 409, got {other:?}"),
        Ok(_) => panic!("consent to a draft study was accepted"),
    }

    set_status(&server, "hidden", "open").await;
    let page = entry_page().await;
    assert!(page.contains("xyzzy") && page.contains("plugh"), "{page}");
    let rater = RaterClient::join(&server.base, "hidden", None)
        .await
        .unwrap();
    let comparison = rater.next_comparison().await.unwrap().unwrap();

    set_status(&server, "hidden", "closed").await;
    assert_neutral(&entry_page().await, &entry_data().await);
    assert!(matches!(
        rater.next().await.unwrap(),
        moat_app::wire::RaterView::NotOpen { .. }
    ));
    let (_, compare_page) = rater.page("/s/hidden/compare").await.unwrap();
    assert!(compare_page.contains("This study is not open."));
    assert!(!compare_page.contains("An answer."));
    match rater.vote(&comparison.assignment, "left").await {
        Err(moat_server::client::ClientError::Status { status: 409, .. }) => {}
        other => panic!("expected 409, got {other:?}"),
    }
    set_status(&server, "hidden", "draft").await;
    assert_neutral(&entry_page().await, &entry_data().await);
    match RaterClient::join(&server.base, "hidden", None).await {
        Err(moat_server::client::ClientError::Status { status: 409, .. }) => {}
        other => panic!("expected 409, got {:?}", other.err()),
    }
    server.backend.store.close().await;
}
crate::on_both_backends!(only_open_studies_reach_raters);

/// CSRF: a state-changing request with the admin cookie from another origin (or from nowhere) is
/// refused with a 403 JSON error and changes nothing; the same request from the site itself, and a
/// script's request with `Authorization: Bearer` and no Origin, go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_state_changes_are_refused() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server.open_study("csrf", 2, serde_json::json!({})).await;
    let cookie = server.owner_cookie().await;
    let close = |origin: Option<(&'static str, String)>| {
        let mut request = server
            .http
            .post(format!("{}/rpc/set_study_status", server.base))
            .header("Cookie", &cookie)
            .form(&[("slug", "csrf"), ("status", "closed")]);
        if let Some((name, value)) = origin {
            request = request.header(name, value);
        }
        request.send()
    };
    let status = || async {
        server.admin_get_json("/api/v1/studies/csrf").await["summary"]["status"].clone()
    };
    for attempt in [
        Some(("Origin", "http://evil.example".to_string())),
        Some(("Origin", "null".to_string())),
        Some(("Referer", "http://evil.example/page".to_string())),
        None,
    ] {
        let refused = close(attempt.clone()).await.unwrap();
        assert_eq!(refused.status(), 403, "{attempt:?}");
        assert!(refused.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: serde_json::Value = refused.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("refused"),
            "{body}"
        );
        assert_eq!(status().await, "open", "{attempt:?} changed the study");
    }
    // The cookie-authenticated JSON API and the upload form are held to the same rule.
    let put = server
        .http
        .put(format!("{}/api/v1/studies/csrf", server.base))
        .header("Cookie", &cookie)
        .header("Origin", "https://evil.example")
        .json(&serde_json::json!({ "title": "Hijacked", "settings": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403);
    let upload = server
        .http
        .post(format!("{}/admin/studies/csrf/import", server.base))
        .header("Cookie", &cookie)
        .header("Origin", "https://evil.example")
        .header("Content-Type", "multipart/form-data; boundary=XBOUNDARY")
        .body(format!(
            "--XBOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{}\r\n--XBOUNDARY--\r\n",
            crate::support::sample_jsonl(1)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 403);
    let report = server.admin_get_json("/api/v1/studies/csrf").await;
    assert_eq!(report["summary"]["title"], "Study csrf");
    assert_eq!(report["summary"]["prompts"], 2);

    // From the site itself (Origin, or Referer alone), the same requests go through.
    let same = close(Some(("Origin", server.base.clone()))).await.unwrap();
    assert!(same.status().is_success(), "{}", same.status());
    assert_eq!(status().await, "closed");
    let reopen = server
        .http
        .post(format!("{}/rpc/set_study_status", server.base))
        .header("Cookie", &cookie)
        .header("Referer", format!("{}/admin/studies/csrf", server.base))
        .form(&[("slug", "csrf"), ("status", "open")])
        .send()
        .await
        .unwrap();
    assert!(reopen.status().is_success(), "{}", reopen.status());
    assert_eq!(status().await, "open");
    // A script with the token as a bearer needs no Origin.
    let scripted = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/csrf/status", server.base)),
        )
        .json(&serde_json::json!({ "status": "closed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(scripted.status(), 200);
    assert_eq!(status().await, "closed");
    // Reading is not changing: a GET from anywhere is answered.
    let read = server
        .admin(server.http.get(format!("{}/api/v1/studies", server.base)))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    db.cleanup().await;
}

/// The nonce a response's Content-Security-Policy allows.
fn policy_nonce(headers: &reqwest::header::HeaderMap) -> String {
    let policy = headers["content-security-policy"].to_str().unwrap();
    let start = policy.find("'nonce-").expect("a nonce in the policy") + "'nonce-".len();
    let end = start + policy[start..].find('\'').unwrap();
    policy[start..end].to_string()
}

fn assert_security_headers(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing: {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
}

/// Every response carries the security headers; a page's inline scripts and style carry exactly the
/// nonce its policy names, and each response has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_and_the_page_nonce() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server.open_study("headers", 2, serde_json::json!({})).await;
    let mut nonces = std::collections::HashSet::new();
    for path in ["/s/headers", "/s/headers", "/", "/no-such-page"] {
        let response = server
            .http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        assert_security_headers(&headers);
        let nonce = policy_nonce(&headers);
        assert!(nonce.len() >= 22, "{nonce}");
        assert!(nonces.insert(nonce.clone()), "a nonce was used twice");
        let page = response.text().await.unwrap();
        let scripts: Vec<&str> = page.split("<script").skip(1).collect();
        assert!(
            !scripts.is_empty(),
            "{path}: the page has its hydration script"
        );
        for tag in scripts
            .iter()
            .chain(page.split("<style").skip(1).collect::<Vec<_>>().iter())
        {
            let opening = &tag[..tag.find('>').unwrap()];
            assert!(
                opening.contains(&format!("nonce=\"{nonce}\"")),
                "{path}: an inline tag without the response's nonce: {opening}"
            );
        }
    }
    // A JSON answer, a server function's answer and a refusal carry the headers too.
    let api = server
        .admin(server.http.get(format!("{}/api/v1/studies", server.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert_security_headers(api.headers());
    let rater = RaterClient::join(&server.base, "headers", None)
        .await
        .unwrap();
    let (headers, _) = rater.page("/s/headers/compare").await.unwrap();
    assert_security_headers(&headers);
    let refused = server
        .http
        .post(format!("{}/rpc/consent", server.base))
        .form(&[("slug", "headers")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_security_headers(refused.headers());
    db.cleanup().await;
}

/// Ten failed logins from one address within a minute, and that address gets 429 for every
/// credentialed request, the right token included (else the answer would tell which guess was
/// right); requests without credentials (raters) go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_address() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server.open_study("limited", 2, serde_json::json!({})).await;
    for attempt in 0..moat_server::security::MAX_FAILURES {
        let request = server
            .http
            .post(format!("{}/rpc/admin_login", server.base))
            .header("Origin", &server.base)
            .form(&[("token", format!("guess-{attempt}"))]);
        // Half the guesses as the hydrated page sends them, half as a plain form post.
        let request = if attempt % 2 == 0 {
            request.header("Accept", "application/json")
        } else {
            request
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "guess {attempt}");
    }
    let refused = server
        .admin(server.http.get(format!("{}/api/v1/studies", server.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_security_headers(refused.headers());
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many failed logins"),
        "{body}"
    );
    let login = server
        .http
        .post(format!("{}/rpc/admin_login", server.base))
        .header("Origin", &server.base)
        .form(&[("token", crate::support::ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429, "the right token is refused too");
    // Raters carry no admin credentials and are not held up.
    let rater = RaterClient::join(&server.base, "limited", None)
        .await
        .unwrap();
    assert!(rater.next_comparison().await.unwrap().is_some());
    db.cleanup().await;
}

/// Behind a reverse proxy trusted with `--trust-proxy`, failed logins count against the address the
/// proxy forwarded, not the proxy's own: a guesser locks out only itself, the researcher behind the
/// same proxy still logs in, and a forged first entry of `X-Forwarded-For` does not escape the
/// count. Untrusted, the header changes nothing: a guesser cannot rotate it to go on guessing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_count_against_the_forwarded_address_behind_a_trusted_proxy() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let login =
        |forwarded: &'static str, token: &'static str| login_from(&server, forwarded, token);
    let max = moat_server::security::MAX_FAILURES;
    // Untrusted: every guess counts against the peer, whatever the header says.
    for attempt in 0..max {
        let forwarded = format!("198.51.100.{attempt}");
        assert_eq!(
            login_from(&server, &forwarded, "wrong").await,
            401,
            "guess {attempt}"
        );
    }
    assert_eq!(login("198.51.100.200", "wrong").await, 429);
    assert_eq!(
        login("198.51.100.201", crate::support::ADMIN_TOKEN).await,
        429
    );

    let db2 = TestDb::sqlite();
    let server = spawn_server(db2.url(), &no_site()).await;
    let login =
        |forwarded: &'static str, token: &'static str| login_from(&server, forwarded, token);
    server
        .backend
        .set_cookie_policy(moat_server::service::CookiePolicy {
            always_secure: false,
            trust_proxy: true,
        });
    for attempt in 0..max {
        // The proxy appends the guesser's address; the first entry is whatever the guesser sent.
        let forwarded = format!("203.0.113.{attempt}, 198.51.100.7");
        assert_eq!(
            login_from(&server, &forwarded, "wrong").await,
            401,
            "guess {attempt}"
        );
    }
    assert_eq!(login("198.51.100.7", "wrong").await, 429);
    assert_eq!(login("10.0.0.1, 198.51.100.7", "wrong").await, 429);
    assert_eq!(
        login("198.51.100.7", crate::support::ADMIN_TOKEN).await,
        429,
        "the guesser's address is refused even the right token"
    );
    assert!(
        login("198.51.100.8", crate::support::ADMIN_TOKEN).await < 400,
        "another client behind the same proxy logs in"
    );
    db.cleanup().await;
    db2.cleanup().await;
}

/// The status of a login with `token` from a client a proxy names `forwarded`.
async fn login_from(server: &crate::support::TestServer, forwarded: &str, token: &str) -> u16 {
    server
        .http
        .post(format!("{}/rpc/admin_login", server.base))
        .header("Origin", &server.base)
        .header("Accept", "application/json")
        .header("X-Forwarded-For", forwarded)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One rater session flooding the study: past `rater_requests_per_minute` its pages, votes and
/// battle streams are answered 429 with a message saying what happened, a refused vote records
/// nothing, and another session of the same study is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_session_is_throttled_and_others_are_not() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server
        .open_study(
            "busy",
            6,
            serde_json::json!({ "items_per_rater": 6, "rater_requests_per_minute": 10 }),
        )
        .await;
    let flooder = RaterClient::join(&server.base, "busy", None).await.unwrap();
    let comparison = flooder.next_comparison().await.unwrap().unwrap();
    // Ten requests a minute, a full minute's worth at once: the first took one, nine remain (the
    // bucket refills by one every six seconds, far slower than these requests come).
    let mut served = 1;
    let refused = loop {
        match flooder.next_raw().await {
            Ok(_) => served += 1,
            Err(error) => break error,
        }
        assert!(served <= 11, "no request was refused");
    };
    assert_eq!(served, 10);
    let moat_server::client::ClientError::Status { status, body } = refused else {
        panic!("{refused}")
    };
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("more than 10 requests in a minute"), "{body}");
    // A vote past the limit is refused the same way and records nothing.
    let vote = flooder
        .vote_raw(&comparison.assignment, "left", &[])
        .await
        .unwrap_err();
    assert!(vote.to_string().contains("HTTP 429"), "{vote}");
    assert!(exported_votes(&server, "busy").await.is_empty());
    // So is a battle's event stream (before it looks for the battle).
    let events = flooder.battle_events("no-such-battle").await.unwrap_err();
    assert!(events.to_string().contains("HTTP 429"), "{events}");
    // Another session is not held up by the first one's flood, and its vote counts.
    let other = RaterClient::join(&server.base, "busy", None).await.unwrap();
    let shown = other.next_comparison().await.unwrap().unwrap();
    other.vote(&shown.assignment, "right").await.unwrap();
    assert_eq!(exported_votes(&server, "busy").await.len(), 1);
    let missing = other.battle_events("no-such-battle").await.unwrap_err();
    assert!(missing.to_string().contains("HTTP 404"), "{missing}");
    db.cleanup().await;
}
