//! The OpenAI-compatible client against a local axum server that replays recorded answers
//! (`tests/transcripts/`) and misbehaves on purpose: rate limits, overload, errors mid-stream, stalls,
//! cut connections, malformed JSON. The server checks the planted API key on every request, and every
//! failing case checks that the key shows up in no error.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::stream::{self, BoxStream, StreamExt};
use moat_llm::openai::OpenAiClient;
use moat_llm::registry::{RemoteEndpoint, Sampling};
use moat_llm::{
    ChatMessage, Completion, Engine, FinishReason, GenerationRequest, LlmError, Role, Usage,
};
use serde_json::{json, Value};

/// The variable that holds the planted key, set once for the whole file (tests run on parallel
/// threads, so they all see the same value and nothing unsets it).
const KEY_ENV: &str = "MOAT_TEST_OPENAI_CLIENT_PLANTED_KEY";
const KEY: &str = "sk-moat-planted-0f9e8d7c6b5a4938";

fn plant_key() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(KEY_ENV, KEY));
}

// ----------------------------------------------------------------------------------------------
// The fake server
// ----------------------------------------------------------------------------------------------

/// What the server saw.
#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
    times: Mutex<Vec<Instant>>,
    dropped: AtomicBool,
}

type Handler = Arc<dyn Fn(usize, &Arc<Seen>) -> Response + Send + Sync>;

#[derive(Clone)]
struct Ctx {
    seen: Arc<Seen>,
    handler: Handler,
}

struct Server {
    base_url: String,
    seen: Arc<Seen>,
}

impl Server {
    fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }
}

/// Serves `/v1/chat/completions` with `handler` (given the request's number, from 0) and
/// `/v1/models` with a fixed list, both behind the planted key.
async fn serve(handler: impl Fn(usize, &Arc<Seen>) -> Response + Send + Sync + 'static) -> Server {
    plant_key();
    let seen = Arc::new(Seen::default());
    let ctx = Ctx {
        seen: seen.clone(),
        handler: Arc::new(handler),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .with_state(ctx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base_url: format!("http://{addr}/v1"),
        seen,
    }
}

/// A 401 like OpenAI's, except that it echoes whatever credential came, so that the client's
/// scrubbing is tested too.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if got == format!("Bearer {KEY}") {
        return None;
    }
    let body = json!({"error": {"message": format!("Incorrect API key provided: {got}"),
        "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
    Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response())
}

async fn chat(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthorized(&headers) {
        return refusal;
    }
    let n = ctx.seen.hits.fetch_add(1, Ordering::SeqCst);
    ctx.seen.times.lock().unwrap().push(Instant::now());
    ctx.seen
        .bodies
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).expect("the client sends JSON"));
    (ctx.handler)(n, &ctx.seen)
}

async fn models(State(_): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(refusal) = unauthorized(&headers) {
        return refusal;
    }
    // Ollama's shape.
    axum::Json(json!({"object": "list", "data": [
        {"id": "llama3.2:3b", "object": "model", "created": 1743277352, "owned_by": "library"},
        {"id": "qwen2.5:7b", "object": "model", "created": 1743277000, "owned_by": "library"}
    ]}))
    .into_response()
}

fn transcript(name: &str) -> String {
    let path = format!("{}/tests/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The transcript's events as the pieces the server writes: each event cut in two in the middle
/// (on a character boundary), so that the client has to join lines across reads.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for event in text.split_inclusive("\n\n") {
        let mut cut = event.len() / 2;
        while !event.is_char_boundary(cut) {
            cut += 1;
        }
        out.push(event[..cut].to_string());
        out.push(event[cut..].to_string());
    }
    out
}

/// How a streamed body ends after its pieces.
enum Tail {
    /// The body ends normally.
    End,
    /// The server goes silent without closing.
    Stall,
    /// The connection is dropped (no terminating chunk).
    Cut,
}

