//! The `bert` backbone: a BERT-family encoder read from a local folder (`config.json`,
//! `tokenizer.json`, `model.safetensors`), mean pooling over the tokens of `[CLS] context [SEP] response
//! [SEP]`, and a scalar head; trained head-only, on the top N layers, or with LoRA adapters on the
//! attention's query and value projections.
//!
//! The configuration type and the weight layout are candle-transformers' `bert` ones (a test checks that
//! this encoder's output equals `candle_transformers::models::bert::BertModel`'s), but the forward pass
//! is written here because training needs what that module cannot give: its LayerNorm and softmax run
//! candle's fast kernels, which have no backward (gradients below them vanish silently), and its
//! projections are plain matmuls whose backward also computes the (wasted) gradient of every frozen
//! weight. Here frozen weights are plain tensors behind [`crate::ops::frozen_linear`], norms and softmax
//! carry hand-written backward passes, and nothing below the lowest trainable parameter is recorded at
//! all.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use candle_core::{DType, Device, Result, Tensor, D};
use moat_exports::Message;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

pub use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};

use crate::model::RewardModel;
use crate::ops;
use crate::params::{uniform, zeros, ParamGroup, ParamSet};

/// What of the encoder is trained (the head always is).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FineTune {
    /// Frozen encoder: pooled embeddings are computed once per input, then only the head trains.
    Head,
    /// The top `layers` transformer layers and the head.
    Top { layers: usize },
    /// LoRA adapters of rank `rank` on the query and value projections of every layer:
    /// `W x + (alpha / rank) · B A x`, with `A` random and `B` zero at the start.
    Lora { rank: usize, alpha: f64 },
}

impl FromStr for FineTune {
    type Err = String;

    /// `head`, `top-N`, `lora` (rank and alpha set separately) or `lora-R`.
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "head" => Ok(FineTune::Head),
            "lora" => Ok(FineTune::Lora {
                rank: 8,
                alpha: 16.0,
            }),
            _ => {
                if let Some(layers) = text.strip_prefix("top-") {
                    let layers = layers
                        .parse()
                        .map_err(|_| format!("bad layer count in {text:?}"))?;
                    Ok(FineTune::Top { layers })
                } else if let Some(rank) = text.strip_prefix("lora-") {
                    let rank: usize = rank.parse().map_err(|_| format!("bad rank in {text:?}"))?;
                    Ok(FineTune::Lora {
                        rank,
                        alpha: 2.0 * rank as f64,
                    })
                } else {
                    Err(format!("expected head, top-N or lora, got {text:?}"))
                }
            }
        }
    }
}

impl fmt::Display for FineTune {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FineTune::Head => write!(f, "head"),
            FineTune::Top { layers } => write!(f, "top-{layers}"),
            FineTune::Lora { rank, alpha } => write!(f, "lora (rank {rank}, alpha {alpha})"),
        }
    }
}

/// Everything needed to rebuild the model around saved trainable weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BertSpec {
    /// The folder with `config.json`, `tokenizer.json` and `model.safetensors` of the base encoder.
    pub model_dir: PathBuf,
    pub mode: FineTune,
    /// Tokens per input including `[CLS]` and the two `[SEP]`s; the context is cut from the left so the
    /// response is kept (and the response is cut from the right only when it alone is too long).
    pub max_length: usize,
    /// The projections LoRA adapts, by their short names: `query`, `key`, `value`, `attention_output`,
    /// `intermediate`, `output`. The default is query and value, as in the LoRA paper.
    #[serde(default = "default_lora_targets")]
    pub lora_targets: Vec<String>,
}

/// The short names of the six projections of a BERT layer, in their order in a layer.
pub const PROJECTIONS: [(&str, &str); 6] = [
    ("query", "attention.self.query"),
    ("key", "attention.self.key"),
    ("value", "attention.self.value"),
    ("attention_output", "attention.output.dense"),
    ("intermediate", "intermediate.dense"),
    ("output", "output.dense"),
];

pub fn default_lora_targets() -> Vec<String> {
    vec!["query".into(), "value".into()]
}

