//! The live arena over HTTP: a rater's prompt, two registry models answering as they stream (an
//! OpenAI-compatible fake upstream that streams at a fixed pace, so growth can be watched), the vote,
//! the reveal, void battles, limits, and blindness of everything the rater receives before the vote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use moat_app::wire::RaterView;
use moat_server::client::RaterClient;

use crate::on_both_backends;
use crate::support::{spawn_server_with_models, TestServer};

/// Names distinctive enough that finding them in anything the rater receives means a leak.
const ALPHA: &str = "arena-secret-alpha";
const BETA: &str = "arena-covert-beta";
const BROKEN: &str = "arena-broken-gamma";
const PROVIDERS: [&str; 3] = ["AlphaHiddenLabs", "BetaCovertInc", "GammaVeiledAI"];

fn no_site() -> PathBuf {
    PathBuf::from("/nonexistent-site")
}

/// The words each upstream model streams, one chunk every 40 ms.
fn words(model: &str) -> Vec<String> {
    words_for(model, &[])
}

/// The words a model streams for a conversation: its fixed first answer, or for a follow-up
/// ("Answer N after W.") the turn's number and the first word of the previous answer it was sent
/// (so a test sees that each model gets its own earlier answers).
fn words_for(model: &str, messages: &[serde_json::Value]) -> Vec<String> {
    let users = messages.iter().filter(|m| m["role"] == "user").count();
    let text = if users > 1 {
        let previous = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "assistant")
            .and_then(|m| m["content"].as_str())
            .and_then(|text| text.split(' ').next())
            .unwrap_or("nothing");
        format!("Answer {users} after {previous}")
    } else if model == "upstream-alpha" {
        "The capital of France is Paris, a city on the Seine.".to_string()
    } else {
        "Paris is the capital.\n\nIt has been since 987.".to_string()
    };
    text.split_inclusive(' ').map(str::to_string).collect()
}

/// A local server speaking the OpenAI chat-completions protocol: `upstream-broken` answers 500,
/// the others stream their words at a fixed pace with a usage chunk and `[DONE]`.
async fn fake_upstream() -> String {
    async fn chat(Json(body): Json<serde_json::Value>) -> axum::response::Response {
        let model = body["model"].as_str().unwrap_or_default().to_string();
        if model == "upstream-broken" {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({"error": {"message": "the upstream is down", "type": "server_error"}})),
            )
                .into_response();
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let chunks = words_for(&model, &messages);
        let count = chunks.len();
        let stream = async_stream(model, chunks, count);
        Sse::new(stream).into_response()
    }
    fn async_stream(
        model: String,
        chunks: Vec<String>,
        count: usize,
    ) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
        let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
            serde_json::json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = vec![chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        )];
        for word in &chunks {
            events.push(chunk(serde_json::json!({"content": word}), None));
        }
        events.push(chunk(serde_json::json!({}), Some("stop")));
        events.push(serde_json::json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": count, "total_tokens": 9 + count}}));
        let mut data: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        data.push("[DONE]".into());
        futures::stream::unfold(data.into_iter(), |mut rest| async move {
            let next = rest.next()?;
            tokio::time::sleep(Duration::from_millis(40)).await;
            Some((Ok(Event::default().data(next)), rest))
        })
    }
    let app = Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn registry(dir: &Path, upstream: &str) -> PathBuf {
    let mut text = String::new();
    for ((name, upstream_model), provider) in [
        (ALPHA, "upstream-alpha"),
        (BETA, "upstream-beta"),
        (BROKEN, "upstream-broken"),
    ]
    .into_iter()
    .zip(PROVIDERS)
    {
        text.push_str(&format!(
            "[[model]]\nname = \"{name}\"\nprovider = \"{provider}\"\nopenness = \"{}\"\nkind = \"openai\"\n\
             base_url = \"{upstream}\"\nmodel = \"{upstream_model}\"\nretries = 0\nidle_timeout_secs = 5\n\n",
            if name == ALPHA { "open" } else { "closed" }
        ));
    }
    let path = dir.join("models.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn arena_server(url: &str, dir: &Path) -> TestServer {
    let upstream = fake_upstream().await;
    spawn_server_with_models(url, &no_site(), Some(&registry(dir, &upstream))).await
}

async fn open_arena(server: &TestServer, slug: &str, settings: serde_json::Value) {
    let created = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&serde_json::json!({ "slug": slug, "title": "Arena", "instructions": "Ask anything.", "settings": settings }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let opened = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/{slug}/status", server.base)),
        )
        .json(&serde_json::json!({ "status": "open" }))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
}

fn assert_blind(what: &str, text: &str) {
    for secret in [ALPHA, BETA, BROKEN]
        .into_iter()
        .chain(PROVIDERS)
        .chain(["upstream-alpha", "upstream-beta"])
    {
        assert!(
            !text.contains(secret),
            "{what} names {secret} before the vote: {text}"
        );
    }
}

/// `(event, data)` pairs of a server-sent-event body.
fn events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut name = "message".to_string();
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
                }
            }
            (!data.is_empty()).then(|| (name, data.join("\n")))
        })
        .collect()
}

