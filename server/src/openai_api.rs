//! Moat as a model server: the hub's models served under the OpenAI chat-completions protocol
//! (`GET /v1/models`, `POST /v1/chat/completions`, streamed as server-sent events or whole), behind
//! the admin token or a per-client API key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use moat_llm::protocol::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Delta, ErrorBody, ErrorObject, ModelList, ModelObject,
};
use moat_llm::{Completion, Engine, GenerationRequest, LlmError, Role};

use crate::domain::{random_hex, sha256_hex};
use crate::service::AppService;
use crate::serving::Models;
use crate::store::API_KEY_PREFIX;

/// What the `/v1` handlers need.
#[derive(Clone)]
pub struct ServingState {
    pub backend: Arc<AppService>,
    pub models: Arc<Models>,
    /// API keys (their digests) found live in the database, and when: each is trusted for
    /// [`KEY_CACHE_FOR`] without asking the database again, so a busy client costs no read per request.
    /// A revoked key therefore stops working within that time.
    pub key_cache: Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
}

/// How long a checked API key is trusted before the database is asked again.
pub const KEY_CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(5);

impl ServingState {
    pub fn new(backend: Arc<AppService>, models: Arc<Models>) -> ServingState {
        ServingState {
            backend,
            models,
            key_cache: Default::default(),
        }
    }
}

/// The `/v1` operations in the OpenAPI document (`/api/v1/openapi.json`, merged there by
/// `http::openapi`): the paths, their statuses and the key scheme. The bodies are the OpenAI
/// chat-completions protocol's, which its own reference describes; they are given here as JSON.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_models, chat_completions), modifiers(&ApiKeyScheme))]
pub struct OpenAiDoc;

struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "an API key (`moat key create NAME`) or the admin token",
                        ))
                        .build(),
                ),
            );
    }
}

pub fn router(state: ServingState) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(state)
}

