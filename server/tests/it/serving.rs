//! Moat as a model server: `/v1/models` and `/v1/chat/completions` with the real local model
//! (SmolLM2-135M, `scripts/fetch-smollm2.sh`), streamed and whole, the client against it, the proxy
//! path, API keys, and `moat generate` on both backends.

use std::path::{Path, PathBuf};

use moat_llm::registry::Registry;
use moat_llm::{ChatMessage, Engine, GenerationRequest, Role};
use moat_server::generate::GenerateArgs;

use crate::on_both_backends;
use crate::support::{spawn_server, spawn_server_with_models, TestDb, TestServer};

fn no_site() -> PathBuf {
    PathBuf::from("/nonexistent-site")
}

fn smollm2() -> PathBuf {
    PathBuf::from(std::env::var("MOAT_SMOLLM2_GGUF").expect(
        "MOAT_SMOLLM2_GGUF is not set: run `export MOAT_SMOLLM2_GGUF=\"$(scripts/fetch-smollm2.sh)\"`",
    ))
}

/// A registry with the local model, greedy and short, and any extra entries.
fn write_registry(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[[model]]
name = "smol"
provider = "HuggingFaceTB"
openness = "open"
kind = "local"
path = "{}"
temperature = 0.0
max_tokens = 12
max_context = 512
system_prompt = "You are a helpful assistant."
{extra}"#,
        smollm2().display()
    );
    let path = dir.join("models.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn question() -> serde_json::Value {
    serde_json::json!([{ "role": "user", "content": "What is the capital of France?" }])
}

