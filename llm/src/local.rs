//! A GGUF llama-family model run on the CPU with candle.
//!
//! Everything the model needs comes from the GGUF file itself: the weights, the byte-level BPE
//! tokenizer (`tokenizer.ggml.*`), the chat template (`tokenizer.chat_template`, rendered with
//! minijinja) and the context length. One worker OS thread owns the weights, because a forward pass
//! needs `&mut` for the KV cache; requests reach it through a bounded queue and are answered one at a
//! time. A full queue answers [`LlmError::Busy`] at once rather than letting callers pile up.

use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use candle_transformers::generation::LogitsProcessor;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::llama::{Llama, MAX_POSITIONS};
use crate::registry::{LocalEndpoint, Sampling};
use crate::{
    ChatMessage, Completion, DeltaSender, Engine, FinishReason, GenerationRequest, LlmError, Role,
    Usage,
};

/// The temperature used when neither the request nor the registry entry sets one.
const DEFAULT_TEMPERATURE: f32 = 0.7;

/// GGUF token type of control tokens (`<|im_start|>` and the like), as llama.cpp defines it.
const TOKEN_TYPE_CONTROL: i32 = 3;

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Exactly as stored in the file (the default): the engine's own kernels multiply Q4_0, Q4_1 and
    /// Q8_0 blocks as they are; other types are converted to 8 bits a weight while loading.
    #[default]
    AsStored,
    /// Q4_1, Q5_0 and Q5_1 matrices are converted to Q8_0 while loading; other types stay as stored.
    /// This was the default while the engine used candle's quantized kernels (scalar code for those
    /// three types); it now only costs memory and reads (8.5 instead of 5 or 6 bits a weight), and
    /// is kept for comparison (`cargo bench -p moat-llm --bench local -- --weights q8_0`).
    Q8_0ForScalarTypes,
}

/// A GGUF model loaded once and served by its own worker thread.
pub struct LocalModel {
    name: String,
    path: PathBuf,
    tokenizer: Tokenizer,
    /// The raw bytes each token id stands for (empty for control tokens), for streaming decode.
    token_bytes: Arc<Vec<Vec<u8>>>,
    chat: minijinja::Environment<'static>,
    chat_template: String,
    bos_token: String,
    eos_token: String,
    system_prompt: Option<String>,
    max_tokens: u32,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    context_length: u32,
    queue_capacity: usize,
    jobs: SyncSender<Job>,
    generated: Arc<AtomicU64>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("context_length", &self.context_length)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

/// One request as the worker sees it: already templated and tokenized.
struct Job {
    prompt: Vec<u32>,
    max_tokens: u32,
    temperature: f64,
    top_p: Option<f64>,
    seed: u64,
    deltas: Option<DeltaSender>,
    cancel: Arc<AtomicBool>,
    started: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Completion, LlmError>>,
}

/// Sets the job's cancel flag when the `generate` future is dropped (or finishes), so that the worker
/// stops spending time on an answer nobody waits for.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the worker thread owns.
struct Worker {
    name: String,
    model: Llama,
    token_bytes: Arc<Vec<Vec<u8>>>,
    stop_ids: Vec<u32>,
    generated: Arc<AtomicU64>,
}

impl LocalModel {
    /// Loads a GGUF file (blocking: reads the weights) and starts its worker thread, with the default
    /// [`WeightFormat`].
    pub fn load(
        name: &str,
        endpoint: &LocalEndpoint,
        sampling: &Sampling,
    ) -> Result<LocalModel, LlmError> {
        LocalModel::load_with(name, endpoint, sampling, WeightFormat::default())
    }