async fn battle_streams_then_counts_like_any_comparison(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = arena_server(url, dir.path()).await;
    open_arena(
        &server,
        "live",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA], "items_per_rater": 2,
                            "reveal_after_vote": true }),
    )
    .await;
    let rater = RaterClient::join(&server.base, "live", None).await.unwrap();
    let view = rater.next_raw().await.unwrap();
    assert_blind("the arena page", &view);
    let RaterView::Arena(turn) = serde_json::from_str(&view).unwrap() else {
        panic!("an arena study asks for a prompt: {view}")
    };
    assert_eq!((turn.position, turn.total, turn.running), (1, 2, None));

    let battle = rater
        .arena_prompt("What is the capital of France?", true)
        .await
        .unwrap();
    assert_eq!(battle.len(), 32, "a random 128-bit id: {battle}");
    // While it runs, the page shows the running battle (a reload resumes it), naming nobody.
    let running = rater.next_raw().await.unwrap();
    assert_blind("the running battle's page", &running);
    let (_, html) = rater.page("/s/live/compare").await.unwrap();
    assert_blind("the running battle's HTML", &html);

    // The answers grow chunk by chunk before the battle ends.
    let mut response = rater.battle_events_response(&battle).await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = String::new();
    let mut reads_before_end = 0;
    while let Some(bytes) = response.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&bytes).unwrap());
        if !body.contains("event: end") && body.contains("event: a") {
            reads_before_end += 1;
        }
    }
    assert_blind("the battle's events", &body);
    let received = events(&body);
    let text = |side: &str| -> String {
        received
            .iter()
            .filter(|(name, _)| name == side)
            .map(|(_, data)| data.as_str())
            .collect()
    };
    assert!(
        reads_before_end >= 3,
        "the answers arrived in {reads_before_end} reads before the end: {body}"
    );
    assert_eq!(
        received.last(),
        Some(&("end".to_string(), "complete".to_string()))
    );
    let (a, b) = (text("a"), text("b"));
    let alpha_text: String = words("upstream-alpha").concat();
    let beta_text: String = words("upstream-beta").concat();
    assert!(
        (a == alpha_text && b == beta_text) || (a == beta_text && b == alpha_text),
        "{a:?} / {b:?}"
    );

    // Then it is an ordinary comparison: the same texts, sanitized, and a vote.
    let view = rater.next_raw().await.unwrap();
    assert_blind("the comparison", &view);
    let RaterView::Compare(comparison) = serde_json::from_str(&view).unwrap() else {
        panic!("a finished battle is a comparison: {view}")
    };
    assert!(comparison.turns[0].html.contains("capital of France"));
    assert!(comparison.left_html.contains(a.split(' ').next().unwrap()));
    let a_is_alpha = a == alpha_text;
    rater.vote(&comparison.assignment, "left").await.unwrap();
    let RaterView::Reveal(reveal) = rater.next().await.unwrap() else {
        panic!("reveal after the vote")
    };
    let (left, right) = if a_is_alpha {
        (ALPHA, BETA)
    } else {
        (BETA, ALPHA)
    };
    assert_eq!(
        (reveal.left_model.as_str(), reveal.right_model.as_str()),
        (left, right)
    );

    // Downstream: the leaderboard and the exports read the battle like any vote.
    let board = server
        .admin_get_json("/api/v1/studies/live/leaderboard")
        .await;
    let board_text = board.to_string();
    assert!(
        board_text.contains(ALPHA) && board_text.contains(BETA),
        "{board_text}"
    );
    let export = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/live/export?format=arena",
            server.base
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row: serde_json::Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(row["model_a"], left);
    assert_eq!(row["winner"], "model_a");
    assert_eq!(
        row["conversation_a"][0]["content"],
        "What is the capital of France?"
    );
}
on_both_backends!(battle_streams_then_counts_like_any_comparison);