async fn post_chat(server: &TestServer, key: &str, body: serde_json::Value) -> reqwest::Response {
    server
        .http
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of a server-sent-event body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let lines: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_with_the_local_model_streamed_whole_and_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let registry = write_registry(dir.path(), "");
    let server = spawn_server_with_models(db.url(), &no_site(), Some(&registry)).await;

    // Keys: none, a wrong one, a revoked one are refused in the protocol's error shape.
    let anonymous = server
        .http
        .get(format!("{}/v1/models", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
    let key = server.backend.store.create_api_key("tests").await.unwrap();
    assert!(key.starts_with("moat_sk_"));
    let listed: serde_json::Value = server
        .http
        .get(format!("{}/v1/models", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"][0]["id"], "smol");
    assert_eq!(listed["data"][0]["owned_by"], "HuggingFaceTB");

    // Whole answer.
    let whole = post_chat(
        &server,
        &key,
        serde_json::json!({ "model": "smol", "messages": question() }),
    )
    .await;
    assert_eq!(whole.status(), 200);
    let whole: serde_json::Value = whole.json().await.unwrap();
    assert_eq!(whole["object"], "chat.completion");
    let text = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("Paris"), "{text:?}");
    let usage = &whole["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5, "{usage}");
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion_tokens), "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion_tokens
    );

    // Streamed: role chunk, content chunks, finish chunk, usage chunk, [DONE]; same greedy text.
    let streamed = post_chat(
        &server,
        &key,
        serde_json::json!({ "model": "smol", "messages": question(), "stream": true,
                            "stream_options": { "include_usage": true } }),
    )
    .await;
    assert_eq!(streamed.status(), 200);
    assert!(streamed.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_data(&streamed.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let streamed_text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed_text, text);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"].as_array().unwrap().len(), 0);
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"].as_u64(),
        Some(completion_tokens)
    );

    // Moat's own client against Moat's endpoint: the real protocol, both ways.
    let key_var = "MOAT_TEST_SERVING_KEY_CLIENT";
    std::env::set_var(key_var, &key);
    let client_registry = Registry::parse(
        &format!(
            "[[model]]\nname = \"remote-smol\"\nprovider = \"HuggingFaceTB\"\nopenness = \"open\"\n\
             kind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"smol\"\napi_key_env = \"{key_var}\"\n\
             temperature = 0.0\nmax_tokens = 12\n",
            server.base
        ),
        Path::new("."),
    )
    .unwrap();
    let spec = &client_registry.models[0];
    let moat_llm::registry::Endpoint::Openai(endpoint) = &spec.endpoint else {
        panic!("an openai entry")
    };
    let client = moat_llm::openai::OpenAiClient::new(&spec.name, endpoint, &spec.sampling).unwrap();
    let (sender, mut receiver) = tokio::sync::mpsc::channel(64);
    let completion = client
        .generate(
            GenerationRequest {
                messages: vec![ChatMessage::new(
                    Role::User,
                    "What is the capital of France?",
                )],
                ..Default::default()
            },
            Some(sender),
        )
        .await
        .unwrap();
    let mut deltas = String::new();
    while let Ok(delta) = receiver.try_recv() {
        deltas.push_str(&delta);
    }
    assert_eq!(completion.text, text);
    assert_eq!(deltas, text);
    assert_eq!(
        completion.usage.map(|u| u.completion_tokens as u64),
        Some(completion_tokens)
    );
    assert!(completion.time_to_first_token.unwrap() <= completion.latency);

    // Wrong requests: unknown model, malformed body, revoked key.
    let unknown = post_chat(
        &server,
        &key,
        serde_json::json!({ "model": "nope", "messages": question() }),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    let unknown: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(unknown["error"]["code"], "model_not_found");
    let malformed = post_chat(&server, &key, serde_json::json!({ "model": "smol" })).await;
    assert_eq!(malformed.status(), 400);
    assert!(
        malformed.json::<serde_json::Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages")
    );
    server.backend.store.revoke_api_key("tests").await.unwrap();
    // A checked key is trusted for a few seconds without a database read; then the revocation holds.
    tokio::time::sleep(moat_server::openai_api::KEY_CACHE_FOR).await;
    let revoked = post_chat(
        &server,
        &key,
        serde_json::json!({ "model": "smol", "messages": question() }),
    )
    .await;
    assert_eq!(revoked.status(), 401);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_path_answers_like_the_model_and_never_shows_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_db = TestDb::sqlite();
    let upstream = spawn_server_with_models(
        upstream_db.url(),
        &no_site(),
        Some(&write_registry(dir.path(), "")),
    )
    .await;
    let key = upstream
        .backend
        .store
        .create_api_key("proxy")
        .await
        .unwrap();
    let (good_var, wrong_var) = ("MOAT_TEST_SERVING_KEY_PROXY", "MOAT_TEST_SERVING_KEY_WRONG");
    std::env::set_var(good_var, &key);
    let planted = "moat_sk_PLANTEDPLANTEDPLANTED0123456789";
    std::env::set_var(wrong_var, planted);
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy_registry = proxy_dir.path().join("models.toml");
    std::fs::write(
        &proxy_registry,
        format!(
            "[[model]]\nname = \"smol-proxied\"\nprovider = \"HuggingFaceTB\"\nopenness = \"open\"\n\
             kind = \"openai\"\nbase_url = \"{0}/v1\"\nmodel = \"smol\"\napi_key_env = \"{good_var}\"\n\
             temperature = 0.0\nmax_tokens = 12\nretries = 0\n\n\
             [[model]]\nname = \"smol-wrong-key\"\nprovider = \"HuggingFaceTB\"\nopenness = \"open\"\n\
             kind = \"openai\"\nbase_url = \"{0}/v1\"\nmodel = \"smol\"\napi_key_env = \"{wrong_var}\"\n\
             retries = 0\n",
            upstream.base
        ),
    )
    .unwrap();
    let proxy_db = TestDb::sqlite();
    let proxy = spawn_server_with_models(proxy_db.url(), &no_site(), Some(&proxy_registry)).await;
    let proxy_key = proxy.backend.store.create_api_key("caller").await.unwrap();

    let direct: serde_json::Value = post_chat(
        &upstream,
        &key,
        serde_json::json!({ "model": "smol", "messages": question(), "temperature": 0.0 }),
    )
    .await
    .json()
    .await
    .unwrap();
    let through = post_chat(
        &proxy,
        &proxy_key,
        serde_json::json!({ "model": "smol-proxied", "messages": question(), "stream": true }),
    )
    .await;
    assert_eq!(through.status(), 200);
    let body = through.text().await.unwrap();
    let text: String = sse_data(&body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        text,
        direct["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(!body.contains(&key), "the upstream key reached the caller");

    // The upstream refuses the wrong key: the caller learns that, and never the key.
    for stream in [false, true] {
        let refused = post_chat(
            &proxy,
            &proxy_key,
            serde_json::json!({ "model": "smol-wrong-key", "messages": question(), "stream": stream }),
        )
        .await;
        let status = refused.status();
        let body = refused.text().await.unwrap();
        assert!(body.contains("401"), "{status} {body}");
        assert!(!body.contains("PLANTED"), "the key leaked: {body}");
    }
    upstream_db.cleanup().await;
    proxy_db.cleanup().await;
}

async fn generate_fills_missing_responses(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let registry = write_registry(dir.path(), "");
    let server = spawn_server(url, &no_site()).await;
    server.open_study("gen", 3, serde_json::json!({})).await;
    let store = &server.backend.store;
    let args = |limit: Option<usize>| GenerateArgs {
        models: registry.clone(),
        study: "gen".into(),
        model: "smol".into(),
        concurrency: 2,
        limit,
        quiet: true,
    };
    let first = moat_server::generate::run(store, args(Some(2)))
        .await
        .unwrap();
    assert_eq!(first.written, 2);
    assert!(first.failed.is_empty(), "{first}");
    let second = moat_server::generate::run(store, args(None)).await.unwrap();
    assert_eq!(second.written, 1, "only the prompt still missing is asked");
    let third = moat_server::generate::run(store, args(None)).await.unwrap();
    assert_eq!(third.written, 0);
    let study = store.study("gen").await.unwrap();
    assert!(store
        .prompts_without_response(study.id, "smol")
        .await
        .unwrap()
        .is_empty());
    let models = store.models(study.id).await.unwrap();
    let smol = models.iter().find(|m| m.name == "smol").expect("model row");
    assert_eq!(smol.provider, "HuggingFaceTB");
    assert_eq!(smol.openness, moat_exports::Openness::Open);

    let unknown = moat_server::generate::run(
        store,
        GenerateArgs {
            model: "nope".into(),
            ..args(None)
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        unknown.contains("no model named \"nope\"") && unknown.contains("smol"),
        "{unknown}"
    );
}
on_both_backends!(generate_fills_missing_responses);

/// An OpenAI-compatible upstream that streams one content chunk every 20 ms for 10 s and notes when
/// its response body is dropped (its client, here Moat, closed the connection) and how many chunks
/// it had sent by then.
async fn slow_upstream() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (dropped.clone(), sent.clone());
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let (flag, count) = (flag.clone(), count.clone());
            async move {
                let guard = Dropped(flag);
                let chunks = futures::stream::unfold((0usize, guard), move |(k, guard)| {
                    let count = count.clone();
                    async move {
                        if k == 500 {
                            return None;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        count.fetch_add(1, Ordering::SeqCst);
                        let chunk = serde_json::json!({
                            "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "slow",
                            "choices": [{"index": 0, "delta": {"content": format!("w{k} ")}, "finish_reason": null}]
                        });
                        let event = format!("data: {chunk}\n\n");
                        Some((
                            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(event)),
                            (k + 1, guard),
                        ))
                    }
                });
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from_stream(chunks))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, dropped, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_mid_stream_cancels_the_upstream_request() {
    use std::sync::atomic::Ordering;
    let (upstream, dropped, sent) = slow_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models.toml");
    std::fs::write(
        &registry,
        format!(
            "[[model]]\nname = \"slow\"\nprovider = \"test\"\nopenness = \"open\"\nkind = \"openai\"\n\
             base_url = \"{upstream}/v1\"\nmodel = \"slow\"\nretries = 0\n"
        ),
    )
    .unwrap();
    let db = TestDb::sqlite();
    let server = spawn_server_with_models(db.url(), &no_site(), Some(&registry)).await;
    let key = server.backend.store.create_api_key("caller").await.unwrap();
    let mut response = post_chat(
        &server,
        &key,
        serde_json::json!({ "model": "slow", "messages": question(), "stream": true }),
    )
    .await;
    assert_eq!(response.status(), 200);
    // Read until the first words arrive, then hang up.
    let mut seen = String::new();
    while !seen.contains("w0 ") {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!dropped.load(Ordering::SeqCst));
    drop(response);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the upstream request was still open 5 s after the caller left"
    );
    let at_cancel = sent.load(Ordering::SeqCst);
    assert!(at_cancel < 500, "the upstream sent its whole answer");
    db.cleanup().await;
}
