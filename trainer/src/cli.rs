//! Command-line surfaces for `moat train` and `moat score` (the `moat` binary flattens these).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::bert::{BertSpec, FineTune};
use crate::data::{load_pairs, PreferencePair, RowRange};
use crate::hashed::HashedConfig;
use crate::train::{
    load_trained, train, BackboneConfig, DeviceChoice, MarginMode, RunOptions, TrainConfig,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackboneKind {
    /// Hashed n-gram features and a linear head: no weights needed, trains in seconds.
    Hashed,
    /// A BERT-family encoder from --model-dir with a scalar head.
    Bert,
}

/// Train a reward model on preference pairs.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Pairs to train on: TRL JSONL (plain or conversational) or HH-RLHF JSONL, optionally gzipped.
    /// (Optional here so that a front end can offer another source, such as `--study`, and call
    /// [`run_train_on`] with the pairs itself.)
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Only these rows of --data, 1-based and inclusive, e.g. 1-2000.
    #[arg(long, value_name = "FIRST-LAST")]
    pub rows: Option<RowRange>,
    /// Held-out pairs; without it a seeded split by prompt of --data is held out.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Only these rows of --eval, e.g. 2001-2312.
    #[arg(long, value_name = "FIRST-LAST")]
    pub eval_rows: Option<RowRange>,
    /// Fraction of --data held out (by prompt) when --eval is not given.
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f64,
    #[arg(long, value_enum, default_value_t = BackboneKind::Hashed)]
    pub backbone: BackboneKind,
    /// Folder with config.json, tokenizer.json and model.safetensors (bert backbone).
    #[arg(long, env = "MOAT_MINILM_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Where to write the model, its config, checkpoints and the report.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N (cuda needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Defaults: 10 (hashed), 1 (bert).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Pairs per forward/backward pass. Defaults: 32 (hashed), 8 (bert).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step. Defaults: 1 (hashed), 2 (bert).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Workers that share each micro-batch's pairs, each on one CPU thread. Default: one per
    /// `--threads` for the transformer modes on the CPU, else 1 (1: the whole batch on all threads).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Learning rate of the encoder parameters. Defaults: 1e-3 (LoRA adapters), 5e-5 (top-N layers).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning rate of the head and of the hashed model. Defaults: 2e-2 (hashed), 2e-3 (bert).
    #[arg(long)]
    pub head_lr: Option<f64>,
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Tokens per input (bert), context cut from the left.
    #[arg(long, default_value_t = 256)]
    pub max_length: usize,
    /// head, top-N or lora (bert).
    #[arg(long, default_value = "lora")]
    pub mode: FineTune,
    #[arg(long, default_value_t = 8)]
    pub lora_rank: usize,
    /// Projections LoRA adapts: query, key, value, attention_output, intermediate, output.
    #[arg(long, value_delimiter = ',', default_value = "query,value")]
    pub lora_targets: Vec<String>,
    /// LoRA scaling numerator; default 2 × rank.
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Hidden width of an MLP head for the hashed backbone (0: linear).
    #[arg(long, default_value_t = 0)]
    pub hidden: usize,
    /// log2 of the number of hashed feature slots.
    #[arg(long, default_value_t = 18)]
    pub hash_bits: u32,
    /// Evaluate every N optimizer steps (0: at the end of each epoch).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Stop after N evaluations without a better eval loss, keeping the best weights.
    #[arg(long, value_name = "PATIENCE")]
    pub early_stopping: Option<usize>,
    /// Continue the run saved in --out.
    #[arg(long)]
    pub resume: bool,
    /// Bradley–Terry margin: `data` (the pairs' own margins, else 0), `none`, or a number for all pairs.
    #[arg(long, default_value = "data")]
    pub margin: MarginMode,
    /// Reward-centering coefficient (TRL's center_rewards_coefficient).
    #[arg(long, default_value_t = 0.0)]
    pub center_coef: f64,
    /// CPU threads for candle (sets RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let backbone = match self.backbone {
            BackboneKind::Hashed => BackboneConfig::Hashed(HashedConfig {
                hidden: self.hidden,
                dim_bits: self.hash_bits,
                ..Default::default()
            }),
            BackboneKind::Bert => {
                let model_dir = self
                    .model_dir
                    .clone()
                    .context("--backbone bert needs --model-dir (or MOAT_MINILM_DIR)")?;
                let mode = match self.mode {
                    FineTune::Lora { .. } => FineTune::Lora {
                        rank: self.lora_rank,
                        alpha: self.lora_alpha.unwrap_or(2.0 * self.lora_rank as f64),
                    },
                    other => other,
                };
                BackboneConfig::Bert(BertSpec {
                    model_dir,
                    mode,
                    max_length: self.max_length,
                    lora_targets: self.lora_targets.clone(),
                })
            }
        };
        let mut config = TrainConfig::new(backbone);
        config.seed = self.seed;
        config.epochs = self.epochs.unwrap_or(config.epochs);
        config.batch_size = self.batch_size.unwrap_or(config.batch_size);
        config.grad_accum = self.grad_accum.unwrap_or(config.grad_accum);
        config.workers = self.workers.unwrap_or(config.workers);
        config.max_steps = self.max_steps;
        config.lr = self.lr.unwrap_or(config.lr);
        config.head_lr = self.head_lr.unwrap_or(config.head_lr);
        config.warmup_ratio = self.warmup_ratio;
        config.optimizer.weight_decay = self.weight_decay;
        config.margin = self.margin;
        config.center_coef = self.center_coef;
        config.eval_every = self.eval_every;
        config.early_stopping = self.early_stopping;
        config.eval_fraction = self.eval_fraction;
        config.run = RunOptions {
            out: Some(self.out.clone()),
            device: self.device,
            resume: self.resume,
            progress: !self.quiet,
        };
        Ok(config)
    }
}

