//! A client for servers that speak the OpenAI chat-completions protocol: OpenAI itself, vLLM, llama.cpp's
//! `llama-server`, Ollama's `/v1` endpoint, TGI and the like.
//!
//! [`OpenAiClient::generate`](crate::Engine::generate) streams an answer over server-sent events
//! (`stream: true` with `stream_options.include_usage`), sends each piece of text on the caller's
//! channel as it arrives, and returns the whole [`Completion`]. [`OpenAiClient::complete`] asks for a
//! whole answer at once, and [`OpenAiClient::models`] lists the server's models for health checks.
//!
//! What a study needs from a remote model is a bounded, explainable failure rather than a hang or a
//! silent partial answer, so:
//!
//! - three limits apply: the TCP/TLS connection (`connect_timeout`), the whole request including
//!   retries (`timeout`), and the longest silence inside a stream (`idle_timeout`);
//! - at most `max_concurrency` requests per client are in flight, the others wait for a slot;
//! - HTTP 429, 5xx and failed connections are retried (up to `retries` times) with exponential
//!   back-off or the server's `retry-after`, but only while no text of the answer has arrived, so a
//!   retry never repeats text the caller has already shown;
//! - a stream must end with `data: [DONE]`; one that stops before it is an error, not an answer;
//! - every error names the model and server, and none carries the API key: the key is read from its
//!   environment variable for each request, sent as a sensitive header, and scrubbed from anything the
//!   server says back.
//!
//! The response bodies are read with lenient private types rather than [`crate::protocol`]'s: the
//! client needs only the text, the finish reason and the token counts, and servers differ in which of
//! the other fields they send (or leave `null`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::protocol::{ChatCompletionRequest, ChatMessage, Role, StreamOptions};
use crate::registry::{RemoteEndpoint, Sampling};
use crate::sse::{Event, SseParser};
use crate::{Completion, DeltaSender, Engine, FinishReason, GenerationRequest, LlmError, Usage};

/// The first retry waits about this long; each further one twice as long.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Exponential back-off stops growing here.
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A server's `retry-after` is honoured up to this; a longer wait is shortened to it.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// Server-supplied text kept in an error message.
const MESSAGE_MAX_CHARS: usize = 400;
/// The most of an error body (or a whole answer) read into memory.
const BODY_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A client for one model on one OpenAI-compatible server. Cheap to share behind an `Arc`; requests
/// from all holders share its concurrency limit.
pub struct OpenAiClient {
    name: String,
    endpoint: RemoteEndpoint,
    sampling: Sampling,
    /// "model `name` (server-model at base_url)": how every error names the endpoint.
    label: String,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
}

/// Written by hand so that nothing but the variable's name could ever show up: the client does not
/// hold the key, and the HTTP client's own `Debug` is left out.
impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("name", &self.name)
            .field("base_url", &self.endpoint.base_url)
            .field("model", &self.endpoint.model)
            .field("api_key_env", &self.endpoint.api_key_env)
            .field("timeout", &self.endpoint.timeout)
            .field("connect_timeout", &self.endpoint.connect_timeout)
            .field("idle_timeout", &self.endpoint.idle_timeout)
            .field("max_concurrency", &self.endpoint.max_concurrency)
            .field("retries", &self.endpoint.retries)
            .finish_non_exhaustive()
    }
}

/// The API key of one request. Its `Debug` never shows the value.
struct ApiKey {
    header: HeaderValue,
    value: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// Removes the key from text that came from elsewhere (a server that echoes it in an error
    /// message, say).
    fn scrub(key: Option<&ApiKey>, text: String) -> String {
        match key {
            Some(key) if key.value.len() >= 4 && text.contains(&key.value) => {
                text.replace(&key.value, "<redacted>")
            }
            _ => text,
        }
    }
}

/// How one attempt failed: worth another try (a 429, a 5xx, a broken connection before any text), or
/// final.
enum Failure {
    Retry {
        error: LlmError,
        /// The server's `retry-after`, if it sent one.
        after: Option<Duration>,
    },
    Final(LlmError),
}