fn sse(pieces: Vec<String>, delay: Duration, tail: Tail) -> Response {
    let body: BoxStream<'static, Result<Bytes, io::Error>> = stream::iter(pieces)
        .then(move |piece| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(Bytes::from(piece))
        })
        .boxed();
    let body = match tail {
        Tail::End => body,
        Tail::Stall => body.chain(stream::pending()).boxed(),
        Tail::Cut => body
            .chain(stream::once(async {
                // hyper drops what it has not written yet when a body fails, so let the pieces go
                // out first, as they would have on a real connection that broke later.
                tokio::time::sleep(Duration::from_millis(30)).await;
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut"))
            }))
            .boxed(),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

fn replay(name: &str) -> Response {
    sse(pieces(&transcript(name)), Duration::ZERO, Tail::End)
}

fn error_response(
    status: StatusCode,
    message: &str,
    extra: &[(&'static str, &'static str)],
) -> Response {
    let mut response = (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": "requests", "param": null, "code": null}}),
        ),
    )
        .into_response();
    for (name, value) in extra {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

// ----------------------------------------------------------------------------------------------
// The client side
// ----------------------------------------------------------------------------------------------

fn endpoint(server: &Server) -> RemoteEndpoint {
    RemoteEndpoint {
        base_url: server.base_url.clone(),
        model: "served-model".into(),
        api_key_env: Some(KEY_ENV.into()),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_millis(300),
        max_concurrency: 4,
        retries: 2,
    }
}

fn sampling() -> Sampling {
    Sampling {
        max_tokens: 64,
        temperature: Some(0.0),
        top_p: None,
        seed: Some(7),
        system_prompt: Some("Answer briefly.".into()),
    }
}

fn client(endpoint: &RemoteEndpoint) -> OpenAiClient {
    OpenAiClient::new("test-model", endpoint, &sampling()).unwrap()
}

fn question(text: &str) -> GenerationRequest {
    GenerationRequest {
        messages: vec![ChatMessage::new(Role::User, text)],
        ..GenerationRequest::default()
    }
}

/// Runs a streamed generation and collects its deltas.
async fn generate(client: &OpenAiClient) -> (Result<Completion, LlmError>, Vec<String>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut deltas = Vec::new();
        while let Some(delta) = rx.recv().await {
            deltas.push(delta);
        }
        deltas
    });
    let result = client
        .generate(question("What is the capital of France?"), Some(tx))
        .await;
    (result, collect.await.unwrap())
}

/// Fails if the planted key is anywhere in the error, and checks that the error names the endpoint.
fn check_error(error: &LlmError, server: &Server) {
    let shown = format!("{error} / {error:?}");
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
    assert!(
        !shown.contains("planted-0f9e"),
        "part of the key leaked: {shown}"
    );
    if !matches!(error, LlmError::Cancelled | LlmError::MissingKey(_)) {
        assert!(shown.contains("test-model"), "no model name: {shown}");
        assert!(shown.contains(&server.base_url), "no base_url: {shown}");
    }
}

// ----------------------------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_transcript_gives_its_text_finish_reason_and_usage() {
    let cases = [
        (
            "openai.sse",
            "The capital of France is Paris.",
            FinishReason::Stop,
            (14, 7, 21),
        ),
        (
            "vllm.sse",
            "Voilà une réponse qui",
            FinishReason::Length,
            (23, 6, 29),
        ),
        (
            "ollama.sse",
            "Hello! How can I help you today? 😊",
            FinishReason::Stop,
            (31, 11, 42),
        ),
        (
            "llamacpp.sse",
            "Sure! Here are two:\n1. Red\n2. Blue",
            FinishReason::Stop,
            (25, 13, 38),
        ),
    ];
    for (name, text, finish, (prompt, completion, total)) in cases {
        let server = serve(move |_, _| replay(name)).await;
        let (result, deltas) = generate(&client(&endpoint(&server))).await;
        let answer = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(answer.text, text, "{name}");
        assert_eq!(answer.finish_reason, finish, "{name}");
        assert_eq!(
            answer.usage,
            Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total
            }),
            "{name}"
        );
        assert_eq!(deltas.concat(), text, "{name}");
        let first = answer.time_to_first_token.expect("text came");
        assert!(first <= answer.latency, "{name}");
        assert_eq!(server.hits(), 1, "{name}");
    }
}