impl BertSpec {
    pub fn new(model_dir: PathBuf, mode: FineTune, max_length: usize) -> Self {
        BertSpec {
            model_dir,
            mode,
            max_length,
            lora_targets: default_lora_targets(),
        }
    }
}

/// One tokenised (prompt, response), plus its pooled embedding when the encoder is frozen.
#[derive(Debug, Clone)]
pub struct BertInput {
    pub ids: Vec<u32>,
    pooled: Option<Tensor>,
}

struct LoraAdapter {
    /// `(rank, in)`.
    down: Tensor,
    /// `(out, rank)`.
    up: Tensor,
    scale: f64,
}

struct Dense {
    weight: Tensor,
    bias: Tensor,
    lora: Option<LoraAdapter>,
}

/// Detaches a parameter outside training, so evaluation records no graph at all.
fn param(tensor: &Tensor, train: bool) -> Tensor {
    if train {
        tensor.clone()
    } else {
        tensor.detach()
    }
}

impl Dense {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let weight = param(&self.weight, train);
        let bias = param(&self.bias, train);
        let out = if weight.track_op() {
            ops::linear(x, &weight, Some(&bias))?
        } else {
            ops::frozen_linear(x, &weight, Some(&bias))?
        };
        match &self.lora {
            None => Ok(out),
            Some(lora) => {
                let low = ops::linear(x, &param(&lora.down, train), None)?;
                out + (ops::linear(&low, &param(&lora.up, train), None)? * lora.scale)?
            }
        }
    }
}

struct Norm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl Norm {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        ops::layer_norm(
            x,
            &param(&self.gamma, train),
            &param(&self.beta, train),
            self.eps,
        )
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attention_output: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// The encoder and head, with the trainable parameters registered in `params`.
pub struct BertRewardModel {
    pub spec: BertSpec,
    pub config: BertConfig,
    tokenizer: Tokenizer,
    cls: u32,
    sep: u32,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    head_weight: Tensor,
    head_bias: Tensor,
    params: ParamSet,
    device: Device,
}

/// Reads `config.json` of a model folder.
pub fn read_config(model_dir: &Path) -> anyhow::Result<BertConfig> {
    let path = model_dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("parsing {} as a BERT config", path.display()))
}