impl From<LlmError> for Failure {
    fn from(error: LlmError) -> Failure {
        Failure::Final(error)
    }
}

impl OpenAiClient {
    /// A client for the model the registry calls `name`. Checks the settings; sends nothing.
    pub fn new(
        name: &str,
        endpoint: &RemoteEndpoint,
        sampling: &Sampling,
    ) -> Result<OpenAiClient, LlmError> {
        let base_url = endpoint.base_url.trim_end_matches('/').to_string();
        let mut url = reqwest::Url::parse(&base_url).map_err(|e| {
            LlmError::InvalidRequest(format!("model `{name}`: base_url is not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::InvalidRequest(format!(
                "model `{name}`: base_url must start with http:// or https://"
            )));
        }
        // A user name or password in the URL is a credential too; keep it out of messages.
        let shown_url = if url.username().is_empty() && url.password().is_none() {
            base_url.clone()
        } else {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.as_str().trim_end_matches('/').to_string()
        };
        let label = format!("model `{name}` ({} at {shown_url})", endpoint.model);
        let http = reqwest::Client::builder()
            .connect_timeout(endpoint.connect_timeout)
            .user_agent(concat!("moat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Connection {
                endpoint: label.clone(),
                message: format!("could not set up the HTTP client: {}", error_chain(&e)),
            })?;
        Ok(OpenAiClient {
            name: name.to_string(),
            endpoint: RemoteEndpoint {
                base_url,
                ..endpoint.clone()
            },
            sampling: sampling.clone(),
            label,
            http,
            // A limit of 0 would make every request wait forever; the registry refuses it, and a
            // hand-built endpoint gets 1.
            slots: Arc::new(Semaphore::new(endpoint.max_concurrency.max(1))),
        })
    }

    /// The name the registry gives the model.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks for a whole answer at once (`stream: false`), with the same limits and retries as a
    /// streamed one.
    pub async fn complete(&self, request: GenerationRequest) -> Result<Completion, LlmError> {
        let body = self.request_body(&request, false)?;
        let key = self.api_key()?;
        let _slot = self.slot().await?;
        let start = Instant::now();
        let deadline = start + self.endpoint.timeout;
        let key = key.as_ref();
        self.with_retries(deadline, || self.whole_attempt(&body, key, start, deadline))
            .await
    }

    /// The model names the server offers (`GET {base_url}/models`), to check that it is up and
    /// serves the configured model. It does not wait for a concurrency slot, so that a busy model
    /// still answers its health check.
    pub async fn models(&self) -> Result<Vec<String>, LlmError> {
        let key = self.api_key()?;
        let key = key.as_ref();
        let deadline = Instant::now() + self.endpoint.timeout;
        self.with_retries(deadline, || async move {
            let response = self
                .send(Method::GET, "models", None, key, deadline, false)
                .await?;
            let bytes = self.read_body(response, key, deadline).await?;
            let list: WireModelList = serde_json::from_slice(&bytes).map_err(|e| {
                self.protocol_error(
                    key,
                    format!("the model list is not JSON of the expected shape ({e})"),
                    &bytes,
                )
            })?;
            Ok::<_, Failure>(list.data.into_iter().map(|m| m.id).collect())
        })
        .await
    }

    /// The request body: the registry's model, the request's sampling settings or the registry's, and
    /// the registry's system prompt first when the conversation has none of its own.
    fn request_body(
        &self,
        request: &GenerationRequest,
        stream: bool,
    ) -> Result<ChatCompletionRequest, LlmError> {
        if request.messages.is_empty() {
            return Err(LlmError::InvalidRequest(format!(
                "{}: the conversation is empty",
                self.label
            )));
        }
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if let Some(system) = &self.sampling.system_prompt {
            if !request.messages.iter().any(|m| m.role == Role::System) {
                messages.push(ChatMessage::new(Role::System, system.clone()));
            }
        }
        messages.extend(request.messages.iter().cloned());
        Ok(ChatCompletionRequest {
            model: self.endpoint.model.clone(),
            messages,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            // `max_tokens` rather than `max_completion_tokens`: every compatible server knows the
            // older name.
            max_tokens: Some(request.max_tokens.unwrap_or(self.sampling.max_tokens)),
            max_completion_tokens: None,
            temperature: request.temperature.or(self.sampling.temperature),
            top_p: request.top_p.or(self.sampling.top_p),
            seed: request.seed.or(self.sampling.seed),
        })
    }

