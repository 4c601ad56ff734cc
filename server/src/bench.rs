//! `moat bench votes`: a load benchmark of the durable vote path over HTTP on loopback.
//!
//! It starts this same binary as a separate server process (fresh SQLite file, `synchronous=FULL`),
//! creates and opens a study, then drives N concurrent simulated raters through the browser's protocol:
//! ask for the first comparison, then vote again and again, each vote answering with the next
//! comparison (as the page does). Only acknowledged votes count. The server's peak memory is
//! read from `/proc/PID/status` (VmHWM) at the end.
//!
//! With `--postgres URL --processes N` it runs N server processes on one fresh PostgreSQL database
//! instead, as behind a load balancer without sticky sessions: each rater's requests go to the
//! processes in turn (the comparison from one, the vote to the next).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::RaterClient;

#[derive(clap::Args, Debug, Clone)]
pub struct VoteBenchArgs {
    /// Concurrent simulated raters.
    #[arg(long, default_value_t = 64)]
    pub raters: usize,
    /// How long to drive load, in seconds.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Prompts in the study (each rater sees each prompt at most once).
    #[arg(long, default_value_t = 3000)]
    pub prompts: usize,
    /// Megabytes of a Moat import uploaded slowly, spread over the run, through the JSON API while
    /// the raters vote (0: none). The upload is cut when the run ends, so what is measured is
    /// voting while a large body arrives, not the import's own transaction.
    #[arg(long, default_value_t = 0)]
    pub upload_mb: u64,
    /// Run on PostgreSQL: a URL of the server (its database is used only to create a fresh database
    /// for the run, dropped at the end). Default: a fresh SQLite file.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Server processes on the one database (more than one needs `--postgres`).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip the ceiling run (on SQLite: the same writes straight through the store's group commit,
    /// after the HTTP run).
    #[arg(long)]
    pub no_ceiling: bool,
    /// The study's assignment policy (`active_sampling`): uniform, or uncertainty / disagreement,
    /// which retrain a reward model in the server while the raters vote.
    #[arg(long, default_value = "uniform")]
    pub active_sampling: String,
}

#[derive(Debug, serde::Serialize)]
pub struct VoteBenchReport {
    /// `sqlite` or `postgres`.
    pub database: String,
    pub processes: usize,
    pub raters: usize,
    pub seconds: f64,
    pub votes: usize,
    pub votes_per_second: f64,
    pub vote_p50_ms: f64,
    pub vote_p99_ms: f64,
    pub cycle_p50_ms: f64,
    pub cycle_p99_ms: f64,
    pub errors: usize,
    /// The largest peak RSS of the server processes.
    pub server_peak_rss_mb: f64,
    /// The first server process's resident memory a quarter into the run (after warm-up) and at its
    /// end, all of it and its anonymous part (heap and stacks; the rest is mostly the database file's
    /// mapped pages, which grow with the file): the heap is flat when the two anonymous figures are
    /// about equal.
    pub server_rss_quarter_mb: f64,
    pub server_rss_end_mb: f64,
    pub server_anon_quarter_mb: f64,
    pub server_anon_end_mb: f64,
    /// With `--active-sampling`: the study's reward model at the end of the run, as the study
    /// report gives it (`null`: none trained).
    pub reward_model: Option<serde_json::Value>,
    /// CPU time (user + system) per acknowledged vote while the raters ran: of the server
    /// processes together, and of this process (the simulated raters' HTTP clients). Less
    /// noisy than votes/s on a shared machine: compare builds by it.
    pub server_cpu_us_per_vote: f64,
    pub bench_cpu_us_per_vote: f64,
    /// Bytes of the slow upload the server received during the run (0 without `--upload-mb`).
    pub upload_bytes_sent: u64,
    /// The same writes without HTTP and assignment logic, in the same run (`None` with `--no-ceiling`).
    pub ceiling: Option<crate::bench_ceiling::CeilingReport>,
    /// Acknowledged votes/s over the ceiling's cycles/s.
    pub share_of_ceiling: Option<f64>,
}

