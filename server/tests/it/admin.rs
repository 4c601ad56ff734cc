//! The admin area under attack (issue 10): sessions instead of tokens in cookies, roles and
//! per-person tokens on every route, the audit log, and uploads that neither fail over 2 MB nor
//! hold SQLite's write lock while they arrive.

use std::time::Duration;

use moat_server::client::RaterClient;
use moat_server::service::{CookiePolicy, SessionLimits};
use serde_json::json;

use crate::on_both_backends;
use crate::support::{sample_jsonl, spawn_server, TestDb, TestServer, ADMIN_TOKEN};

fn no_site() -> std::path::PathBuf {
    std::path::PathBuf::from("/nonexistent-site")
}

/// `GET /api/v1/whoami` with the admin cookie `cookie`: the status and the body.
async fn whoami(server: &TestServer, cookie: &str) -> (u16, serde_json::Value) {
    let response = server
        .http
        .get(format!("{}/api/v1/whoami", server.base))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(json!(null)))
}

/// The audit log as the owner sees it, oldest first, as "actor action target detail" lines.
async fn audit_lines(server: &TestServer) -> Vec<String> {
    let entries = server.admin_get_json("/api/v1/audit?limit=1000").await;
    let mut lines: Vec<String> = entries
        .as_array()
        .unwrap_or_else(|| panic!("the audit log is a list: {entries}"))
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect();
    lines.reverse();
    lines
}