    /// Reads the key from its environment variable now, so that a rotated key is picked up without a
    /// restart, and a missing one is reported before anything is sent.
    fn api_key(&self) -> Result<Option<ApiKey>, LlmError> {
        let Some(var) = &self.endpoint.api_key_env else {
            return Ok(None);
        };
        let value = match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => value.trim().to_string(),
            _ => return Err(LlmError::MissingKey(var.clone())),
        };
        let mut header = HeaderValue::from_str(&format!("Bearer {value}")).map_err(|_| {
            LlmError::InvalidRequest(format!(
                "{}: the API key in {var} has characters an HTTP header cannot carry",
                self.label
            ))
        })?;
        header.set_sensitive(true);
        Ok(Some(ApiKey { header, value }))
    }

    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, LlmError> {
        // The semaphore is never closed, so this only fails if that changes.
        self.slots.acquire().await.map_err(|_| LlmError::Cancelled)
    }

    /// Runs attempts until one succeeds, one fails for good, the retries are spent, or waiting for
    /// the next one would pass the deadline. Returns the last attempt's error.
    async fn with_retries<T, F, Fut>(
        &self,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, LlmError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut retried = 0;
        loop {
            let (error, after) = match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry { error, after }) => (error, after),
            };
            if retried >= self.endpoint.retries {
                return Err(error);
            }
            let wait = match after {
                Some(after) => after.min(RETRY_AFTER_MAX),
                None => backoff(retried),
            };
            if Instant::now() + wait >= deadline {
                // Waiting would pass the overall timeout, so the server's answer is the best there is.
                return Err(error);
            }
            tracing::warn!(
                model = %self.name,
                retry = retried + 1,
                of = self.endpoint.retries,
                wait_ms = wait.as_millis() as u64,
                "{error}; retrying"
            );
            tokio::time::sleep(wait).await;
            retried += 1;
        }
    }

    /// Sends one request and returns the response if its status is a success.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&ChatCompletionRequest>,
        key: Option<&ApiKey>,
        deadline: Instant,
        stream: bool,
    ) -> Result<reqwest::Response, Failure> {
        let url = format!("{}/{path}", self.endpoint.base_url);
        let mut builder = self.http.request(method, &url).header(
            ACCEPT,
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        );
        if let Some(key) = key {
            builder = builder.header(AUTHORIZATION, key.header.clone());
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let response = match tokio::time::timeout_at(deadline, builder.send()).await {
            Err(_) => return Err(Failure::Final(self.whole_timeout())),
            Ok(Err(e)) => return Err(self.transport_failure(&e, key)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let after = retry_after(response.headers());
        // The error body is only for the message; a body that does not come in time is no reason to
        // lose the status.
        let bytes = self
            .read_body(response, key, deadline)
            .await
            .unwrap_or_default();
        let error = LlmError::Http {
            endpoint: self.label.clone(),
            status: status.as_u16(),
            message: ApiKey::scrub(key, error_message(status, &bytes)),
        };
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(Failure::Retry { error, after })
        } else {
            Err(Failure::Final(error))
        }
    }

    /// Reads a whole (bounded) body before the deadline.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        key: Option<&ApiKey>,
        deadline: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let mut bytes = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => return Err(Failure::Final(self.whole_timeout())),
                Ok(Err(e)) => return Err(self.transport_failure(&e, key)),
                Ok(Ok(None)) => return Ok(bytes),
                Ok(Ok(Some(chunk))) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > BODY_MAX_BYTES {
                        return Err(Failure::Final(LlmError::Protocol {
                            endpoint: self.label.clone(),
                            message: format!("the answer is larger than {BODY_MAX_BYTES} bytes"),
                        }));
                    }
                }
            }
        }
    }

    /// One try at a whole answer.
    async fn whole_attempt(
        &self,
        body: &ChatCompletionRequest,
        key: Option<&ApiKey>,
        start: Instant,
        deadline: Instant,
    ) -> Result<Completion, Failure> {
        let response = self
            .send(
                Method::POST,
                "chat/completions",
                Some(body),
                key,
                deadline,
                false,
            )
            .await?;
        let status = response.status();
        let bytes = self.read_body(response, key, deadline).await?;
        self.whole_answer(status, &bytes, key, start)
    }

    /// Reads a whole `chat.completion` answer.
    fn whole_answer(
        &self,
        status: StatusCode,
        bytes: &[u8],
        key: Option<&ApiKey>,
        start: Instant,
    ) -> Result<Completion, Failure> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            self.protocol_error(key, format!("the answer is not JSON ({e})"), bytes)
        })?;
        if let Some(message) = embedded_error(&value) {
            // An error object under a success status; the status is still what the server said.
            return Err(Failure::Final(LlmError::Http {
                endpoint: self.label.clone(),
                status: status.as_u16(),
                message: ApiKey::scrub(key, message),
            }));
        }
        let whole: WholeAnswer = serde_json::from_value(value).map_err(|e| {
            self.protocol_error(
                key,
                format!("the answer is not a chat.completion ({e})"),
                bytes,
            )
        })?;
        let choice = whole
            .choices
            .into_iter()
            .find(|c| c.index == 0)
            .ok_or_else(|| self.protocol_error(key, "the answer has no choice".into(), bytes))?;
        let text = choice.message.and_then(|m| m.content).unwrap_or_default();
        let latency = start.elapsed();
        Ok(Completion {
            time_to_first_token: (!text.is_empty()).then_some(latency),
            text,
            finish_reason: choice.finish_reason.unwrap_or(FinishReason::Stop),
            usage: whole.usage.map(WireUsage::into_usage),
            latency,
        })
    }

    /// One try at a streamed answer: reads events until `[DONE]`, sending text on `deltas`.
    async fn stream_attempt(
        &self,
        body: &ChatCompletionRequest,
        key: Option<&ApiKey>,
        deltas: Option<&DeltaSender>,
        (start, deadline): (Instant, Instant),
        read_every: Option<Duration>,
    ) -> Result<Completion, Failure> {
        let response = self
            .send(
                Method::POST,
                "chat/completions",
                Some(body),
                key,
                deadline,
                true,
            )
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            // A server that ignores `stream: true` sends the whole answer; take it as one delta.
            let status = response.status();
            let bytes = self.read_body(response, key, deadline).await?;
            let completion = self.whole_answer(status, &bytes, key, start)?;
            if let (Some(deltas), false) = (deltas, completion.text.is_empty()) {
                match tokio::time::timeout_at(deadline, deltas.send(completion.text.clone())).await
                {
                    Err(_) => return Err(Failure::Final(self.whole_timeout())),
                    Ok(Err(_)) => return Err(Failure::Final(LlmError::Cancelled)),
                    Ok(Ok(())) => {}
                }
            }
            return Ok(completion);
        }
        if content_type.starts_with("text/html") {
            // A proxy's or load balancer's page, not the model server.
            let bytes = self.read_body(response, key, deadline).await?;
            return Err(self.protocol_error(
                key,
                "the answer is an HTML page, not an event stream".into(),
                &bytes,
            ));
        }
        let mut stream = response.bytes_stream();
        let mut parser = SseParser::new();
        let mut answer = Answer::default();
        // Both waits are set up once per stream, not once per chunk: the idle timer fires at most
        // once per `idle_timeout` and is then moved on from the last chunk's time if one came
        // (a timer re-armed on every chunk was a measurable part of the relay's CPU at thousands
        // of streams, `moat bench proxy`).
        let idle_timeout = self.endpoint.idle_timeout;
        let mut last_chunk = Instant::now();
        let idle = tokio::time::sleep_until((last_chunk + idle_timeout).min(deadline));
        tokio::pin!(idle);
        // A caller that stopped listening ends the request at once, even while the server is silent.
        let gone = receiver_gone(deltas);
        tokio::pin!(gone);
        // With `read_every`, once text has come the stream is read at most that often.
        let paced = |answer: &Answer| read_every.filter(|_| answer.time_to_first_token.is_some());
        loop {
            if let Some(every) = paced(&answer) {
                let at = last_chunk + every;
                if Instant::now() < at {
                    tokio::select! {
                        biased;
                        () = &mut gone => return Err(Failure::Final(LlmError::Cancelled)),
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
            let next = tokio::select! {
                biased;
                next = stream.next() => next,
                () = &mut gone => return Err(Failure::Final(LlmError::Cancelled)),
                () = &mut idle => {
                    let due = (last_chunk + idle_timeout).min(deadline);
                    if Instant::now() < due {
                        idle.as_mut().reset(due);
                        continue;
                    }
                    if due >= deadline {
                        return Err(Failure::Final(self.whole_timeout()));
                    }
                    return Err(Failure::Final(LlmError::Timeout {
                        endpoint: self.label.clone(),
                        what: format!(
                            "the stream was silent for {} (idle_timeout)",
                            seconds(idle_timeout)
                        ),
                    }));
                }
            };
            // With `read_every`, what has come meanwhile is taken now, chunk after chunk, before
            // the next pause.
            let mut next = Some(next);
            let mut ended = false;
            while let Some(item) = next.take() {
                let events = match item {
                    Some(Err(e)) => {
                        let failure = self.transport_failure(&e, key);
                        return Err(match failure {
                            // Text already went to the caller; a retry would repeat it.
                            Failure::Retry { error, .. } if !answer.text.is_empty() => {
                                Failure::Final(error)
                            }
                            other => other,
                        });
                    }
                    Some(Ok(bytes)) => parser.feed(&bytes),
                    None => {
                        ended = true;
                        parser.finish().into_iter().collect()
                    }
                };
                for event in events {
                    if self
                        .handle_event(event, &mut answer, key, deltas, start, deadline)
                        .await?
                    {
                        return Ok(answer.finish(start));
                    }
                }
                if !ended && paced(&answer).is_some() {
                    next = arrived(&mut stream).await;
                }
            }
            // Silence counts from here: a caller slow to take the text is not the server's silence.
            last_chunk = Instant::now();
            if ended {
                let error = LlmError::Connection {
                    endpoint: self.label.clone(),
                    message: "the stream ended early, before `data: [DONE]`".into(),
                };
                return Err(if answer.text.is_empty() {
                    Failure::Retry { error, after: None }
                } else {
                    Failure::Final(error)
                });
            }
        }
    }

    /// Handles one event of the stream; `true` at `[DONE]`.
    async fn handle_event(
        &self,
        event: Event,
        answer: &mut Answer,
        key: Option<&ApiKey>,
        deltas: Option<&DeltaSender>,
        start: Instant,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let data = event.data.trim();
        if event.kind() == "error" {
            // Some servers name the event instead of (or besides) wrapping the error object.
            let message = serde_json::from_str::<serde_json::Value>(data)
                .ok()
                .and_then(|v| embedded_error(&v))
                .unwrap_or_else(|| truncate(data));
            return Err(self.stream_error(key, message));
        }
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        // One typed parse for an ordinary chunk; an error object, or anything that does not parse
        // as a chunk, takes the slower path through a JSON value for its exact message.
        let chunk = match serde_json::from_str::<WireChunk>(data) {
            Ok(chunk) if chunk.error.is_none() && chunk.object != Some(ObjectKind::Error) => chunk,
            _ => self.unusual_event(data, key)?,
        };
        if let Some(usage) = chunk.usage {
            answer.usage = Some(usage.into_usage());
        }
        // Moat asks for one choice; any other index is ignored.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(reason) = choice.finish_reason {
                answer.finish_reason = Some(reason);
            }
            let Some(text) = choice.delta.and_then(|d| d.content) else {
                continue;
            };
            if text.is_empty() {
                continue;
            }
            if answer.time_to_first_token.is_none() {
                answer.time_to_first_token = Some(start.elapsed());
            }
            answer.text.push_str(&text);
            if let Some(deltas) = deltas {
                // Room in the channel is the usual case: no timer for it.
                let text = match deltas.try_send(text) {
                    Ok(()) => continue,
                    Err(TrySendError::Closed(_)) => {
                        return Err(Failure::Final(LlmError::Cancelled))
                    }
                    Err(TrySendError::Full(text)) => text,
                };
                match tokio::time::timeout_at(deadline, deltas.send(text)).await {
                    Err(_) => return Err(Failure::Final(self.whole_timeout())),
                    Ok(Err(_)) => return Err(Failure::Final(LlmError::Cancelled)),
                    Ok(Ok(())) => {}
                }
            }
        }
        Ok(false)
    }

    /// An event that is not a plain chunk: the error it carries, or why it is not a chunk.
    fn unusual_event(&self, data: &str, key: Option<&ApiKey>) -> Result<WireChunk, Failure> {
        let value: serde_json::Value = serde_json::from_str(data).map_err(|e| {
            self.protocol_error(
                key,
                format!("malformed JSON in the stream ({e})"),
                data.as_bytes(),
            )
        })?;
        if let Some(message) = embedded_error(&value) {
            return Err(self.stream_error(key, message));
        }
        serde_json::from_value(value).map_err(|e| {
            self.protocol_error(
                key,
                format!("a stream event that is not a chat.completion.chunk ({e})"),
                data.as_bytes(),
            )
        })
    }

    fn stream_error(&self, key: Option<&ApiKey>, message: String) -> Failure {
        Failure::Final(LlmError::Stream {
            endpoint: self.label.clone(),
            message: ApiKey::scrub(key, message),
        })
    }

    fn protocol_error(&self, key: Option<&ApiKey>, what: String, data: &[u8]) -> Failure {
        let data = truncate(&String::from_utf8_lossy(data));
        Failure::Final(LlmError::Protocol {
            endpoint: self.label.clone(),
            message: ApiKey::scrub(key, format!("{what}: {data}")),
        })
    }

    fn whole_timeout(&self) -> LlmError {
        LlmError::Timeout {
            endpoint: self.label.clone(),
            what: format!(
                "no whole answer within {} (timeout)",
                seconds(self.endpoint.timeout)
            ),
        }
    }

    /// Sorts a failure of the HTTP client: a connection that could not be made or broke is worth a
    /// retry; the connect timeout is a timeout, but also worth one.
    fn transport_failure(&self, error: &reqwest::Error, key: Option<&ApiKey>) -> Failure {
        let message = ApiKey::scrub(key, error_chain(error));
        if message.contains("scheme is not http") {
            // hyper's plain-HTTP connector refusing an https URL: this build has no TLS, and no
            // retry will change that.
            return Failure::Final(LlmError::Connection {
                endpoint: self.label.clone(),
                message: "this build of Moat cannot speak https (reqwest is built without TLS)"
                    .into(),
            });
        }
        if error.is_connect() && error.is_timeout() {
            return Failure::Retry {
                error: LlmError::Timeout {
                    endpoint: self.label.clone(),
                    what: format!(
                        "no connection within {} (connect_timeout)",
                        seconds(self.endpoint.connect_timeout)
                    ),
                },
                after: None,
            };
        }
        if error.is_timeout() {
            return Failure::Final(self.whole_timeout());
        }
        let error_kind = if error.is_body() || error.is_decode() {
            "the connection broke while reading the answer"
        } else {
            "the request could not be sent"
        };
        let llm_error = LlmError::Connection {
            endpoint: self.label.clone(),
            message: format!("{error_kind}: {message}"),
        };
        if error.is_connect() || error.is_request() || error.is_body() || error.is_decode() {
            Failure::Retry {
                error: llm_error,
                after: None,
            }
        } else {
            Failure::Final(llm_error)
        }
    }
}

