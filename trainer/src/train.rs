//! The training loop, checkpoints, and loading a trained model back for scoring.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moat_exports::Message;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::bert::{BertRewardModel, BertSpec};
use crate::data::{split_by_prompt, PreferencePair};
use crate::eval::{EvalReport, PairScore};
use crate::hashed::{HashedConfig, HashedModel};
use crate::model::RewardModel;
use crate::optim::{schedule, AdamW, AdamWConfig};
use crate::params::ParamGroup;
use crate::step::{batch_pass, EncodedPair, Workers};

/// Where the model runs. `cuda` needs the crate's `cuda` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match text.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(ordinal)) => Ok(DeviceChoice::Cuda(ordinal)),
                _ => Err(format!("expected cpu, cuda or cuda:N, got {text:?}")),
            },
        }
    }
}

impl DeviceChoice {
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(ordinal) => {
                anyhow::ensure!(
                    cfg!(feature = "cuda"),
                    "--device cuda needs a build with CUDA support: rebuild with `--features moat-trainer/cuda` \
                     (and the CUDA toolkit installed), or use --device cpu"
                );
                Device::new_cuda(ordinal).with_context(|| {
                    format!(
                        "no usable CUDA device {ordinal} (is a GPU present and its driver loaded?)"
                    )
                })
            }
        }
    }
}

/// How the Bradley–Terry margin of each pair is chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginMode {
    /// The pair's own `margin` where the data has one, else 0 (what TRL does).
    Data,
    /// The same margin for every pair (0 switches margins off).
    Fixed(f32),
}

impl FromStr for MarginMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "data" => Ok(MarginMode::Data),
            "none" => Ok(MarginMode::Fixed(0.0)),
            _ => text
                .parse()
                .map(MarginMode::Fixed)
                .map_err(|_| format!("expected data, none or a number, got {text:?}")),
        }
    }
}

impl MarginMode {
    fn of(self, pair: &PreferencePair) -> f32 {
        match self {
            MarginMode::Data => pair.margin.unwrap_or(0.0),
            MarginMode::Fixed(value) => value,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BackboneConfig {
    Hashed(HashedConfig),
    Bert(BertSpec),
}

/// Everything about a training run. Saved as `config.json` beside the weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub backbone: BackboneConfig,
    pub seed: u64,
    pub epochs: usize,
    /// Pairs per forward/backward pass.
    pub batch_size: usize,
    /// Micro-batches summed into one optimizer step (effective batch = batch_size × grad_accum).
    pub grad_accum: usize,
    /// Workers that share each micro-batch's pairs, each on one CPU thread (`step.rs`); 0: one per
    /// candle thread where the model gains from it (the transformer modes on the CPU), else 1.
    #[serde(default)]
    pub workers: usize,
    /// Stop after this many optimizer steps (the schedule is planned for them).
    pub max_steps: Option<usize>,
    /// Learning rate of the encoder parameters (LoRA adapters, top layers).
    pub lr: f64,
    /// Learning rate of the head (and of the whole hashed model).
    pub head_lr: f64,
    pub warmup_ratio: f64,
    pub optimizer: AdamWConfig,
    pub margin: MarginMode,
    /// TRL's `center_rewards_coefficient`.
    pub center_coef: f64,
    /// Evaluate every N optimizer steps (0: at the end of each epoch only).
    pub eval_every: usize,
    /// Stop when the eval loss has not improved for this many evaluations, and keep the best weights.
    pub early_stopping: Option<usize>,
    /// Fraction of pairs held out (by prompt) when no eval pairs are given.
    pub eval_fraction: f64,
    #[serde(skip)]
    pub run: RunOptions,
}

/// What does not belong in a saved config: where to write, what to resume, how to show progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub device: DeviceChoice,
    pub resume: bool,
    pub progress: bool,
}

impl TrainConfig {
    /// The workers that share each micro-batch: `workers`, or when that is 0 one per candle thread
    /// for the transformer modes on the CPU (their passes are long and much of them single-threaded
    /// element-wise work), else 1.
    pub fn worker_count(&self) -> usize {
        match (self.workers, &self.backbone) {
            (0, BackboneConfig::Bert(spec))
                if spec.mode != crate::bert::FineTune::Head
                    && self.run.device == DeviceChoice::Cpu =>
            {
                candle_core::utils::get_num_threads()
            }
            (0, _) => 1,
            (count, _) => count,
        }
    }