/// Sends `POST /api/v1/studies/{slug}/import` over a raw connection with a body of `total` bytes of
/// generated Moat JSONL, paced evenly over `over`, until `stop` is set; returns the bytes sent. The
/// body is never finished when stopped early: the server drops its spool file.
async fn slow_upload(
    base: &str,
    token: &str,
    slug: &str,
    total: u64,
    over: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let addr = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("the bench server's address is not http://: {base}"))?;
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /api/v1/studies/{slug}/import HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/jsonl\r\n\
         Content-Length: {total}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    // One 256 KiB block of prompt lines, sent again and again after the header line (the ids
    // repeat, which the import would refuse; the run cuts the body before it is complete anyway).
    let filler = "Upload filler text for the benchmark. ".repeat(20);
    let mut block = Vec::new();
    for line in 0..usize::MAX {
        if block.len() >= 256 * 1024 {
            break;
        }
        block.extend_from_slice(
            serde_json::json!({ "id": format!("u{line}"), "prompt": format!("Uploaded {line}"),
                "responses": { "bench-open-a": filler, "bench-open-b": filler } })
            .to_string()
            .as_bytes(),
        );
        block.push(b'\n');
    }
    let mut chunk = study_file(0).into_bytes();
    let started = Instant::now();
    let mut sent: u64 = 0;
    while sent < total && !stop.load(Ordering::Relaxed) {
        if chunk.len() < block.len() {
            chunk.extend_from_slice(&block);
        }
        let take = chunk.len().min((total - sent) as usize);
        tcp.write_all(&chunk[..take]).await?;
        chunk.drain(..take);
        sent += take as u64;
        // Keep to the pace: `sent` bytes should have taken `sent / total` of `over`.
        let due = over.mul_f64(sent as f64 / total as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(sent)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn peak_rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmHWM:")
}

/// (all resident memory, its anonymous part) of a process, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    (status_mb(pid, "VmRSS:"), status_mb(pid, "RssAnon:"))
}

fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn study_file(prompts: usize) -> String {
    let models = ["bench-open-a", "bench-open-b", "bench-closed-c"];
    let mut lines = vec![serde_json::json!({ "models": [
        { "name": models[0], "provider": "Bench", "openness": "open" },
        { "name": models[1], "provider": "Bench", "openness": "open" },
        { "name": models[2], "provider": "Bench", "openness": "closed" },
    ]})
    .to_string()];
    let filler = "The quick brown fox jumps over the lazy dog. ".repeat(12);
    for i in 0..prompts {
        let responses: serde_json::Map<String, serde_json::Value> = models
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    serde_json::json!(format!("{m} answers {i}. {filler}")),
                )
            })
            .collect();
        lines.push(serde_json::json!({ "id": format!("b{i}"), "prompt": format!("Benchmark prompt {i}: {filler}"), "responses": responses }).to_string());
    }
    lines.join("\n") + "\n"
}

/// Starts `moat serve` from `binary` as a separate process on a SQLite file in `data_dir`, on a port
/// the OS picks (no race with other processes for a "free" port), and returns the child and its base
/// URL, read from the line the server prints once it listens.
pub async fn spawn_server_process(
    binary: &std::path::Path,
    data_dir: &std::path::Path,
    admin_token: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    spawn_server_process_with(binary, data_dir, admin_token, &[], None).await
}

/// [`spawn_server_process`] with more `moat serve` arguments (e.g. `--models FILE`).
pub async fn spawn_server_process_with(
    binary: &std::path::Path,
    data_dir: &std::path::Path,
    admin_token: &str,
    serve_args: &[&str],
    cpus: Option<&crate::bench_cpus::CpuPlan>,
) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let (program, leading) = cpus.cloned().unwrap_or_default().wrap(binary);
    let mut child = tokio::process::Command::new(program)
        .args(leading)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--site-root",
            "/nonexistent-site",
        ])
        .args(serve_args)
        .env("MOAT_ADMIN_TOKEN", admin_token)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("Moat is listening on ") {
                return Ok(url.trim().to_string());
            }
        }
        anyhow::bail!("the server exited before listening")
    });
    let base = listening
        .await
        .map_err(|_| anyhow::anyhow!("the server did not start within 60 s"))??;
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, base))
}

/// A fresh PostgreSQL database for one run, dropped by [`drop_postgres_database`].
async fn create_postgres_database(server_url: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!("moat_bench_{}", crate::domain::random_hex(8));
    let mut connection = sqlx::AnyConnection::connect(server_url).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    let (base, _) = server_url
        .split_once('?')
        .map_or(server_url, |(url, _)| url)
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("--postgres {server_url:?} names no database"))?;
    Ok((format!("{base}/{name}"), name))
}

async fn drop_postgres_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut connection = sqlx::AnyConnection::connect(server_url).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut connection)
        .await?;
    Ok(())
}