/// Reads `tokenizer.json` with its own truncation and padding switched off (the shipped MiniLM file
/// truncates and pads to 128): inputs are cut here, keeping the response.
pub fn read_tokenizer(model_dir: &Path) -> anyhow::Result<Tokenizer> {
    let path = model_dir.join("tokenizer.json");
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
    tokenizer
        .with_truncation(None)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Reads `model.safetensors` (keys with or without a `bert.` prefix) into a map without the prefix.
pub fn read_weights(model_dir: &Path, device: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    let path = model_dir.join("model.safetensors");
    // `candle_core::safetensors::load` reads the file instead of memory-mapping it: no `unsafe` needed,
    // and 90 MB for MiniLM.
    let tensors = candle_core::safetensors::load(&path, device)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(tensors
        .into_iter()
        .map(|(name, tensor)| {
            (
                name.strip_prefix("bert.")
                    .map(str::to_string)
                    .unwrap_or(name),
                tensor,
            )
        })
        .collect())
}

impl BertRewardModel {
    /// Loads the base encoder from `spec.model_dir` and sets up the trainable parts for `spec.mode`,
    /// initialised from `seed`.
    pub fn load(spec: BertSpec, seed: u64, device: &Device) -> anyhow::Result<Self> {
        let config = read_config(&spec.model_dir)?;
        let tokenizer = read_tokenizer(&spec.model_dir)?;
        let weights = read_weights(&spec.model_dir, device)?;
        Self::from_parts(spec, config, tokenizer, weights, seed, device)
    }

    pub fn from_parts(
        spec: BertSpec,
        config: BertConfig,
        tokenizer: Tokenizer,
        weights: HashMap<String, Tensor>,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.hidden_act == HiddenAct::Gelu,
            "only BERT encoders with the erf GELU activation are supported"
        );
        anyhow::ensure!(
            spec.max_length >= 4 && spec.max_length <= config.max_position_embeddings,
            "max length must be between 4 and the model's {} positions",
            config.max_position_embeddings
        );
        let token = |text: &str| {
            tokenizer
                .token_to_id(text)
                .with_context(|| format!("the tokenizer has no {text} token"))
        };
        let (cls, sep) = (token("[CLS]")?, token("[SEP]")?);
        let mut params = ParamSet::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xbe27);
        let get = |name: &str| -> anyhow::Result<Tensor> {
            let tensor = weights
                .get(name)
                .with_context(|| format!("the weights have no tensor {name:?}"))?;
            Ok(tensor.to_dtype(DType::F32)?)
        };
        // Older checkpoints name LayerNorm parameters gamma/beta.
        let norm = |prefix: &str| -> anyhow::Result<Norm> {
            let gamma =
                get(&format!("{prefix}.weight")).or_else(|_| get(&format!("{prefix}.gamma")))?;
            let beta =
                get(&format!("{prefix}.bias")).or_else(|_| get(&format!("{prefix}.beta")))?;
            Ok(Norm {
                gamma,
                beta,
                eps: config.layer_norm_eps,
            })
        };
        let layer_count = config.num_hidden_layers;
        let first_trained_layer = match spec.mode {
            FineTune::Top { layers } => {
                anyhow::ensure!(
                    layers <= layer_count,
                    "top-{layers} asked of a model with {layer_count} layers"
                );
                layer_count - layers
            }
            _ => layer_count,
        };
        let mut layers = Vec::with_capacity(layer_count);
        for index in 0..layer_count {
            let prefix = format!("encoder.layer.{index}");
            let trained = index >= first_trained_layer;
            let dense = |name: &str,
                         lora: bool,
                         rng: &mut ChaCha8Rng,
                         params: &mut ParamSet|
             -> anyhow::Result<Dense> {
                let full = format!("{prefix}.{name}");
                let (mut weight, mut bias) = (
                    get(&format!("{full}.weight"))?,
                    get(&format!("{full}.bias"))?,
                );
                if trained {
                    weight = params.add(format!("{full}.weight"), weight, ParamGroup::Encoder)?;
                    bias = params.add(format!("{full}.bias"), bias, ParamGroup::Encoder)?;
                }
                let lora = match spec.mode {
                    FineTune::Lora { rank, alpha } if lora => {
                        let (out_features, in_features) = weight.dims2()?;
                        // PEFT's initialisation: A Kaiming-uniform (a = √5 → bound 1/√in), B zero, so
                        // training starts from the base model exactly.
                        let bound = 1.0 / (in_features as f64).sqrt();
                        let down = params.add(
                            format!("{full}.lora_a"),
                            uniform(rng, &[rank, in_features], bound, device)?,
                            ParamGroup::Encoder,
                        )?;
                        let up = params.add(
                            format!("{full}.lora_b"),
                            zeros(&[out_features, rank], device)?,
                            ParamGroup::Encoder,
                        )?;
                        Some(LoraAdapter {
                            down,
                            up,
                            scale: alpha / rank as f64,
                        })
                    }
                    _ => None,
                };
                Ok(Dense { weight, bias, lora })
            };
            let mut projections = Vec::with_capacity(PROJECTIONS.len());
            for (short, name) in PROJECTIONS {
                let adapted = spec.lora_targets.iter().any(|target| target == short);
                projections.push(dense(name, adapted, &mut rng, &mut params)?);
            }
            let [query, key, value, attention_output, intermediate, output]: [Dense; 6] =
                projections
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("six projections"))?;
            let mut attention_norm = norm(&format!("{prefix}.attention.output.LayerNorm"))?;
            let mut output_norm = norm(&format!("{prefix}.output.LayerNorm"))?;
            if trained {
                for (norm, name) in [
                    (&mut attention_norm, "attention.output.LayerNorm"),
                    (&mut output_norm, "output.LayerNorm"),
                ] {
                    norm.gamma = params.add(
                        format!("{prefix}.{name}.weight"),
                        norm.gamma.clone(),
                        ParamGroup::Encoder,
                    )?;
                    norm.beta = params.add(
                        format!("{prefix}.{name}.bias"),
                        norm.beta.clone(),
                        ParamGroup::Encoder,
                    )?;
                }
            }
            layers.push(Layer {
                query,
                key,
                value,
                attention_output,
                attention_norm,
                intermediate,
                output,
                output_norm,
            });
        }
        let hidden = config.hidden_size;
        let bound = 1.0 / (hidden as f64).sqrt();
        let head_weight = params.add(
            "head.weight",
            uniform(&mut rng, &[1, hidden], bound, device)?,
            ParamGroup::Head,
        )?;
        let head_bias = params.add("head.bias", zeros(&[1], device)?, ParamGroup::Head)?;
        Ok(BertRewardModel {
            word_embeddings: get("embeddings.word_embeddings.weight")?,
            position_embeddings: get("embeddings.position_embeddings.weight")?,
            token_type_embeddings: get("embeddings.token_type_embeddings.weight")?,
            embedding_norm: norm("embeddings.LayerNorm")?,
            spec,
            config,
            tokenizer,
            cls,
            sep,
            layers,
            head_weight,
            head_bias,
            params,
            device: device.clone(),
        })
    }

    /// Token ids of `[CLS] context [SEP] response [SEP]` within `max_length`: the response is kept
    /// from its start, the context from its end (left truncation), nothing is dropped.
    pub fn tokenize(&self, prompt: &[Message], response: &str) -> anyhow::Result<Vec<u32>> {
        let encode = |text: &str| -> anyhow::Result<Vec<u32>> {
            let encoding = self
                .tokenizer
                .encode(text, false)
                .map_err(|error| anyhow::anyhow!("tokenizing: {error}"))?;
            Ok(encoding.get_ids().to_vec())
        };
        let context = encode(&crate::data::prompt_text(prompt))?;
        let response = encode(response)?;
        let budget = self.spec.max_length - 3;
        let response_kept = response.len().min(budget);
        let context_kept = context.len().min(budget - response_kept);
        let mut ids = Vec::with_capacity(3 + context_kept + response_kept);
        ids.push(self.cls);
        ids.extend_from_slice(&context[context.len() - context_kept..]);
        ids.push(self.sep);
        ids.extend_from_slice(&response[..response_kept]);
        ids.push(self.sep);
        Ok(ids)
    }

    /// Last hidden states `(batch, tokens, hidden)` for right-padded `ids` with `mask` (1 real, 0 pad).
    pub fn hidden_states(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let (batch, tokens) = ids.dims2()?;
        let hidden = self.config.hidden_size;
        let words = self
            .word_embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, tokens, hidden))?;
        let positions = self.position_embeddings.narrow(0, 0, tokens)?;
        // Every token has type 0: sentence-embedding models such as MiniLM were trained that way.
        let token_type = self.token_type_embeddings.narrow(0, 0, 1)?;
        let embedded = words
            .broadcast_add(&positions)?
            .broadcast_add(&token_type)?;
        let mut x = self.embedding_norm.forward(&embedded, train)?;
        // As in candle-transformers and PyTorch: padding keys get the most negative f32 added.
        let mask_add =
            ((mask.ones_like()? - mask)? * f32::MIN as f64)?.reshape((batch, 1, 1, tokens))?;
        let heads = self.config.num_attention_heads;
        let head_size = hidden / heads;
        let scale = 1.0 / (head_size as f64).sqrt();
        for layer in &self.layers {
            let split = |t: Tensor| {
                t.reshape((batch, tokens, heads, head_size))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            // Scaling the queries rather than the scores touches a tensor `tokens / head_size` times smaller.
            let query = split((layer.query.forward(&x, train)? * scale)?)?;
            let key = split(layer.key.forward(&x, train)?)?;
            let value = split(layer.value.forward(&x, train)?)?;
            let probabilities = ops::attention_probabilities(&query, &key, &mask_add)?;
            let context = probabilities
                .matmul(&value)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch, tokens, hidden))?;
            let attended = (layer.attention_output.forward(&context, train)? + &x)?;
            let attended = layer.attention_norm.forward(&attended, train)?;
            let inner = ops::gelu_erf(&layer.intermediate.forward(&attended, train)?)?;
            let out = (layer.output.forward(&inner, train)? + &attended)?;
            x = layer.output_norm.forward(&out, train)?;
        }
        Ok(x)
    }

    /// Mean of the hidden states over real tokens, `(batch, hidden)`.
    fn pooled(&self, inputs: &[&BertInput], train: bool) -> Result<Tensor> {
        let tokens = inputs
            .iter()
            .map(|input| input.ids.len())
            .max()
            .unwrap_or(1);
        let mut ids = vec![self.config.pad_token_id as u32; inputs.len() * tokens];
        let mut mask = vec![0f32; inputs.len() * tokens];
        for (row, input) in inputs.iter().enumerate() {
            ids[row * tokens..row * tokens + input.ids.len()].copy_from_slice(&input.ids);
            mask[row * tokens..row * tokens + input.ids.len()]
                .iter_mut()
                .for_each(|m| *m = 1.0);
        }
        let ids = Tensor::from_vec(ids, (inputs.len(), tokens), &self.device)?;
        let mask = Tensor::from_vec(mask, (inputs.len(), tokens), &self.device)?;
        let hidden = self.hidden_states(&ids, &mask, train)?;
        let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
        summed.broadcast_div(&mask.sum_keepdim(1)?)
    }

    fn head(&self, pooled: &Tensor, train: bool) -> Result<Tensor> {
        ops::linear(
            pooled,
            &param(&self.head_weight, train),
            Some(&param(&self.head_bias, train)),
        )?
        .squeeze(D::Minus1)
    }

    /// The number of encoder parameters that are not trained.
    pub fn frozen_parameter_count(&self) -> usize {
        let mut count = self.word_embeddings.elem_count()
            + self.position_embeddings.elem_count()
            + self.token_type_embeddings.elem_count();
        count += self.embedding_norm.gamma.elem_count() * 2;
        for layer in &self.layers {
            for dense in [
                &layer.query,
                &layer.key,
                &layer.value,
                &layer.attention_output,
                &layer.intermediate,
                &layer.output,
            ] {
                if !dense.weight.is_variable() {
                    count += dense.weight.elem_count() + dense.bias.elem_count();
                }
            }
            for norm in [&layer.attention_norm, &layer.output_norm] {
                if !norm.gamma.is_variable() {
                    count += norm.gamma.elem_count() * 2;
                }
            }
        }
        count
    }

    /// The base (frozen) weight of a projection, for tests: `layer`, `name` as in `attention.self.query`.
    pub fn base_weight(&self, layer: usize, name: &str) -> Option<&Tensor> {
        let layer = self.layers.get(layer)?;
        let dense = match name {
            "attention.self.query" => &layer.query,
            "attention.self.key" => &layer.key,
            "attention.self.value" => &layer.value,
            "attention.output.dense" => &layer.attention_output,
            "intermediate.dense" => &layer.intermediate,
            "output.dense" => &layer.output,
            _ => return None,
        };
        Some(&dense.weight)
    }
}

impl RewardModel for BertRewardModel {
    type Input = BertInput;

    fn encode(&self, prompt: &[Message], response: &str) -> anyhow::Result<BertInput> {
        let ids = self.tokenize(prompt, response)?;
        let mut input = BertInput { ids, pooled: None };
        if self.spec.mode == FineTune::Head {
            // The encoder never changes: pool once, alone (batch-invariant), and train the head on it.
            input.pooled = Some(self.pooled(&[&input], false)?.squeeze(0)?);
        }
        Ok(input)
    }

    fn input_len(&self, input: &BertInput) -> usize {
        input.ids.len()
    }

    fn rewards(&self, inputs: &[&BertInput], train: bool) -> Result<Tensor> {
        let pooled = match inputs
            .iter()
            .map(|input| input.pooled.clone())
            .collect::<Option<Vec<_>>>()
        {
            Some(pooled) => Tensor::stack(&pooled, 0)?,
            None => self.pooled(inputs, train)?,
        };
        self.head(&pooled, train)
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