/// An error in the protocol's own shape: `{"error": {"message", "type", "code"}}`.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status,
            kind,
            code: None,
            message: message.into(),
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.message.clone(),
                kind: Some(self.kind.to_string()),
                code: self.code.map(|c| serde_json::Value::String(c.into())),
            },
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<LlmError> for OpenAiError {
    fn from(error: LlmError) -> OpenAiError {
        let (status, kind) = match &error {
            LlmError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            LlmError::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            LlmError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            LlmError::MissingKey(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
            LlmError::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
            LlmError::Engine { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            LlmError::Http { .. }
            | LlmError::Stream { .. }
            | LlmError::Connection { .. }
            | LlmError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
        };
        if !status.is_server_error() {
            return OpenAiError::new(status, kind, error.to_string());
        }
        // The cause names upstream addresses, local file paths and the engine's internals: it goes to
        // the log with an incident id, and the client gets the id and what kind of failure it was.
        let incident = crate::incident::new_id();
        tracing::warn!(incident = %incident, "model request failed: {error}");
        let what = match &error {
            LlmError::Timeout { .. } => "the model did not answer in time".to_string(),
            LlmError::Http { status, .. } => format!("the model's server answered HTTP {status}"),
            LlmError::Stream { .. } | LlmError::Connection { .. } | LlmError::Protocol { .. } => {
                "the model's server failed".to_string()
            }
            LlmError::MissingKey(_) | LlmError::Cancelled => {
                "the model is not available".to_string()
            }
            _ => "the model failed".to_string(),
        };
        OpenAiError::new(
            status,
            kind,
            format!("{what} (incident {incident}); the server log has the details"),
        )
    }
}

/// A caller allowed to use the models: the admin token or a live API key, as `Authorization: Bearer`.
pub struct ModelClient;

impl FromRequestParts<ServingState> for ModelClient {
    type Rejection = OpenAiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServingState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let unauthorized = || {
            OpenAiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "an API key is required: Authorization: Bearer KEY (moat key create NAME, or the admin token)",
            )
        };
        if token.is_empty() {
            return Err(unauthorized());
        }
        if state.backend.admin_token_matches(token) {
            return Ok(ModelClient);
        }
        // A per-person admin token may use the models when its role may (owner, researcher; not a
        // viewer, whose role is read-only).
        if token.starts_with(crate::store::ADMIN_TOKEN_PREFIX) {
            let principal = state.backend.admin_bearer(token).await;
            return match principal {
                Some(who)
                    if state
                        .backend
                        .authorize(&who, moat_app::wire::Permission::UseModels)
                        .await
                        .is_ok() =>
                {
                    Ok(ModelClient)
                }
                Some(who) => Err(OpenAiError::new(
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    format!(
                        "admin token {:?} has role {}, which may not use the models",
                        who.name,
                        who.role.as_str()
                    ),
                )),
                None => Err(unauthorized()),
            };
        }
        if token.starts_with(API_KEY_PREFIX) {
            let digest = sha256_hex(token);
            let cached = state
                .key_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&digest)
                .is_some_and(|checked| checked.elapsed() < KEY_CACHE_FOR);
            if cached {
                return Ok(ModelClient);
            }
            match state.backend.store.api_key_owner(&digest).await {
                Ok(Some(_)) => {
                    let mut cache = state.key_cache.lock().unwrap_or_else(|p| p.into_inner());
                    // Expired entries go when the cache grows, so it stays as small as the clients.
                    if cache.len() > 10_000 {
                        cache.retain(|_, checked| checked.elapsed() < KEY_CACHE_FOR);
                    }
                    cache.insert(digest, std::time::Instant::now());
                    return Ok(ModelClient);
                }
                Ok(None) => {}
                Err(error) => {
                    let error = crate::incident::internal("reading API keys", &error);
                    return Err(OpenAiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        error.to_string(),
                    ));
                }
            }
        }
        Err(unauthorized())
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/models`: the registry's models, as OpenAI's model list.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models (OpenAI-compatible)",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The registry's models: `{\"object\": \"list\", \"data\": [{\"id\", \"object\": \"model\", \"created\", \"owned_by\"}]}`", body = serde_json::Value),
        (status = 401, description = "No or wrong key: `{\"error\": {\"message\", \"type\", \"code\"}}`", body = serde_json::Value),
        (status = 429, description = "Too many failed keys from this address", body = serde_json::Value),
    )
)]
async fn list_models(_: ModelClient, State(state): State<ServingState>) -> Json<ModelList> {
    let created = unix_seconds();
    Json(ModelList {
        object: "list".into(),
        data: state
            .models
            .current()
            .registry()
            .models
            .iter()
            .map(|spec| ModelObject {
                id: spec.name.clone(),
                object: "model".into(),
                created,
                owned_by: spec.provider.clone(),
            })
            .collect(),
    })
}

/// Checks a request and turns it into the engine's terms.
fn generation_request(request: &ChatCompletionRequest) -> Result<GenerationRequest, OpenAiError> {
    let bad = |message: String| {
        OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    };
    if request.messages.is_empty() {
        return Err(bad("`messages` must hold at least one message".into()));
    }
    if request.messages.last().map(|m| m.role) == Some(Role::Assistant) {
        return Err(bad(
            "the last message must be from the user or the system, not the assistant".into(),
        ));
    }
    if let Some(t) = request.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(bad(format!(
                "`temperature` must be between 0 and 2, got {t}"
            )));
        }
    }
    if let Some(p) = request.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad(format!("`top_p` must be in (0, 1], got {p}")));
        }
    }
    if request.token_limit() == Some(0) {
        return Err(bad("`max_tokens` must be at least 1".into()));
    }
    Ok(GenerationRequest {
        messages: request.messages.clone(),
        max_tokens: request.token_limit(),
        temperature: request.temperature,
        top_p: request.top_p,
        seed: request.seed,
        // A client of the protocol gets every chunk as it comes.
        read_every: None,
    })
}