/// Sets candle's CPU thread count; must run before the first tensor operation.
fn set_threads(threads: Option<usize>) {
    if let Some(threads) = threads {
        // Edition 2021: `set_var` is safe; we call it before candle (or rayon) starts any thread.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// `moat train --data FILE`: reads the pairs of `--data` (and `--eval`), trains, prints the report.
pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let data = args.data.clone().context("--data FILE is required")?;
    // Fail before reading the data when the device cannot be used.
    args.device.device()?;
    let (train_pairs, summary) = load_pairs(&data, args.rows)?;
    eprintln!("train data {}: {summary}", data.display());
    run_train_on(args, train_pairs)
}

/// Like [`run_train`] with training pairs from elsewhere (e.g. a study's decided votes, ties and
/// both-bad already left out); `args.data` is ignored, `--eval` still applies.
pub fn run_train_on(args: TrainArgs, train_pairs: Vec<PreferencePair>) -> anyhow::Result<()> {
    set_threads(args.threads);
    let config = args.config()?;
    if config.worker_count() > 1 && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // candle runs large element-wise ops on one process-wide pool behind a lock, so workers
        // sharing a batch would take turns at it; with this each op stays on its worker's thread.
        // Edition 2021: `set_var` is safe; no candle op has run yet, so the pool is not built.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let eval_pairs = match &args.eval {
        Some(path) => {
            let (pairs, summary) = load_pairs(path, args.eval_rows)?;
            eprintln!("eval data {}: {summary}", path.display());
            Some(pairs)
        }
        None => None,
    };
    let report = train(train_pairs, eval_pairs, &config)?;
    println!("{report}");
    eprintln!("model written to {}", args.out.display());
    Ok(())
}

/// Score preference pairs with a trained reward model.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// A folder written by `moat train --out`.
    #[arg(long)]
    pub model: PathBuf,
    /// Pairs to score (same formats as `moat train --data`).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, value_name = "FIRST-LAST")]
    pub rows: Option<RowRange>,
    /// JSONL output; stdout when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The base encoder's folder, when it moved since training (bert).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    #[arg(long)]
    pub threads: Option<usize>,
}

/// One scored row of `moat score`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScoredPair {
    pub prompt: Vec<moat_exports::Message>,
    pub chosen: String,
    pub rejected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub reward_chosen: f32,
    pub reward_rejected: f32,
}

pub fn run_score(args: ScoreArgs) -> anyhow::Result<()> {
    set_threads(args.threads);
    let device = args.device.device()?;
    let trained = load_trained(&args.model, args.model_dir.as_deref(), &device)?;
    let (pairs, summary) = load_pairs(&args.data, args.rows)?;
    eprintln!("{}: {summary}", args.data.display());
    let scores = trained.model.score_pairs(&pairs)?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for (pair, score) in pairs.into_iter().zip(&scores) {
        let row = ScoredPair {
            prompt: pair.prompt,
            chosen: pair.chosen,
            rejected: pair.rejected,
            category: pair.category,
            reward_chosen: score.chosen,
            reward_rejected: score.rejected,
        };
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Evaluate a trained reward model on a benchmark file (RewardBench v1 or 2, TRL or HH-RLHF pairs).
#[derive(Debug, Clone, clap::Args)]
pub struct RmEvalArgs {
    /// A folder written by `moat train --out`.
    #[arg(long)]
    pub model: PathBuf,
    /// The benchmark file: JSON Lines, a JSON array, gzip or Parquet. (Optional here so that a front
    /// end can offer another source, such as a study's votes.)
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::benchmark::BenchFormat::Auto)]
    pub format: crate::benchmark::BenchFormat,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The base encoder's folder, when it moved since training (bert).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    #[arg(long)]
    pub threads: Option<usize>,
}

impl RmEvalArgs {
    /// Loads the model named by `--model`.
    pub fn load_model(&self) -> anyhow::Result<crate::train::TrainedModel> {
        set_threads(self.threads);
        let device = self.device.device()?;
        load_trained(&self.model, self.model_dir.as_deref(), &device)
    }
}