    /// [`LocalModel::load`] with a choice of in-memory weight format.
    pub fn load_with(
        name: &str,
        endpoint: &LocalEndpoint,
        sampling: &Sampling,
        format: WeightFormat,
    ) -> Result<LocalModel, LlmError> {
        let path = endpoint.path.clone();
        let fail = |message: String| LlmError::Engine {
            model: name.to_string(),
            message: format!("{}: {message}", path.display()),
        };
        let mut file = File::open(&path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| fail(format!("not a readable GGUF file: {e}")))?;
        let metadata = GgufMetadata(&content.metadata);

        let architecture = metadata.string("general.architecture").map_err(&fail)?;
        if architecture != "llama" {
            return Err(fail(format!(
                "architecture `{architecture}` is not supported (only llama-family models are)"
            )));
        }
        let model_context = metadata.u32("llama.context_length").map_err(&fail)?;
        let tokens = TokenizerParts::read(&metadata).map_err(&fail)?;
        let chat_template = metadata
            .string("tokenizer.chat_template")
            .map_err(&fail)?
            .to_string();

        let tokenizer = tokens.tokenizer().map_err(&fail)?;
        let token_bytes = Arc::new(tokens.token_bytes());
        let token_text = |id: Option<u32>| {
            id.and_then(|id| tokens.tokens.get(id as usize).cloned())
                .unwrap_or_default()
        };
        let bos_token = token_text(tokens.bos);
        let eos_token = token_text(tokens.eos);
        // The model ends its turn with the eos token; ChatML models may also emit `<|im_end|>` or
        // `<|endoftext|>` when eos names the other one, so all of them end the answer.
        let mut stop_ids: Vec<u32> = tokens.eos.into_iter().collect();
        for stop in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = tokenizer.token_to_id(stop) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }

        let mut chat = chat_environment();
        chat.add_template_owned("chat", chat_template.clone())
            .map_err(|e| fail(format!("the chat template does not parse: {e}")))?;

        let convert = format == WeightFormat::Q8_0ForScalarTypes
            && content
                .tensor_infos
                .values()
                .any(|info| is_scalar_type(info.ggml_dtype));
        let model = if convert {
            requantized(content, &mut file)
                .and_then(|(content, mut reader)| Llama::from_gguf(&content, &mut reader))
        } else {
            Llama::from_gguf(&content, &mut file)
        }
        .map_err(|e| fail(format!("cannot load the weights: {e}")))?;

        // The rotary tables are computed for MAX_POSITIONS positions only, so a longer context
        // would fail mid-answer rather than at the door.
        let context_length = endpoint
            .max_context
            .min(model_context)
            .min(MAX_POSITIONS as u32)
            .max(1);
        let queue_capacity = endpoint.queue.max(1);
        let (jobs, inbox) = sync_channel::<Job>(queue_capacity);
        let generated = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            name: name.to_string(),
            model,
            token_bytes: token_bytes.clone(),
            stop_ids,
            generated: generated.clone(),
        };
        std::thread::Builder::new()
            .name(format!("moat-llm {name}"))
            .spawn(move || worker.run(inbox))
            .map_err(|e| fail(format!("cannot start the worker thread: {e}")))?;