async fn a_failing_model_voids_the_battle(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = arena_server(url, dir.path()).await;
    open_arena(
        &server,
        "void",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BROKEN] }),
    )
    .await;
    let rater = RaterClient::join(&server.base, "void", None).await.unwrap();
    let battle = rater.arena_prompt("Hello?", true).await.unwrap();
    let body = rater.battle_events(&battle).await.unwrap();
    assert_blind("a void battle's events", &body);
    assert_eq!(
        events(&body).last(),
        Some(&("end".to_string(), "void".to_string()))
    );
    let view = rater.next_raw().await.unwrap();
    assert_blind("the page after a void battle", &view);
    assert!(!view.contains("upstream is down"), "{view}");
    let RaterView::Arena(turn) = serde_json::from_str(&view).unwrap() else {
        panic!("a void battle leaves no comparison: {view}")
    };
    assert!(turn.notice.unwrap().contains("does not count"));
    assert_eq!(turn.position, 1, "a void battle is not a vote");

    // The researcher sees it with its error; nothing of it is counted.
    let study = server.backend.store.study("void").await.unwrap();
    let summary = server.backend.store.battle_summary(study.id).await.unwrap();
    assert_eq!((summary.complete, summary.void), (0, 1));
    assert!(
        summary.recent_void[0].error.contains("500"),
        "{:?}",
        summary.recent_void
    );
    let report = server.admin_get_json("/api/v1/studies/void").await;
    assert_eq!(report["summary"]["votes"], 0);
}
on_both_backends!(a_failing_model_voids_the_battle);

/// Multi-turn: two follow-up questions to the same pair, each model answering with its own earlier
/// answers; the vote is on the whole conversation, which exports as one battle, counts on the
/// leaderboard and trains a reward model.
async fn a_three_turn_battle_is_one_vote_on_the_whole_conversation(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = arena_server(url, dir.path()).await;
    open_arena(
        &server,
        "multi",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA], "items_per_rater": 2,
                            "max_turns": 3 }),
    )
    .await;
    let rater = RaterClient::join(&server.base, "multi", None)
        .await
        .unwrap();
    // A follow-up needs a battle to follow.
    let refused = rater.arena_follow_up("And then?", false).await.unwrap_err();
    assert!(
        refused.to_string().contains("no battle to continue"),
        "{refused}"
    );
    rater
        .arena_prompt("What is the capital of France?", false)
        .await
        .unwrap();
    let RaterView::Compare(first) = rater.next().await.unwrap() else {
        panic!("a finished battle is a comparison")
    };
    assert_eq!((first.earlier.len(), first.follow_ups_left), (0, 2));
    let a_is_alpha = first.left_html.contains("The capital");

    // The second turn: streamed live, the comparison cannot be voted on meanwhile.
    let battle = rater
        .arena_follow_up("How many people live there?", true)
        .await
        .unwrap();
    let running = rater.next_raw().await.unwrap();
    assert_blind("a follow-up's page", &running);
    let RaterView::Arena(turn) = serde_json::from_str(&running).unwrap() else {
        panic!("a follow-up being answered streams: {running}")
    };
    assert_eq!(turn.running.as_deref(), Some(battle.as_str()));
    assert!(turn.context[0].html.contains("capital of France"));
    assert!(
        turn.earlier[0].question_html.contains("How many people"),
        "{:?}",
        turn.earlier
    );
    let early_vote = rater.vote(&first.assignment, "left").await.unwrap_err();
    assert!(
        early_vote.to_string().contains("still answering"),
        "{early_vote}"
    );
    let body = rater.battle_events(&battle).await.unwrap();
    assert_blind("a follow-up's events", &body);
    assert_eq!(
        events(&body).last(),
        Some(&("end".to_string(), "complete".to_string()))
    );
    let RaterView::Compare(second) = rater.next().await.unwrap() else {
        panic!("the answered follow-up is the comparison")
    };
    assert_eq!(second.assignment, first.assignment, "still one comparison");
    assert_eq!((second.earlier.len(), second.follow_ups_left), (1, 1));
    // Each model was sent its own first answer.
    let (own_a, own_b) = if a_is_alpha {
        ("The", "Paris")
    } else {
        ("Paris", "The")
    };
    assert!(
        second
            .left_html
            .contains(&format!("Answer 2 after {own_a}")),
        "{}",
        second.left_html
    );
    assert!(
        second
            .right_html
            .contains(&format!("Answer 2 after {own_b}")),
        "{}",
        second.right_html
    );

    // The third turn (a plain form post waits for both), then no more.
    rater
        .arena_follow_up("And its river?", false)
        .await
        .unwrap();
    let view = rater.next_raw().await.unwrap();
    assert_blind("the three-turn comparison", &view);
    let RaterView::Compare(third) = serde_json::from_str(&view).unwrap() else {
        panic!("a comparison: {view}")
    };
    assert_eq!((third.earlier.len(), third.follow_ups_left), (2, 0));
    assert!(
        third.left_html.contains("Answer 3 after Answer"),
        "{}",
        third.left_html
    );
    let too_many = rater.arena_follow_up("One more?", false).await.unwrap_err();
    assert!(too_many.to_string().contains("3 turns"), "{too_many}");
    rater.vote(&third.assignment, "left").await.unwrap();

    // One battle of three turns, the whole conversation on each side.
    let export = |format: &'static str| {
        let server = &server;
        async move {
            server
                .admin(server.http.get(format!(
                    "{}/api/v1/studies/multi/export?{format}",
                    server.base
                )))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let arena = export("format=arena").await;
    assert_eq!(arena.lines().count(), 1, "{arena}");
    let row: serde_json::Value = serde_json::from_str(arena.trim()).unwrap();
    assert_eq!(row["turn"], 3);
    let roles: Vec<&str> = row["conversation_a"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ]
    );
    assert_eq!(
        row["conversation_a"][2], row["conversation_b"][2],
        "the same questions"
    );
    assert_eq!(row["conversation_a"][4]["content"], "And its river?");
    assert_eq!(
        row["conversation_a"][3]["content"],
        format!("Answer 2 after {own_a}"),
        "side A's own second answer"
    );
    assert_eq!(row["model_a"], if a_is_alpha { ALPHA } else { BETA });

    let trl = export("format=trl&conversational=true").await;
    let row: serde_json::Value = serde_json::from_str(trl.trim()).unwrap();
    assert_eq!(row["prompt"].as_array().unwrap().len(), 1, "{row}");
    assert_eq!(row["chosen"].as_array().unwrap().len(), 5, "{row}");
    assert_eq!(row["chosen"][1]["content"], "How many people live there?");
    let openai = export("format=openai").await;
    assert_eq!(
        openai.trim(),
        "",
        "one answer per side does not fit a multi-turn battle"
    );
    let votes = export("format=votes").await;
    let row: serde_json::Value = serde_json::from_str(votes.trim()).unwrap();
    assert_eq!(row["left_history"].as_array().unwrap().len(), 4, "{row}");

    // The leaderboard counts it once; a reward model trains on it.
    let board = server
        .admin_get_json("/api/v1/studies/multi/leaderboard")
        .await
        .to_string();
    assert!(board.contains(ALPHA) && board.contains(BETA), "{board}");
    let study = server.backend.store.study("multi").await.unwrap();
    let records = server.backend.study_records(&study).await.unwrap();
    let (pairs, _) = moat_server::analysis::preference_pairs(&records);
    assert_eq!(pairs.len(), 1);
    assert!(
        pairs[0].chosen.contains("user: And its river?"),
        "{}",
        pairs[0].chosen
    );
    let out = dir.path().join("rm");
    use clap::Parser;
    let cli = moat_server::cli::Cli::try_parse_from([
        "moat",
        "--database-url",
        url,
        "train",
        "--study",
        "multi",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "1",
        "--quiet",
    ])
    .unwrap();
    moat_server::cli::run(cli).await.unwrap();
    assert!(
        std::fs::read_dir(&out).unwrap().count() > 0,
        "a model was written"
    );
}
on_both_backends!(a_three_turn_battle_is_one_vote_on_the_whole_conversation);

