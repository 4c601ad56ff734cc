//! Getting answers from language models, for Moat's live arena, `moat generate` and Moat's own
//! OpenAI-compatible endpoint.
//!
//! - [`protocol`]: the OpenAI chat-completions wire types (requests, responses, stream chunks, errors),
//!   shared by the client and by the server's `/v1/chat/completions`.
//! - [`openai`]: a client for any server speaking that protocol (OpenAI, vLLM, llama.cpp, Ollama, TGI),
//!   streaming over server-sent events ([`sse`]), with timeouts, retries and typed errors.
//! - [`local`]: a GGUF llama-family model run on the CPU with candle; tokenizer and chat template read
//!   from the file's own metadata; one model loaded once, requests queued.
//! - [`registry`]: the `--models` file that names each model, its provider and openness, and how to
//!   reach it.
//!
//! Every engine implements [`Engine`]: a request in, text deltas out through a channel, and one
//! [`Completion`] with the generation metadata at the end. No database, no HTTP server.

mod llama;
pub mod local;
pub mod openai;
pub mod protocol;
mod qmatrix;
pub mod registry;
pub mod sse;

use std::time::Duration;

pub use protocol::{ChatMessage, Role};

/// What to generate: a conversation and sampling settings. `None` fields take the engine's defaults
/// (from the registry entry).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    /// Read a streamed answer at most this often once its first text has come: what the server
    /// sends meanwhile is taken in one read, a wake-up and a read for several chunks instead of one
    /// each. The first text is read as soon as it arrives. For a caller that shows text in frames
    /// (the arena's rater sees at most 20 a second); `None` reads every chunk as it arrives.
    pub read_every: Option<Duration>,
}

/// Why generation stopped, as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
    /// Anything else a server reports (`content_filter`, `tool_calls`, …), kept as "other".
    #[serde(other)]
    Other,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Other => "other",
        }
    }
}

/// Token counts, as the protocol's `usage` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// A finished answer with its generation metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    /// Token counts when known (a server that sends no `usage` leaves `None`).
    pub usage: Option<Usage>,
    /// From the start of the request to the first text delta (`None` if no text came).
    pub time_to_first_token: Option<Duration>,
    /// From the start of the request to the end of the answer.
    pub latency: Duration,
}

/// Everything that can go wrong when asking a model. Messages name the model endpoint and never carry
/// an API key.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The request itself is wrong (empty conversation, prompt longer than the context, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server answered with an HTTP error status (after any retries).
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Http {
        endpoint: String,
        status: u16,
        message: String,
    },
    /// The server sent an error object in the middle of a stream.
    #[error("{endpoint} reported an error mid-stream: {message}")]
    Stream { endpoint: String, message: String },
    /// No answer, or no progress, within the configured time.
    #[error("{endpoint} timed out: {what}")]
    Timeout { endpoint: String, what: String },
    /// The connection failed or was cut.
    #[error("{endpoint}: connection failed: {message}")]
    Connection { endpoint: String, message: String },
    /// The server's answer does not follow the protocol.
    #[error("{endpoint} sent a malformed answer: {message}")]
    Protocol { endpoint: String, message: String },
    /// The local engine's queue is full; try again later.
    #[error("model {model} is busy: its queue of {capacity} requests is full")]
    Busy { model: String, capacity: usize },
    /// The caller went away (the receiver of the deltas was dropped).
    #[error("cancelled")]
    Cancelled,
    /// The local model failed (loading, a tensor operation, the tokenizer).
    #[error("model {model}: {message}")]
    Engine { model: String, message: String },
    /// An API key's environment variable is not set (the variable's name, never a value).
    #[error("environment variable {0} (the API key) is not set")]
    MissingKey(String),
}

/// Text deltas of an answer as they are generated. A closed receiver cancels generation.
pub type DeltaSender = tokio::sync::mpsc::Sender<String>;

/// A model that answers conversations: local or remote.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Generates one answer. Each piece of text is sent on `deltas` (if given) as it is produced; the
    /// returned completion holds the whole text. Dropping the future cancels the request.
    async fn generate(
        &self,
        request: GenerationRequest,
        deltas: Option<DeltaSender>,
    ) -> Result<Completion, LlmError>;
}
