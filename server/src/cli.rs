//! The `moat` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::domain::StudySlug;
use crate::import::{import_jsonl, ModelSpec};
use crate::store::Store;
use crate::{Application, Secret, ServeConfig};

#[derive(Parser, Debug)]
#[command(
    name = "moat",
    version,
    about = "Blind human-preference studies of language models"
)]
pub struct Cli {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: a SQLite file in the data directory.
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the default SQLite database lives.
    #[arg(long, global = true, env = "MOAT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Seconds to wait for a PostgreSQL server to answer before giving up with the reason.
    #[arg(
        long,
        global = true,
        env = "MOAT_DB_CONNECT_TIMEOUT",
        default_value_t = 5.0
    )]
    pub db_connect_timeout: f64,
    /// On an error, print the whole chain of causes, not only the one-line summary.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process, so the size of the largest variant (the trainer's options) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the rater and admin web app and the JSON API.
    Serve {
        #[arg(long, env = "MOAT_ADDR", default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
        /// Load and open the demo study (if it is not there yet).
        #[arg(long)]
        demo: bool,
        /// Serve the hydration module from this folder (pkg/moat.js and pkg/moat_bg.wasm, as
        /// scripts/build.sh writes them) instead of the copy built into the binary: for development.
        #[arg(long)]
        site_root: Option<PathBuf>,
        /// The admin token; if unset, one is generated at first start and printed once.
        #[arg(long, env = "MOAT_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// A model registry file (TOML): its models are served under /v1 (OpenAI-compatible).
        #[arg(long, env = "MOAT_MODELS")]
        models: Option<PathBuf>,
        /// Mark the admin and rater cookies `Secure` (browsers then send them over HTTPS only):
        /// set it when every visitor reaches Moat over HTTPS.
        #[arg(long, env = "MOAT_SECURE_COOKIES")]
        secure_cookies: bool,
        /// Trust the reverse proxy in front: a request with `X-Forwarded-Proto: https` gets
        /// `Secure` cookies. Without this flag the header is ignored (any client can send it).
        #[arg(long, env = "MOAT_TRUST_PROXY")]
        trust_proxy: bool,
        /// Seconds an ordinary request may take before it is answered 503 (streams, uploads and
        /// /v1 are exempt).
        #[arg(long, env = "MOAT_REQUEST_TIMEOUT", default_value_t = 60)]
        request_timeout: u64,
        /// The largest upload (imports, battles files) in bytes; uploads are spooled to a
        /// temporary file first.
        #[arg(long, env = "MOAT_MAX_UPLOAD_BYTES", default_value_t = 8 << 30)]
        max_upload_bytes: u64,
        /// Seconds an upload may send nothing before it is dropped.
        #[arg(long, env = "MOAT_UPLOAD_IDLE_TIMEOUT", default_value_t = 30)]
        upload_idle_timeout: u64,
        /// Seconds a connection may take to send a request's headers (slowloris) before it is closed.
        #[arg(long, env = "MOAT_HEADER_READ_TIMEOUT", default_value_t = 30)]
        header_read_timeout: u64,
    },
    /// Per-person admin tokens with a role (owner, researcher, viewer).
    #[command(subcommand, name = "admin-token")]
    AdminToken(AdminTokenCommand),
    /// The admin audit log: who did what when, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Fill a study's missing responses from a registry model (resumable).
    Generate(crate::generate::GenerateArgs),
    /// Ask a registry model which of LMArena's hard-prompt criteria each prompt meets (resumable);
    /// prompts meeting six or more form the leaderboard's `hard-prompt` category.
    #[command(name = "judge-prompts")]
    JudgePrompts(crate::judge::JudgeArgs),
    /// API keys for Moat's OpenAI-compatible endpoint (/v1).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Import into a study (created as a draft if needed): prompts and model responses (Moat JSONL),
    /// or a public preference dataset with its votes.
    Import {
        file: PathBuf,
        #[arg(long)]
        study: String,
        /// moat (prompts and responses), hh-rlhf, oasst, arena, trl or votes (Moat's votes export).
        #[arg(long, default_value = "moat")]
        format: String,
        /// Declare a model: NAME=open|closed[,PROVIDER] (repeatable); or use the file's header line.
        #[arg(long = "model")]
        models: Vec<String>,
    },
    /// Ratings with confidence intervals, and the study's questions (parity, distinguishability,
    /// bias, agreement), for a study or for a Chatbot Arena battles file.
    Leaderboard(crate::leaderboard_cli::LeaderboardArgs),
    /// Train a reward model (Bradley–Terry) on preference pairs: a file (--data) or a study's decided
    /// votes (--study).
    Train {
        /// Read the decided votes of this study instead of --data.
        #[arg(long, conflicts_with = "data")]
        study: Option<String>,
        #[command(flatten)]
        args: moat_trainer::cli::TrainArgs,
    },
    /// Score preference pairs (or responses) with a trained reward model.
    Score(moat_trainer::cli::ScoreArgs),
    /// Reward models after training: `moat rm eval` on RewardBench files or a study's votes.
    #[command(subcommand)]
    Rm(crate::rm_cli::RmCommand),
    /// Benchmarks (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Export a study's votes in an RLHF format (trl, dpo, kto, hh-rlhf, openai, arena, votes).
    Export(ExportArgs),
    /// Create, open, close, list and show studies.
    #[command(subcommand)]
    Study(crate::study_cli::StudyCommand),
    /// Check the database (reachable, migrated, version), the web app's hydration module, the model
    /// registry (endpoints answer, key variables set) and the free disk space, and say how to fix
    /// what is wrong. Changes nothing.
    Doctor {
        /// The model registry to check (as given to moat serve --models).
        #[arg(long, env = "MOAT_MODELS")]
        models: Option<PathBuf>,
        /// Check this folder instead of the hydration module built into the binary.
        #[arg(long)]
        site_root: Option<PathBuf>,
        /// Less free space than this many MiB for the data folder is a warning.
        #[arg(long, default_value_t = 1024)]
        min_free_mib: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[arg(long)]
    pub study: String,
    /// trl, dpo, kto, hh-rlhf, openai, arena or votes.
    #[arg(long, default_value = "trl")]
    pub format: String,
    /// The output file; with --split, a directory that gets one FORMAT-SPLIT.EXT file per split.
    #[arg(long)]
    pub out: PathBuf,
    /// Write Parquet instead of JSONL.
    #[arg(long, conflicts_with = "csv")]
    pub parquet: bool,
    /// Write CSV instead of JSONL (the votes format).
    #[arg(long)]
    pub csv: bool,
    /// Prompt and responses as {role, content} message lists (TRL's conversational variant).
    #[arg(long)]
    pub conversational: bool,
    /// Keep only comparisons between these models (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Keep votes recorded on or after this date (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Keep votes recorded before this date.
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub exclude_ties: bool,
    #[arg(long)]
    pub exclude_both_bad: bool,
    /// Split by prompt, e.g. `test=0.1` or `test=0.1,validation=0.05` (the rest is `train`).
    #[arg(long)]
    pub split: Option<String>,
    /// Seed of the split's prompt hash.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One row per item (prompt and model pair) by majority vote instead of one per vote.
    #[arg(long)]
    pub majority: bool,
    /// With --majority: leave out items where fewer than this share of votes agree (e.g. 0.67).
    #[arg(long, requires = "majority")]
    pub min_agreement: Option<f64>,
    /// Keep the votes of raters marked excluded (left out by default).
    #[arg(long)]
    pub include_excluded_raters: bool,
    /// Leave out votes on comparisons where a response names a model or its maker (identity
    /// flags; kept by default, and counted in the dataset card).
    #[arg(long)]
    pub exclude_flagged: bool,
    /// Also write a Hugging Face dataset card (README.md) beside the data.
    #[arg(long)]
    pub card: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a key (printed once; only its SHA-256 digest is stored).
    Create { name: String },
    /// List keys: names, when created and last used, whether revoked (never the keys).
    List,
    /// Revoke a key by name.
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
pub enum AdminTokenCommand {
    /// Create a token (printed once; only its SHA-256 digest is stored).
    Create {
        #[arg(long)]
        name: String,
        /// owner, researcher or viewer.
        #[arg(long)]
        role: String,
        /// A study the token may work on (researcher) or read (viewer; none: all); repeatable.
        #[arg(long = "study")]
        studies: Vec<String>,
    },
    /// List tokens: names, roles, studies, when created and last used, whether revoked.
    List,
    /// Revoke a token by name (its sessions end at once).
    Revoke { name: String },
    /// Replace the studies granted to a token (none: a researcher has none, a viewer reads all).
    Studies {
        name: String,
        /// A study the token may work on or read; repeatable.
        #[arg(long = "study")]
        studies: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Concurrent simulated raters against a SQLite-backed server over loopback HTTP.
    Votes(crate::bench::VoteBenchArgs),
    /// Streamed /v1/chat/completions through Moat against a fake upstream, and straight to it.
    Proxy(crate::bench_llm::ProxyBenchArgs),
    /// Concurrent live-arena battles against a fake upstream, and the upstream straight.
    Arena(crate::bench_llm::ArenaBenchArgs),
    /// The rigging and carelessness tests against a simulated omnipresent vote-rigging attacker:
    /// detection, false flags, and the target's rating shift with and without the filter.
    Rigging(crate::bench::RiggingBenchArgs),
    /// Active sampling on real HH-RLHF pairs with simulated raters: held-out accuracy of the hashed
    /// reward model against votes, uniform against uncertainty sampling.
    Active(moat_trainer::cli::ActiveBenchArgs),
}

impl Cli {
    /// The database URL: `--database-url`, or the SQLite file `moat.db` in the data folder (the
    /// folder is created when the store first opens it).
    pub fn database_url(&self) -> String {
        if let Some(url) = self
            .database_url
            .as_ref()
            .filter(|url| !url.trim().is_empty())
        {
            return url.clone();
        }
        format!("sqlite://{}", self.data_dir.join("moat.db").display())
    }

    /// `--db-connect-timeout`, at least 0.1 s.
    pub fn connect_timeout(&self) -> std::time::Duration {
        let seconds = if self.db_connect_timeout.is_finite() {
            self.db_connect_timeout.clamp(0.1, 3600.0)
        } else {
            5.0
        };
        std::time::Duration::from_secs_f64(seconds)
    }
}

/// mimalloc reads its options once, before `main`. Training frees and reallocates attention-sized
/// buffers every step; by default mimalloc returns them to the OS and the kernel zeroes them again
/// (13 of 50 CPU-seconds in the kernel on a 10-step LoRA probe), so `moat train` runs itself again
/// with `MIMALLOC_PURGE_DELAY=-1`: 20% faster, peak memory 2.6 instead of 2.4 GB (trainer/BENCHMARKS.md).
/// An explicit setting in the environment is left alone.
fn rerun_with_allocator_settings(cli: &Cli) {
    use std::os::unix::process::CommandExt;
    const OPTION: &str = "MIMALLOC_PURGE_DELAY";
    if !matches!(cli.command, Command::Train { .. }) || std::env::var_os(OPTION).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(OPTION, "-1")
        .exec();
    // Only reached if the exec failed: train with the default settings.
    eprintln!(
        "note: could not restart with {OPTION}=-1 ({error}); training at the default settings"
    );
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    rerun_with_allocator_settings(&cli);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let verbose = cli.verbose;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", crate::problem::render(&error, verbose));
            ExitCode::FAILURE
        }
    }
}