    /// Defaults that suit each backbone.
    pub fn new(backbone: BackboneConfig) -> Self {
        let bert = matches!(backbone, BackboneConfig::Bert(_));
        TrainConfig {
            seed: 0,
            epochs: if bert { 1 } else { 10 },
            batch_size: if bert { 8 } else { 32 },
            grad_accum: if bert { 2 } else { 1 },
            workers: 0,
            max_steps: None,
            // LoRA adapters start at zero and take a large rate; whole pretrained layers a small one.
            lr: match &backbone {
                BackboneConfig::Bert(spec)
                    if matches!(spec.mode, crate::bert::FineTune::Top { .. }) =>
                {
                    5e-5
                }
                _ => 1e-3,
            },
            head_lr: if bert { 2e-3 } else { 2e-2 },
            warmup_ratio: 0.1,
            optimizer: AdamWConfig::default(),
            margin: MarginMode::Data,
            center_coef: 0.0,
            eval_every: 0,
            early_stopping: None,
            eval_fraction: 0.1,
            backbone,
            run: RunOptions::default(),
        }
    }
}

/// One evaluation during training.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    pub epoch: usize,
    pub train_loss: f64,
    pub eval_loss: f64,
    pub eval_accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    pub backbone: String,
    pub train_pairs: usize,
    pub eval_pairs: usize,
    /// Eval pairs whose prompt also occurs in training (0 for the built-in split).
    pub eval_prompts_seen_in_training: usize,
    pub trainable_parameters: usize,
    pub steps: usize,
    pub epochs_run: usize,
    pub stopped_early: bool,
    /// Seconds spent tokenising / featurising (and, head-only, running the frozen encoder).
    pub encode_seconds: f64,
    /// Seconds in the training loop, evaluations excluded.
    pub train_seconds: f64,
    pub train_pairs_per_second: f64,
    pub history: Vec<EvalPoint>,
    /// The evaluation of the weights that were kept (the best ones with early stopping).
    pub eval: Option<EvalReport>,
}

impl fmt::Display for TrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} train pairs, {} eval pairs, {} trainable parameters",
            self.backbone, self.train_pairs, self.eval_pairs, self.trainable_parameters
        )?;
        write!(
            f,
            "{} steps in {} epochs{}; training {:.1} s ({:.2} pairs/s), encoding {:.1} s",
            self.steps,
            self.epochs_run,
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            self.train_seconds,
            self.train_pairs_per_second,
            self.encode_seconds
        )?;
        if self.eval_prompts_seen_in_training > 0 {
            write!(
                f,
                "\nwarning: {} eval pairs share their prompt with training pairs",
                self.eval_prompts_seen_in_training
            )?;
        }
        if let Some(eval) = &self.eval {
            write!(f, "\n{eval}")?;
        }
        Ok(())
    }
}

/// A model of either backbone.
pub enum AnyModel {
    Hashed(HashedModel),
    Bert(Box<BertRewardModel>),
}

impl AnyModel {
    pub fn build(backbone: &BackboneConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        Ok(match backbone {
            BackboneConfig::Hashed(config) => {
                AnyModel::Hashed(HashedModel::new(config.clone(), seed, device)?)
            }
            BackboneConfig::Bert(spec) => {
                AnyModel::Bert(Box::new(BertRewardModel::load(spec.clone(), seed, device)?))
            }
        })
    }

    pub fn params(&self) -> &crate::params::ParamSet {
        match self {
            AnyModel::Hashed(model) => model.params(),
            AnyModel::Bert(model) => model.params(),
        }
    }

    /// The reward of one response to `prompt`, computed alone.
    pub fn score_response(&self, prompt: &[Message], response: &str) -> anyhow::Result<f32> {
        Ok(match self {
            AnyModel::Hashed(model) => model.score(&model.encode(prompt, response)?)?,
            AnyModel::Bert(model) => model.score(&model.encode(prompt, response)?)?,
        })
    }

    /// The rewards of both sides of every pair, each row scored alone.
    pub fn score_pairs(&self, pairs: &[PreferencePair]) -> anyhow::Result<Vec<PairScore>> {
        match self {
            AnyModel::Hashed(model) => score_pairs(model, pairs),
            AnyModel::Bert(model) => score_pairs(model.as_ref(), pairs),
        }
    }
}

