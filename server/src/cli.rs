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
#[command(name = "moat", version, about = "Blind human-preference studies of language models")]
pub struct Cli {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: a SQLite file in the data directory.
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the default SQLite database lives.
    #[arg(long, global = true, env = "MOAT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the rater and admin web app and the JSON API.
    Serve {
        #[arg(long, env = "MOAT_ADDR", default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
        /// Load and open the demo study (if it is not there yet).
        #[arg(long)]
        demo: bool,
        /// Folder holding pkg/moat.js and pkg/moat_bg.wasm (built by scripts/build.sh).
        #[arg(long, env = "MOAT_SITE_ROOT", default_value = "target/site")]
        site_root: PathBuf,
        /// The admin token; if unset, one is generated at first start and printed once.
        #[arg(long, env = "MOAT_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Import prompts and model responses (Moat JSONL) into a study, creating it as a draft if needed.
    Import {
        file: PathBuf,
        #[arg(long)]
        study: String,
        /// Declare a model: NAME=open|closed[,PROVIDER] (repeatable); or use the file's header line.
        #[arg(long = "model")]
        models: Vec<String>,
    },
    /// Benchmarks (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Export a study's votes.
    Export {
        #[arg(long)]
        study: String,
        #[arg(long, default_value = "trl")]
        format: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Concurrent simulated raters against a SQLite-backed server over loopback HTTP.
    Votes(crate::bench::VoteBenchArgs),
}

impl Cli {
    pub fn database_url(&self) -> anyhow::Result<String> {
        if let Some(url) = self.database_url.as_ref().filter(|url| !url.trim().is_empty()) {
            return Ok(url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        Ok(format!("sqlite://{}", self.data_dir.join("moat.db").display()))
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let database_url = cli.database_url()?;
    match cli.command {
        Command::Serve { addr, demo, site_root, admin_token } => {
            if !site_root.join("pkg").join("moat.js").exists() {
                tracing::warn!(
                    "{} has no pkg/moat.js: pages work as plain HTML forms, without hydration; run scripts/build.sh",
                    site_root.display()
                );
            }
            let app = Application::build(ServeConfig {
                database_url,
                addr,
                site_root,
                admin_token: admin_token.map(Secret),
                demo,
            })
            .await?;
            println!("Moat is listening on http://{}", app.addr);
            if demo {
                println!("Demo study: http://{}/s/{}   Admin: http://{}/admin", app.addr, crate::DEMO_SLUG, app.addr);
            }
            app.run().await?;
            Ok(())
        }
        Command::Import { file, study, models } => {
            let slug = StudySlug::parse(&study).map_err(anyhow::Error::msg)?;
            let models = models
                .iter()
                .map(|m| ModelSpec::parse_flag(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let store = Store::connect(&database_url).await?;
            let input = tokio::fs::File::open(&file)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
            let report = import_jsonl(&store, &slug, tokio::io::BufReader::new(input), &models)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was imported", file.display()))?;
            println!("{report}");
            store.close().await;
            Ok(())
        }
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
        Command::Export { study, format, out } => {
            let store = Store::connect(&database_url).await?;
            let study = store.study(&study).await?;
            let summary = crate::export::export_to_file(&store, &study, &format, &out).await?;
            println!("{}: {summary}", out.display());
            store.close().await;
            Ok(())
        }
    }
}