        Ok(LocalModel {
            name: name.to_string(),
            path,
            tokenizer,
            token_bytes,
            chat,
            chat_template,
            bos_token,
            eos_token,
            system_prompt: sampling.system_prompt.clone(),
            max_tokens: sampling.max_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: sampling.seed,
            context_length,
            queue_capacity,
            jobs,
            generated,
        })
    }

    /// The prompt text for a conversation: the configured system prompt first when the conversation
    /// has no system turn, then the model's own chat template with the generation prompt added.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        if messages.is_empty() {
            return Err(LlmError::InvalidRequest(
                "the conversation has no messages".to_string(),
            ));
        }
        let mut turns: Vec<minijinja::Value> = Vec::with_capacity(messages.len() + 1);
        if let Some(system) = &self.system_prompt {
            if !messages.iter().any(|m| m.role == Role::System) {
                turns.push(message_value(Role::System, system));
            }
        }
        turns.extend(messages.iter().map(|m| message_value(m.role, &m.content)));
        let template = self
            .chat
            .get_template("chat")
            .map_err(|e| self.engine_error(format!("chat template: {e}")))?;
        template
            .render(minijinja::context! {
                messages => turns,
                add_generation_prompt => true,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|e| LlmError::InvalidRequest(format!("the chat template refused: {e:#}")))
    }

    /// Prompt plus answer, in tokens: the smaller of the registry's `max_context` and the model's.
    pub fn context_length(&self) -> u32 {
        self.context_length
    }

    /// The Jinja chat template stored in the GGUF file.
    pub fn chat_template(&self) -> &str {
        &self.chat_template
    }

    /// The GGUF file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's name in the registry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Token ids for text; special tokens written in the text (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.tokenizer
            .encode(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|e| self.engine_error(format!("tokenizer: {e}")))
    }

    /// Text for token ids, control tokens left out (invalid UTF-8 shown as U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter_map(|&id| self.token_bytes.get(id as usize))
            .flatten()
            .copied()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Tokens generated since loading, over all requests (cancelled ones included).
    pub fn tokens_generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    fn engine_error(&self, message: String) -> LlmError {
        LlmError::Engine {
            model: self.name.clone(),
            message,
        }
    }

    /// Templates, tokenizes and checks a request; the worker only generates.
    fn prepare(
        &self,
        request: &GenerationRequest,
        deltas: Option<DeltaSender>,
        cancel: Arc<AtomicBool>,
        started: Instant,
        reply: tokio::sync::oneshot::Sender<Result<Completion, LlmError>>,
    ) -> Result<Job, LlmError> {
        let prompt_text = self.render_chat(&request.messages)?;
        let prompt = self.encode(&prompt_text)?;
        let context = self.context_length as usize;
        if prompt.len() + 1 > context {
            return Err(LlmError::InvalidRequest(format!(
                "the prompt is {} tokens; with at least 1 answer token that exceeds the context of {} \
                 tokens of model {}",
                prompt.len(),
                context,
                self.name
            )));
        }
        let wanted = request.max_tokens.unwrap_or(self.max_tokens);
        if wanted == 0 {
            return Err(LlmError::InvalidRequest(
                "max_tokens must be at least 1".to_string(),
            ));
        }
        let max_tokens = wanted.min((context - prompt.len()) as u32);
        let temperature = request
            .temperature
            .or(self.temperature)
            .unwrap_or(DEFAULT_TEMPERATURE);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(LlmError::InvalidRequest(format!(
                "temperature {temperature} is not a non-negative number"
            )));
        }
        let top_p = request.top_p.or(self.top_p);
        if let Some(p) = top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(LlmError::InvalidRequest(format!(
                    "top_p {p} is not in (0, 1]"
                )));
            }
        }
        Ok(Job {
            prompt,
            max_tokens,
            temperature: f64::from(temperature),
            top_p: top_p.map(f64::from),
            seed: request.seed.or(self.seed).unwrap_or_else(rand::random),
            deltas,
            cancel,
            started,
            reply,
        })
    }
}

#[async_trait::async_trait]
impl Engine for LocalModel {
    async fn generate(
        &self,
        request: GenerationRequest,
        deltas: Option<DeltaSender>,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = self.prepare(&request, deltas, cancel, started, reply)?;
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(LlmError::Busy {
                    model: self.name.clone(),
                    capacity: self.queue_capacity,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(self.engine_error("the worker thread has stopped".to_string()))
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(self.engine_error("the worker thread dropped the request".to_string()))
        })
    }
}