/// The rewards of both sides of every pair, each row scored alone (see [`RewardModel`]).
pub fn score_pairs<M: RewardModel>(
    model: &M,
    pairs: &[PreferencePair],
) -> anyhow::Result<Vec<PairScore>> {
    pairs
        .iter()
        .map(|pair| {
            let chosen = model.score(&model.encode(&pair.prompt, &pair.chosen)?)?;
            let rejected = model.score(&model.encode(&pair.prompt, &pair.rejected)?)?;
            Ok(PairScore { chosen, rejected })
        })
        .collect()
}

/// File names inside a checkpoint folder.
pub mod files {
    pub const CONFIG: &str = "config.json";
    /// The trainable weights of the hashed backbone.
    pub const MODEL: &str = "model.safetensors";
    /// The reward head of the bert backbone.
    pub const HEAD: &str = "head.safetensors";
    /// LoRA adapters (bert, `lora`), saved apart from the base weights, which are not copied.
    pub const ADAPTERS: &str = "adapters.safetensors";
    /// The fine-tuned top layers (bert, `top-N`).
    pub const LAYERS: &str = "layers.safetensors";
    /// The base model's tokenizer and config, copied so a checkpoint says what it was trained on.
    pub const BASE_TOKENIZER: &str = "base-tokenizer.json";
    pub const BASE_CONFIG: &str = "base-config.json";
    pub const OPTIMIZER: &str = "optimizer.safetensors";
    pub const STATE: &str = "trainer-state.json";
    pub const REPORT_JSON: &str = "report.json";
    pub const REPORT_TEXT: &str = "report.txt";
}

/// Where training stood at a checkpoint, for `--resume`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct TrainerState {
    step: usize,
    epoch: usize,
    /// Micro-batches of `epoch` already done.
    batches_done: usize,
    best_eval_loss: Option<f64>,
    evals_without_improvement: usize,
    history: Vec<EvalPoint>,
    train_seconds: f64,
    pairs_seen: usize,
}

/// The weight files of a model: which parameter group goes to which file.
fn weight_files(backbone: &BackboneConfig) -> Vec<(&'static str, ParamGroup)> {
    match backbone {
        BackboneConfig::Hashed(_) => vec![(files::MODEL, ParamGroup::Head)],
        BackboneConfig::Bert(spec) => match spec.mode {
            crate::bert::FineTune::Head => vec![(files::HEAD, ParamGroup::Head)],
            crate::bert::FineTune::Top { .. } => vec![
                (files::HEAD, ParamGroup::Head),
                (files::LAYERS, ParamGroup::Encoder),
            ],
            crate::bert::FineTune::Lora { .. } => vec![
                (files::HEAD, ParamGroup::Head),
                (files::ADAPTERS, ParamGroup::Encoder),
            ],
        },
    }
}