#[tokio::test]
async fn deltas_arrive_in_order_and_make_up_the_text() {
    let server = serve(|_, _| {
        sse(
            pieces(&transcript("llamacpp.sse")),
            Duration::from_millis(2),
            Tail::End,
        )
    })
    .await;
    let (result, deltas) = generate(&client(&endpoint(&server))).await;
    let answer = result.unwrap();
    let expected = [
        "Sure", "!", " Here", " are", " two", ":\n", "1", ".", " Red", "\n", "2", ".", " Blue",
    ];
    assert_eq!(deltas, expected);
    assert_eq!(deltas.concat(), answer.text);
}

/// With `read_every`, a stream of many small chunks is read in a few reads: its deltas reach the
/// caller in at most one burst per period, every one of them, in order.
#[tokio::test]
async fn read_every_takes_a_fast_stream_in_few_reads_and_loses_nothing() {
    let words: Vec<String> = (0..100).map(|i| format!(" w{i}")).collect();
    let mut events: Vec<String> = words
        .iter()
        .map(|word| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]})
            )
        })
        .collect();
    events.push(format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    let server = serve(move |_, _| sse(events.clone(), Duration::from_millis(3), Tail::End)).await;
    let every = Duration::from_millis(50);
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    // A burst: deltas with less than half a period between them.
    let collect = tokio::spawn(async move {
        let (mut deltas, mut bursts, mut last) = (Vec::new(), 0usize, None::<Instant>);
        while let Some(delta) = rx.recv().await {
            let now = Instant::now();
            if last.is_none_or(|at| now - at > every / 2) {
                bursts += 1;
            }
            last = Some(now);
            deltas.push(delta);
        }
        (deltas, bursts)
    });
    let started = Instant::now();
    let request = GenerationRequest {
        read_every: Some(every),
        ..question("Count.")
    };
    let answer = client(&endpoint(&server))
        .generate(request, Some(tx))
        .await
        .unwrap();
    let (deltas, bursts) = collect.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(deltas, words, "every chunk's text, in order");
    assert_eq!(answer.text, words.concat());
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let most = (elapsed.as_millis() / every.as_millis()) as usize + 2;
    // Unpaced, chunks 3 ms apart make one long burst; paced, the stream's ~0.4 s come in several,
    // at most one per period.
    assert!(
        (3..=most).contains(&bursts),
        "{bursts} bursts of deltas in {elapsed:?}: at most one read per {every:?} after the first text"
    );
    // Each read takes all that has come, not one chunk per period (which would take 5 s here).
    assert!(
        elapsed < Duration::from_millis(2_500),
        "the stream took {elapsed:?}: reads fell behind the server"
    );
}