#[async_trait::async_trait]
impl Engine for OpenAiClient {
    async fn generate(
        &self,
        request: GenerationRequest,
        deltas: Option<DeltaSender>,
    ) -> Result<Completion, LlmError> {
        let body = self.request_body(&request, true)?;
        let key = self.api_key()?;
        let _slot = self.slot().await?;
        let start = Instant::now();
        let deadline = start + self.endpoint.timeout;
        let key = key.as_ref();
        let deltas = deltas.as_ref();
        let read_every = request.read_every;
        self.with_retries(deadline, || {
            self.stream_attempt(&body, key, deltas, (start, deadline), read_every)
        })
        .await
    }
}

/// The answer of one streamed attempt so far.
#[derive(Default)]
struct Answer {
    text: String,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
    time_to_first_token: Option<Duration>,
}

impl Answer {
    fn finish(self, start: Instant) -> Completion {
        let finish_reason = self.finish_reason.unwrap_or_else(|| {
            // Some servers end natural stops without a reason; the stream did end properly.
            tracing::debug!("the stream ended with [DONE] but no finish_reason; taking \"stop\"");
            FinishReason::Stop
        });
        Completion {
            text: self.text,
            finish_reason,
            usage: self.usage,
            time_to_first_token: self.time_to_first_token,
            latency: start.elapsed(),
        }
    }
}

