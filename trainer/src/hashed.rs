//! The `hashed` backbone: hashed word and character n-gram features into a fixed-size sparse vector, and
//! a linear (or small MLP) head. No weights to download; it trains in seconds and is the baseline every
//! other result is compared against.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use moat_exports::Message;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::RewardModel;
use crate::params::{uniform, zeros, ParamGroup, ParamSet};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HashedConfig {
    /// log2 of the number of hashed feature slots.
    pub dim_bits: u32,
    /// Word n-grams of length 1..=word_ngrams.
    pub word_ngrams: usize,
    /// Character n-grams of lengths min..=max (0 disables).
    pub char_ngram_min: usize,
    pub char_ngram_max: usize,
    /// Hidden width of the MLP head; 0 means a linear head.
    pub hidden: usize,
}

impl Default for HashedConfig {
    fn default() -> Self {
        HashedConfig {
            dim_bits: 18,
            word_ngrams: 2,
            char_ngram_min: 3,
            char_ngram_max: 4,
            hidden: 0,
        }
    }
}

/// Slots before the hashed range hold dense features (lengths, overlap with the prompt).
const DENSE_FEATURES: usize = 8;

/// Sparse features of one text: sorted, unique slot indices with their values.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseFeatures {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// FNV-1a, 64 bit: a hash fixed by its definition, so features stay the same across Rust versions and
/// platforms (std's `DefaultHasher` makes no such promise) and a saved model keeps meaning the same.
fn fnv1a(namespace: u8, parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |byte: u8| {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    eat(namespace);
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            eat(0x1f);
        }
        part.bytes().for_each(&mut eat);
    }
    hash
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() || ch == '\'' {
            current.extend(ch.to_lowercase());
        } else {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            if !ch.is_whitespace() {
                out.push(ch.to_string());
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl HashedConfig {
    pub fn dim(&self) -> usize {
        DENSE_FEATURES + (1usize << self.dim_bits)
    }

    fn slot(&self, hash: u64) -> (u32, f32) {
        let slot = DENSE_FEATURES as u64 + ((hash >> 1) & ((1u64 << self.dim_bits) - 1));
        // Signed hashing: colliding features cancel in expectation instead of adding up.
        (slot as u32, if hash & 1 == 0 { 1.0 } else { -1.0 })
    }

    /// Features of a response given its prompt. Each namespace (word n-grams, character n-grams) is a
    /// log-count vector scaled to unit length, so long and short texts weigh alike; length itself is a
    /// separate dense feature.
    pub fn features(&self, prompt: &[Message], response: &str) -> SparseFeatures {
        let mut slots: HashMap<u32, f32> = HashMap::new();
        let response_words = words(response);
        let mut add_namespace = |counts: HashMap<u64, u32>| {
            // Sorted, so sums run in a fixed order: a HashMap's order changes from run to run and with it
            // the last bits of every sum (and so of every score).
            let mut weights: Vec<(u64, f32)> = counts
                .into_iter()
                .map(|(hash, count)| (hash, 1.0 + (count as f32).ln()))
                .collect();
            weights.sort_unstable_by_key(|(hash, _)| *hash);
            let norm = weights
                .iter()
                .map(|(_, w)| w * w)
                .sum::<f32>()
                .sqrt()
                .max(1e-6);
            for (hash, weight) in weights {
                let (slot, sign) = self.slot(hash);
                *slots.entry(slot).or_default() += sign * weight / norm;
            }
        };
        let mut word_counts = HashMap::new();
        for n in 1..=self.word_ngrams {
            for gram in response_words.windows(n) {
                let parts: Vec<&str> = gram.iter().map(String::as_str).collect();
                *word_counts.entry(fnv1a(b'w', &parts)).or_insert(0u32) += 1;
            }
        }
        add_namespace(word_counts);
        if self.char_ngram_min > 0 {
            let chars: Vec<char> = format!(
                " {} ",
                response
                    .to_lowercase()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
            .chars()
            .collect();
            let mut char_counts = HashMap::new();
            let mut buffer = String::new();
            for n in self.char_ngram_min..=self.char_ngram_max {
                for gram in chars.windows(n) {
                    buffer.clear();
                    buffer.extend(gram);
                    *char_counts.entry(fnv1a(b'c', &[&buffer])).or_insert(0u32) += 1;
                }
            }
            add_namespace(char_counts);
        }
        let prompt_words: std::collections::HashSet<String> = prompt
            .iter()
            .flat_map(|message| words(&message.content))
            .collect();
        let overlap = if response_words.is_empty() {
            0.0
        } else {
            response_words
                .iter()
                .filter(|word| prompt_words.contains(*word))
                .count() as f32
                / response_words.len() as f32
        };
        let dense = [
            1.0,
            (1.0 + response_words.len() as f32).ln() / 5.0,
            (1.0 + response.chars().count() as f32).ln() / 7.0,
            overlap,
            response.contains('?') as u8 as f32,
            response_words.is_empty() as u8 as f32,
        ];
        for (index, value) in dense.into_iter().enumerate() {
            slots.insert(index as u32, value);
        }
        let mut entries: Vec<(u32, f32)> = slots.into_iter().collect();
        entries.sort_by_key(|(slot, _)| *slot);
        let (indices, values) = entries.into_iter().unzip();
        SparseFeatures { indices, values }
    }
}

/// Hashed features and a linear or one-hidden-layer head, all trainable.
pub struct HashedModel {
    pub config: HashedConfig,
    params: ParamSet,
    /// `(dim, width)`: a row per feature slot; width 1 for the linear head.
    embedding: Tensor,
    bias: Tensor,
    /// For the MLP head: `(1, hidden)` and `(1,)`.
    output: Option<(Tensor, Tensor)>,
    device: Device,
}

impl HashedModel {
    pub fn new(config: HashedConfig, seed: u64, device: &Device) -> candle_core::Result<Self> {
        let mut params = ParamSet::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4a54_4544);
        let dim = config.dim();
        let (embedding, bias, output) = if config.hidden == 0 {
            // A linear model starts at zero, as logistic regression does.
            let embedding =
                params.add("hashed.weight", zeros(&[dim, 1], device)?, ParamGroup::Head)?;
            let bias = params.add("hashed.bias", zeros(&[1], device)?, ParamGroup::Head)?;
            (embedding, bias, None)
        } else {
            let hidden = config.hidden;
            let embedding = params.add(
                "hashed.embedding",
                uniform(&mut rng, &[dim, hidden], 0.05, device)?,
                ParamGroup::Head,
            )?;
            let bias = params.add(
                "hashed.hidden_bias",
                zeros(&[hidden], device)?,
                ParamGroup::Head,
            )?;
            let bound = 1.0 / (hidden as f64).sqrt();
            let out_weight = params.add(
                "hashed.out.weight",
                uniform(&mut rng, &[1, hidden], bound, device)?,
                ParamGroup::Head,
            )?;
            let out_bias = params.add("hashed.out.bias", zeros(&[1], device)?, ParamGroup::Head)?;
            (embedding, bias, Some((out_weight, out_bias)))
        };
        Ok(HashedModel {
            config,
            params,
            embedding,
            bias,
            output,
            device: device.clone(),
        })
    }
}

fn maybe_detach(tensor: &Tensor, train: bool) -> Tensor {
    if train {
        tensor.clone()
    } else {
        tensor.detach()
    }
}

impl RewardModel for HashedModel {
    type Input = SparseFeatures;

    fn encode(&self, prompt: &[Message], response: &str) -> anyhow::Result<SparseFeatures> {
        Ok(self.config.features(prompt, response))
    }

    fn input_len(&self, input: &SparseFeatures) -> usize {
        input.indices.len()
    }

    fn rewards(&self, inputs: &[&SparseFeatures], train: bool) -> candle_core::Result<Tensor> {
        let rows = inputs.len();
        let width = inputs
            .iter()
            .map(|input| input.indices.len())
            .max()
            .unwrap_or(0)
            .max(1);
        // Padding points at slot 0 with value 0, so it contributes exactly nothing.
        let mut indices = vec![0u32; rows * width];
        let mut values = vec![0f32; rows * width];
        for (row, input) in inputs.iter().enumerate() {
            indices[row * width..row * width + input.indices.len()].copy_from_slice(&input.indices);
            values[row * width..row * width + input.values.len()].copy_from_slice(&input.values);
        }
        let indices = Tensor::from_vec(indices, rows * width, &self.device)?;
        let values = Tensor::from_vec(values, (rows, width, 1), &self.device)?;
        let embedding = maybe_detach(&self.embedding, train);
        let hidden_width = embedding.dim(1)?;
        let gathered = embedding
            .index_select(&indices, 0)?
            .reshape((rows, width, hidden_width))?;
        let summed = gathered
            .broadcast_mul(&values)?
            .sum(1)?
            .broadcast_add(&maybe_detach(&self.bias, train))?;
        match &self.output {
            None => summed.squeeze(D::Minus1),
            Some((weight, bias)) => {
                let hidden = summed.relu()?;
                let out = hidden
                    .matmul(&maybe_detach(weight, train).t()?)?
                    .broadcast_add(&maybe_detach(bias, train))?;
                out.squeeze(D::Minus1)?.to_dtype(DType::F32)
            }
        }
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_deterministic_sorted_and_normalised() {
        let config = HashedConfig::default();
        let prompt = [Message::new("user", "How do I bake bread?")];
        let a = config.features(&prompt, "Mix flour, water and yeast; bake bread at 230C.");
        let b = config.features(&prompt, "Mix flour, water and yeast; bake bread at 230C.");
        assert_eq!(a, b);
        assert!(a.indices.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(a
            .indices
            .iter()
            .all(|&index| (index as usize) < config.dim()));
        // "bake" and "bread" appear in the prompt: 2 of the 12 word tokens.
        assert!((a.values[3] - 2.0 / 12.0).abs() < 1e-6, "{}", a.values[3]);
    }

    /// FNV-1a of the empty input is its offset basis; of "a" (after namespace 0) a fixed value.
    #[test]
    fn hash_is_pinned() {
        let mut expected: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in [0u8, b'a'] {
            expected ^= byte as u64;
            expected = expected.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(fnv1a(0, &["a"]), expected);
    }

    #[test]
    fn mlp_head_scores_are_finite_and_batch_shape_is_right() -> candle_core::Result<()> {
        let config = HashedConfig {
            hidden: 8,
            dim_bits: 10,
            ..Default::default()
        };
        let model = HashedModel::new(config, 1, &Device::Cpu)?;
        let a = model.config.features(&[], "yes");
        let b = model.config.features(&[], "no, never");
        let rewards = model.rewards(&[&a, &b], false)?.to_vec1::<f32>()?;
        assert_eq!(rewards.len(), 2);
        assert!(rewards.iter().all(|r| r.is_finite()));
        Ok(())
    }
}