impl Worker {
    fn run(mut self, inbox: Receiver<Job>) {
        while let Ok(job) = inbox.recv() {
            if job.cancel.load(Ordering::Relaxed) {
                // The caller went away while the job waited in the queue.
                continue;
            }
            let Job {
                prompt,
                max_tokens,
                temperature,
                top_p,
                seed,
                deltas,
                cancel,
                started,
                reply,
            } = job;
            // candle's CPU kernels run on its own thread pool; an answer is computed inside it
            // so that its many short parallel sections start on warm threads. Only the answer,
            // never the wait for the next job: a worker parked in the pool would hold one of its
            // threads for good, and with as many local models as cores the next one would wait
            // forever for a thread (it did, in the tests, with two models on two cores).
            let result = Device::Cpu.with_context(|| {
                self.answer(
                    &prompt,
                    max_tokens,
                    temperature,
                    top_p,
                    seed,
                    deltas.as_ref(),
                    &cancel,
                    started,
                )
            });
            // The caller may have gone away meanwhile; nothing to do then.
            let _ = reply.send(result);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        prompt: &[u32],
        max_tokens: u32,
        temperature: f64,
        top_p: Option<f64>,
        seed: u64,
        deltas: Option<&DeltaSender>,
        cancel: &AtomicBool,
        started: Instant,
    ) -> Result<Completion, LlmError> {
        let fail = |e: candle_core::Error| LlmError::Engine {
            model: self.name.clone(),
            message: e.to_string(),
        };
        let mut sampler = LogitsProcessor::new(seed, Some(temperature), top_p);
        // Position 0 starts a fresh sequence; clearing first also frees the previous request's
        // keys and values while this one's prompt is processed.
        self.model.clear_cache();
        let logits = self.model.forward(prompt, 0).map_err(fail)?;
        let mut next = sampler.sample(&logits).map_err(fail)?;

        let mut text = String::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut completion_tokens: u32 = 0;
        let mut time_to_first_token = None;
        let finish_reason = loop {
            if self.stop_ids.contains(&next) {
                break FinishReason::Stop;
            }
            completion_tokens += 1;
            self.generated.fetch_add(1, Ordering::Relaxed);
            if let Some(bytes) = self.token_bytes.get(next as usize) {
                pending.extend_from_slice(bytes);
            }
            let delta = take_complete_utf8(&mut pending);
            if !delta.is_empty() {
                time_to_first_token.get_or_insert_with(|| started.elapsed());
                text.push_str(&delta);
                if let Some(sender) = deltas {
                    send_delta(sender, delta, cancel)?;
                }
            }
            if completion_tokens >= max_tokens {
                break FinishReason::Length;
            }
            if cancel.load(Ordering::Relaxed) || deltas.is_some_and(|d| d.is_closed()) {
                return Err(LlmError::Cancelled);
            }
            let position = prompt.len() + completion_tokens as usize - 1;
            let logits = self.model.forward(&[next], position).map_err(fail)?;
            next = sampler.sample(&logits).map_err(fail)?;
        };
        // Bytes left over are the start of a character the answer was cut before; they are dropped
        // so that the text holds no U+FFFD and still equals the concatenated deltas.
        let prompt_tokens = prompt.len() as u32;
        Ok(Completion {
            text,
            finish_reason,
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            }),
            time_to_first_token,
            latency: started.elapsed(),
        })
    }
}

/// Sends one delta, waiting while the channel is full but giving up as soon as the receiver is
/// closed or the caller's future is dropped (a blocking send would wait for a reader forever).
fn send_delta(sender: &DeltaSender, delta: String, cancel: &AtomicBool) -> Result<(), LlmError> {
    let mut delta = delta;
    loop {
        match sender.try_send(delta) {
            Ok(()) => return Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                return Err(LlmError::Cancelled)
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(LlmError::Cancelled);
                }
                delta = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Takes the longest prefix of `pending` made of whole UTF-8 characters and leaves the bytes of an
/// incomplete last character for the next token. Byte-level BPE splits multi-byte characters (emoji,
/// CJK) across tokens, so decoding token by token would otherwise send U+FFFD halves. Bytes that can
/// never become valid UTF-8 are replaced by U+FFFD, once, rather than held back forever.
fn take_complete_utf8(pending: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&pending[start..]) {
            Ok(valid) => {
                out.push_str(valid);
                start = pending.len();
                break;
            }
            Err(error) => {
                let valid_end = start + error.valid_up_to();
                // from_utf8 has just said that these bytes are valid, so this cannot fail.
                out.push_str(std::str::from_utf8(&pending[start..valid_end]).unwrap_or_default());
                match error.error_len() {
                    // An incomplete character at the end: keep it for later.
                    None => {
                        start = valid_end;
                        break;
                    }
                    Some(invalid) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        start = valid_end + invalid;
                    }
                }
            }
        }
    }
    pending.drain(..start);
    out
}

/// GPT-2's byte-level alphabet: each byte is shown as a printable character in the vocabulary (the
/// printable ASCII and Latin-1 bytes as themselves, the rest shifted to U+0100 and up).
fn byte_level_chars() -> HashMap<char, u8> {
    let mut printable: Vec<u8> = (b'!'..=b'~').collect();
    printable.extend(0xA1u8..=0xAC);
    printable.extend(0xAEu8..=0xFF);
    let mut map: HashMap<char, u8> = printable.iter().map(|&b| (char::from(b), b)).collect();
    let mut shifted = 0u32;
    for byte in 0u8..=255 {
        if !printable.contains(&byte) {
            let c = char::from_u32(256 + shifted).expect("U+0100..U+0143 are characters");
            map.insert(c, byte);
            shifted += 1;
        }
    }
    map
}