/// A follow-up that fails voids the whole battle: no part of the conversation can be voted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_follow_up_voids_the_whole_battle() {
    let db = crate::support::TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let upstream = fake_upstream().await;
    let server =
        spawn_server_with_models(db.url(), &no_site(), Some(&registry(dir.path(), &upstream)))
            .await;
    open_arena(
        &server,
        "fails-later",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA], "max_turns": 2 }),
    )
    .await;
    let rater = RaterClient::join(&server.base, "fails-later", None)
        .await
        .unwrap();
    rater.arena_prompt("Hello?", false).await.unwrap();
    let RaterView::Compare(first) = rater.next().await.unwrap() else {
        panic!("a comparison")
    };
    // Both models' upstream breaks (a researcher's registry edit): the follow-up fails.
    let broken: String = [ALPHA, BETA]
        .iter()
        .map(|name| {
            format!(
                "[[model]]\nname = \"{name}\"\nprovider = \"P\"\nopenness = \"open\"\nkind = \"openai\"\n\
                 base_url = \"{upstream}\"\nmodel = \"upstream-broken\"\nretries = 0\n\n"
            )
        })
        .collect();
    server
        .backend
        .arena()
        .unwrap()
        .models()
        .replace(&broken)
        .await
        .unwrap();
    rater.arena_follow_up("And?", false).await.unwrap();
    let view = rater.next_raw().await.unwrap();
    assert_blind("the page after a failed follow-up", &view);
    let RaterView::Arena(turn) = serde_json::from_str(&view).unwrap() else {
        panic!("a void battle leaves no comparison: {view}")
    };
    assert!(turn.notice.unwrap().contains("does not count"));
    let refused = rater.vote(&first.assignment, "left").await.unwrap_err();
    assert!(
        refused.to_string().contains("404") || refused.to_string().contains("no such"),
        "{refused}"
    );
    let study = server.backend.store.study("fails-later").await.unwrap();
    let summary = server.backend.store.battle_summary(study.id).await.unwrap();
    assert_eq!((summary.complete, summary.void), (0, 1));
    assert!(
        summary.recent_void[0].error.contains("turn 2"),
        "{:?}",
        summary.recent_void
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_form_post_waits_for_both_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::TestDb::sqlite();
    let server = arena_server(db.url(), dir.path()).await;
    open_arena(
        &server,
        "plain",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA], "stream": "together" }),
    )
    .await;
    let rater = RaterClient::join(&server.base, "plain", None)
        .await
        .unwrap();
    rater.arena_prompt("Name a river.", false).await.unwrap();
    let RaterView::Compare(comparison) = rater.next().await.unwrap() else {
        panic!("both answers are there when the post returns")
    };
    assert!(comparison.left_html.contains("Paris") && comparison.right_html.contains("Paris"));
    // With a comparison waiting, a new prompt is refused until the vote.
    let refused = rater.arena_prompt("Another?", true).await.unwrap_err();
    assert!(
        refused.to_string().contains("vote on the current battle"),
        "{refused}"
    );
    // This study has no sample prompts to offer.
    rater.vote(&comparison.assignment, "left").await.unwrap();
    let no_samples = rater.arena_sample(true).await.unwrap_err().to_string();
    assert!(no_samples.contains("no sample prompts"), "{no_samples}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rater_may_use_a_sample_prompt_instead_of_writing_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::TestDb::sqlite();
    let server = arena_server(db.url(), dir.path()).await;
    let samples = [
        "Explain photosynthesis to a child.",
        "Write a haiku about rain.",
    ];
    open_arena(
        &server,
        "samples",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA], "sample_prompts": samples }),
    )
    .await;
    let rater = RaterClient::join(&server.base, "samples", None)
        .await
        .unwrap();
    let RaterView::Arena(turn) = rater.next().await.unwrap() else {
        panic!("the prompt page")
    };
    assert!(turn.has_samples);
    rater.arena_sample(false).await.unwrap();
    let comparison = rater.next_comparison().await.unwrap().unwrap();
    let asked = &comparison.turns[0].html;
    assert!(
        samples.iter().any(|s| asked.contains(s)),
        "the battle's prompt is a sample: {asked}"
    );
    // A sample longer than the prompt limit is refused with the settings.
    let response = server
        .admin(server.http.put(format!("{}/api/v1/studies/samples", server.base)))
        .json(&serde_json::json!({ "title": "Arena", "settings": { "kind": "arena", "max_prompt_chars": 10, "sample_prompts": samples } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("sample_prompts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_length_and_battles_per_hour_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::TestDb::sqlite();
    let server = arena_server(db.url(), dir.path()).await;
    open_arena(
        &server,
        "limits",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA], "max_prompt_chars": 20,
                            "battles_per_hour": 1, "items_per_rater": 5 }),
    )
    .await;
    let rater = RaterClient::join(&server.base, "limits", None)
        .await
        .unwrap();
    let long = rater
        .arena_prompt("This prompt is longer than twenty characters.", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        long.contains("400") && long.contains("at most 20"),
        "{long}"
    );
    let empty = rater
        .arena_prompt("   ", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(empty.contains("write a prompt"), "{empty}");
    rater.arena_prompt("Short one.", false).await.unwrap();
    let comparison = rater.next_comparison().await.unwrap().unwrap();
    rater.vote(&comparison.assignment, "tie").await.unwrap();
    let hourly = rater
        .arena_prompt("Again.", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(hourly.contains("in the last hour"), "{hourly}");

    // Settings are checked: an unknown kind, a one-model arena.
    for (settings, expected) in [
        (serde_json::json!({ "kind": "duel" }), "kind must be"),
        (
            serde_json::json!({ "kind": "arena", "contestants": [ALPHA] }),
            "at least two",
        ),
        (
            serde_json::json!({ "kind": "arena", "stream": "sometimes" }),
            "stream must be",
        ),
        (
            serde_json::json!({ "kind": "arena", "weights": { ALPHA: -1.0 } }),
            "a weight is 0 or more",
        ),
    ] {
        let response = server
            .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
            .json(&serde_json::json!({ "slug": "bad", "title": "Bad", "settings": settings }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body = response.text().await.unwrap();
        assert!(body.contains(expected), "{body}");
    }
}

/// A local upstream whose one model streams a word every 200 ms for several seconds.
async fn slow_upstream() -> String {
    async fn chat() -> axum::response::Response {
        let stream = futures::stream::unfold(0u32, |n| async move {
            if n > 60 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let data = if n == 60 {
                "[DONE]".to_string()
            } else {
                serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "slow",
                    "choices": [{"index": 0, "delta": {"content": format!("word{n} ")}, "finish_reason": null}]})
                .to_string()
            };
            Some((
                Ok::<_, std::convert::Infallible>(Event::default().data(data)),
                n + 1,
            ))
        });
        Sse::new(stream).into_response()
    }
    let app = Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A registry of ALPHA and BETA, both answering slowly from `upstream` ([`slow_upstream`]).
fn slow_registry(dir: &Path, upstream: &str) -> PathBuf {
    let registry = dir.join("models.toml");
    std::fs::write(
        &registry,
        format!(
            "[[model]]\nname = \"{ALPHA}\"\nprovider = \"P\"\nopenness = \"open\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\nmodel = \"slow\"\n\n\
             [[model]]\nname = \"{BETA}\"\nprovider = \"Q\"\nopenness = \"closed\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\nmodel = \"slow\"\n"
        ),
    )
    .unwrap();
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_leaves_no_counted_half_battle() {
    let dir = tempfile::tempdir().unwrap();
    let registry = slow_registry(dir.path(), &slow_upstream().await);
    let data = dir.path().join("data");
    let binary = Path::new(env!("CARGO_BIN_EXE_moat"));
    let registry_arg = registry.to_str().unwrap();
    let (mut server, base) = moat_server::bench::spawn_server_process_with(
        binary,
        &data,
        crate::support::ADMIN_TOKEN,
        &["--models", registry_arg],
        None,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(crate::support::ADMIN_TOKEN);
    admin(http.post(format!("{base}/api/v1/studies")))
        .json(&serde_json::json!({ "slug": "kill", "title": "Kill", "settings": { "kind": "arena" } }))
        .send()
        .await
        .unwrap();
    admin(http.post(format!("{base}/api/v1/studies/kill/status")))
        .json(&serde_json::json!({ "status": "open" }))
        .send()
        .await
        .unwrap();
    let rater = RaterClient::join(&base, "kill", None).await.unwrap();
    let battle = rater.arena_prompt("Count slowly.", true).await.unwrap();
    let mut events = rater.battle_events_response(&battle).await.unwrap();
    let mut seen = String::new();
    while !seen.contains("word2") {
        seen.push_str(std::str::from_utf8(&events.chunk().await.unwrap().unwrap()).unwrap());
    }
    // SIGKILL while both answers are streaming.
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let (mut server, base) = moat_server::bench::spawn_server_process_with(
        binary,
        &data,
        crate::support::ADMIN_TOKEN,
        &["--models", registry_arg],
        None,
    )
    .await
    .unwrap();
    let report: serde_json::Value = admin(http.get(format!("{base}/api/v1/studies/kill")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["summary"]["votes"], 0);
    assert_eq!(
        report["summary"]["prompts"], 0,
        "no half battle became a prompt"
    );
    assert_eq!(report["battles"]["complete"], 0);
    assert_eq!(
        report["battles"]["streaming"], 1,
        "the cut battle is kept, uncounted"
    );
    let board: serde_json::Value =
        admin(http.get(format!("{base}/api/v1/studies/kill/leaderboard")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(!board.to_string().contains(ALPHA), "{board}");
    // The rater (same cookie) is asked for a new prompt; the cut battle's events say it did not count.
    let rater = rater.rebased(&base).unwrap();
    let RaterView::Arena(turn) = rater.next().await.unwrap() else {
        panic!("a new prompt after the crash")
    };
    assert_eq!(turn.running, None);
    let body = rater.battle_events(&battle).await.unwrap();
    assert!(
        body.contains("event: end") && body.contains("void"),
        "{body}"
    );
    server.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_edits_the_registry_and_a_bad_edit_changes_nothing() {
    use moat_app::backend::Backend;
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::TestDb::sqlite();
    let server = arena_server(db.url(), dir.path()).await;
    let file = dir.path().join("models.toml");
    let before = std::fs::read_to_string(&file).unwrap();
    let view = server.backend.model_registry().await;
    assert_eq!(view.models.len(), 3);
    assert_eq!(view.text.as_deref(), Some(before.as_str()));

    // A wrong field: refused with the model and field named; file and models unchanged.
    let broken = before.replace("retries = 0", "retires = 0");
    let error = server
        .backend
        .save_model_registry(&broken)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("retires"), "{error}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    assert_eq!(server.backend.model_registry().await.models.len(), 3);

    // A good edit (the broken model removed): saved, and /v1 and new battles use it at once.
    let start = before.find(&format!("name = \"{BROKEN}\"")).unwrap();
    let block_start = before[..start].rfind("[[model]]").unwrap();
    let edited = before[..block_start].to_string();
    server.backend.save_model_registry(&edited).await.unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited);
    let listed: serde_json::Value = server
        .admin(server.http.get(format!("{}/v1/models", server.base)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, [ALPHA, BETA]);
    open_arena(&server, "edited", serde_json::json!({ "kind": "arena" })).await;
    let rater = RaterClient::join(&server.base, "edited", None)
        .await
        .unwrap();
    rater.arena_prompt("Hi?", false).await.unwrap();
    assert!(
        rater.next_comparison().await.unwrap().is_some(),
        "every battle is between the two models left"
    );
}

/// Two server processes on one fresh PostgreSQL database with the test registry, an open arena
/// `slug` with `settings` (its models answering slowly if `slow`), and a rater who joined through the
/// first; returns the database (to clean
/// up), the registry's folder, both servers and the rater as each process sees them.
async fn two_processes_with_a_rater(
    slug: &str,
    settings: serde_json::Value,
    slow: bool,
) -> (
    crate::support::TestDb,
    tempfile::TempDir,
    [TestServer; 2],
    [RaterClient; 2],
) {
    let db = crate::support::TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let models = if slow {
        slow_registry(dir.path(), &slow_upstream().await)
    } else {
        registry(dir.path(), &fake_upstream().await)
    };
    let first = spawn_server_with_models(db.url(), &no_site(), Some(&models)).await;
    let second = spawn_server_with_models(db.url(), &no_site(), Some(&models)).await;
    open_arena(&first, slug, settings).await;
    let on_first = RaterClient::join(&first.base, slug, None).await.unwrap();
    let on_second = on_first.rebased(&second.base).unwrap();
    (db, dir, [first, second], [on_first, on_second])
}

/// Two server processes on one PostgreSQL database behind a load balancer without sticky sessions:
/// the battle runs in the process that took the prompt, and the events stream lands on the other.
/// That stream used to end at once with `void` ("This battle does not count") because the other
/// process found the row still `streaming`; it now waits for the row's end and reports `complete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battle_running_in_another_process_ends_there_not_void() {
    let (db, _dir, _servers, [on_first, on_second]) = two_processes_with_a_rater(
        "shared",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA], "items_per_rater": 2 }),
        false,
    )
    .await;
    let battle = on_first
        .arena_prompt("What is the capital of France?", true)
        .await
        .unwrap();
    let body = on_second.battle_events(&battle).await.unwrap();
    assert_eq!(
        events(&body).last(),
        Some(&("end".to_string(), "complete".to_string())),
        "{body}"
    );
    // The comparison it became is served and voted on by the other process.
    let Some(comparison) = on_second.next_comparison().await.unwrap() else {
        panic!("the finished battle is a comparison on the other process")
    };
    on_second
        .vote(&comparison.assignment, "left")
        .await
        .unwrap();
    db.cleanup().await;
}

/// `battles_per_hour` holds across server processes: a rater whose prompts alternate between two
/// processes (no sticky sessions) gets the study's number of battles in all, not that many per
/// process. Each process counts the rater's starts in memory, read from the database only at the
/// rater's first start there, so the first process still counted one of two when the third battle
/// came; the battle's row, written as it starts, is now refused by a count in the database, the
/// battle ends at once, and the rater's page says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battles_per_hour_holds_across_processes() {
    let (db, _dir, [first, _second], [on_first, on_second]) = two_processes_with_a_rater(
        "hourly",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA],
                            "battles_per_hour": 2, "items_per_rater": 5 }),
        false,
    )
    .await;
    for rater in [&on_first, &on_second] {
        rater
            .arena_prompt("What is the capital of France?", false)
            .await
            .unwrap();
        let comparison = rater.next_comparison().await.unwrap().unwrap();
        rater.vote(&comparison.assignment, "left").await.unwrap();
    }
    on_first
        .arena_prompt("And the capital of Spain?", false)
        .await
        .unwrap();
    let view = on_first.next_raw().await.unwrap();
    assert_blind("the page after a refused battle", &view);
    let RaterView::Arena(turn) = serde_json::from_str(&view).unwrap() else {
        panic!("a refused battle leaves no comparison: {view}")
    };
    assert!(
        turn.notice
            .as_deref()
            .is_some_and(|notice| notice.contains("2 battles in the last hour")),
        "{view}"
    );
    assert_eq!(turn.position, 3, "two votes so far");
    // Nothing of it was written, and both processes now refuse at once.
    for rater in [&on_first, &on_second] {
        let refused = rater
            .arena_prompt("Once more?", true)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("in the last hour"), "{refused}");
    }
    let study = first.backend.store.study("hourly").await.unwrap();
    let summary = first.backend.store.battle_summary(study.id).await.unwrap();
    assert_eq!(
        (summary.complete, summary.void, summary.streaming),
        (2, 0, 0)
    );
    db.cleanup().await;
}