/// `moat rm eval --data FILE`: per-subset scores with intervals and the format's summary scores.
pub fn run_rm_eval(args: RmEvalArgs) -> anyhow::Result<()> {
    let data = args.data.clone().context("--data FILE is required")?;
    let file = crate::benchmark::read_bench_file(&data, args.format)?;
    let trained = args.load_model()?;
    eprintln!(
        "{}: {} items from {} rows{}",
        data.display(),
        file.items.len(),
        file.rows_read,
        file.skipped
            .iter()
            .map(|(reason, count)| format!("; skipped {count}: {reason}"))
            .collect::<String>()
    );
    let scores = crate::benchmark::score_items(&trained.model, &file.items)?;
    let report = crate::benchmark::bench_report(file.format, &file.items, &scores);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

/// `moat rm eval --study SLUG`: the agreement ceiling of a study's multiply-rated items.
pub fn run_rm_ceiling(
    args: RmEvalArgs,
    items: Vec<crate::ceiling::RatedItem>,
) -> anyhow::Result<crate::ceiling::CeilingReport> {
    let trained = args.load_model()?;
    let report = crate::ceiling::model_ceiling(&trained.model, &items)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(report)
}

/// The active-sampling simulation on real HH-RLHF pairs (see [`crate::active`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ActiveBenchArgs {
    /// Pairs file: the pool the simulated raters vote on and the held-out pairs.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "1-2000")]
    pub pool_rows: RowRange,
    #[arg(long, default_value = "2001-2312")]
    pub eval_rows: RowRange,
    /// Policies to compare.
    #[arg(long, value_delimiter = ',', default_value = "uniform,uncertainty")]
    pub policies: Vec<crate::active::ActivePolicy>,
    /// Seeds (one simulated study per policy and seed; the same raters' luck for every policy).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// Probability that a simulated vote agrees with the dataset's choice.
    #[arg(long, default_value_t = 0.8)]
    pub rater_accuracy: f64,
    #[arg(long, default_value_t = 100)]
    pub first_votes: usize,
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    #[arg(long, default_value_t = 1000)]
    pub max_votes: usize,
    #[arg(long, default_value_t = 0.60)]
    pub target: f64,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long)]
    pub json: bool,
}

/// Every run of the active-sampling simulation, and per policy the mean curve.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActiveBenchReport {
    pub config: crate::active::SimulationConfig,
    pub pool_pairs: usize,
    pub eval_pairs: usize,
    pub runs: Vec<crate::active::SimulationRun>,
}

impl std::fmt::Display for ActiveBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "pool {} pairs, held out {}, raters agree with the data {:.0}% of the time, target {:.3}",
            self.pool_pairs,
            self.eval_pairs,
            self.config.rater_accuracy * 100.0,
            self.config.target
        )?;
        let mut policies: Vec<crate::active::ActivePolicy> = Vec::new();
        for run in &self.runs {
            if !policies.contains(&run.policy) {
                policies.push(run.policy);
            }
        }
        let votes: Vec<usize> = self.runs[0].curve.iter().map(|&(v, _)| v).collect();
        write!(f, "{:<14}", "votes")?;
        for v in &votes {
            write!(f, "{v:>7}")?;
        }
        writeln!(f, "   votes to target (per seed)")?;
        for policy in policies {
            let runs: Vec<_> = self.runs.iter().filter(|r| r.policy == policy).collect();
            write!(f, "{:<14}", policy.name())?;
            for index in 0..votes.len() {
                let mean = runs
                    .iter()
                    .filter_map(|r| r.curve.get(index).map(|&(_, a)| a))
                    .sum::<f64>()
                    / runs.len() as f64;
                write!(f, "{mean:>7.3}")?;
            }
            let reached: Vec<String> = runs
                .iter()
                .map(|r| {
                    r.votes_to_target
                        .map_or("never".to_string(), |v| v.to_string())
                })
                .collect();
            writeln!(f, "   {}", reached.join(", "))?;
        }
        Ok(())
    }
}

/// `moat bench active`.
pub fn run_active_bench(args: ActiveBenchArgs) -> anyhow::Result<ActiveBenchReport> {
    let (pool, _) = load_pairs(&args.data, Some(args.pool_rows))?;
    let (held_out, _) = load_pairs(&args.data, Some(args.eval_rows))?;
    let config = crate::active::SimulationConfig {
        rater_accuracy: args.rater_accuracy,
        first_votes: args.first_votes,
        batch: args.batch,
        max_votes: args.max_votes,
        target: args.target,
        epochs: args.epochs,
    };
    let mut runs = Vec::new();
    for &seed in &args.seeds {
        for &policy in &args.policies {
            let run = crate::active::simulate(&pool, &held_out, policy, &config, seed)?;
            eprintln!(
                "seed {seed} {}: {:?}",
                policy.name(),
                run.curve
                    .iter()
                    .map(|&(v, a)| format!("{v}:{a:.3}"))
                    .collect::<Vec<_>>()
            );
            runs.push(run);
        }
    }
    Ok(ActiveBenchReport {
        config,
        pool_pairs: pool.len(),
        eval_pairs: held_out.len(),
        runs,
    })
}
