//! `moat bench proxy` and `moat bench arena`: what Moat adds to the time to the first token when it
//! stands between a client and an OpenAI-compatible model server.
//!
//! Both start a fake upstream that speaks the OpenAI streaming protocol (a role chunk at once, then
//! `--tokens` content chunks, the k-th at k × `--token-ms` after the request arrived, a finish chunk,
//! a usage chunk and `[DONE]`), and start this same binary as a separate `moat serve` process whose
//! registry points `kind = "openai"` models at it. In the same run they measure the upstream directly
//! (the baseline) and through Moat, under the same number of concurrent streams:
//!
//! - `proxy`: N streamed `POST /v1/chat/completions` through Moat (with an API key made by
//!   `moat key create`), against N streamed requests straight to the upstream;
//! - `arena`: N raters each start one live battle (`/rpc/arena_prompt` with `live=1`) and read its
//!   event stream; the time to the first `a`/`b` text event counts from the moment the prompt POST was
//!   sent. The baseline is 2N direct streams, since each battle is two upstream streams.
//!
//! The added latency is the difference of the two distributions' percentiles (p50 of proxied minus p50
//! of direct, p99 minus p99): single requests cannot be paired across the two paths.
//!
//! The upstream runs on a thread and tokio runtime of its own, so that its timers and writes are not
//! queued behind the load generator's tasks on the same scheduler; the OS shares the cores between
//! the three (bench, upstream, server) as it would between three processes, and the direct and the
//! proxied phase see the same arrangement. Starts are spread evenly over a ramp (half a stream's
//! length by default), so that all N streams are open at once at its end without a connection
//! storm at one instant; each path gets one unmeasured warm-up round first, so the measured round
//! reuses kept-alive connections on both hops, as a server under steady load does.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use tokio::time::Instant;

