//! `moat judge-prompts`: an LLM judge (here a local server speaking the OpenAI streaming protocol,
//! standing in for the paid model LMArena used) marks prompts against the hard-prompt criteria, and
//! the leaderboard gets a `hard-prompt` category from its judgements, on both backends.

use std::sync::{Arc, Mutex};

use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use moat_app::backend::Backend;
use moat_app::wire::{RaterView, StudySettings};
use moat_server::analysis::StudyQuery;
use moat_server::judge::JudgeArgs;

use crate::on_both_backends;
use crate::support::{backend_with_open_study, vote};

/// A judge that reads the question's number ("Question number N?"): even numbers meet six criteria
/// (hard), odd ones two, and number 5 gets a hedging answer with two lists. Every request body is
/// kept for the test to inspect.
async fn fake_judge(requests: Arc<Mutex<Vec<serde_json::Value>>>) -> String {
    let chat = move |Json(body): Json<serde_json::Value>| {
        let requests = requests.clone();
        async move {
            requests.lock().unwrap().push(body.clone());
            let question = body["messages"][1]["content"].as_str().unwrap_or_default();
            let number: usize = question
                .trim_start_matches("Question number ")
                .trim_end_matches('?')
                .parse()
                .unwrap_or(1);
            let answer = match number {
                5 => "[1, 2] or perhaps [1, 2, 3]",
                n if n % 2 == 0 => "[1, 2, 3, 4, 6, 7]",
                _ => "Criteria met: [1,7]",
            };
            let chunk = |delta: serde_json::Value, finish: Option<&str>| {
                serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                    "model": "judge", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                .to_string()
            };
            let events = vec![
                chunk(
                    serde_json::json!({"role": "assistant", "content": ""}),
                    None,
                ),
                chunk(serde_json::json!({"content": answer}), None),
                chunk(serde_json::json!({}), Some("stop")),
                "[DONE]".to_string(),
            ];
            Sse::new(futures::stream::iter(events.into_iter().map(|data| {
                Ok::<_, std::convert::Infallible>(Event::default().data(data))
            })))
            .into_response()
        }
    };
    let app = Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn the_judge_makes_a_hard_prompt_category(url: &str) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let upstream = fake_judge(requests.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models.toml");
    std::fs::write(
        &registry,
        format!(
            "[[model]]\nname = \"judge\"\nprovider = \"Test\"\nopenness = \"open\"\nkind = \"openai\"\n\
             base_url = \"{upstream}\"\nmodel = \"judge-model\"\nretries = 0\ntemperature = 0.7\n"
        ),
    )
    .unwrap();
    let backend = backend_with_open_study(
        url,
        "judged",
        6,
        StudySettings {
            items_per_rater: 6,
            ..Default::default()
        },
    )
    .await;
    // Three raters vote on every prompt they are shown.
    for _ in 0..3 {
        let token = backend.consent("judged", None, None).await.unwrap();
        while let RaterView::Compare(shown) = backend.rater_view("judged", &token).await.unwrap() {
            backend
                .vote("judged", &token, vote(&shown.assignment, "left"))
                .await
                .unwrap();
        }
    }
    let args = |again: bool| JudgeArgs {
        models: registry.clone(),
        study: "judged".into(),
        judge: "judge".into(),
        concurrency: 3,
        limit: None,
        again,
        quiet: true,
    };
    let first = moat_server::judge::run(&backend.store, args(false))
        .await
        .unwrap();
    assert_eq!((first.judged, first.hard), (5, 3), "{first}");
    assert_eq!(first.failed.len(), 1, "{first}");
    assert_eq!(first.failed[0].0, "q5");
    assert!(
        first.failed[0].1.contains("2 different lists"),
        "{}",
        first.failed[0].1
    );
    // The judge got the criteria as its instructions, only the question, and temperature 0
    // whatever the registry says.
    {
        let requests = requests.lock().unwrap();
        assert_eq!(requests.len(), 6);
        let request = &requests[0];
        assert_eq!(request["messages"][0]["role"], "system");
        assert!(request["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("7 criteria"));
        assert_eq!(request["messages"].as_array().unwrap().len(), 2);
        assert_eq!(request["temperature"], 0.0);
    }

    // The leaderboard's categories now include hard-prompt: the votes on q0, q2 and q4.
    let study = backend.store.study("judged").await.unwrap();
    let judgements = backend.store.prompt_judgements(study.id).await.unwrap();
    assert_eq!(judgements.judged, 5);
    let mut hard_ids: Vec<&String> = judgements.tags.keys().collect();
    hard_ids.sort();
    assert_eq!(hard_ids, ["q0", "q2", "q4"]);
    let options = moat_stats::LeaderboardOptions {
        bootstrap_rounds: 10,
        ..Default::default()
    };
    let records = {
        use futures::TryStreamExt;
        backend
            .store
            .vote_records(&study)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    };
    let hard_votes = records
        .iter()
        .filter(|r| ["q0", "q2", "q4"].contains(&r.prompt_id.as_str()))
        .count() as u64;
    assert!(hard_votes > 0 && hard_votes < records.len() as u64);
    let (_, all) = backend
        .analysis_with(
            "judged",
            options.clone(),
            false,
            false,
            StudyQuery::default(),
        )
        .await
        .unwrap();
    let hard = all
        .categories
        .iter()
        .find(|c| c.category == "hard-prompt")
        .expect("a hard-prompt category");
    assert_eq!(hard.battles, hard_votes);
    let (_, only_hard) = backend
        .analysis_with(
            "judged",
            options,
            false,
            false,
            StudyQuery {
                category: Some("hard-prompt".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(only_hard.leaderboard.n_battles, hard_votes);

    // A second run asks only about the prompt that failed; --again asks about all of them.
    let second = moat_server::judge::run(&backend.store, args(false))
        .await
        .unwrap();
    assert_eq!((second.judged, second.failed.len()), (0, 1));
    assert_eq!(requests.lock().unwrap().len(), 7);
    let again = moat_server::judge::run(&backend.store, args(true))
        .await
        .unwrap();
    assert_eq!((again.judged, again.hard), (5, 3));
    assert_eq!(requests.lock().unwrap().len(), 13);

    // An unknown judge names the registry's models.
    let unknown = moat_server::judge::run(
        &backend.store,
        JudgeArgs {
            judge: "nope".into(),
            ..args(false)
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        unknown.contains("\"nope\"") && unknown.contains("judge"),
        "{unknown}"
    );
}

on_both_backends!(the_judge_makes_a_hard_prompt_category);