#[tokio::test]
async fn the_request_carries_the_model_sampling_settings_and_system_prompt() {
    let server = serve(|_, _| replay("openai.sse")).await;
    let client = client(&endpoint(&server));
    client.generate(question("Hi"), None).await.unwrap();
    let own_system = GenerationRequest {
        messages: vec![
            ChatMessage::new(Role::System, "Talk like a pirate."),
            ChatMessage::new(Role::User, "Hi"),
        ],
        max_tokens: Some(5),
        temperature: Some(0.9),
        top_p: Some(0.5),
        seed: Some(99),
        read_every: None,
    };
    client.generate(own_system, None).await.unwrap();
    let bodies = server.seen.bodies.lock().unwrap().clone();

    let first = &bodies[0];
    assert_eq!(first["model"], "served-model");
    assert_eq!(first["stream"], true);
    assert_eq!(first["stream_options"], json!({"include_usage": true}));
    assert_eq!(first["max_tokens"], 64);
    assert_eq!(first["temperature"], 0.0);
    assert_eq!(first["seed"], 7);
    assert!(first.get("top_p").is_none());
    assert_eq!(
        first["messages"],
        json!([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}])
    );

    let second = &bodies[1];
    assert_eq!(second["max_tokens"], 5);
    assert_eq!(second["temperature"].as_f64().unwrap() as f32, 0.9);
    assert_eq!(second["top_p"], 0.5);
    assert_eq!(second["seed"], 99);
    assert_eq!(second["messages"][0]["content"], "Talk like a pirate.");
    assert_eq!(second["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_whole_answer_is_read_without_streaming() {
    let server = serve(|_, _| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            transcript("openai_whole.json"),
        )
            .into_response()
    })
    .await;
    let answer = client(&endpoint(&server))
        .complete(question("What is the capital of France?"))
        .await
        .unwrap();
    assert_eq!(answer.text, "Paris is the capital of France.");
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert_eq!(
        answer.usage,
        Some(Usage {
            prompt_tokens: 14,
            completion_tokens: 7,
            total_tokens: 21
        })
    );
    let body = server.seen.bodies.lock().unwrap()[0].clone();
    assert!(body.get("stream").is_none_or(|s| s == false), "{body}");
    assert!(body.get("stream_options").is_none(), "{body}");
}

#[tokio::test]
async fn models_lists_what_the_server_serves() {
    let server = serve(|_, _| StatusCode::NOT_FOUND.into_response()).await;
    let models = client(&endpoint(&server)).models().await.unwrap();
    assert_eq!(models, ["llama3.2:3b", "qwen2.5:7b"]);
}

#[tokio::test]
async fn an_error_object_mid_stream_is_a_stream_error() {
    let server = serve(|_, _| replay("vllm_error_midstream.sse")).await;
    let (result, deltas) = generate(&client(&endpoint(&server))).await;
    let error = result.unwrap_err();
    check_error(&error, &server);
    let LlmError::Stream { message, .. } = &error else {
        panic!("expected a stream error, got {error:?}")
    };
    assert!(
        message.contains("EngineCore encountered an issue"),
        "{message}"
    );
    // The text before the error was passed on; nothing was retried.
    assert_eq!(deltas.concat(), "Once upon");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_the_wait() {
    let server = serve(|n, _| match n {
        0 => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests",
            &[("retry-after", "1")],
        ),
        _ => replay("openai.sse"),
    })
    .await;
    let answer = client(&endpoint(&server))
        .generate(question("Hi"), None)
        .await
        .unwrap();
    assert_eq!(answer.text, "The capital of France is Paris.");
    assert_eq!(server.hits(), 2);
    let times = server.seen.times.lock().unwrap().clone();
    let waited = times[1] - times[0];
    // The back-off alone would be about 0.5 s; the header asked for 1 s.
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    assert!(waited < Duration::from_millis(2000), "waited {waited:?}");
}

#[tokio::test]
async fn a_429_beyond_the_retry_limit_is_an_http_error() {
    let server = serve(|_, _| {
        error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests",
            &[("retry-after", "0")],
        )
    })
    .await;
    let (result, deltas) = generate(&client(&endpoint(&server))).await;
    let error = result.unwrap_err();
    check_error(&error, &server);
    let LlmError::Http {
        status, message, ..
    } = &error
    else {
        panic!("expected an HTTP error, got {error:?}")
    };
    assert_eq!(*status, 429);
    assert_eq!(message, "Rate limit reached for requests");
    // One try and the two retries of the endpoint's settings.
    assert_eq!(server.hits(), 3);
    assert!(deltas.is_empty());
}