fn save_weights(model: &AnyModel, backbone: &BackboneConfig, dir: &Path) -> anyhow::Result<()> {
    let tensors = model.params().tensors_by_group();
    for (file, group) in weight_files(backbone) {
        let path = dir.join(file);
        let part = tensors.get(&group).cloned().unwrap_or_default();
        candle_core::safetensors::save(&part, &path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn load_weights(
    model: &AnyModel,
    backbone: &BackboneConfig,
    dir: &Path,
    device: &Device,
) -> anyhow::Result<()> {
    let mut tensors = std::collections::HashMap::new();
    for (file, _) in weight_files(backbone) {
        let path = dir.join(file);
        tensors.extend(
            candle_core::safetensors::load(&path, device)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    model
        .params()
        .set_from(&tensors)
        .with_context(|| format!("loading the weights in {}", dir.display()))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn save_model(model: &AnyModel, config: &TrainConfig, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_json(&dir.join(files::CONFIG), config)?;
    if let BackboneConfig::Bert(spec) = &config.backbone {
        for (from, to) in [
            ("tokenizer.json", files::BASE_TOKENIZER),
            ("config.json", files::BASE_CONFIG),
        ] {
            std::fs::copy(spec.model_dir.join(from), dir.join(to))
                .with_context(|| format!("copying {from} of the base model"))?;
        }
    }
    save_weights(model, &config.backbone, dir)
}

/// A trained model read back from its folder.
pub struct TrainedModel {
    pub config: TrainConfig,
    pub model: AnyModel,
}

/// Loads the model saved in `dir`. For the bert backbone the base weights are read from the folder the
/// model was trained from, or from `base_model_dir` when given (a moved copy of the same model).
pub fn load_trained(
    dir: &Path,
    base_model_dir: Option<&Path>,
    device: &Device,
) -> anyhow::Result<TrainedModel> {
    let path = dir.join(files::CONFIG);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: TrainConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let (BackboneConfig::Bert(spec), Some(base)) = (&mut config.backbone, base_model_dir) {
        spec.model_dir = base.to_path_buf();
    }
    let model = AnyModel::build(&config.backbone, config.seed, device)?;
    load_weights(&model, &config.backbone, dir, device)?;
    Ok(TrainedModel { config, model })
}

/// Micro-batches of one epoch: a seeded shuffle, then within windows of 32 batches the pairs are sorted
/// by length so each batch pads little, then the batches themselves are shuffled.
fn epoch_batches(costs: &[usize], batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(epoch as u64),
    );
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.shuffle(&mut rng);
    let mut batches = Vec::new();
    for window in order.chunks(batch_size * 32) {
        let mut window = window.to_vec();
        window.sort_by_key(|&index| std::cmp::Reverse(costs[index]));
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Trains a reward model on `train_pairs`, evaluating on `eval_pairs` or, when none are given, on a
/// seeded by-prompt split of `train_pairs`. Writes the model to `config.run.out` when set.
pub fn train(
    train_pairs: Vec<PreferencePair>,
    eval_pairs: Option<Vec<PreferencePair>>,
    config: &TrainConfig,
) -> anyhow::Result<TrainReport> {
    train_keeping_model(train_pairs, eval_pairs, config).map(|(report, _)| report)
}

/// [`train`], also returning the trained model (for callers that score with it at once, such as the
/// active-sampling loop, without a round trip through the checkpoint folder).
pub fn train_keeping_model(
    train_pairs: Vec<PreferencePair>,
    eval_pairs: Option<Vec<PreferencePair>>,
    config: &TrainConfig,
) -> anyhow::Result<(TrainReport, AnyModel)> {
    let device = config.run.device.device()?;
    let (train_pairs, eval_pairs, seen) = match eval_pairs {
        Some(eval) => {
            let seen = crate::data::shared_prompts(&train_pairs, &eval);
            (train_pairs, eval, seen)
        }
        None => {
            let (train, eval) = split_by_prompt(train_pairs, config.eval_fraction, config.seed);
            (train, eval, 0)
        }
    };
    anyhow::ensure!(!train_pairs.is_empty(), "no training pairs");
    let model = AnyModel::build(&config.backbone, config.seed, &device)?;
    let mut report = match &model {
        AnyModel::Hashed(inner) => {
            train_model(inner, &model, &train_pairs, &eval_pairs, config, &device)?
        }
        AnyModel::Bert(inner) => train_model(
            inner.as_ref(),
            &model,
            &train_pairs,
            &eval_pairs,
            config,
            &device,
        )?,
    };
    report.eval_prompts_seen_in_training = seen;
    if let Some(out) = &config.run.out {
        write_json(&out.join(files::REPORT_JSON), &report)?;
        std::fs::write(out.join(files::REPORT_TEXT), format!("{report}\n"))?;
    }
    Ok((report, model))
}

fn progress_bar(total: usize, show: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Prints through the progress bar when it is drawn, to stderr otherwise.
fn log(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn encode_pairs<M: RewardModel>(
    model: &M,
    pairs: &[PreferencePair],
    margin: MarginMode,
) -> anyhow::Result<Vec<EncodedPair<M::Input>>> {
    pairs
        .iter()
        .map(|pair| {
            let chosen = model.encode(&pair.prompt, &pair.chosen)?;
            let rejected = model.encode(&pair.prompt, &pair.rejected)?;
            let cost = model.input_len(&chosen).max(model.input_len(&rejected));
            Ok(EncodedPair {
                chosen,
                rejected,
                margin: margin.of(pair),
                cost,
            })
        })
        .collect()
}

fn evaluate<M: RewardModel>(
    model: &M,
    pairs: &[PreferencePair],
    encoded: &[EncodedPair<M::Input>],
) -> anyhow::Result<EvalReport> {
    let scores = encoded
        .iter()
        .map(|pair| {
            Ok(PairScore {
                chosen: model.score(&pair.chosen)?,
                rejected: model.score(&pair.rejected)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(EvalReport::compute(pairs, &scores))
}

fn train_model<M: RewardModel + Sync>(
    model: &M,
    any: &AnyModel,
    train_pairs: &[PreferencePair],
    eval_pairs: &[PreferencePair],
    config: &TrainConfig,
    device: &Device,
) -> anyhow::Result<TrainReport> {
    anyhow::ensure!(
        config.batch_size > 0 && config.grad_accum > 0,
        "batch size and gradient accumulation must be at least 1"
    );
    let params = model.params();
    let started = Instant::now();
    // Head-only bert runs the frozen encoder here, once per input: minutes on a CPU, so say so.
    eprintln!(
        "encoding {} train and {} eval pairs",
        train_pairs.len(),
        eval_pairs.len()
    );
    let train = encode_pairs(model, train_pairs, config.margin)?;
    let eval = encode_pairs(model, eval_pairs, config.margin)?;
    let encode_seconds = started.elapsed().as_secs_f64();
    let costs: Vec<usize> = train.iter().map(|pair| pair.cost).collect();
    let batches_per_epoch = train.len().div_ceil(config.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(config.grad_accum);
    let planned = steps_per_epoch * config.epochs;
    let total_steps = config.max_steps.map_or(planned, |max| max.min(planned));
    let warmup = ((total_steps as f64) * config.warmup_ratio).ceil() as usize;
    let mut optimizer = AdamW::new(params, config.optimizer)?;
    let worker_count = config.worker_count();
    let workers = if worker_count > 1 {
        Some(Workers::new(worker_count)?)
    } else {
        None
    };
    let out = config.run.out.as_deref();
    let mut state = TrainerState::default();
    if config.run.resume {
        let dir = out.context("--resume needs the --out folder of the run to resume")?;
        let text = std::fs::read_to_string(dir.join(files::STATE))
            .with_context(|| format!("no checkpoint to resume in {}", dir.display()))?;
        state = serde_json::from_str(&text)?;
        load_weights(any, &config.backbone, dir, device)?;
        optimizer.load(params, &dir.join(files::OPTIMIZER), state.step, device)?;
    }
    let bar = progress_bar(total_steps, config.run.progress);
    bar.set_position(state.step as u64);
    log(
        &bar,
        format!(
            "training on {} pairs ({} held out), {} trainable parameters, {} steps{}",
            train.len(),
            eval.len(),
            params.count(None),
            total_steps,
            if state.step > 0 {
                format!(", resuming at step {}", state.step)
            } else {
                String::new()
            }
        ),
    );
    let mut best: Option<std::collections::HashMap<String, Tensor>> = None;
    let mut stopped_early = false;
    let (mut window_loss, mut window_hits, mut window_pairs) = (0.0f64, 0usize, 0usize);
    let mut last_log = Instant::now();
    let mut last_eval: Option<(usize, EvalReport)> = None;
    let lr = |group: ParamGroup| match group {
        ParamGroup::Head => config.head_lr,
        ParamGroup::Encoder => config.lr,
    };
    let checkpoint = |state: &TrainerState, optimizer: &AdamW| -> anyhow::Result<()> {
        if let Some(dir) = out {
            save_model(any, config, dir)?;
            optimizer.save(params, &dir.join(files::OPTIMIZER))?;
            write_json(&dir.join(files::STATE), state)?;
        }
        Ok(())
    };
    'epochs: for epoch in state.epoch..config.epochs {
        if state.step >= total_steps {
            break;
        }
        let batches = epoch_batches(&costs, config.batch_size, config.seed, epoch);
        let mut micro = 0;
        let mut clock = Instant::now();
        for (batch_index, batch) in batches.iter().enumerate() {
            if epoch == state.epoch && batch_index < state.batches_done {
                continue;
            }
            let pass = batch_pass(
                model,
                &train,
                batch,
                1.0 / config.grad_accum as f64,
                config.center_coef,
                workers.as_ref(),
            )?;
            for grads in &pass.grads {
                optimizer.accumulate(params, grads)?;
            }
            let n = batch.len();
            window_hits += pass
                .chosen
                .iter()
                .zip(&pass.rejected)
                .filter(|(c, r)| c > r)
                .count();
            window_loss += pass.loss_sum;
            window_pairs += n;
            state.pairs_seen += n;
            state.batches_done = batch_index + 1;
            micro += 1;
            if micro < config.grad_accum && batch_index + 1 < batches.len() {
                continue;
            }
            micro = 0;
            let scale = schedule(state.step, warmup, total_steps);
            optimizer.step(params, |group| lr(group) * scale)?;
            state.step += 1;
            state.train_seconds += clock.elapsed().as_secs_f64();
            clock = Instant::now();
            let last_train_loss = window_loss / window_pairs.max(1) as f64;
            let message = format!(
                "loss {:.4} acc {:.3} {:.1} pairs/s",
                last_train_loss,
                window_hits as f64 / window_pairs.max(1) as f64,
                state.pairs_seen as f64 / state.train_seconds.max(1e-9)
            );
            bar.set_message(message.clone());
            bar.set_position(state.step as u64);
            if bar.is_hidden() && last_log.elapsed() > Duration::from_secs(30) {
                eprintln!(
                    "step {}/{} epoch {}: {message}",
                    state.step,
                    total_steps,
                    epoch + 1
                );
                last_log = Instant::now();
            }
            if window_pairs >= 200 {
                (window_loss, window_hits, window_pairs) = (0.0, 0, 0);
            }
            let end_of_epoch = batch_index + 1 == batches.len();
            let done = state.step >= total_steps;
            let due = (config.eval_every > 0 && state.step % config.eval_every == 0)
                || end_of_epoch
                || done;
            if due && !eval.is_empty() {
                let report = evaluate(model, eval_pairs, &eval)?;
                state.history.push(EvalPoint {
                    step: state.step,
                    epoch: epoch + 1,
                    train_loss: last_train_loss,
                    eval_loss: report.mean_loss,
                    eval_accuracy: report.accuracy,
                });
                log(
                    &bar,
                    format!(
                        "step {} epoch {}: train loss {:.4}, eval loss {:.4}, eval accuracy {:.3} ({:.3}–{:.3})",
                        state.step,
                        epoch + 1,
                        last_train_loss,
                        report.mean_loss,
                        report.accuracy,
                        report.accuracy_low,
                        report.accuracy_high
                    ),
                );
                if state
                    .best_eval_loss
                    .is_none_or(|best| report.mean_loss < best)
                {
                    state.best_eval_loss = Some(report.mean_loss);
                    state.evals_without_improvement = 0;
                    if config.early_stopping.is_some() {
                        best = Some(
                            params
                                .tensors()
                                .into_iter()
                                .map(|(name, t)| Ok((name, t.copy()?)))
                                .collect::<candle_core::Result<_>>()?,
                        );
                    }
                } else {
                    state.evals_without_improvement += 1;
                }
                last_eval = Some((state.step, report));
                if config
                    .early_stopping
                    .is_some_and(|patience| state.evals_without_improvement >= patience)
                {
                    log(
                        &bar,
                        format!(
                            "early stopping: no better eval loss in {} evaluations",
                            state.evals_without_improvement
                        ),
                    );
                    stopped_early = true;
                }
            }
            if end_of_epoch {
                state.epoch = epoch + 1;
                state.batches_done = 0;
            }
            if due {
                checkpoint(&state, &optimizer)?;
            }
            if done || stopped_early {
                break 'epochs;
            }
        }
    }
    bar.finish_and_clear();
    if let Some(best) = &best {
        params.set_from(best)?;
    }
    let final_eval = match last_eval {
        _ if eval.is_empty() => None,
        // The last evaluation was of exactly the weights kept.
        Some((step, report)) if best.is_none() && step == state.step => Some(report),
        _ => Some(evaluate(model, eval_pairs, &eval)?),
    };
    if let Some(dir) = out {
        save_model(any, config, dir)?;
        optimizer.save(params, &dir.join(files::OPTIMIZER))?;
        write_json(&dir.join(files::STATE), &state)?;
    }
    let backbone = match &config.backbone {
        BackboneConfig::Hashed(hashed) => format!(
            "hashed (2^{} slots, {})",
            hashed.dim_bits,
            if hashed.hidden == 0 {
                "linear head".to_string()
            } else {
                format!("MLP {}", hashed.hidden)
            }
        ),
        BackboneConfig::Bert(spec) => format!(
            "bert {} ({}, max {} tokens)",
            spec.model_dir.display(),
            spec.mode,
            spec.max_length
        ),
    };
    Ok(TrainReport {
        backbone,
        train_pairs: train.len(),
        eval_pairs: eval.len(),
        eval_prompts_seen_in_training: 0,
        trainable_parameters: params.count(None),
        steps: state.step,
        epochs_run: state.epoch + usize::from(state.batches_done > 0),
        stopped_early,
        encode_seconds,
        train_seconds: state.train_seconds,
        train_pairs_per_second: state.pairs_seen as f64 / state.train_seconds.max(1e-9),
        history: state.history,
        eval: final_eval,
    })
}