/// One running battle per rater, also across server processes: while the rater's battle is being
/// answered in one process, a prompt sent to another is refused as the battle's row is written (the
/// running one is `streaming` and shown alive), stops at once, and the page says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_running_battle_per_rater_across_processes() {
    let (db, _dir, [first, _second], [on_first, on_second]) = two_processes_with_a_rater(
        "one-at-a-time",
        serde_json::json!({ "kind": "arena", "contestants": [ALPHA, BETA] }),
        true,
    )
    .await;
    let running = on_first.arena_prompt("Count slowly.", true).await.unwrap();
    let mut events = on_first.battle_events_response(&running).await.unwrap();
    let mut seen = String::new();
    while !seen.contains("word1") {
        seen.push_str(std::str::from_utf8(&events.chunk().await.unwrap().unwrap()).unwrap());
    }
    let started = std::time::Instant::now();
    on_second
        .arena_prompt("And another one at once.", false)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the refused battle stopped at once, not after the slow answers"
    );
    let view = on_second.next_raw().await.unwrap();
    assert_blind("the page after a refused battle", &view);
    assert!(view.contains("still being answered"), "{view}");
    let study = first.backend.store.study("one-at-a-time").await.unwrap();
    let summary = first.backend.store.battle_summary(study.id).await.unwrap();
    assert_eq!(
        (summary.complete + summary.void + summary.streaming),
        1,
        "only the running battle has a row"
    );
    drop(events);
    db.cleanup().await;
}