pub async fn run(args: VoteBenchArgs) -> anyhow::Result<VoteBenchReport> {
    if args.processes == 0 || (args.processes > 1 && args.postgres.is_none()) {
        anyhow::bail!(
            "--processes {} needs --postgres URL: a SQLite file is one process's",
            args.processes
        );
    }
    let database = match &args.postgres {
        Some(server_url) => Some((
            server_url.clone(),
            create_postgres_database(server_url).await?,
        )),
        None => None,
    };
    let result = run_on(&args, database.as_ref().map(|(_, (url, _))| url.as_str())).await;
    if let Some((server_url, (_, name))) = &database {
        drop_postgres_database(server_url, name).await?;
    }
    result
}

async fn run_on(args: &VoteBenchArgs, postgres: Option<&str>) -> anyhow::Result<VoteBenchReport> {
    let dir = tempfile::tempdir()?;
    let token = crate::domain::random_hex(16);
    let mut servers = Vec::new();
    let mut bases = Vec::new();
    for process in 0..args.processes {
        let data_dir = dir.path().join(format!("process-{process}"));
        std::fs::create_dir_all(&data_dir)?;
        let serve_args: Vec<&str> = match postgres {
            Some(url) => vec!["--database-url", url],
            None => Vec::new(),
        };
        let (server, base) = spawn_server_process_with(
            &std::env::current_exe()?,
            &data_dir,
            &token,
            &serve_args,
            None,
        )
        .await?;
        servers.push(server);
        bases.push(base);
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.id().unwrap_or(0)).collect();
    let base = bases[0].clone();
    let http = reqwest::Client::new();
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(&token);
    // Every simulated rater comes from this machine's address, and they start sessions as fast as
    // they can: the study's flood limits are off for the benchmark. The generated answers name
    // their model ("bench-open-a answers 1"), so the identity check flags every prompt; without
    // `show_flagged` no comparison would be assigned at all.
    let settings = serde_json::json!({
        "items_per_rater": args.prompts,
        "show_flagged": true,
        "sessions_per_ip": 0,
        "consents_per_minute": 0,
        "rater_requests_per_minute": 0,
        "active_sampling": args.active_sampling,
    });
    admin(http.post(format!("{base}/api/v1/studies")))
        .json(&serde_json::json!({ "slug": "bench", "title": "Bench", "settings": settings }))
        .send()
        .await?
        .error_for_status()?;
    admin(http.post(format!("{base}/api/v1/studies/bench/import")))
        .body(study_file(args.prompts))
        .send()
        .await?
        .error_for_status()?;
    admin(http.post(format!("{base}/api/v1/studies/bench/status")))
        .json(&serde_json::json!({ "status": "open" }))
        .send()
        .await?
        .error_for_status()?;

    let stop = Arc::new(AtomicBool::new(false));
    let upload = if args.upload_mb > 0 {
        admin(http.post(format!("{base}/api/v1/studies")))
            .json(&serde_json::json!({ "slug": "upload", "title": "Upload" }))
            .send()
            .await?
            .error_for_status()?;
        let (base, token, stop) = (base.clone(), token.clone(), stop.clone());
        // Paced a little slower than the run, so the body is still arriving when the run ends.
        let over = Duration::from_secs(args.seconds).mul_f64(1.2);
        let total = args.upload_mb * 1_000_000;
        Some(tokio::spawn(async move {
            slow_upload(&base, &token, "upload", total, over, stop).await
        }))
    } else {
        None
    };
    let cpu = || -> (f64, f64) {
        let servers: f64 = pids
            .iter()
            .map(|pid| crate::bench_llm::cpu_seconds(&pid.to_string()))
            .sum();
        (servers, crate::bench_llm::cpu_seconds("self"))
    };
    let cpu_before = cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for rater_number in 0..args.raters {
        let bases = bases.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut vote_ms = Vec::new();
            let mut cycle_ms = Vec::new();
            let mut errors = 0usize;
            // The rater joins on one process and then speaks to each in turn (one client per
            // process, sharing the cookies), as behind a round-robin load balancer.
            let home = rater_number % bases.len();
            let Ok(joined) = RaterClient::join(&bases[home], "bench", None).await else {
                return (vote_ms, cycle_ms, 1);
            };
            let mut clients = Vec::new();
            for offset in 0..bases.len() {
                match joined.rebased(&bases[(home + offset) % bases.len()]) {
                    Ok(client) => clients.push(client),
                    Err(_) => return (vote_ms, cycle_ms, 1),
                }
            }
            let mut turn = 0usize;
            // As the page does: the first comparison is asked for, and each vote answers with the
            // next one.
            let mut shown = None;
            while !stop.load(Ordering::Relaxed) {
                let cycle = Instant::now();
                let rater = &clients[turn % clients.len()];
                turn += 1;
                let comparison = match shown.take() {
                    Some(comparison) => comparison,
                    None => match rater.next_comparison().await {
                        Ok(Some(c)) => c,
                        Ok(None) => break,
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    },
                };
                let vote = Instant::now();
                let rater = &clients[turn % clients.len()];
                match rater.vote_then_next(&comparison.assignment, "left").await {
                    Ok(next) => {
                        vote_ms.push(vote.elapsed().as_secs_f64() * 1000.0);
                        cycle_ms.push(cycle.elapsed().as_secs_f64() * 1000.0);
                        if let moat_app::wire::RaterView::Compare(next) = next {
                            shown = Some(next);
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (vote_ms, cycle_ms, errors)
        }));
    }
    let quarter = Duration::from_secs_f64(args.seconds as f64 / 4.0);
    tokio::time::sleep(quarter).await;
    let rss_quarter = pids
        .first()
        .map_or((f64::NAN, f64::NAN), |&pid| rss_mb(pid));
    tokio::time::sleep(Duration::from_secs(args.seconds).saturating_sub(quarter)).await;
    let rss_end = pids
        .first()
        .map_or((f64::NAN, f64::NAN), |&pid| rss_mb(pid));
    stop.store(true, Ordering::Relaxed);
    let (mut vote_ms, mut cycle_ms, mut errors) = (Vec::new(), Vec::new(), 0);
    for task in tasks {
        let (v, c, e) = task.await?;
        vote_ms.extend(v);
        cycle_ms.extend(c);
        errors += e;
    }
    let cpu_after = cpu();
    let acknowledged = vote_ms.len().max(1) as f64;
    let per_vote = |seconds: f64| seconds * 1e6 / acknowledged;
    let elapsed = started.elapsed().as_secs_f64();
    let upload_bytes_sent = match upload {
        Some(task) => task.await??,
        None => 0,
    };
    let rss = pids
        .iter()
        .map(|&pid| peak_rss_mb(pid))
        .fold(f64::NAN, f64::max);
    // Active sampling: what the first process trained while the raters voted.
    let reward_model = if args.active_sampling == "uniform" {
        None
    } else {
        let report: serde_json::Value = admin(http.get(format!("{base}/api/v1/studies/bench")))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        report
            .get("reward_model")
            .filter(|model| !model.is_null())
            .cloned()
    };
    for server in &mut servers {
        server.start_kill()?;
        let _ = server.wait().await;
    }
    vote_ms.sort_by(f64::total_cmp);
    cycle_ms.sort_by(f64::total_cmp);
    let votes_per_second = vote_ms.len() as f64 / elapsed;
    // The ceiling is SQLite's group commit; on PostgreSQL there is no such single writer to compare with.
    let ceiling = if args.no_ceiling || postgres.is_some() {
        None
    } else {
        let dir = tempfile::tempdir()?;
        Some(
            crate::bench_ceiling::raw_group_commit(
                dir.path(),
                &study_file(args.prompts),
                args.raters,
                args.seconds,
            )
            .await?,
        )
    };
    let share_of_ceiling = ceiling
        .as_ref()
        .map(|ceiling| votes_per_second / ceiling.cycles_per_second);
    Ok(VoteBenchReport {
        database: if postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
        .to_string(),
        processes: args.processes,
        raters: args.raters,
        seconds: elapsed,
        votes: vote_ms.len(),
        votes_per_second,
        vote_p50_ms: percentile(&vote_ms, 0.50),
        vote_p99_ms: percentile(&vote_ms, 0.99),
        cycle_p50_ms: percentile(&cycle_ms, 0.50),
        cycle_p99_ms: percentile(&cycle_ms, 0.99),
        errors,
        server_peak_rss_mb: rss,
        server_rss_quarter_mb: rss_quarter.0,
        server_rss_end_mb: rss_end.0,
        server_anon_quarter_mb: rss_quarter.1,
        server_anon_end_mb: rss_end.1,
        reward_model,
        server_cpu_us_per_vote: per_vote(cpu_after.0 - cpu_before.0),
        bench_cpu_us_per_vote: per_vote(cpu_after.1 - cpu_before.1),
        upload_bytes_sent,
        ceiling,
        share_of_ceiling,
    })
}

impl std::fmt::Display for VoteBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} with {} server process(es)  raters {}  duration {:.1} s  acknowledged votes {}  errors {}",
            self.database, self.processes, self.raters, self.seconds, self.votes, self.errors
        )?;
        writeln!(f, "votes/s {:.0}", self.votes_per_second)?;
        writeln!(
            f,
            "vote latency (the vote committed and the next comparison issued) p50 {:.2} ms  p99 {:.2} ms",
            self.vote_p50_ms, self.vote_p99_ms
        )?;
        writeln!(
            f,
            "cycle (a comparison shown to its vote acknowledged, with the next) p50 {:.2} ms  p99 {:.2} ms",
            self.cycle_p50_ms, self.cycle_p99_ms
        )?;
        writeln!(
            f,
            "server peak RSS {:.0} MB (the largest process); RSS a quarter into the run {:.0} MB \
             (anonymous {:.0} MB), at its end {:.0} MB (anonymous {:.0} MB)",
            self.server_peak_rss_mb,
            self.server_rss_quarter_mb,
            self.server_anon_quarter_mb,
            self.server_rss_end_mb,
            self.server_anon_end_mb
        )?;
        writeln!(
            f,
            "CPU per acknowledged vote: server {:.0} µs, load generator {:.0} µs",
            self.server_cpu_us_per_vote, self.bench_cpu_us_per_vote
        )?;
        write!(
            f,
            "slow upload received during the run: {:.0} MB",
            self.upload_bytes_sent as f64 / 1e6
        )?;
        if let Some(model) = &self.reward_model {
            let number = |key: &str| model.get(key).and_then(serde_json::Value::as_f64);
            let trainings = model
                .get("history")
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len);
            write!(
                f,
                "\nreward model (active sampling): {trainings} training(s) during the run, the last on {:.0} + {:.0} held-out votes, held-out accuracy {:.3}",
                number("train_pairs").unwrap_or(f64::NAN),
                number("eval_pairs").unwrap_or(f64::NAN),
                number("eval_accuracy").unwrap_or(f64::NAN)
            )?;
        }
        if let (Some(ceiling), Some(share)) = (&self.ceiling, self.share_of_ceiling) {
            write!(
                f,
                "\n{ceiling}\nthe rater path reaches {share:.2}x the ceiling"
            )?;
        }
        Ok(())
    }
}