/// The raw bytes of a byte-level BPE token (characters outside the alphabet kept as UTF-8).
fn byte_level_bytes(token: &str, alphabet: &HashMap<char, u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(token.len());
    for c in token.chars() {
        match alphabet.get(&c) {
            Some(&b) => bytes.push(b),
            None => {
                let mut buffer = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    bytes
}

fn message_value(role: Role, content: &str) -> minijinja::Value {
    minijinja::context! { role => role.as_str(), content => content }
}

/// A minijinja environment with what Hugging Face chat templates expect of Jinja: `raise_exception`
/// (templates refuse conversations they cannot render with it) and `tojson` (the `json` feature).
fn chat_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.add_function(
        "raise_exception",
        |message: String| -> Result<(), minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    // Templates are trusted text from the model file, but whitespace matters to the prompt, so the
    // environment keeps Jinja's defaults (no trimming) as transformers does.
    env
}

/// Typed access to GGUF metadata with errors that name the key.
struct GgufMetadata<'a>(&'a HashMap<String, gguf_file::Value>);

impl GgufMetadata<'_> {
    fn get(&self, key: &str) -> Result<&gguf_file::Value, String> {
        self.0
            .get(key)
            .ok_or_else(|| format!("metadata key `{key}` is missing"))
    }

    fn string(&self, key: &str) -> Result<&str, String> {
        self.get(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|e| format!("metadata key `{key}`: {e}"))
    }

    fn u32(&self, key: &str) -> Result<u32, String> {
        self.get(key)?
            .to_u32()
            .map_err(|e| format!("metadata key `{key}`: {e}"))
    }

    fn optional_u32(&self, key: &str) -> Result<Option<u32>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(value) => value
                .to_u32()
                .map(Some)
                .map_err(|e| format!("metadata key `{key}`: {e}")),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        self.get(key)?
            .to_vec()
            .map_err(|e| format!("metadata key `{key}`: {e}"))?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| format!("metadata key `{key}`: {e}"))
            })
            .collect()
    }
}

/// The tokenizer as the GGUF file describes it.
struct TokenizerParts {
    tokens: Vec<String>,
    token_types: Vec<i32>,
    merges: Vec<(String, String)>,
    pre: String,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl TokenizerParts {
    fn read(metadata: &GgufMetadata<'_>) -> Result<TokenizerParts, String> {
        let model = metadata.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(format!(
                "tokenizer `{model}` is not supported (only byte-level BPE, `gpt2`, is)"
            ));
        }
        let tokens = metadata.strings("tokenizer.ggml.tokens")?;
        let token_types = match metadata.0.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(value) => value
                .to_vec()
                .map_err(|e| format!("metadata key `tokenizer.ggml.token_type`: {e}"))?
                .iter()
                .map(|v| v.to_i32().unwrap_or(1))
                .collect(),
        };
        let merges = metadata
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(left, right)| (left.to_string(), right.to_string()))
                    .ok_or_else(|| format!("merge `{merge}` is not two tokens"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let pre = metadata
            .string("tokenizer.ggml.pre")
            .unwrap_or("default")
            .to_string();
        Ok(TokenizerParts {
            tokens,
            token_types,
            merges,
            pre,
            bos: metadata.optional_u32("tokenizer.ggml.bos_token_id")?,
            eos: metadata.optional_u32("tokenizer.ggml.eos_token_id")?,
        })
    }

    fn is_control(&self, id: usize) -> bool {
        self.token_types.get(id) == Some(&TOKEN_TYPE_CONTROL)
    }

    fn tokenizer(&self) -> Result<Tokenizer, String> {
        let vocab: tokenizers::models::bpe::Vocab = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, self.merges.clone())
            .build()
            .map_err(|e| format!("cannot build the BPE tokenizer: {e}"))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        // The StarCoder family of pre-tokenizers (SmolLM's among them) splits numbers into single
        // digits before the GPT-2 split, as llama.cpp and the model's own tokenizer.json do.
        let splits_digits = matches!(
            self.pre.as_str(),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b"
        );
        let pre_tokenizer: PreTokenizerWrapper = if splits_digits {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        } else {
            byte_level.into()
        };
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = self
            .tokens
            .iter()
            .enumerate()
            .filter(|(id, _)| self.is_control(*id))
            .map(|(_, token)| AddedToken::from(token.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(specials)
            .map_err(|e| format!("cannot add the special tokens: {e}"))?;
        Ok(tokenizer)
    }

    fn token_bytes(&self) -> Vec<Vec<u8>> {
        let alphabet = byte_level_chars();
        self.tokens
            .iter()
            .enumerate()
            .map(|(id, token)| {
                if self.is_control(id) {
                    Vec::new()
                } else {
                    byte_level_bytes(token, &alphabet)
                }
            })
            .collect()
    }
}

/// Rewrites the file's Q4_1, Q5_0 and Q5_1 matrices as Q8_0 into an in-memory GGUF that candle then
/// loads as usual.
pub(crate) fn requantized(
    content: gguf_file::Content,
    file: &mut File,
) -> candle_core::Result<(gguf_file::Content, Cursor<Vec<u8>>)> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(file, name, &Device::Cpu)?;
        let tensor = if is_scalar_type(tensor.dtype()) {
            QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
        } else {
            tensor
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buffer = Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &tensor_refs)?;
    buffer.set_position(0);
    let content = gguf_file::Content::read(&mut buffer)?;
    Ok((content, buffer))
}