fn print_report<R>(report: &R, json: bool) -> anyhow::Result<()>
where
    R: serde::Serialize + std::fmt::Display,
{
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let database_url = cli.database_url();
    let connect_timeout = cli.connect_timeout();
    match cli.command {
        Command::Serve {
            addr,
            demo,
            site_root,
            admin_token,
            models,
            secure_cookies,
            trust_proxy,
            request_timeout,
            max_upload_bytes,
            upload_idle_timeout,
            header_read_timeout,
        } => {
            let site = match site_root {
                Some(dir) => crate::site::Site::Dir(dir),
                None => crate::site::Site::embedded(),
            };
            if !site.has_module() {
                tracing::warn!(
                    "{}: pages work as plain HTML forms, without hydration (build the web app with scripts/build.sh before the server, or pass --site-root DIR; moat doctor checks this)",
                    match &site {
                        crate::site::Site::Dir(dir) => format!("{} has no pkg/moat.js", dir.display()),
                        crate::site::Site::Assets(_) => site.describe(),
                    }
                );
            }
            let app = Application::build(ServeConfig {
                database_url,
                db_connect_timeout: connect_timeout,
                addr,
                site,
                admin_token: admin_token.map(Secret),
                demo,
                models,
                cookies: crate::service::CookiePolicy {
                    always_secure: secure_cookies,
                    trust_proxy,
                },
                limits: crate::http::Limits {
                    upload_max_bytes: max_upload_bytes,
                    upload_idle: std::time::Duration::from_secs(upload_idle_timeout.max(1)),
                    request_timeout: std::time::Duration::from_secs(request_timeout.max(1)),
                    header_read: std::time::Duration::from_secs(header_read_timeout.max(1)),
                },
            })
            .await?;
            println!("Moat is listening on http://{}", app.addr);
            if demo {
                println!(
                    "Demo study: http://{}/s/{}   Admin: http://{}/admin",
                    app.addr,
                    crate::DEMO_SLUG,
                    app.addr
                );
                if app.backend.arena().is_some() {
                    println!(
                        "Demo arena: http://{}/s/{}",
                        app.addr,
                        crate::DEMO_ARENA_SLUG
                    );
                }
            }
            app.run().await?;
            Ok(())
        }
        Command::Import {
            file,
            study,
            format,
            models,
        } => {
            let slug = StudySlug::parse(&study).map_err(anyhow::Error::msg)?;
            let models = models
                .iter()
                .map(|m| ModelSpec::parse_flag(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            if format != "moat" {
                let format = moat_exports::import::ImportFormat::parse(&format).ok_or_else(|| {
                    anyhow::anyhow!("unknown import format {format:?}; use moat, hh-rlhf, oasst, arena, trl or votes")
                })?;
                let report = crate::import::import_dataset(&store, &slug, format, &file, &models)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("{}: {e}; nothing was imported", file.display())
                    })?;
                println!("{report}");
                store
                    .record_audit("cli", "study.import", slug.as_str(), format.as_str())
                    .await?;
                store.close().await;
                return Ok(());
            }
            let input = tokio::fs::File::open(&file)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
            let report = import_jsonl(&store, &slug, tokio::io::BufReader::new(input), &models)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was imported", file.display()))?;
            println!("{report}");
            store
                .record_audit("cli", "study.import", slug.as_str(), "moat")
                .await?;
            store.close().await;
            Ok(())
        }
        Command::Leaderboard(args) => {
            crate::leaderboard_cli::run(args, &database_url, connect_timeout).await
        }
        Command::Train { study: None, args } => {
            tokio::task::spawn_blocking(move || moat_trainer::cli::run_train(args)).await??;
            Ok(())
        }
        Command::Train {
            study: Some(slug),
            args,
        } => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            let backend = crate::service::AppService::new(store, String::new());
            let study = backend.store.study(&slug).await?;
            let records = backend.study_records(&study).await?;
            let (pairs, undecided) = crate::analysis::preference_pairs(&records);
            println!(
                "study {slug}: {} decided pairs; {undecided} ties and both-bad votes skipped",
                pairs.len()
            );
            backend.store.close().await;
            tokio::task::spawn_blocking(move || moat_trainer::cli::run_train_on(args, pairs))
                .await??;
            Ok(())
        }
        Command::Score(args) => {
            tokio::task::spawn_blocking(move || moat_trainer::cli::run_score(args)).await??;
            Ok(())
        }
        Command::Rm(command) => crate::rm_cli::run(command, &database_url).await,
        Command::Bench(BenchCommand::Votes(args)) => {
            let json = args.json;
            let report = crate::bench::run(args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Proxy(args)) => {
            let json = args.json;
            let binary = args
                .server_binary
                .clone()
                .map_or_else(std::env::current_exe, Ok)?;
            let report = crate::bench_llm::run_proxy(args, &binary).await?;
            print_report(&report, json)
        }
        Command::Bench(BenchCommand::Arena(args)) => {
            let json = args.json;
            let binary = args
                .server_binary
                .clone()
                .map_or_else(std::env::current_exe, Ok)?;
            let report = crate::bench_llm::run_arena(args, &binary).await?;
            print_report(&report, json)
        }
        Command::Bench(BenchCommand::Active(args)) => {
            let json = args.json;
            let report =
                tokio::task::spawn_blocking(move || moat_trainer::cli::run_active_bench(args))
                    .await??;
            print_report(&report, json)
        }
        Command::Bench(BenchCommand::Rigging(args)) => {
            let config = args.config()?;
            let report = tokio::task::spawn_blocking(move || {
                moat_stats::rigging_simulation::simulate_rigging(&config)
            })
            .await?;
            print_report(&report, args.json)
        }
        Command::Export(args) => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            crate::export_cli::run(&store, args).await?;
            store.close().await;
            Ok(())
        }
        Command::Generate(args) => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            let report = crate::generate::run(&store, args).await;
            store.close().await;
            let report = report?;
            println!("{report}");
            if !report.failed.is_empty() {
                anyhow::bail!("{} prompts failed", report.failed.len());
            }
            Ok(())
        }
        Command::JudgePrompts(args) => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            let report = crate::judge::run(&store, args).await;
            store.close().await;
            let report = report?;
            println!("{report}");
            if !report.failed.is_empty() {
                anyhow::bail!("{} prompts were not judged", report.failed.len());
            }
            Ok(())
        }
        Command::AdminToken(command) => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            let result = run_admin_token(&store, command).await;
            store.close().await;
            println!("{}", result?);
            Ok(())
        }
        Command::Audit { limit } => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            let entries = store.audit_log(limit.max(1)).await;
            store.close().await;
            for entry in entries? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    moat_exports::record::rfc3339_utc(entry.at_ms),
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.detail
                );
            }
            Ok(())
        }
        Command::Key(command) => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            let result = match command {
                KeyCommand::Create { name } => store.create_api_key(&name).await.map(|key| {
                    format!("API key {name:?} (shown once; only its digest is stored):\n{key}")
                }),
                KeyCommand::List => store.list_api_keys().await.map(|keys| {
                    keys.iter()
                        .map(|k| {
                            format!(
                                "{}\tcreated {}\tlast used {}\t{}",
                                k.name,
                                moat_exports::record::rfc3339_utc(k.created_ms),
                                k.last_used_ms
                                    .map(moat_exports::record::rfc3339_utc)
                                    .unwrap_or_else(|| "never".into()),
                                if k.revoked { "revoked" } else { "active" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }),
                KeyCommand::Revoke { name } => store
                    .revoke_api_key(&name)
                    .await
                    .map(|()| format!("API key {name:?} revoked")),
            };
            store.close().await;
            println!("{}", result?);
            Ok(())
        }
        Command::Doctor {
            models,
            site_root,
            min_free_mib,
            json,
        } => {
            let report = crate::doctor::run(&crate::doctor::DoctorConfig {
                database_url,
                connect_timeout,
                data_dir: cli.data_dir.clone(),
                site: match site_root {
                    Some(dir) => crate::site::Site::Dir(dir),
                    None => crate::site::Site::embedded(),
                },
                models,
                min_free_bytes: min_free_mib << 20,
            })
            .await;
            print_report(&report, json)?;
            match report.failures() {
                0 => Ok(()),
                n => Err(crate::problem::Problem::new(format!(
                    "moat doctor found {n} problem{} (FAIL above)",
                    if n == 1 { "" } else { "s" }
                ))
                .into()),
            }
        }
        Command::Study(command) => {
            let store = Store::connect_within(&database_url, connect_timeout).await?;
            let backend = crate::service::AppService::new(store, String::new());
            let result = crate::study_cli::run(&backend, command).await;
            backend.store.close().await;
            println!("{}", result?);
            Ok(())
        }
    }
}

/// `moat admin-token …`: what it printed, or why not. Changes are written to the audit log as `cli`.
async fn run_admin_token(store: &Store, command: AdminTokenCommand) -> anyhow::Result<String> {
    match command {
        AdminTokenCommand::Create {
            name,
            role,
            studies,
        } => {
            let role = moat_app::wire::AdminRole::parse(&role).map_err(anyhow::Error::msg)?;
            let token = store.create_admin_token(&name, role, &studies).await?;
            store
                .record_audit(
                    "cli",
                    "token.create",
                    name.trim(),
                    &format!("{} {}", role.as_str(), studies.join(",")),
                )
                .await?;
            Ok(format!(
                "Admin token {name:?} ({}) (shown once; only its digest is stored):\n{token}",
                role.as_str()
            ))
        }
        AdminTokenCommand::List => Ok(store
            .list_admin_tokens()
            .await?
            .iter()
            .map(|t| {
                format!(
                    "{}\t{}\tstudies {}\tcreated {}\tlast used {}\t{}",
                    t.name,
                    t.role.as_str(),
                    if t.studies.is_empty() {
                        "-".to_string()
                    } else {
                        t.studies.join(",")
                    },
                    moat_exports::record::rfc3339_utc(t.created_ms),
                    t.last_used_ms
                        .map(moat_exports::record::rfc3339_utc)
                        .unwrap_or_else(|| "never".into()),
                    if t.revoked { "revoked" } else { "active" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")),
        AdminTokenCommand::Revoke { name } => {
            store.revoke_admin_token(&name).await?;
            store.record_audit("cli", "token.revoke", &name, "").await?;
            Ok(format!("Admin token {name:?} revoked; its sessions ended"))
        }
        AdminTokenCommand::Studies { name, studies } => {
            store.set_admin_token_studies(&name, &studies).await?;
            store
                .record_audit("cli", "token.studies", &name, &studies.join(","))
                .await?;
            Ok(if studies.is_empty() {
                format!("Admin token {name:?} has no studies granted now")
            } else {
                format!("Admin token {name:?} now has: {}", studies.join(", "))
            })
        }
    }
}
