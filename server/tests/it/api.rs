//! The HTTP surface against a real server on a free port: admin API, rater protocol, blindness and
//! sanitizing of untrusted model output.

use moat_app::wire::RaterView;
use moat_server::client::{ClientError, RaterClient};

use crate::support::{spawn_server, TestDb, MODELS};

fn no_site() -> std::path::PathBuf {
    std::path::PathBuf::from("/nonexistent-site")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_token_and_answers_json() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let anonymous = server
        .http
        .get(format!("{}/api/v1/studies", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("admin token"));

    let opened = server.open_study("api", 3, serde_json::json!({})).await;
    assert_eq!(opened.status(), 200);
    let bad_status = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/api/status", server.base)),
        )
        .json(&serde_json::json!({ "status": "paused" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_status.status(), 400);
    let missing = server
        .admin(
            server
                .http
                .get(format!("{}/api/v1/studies/nope", server.base)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let bad_import = server
        .admin(server.http.post(format!("{}/api/v1/studies/api/import", server.base)))
        .body("{\"prompt\": \"q\", \"responses\": {\"unknown-model\": \"a\", \"llama-secret-7b\": \"b\"}}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_import.status(), 422);
    let error = bad_import.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("line 1") && error.contains("responses.unknown-model"),
        "{error}"
    );
    let duplicate = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&serde_json::json!({ "slug": "api", "title": "again" }))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let report = server.admin_get_json("/api/v1/studies/api").await;
    assert_eq!(report["summary"]["prompts"], 3);
    assert_eq!(report["summary"]["status"], "open");

    // PUT replaces title, instructions and settings, with the creation checks.
    let put = |body: serde_json::Value| {
        server
            .admin(
                server
                    .http
                    .put(format!("{}/api/v1/studies/api", server.base)),
            )
            .json(&body)
            .send()
    };
    let changed = put(serde_json::json!({
        "title": "API study, renamed",
        "instructions": "Read *both* answers.",
        "settings": { "items_per_rater": 7, "check_rate": 0.1, "max_failed_checks": 2 },
    }))
    .await
    .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(
        changed.json::<serde_json::Value>().await.unwrap()["title"],
        "API study, renamed"
    );
    let refused = put(serde_json::json!({ "title": " ", "settings": {} }))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let malformed = put(serde_json::json!({ "settings": { "items_per_rater": "many" } }))
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let report = server.admin_get_json("/api/v1/studies/api").await;
    assert_eq!(report["instructions"], "Read *both* answers.");
    assert_eq!(report["settings"]["items_per_rater"], 7);
    assert_eq!(report["settings"]["max_failed_checks"], 2);
    assert_eq!(report["summary"]["status"], "open", "the status stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rater_protocol_over_http() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server
        .open_study(
            "http",
            3,
            serde_json::json!({ "items_per_rater": 3, "completion_code": "CODE-42" }),
        )
        .await;
    let rater = RaterClient::join(&server.base, "http", Some("P1"))
        .await
        .unwrap();
    let first = rater
        .next_comparison()
        .await
        .unwrap()
        .expect("a comparison");
    rater.vote(&first.assignment, "left").await.unwrap();
    rater
        .vote(&first.assignment, "left")
        .await
        .expect("a resubmission is harmless");
    match rater.vote(&first.assignment, "tie").await {
        Err(ClientError::Status { status: 409, .. }) => {}
        other => panic!("expected 409, got {other:?}"),
    }
    // No comparison of this rater's: 404. Not an assignment id at all: 400.
    match rater.vote("0123456789abcdef0123456789abcdef", "left").await {
        Err(ClientError::Status { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    match rater.vote("0123456789abcdef", "left").await {
        Err(ClientError::Status { status: 400, .. }) => {}
        other => panic!("expected 400, got {other:?}"),
    }
    let second = rater.next_comparison().await.unwrap().unwrap();
    match rater.vote(&second.assignment, "sideways").await {
        Err(ClientError::Status { status: 400, .. }) => {}
        other => panic!("expected 400, got {other:?}"),
    }
    // A stranger without the rater cookie cannot vote.
    let stranger = reqwest::Client::new()
        .post(format!("{}/rpc/vote", server.base))
        .header("Origin", &server.base)
        .header("Accept", "application/json")
        .form(&[
            ("slug", "http"),
            ("assignment", second.assignment.as_str()),
            ("choice", "left"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    rater.vote(&second.assignment, "right").await.unwrap();
    let third = rater.next_comparison().await.unwrap().unwrap();
    assert_eq!(third.position, 3);
    rater.vote(&third.assignment, "both_bad").await.unwrap();
    match rater.next().await.unwrap() {
        RaterView::Done(done) => {
            assert_eq!(done.votes, 3);
            assert!(
                done.code
                    .as_deref()
                    .is_some_and(|c| c.starts_with("CODE-42-")),
                "the session's own code: {:?}",
                done.code
            );
        }
        other => panic!("expected the completion page, got {other:?}"),
    }
    let (_, html) = rater.page("/s/http/compare").await.unwrap();
    assert!(
        html.contains("CODE-42"),
        "the completion page shows the code"
    );
}

/// Nothing the browser receives before a vote names a model, its provider, or a database id of a
/// response: not the HTML, not the hydration data in it, not the server functions, not the headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blindness_before_the_vote() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server
        .open_study(
            "blind",
            4,
            serde_json::json!({ "ask_source": true, "ask_rationale": true }),
        )
        .await;
    let rater = RaterClient::join(&server.base, "blind", None)
        .await
        .unwrap();
    let study = server.backend.store.study("blind").await.unwrap();
    let response_ids: Vec<i64> = {
        // Every response id of the study, read from the database.
        let mut ids = Vec::new();
        for candidate in server
            .backend
            .store
            .candidate_prompts(study.id, -1, 100, false)
            .await
            .unwrap()
        {
            ids.extend(candidate.responses.iter().map(|(id, _)| *id));
        }
        ids
    };
    assert_eq!(response_ids.len(), 12);
    let forbidden: Vec<String> = MODELS
        .iter()
        .flat_map(|(name, provider, _)| [name.to_string(), provider.to_string()])
        .collect();
    for round in 0..3 {
        let (entry_headers, entry_html) = rater.page("/s/blind").await.unwrap();
        let raw = rater.next_raw().await.unwrap();
        let (headers, html) = rater.page("/s/blind/compare").await.unwrap();
        assert!(
            html.contains("Response A") && html.contains("Response B"),
            "round {round}: not a comparison page"
        );
        for text in [&entry_html, &raw, &html] {
            for word in &forbidden {
                assert!(
                    !text.contains(word.as_str()),
                    "round {round}: {word} leaked"
                );
            }
        }
        for (name, value) in headers.iter().chain(entry_headers.iter()) {
            let value = value.to_str().unwrap_or("");
            for word in &forbidden {
                assert!(!value.contains(word.as_str()), "header {name} leaks {word}");
            }
        }
        // The wire type has no id field but the random assignment id: check every number in it.
        let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let mut numbers = Vec::new();
        collect_numbers(&json, &mut numbers);
        let comparison = json.get("Compare").expect("a comparison");
        let mut keys: Vec<&str> = comparison
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut expected = vec![
            "assignment",
            "turns",
            "left_html",
            "right_html",
            "position",
            "total",
            "ask_source",
            "ask_rationale",
            // Multi-turn arena battles: earlier turns' HTML, and the follow-ups allowed (counters).
            "earlier",
            "follow_ups_left",
            "max_prompt_chars",
        ];
        expected.sort_unstable();
        assert_eq!(
            keys, expected,
            "the comparison's wire type changed: check it for identities"
        );
        // The only numbers are the progress counters (position and total) and the study's
        // follow-up limits (the same for every comparison of the study).
        assert_eq!(numbers.len(), 4, "{numbers:?}");
        let assignment = comparison["assignment"].as_str().unwrap().to_string();
        assert!(
            assignment.len() >= 32 && !response_ids.iter().any(|id| assignment == id.to_string())
        );
        assert!(
            html.contains(&assignment),
            "the page carries the same assignment"
        );
        // The vote's answer is what the page shows next: the next comparison, blind too.
        let answer = rater.vote_raw(&assignment, "tie", &[]).await.unwrap();
        for word in &forbidden {
            assert!(
                !answer.contains(word.as_str()),
                "round {round}: {word} leaked in the vote's answer"
            );
        }
    }
}

/// A vote answers with what the rater sees next, and that is what the page then shows: the next
/// comparison (issued once, not again by the next request), the reveal in a study that reveals, and
/// the end after the last vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_answers_with_what_comes_next() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server
        .open_study("onward", 3, serde_json::json!({ "items_per_rater": 2 }))
        .await;
    // A second rater is shown the same prompts again: their texts come from the renderings kept
    // by id, and must still be exactly what the page renders from the rows.
    for _ in 0..2 {
        let other = RaterClient::join(&server.base, "onward", None)
            .await
            .unwrap();
        let first = other.next_comparison().await.unwrap().unwrap();
        let RaterView::Compare(second) = other
            .vote_then_next(&first.assignment, "left")
            .await
            .unwrap()
        else {
            panic!("the vote answers with the next comparison")
        };
        let shown = other.next_comparison().await.unwrap().unwrap();
        assert_eq!(shown, second, "the vote's answer is the page's comparison");
    }
    let rater = RaterClient::join(&server.base, "onward", None)
        .await
        .unwrap();
    let first = rater.next_comparison().await.unwrap().unwrap();
    let RaterView::Compare(second) = rater
        .vote_then_next(&first.assignment, "left")
        .await
        .unwrap()
    else {
        panic!("the vote answers with the next comparison")
    };
    assert_ne!(second.assignment, first.assignment);
    assert_eq!(second.position, 2);
    let shown = rater.next_comparison().await.unwrap().unwrap();
    assert_eq!(
        shown, second,
        "the page shows the comparison the vote answered with"
    );
    let last = rater
        .vote_then_next(&second.assignment, "tie")
        .await
        .unwrap();
    assert!(matches!(last, RaterView::Done(_)), "{last:?}");
    let study = server.backend.store.study("onward").await.unwrap();
    let voted = server
        .backend
        .store
        .voted_assignment_ids(study.id)
        .await
        .unwrap();
    // Each of the other two raters voted once.
    assert_eq!(voted.len(), 4, "{voted:?}");
    assert!(voted.contains(&first.assignment) && voted.contains(&second.assignment));

    // A study that reveals: the vote answers with the names of the pair just voted on.
    server
        .open_study(
            "reveals",
            3,
            serde_json::json!({ "reveal_after_vote": true }),
        )
        .await;
    let rater = RaterClient::join(&server.base, "reveals", None)
        .await
        .unwrap();
    let first = rater.next_comparison().await.unwrap().unwrap();
    let answer = rater
        .vote_then_next(&first.assignment, "right")
        .await
        .unwrap();
    let RaterView::Reveal(reveal) = answer else {
        panic!("the vote answers with the reveal: {answer:?}")
    };
    assert_eq!(reveal.choice, "right");
    assert!(MODELS.iter().any(|(name, _, _)| reveal.left_model == *name));
    db.cleanup().await;
}

fn collect_numbers(value: &serde_json::Value, out: &mut Vec<f64>) {
    match value {
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_numbers(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_numbers(v, out)),
        _ => {}
    }
}

/// Untrusted model output renders inert: no script, no event handler, no javascript: link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_responses_render_inert() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    let created = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&serde_json::json!({ "slug": "xss", "title": "XSS" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let hostile = "<script>alert('pwned')</script> <img src=x onerror=\"alert('pwned')\"> \
                   [click me](javascript:alert(1)) <a href=\"javascript:alert('pwned')\">x</a>";
    let file = format!(
        "{}\n{}\n",
        serde_json::json!({ "models": [{ "name": "m1", "openness": "open" }, { "name": "m2", "openness": "closed" }] }),
        serde_json::json!({ "id": "x", "prompt": hostile, "responses": { "m1": hostile, "m2": hostile } })
    );
    let imported = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/xss/import", server.base)),
        )
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);
    server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/xss/status", server.base)),
        )
        .json(&serde_json::json!({ "status": "open" }))
        .send()
        .await
        .unwrap();
    let rater = RaterClient::join(&server.base, "xss", None).await.unwrap();
    let (_, html) = rater.page("/s/xss/compare").await.unwrap();
    assert!(html.contains("click me"), "the link text is still shown");
    let lowered = html.to_lowercase();
    assert!(
        !lowered.contains("alert('pwned')</script>"),
        "a script survived"
    );
    assert!(!lowered.contains("onerror"), "an event handler survived");
    // Inert text may mention javascript:, but no attribute may carry such a URL.
    let compact = lowered.replace(['"', '\'', ' '], "");
    for attribute in ["href=javascript:", "src=javascript:", "action=javascript:"] {
        assert!(
            !compact.contains(attribute),
            "a javascript: URL survived as {attribute}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboard_and_exports_over_http() {
    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), &no_site()).await;
    server
        .open_study(
            "lb",
            12,
            serde_json::json!({ "items_per_rater": 12, "ask_source": true }),
        )
        .await;
    for rater_index in 0..4 {
        let rater = RaterClient::join(&server.base, "lb", None).await.unwrap();
        let mut i = 0;
        while let Some(comparison) = rater.next_comparison().await.unwrap() {
            let choice = ["left", "right", "left", "tie"][(i + rater_index) % 4];
            rater.vote(&comparison.assignment, choice).await.unwrap();
            i += 1;
        }
    }
    let url = format!(
        "{}/api/v1/studies/lb/leaderboard?rounds=200&seed=3",
        server.base
    );
    let first = server.admin(server.http.get(&url)).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first = first.text().await.unwrap();
    let again = server
        .admin(server.http.get(&url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(first, again, "same data and seed give the same numbers");
    let analysis: serde_json::Value = serde_json::from_str(&first).unwrap();
    let models = analysis["leaderboard"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    assert!(models
        .iter()
        .all(|m| m["rating"].is_number() && m["ci"]["lower"].is_number()));
    assert!(analysis["parity_open_vs_closed"]["summary"].is_string());
    assert!(analysis["agreement"]["summary"].is_string());
    let bad = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/lb/leaderboard?rounds=999999999",
            server.base
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Parity for each open model against the closed one, named, beside the pooled verdict.
    let pairs = analysis["parity_by_pair"]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2, "{}", analysis["parity_by_pair"]);
    assert!(pairs.iter().all(|p| p["model_b"] == "gpt-hidden-4"
        && p["parity"]["summary"]
            .as_str()
            .unwrap()
            .contains(" vs gpt-hidden-4: ")
        && p["style_controlled"]["summary"].is_string()));
    assert_eq!(
        analysis["parity_by_pair"]["pooled"],
        analysis["parity_open_vs_closed"]
    );
    // Every prompt was imported with the category "test".
    assert_eq!(analysis["categories"][0]["category"], "test");
    let get = |query: &str| {
        server.admin(server.http.get(format!(
            "{}/api/v1/studies/lb/leaderboard?rounds=10&{query}",
            server.base
        )))
    };
    let unknown = get("category=poetry").send().await.unwrap();
    assert_eq!(unknown.status(), 400);
    let message: serde_json::Value = unknown.json().await.unwrap();
    let message = message["error"].as_str().unwrap();
    assert!(
        message.contains("\"poetry\"") && message.contains("test (48 votes)"),
        "{message}"
    );
    let options: serde_json::Value = get("category=test&reweight=true&history=12&dedup=true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(options["category"], "test");
    assert!(options["leaderboard"]["reweighting"]["effective_battles"].is_number());
    let points = options["history"]["points"].as_array().unwrap();
    let counted: Vec<u64> = points
        .iter()
        .map(|p| p["votes"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counted.last().copied(),
        options["leaderboard"]["n_battles"].as_u64()
    );
    assert!(
        counted[..counted.len() - 1].iter().all(|v| v % 12 == 0),
        "{counted:?}"
    );
    assert_eq!(options["deduplication"]["distinct_prompts"], 12);
    assert_eq!(get("history=0").send().await.unwrap().status(), 400);

    // The page: the parity table per pair, the category selector and ranks, the style switch.
    let page = |query: &'static str| {
        let server = &server;
        async move {
            server
                .owner_page(&format!("/admin/studies/lb/leaderboard{query}"))
                .await
        }
    };
    let html = page("").await;
    for expected in [
        r#"id="parity-pairs""#,
        "llama-secret-7b vs gpt-hidden-4",
        "open-weights models vs closed API models (pooled)",
        r#"id="category""#,
        r#"<option value="test""#,
        r#"id="category-ranks""#,
        r#"id="style-control""#,
    ] {
        assert!(
            html.contains(expected),
            "{expected:?} missing from the page"
        );
    }
    assert!(!html.contains(r#"id="style-table""#));
    let html = page("?category=test&style=true").await;
    assert!(html.contains(r#"id="style-table""#) && html.contains("Rank change"));
    assert!(html.contains("Leaderboard: ") && html.contains(" — test"));
    // The flagged-raters switch keeps the category and the style switch.
    assert!(
        html.contains("leaderboard?drop_flagged=true&amp;category=test&amp;style=true")
            || html.contains("leaderboard?drop_flagged=true&category=test&style=true"),
        "no link that keeps the page's choices"
    );

    // Arena battles file through the API.
    let battles = "{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"model_a\"}\n{\"model_a\":\"y\",\"model_b\":\"x\",\"winner\":\"tie (bothbad)\"}\n";
    let board = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/leaderboard?rounds=50", server.base)),
        )
        .body(battles)
        .send()
        .await
        .unwrap();
    assert_eq!(board.status(), 200);
    let broken = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/leaderboard", server.base)),
        )
        .body("{\"model_a\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 422);

    // Every format downloads; Parquet starts with its magic bytes.
    for format in ["trl", "dpo", "kto", "hh-rlhf", "openai", "arena", "votes"] {
        let response = server
            .admin(server.http.get(format!(
                "{}/api/v1/studies/lb/export?format={format}",
                server.base
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{format}");
        let text = response.text().await.unwrap();
        assert!(
            text.lines().count() > 0
                && text
                    .lines()
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
            "{format}"
        );
    }
    let parquet = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/lb/export?format=trl&container=parquet",
            server.base
        )))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&parquet[..4], b"PAR1");
    let unknown = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/lb/export?format=nope",
            server.base
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
}

/// The hydration module goes out gzipped to browsers that accept it (the build writes the `.gz`
/// beside it), as is to the others, with the wasm content type either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydration_module_is_served_gzipped() {
    use std::io::{Read, Write};
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let wasm: Vec<u8> = b"\0asm\x01\0\0\0"
        .iter()
        .copied()
        .chain((0..200_000u32).map(|i| (i % 251) as u8 ^ (i / 4096) as u8))
        .collect();
    std::fs::write(pkg.join("moat_bg.wasm"), &wasm).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&wasm).unwrap();
    std::fs::write(pkg.join("moat_bg.wasm.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(pkg.join("moat.js"), "export default function init() {}\n").unwrap();

    let db = TestDb::sqlite();
    let server = spawn_server(db.url(), site.path()).await;
    let get = |path: &str, gzip: bool| {
        let mut request = server.http.get(format!("{}{path}", server.base));
        if gzip {
            request = request.header("accept-encoding", "gzip, deflate, br");
        }
        request.send()
    };
    let zipped = get("/pkg/moat_bg.wasm", true).await.unwrap();
    assert_eq!(zipped.status(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["content-type"], "application/wasm");
    let body = zipped.bytes().await.unwrap();
    assert!(body.len() < wasm.len() / 2, "{} bytes", body.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, wasm);

    let plain = get("/pkg/moat_bg.wasm", false).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["content-type"], "application/wasm");
    assert_eq!(plain.bytes().await.unwrap(), wasm);
    // A file without a .gz copy goes out as it is.
    let script = get("/pkg/moat.js", true).await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers().get("content-encoding").is_none());
    assert_eq!(get("/pkg/missing.js", true).await.unwrap().status(), 404);
    db.cleanup().await;
}
