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
    })
}

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
fn answer_stream(
    engine: Arc<dyn Engine>,
    generation: GenerationRequest,
    ids: StreamIds,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (sender, mut deltas) = tokio::sync::mpsc::channel::<String>(64);
    let task = AbortOnDrop(tokio::spawn(async move {
        engine.generate(generation, Some(sender)).await
    }));
    async_stream_events(move |emit| async move {
        let mut task = task;
        emit.send(json_event(&ids.chunk(
            Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
            },
            None,
        )))
        .await;
        while let Some(text) = deltas.recv().await {
            emit.send(json_event(&ids.chunk(
                Delta {
                    role: None,
                    content: Some(text),
                },
                None,
            )))
            .await;
        }
        let outcome = match (&mut task.0).await {
            Ok(outcome) => outcome,
            Err(join_error) => Err(LlmError::Engine {
                model: ids.model.clone(),
                message: format!("generation task failed: {join_error}"),
            }),
        };
        match outcome {
            Ok(completion) => {
                emit.send(json_event(
                    &ids.chunk(Delta::default(), Some(completion.finish_reason)),
                ))
                .await;
                if include_usage {
                    let mut chunk = ids.chunk(Delta::default(), None);
                    chunk.choices.clear();
                    chunk.usage = Some(completion.usage.unwrap_or_default());
                    emit.send(json_event(&chunk)).await;
                }
                emit.send(Event::default().data("[DONE]")).await;
            }
            Err(error) => {
                let error = OpenAiError::from(error);
                emit.send(json_event(&error.body())).await;
            }
        }
    })
}

/// A tiny generator: `body` sends events through the given emitter; the returned stream yields
/// them. (A channel keeps this free of a macro crate.)
fn async_stream_events<F, Fut>(body: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(Emitter) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(16);
    let producer = tokio::spawn(body(Emitter(sender)));
    let guard = ProducerGuard(producer);
    futures::stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
        let event = receiver.recv().await?;
        Some((Ok(event), (receiver, guard)))
    })
}

/// Sends events to the response; a send fails only when the client went away, which the producer
/// notices through its own task being aborted.
pub struct Emitter(tokio::sync::mpsc::Sender<Event>);

impl Emitter {
    async fn send(&self, event: Event) {
        let _ = self.0.send(event).await;
    }
}

/// Aborts the producer task (and with it the generation) when the response stream is dropped.
struct ProducerGuard(tokio::task::JoinHandle<()>);

impl Drop for ProducerGuard {
    fn drop(&mut self) {
        self.0.abort();
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
}