/// The stream's next item if it has already arrived: the connection's task hands over one chunk
/// at a time, so after a chunk the stream is polled again once that task has had its turn (one
/// yield), and `None` means the stream is waiting for the network.
async fn arrived<S: futures::Stream + Unpin>(stream: &mut S) -> Option<Option<S::Item>> {
    use futures::FutureExt;
    if let Some(item) = stream.next().now_or_never() {
        return Some(item);
    }
    tokio::task::yield_now().await;
    stream.next().now_or_never()
}

/// Resolves when the caller dropped the receiver of the deltas; never without a channel.
async fn receiver_gone(deltas: Option<&DeltaSender>) {
    match deltas {
        Some(deltas) => deltas.closed().await,
        None => std::future::pending().await,
    }
}

/// Exponential back-off with up to a quarter more at random, so that many requests refused at the
/// same moment do not all come back at the same moment.
fn backoff(retried: u32) -> Duration {
    let base = BACKOFF_BASE
        .saturating_mul(1u32 << retried.min(16))
        .min(BACKOFF_MAX);
    base.mul_f64(1.0 + rand::thread_rng().gen_range(0.0..0.25))
}

/// The server's requested wait: `retry-after-ms` (OpenAI's), or `retry-after` in seconds or as an
/// HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let finite = |n: f64| (n.is_finite() && n >= 0.0).then_some(n);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse().ok().and_then(finite)) {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    let value = header(RETRY_AFTER.as_str())?;
    if let Some(secs) = value.parse().ok().and_then(finite) {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The message of an error object (`{"error": {"message": …}}`, `{"error": "…"}`, vLLM's older
/// `{"object": "error", "message": …}`), if the value is one.
fn embedded_error(value: &serde_json::Value) -> Option<String> {
    let object = value.as_object()?;
    let message_of = |v: &serde_json::Value| -> String {
        match v {
            serde_json::Value::String(s) => truncate(s),
            serde_json::Value::Object(o) => match o.get("message") {
                Some(serde_json::Value::String(s)) => truncate(s),
                _ => truncate(&v.to_string()),
            },
            other => truncate(&other.to_string()),
        }
    };
    match object.get("error") {
        Some(serde_json::Value::Null) | None => {}
        Some(error) => return Some(message_of(error)),
    }
    if object.get("object").and_then(|o| o.as_str()) == Some("error") {
        return Some(message_of(value));
    }
    None
}

/// What to say about an HTTP error: the error object's message, FastAPI's `detail`, the body's text,
/// or the status's name.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(message) = embedded_error(&value) {
            return message;
        }
        if let Some(detail) = value.get("detail") {
            return truncate(
                &detail
                    .as_str()
                    .map_or_else(|| detail.to_string(), str::to_string),
            );
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        truncate(text)
    }
}