/// A battle's completion goes through the group-commit writer on SQLite (with the votes and battle
/// rows that commit beside it): one voided meanwhile is refused with nothing of it written, and the
/// battle completing with it in the same moment is stored whole.
async fn a_voided_battle_is_refused_and_its_neighbour_stored_whole(url: &str) {
    use moat_app::wire::StudySettings;
    use moat_exports::{Message, Openness};
    use moat_server::store::{ContestantAnswer, JoinLimits, Store, StoreError};

    let store = Store::connect(url).await.unwrap();
    let slug = moat_server::domain::StudySlug::parse("group-arena").unwrap();
    let settings = StudySettings {
        kind: "arena".into(),
        ..Default::default()
    };
    let study = store
        .create_study(&slug, "Arena", "", &settings)
        .await
        .unwrap();
    let mut raters = Vec::new();
    for _ in 0..3 {
        let token = store
            .join_rater(study.id, None, &JoinLimits::default())
            .await
            .unwrap();
        raters.push(
            store
                .rater_by_token(study.id, &token)
                .await
                .unwrap()
                .unwrap()
                .id,
        );
    }
    let conversation = [Message::new("user", "What is the capital of France?")];
    for (battle, rater) in ["b-voided", "b-kept", "b-flagged"].into_iter().zip(&raters) {
        store
            .insert_battle(battle, study.id, *rater, (ALPHA, BETA), &conversation, 60)
            .await
            .unwrap();
    }
    store
        .void_battle("b-voided", "the rater left")
        .await
        .unwrap();
    let answer =
        |model: &'static str, content: &'static str, flag: Option<&str>| ContestantAnswer {
            model_name: model,
            provider: "Lab",
            openness: Openness::Open,
            version: "1",
            content,
            metadata: serde_json::json!({ "latency_ms": 5 }),
            identity_flag: flag.map(str::to_string),
        };
    let (a, b) = (
        answer(ALPHA, "Paris.", None),
        answer(BETA, "It is Paris.", None),
    );
    let flagged = answer(BETA, "I am made by Lab: Paris.", Some("Lab"));
    let (voided, kept, with_flag) = tokio::join!(
        store.complete_battle("b-voided", study.id, raters[0], &conversation, [&a, &b]),
        store.complete_battle("b-kept", study.id, raters[1], &conversation, [&a, &b]),
        store.complete_battle(
            "b-flagged",
            study.id,
            raters[2],
            &conversation,
            [&a, &flagged]
        ),
    );
    assert!(
        matches!(&voided, Err(StoreError::Conflict(message)) if message.contains("no longer running")),
        "{voided:?}"
    );
    let kept = kept.unwrap();
    with_flag.unwrap();
    // Completing it again is refused too, and writes nothing.
    let again = store
        .complete_battle("b-kept", study.id, raters[1], &conversation, [&a, &b])
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    let summary = store.battle_summary(study.id).await.unwrap();
    assert_eq!(
        (summary.complete, summary.void, summary.streaming),
        (2, 1, 0)
    );
    assert_eq!(summary.recent_void[0].error, "the rater left");
    // The models were created once each, on first use; the two stored battles are two prompts.
    let models = store.models(study.id).await.unwrap();
    let mut names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, [BETA, ALPHA]);
    assert_eq!(
        store
            .comparable_prompts(study.id, true, true)
            .await
            .unwrap(),
        2
    );
    // The answer that names its maker flagged its battle's prompt.
    assert_eq!(
        store
            .comparable_prompts(study.id, true, false)
            .await
            .unwrap(),
        1
    );
    // The kept battle's comparison is the rater's issued assignment; the voided one's rater has none.
    let issued = store
        .assignment_in_state(raters[1], "issued")
        .await
        .unwrap()
        .expect("the kept battle's comparison is issued");
    assert_eq!(issued.public_id, kept);
    assert!(store
        .assignment_in_state(raters[0], "issued")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.battle("b-kept").await.unwrap().unwrap().state,
        "complete"
    );
}

on_both_backends!(a_voided_battle_is_refused_and_its_neighbour_stored_whole);