/// `moat bench rigging`: the rigging and carelessness tests against a simulated omnipresent
/// attacker (`moat_stats::rigging_simulation`); pure computation, seeded, no server.
#[derive(clap::Args, Debug, Clone)]
pub struct RiggingBenchArgs {
    #[arg(long, default_value_t = 8)]
    pub models: usize,
    #[arg(long, default_value_t = 150)]
    pub honest_raters: usize,
    #[arg(long, default_value_t = 6)]
    pub careless_raters: usize,
    /// Mean votes per honest or careless rater.
    #[arg(long, default_value_t = 30)]
    pub votes_per_rater: usize,
    #[arg(long, default_value_t = 300)]
    pub attacker_votes: usize,
    /// Accounts the attacker spreads its votes over.
    #[arg(long, default_value_t = 3)]
    pub attacker_accounts: usize,
    /// The target's place by true rating (1 for the best).
    #[arg(long, default_value_t = 6)]
    pub target_rank: usize,
    #[arg(long, default_value_t = 10)]
    pub repetitions: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Level of each statistical test.
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl RiggingBenchArgs {
    pub fn config(
        &self,
    ) -> anyhow::Result<moat_stats::rigging_simulation::RiggingSimulationConfig> {
        let config = moat_stats::rigging_simulation::RiggingSimulationConfig {
            models: self.models,
            honest_raters: self.honest_raters,
            careless_raters: self.careless_raters,
            votes_per_rater: self.votes_per_rater,
            attacker_votes: self.attacker_votes,
            attacker_accounts: self.attacker_accounts,
            target_rank: self.target_rank,
            repetitions: self.repetitions,
            seed: self.seed,
            rigging: moat_stats::RiggingOptions {
                alpha: self.alpha,
                ..Default::default()
            },
            ..Default::default()
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}