/// Server text cut to a readable length, on a character boundary.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(MESSAGE_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// An error and its causes, one after the other; reqwest's own message alone ("error sending
/// request") does not say what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn seconds(duration: Duration) -> String {
    format!("{} s", (duration.as_secs_f64() * 1000.0).round() / 1000.0)
}

// The parts of the answers the client reads. Everything is optional or defaulted where servers
// disagree, and unknown fields are ignored.

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Set (not null) when the event is an error object.
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    object: Option<ObjectKind>,
}

/// A chunk's `object`, only as far as telling vLLM's older error objects apart.
#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ObjectKind {
    Error,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<WireText>,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
}

#[derive(Deserialize)]
struct WireText {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WholeAnswer {
    #[serde(default)]
    choices: Vec<WholeChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WholeChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    message: Option<WireText>,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
    #[serde(default)]
    total_tokens: Option<u32>,
}

impl WireUsage {
    fn into_usage(self) -> Usage {
        let prompt_tokens = self.prompt_tokens.unwrap_or(0);
        let completion_tokens = self.completion_tokens.unwrap_or(0);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: self
                .total_tokens
                .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        }
    }
}

#[derive(Deserialize)]
struct WireModelList {
    data: Vec<WireModel>,
}

#[derive(Deserialize)]
struct WireModel {
    id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(500)));
        let soon = SystemTime::now() + Duration::from_secs(5);
        let date = httpdate::fmt_http_date(soon);
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait <= Duration::from_secs(5) && wait >= Duration::from_secs(3),
            "{wait:?}"
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = backoff(0);
        assert!(first >= BACKOFF_BASE && first <= BACKOFF_BASE.mul_f64(1.25));
        let third = backoff(2);
        assert!(third >= BACKOFF_BASE * 4 && third <= (BACKOFF_BASE * 4).mul_f64(1.25));
        assert!(backoff(30) <= BACKOFF_MAX.mul_f64(1.25));
    }

    #[test]
    fn error_messages_come_from_the_error_object_or_the_body() {
        let status = StatusCode::TOO_MANY_REQUESTS;
        let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(error_message(status, openai), "Rate limit reached");
        let vllm_old = br#"{"object":"error","message":"model overloaded","type":"x","param":null,"code":503}"#;
        assert_eq!(error_message(status, vllm_old), "model overloaded");
        assert_eq!(
            error_message(status, br#"{"detail":"Not Found"}"#),
            "Not Found"
        );
        assert_eq!(error_message(status, b"plain text"), "plain text");
        assert_eq!(error_message(status, b""), "Too Many Requests");
        let long = "x".repeat(5000);
        assert!(error_message(status, long.as_bytes()).chars().count() <= MESSAGE_MAX_CHARS + 1);
    }

    #[test]
    fn the_key_is_scrubbed_and_never_debug_printed() {
        let key = ApiKey {
            header: HeaderValue::from_static("Bearer sk-test-123456"),
            value: "sk-test-123456".into(),
        };
        assert_eq!(
            ApiKey::scrub(Some(&key), "bad key sk-test-123456 given".into()),
            "bad key <redacted> given"
        );
        assert!(!format!("{key:?}").contains("sk-test"));
    }
}