#[tokio::test]
async fn a_503_is_retried_with_back_off() {
    let server = serve(|n, _| match n {
        0 => error_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded", &[]),
        _ => replay("vllm.sse"),
    })
    .await;
    let answer = client(&endpoint(&server))
        .generate(question("Hi"), None)
        .await
        .unwrap();
    assert_eq!(answer.text, "Voilà une réponse qui");
    assert_eq!(server.hits(), 2);
    let times = server.seen.times.lock().unwrap().clone();
    assert!(times[1] - times[0] >= Duration::from_millis(450));
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let server =
        serve(|_, _| error_response(StatusCode::BAD_REQUEST, "max_tokens is too large", &[])).await;
    let error = client(&endpoint(&server))
        .generate(question("Hi"), None)
        .await
        .unwrap_err();
    check_error(&error, &server);
    assert!(
        matches!(error, LlmError::Http { status: 400, .. }),
        "{error:?}"
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_stalled_stream_times_out_within_the_idle_timeout() {
    let server = serve(|_, _| {
        let events = pieces(&transcript("openai.sse"));
        sse(events[..4].to_vec(), Duration::ZERO, Tail::Stall)
    })
    .await;
    let endpoint = endpoint(&server);
    let start = Instant::now();
    let (result, deltas) = generate(&client(&endpoint)).await;
    let elapsed = start.elapsed();
    let error = result.unwrap_err();
    check_error(&error, &server);
    assert!(matches!(error, LlmError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains("idle_timeout"), "{error}");
    assert!(elapsed >= endpoint.idle_timeout, "{elapsed:?}");
    assert!(
        elapsed < endpoint.idle_timeout + Duration::from_millis(1000),
        "{elapsed:?}"
    );
    assert_eq!(deltas, ["The"]);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_a_connection_error() {
    let server = serve(|_, _| {
        let events = pieces(&transcript("ollama.sse"));
        sse(events[..6].to_vec(), Duration::ZERO, Tail::Cut)
    })
    .await;
    let (result, deltas) = generate(&client(&endpoint(&server))).await;
    let error = result.unwrap_err();
    check_error(&error, &server);
    assert!(matches!(error, LlmError::Connection { .. }), "{error:?}");
    assert_eq!(deltas.concat(), "Hello! How");
    // Text had reached the caller, so there was no retry.
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_stream_that_ends_before_done_is_a_connection_error() {
    let server = serve(|_, _| {
        let events = pieces(&transcript("vllm.sse"));
        sse(events[..6].to_vec(), Duration::ZERO, Tail::End)
    })
    .await;
    let (result, _) = generate(&client(&endpoint(&server))).await;
    let error = result.unwrap_err();
    check_error(&error, &server);
    let LlmError::Connection { message, .. } = &error else {
        panic!("expected a connection error, got {error:?}")
    };
    assert!(message.contains("ended early"), "{message}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_stream_cut_before_any_text_is_retried() {
    let server = serve(|n, _| match n {
        0 => {
            let events = pieces(&transcript("openai.sse"));
            sse(events[..2].to_vec(), Duration::ZERO, Tail::Cut)
        }
        _ => replay("openai.sse"),
    })
    .await;
    let (result, deltas) = generate(&client(&endpoint(&server))).await;
    assert_eq!(result.unwrap().text, "The capital of France is Paris.");
    assert_eq!(deltas.concat(), "The capital of France is Paris.");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let server = serve(|_, _| {
        let mut events = pieces(&transcript("openai.sse"))[..4].to_vec();
        events.push("data: {\"id\":\"chatcmpl-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\n\n".into());
        events.push("data: [DONE]\n\n".into());
        sse(events, Duration::ZERO, Tail::End)
    })
    .await;
    let (result, _) = generate(&client(&endpoint(&server))).await;
    let error = result.unwrap_err();
    check_error(&error, &server);
    assert!(matches!(error, LlmError::Protocol { .. }), "{error:?}");
    assert!(error.to_string().contains("malformed JSON"), "{error}");
}

#[tokio::test]
async fn the_planted_key_is_in_no_error_of_any_failing_case() {
    type Case = (&'static str, fn(usize, &Arc<Seen>) -> Response);
    let cases: [Case; 7] = [
        ("429", |_, _| {
            error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "slow down",
                &[("retry-after", "0")],
            )
        }),
        ("500 echoing the key", |_, _| {
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("bad key {KEY}"),
                &[],
            )
        }),
        ("error mid-stream", |_, _| {
            replay("vllm_error_midstream.sse")
        }),
        ("stall", |_, _| {
            sse(
                pieces(&transcript("openai.sse"))[..4].to_vec(),
                Duration::ZERO,
                Tail::Stall,
            )
        }),
        ("cut", |_, _| {
            sse(
                pieces(&transcript("ollama.sse"))[..4].to_vec(),
                Duration::ZERO,
                Tail::Cut,
            )
        }),
        ("malformed", |_, _| {
            sse(
                vec![format!("data: {{\"echo\": \"{KEY}\"\n\n")],
                Duration::ZERO,
                Tail::End,
            )
        }),
        ("no [DONE]", |_, _| {
            sse(
                pieces(&transcript("llamacpp.sse"))[..6].to_vec(),
                Duration::ZERO,
                Tail::End,
            )
        }),
    ];
    let mut errors = Vec::new();
    for (name, handler) in cases {
        let server = serve(handler).await;
        let mut settings = endpoint(&server);
        settings.retries = 0;
        let client = client(&settings);
        assert!(!format!("{client:?}").contains(KEY));
        let streamed = generate(&client).await.0.expect_err(name);
        check_error(&streamed, &server);
        errors.push(streamed);
        if name.starts_with('4') || name.starts_with('5') {
            let whole = client.complete(question("Hi")).await.expect_err(name);
            check_error(&whole, &server);
            errors.push(whole);
        }
    }
    // The server's echo of the key was scrubbed, not dropped with the rest of the message.
    assert!(errors
        .iter()
        .any(|e| e.to_string().contains("bad key <redacted>")));

    // A wrong key: the server's 401 echoes what it got, which is the planted key's prefix only.
    let server = serve(|_, _| replay("openai.sse")).await;
    let refused = {
        let var = "MOAT_TEST_OPENAI_CLIENT_WRONG_KEY_1";
        std::env::set_var(var, format!("{KEY}-but-wrong"));
        let mut settings = endpoint(&server);
        settings.api_key_env = Some(var.into());
        client(&settings)
            .generate(question("Hi"), None)
            .await
            .unwrap_err()
    };
    check_error(&refused, &server);
    assert!(
        matches!(refused, LlmError::Http { status: 401, .. }),
        "{refused:?}"
    );
    assert!(!refused.to_string().contains("but-wrong"), "{refused}");

    // Nothing to connect to.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut settings = endpoint(&server);
    settings.base_url = format!("http://127.0.0.1:{port}/v1");
    settings.retries = 0;
    let refused = client(&settings)
        .generate(question("Hi"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, LlmError::Connection { .. }),
        "{refused:?}"
    );
    let shown = format!("{refused} / {refused:?}");
    assert!(
        !shown.contains(KEY) && shown.contains(&settings.base_url),
        "{shown}"
    );
}

#[tokio::test]
async fn at_most_max_concurrency_requests_are_in_flight() {
    struct InFlight(Arc<Seen>);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let server = serve(|_, seen| {
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(seen.clone());
        let mut response = sse(
            pieces(&transcript("ollama.sse")),
            Duration::from_millis(4),
            Tail::End,
        );
        // The request counts as in flight until its body has been sent and dropped.
        let body = std::mem::replace(response.body_mut(), Body::empty());
        let body = body.into_data_stream().map(move |piece| {
            let _keep = &guard;
            piece
        });
        *response.body_mut() = Body::from_stream(body);
        response
    })
    .await;
    let mut settings = endpoint(&server);
    settings.max_concurrency = 2;
    let client = client(&settings);
    let answers =
        futures::future::join_all((0..6).map(|_| client.generate(question("Hi"), None))).await;
    for answer in answers {
        assert_eq!(answer.unwrap().text, "Hello! How can I help you today? 😊");
    }
    assert_eq!(server.hits(), 6);
    assert_eq!(server.seen.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_missing_key_variable_is_reported_before_anything_is_sent() {
    let server = serve(|_, _| replay("openai.sse")).await;
    let var = "MOAT_TEST_OPENAI_CLIENT_UNSET_KEY_7c1d";
    let mut settings = endpoint(&server);
    settings.api_key_env = Some(var.into());
    let client = client(&settings);
    for error in [
        client.generate(question("Hi"), None).await.unwrap_err(),
        client.complete(question("Hi")).await.unwrap_err(),
        client.models().await.unwrap_err(),
    ] {
        assert!(
            matches!(&error, LlmError::MissingKey(name) if name == var),
            "{error:?}"
        );
        assert!(error.to_string().contains(var));
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_closed_delta_receiver_cancels_the_request() {
    let server = serve(|_, _| {
        // Text keeps coming slowly; the caller stops listening after the first piece.
        let events: Vec<String> = (0..200)
            .map(|i| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n"))
            .collect();
        sse(events, Duration::from_millis(20), Tail::End)
    })
    .await;
    let client = client(&endpoint(&server));
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let start = Instant::now();
    let generation = client.generate(question("Hi"), Some(tx));
    let listener = async move {
        let first = rx.recv().await;
        drop(rx);
        first
    };
    let (result, first) = tokio::join!(generation, listener);
    assert_eq!(first.as_deref(), Some("w0 "));
    assert!(matches!(result, Err(LlmError::Cancelled)), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn dropping_the_generation_closes_the_upstream_request() {
    struct Dropped(Arc<Seen>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.dropped.store(true, Ordering::SeqCst);
        }
    }
    let server = serve(|_, seen| {
        let guard = Dropped(seen.clone());
        // Keep-alive comments forever: the stream never idles out and never ends.
        let body = stream::repeat(())
            .then(|_| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, io::Error>(Bytes::from_static(b": keep-alive\n\n"))
            })
            .map(move |piece| {
                let _keep = &guard;
                piece
            });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap()
    })
    .await;
    let client = client(&endpoint(&server));
    let outcome = tokio::time::timeout(
        Duration::from_millis(300),
        client.generate(question("Hi"), None),
    )
    .await;
    assert!(
        outcome.is_err(),
        "the generation should still have been running"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.seen.dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the server kept streaming to a dropped request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_overall_timeout_bounds_a_slow_but_steady_stream() {
    let server = serve(|_, _| {
        // Never silent for long, never done.
        let body = stream::repeat(()).then(|_| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, io::Error>(Bytes::from_static(b": still thinking\n\n"))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap()
    })
    .await;
    let mut settings = endpoint(&server);
    settings.timeout = Duration::from_millis(600);
    let start = Instant::now();
    let (result, _) = generate(&client(&settings)).await;
    let elapsed = start.elapsed();
    let error = result.unwrap_err();
    check_error(&error, &server);
    assert!(matches!(error, LlmError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains("(timeout)"), "{error}");
    assert!(elapsed >= settings.timeout, "{elapsed:?}");
    assert!(
        elapsed < settings.timeout + Duration::from_millis(700),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_overall_timeout_is_not_waited_for() {
    let server = serve(|_, _| {
        error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests",
            &[("retry-after", "20")],
        )
    })
    .await;
    let mut settings = endpoint(&server);
    settings.timeout = Duration::from_secs(2);
    let start = Instant::now();
    let error = client(&settings)
        .generate(question("Hi"), None)
        .await
        .unwrap_err();
    check_error(&error, &server);
    assert!(
        matches!(error, LlmError::Http { status: 429, .. }),
        "{error:?}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_server_that_ignores_stream_true_still_gives_the_answer() {
    let server = serve(|_, _| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            transcript("openai_whole.json"),
        )
            .into_response()
    })
    .await;
    let (result, deltas) = generate(&client(&endpoint(&server))).await;
    let answer = result.unwrap();
    assert_eq!(answer.text, "Paris is the capital of France.");
    assert_eq!(deltas, ["Paris is the capital of France."]);
    assert_eq!(answer.usage.map(|u| u.total_tokens), Some(21));
}