use crate::client::RaterClient;

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyBenchArgs {
    /// Concurrent streams (each path).
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Content chunks the fake upstream streams per answer.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Milliseconds between the upstream's chunks (and before the first one).
    #[arg(long, default_value_t = 20)]
    pub token_ms: u64,
    /// Spread the starts over this many milliseconds (default: half a stream's length; 0: all at once).
    #[arg(long)]
    pub ramp_ms: Option<u64>,
    /// Authenticate with the admin token instead of an API key (no key lookup in the database).
    #[arg(long)]
    pub admin_token: bool,
    /// Measured rounds, each a direct round followed by a proxied one (after one unmeasured
    /// warm-up round of each); the report gives the median round's figures and every round's.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// How the server and the load generator (clients, fake upstream) share the CPUs: `split` (the
    /// default) puts the server on half of them and the load generator on the other half, as if the
    /// clients were another machine; `shared` runs everything on every CPU.
    #[arg(long, value_enum, default_value_t = crate::bench_cpus::CpuMode::Split)]
    pub cpus: crate::bench_cpus::CpuMode,
    /// The `moat` binary to start as the server (default: this one), e.g. an older build to
    /// compare against with the same load generator.
    #[arg(long)]
    pub server_binary: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ArenaBenchArgs {
    /// Concurrent battles (one rater each).
    #[arg(long, default_value_t = 1000)]
    pub battles: usize,
    /// Content chunks the fake upstream streams per answer.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Milliseconds between the upstream's chunks (and before the first one).
    #[arg(long, default_value_t = 20)]
    pub token_ms: u64,
    /// Spread the starts over this many milliseconds (default: half a stream's length; 0: all at once).
    #[arg(long)]
    pub ramp_ms: Option<u64>,
    /// How the server and the load generator (clients, fake upstream) share the CPUs: `split` (the
    /// default) puts the server on half of them and the load generator on the other half, as if the
    /// clients were another machine; `shared` runs everything on every CPU.
    #[arg(long, value_enum, default_value_t = crate::bench_cpus::CpuMode::Split)]
    pub cpus: crate::bench_cpus::CpuMode,
    /// The `moat` binary to start as the server (default: this one), e.g. an older build to
    /// compare against with the same load generator.
    #[arg(long)]
    pub server_binary: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Percentiles {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if values.is_empty() {
                f64::NAN
            } else {
                values[((values.len() - 1) as f64 * q).round() as usize]
            }
        };
        Percentiles {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// One measured round of N concurrent streams on one path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamPhase {
    pub streams: usize,
    /// Streams that received every content chunk and `[DONE]`.
    pub completed: usize,
    pub failed: usize,
    /// Most streams open at one moment (the concurrency actually reached).
    pub max_open: usize,
    pub seconds: f64,
    /// Request sent → first body bytes (Moat sends its role chunk before the upstream answers).
    pub first_byte: Percentiles,
    /// Request sent → first chunk with non-empty content.
    pub first_content: Percentiles,
    pub first_error: Option<String>,
    /// CPU time of this process (the client and the fake upstream) during the round.
    pub bench_cpu_s: f64,
    /// CPU time of the server process during the round (proxied rounds only).
    pub server_cpu_s: Option<f64>,
}

/// The server process's memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ServerMemory {
    /// VmRSS before any stream (after start-up and set-up).
    pub idle_rss_mb: f64,
    /// Highest VmRSS sampled (every 10 ms) while streams were open.
    pub peak_rss_mb: f64,
    /// VmHWM at the end.
    pub hwm_mb: f64,
    /// (peak − idle) / N.
    pub per_open_kb: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProxyBenchReport {
    pub streams: usize,
    pub tokens: usize,
    pub token_ms: u64,
    pub ramp_ms: u64,
    pub auth: String,
    /// Which CPUs the server and the load generator ran on.
    pub cpus: String,
    pub direct: StreamPhase,
    pub proxied: StreamPhase,
    /// p50 of proxied minus p50 of direct time to first content (median over the rounds).
    pub added_p50_ms: f64,
    /// p99 of proxied minus p99 of direct time to first content (median over the rounds).
    pub added_p99_ms: f64,
    /// Each measured round's figures, in the order run.
    pub rounds: Vec<RoundAdded>,
    pub server: ServerMemory,
    /// `/proc/loadavg` at the start and at the end.
    pub load_average: [String; 2],
    pub total_seconds: f64,
}

/// One measured round of `moat bench proxy`: a direct round and the proxied round after it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RoundAdded {
    pub direct_p99_ms: f64,
    pub proxied_p99_ms: f64,
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    /// The server's CPU time during the proxied round.
    pub server_cpu_s: f64,
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ArenaBenchReport {
    pub battles: usize,
    pub tokens: usize,
    pub token_ms: u64,
    pub ramp_ms: u64,
    /// Which CPUs the server and the load generator ran on.
    pub cpus: String,
    /// 2N streams straight to the upstream (each battle is two upstream streams).
    pub direct: StreamPhase,
    pub completed: usize,
    pub void: usize,
    /// Battles that could not be started or whose event stream broke.
    pub failed: usize,
    pub max_open: usize,
    pub seconds: f64,
    /// Prompt POST sent → battle id received.
    pub prompt_post: Percentiles,
    /// Prompt POST sent → first `a` or `b` text event.
    pub first_text: Percentiles,
    /// Prompt POST sent → both sides have sent text.
    pub both_sides: Percentiles,
    /// p50 of the rater's first text minus p50 of the direct first content.
    pub added_p50_ms: f64,
    /// p99 of the rater's first text minus p99 of the direct first content.
    pub added_p99_ms: f64,
    /// CPU time of this process (raters and fake upstream) during the measured round.
    pub bench_cpu_s: f64,
    /// CPU time of the server process during the measured round.
    pub server_cpu_s: f64,
    pub server: ServerMemory,
    pub load_average: [String; 2],
    pub first_error: Option<String>,
    pub total_seconds: f64,
}

/// A fake OpenAI-compatible server on a thread and runtime of its own; stopped when dropped.
pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct Pace {
    /// Every event of an answer, as the bytes sent: role, contents, finish, usage, `[DONE]`.
    events: Arc<Vec<Bytes>>,
    tokens: usize,
    token: Duration,
}

impl Pace {
    fn new(tokens: usize, token_ms: u64) -> Pace {
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                "model": "bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = vec![chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        )];
        for k in 1..=tokens {
            events.push(chunk(
                serde_json::json!({ "content": format!("tok{k} ") }),
                None,
            ));
        }
        events.push(chunk(serde_json::json!({}), Some("stop")));
        events.push(serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
            "created": 1, "model": "bench", "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}}));
        let mut bytes: Vec<Bytes> = events
            .iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .collect();
        bytes.push(Bytes::from_static(b"data: [DONE]\n\n"));
        Pace {
            events: Arc::new(bytes),
            tokens,
            token: Duration::from_millis(token_ms),
        }
    }
}

async fn fake_chat(State(pace): State<Pace>, _body: Bytes) -> Response {
    let start = Instant::now();
    let stream = futures::stream::unfold(0usize, move |k| {
        let pace = pace.clone();
        async move {
            let event = pace.events.get(k)?.clone();
            if (1..=pace.tokens).contains(&k) {
                // On a fixed schedule from the request, so a late wake-up does not delay the rest.
                tokio::time::sleep_until(start + pace.token * k as u32).await;
            }
            Some((Ok::<_, Infallible>(event), k + 1))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

impl FakeUpstream {
    pub fn start(tokens: usize, token_ms: u64) -> anyhow::Result<FakeUpstream> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel::<std::io::Result<std::net::SocketAddr>>();
        let thread = std::thread::Builder::new()
            .name("fake-upstream".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fake-upstream")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bound = (|| {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.bind("127.0.0.1:0".parse().expect("an address"))?;
                        // Room for a whole round of connections arriving at once.
                        socket.listen(4096)
                    })();
                    let listener = match bound {
                        Ok(listener) => listener,
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready.send(listener.local_addr());
                    let app = Router::new()
                        .route("/v1/chat/completions", post(fake_chat))
                        .with_state(Pace::new(tokens, token_ms));
                    // As model servers do (uvicorn, vLLM): small writes go out at once.
                    use axum::serve::ListenerExt;
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        _ = std::future::IntoFuture::into_future(axum::serve(listener, app)) => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_background();
            })?;
        let address = address
            .recv()
            .map_err(|_| anyhow::anyhow!("the fake upstream's thread ended"))??;
        Ok(FakeUpstream {
            base_url: format!("http://{address}/v1"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The registry: two models on the fake upstream, with room for every stream of the run.
fn registry_text(upstream: &str, concurrency: usize) -> String {
    ["bench-a", "bench-b"]
        .iter()
        .map(|name| {
            format!(
                "[[model]]\nname = \"{name}\"\nprovider = \"Bench\"\nopenness = \"open\"\nkind = \"openai\"\n\
                 base_url = \"{upstream}\"\nmodel = \"{name}\"\nmax_concurrency = {concurrency}\nretries = 0\n\n"
            )
        })
        .collect()
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User plus system CPU seconds of a process (`self` or a pid), from `/proc/PID/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The fields after the command name, which is in parentheses and may hold spaces; utime and
    // stime are the 14th and 15th fields, in clock ticks (USER_HZ, 100 on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn check_open_files(needed: usize) -> anyhow::Result<()> {
    if let Some(limit) = open_file_limit() {
        if (limit as usize) < needed {
            anyhow::bail!(
                "this run needs about {needed} open files and the limit is {limit}; raise it first \
                 (e.g. `ulimit -n 65536` in the same shell)"
            );
        }
    }
    Ok(())
}

/// Samples the server's VmRSS every 10 ms while it runs, keeping the highest.
struct RssSampler {
    peak_kb: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let peak = peak_kb.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(kb) = status_kb(pid, "VmRSS:") {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        RssSampler { peak_kb, task }
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.peak_kb.load(Ordering::Relaxed)
    }
}

fn memory(pid: u32, idle_kb: u64, peak_kb: u64, open: usize) -> ServerMemory {
    let mb = |kb: u64| kb as f64 / 1024.0;
    ServerMemory {
        idle_rss_mb: mb(idle_kb),
        peak_rss_mb: mb(peak_kb),
        hwm_mb: status_kb(pid, "VmHWM:").map(mb).unwrap_or(f64::NAN),
        per_open_kb: peak_kb.saturating_sub(idle_kb) as f64 / open.max(1) as f64,
    }
}

/// Server-sent events, split as they arrive: `(event, data)` per complete block.
#[derive(Default)]
struct SseBlocks {
    buffer: String,
}

impl SseBlocks {
    fn push(&mut self, bytes: &[u8], mut each: impl FnMut(&str, &str)) {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut name = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim();
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                each(name, &data);
            }
        }
    }
}

/// Whether a chat-completion chunk carries text (the role chunk's content is empty).
fn has_content(data: &str) -> bool {
    data.match_indices("\"content\":\"")
        .any(|(at, pattern)| !data[at + pattern.len()..].starts_with('"'))
}

#[derive(Debug, Default)]
struct StreamTiming {
    first_byte_ms: Option<f64>,
    first_content_ms: Option<f64>,
    contents: usize,
    done: bool,
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// One streamed chat completion, timed from the moment the request is sent.
async fn timed_stream(request: reqwest::RequestBuilder) -> Result<StreamTiming, String> {
    let start = Instant::now();
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {body}"));
    }
    let mut timing = StreamTiming::default();
    let mut blocks = SseBlocks::default();
    while let Some(bytes) = response.chunk().await.map_err(|e| e.to_string())? {
        timing.first_byte_ms.get_or_insert_with(|| ms_since(start));
        blocks.push(&bytes, |_, data| {
            if data == "[DONE]" {
                timing.done = true;
            } else if has_content(data) {
                timing.contents += 1;
                timing
                    .first_content_ms
                    .get_or_insert_with(|| ms_since(start));
            }
        });
    }
    Ok(timing)
}

/// Counts open tasks and remembers the most open at once.
#[derive(Default)]
struct OpenGauge {
    open: AtomicUsize,
    max: AtomicUsize,
}

impl OpenGauge {
    fn enter(&self) {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
    }
    fn leave(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn start_offset(index: usize, count: usize, ramp: Duration) -> Duration {
    ramp.mul_f64(index as f64 / count.max(1) as f64)
}

/// N concurrent streams, started evenly over `ramp`; `request(i)` builds the i-th request.
async fn stream_round(
    count: usize,
    ramp: Duration,
    tokens: usize,
    request: impl Fn(usize) -> reqwest::RequestBuilder,
) -> StreamPhase {
    let gauge = Arc::new(OpenGauge::default());
    let begin = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for index in 0..count {
        let request = request(index);
        let gauge = gauge.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(begin + start_offset(index, count, ramp)).await;
            gauge.enter();
            let result = timed_stream(request).await;
            gauge.leave();
            result
        }));
    }
    let (mut first_byte, mut first_content) = (Vec::new(), Vec::new());
    let (mut completed, mut failed, mut first_error) = (0, 0, None);
    for task in tasks {
        match task.await {
            Ok(Ok(timing)) if timing.done && timing.contents == tokens => {
                completed += 1;
                first_byte.extend(timing.first_byte_ms);
                first_content.extend(timing.first_content_ms);
            }
            Ok(Ok(timing)) => {
                failed += 1;
                first_error.get_or_insert(format!(
                    "incomplete stream: {} of {tokens} chunks, done {}",
                    timing.contents, timing.done
                ));
            }
            Ok(Err(error)) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    StreamPhase {
        streams: count,
        completed,
        failed,
        max_open: gauge.max.load(Ordering::Relaxed),
        seconds: begin.elapsed().as_secs_f64(),
        first_byte: Percentiles::of(first_byte),
        first_content: Percentiles::of(first_content),
        first_error,
        bench_cpu_s: f64::NAN,
        server_cpu_s: None,
    }
}

fn stream_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?)
}

fn chat_body(model: &str, tokens: usize) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say something for the benchmark."}],
        "stream": true,
        "max_tokens": tokens,
    })
    .to_string()
}

/// Streamed requests straight to the upstream: the baseline's.
struct DirectRequests {
    http: reqwest::Client,
    url: String,
    body: String,
}

impl DirectRequests {
    fn new(upstream: &str, tokens: usize) -> anyhow::Result<DirectRequests> {
        Ok(DirectRequests {
            http: stream_client()?,
            url: format!("{upstream}/chat/completions"),
            body: chat_body("bench-a", tokens),
        })
    }

    fn request(&self) -> reqwest::RequestBuilder {
        self.http
            .post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(self.body.clone())
    }
}

/// The direct baseline: a warm-up round, then a measured one, straight to the upstream.
async fn direct_phase(
    upstream: &str,
    count: usize,
    ramp: Duration,
    tokens: usize,
) -> anyhow::Result<StreamPhase> {
    let direct = DirectRequests::new(upstream, tokens)?;
    let request = |_: usize| direct.request();
    stream_round(count, ramp, tokens, request).await;
    let cpu = cpu_seconds("self");
    let mut phase = stream_round(count, ramp, tokens, request).await;
    phase.bench_cpu_s = cpu_seconds("self") - cpu;
    Ok(phase)
}

fn default_ramp(ramp_ms: Option<u64>, tokens: usize, token_ms: u64) -> Duration {
    Duration::from_millis(ramp_ms.unwrap_or(tokens as u64 * token_ms / 2))
}

/// Creates an API key in `data_dir` with `moat key create` (before the server opens the database).
async fn create_api_key(binary: &Path, data_dir: &Path) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["key", "create", "bench"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    if !output.status.success() {
        anyhow::bail!(
            "moat key create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .rfind(|line| line.starts_with(crate::store::API_KEY_PREFIX))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("moat key create printed no key"))
}

struct ServerUnderTest {
    child: tokio::process::Child,
    base: String,
    pid: u32,
    admin_token: String,
}

async fn start_server(
    binary: &Path,
    data_dir: &Path,
    upstream: &str,
    concurrency: usize,
    cpus: &crate::bench_cpus::CpuPlan,
) -> anyhow::Result<ServerUnderTest> {
    let registry = data_dir.join("bench-models.toml");
    std::fs::write(&registry, registry_text(upstream, concurrency))?;
    let admin_token = crate::domain::random_hex(16);
    let registry_arg = registry.display().to_string();
    let (child, base) = crate::bench::spawn_server_process_with(
        binary,
        data_dir,
        &admin_token,
        &["--models", &registry_arg],
        Some(cpus),
    )
    .await?;
    let pid = child.id().unwrap_or(0);
    Ok(ServerUnderTest {
        child,
        base,
        pid,
        admin_token,
    })
}

impl ServerUnderTest {
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `moat bench proxy`, against the `moat` binary at `binary`.
pub async fn run_proxy(args: ProxyBenchArgs, binary: &Path) -> anyhow::Result<ProxyBenchReport> {
    anyhow::ensure!(
        args.streams > 0 && args.tokens > 0,
        "streams and tokens must be at least 1"
    );
    // Bench side: client and upstream ends of both rounds' connections; the server inherits it.
    check_open_files(4 * args.streams + 256)?;
    let started = Instant::now();
    let load_start = load_average();
    let ramp = default_ramp(args.ramp_ms, args.tokens, args.token_ms);
    // Before the upstream's thread starts, so that it inherits the load generator's CPUs.
    let cpus = crate::bench_cpus::CpuPlan::apply(args.cpus);
    let upstream = FakeUpstream::start(args.tokens, args.token_ms)?;
    let dir = tempfile::tempdir()?;
    let key = if args.admin_token {
        None
    } else {
        Some(create_api_key(binary, dir.path()).await?)
    };
    let server = start_server(
        binary,
        dir.path(),
        &upstream.base_url,
        2 * args.streams + 16,
        &cpus,
    )
    .await?;
    let bearer = key.unwrap_or_else(|| server.admin_token.clone());

    let direct = DirectRequests::new(&upstream.base_url, args.tokens)?;
    let direct_request = |_: usize| direct.request();
    stream_round(args.streams, ramp, args.tokens, direct_request).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kb = status_kb(server.pid, "VmRSS:").unwrap_or(0);
    let sampler = RssSampler::start(server.pid);
    let http = stream_client()?;
    let url = format!("{}/v1/chat/completions", server.base);
    let body = chat_body("bench-a", args.tokens);
    let request = |_: usize| {
        http.post(&url)
            .bearer_auth(&bearer)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone())
    };
    stream_round(args.streams, ramp, args.tokens, request).await;
    let server_pid = server.pid.to_string();
    // Direct and proxied rounds alternate, so that both see the machine as it is at that moment
    // (its noise comes and goes over seconds).
    let mut measured = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let cpu = cpu_seconds("self");
        let mut direct = stream_round(args.streams, ramp, args.tokens, direct_request).await;
        direct.bench_cpu_s = cpu_seconds("self") - cpu;
        let (cpu, server_cpu) = (cpu_seconds("self"), cpu_seconds(&server_pid));
        let mut proxied = stream_round(args.streams, ramp, args.tokens, request).await;
        proxied.bench_cpu_s = cpu_seconds("self") - cpu;
        proxied.server_cpu_s = Some(cpu_seconds(&server_pid) - server_cpu);
        measured.push((direct, proxied));
    }
    let peak_kb = sampler.stop();
    let server_memory = memory(server.pid, idle_kb, peak_kb, args.streams);
    server.stop().await;
    drop(upstream);
    let rounds: Vec<RoundAdded> = measured
        .iter()
        .map(|(direct, proxied)| RoundAdded {
            direct_p99_ms: direct.first_content.p99_ms,
            proxied_p99_ms: proxied.first_content.p99_ms,
            added_p50_ms: proxied.first_content.p50_ms - direct.first_content.p50_ms,
            added_p99_ms: proxied.first_content.p99_ms - direct.first_content.p99_ms,
            server_cpu_s: proxied.server_cpu_s.unwrap_or(f64::NAN),
        })
        .collect();
    let added_p99_ms = median(rounds.iter().map(|r| r.added_p99_ms));
    // The phases shown in full are those of the round nearest the median.
    let shown = (0..rounds.len())
        .min_by(|&a, &b| {
            (rounds[a].added_p99_ms - added_p99_ms)
                .abs()
                .total_cmp(&(rounds[b].added_p99_ms - added_p99_ms).abs())
        })
        .unwrap_or(0);
    let (direct, proxied) = measured.swap_remove(shown);
    Ok(ProxyBenchReport {
        streams: args.streams,
        tokens: args.tokens,
        token_ms: args.token_ms,
        ramp_ms: ramp.as_millis() as u64,
        cpus: cpus.describe(),
        auth: if args.admin_token {
            "admin token".into()
        } else {
            "API key".into()
        },
        added_p50_ms: median(rounds.iter().map(|r| r.added_p50_ms)),
        added_p99_ms,
        rounds,
        direct,
        proxied,
        server: server_memory,
        load_average: [load_start, load_average()],
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Default)]
struct BattleTiming {
    prompt_ms: f64,
    first_text_ms: Option<f64>,
    both_sides_ms: Option<f64>,
    end: Option<String>,
}

/// One rater's battle: the prompt (live), then its events to the end, timed from the prompt POST.
async fn timed_battle(rater: &RaterClient, gauge: &OpenGauge) -> Result<BattleTiming, String> {
    let start = Instant::now();
    gauge.enter();
    let result = async {
        let battle = rater
            .arena_prompt("Say something for the benchmark.", true)
            .await
            .map_err(|e| e.to_string())?;
        let mut timing = BattleTiming {
            prompt_ms: ms_since(start),
            ..Default::default()
        };
        let mut response = rater
            .battle_events_response(&battle)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("events: HTTP {}", response.status()));
        }
        let (mut saw_a, mut saw_b) = (false, false);
        let mut blocks = SseBlocks::default();
        while let Some(bytes) = response.chunk().await.map_err(|e| e.to_string())? {
            blocks.push(&bytes, |name, data| match name {
                "a" | "b" => {
                    timing.first_text_ms.get_or_insert_with(|| ms_since(start));
                    if name == "a" {
                        saw_a = true;
                    } else {
                        saw_b = true;
                    }
                    if saw_a && saw_b {
                        timing.both_sides_ms.get_or_insert_with(|| ms_since(start));
                    }
                }
                "end" => timing.end = Some(data.to_string()),
                _ => {}
            });
            if timing.end.is_some() {
                break;
            }
        }
        Ok(timing)
    }
    .await;
    gauge.leave();
    result
}

async fn join_raters(base: &str, slug: &str, count: usize) -> anyhow::Result<Vec<RaterClient>> {
    futures::stream::iter(0..count)
        .map(|_| RaterClient::join(base, slug, None))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|joined| joined.map_err(anyhow::Error::from))
        .collect()
}

/// Every rater starts one battle, started evenly over `ramp`.
async fn battle_round(
    raters: Vec<RaterClient>,
    ramp: Duration,
) -> (Vec<Result<BattleTiming, String>>, usize, f64) {
    let count = raters.len();
    let gauge = Arc::new(OpenGauge::default());
    let begin = Instant::now();
    let tasks: Vec<_> = raters
        .into_iter()
        .enumerate()
        .map(|(index, rater)| {
            let gauge = gauge.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(begin + start_offset(index, count, ramp)).await;
                timed_battle(&rater, &gauge).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(count);
    for task in tasks {
        results.push(task.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    (
        results,
        gauge.max.load(Ordering::Relaxed),
        begin.elapsed().as_secs_f64(),
    )
}

/// `moat bench arena`, against the `moat` binary at `binary`.
pub async fn run_arena(args: ArenaBenchArgs, binary: &Path) -> anyhow::Result<ArenaBenchReport> {
    anyhow::ensure!(
        args.battles > 0 && args.tokens > 0,
        "battles and tokens must be at least 1"
    );
    // Two rounds of raters' connections, two upstream streams per battle, the direct rounds.
    check_open_files(8 * args.battles + 256)?;
    let started = Instant::now();
    let load_start = load_average();
    let ramp = default_ramp(args.ramp_ms, args.tokens, args.token_ms);
    // Before the upstream's thread starts, so that it inherits the load generator's CPUs.
    let cpus = crate::bench_cpus::CpuPlan::apply(args.cpus);
    let upstream = FakeUpstream::start(args.tokens, args.token_ms)?;
    let dir = tempfile::tempdir()?;
    let server = start_server(
        binary,
        dir.path(),
        &upstream.base_url,
        2 * args.battles + 16,
        &cpus,
    )
    .await?;
    let http = reqwest::Client::new();
    let slug = "bench-arena";
    // Thousands of raters from this machine's address: the flood limits are off.
    let settings = serde_json::json!({ "kind": "arena", "items_per_rater": 1_000_000,
        "battles_per_hour": 1_000_000, "sessions_per_ip": 0, "consents_per_minute": 0,
        "rater_requests_per_minute": 0 });
    http.post(format!("{}/api/v1/studies", server.base))
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({ "slug": slug, "title": "Bench arena", "settings": settings }))
        .send()
        .await?
        .error_for_status()?;
    http.post(format!("{}/api/v1/studies/{slug}/status", server.base))
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({ "status": "open" }))
        .send()
        .await?
        .error_for_status()?;

    let direct = direct_phase(&upstream.base_url, 2 * args.battles, ramp, args.tokens).await?;

    // Separate raters for the warm-up round, so the measured raters have no battle waiting for a
    // vote; joining keeps each rater's connection open, as a browser's page would.
    let warm_up = join_raters(&server.base, slug, args.battles).await?;
    let raters = join_raters(&server.base, slug, args.battles).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kb = status_kb(server.pid, "VmRSS:").unwrap_or(0);
    let sampler = RssSampler::start(server.pid);
    battle_round(warm_up, ramp).await;
    let server_pid = server.pid.to_string();
    let (cpu, server_cpu) = (cpu_seconds("self"), cpu_seconds(&server_pid));
    let (results, max_open, seconds) = battle_round(raters, ramp).await;
    let bench_cpu_s = cpu_seconds("self") - cpu;
    let server_cpu_s = cpu_seconds(&server_pid) - server_cpu;
    let peak_kb = sampler.stop();
    let server_memory = memory(server.pid, idle_kb, peak_kb, args.battles);
    server.stop().await;
    drop(upstream);

    let (mut prompt, mut first_text, mut both_sides) = (Vec::new(), Vec::new(), Vec::new());
    let (mut completed, mut void, mut failed, mut first_error) = (0, 0, 0, None);
    for result in results {
        match result {
            Ok(timing) => {
                match timing.end.as_deref() {
                    Some("complete") => completed += 1,
                    Some(_) => void += 1,
                    None => {
                        failed += 1;
                        first_error.get_or_insert("an event stream ended without `end`".into());
                    }
                }
                prompt.push(timing.prompt_ms);
                first_text.extend(timing.first_text_ms);
                both_sides.extend(timing.both_sides_ms);
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    let first_text = Percentiles::of(first_text);
    Ok(ArenaBenchReport {
        battles: args.battles,
        tokens: args.tokens,
        token_ms: args.token_ms,
        ramp_ms: ramp.as_millis() as u64,
        cpus: cpus.describe(),
        added_p50_ms: first_text.p50_ms - direct.first_content.p50_ms,
        added_p99_ms: first_text.p99_ms - direct.first_content.p99_ms,
        direct,
        completed,
        void,
        failed,
        max_open,
        seconds,
        prompt_post: Percentiles::of(prompt),
        first_text,
        both_sides: Percentiles::of(both_sides),
        bench_cpu_s,
        server_cpu_s,
        server: server_memory,
        load_average: [load_start, load_average()],
        first_error,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

impl std::fmt::Display for StreamPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "  {} streams, {} completed, {} failed, at most {} open, {:.2} s",
            self.streams, self.completed, self.failed, self.max_open, self.seconds
        )?;
        writeln!(f, "  first byte     {}", self.first_byte)?;
        write!(f, "  first content  {}", self.first_content)?;
        write!(f, "\n  CPU: bench process {:.2} s", self.bench_cpu_s)?;
        if let Some(server) = self.server_cpu_s {
            write!(f, ", server {server:.2} s")?;
        }
        if let Some(error) = &self.first_error {
            write!(f, "\n  first error: {error}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ServerMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server RSS idle {:.1} MB, peak {:.1} MB (VmHWM {:.1} MB): {:.1} KB per open stream",
            self.idle_rss_mb, self.peak_rss_mb, self.hwm_mb, self.per_open_kb
        )
    }
}

impl std::fmt::Display for ProxyBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} concurrent streams, {} chunks every {} ms, starts over {} ms, auth: {}",
            self.streams, self.tokens, self.token_ms, self.ramp_ms, self.auth
        )?;
        writeln!(f, "{}", self.cpus)?;
        writeln!(
            f,
            "direct to the upstream (baseline; the round nearest the median):\n{}",
            self.direct
        )?;
        writeln!(f, "through moat /v1/chat/completions:\n{}", self.proxied)?;
        for (index, round) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "round {}: first content p99 direct {:.2} ms, through moat {:.2} ms: added p50 {:+.2} ms  p99 {:+.2} ms; server CPU {:.2} s",
                index + 1,
                round.direct_p99_ms,
                round.proxied_p99_ms,
                round.added_p50_ms,
                round.added_p99_ms,
                round.server_cpu_s
            )?;
        }
        writeln!(
            f,
            "added to the first content, median of {} rounds: p50 {:+.2} ms  p99 {:+.2} ms (target p99 <= 5 ms)",
            self.rounds.len(),
            self.added_p50_ms,
            self.added_p99_ms
        )?;
        writeln!(f, "{}", self.server)?;
        write!(
            f,
            "load average {} -> {}; total {:.1} s",
            self.load_average[0], self.load_average[1], self.total_seconds
        )
    }
}

impl std::fmt::Display for ArenaBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} concurrent battles, {} chunks every {} ms per side, starts over {} ms",
            self.battles, self.tokens, self.token_ms, self.ramp_ms
        )?;
        writeln!(f, "{}", self.cpus)?;
        writeln!(
            f,
            "direct to the upstream (baseline, 2 streams per battle):\n{}",
            self.direct
        )?;
        writeln!(
            f,
            "battles: {} complete, {} void, {} failed, at most {} open, {:.2} s",
            self.completed, self.void, self.failed, self.max_open, self.seconds
        )?;
        writeln!(f, "  prompt POST -> battle id  {}", self.prompt_post)?;
        writeln!(f, "  prompt POST -> first text {}", self.first_text)?;
        writeln!(f, "  prompt POST -> both sides {}", self.both_sides)?;
        writeln!(
            f,
            "  CPU: bench process {:.2} s, server {:.2} s",
            self.bench_cpu_s, self.server_cpu_s
        )?;
        if let Some(error) = &self.first_error {
            writeln!(f, "  first error: {error}")?;
        }
        writeln!(
            f,
            "added to the first text: p50 {:+.2} ms  p99 {:+.2} ms (target p99 <= 5 ms)",
            self.added_p50_ms, self.added_p99_ms
        )?;
        writeln!(f, "{}", self.server)?;
        write!(
            f,
            "load average {} -> {}; total {:.1} s",
            self.load_average[0], self.load_average[1], self.total_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_chunks_are_told_from_the_role_chunk() {
        assert!(!has_content(
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(has_content(
            r#"{"choices":[{"delta":{"content":"tok1 "}}]}"#
        ));
        assert!(!has_content(r#"{"choices":[{"delta":{}}]}"#));
    }

    #[test]
    fn events_split_across_reads_are_joined() {
        let mut blocks = SseBlocks::default();
        let mut seen = Vec::new();
        blocks.push(b"event: a\ndata: he", |n, d| {
            seen.push((n.to_string(), d.to_string()))
        });
        assert!(seen.is_empty());
        blocks.push(
            b"llo\n\n: keep-alive\n\nevent: end\ndata: complete\n\n",
            |n, d| seen.push((n.to_string(), d.to_string())),
        );
        assert_eq!(
            seen,
            [
                ("a".into(), "hello".into()),
                ("end".into(), "complete".into())
            ]
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (51.0, 99.0, 100.0));
        assert!(Percentiles::of(Vec::new()).p50_ms.is_nan());
    }
}