/// `POST /v1/chat/completions`: an answer from a registry model, whole or streamed.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "models (OpenAI-compatible)",
    security(("api_key" = [])),
    request_body(
        content = serde_json::Value,
        description = "OpenAI's chat-completions request: `model` (a name from `/v1/models`), `messages`, and optionally `stream`, `stream_options.include_usage`, `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `seed`",
        example = json!({ "model": "your-model", "messages": [{ "role": "user", "content": "Say hello." }], "max_tokens": 16 })
    ),
    responses(
        (status = 200, description = "The answer with its `usage`, or with `\"stream\": true` server-sent events: `chat.completion.chunk` objects (role, content, a `usage` chunk when asked for) and `data: [DONE]`", content(
            (serde_json::Value = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "The request is not a valid chat completion (the message says what)", body = serde_json::Value),
        (status = 401, description = "No or wrong key", body = serde_json::Value),
        (status = 403, description = "A browser's request from another site (the CSRF check)", body = serde_json::Value),
        (status = 404, description = "No model of that name (`code`: `model_not_found`)", body = serde_json::Value),
        (status = 429, description = "The model's queue is full, or too many failed keys from this address; `Retry-After` says when to try again", body = serde_json::Value),
        (status = 500, description = "The local model failed (an incident id; the server log has the cause)", body = serde_json::Value),
        (status = 502, description = "The model's upstream server failed (an incident id)", body = serde_json::Value),
        (status = 503, description = "The model is not available (its key is missing, or it was cancelled)", body = serde_json::Value),
        (status = 504, description = "The model did not answer in time", body = serde_json::Value),
    )
)]
async fn chat_completions(
    _: ModelClient,
    State(state): State<ServingState>,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let Json(request) = body.map_err(|rejection| {
        OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            rejection.body_text(),
        )
    })?;
    let engine = state
        .models
        .current()
        .engine(&request.model)
        .ok_or_else(|| OpenAiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            message: format!(
                "the model `{}` does not exist; GET /v1/models lists the models",
                request.model
            ),
        })?;
    let generation = generation_request(&request)?;
    let id = format!("chatcmpl-{}", random_hex(12));
    let created = unix_seconds();
    if !request.stream {
        let completion = engine.generate(generation, None).await?;
        return Ok(Json(whole_answer(&id, created, &request.model, &completion)).into_response());
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let stream = answer_stream(
        engine,
        generation,
        StreamIds {
            id,
            created,
            model: request.model,
        },
        include_usage,
    );
    Ok(Sse::new(stream).into_response())
}

fn whole_answer(id: &str, created: u64, model: &str, completion: &Completion) -> ChatCompletion {
    ChatCompletion {
        id: id.to_string(),
        object: "chat.completion".into(),
        created,
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: Some(completion.text.clone()),
            },
            finish_reason: Some(completion.finish_reason),
        }],
        usage: completion.usage,
    }
}

struct StreamIds {
    id: String,
    created: u64,
    model: String,
}

impl StreamIds {
    fn chunk(&self, delta: Delta, finish: Option<moat_llm::FinishReason>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }],
            usage: None,
        }
    }
}

fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).expect("protocol types serialize"))
}

/// Aborts the generation task when the response stream is dropped (the client went away), which
/// cancels the upstream request or stops the local model at its next token.
struct AbortOnDrop(tokio::task::JoinHandle<Result<Completion, LlmError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The streamed answer: a role chunk, one chunk per text delta, a chunk with the finish reason, a
/// usage chunk if asked for, then `[DONE]`; an error after the stream began is sent as an error
/// object and the stream ends without `[DONE]` (as OpenAI and vLLM do).
///
/// The generation runs in a task of its own, so that it keeps its deadline even when the client
/// stops reading; the response stream takes each delta from its channel and writes the chunk, with
/// no task in between (one hand-off per token, not two: the relay's CPU per chunk is what `moat
/// bench proxy` measures at 1,000 streams). Dropping the stream aborts the generation.
fn answer_stream(
    engine: Arc<dyn Engine>,
    generation: GenerationRequest,
    ids: StreamIds,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (sender, deltas) = tokio::sync::mpsc::channel::<String>(64);
    let task = AbortOnDrop(tokio::spawn(async move {
        engine.generate(generation, Some(sender)).await
    }));
    let role = json_event(&ids.chunk(
        Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
        },
        None,
    ));
    let state = AnswerStream {
        content: ContentChunks::new(&ids),
        ids,
        deltas,
        task,
        include_usage,
        pending: std::collections::VecDeque::from([role]),
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.ended {
                return None;
            }
            match state.deltas.recv().await {
                Some(text) => {
                    let event = state.content.event(&text);
                    return Some((Ok(event), state));
                }
                None => {
                    state.ended = true;
                    let outcome = state.outcome().await;
                    let ending = state.ending(outcome);
                    state.pending.extend(ending);
                }
            }
        }
    })
}