/// The admin page's HTML as the browser holding `cookie` gets it.
async fn admin_page(server: &TestServer, cookie: &str) -> String {
    server
        .http
        .get(format!("{}/admin", server.base))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn has_line(lines: &[String], start: &str) -> bool {
    lines.iter().any(|line| line.starts_with(start))
}

/// The login form gives a session, not the token: the cookie holds a random id (HttpOnly,
/// SameSite=Lax), the raw token as a cookie is refused, logout (JSON endpoint and the page's
/// button) ends the session on the server, an idle or too old session is refused, and each step is
/// in the audit log.
async fn sessions_replace_the_token_in_the_cookie(url: &str) {
    let server = spawn_server(url, &no_site()).await;
    let (cookie, set_cookie) = server.login_with(ADMIN_TOKEN).await;
    assert!(!set_cookie.contains(ADMIN_TOKEN), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP without --secure-cookies: {set_cookie}"
    );
    let session = cookie.strip_prefix("moat_admin=").unwrap();
    assert_eq!(session.len(), 64, "256 random bits: {session}");
    let (status, who) = whoami(&server, &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(who["name"], "owner");
    assert_eq!(who["role"], "owner");

    // The token itself is no longer a cookie the server accepts.
    let (status, _) = whoami(&server, &format!("moat_admin={ADMIN_TOKEN}")).await;
    assert_eq!(status, 401, "the raw token in the cookie is refused");

    // Logout through the JSON endpoint: the session is gone on the server, not only in a browser.
    let logout = server
        .http
        .post(format!("{}/api/v1/logout", server.base))
        .header("Cookie", &cookie)
        .header("Origin", &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    let cleared = logout.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cleared.starts_with("moat_admin=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(whoami(&server, &cookie).await.0, 401, "logged out");

    // Logout through the page's button (the server function, as a plain form post).
    let cookie = server.owner_cookie().await;
    assert_eq!(whoami(&server, &cookie).await.0, 200);
    let button = server
        .http
        .post(format!("{}/rpc/admin_logout", server.base))
        .header("Cookie", &cookie)
        .header("Origin", &server.base)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert!(button.status().is_success(), "{}", button.status());
    assert_eq!(
        whoami(&server, &cookie).await.0,
        401,
        "logged out by the button"
    );
    let page = admin_page(&server, &cookie).await;
    assert!(
        page.contains(r#"name="token""#),
        "the login form again: {page}"
    );

    // An idle session ends after the idle time; any session ends at its absolute limit.
    server.backend.set_session_limits(SessionLimits {
        idle: Duration::from_millis(800),
        absolute: Duration::from_secs(3600),
    });
    let idle = server.owner_cookie().await;
    assert_eq!(whoami(&server, &idle).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(whoami(&server, &idle).await.0, 401, "idle too long");
    server.backend.set_session_limits(SessionLimits {
        idle: Duration::from_secs(3600),
        absolute: Duration::from_millis(800),
    });
    let old = server.owner_cookie().await;
    assert_eq!(whoami(&server, &old).await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        whoami(&server, &old).await.0,
        200,
        "in use, not yet too old"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        whoami(&server, &old).await.0,
        401,
        "past the absolute limit"
    );

    // A wrong token is a 401 and an audit row that does not hold the guess.
    let wrong = server
        .http
        .post(format!("{}/rpc/admin_login", server.base))
        .header("Origin", &server.base)
        .form(&[("token", "not-the-token-guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let lines = audit_lines(&server).await;
    assert!(has_line(&lines, "owner login admin owner"), "{lines:?}");
    assert!(has_line(&lines, "owner logout admin"), "{lines:?}");
    assert!(has_line(&lines, "- login.failed admin"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("not-the-token-guess")),
        "{lines:?}"
    );
}
on_both_backends!(sessions_replace_the_token_in_the_cookie);

/// `Secure` is added with `--secure-cookies`, or with `--trust-proxy` when the proxy says HTTPS;
/// an `X-Forwarded-Proto` from an untrusted client changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookies_only_when_configured_or_a_trusted_proxy_says_https() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let login = |forwarded: bool| {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut request = client
            .post(format!("{}/rpc/admin_login", server.base))
            .header("Origin", &server.base)
            .form(&[("token", ADMIN_TOKEN)]);
        if forwarded {
            request = request.header("X-Forwarded-Proto", "https");
        }
        async move {
            let response = request.send().await.unwrap();
            response.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    assert!(!login(true).await.contains("Secure"), "untrusted header");
    server.backend.set_cookie_policy(CookiePolicy {
        always_secure: false,
        trust_proxy: true,
    });
    assert!(
        login(true).await.contains("; Secure"),
        "trusted proxy, https"
    );
    assert!(
        !login(false).await.contains("Secure"),
        "trusted proxy, http"
    );
    server.backend.set_cookie_policy(CookiePolicy {
        always_secure: true,
        trust_proxy: false,
    });
    assert!(login(false).await.contains("; Secure"), "--secure-cookies");
    db.cleanup().await;
}

/// A request as a bearer token's holder.
fn as_token(token: &str) -> impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + '_ {
    move |request| request.bearer_auth(token)
}

async fn create_token(server: &TestServer, name: &str, role: &str, studies: &[&str]) -> String {
    let response = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/admin-tokens", server.base)),
        )
        .json(&json!({ "name": name, "role": role, "studies": studies }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("moat_at_"), "{token}");
    token
}

async fn status_of(response: reqwest::RequestBuilder) -> u16 {
    response.send().await.unwrap().status().as_u16()
}

fn slugs(list: &serde_json::Value) -> Vec<String> {
    let mut slugs: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|s| s["slug"].as_str().unwrap().to_string())
        .collect();
    slugs.sort();
    slugs
}

/// Owner, researcher and viewer on the JSON API, the server functions and /v1: a viewer changes
/// nothing; a researcher sees only its own and granted studies; only the owner manages tokens and
/// reads the audit log; a revoked token and its sessions stop at once; every change is audited.
async fn roles_hold_on_every_route(url: &str) {
    let server = spawn_server(url, &no_site()).await;
    server.open_study("alpha", 3, json!({})).await;
    let rita = create_token(&server, "rita", "researcher", &[]).await;
    let rob = create_token(&server, "rob", "researcher", &["alpha"]).await;
    let vic = create_token(&server, "vic", "viewer", &[]).await;
    let base = server.base.clone();
    let url = |path: &str| format!("{base}{path}");

    // A researcher creates a study and then owns it; it sees nothing else.
    let rita_req = as_token(&rita);
    let created = rita_req(server.http.post(url("/api/v1/studies")))
        .json(&json!({ "slug": "beta", "title": "Beta" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let listed: serde_json::Value = rita_req(server.http.get(url("/api/v1/studies")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(slugs(&listed), ["beta"]);
    for (what, request) in [
        (
            "report",
            rita_req(server.http.get(url("/api/v1/studies/alpha"))),
        ),
        (
            "export",
            rita_req(
                server
                    .http
                    .get(url("/api/v1/studies/alpha/export?format=votes")),
            ),
        ),
        (
            "status",
            rita_req(server.http.post(url("/api/v1/studies/alpha/status")))
                .json(&json!({ "status": "closed" })),
        ),
        (
            "import",
            rita_req(server.http.post(url("/api/v1/studies/alpha/import"))).body(sample_jsonl(1)),
        ),
        (
            "leaderboard",
            rita_req(server.http.get(url("/api/v1/studies/alpha/leaderboard"))),
        ),
    ] {
        assert_eq!(status_of(request).await, 404, "rita may not {what} alpha");
    }
    // The same researcher through the browser's session and server functions.
    let (rita_cookie, _) = server.login_with(&rita).await;
    let rpc_report = server
        .http
        .post(url("/rpc/study_report"))
        .header("Cookie", &rita_cookie)
        .header("Origin", &base)
        .header("Accept", "application/json")
        .form(&[("slug", "alpha")])
        .send()
        .await
        .unwrap();
    assert_eq!(rpc_report.status(), 404, "study page of another's study");
    let rpc_list = server
        .http
        .post(url("/rpc/admin_studies"))
        .header("Cookie", &rita_cookie)
        .header("Origin", &base)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        rpc_list.contains("beta") && !rpc_list.contains("alpha"),
        "{rpc_list}"
    );

    // A researcher granted alpha works on it, and does not see beta.
    let rob_req = as_token(&rob);
    assert_eq!(
        status_of(
            rob_req(server.http.post(url("/api/v1/studies/alpha/status")))
                .json(&json!({ "status": "closed" }))
        )
        .await,
        200
    );
    assert_eq!(
        status_of(rob_req(server.http.get(url("/api/v1/studies/beta")))).await,
        404
    );
    assert_eq!(
        status_of(rob_req(server.http.get(url("/api/v1/admin-tokens")))).await,
        403,
        "only the owner manages tokens"
    );
    assert_eq!(
        status_of(rob_req(server.http.get(url("/api/v1/audit")))).await,
        403,
        "only the owner reads the audit log"
    );
    let (rob_cookie, _) = server.login_with(&rob).await;
    // The admin page's audit section: the owner's, nobody else's.
    let audit_rpc = |cookie: String| {
        server
            .http
            .post(url("/rpc/admin_audit"))
            .header("Cookie", cookie)
            .header("Origin", &base)
            .header("Accept", "application/json")
            .send()
    };
    let as_rob = audit_rpc(rob_cookie.clone()).await.unwrap();
    assert_eq!(as_rob.status(), 200);
    assert_eq!(
        as_rob.text().await.unwrap(),
        "null",
        "a researcher's page has no audit log"
    );
    let (owner_cookie, _) = server.login_with(crate::support::ADMIN_TOKEN).await;
    let as_owner: serde_json::Value = audit_rpc(owner_cookie).await.unwrap().json().await.unwrap();
    let actions: Vec<&str> = as_owner
        .as_array()
        .unwrap_or_else(|| panic!("{as_owner}"))
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"login"), "newest first: {actions:?}");
    assert!(actions.contains(&"study.status"), "{actions:?}");
    let save = server
        .http
        .post(url("/rpc/save_models"))
        .header("Cookie", &rob_cookie)
        .header("Origin", &base)
        .header("Accept", "application/json")
        .form(&[("registry", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        save.status(),
        403,
        "only the owner saves the model registry"
    );

    // A viewer reads everything and changes nothing.
    let vic_req = as_token(&vic);
    let listed: serde_json::Value = vic_req(server.http.get(url("/api/v1/studies")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(slugs(&listed), ["alpha", "beta"]);
    assert_eq!(
        status_of(vic_req(server.http.get(url("/api/v1/studies/alpha")))).await,
        200
    );
    assert_eq!(
        status_of(vic_req(
            server
                .http
                .get(url("/api/v1/studies/alpha/export?format=votes"))
        ))
        .await,
        200
    );
    for (what, request) in [
        (
            "open",
            vic_req(server.http.post(url("/api/v1/studies/alpha/status")))
                .json(&json!({ "status": "open" })),
        ),
        (
            "create",
            vic_req(server.http.post(url("/api/v1/studies")))
                .json(&json!({ "slug": "gamma", "title": "Gamma" })),
        ),
        (
            "update",
            vic_req(server.http.put(url("/api/v1/studies/alpha")))
                .json(&json!({ "title": "Vic's", "instructions": "" })),
        ),
        (
            "import",
            vic_req(server.http.post(url("/api/v1/studies/alpha/import"))).body(sample_jsonl(1)),
        ),
        (
            "exclude a rater",
            vic_req(
                server
                    .http
                    .post(url("/api/v1/studies/alpha/raters/r1/status")),
            )
            .json(&json!({ "status": "excluded" })),
        ),
        (
            "create a token",
            vic_req(server.http.post(url("/api/v1/admin-tokens")))
                .json(&json!({ "name": "eve", "role": "owner" })),
        ),
        (
            "use the models",
            vic_req(server.http.get(url("/v1/models"))),
        ),
    ] {
        assert_eq!(status_of(request).await, 403, "a viewer may not {what}");
    }
    let (vic_cookie, _) = server.login_with(&vic).await;
    for (endpoint, form) in [
        (
            "/rpc/set_study_status",
            vec![("slug", "alpha"), ("status", "open")],
        ),
        (
            "/rpc/create_study",
            vec![
                ("slug", "delta"),
                ("title", "Delta"),
                ("instructions", ""),
                ("settings[items_per_rater]", "5"),
            ],
        ),
    ] {
        let response = server
            .http
            .post(url(endpoint))
            .header("Cookie", &vic_cookie)
            .header("Origin", &base)
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "viewer through {endpoint}");
    }
    let alpha = server.admin_get_json("/api/v1/studies/alpha").await;
    assert_eq!(
        alpha["summary"]["status"], "closed",
        "the viewer changed nothing"
    );
    assert_eq!(alpha["summary"]["title"], "Study alpha");
    assert_eq!(
        slugs(&server.admin_get_json("/api/v1/studies").await),
        ["alpha", "beta"]
    );
    assert_eq!(
        status_of(rita_req(server.http.get(url("/v1/models")))).await,
        200,
        "a researcher may use the models"
    );

    // The list never shows a token.
    let tokens = server.admin_get_json("/api/v1/admin-tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 3, "{tokens}");
    assert!(!tokens.to_string().contains("moat_at_"), "{tokens}");
    let rita_row = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "rita")
        .unwrap();
    assert_eq!(
        rita_row["studies"],
        json!(["beta"]),
        "granted by creating it"
    );

    // Revoked: the bearer token and the session it opened stop at once.
    assert_eq!(whoami(&server, &rita_cookie).await.0, 200);
    let revoked = server
        .admin(server.http.delete(url("/api/v1/admin-tokens/rita")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        status_of(rita_req(server.http.get(url("/api/v1/studies")))).await,
        401
    );
    assert_eq!(whoami(&server, &rita_cookie).await.0, 401);
    assert_eq!(
        status_of(rita_req(server.http.get(url("/v1/models")))).await,
        401,
        "nor the models"
    );

    let lines = audit_lines(&server).await;
    for expected in [
        "owner token.create rita researcher",
        "owner token.create rob researcher alpha",
        "rita study.create beta",
        "rita login admin researcher",
        "rob study.status alpha closed",
        "vic study.export alpha votes",
        "owner token.revoke rita",
    ] {
        assert!(has_line(&lines, expected), "{expected:?} in {lines:#?}");
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("vic study.status")),
        "a refused change is not logged as done: {lines:#?}"
    );
}
on_both_backends!(roles_hold_on_every_route);

/// A Moat JSONL file of about `megabytes` MB: `prompts` prompts with long responses.
fn large_jsonl(megabytes: usize) -> (String, usize) {
    let filler = "All work and no play makes a long answer. ".repeat(25);
    let per_prompt = 3 * (filler.len() + 40) + 60;
    let prompts = megabytes * 1_000_000 / per_prompt;
    let mut text = sample_jsonl(0);
    for i in 0..prompts {
        let responses: serde_json::Map<String, serde_json::Value> = crate::support::MODELS
            .iter()
            .map(|(name, ..)| (name.to_string(), json!(format!("{name} {i}: {filler}"))))
            .collect();
        text.push_str(
            &json!({ "id": format!("big{i}"), "prompt": format!("Large question {i}?"), "responses": responses })
                .to_string(),
        );
        text.push('\n');
    }
    (text, prompts)
}

/// A 30 MB file through the admin page's upload form (multipart, over axum's 2 MB default) imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_mb_upload_through_the_form_imports() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let created = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&json!({ "slug": "large", "title": "Large" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (file, prompts) = large_jsonl(30);
    assert!(file.len() > 29_000_000, "{}", file.len());
    let boundary = "moat-test-boundary-7d1f";
    let mut body = Vec::with_capacity(file.len() + 400);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"format\"\r\n\r\nmoat\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"large.jsonl\"\r\n\
             Content-Type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/admin/studies/large/import", server.base))
        .header("Cookie", server.owner_cookie().await)
        .header("Origin", &server.base)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("notice=Imported"), "{location}");
    let study = server.admin_get_json("/api/v1/studies/large").await;
    assert_eq!(
        study["summary"]["prompts"], prompts as u64,
        "{}",
        study["summary"]
    );
    assert!(
        has_line(&audit_lines(&server).await, "owner study.import large moat"),
        "the import is audited"
    );
    db.cleanup().await;
}

/// While a large import arrives slowly (half of it, then a pause), raters' votes are still recorded
/// within a second each: the upload is spooled to a file and takes SQLite's write lock only once it
/// is complete. (Before, the import streamed inside its transaction and every vote waited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_are_recorded_while_a_large_upload_arrives_slowly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server
        .open_study("voting", 10, json!({ "items_per_rater": 10 }))
        .await;
    let created = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&json!({ "slug": "incoming", "title": "Incoming" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (file, prompts) = large_jsonl(8);
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let mut upload = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/studies/incoming/import HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/jsonl\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        file.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    let half = file.len() / 2;
    upload.write_all(&file.as_bytes()[..half]).await.unwrap();
    upload.flush().await.unwrap();
    // Let the server start reading the body before the votes.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rater = RaterClient::join(&server.base, "voting", None)
        .await
        .unwrap();
    for vote in 0..5 {
        let started = std::time::Instant::now();
        let comparison = tokio::time::timeout(Duration::from_secs(5), async {
            let comparison = rater.next_comparison().await.unwrap().unwrap();
            rater.vote(&comparison.assignment, "left").await.unwrap();
            comparison
        })
        .await
        .unwrap_or_else(|_| panic!("vote {vote} waited over 5 s behind the upload"));
        assert!(!comparison.assignment.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "vote {vote} took {:?}",
            started.elapsed()
        );
    }
    let voting = server.admin_get_json("/api/v1/studies/voting").await;
    assert_eq!(voting["summary"]["votes"], 5, "{}", voting["summary"]);
    let incoming = server.admin_get_json("/api/v1/studies/incoming").await;
    assert_eq!(
        incoming["summary"]["prompts"], 0,
        "nothing imported before the body is complete"
    );

    upload.write_all(&file.as_bytes()[half..]).await.unwrap();
    let mut answer = String::new();
    upload.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let incoming = server.admin_get_json("/api/v1/studies/incoming").await;
    assert_eq!(incoming["summary"]["prompts"], prompts as u64);
    db.cleanup().await;
}

/// The battles leaderboard takes a file over axum's 2 MB default (spooled like an import).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_battles_leaderboard_takes_a_large_file() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let winners = ["model_a", "model_b", "tie", "tie (bothbad)"];
    let pairs = [("x", "y"), ("y", "z"), ("x", "z")];
    let mut battles = String::new();
    let mut i = 0;
    while battles.len() < 5_000_000 {
        let (a, b) = pairs[i % 3];
        // x beats y and z more often than not; y beats z.
        let winner = winners[if i % 5 < 3 { 0 } else { (i / 5) % 4 }];
        battles.push_str(&format!(
            "{{\"model_a\":\"{a}\",\"model_b\":\"{b}\",\"winner\":\"{winner}\",\"question_id\":\"q{i}\"}}\n"
        ));
        i += 1;
    }
    let response = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/leaderboard?rounds=10", server.base)),
        )
        .body(battles)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let board: serde_json::Value = response.json().await.unwrap();
    assert!(board.to_string().contains("\"x\""), "{board}");
    db.cleanup().await;
}

/// An upload that stops sending is dropped after the idle time (a slow body holds nothing for
/// long), with an answer that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_dropped_after_the_idle_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::sqlite();
    let server = crate::support::spawn_server_with_limits(
        db.url(),
        moat_server::http::Limits {
            upload_idle: Duration::from_millis(700),
            ..Default::default()
        },
    )
    .await;
    let created = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&json!({ "slug": "stalled", "title": "Stalled" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let mut upload = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/studies/stalled/import HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n"
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(sample_jsonl(2).as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), upload.read_to_string(&mut answer))
        .await
        .expect("the server answers a stalled upload")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("nothing arrived for"), "{answer}");
    db.cleanup().await;
}

/// A client that sends its request headers slower than the header-read time is disconnected
/// (slowloris); an ordinary request on the same server is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::sqlite();
    let server = crate::support::spawn_server_with_limits(
        db.url(),
        moat_server::http::Limits {
            header_read: Duration::from_millis(700),
            ..Default::default()
        },
    )
    .await;
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /admin HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closed the connection within 10 s");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.contains("200 OK"), "{text}");
    let ok = server
        .http
        .get(format!("{}/api/v1/whoami", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    db.cleanup().await;
}

/// Runs the `moat` binary on database `url` with `args`; its standard output.
fn moat_cli(url: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .output()
        .expect("run moat");
    assert!(
        output.status.success(),
        "moat {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `moat admin-token create/list/revoke` and `moat audit` on the server's database: the token
/// printed once works with its role, the list shows no token, revocation stops it, the audit log
/// names the command line.
async fn admin_tokens_from_the_command_line(url: &str) {
    let server = spawn_server(url, &no_site()).await;
    server.open_study("cli-study", 2, json!({})).await;
    let created = moat_cli(
        url,
        &[
            "admin-token",
            "create",
            "--name",
            "alice",
            "--role",
            "researcher",
            "--study",
            "cli-study",
        ],
    );
    let token = created
        .split_whitespace()
        .find(|word| word.starts_with("moat_at_"))
        .unwrap_or_else(|| panic!("a token in {created:?}"))
        .to_string();
    let who: serde_json::Value = server
        .http
        .get(format!("{}/api/v1/whoami", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["name"], "alice");
    assert_eq!(who["role"], "researcher");
    // The studies alice may list.
    let alice_studies = || async {
        let listed: serde_json::Value = server
            .http
            .get(format!("{}/api/v1/studies", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        slugs(&listed)
    };
    assert_eq!(alice_studies().await, ["cli-study"]);

    let list = moat_cli(url, &["admin-token", "list"]);
    assert!(
        list.contains("alice\tresearcher\tstudies cli-study"),
        "{list}"
    );
    assert!(!list.contains("moat_at_"), "{list}");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args([
            "--database-url",
            url,
            "admin-token",
            "create",
            "--name",
            "bob",
            "--role",
            "boss",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("role must be owner, researcher or viewer"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The studies of a token replaced: by the command line (none), then by the JSON API.
    let said = moat_cli(url, &["admin-token", "studies", "alice"]);
    assert!(said.contains("no studies granted"), "{said}");
    assert!(alice_studies().await.is_empty());
    let put = |body: serde_json::Value| {
        server
            .admin(
                server
                    .http
                    .put(format!("{}/api/v1/admin-tokens/alice/studies", server.base)),
            )
            .json(&body)
            .send()
    };
    let missing = put(json!({ "studies": ["cli-study", "no-such-study"] }))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(
        alice_studies().await.is_empty(),
        "nothing granted on a bad slug"
    );
    let granted = put(json!({ "studies": ["cli-study"] })).await.unwrap();
    assert_eq!(granted.status(), 200);
    assert_eq!(alice_studies().await, ["cli-study"]);
    let by_alice = server
        .http
        .put(format!("{}/api/v1/admin-tokens/alice/studies", server.base))
        .bearer_auth(&token)
        .json(&json!({ "studies": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_alice.status(),
        403,
        "a researcher cannot grant itself studies"
    );

    moat_cli(url, &["admin-token", "revoke", "alice"]);
    assert_eq!(
        put(json!({ "studies": ["cli-study"] }))
            .await
            .unwrap()
            .status(),
        409,
        "a revoked token gets no studies"
    );
    let after = server
        .http
        .get(format!("{}/api/v1/whoami", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "revoked from the command line");
    let audit = moat_cli(url, &["audit", "--limit", "10"]);
    assert!(
        audit.contains("\tcli\ttoken.create\talice\tresearcher cli-study"),
        "{audit}"
    );
    assert!(audit.contains("\tcli\ttoken.revoke\talice"), "{audit}");
    assert!(audit.contains("\tcli\ttoken.studies\talice\t"), "{audit}");
    assert!(
        audit.contains("\towner\ttoken.studies\talice\tcli-study"),
        "{audit}"
    );
}
on_both_backends!(admin_tokens_from_the_command_line);

/// The owner's token section of the admin page: shown to the owner only; its server functions
/// create (the token in the answer, once) and revoke tokens, and refuse anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_section_is_the_owners() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let owner = server.owner_cookie().await;
    let rpc = |cookie: &str, endpoint: &str, form: &[(&str, &str)]| {
        server
            .http
            .post(format!("{}/rpc/{endpoint}", server.base))
            .header("Cookie", cookie)
            .header("Origin", &server.base)
            .header("Accept", "application/json")
            .form(form)
            .send()
    };
    let created = rpc(
        &owner,
        "create_admin_token",
        &[("name", "petra"), ("role", "researcher"), ("studies", "")],
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 200);
    let token: String = created.json().await.unwrap();
    assert!(token.starts_with("moat_at_"), "{token}");
    let (petra, _) = server.login_with(&token).await;

    let owner_page = admin_page(&server, &owner).await;
    assert!(owner_page.contains("People (admin tokens)"), "{owner_page}");
    assert!(owner_page.contains("petra"), "{owner_page}");
    assert!(
        !owner_page.contains(&token),
        "the page never shows a stored token"
    );
    let petra_page = admin_page(&server, &petra).await;
    assert!(
        petra_page.contains(r#"id="whoami">Logged in as <!>petra<!> (<!>researcher<!>)"#),
        "{petra_page}"
    );
    assert!(
        !petra_page.contains("People (admin tokens)"),
        "{petra_page}"
    );

    let refused = rpc(
        &petra,
        "create_admin_token",
        &[("name", "mallory"), ("role", "owner")],
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 403, "a researcher cannot mint tokens");
    let refused = rpc(&petra, "revoke_admin_token", &[("name", "petra")])
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // Studies granted from the token's row: the owner's form only; a bad slug changes nothing.
    server.open_study("granted", 2, json!({})).await;
    let petra_studies = || async {
        rpc(&petra, "admin_studies", &[])
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(!petra_studies().await.contains("granted"));
    let refused = rpc(
        &petra,
        "set_admin_token_studies",
        &[("name", "petra"), ("studies", "granted")],
    )
    .await
    .unwrap();
    assert_eq!(
        refused.status(),
        403,
        "a researcher cannot grant itself studies"
    );
    let missing = rpc(
        &owner,
        "set_admin_token_studies",
        &[("name", "petra"), ("studies", "granted, nope")],
    )
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(!petra_studies().await.contains("granted"));
    let saved = rpc(
        &owner,
        "set_admin_token_studies",
        &[("name", "petra"), ("studies", "granted")],
    )
    .await
    .unwrap();
    assert!(saved.status().is_success(), "{}", saved.status());
    assert!(petra_studies().await.contains("granted"));
    let owner_page = admin_page(&server, &owner).await;
    assert!(
        owner_page.contains(r#"name="studies" value="granted""#),
        "the row's form holds the token's studies: {owner_page}"
    );
    let revoked = rpc(&owner, "revoke_admin_token", &[("name", "petra")])
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(whoami(&server, &petra).await.0, 401);
    db.cleanup().await;
}