/// Quantized types whose matrix products candle 0.11 computes with scalar code on x86 and Arm.
fn is_scalar_type(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_characters_pass_and_a_split_one_waits() {
        // "é" is C3 A9; "😀" is F0 9F 98 80.
        let mut pending = b"caf\xC3".to_vec();
        assert_eq!(take_complete_utf8(&mut pending), "caf");
        assert_eq!(pending, b"\xC3");
        pending.extend_from_slice(b"\xA9 \xF0\x9F");
        assert_eq!(take_complete_utf8(&mut pending), "é ");
        assert_eq!(pending, b"\xF0\x9F");
        pending.extend_from_slice(b"\x98");
        assert_eq!(take_complete_utf8(&mut pending), "");
        pending.extend_from_slice(b"\x80!");
        assert_eq!(take_complete_utf8(&mut pending), "😀!");
        assert!(pending.is_empty());
    }

    #[test]
    fn bytes_that_can_never_be_utf8_are_replaced_once() {
        let mut pending = b"a\xFFb\xC3".to_vec();
        assert_eq!(take_complete_utf8(&mut pending), "a\u{FFFD}b");
        assert_eq!(pending, b"\xC3");
        // A lead byte followed by a non-continuation byte is invalid, not incomplete.
        let mut pending = b"\xC3x".to_vec();
        assert_eq!(take_complete_utf8(&mut pending), "\u{FFFD}x");
        assert!(pending.is_empty());
    }

    #[test]
    fn streaming_byte_by_byte_rebuilds_the_text() {
        let text = "Grüße, 世界 🌍!";
        let mut pending = Vec::new();
        let mut out = String::new();
        for &byte in text.as_bytes() {
            pending.push(byte);
            let delta = take_complete_utf8(&mut pending);
            assert!(!delta.contains('\u{FFFD}'));
            out.push_str(&delta);
        }
        assert_eq!(out, text);
        assert!(pending.is_empty());
    }

    #[test]
    fn the_byte_level_alphabet_covers_every_byte_once() {
        let alphabet = byte_level_chars();
        assert_eq!(alphabet.len(), 256);
        let mut bytes: Vec<u8> = alphabet.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        // GPT-2's well-known stand-ins: space is Ġ, newline is Ċ.
        assert_eq!(alphabet[&'Ġ'], b' ');
        assert_eq!(alphabet[&'Ċ'], b'\n');
        assert_eq!(byte_level_bytes("ĠParis", &alphabet), b" Paris");
        // "é" as the two byte-level characters for C3 and A9.
        assert_eq!(byte_level_bytes("Ã©", &alphabet), "é".as_bytes());
    }
}