struct AnswerStream {
    ids: StreamIds,
    content: ContentChunks,
    deltas: tokio::sync::mpsc::Receiver<String>,
    task: AbortOnDrop,
    include_usage: bool,
    pending: std::collections::VecDeque<Event>,
    ended: bool,
}

impl AnswerStream {
    async fn outcome(&mut self) -> Result<Completion, LlmError> {
        match (&mut self.task.0).await {
            Ok(outcome) => outcome,
            Err(join_error) => Err(LlmError::Engine {
                model: self.ids.model.clone(),
                message: format!("generation task failed: {join_error}"),
            }),
        }
    }

    /// The events after the last delta.
    fn ending(&self, outcome: Result<Completion, LlmError>) -> Vec<Event> {
        match outcome {
            Ok(completion) => {
                let mut events = vec![json_event(
                    &self
                        .ids
                        .chunk(Delta::default(), Some(completion.finish_reason)),
                )];
                if self.include_usage {
                    let mut chunk = self.ids.chunk(Delta::default(), None);
                    chunk.choices.clear();
                    chunk.usage = Some(completion.usage.unwrap_or_default());
                    events.push(json_event(&chunk));
                }
                events.push(Event::default().data("[DONE]"));
                events
            }
            Err(error) => vec![json_event(&OpenAiError::from(error).body())],
        }
    }
}

/// A content chunk's JSON is the same around every delta: it is laid out once per stream (by serde,
/// so the bytes are those of `ChatCompletionChunk`) and each delta's escaped text goes in between.
struct ContentChunks {
    before: String,
    after: String,
}

impl ContentChunks {
    fn new(ids: &StreamIds) -> ContentChunks {
        let template = serde_json::to_string(&ids.chunk(
            Delta {
                role: None,
                content: Some(String::new()),
            },
            None,
        ))
        .expect("protocol types serialize");
        let (head, tail) = template
            .rsplit_once(r#""content":"""#)
            .expect("a content chunk has a content field");
        ContentChunks {
            before: format!(r#"{head}"content":"#),
            after: tail.to_string(),
        }
    }

    fn json(&self, text: &str) -> String {
        let text = serde_json::to_string(text).expect("a string serializes");
        let mut json = String::with_capacity(self.before.len() + text.len() + self.after.len());
        json.push_str(&self.before);
        json.push_str(&text);
        json.push_str(&self.after);
        json
    }

    fn event(&self, text: &str) -> Event {
        Event::default().data(self.json(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_llm::ChatMessage;

    #[test]
    fn requests_are_checked_before_any_model_runs() {
        let mut request = ChatCompletionRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            ..Default::default()
        };
        assert!(generation_request(&request).is_ok());
        request.max_completion_tokens = Some(7);
        request.max_tokens = Some(3);
        assert_eq!(generation_request(&request).unwrap().max_tokens, Some(7));
        request.temperature = Some(3.0);
        assert!(generation_request(&request)
            .err()
            .unwrap()
            .message
            .contains("temperature"));
        request.temperature = None;
        request
            .messages
            .push(ChatMessage::new(Role::Assistant, "hello"));
        assert!(generation_request(&request)
            .err()
            .unwrap()
            .message
            .contains("last message"));
        request.messages.clear();
        assert!(generation_request(&request)
            .err()
            .unwrap()
            .message
            .contains("messages"));
    }

    #[test]
    fn content_chunks_are_the_bytes_serde_writes() {
        let ids = StreamIds {
            id: "chatcmpl-0123".into(),
            created: 1_764_000_000,
            model: "a \"quoted\" model\\name".into(),
        };
        let chunks = ContentChunks::new(&ids);
        for text in [
            "plain",
            "",
            "\"quotes\" and \\ back",
            "line\nbreak\ttab",
            "ünïcødé 🙂",
            "\u{1}",
        ] {
            let expected = serde_json::to_string(&ids.chunk(
                Delta {
                    role: None,
                    content: Some(text.to_string()),
                },
                None,
            ))
            .unwrap();
            assert_eq!(chunks.json(text), expected, "{text:?}");
        }
    }
}
