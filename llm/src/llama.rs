//! The llama-family forward pass of the local engine.
//!
//! candle-transformers' `quantized_llama` runs every matrix product through the quantized kernel
//! (a dot product per output and row), grows each layer's key/value cache by concatenation at every
//! token, and copies the shared key/value heads of grouped-query attention for every head. Here:
//! - a prompt, many rows at once, is multiplied by each weight dequantized to f32 (in parallel, one
//!   matrix at a time, then dropped) with candle's blocked f32 matrix product, while a generated
//!   token, one row, keeps the quantized kernel, which reads a quarter of the bytes;
//! - keys and values are written into a per-layer cache that grows by doubling;
//! - grouped-query attention multiplies the queries of a group against its keys and values as one
//!   batch, so nothing is repeated.
//!
//! The numbers computed are those of `quantized_llama` up to float rounding (the f32 product sums
//! in another order than the quantized one, which also rounds the activations to 8 bits); the
//! tests compare the two.

use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use rayon::prelude::*;

/// Rows (tokens) from which a matrix product uses the dequantized weight. Below it the quantized
/// kernel is faster: dequantizing costs as much as a few rows of products.
const DEQUANTIZED_FROM_ROWS: usize = 8;

/// Positions the rotary tables cover; a longer context is refused when the model loads.
pub const MAX_POSITIONS: usize = 4096;

/// A weight matrix `[out, in]` as stored, with candle's quantized product for single rows.
struct Linear {
    quantized: Arc<QTensor>,
    matmul: QMatMul,
}

impl Linear {
    fn new(tensor: QTensor) -> Result<Linear> {
        let quantized = Arc::new(tensor);
        let matmul = QMatMul::from_arc(quantized.clone())?;
        Ok(Linear { quantized, matmul })
    }

    /// `x` is `[rows, in]`; the result `[rows, out]`. From `dequantized_from_rows` rows on, the
    /// product is taken with the weight in f32.
    fn forward(&self, x: &Tensor, dequantized_from_rows: usize) -> Result<Tensor> {
        match &self.matmul {
            QMatMul::QTensor(_) if x.dim(0)? >= dequantized_from_rows => {
                let weight = dequantize(&self.quantized)?;
                x.matmul(&weight.t()?)
            }
            _ => self.matmul.forward(x),
        }
    }
}

/// The f32 values of a quantized matrix. Q8_0 (the engine's default format) is expanded on all
/// cores straight from its blocks; other types use candle's own (single-threaded) conversion.
fn dequantize(tensor: &QTensor) -> Result<Tensor> {
    if tensor.dtype() != GgmlDType::Q8_0 {
        return tensor.dequantize(&Device::Cpu);
    }
    // A Q8_0 block: the scale as f16, then 32 signed bytes.
    const VALUES: usize = 32;
    const BYTES: usize = 2 + VALUES;
    const BLOCKS_PER_TASK: usize = 1024;
    let data = tensor.data()?;
    let count = tensor.shape().elem_count();
    if data.len() != count / VALUES * BYTES || !count.is_multiple_of(VALUES) {
        return tensor.dequantize(&Device::Cpu);
    }
    let mut values = vec![0f32; count];
    values
        .par_chunks_mut(VALUES * BLOCKS_PER_TASK)
        .zip(data.par_chunks(BYTES * BLOCKS_PER_TASK))
        .for_each(|(values, blocks)| {
            for (values, block) in values
                .chunks_exact_mut(VALUES)
                .zip(blocks.chunks_exact(BYTES))
            {
                let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (value, &byte) in values.iter_mut().zip(&block[2..]) {
                    *value = scale * f32::from(byte as i8);
                }
            }
        });
    Tensor::from_vec(values, tensor.shape(), &Device::Cpu)
}

/// One layer's keys or values, `[kv_heads, capacity, head_dim]`, of which the first `len`
/// positions are filled.
struct Cache {
    buffer: Option<Tensor>,
}

impl Cache {
    /// Appends `[kv_heads, rows, head_dim]` at `position` and returns the filled part.
    fn append(&mut self, values: &Tensor, position: usize) -> Result<Tensor> {
        let (heads, rows, head_dim) = values.dims3()?;
        let needed = position + rows;
        let capacity = self.buffer.as_ref().map_or(0, |b| b.dim(1).unwrap_or(0));
        if needed > capacity {
            let grown = needed
                .next_power_of_two()
                .clamp(256, MAX_POSITIONS.max(needed));
            let buffer = Tensor::zeros((heads, grown, head_dim), DType::F32, &Device::Cpu)?;
            if let Some(old) = &self.buffer {
                if position > 0 {
                    buffer.slice_set(&old.narrow(1, 0, position)?.contiguous()?, 1, 0)?;
                }
            }
            self.buffer = Some(buffer);
        }
        let buffer = self.buffer.as_ref().expect("allocated above");
        buffer.slice_set(&values.contiguous()?, 1, position)?;
        buffer.narrow(1, 0, needed)
    }
}

struct Layer {
    attention_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    keys: Cache,
    values: Cache,
}

/// A llama-family model read from a GGUF file, with its key/value cache.
pub struct Llama {
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    /// [`DEQUANTIZED_FROM_ROWS`]; the tests raise it to compare the quantized products alone.
    dequantized_from_rows: usize,
}

impl Llama {
    /// Reads the weights of a `llama` GGUF file (the architecture is checked by the caller).
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        content: &gguf_file::Content,
        reader: &mut R,
    ) -> Result<Llama> {
        let device = Device::Cpu;
        let metadata = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| candle_core::Error::Msg(format!("cannot find {key} in metadata")))
        };
        let heads = metadata("llama.attention.head_count")?.to_u32()? as usize;
        let kv_heads = metadata("llama.attention.head_count_kv")?.to_u32()? as usize;
        let blocks = metadata("llama.block_count")?.to_u32()? as usize;
        let hidden = metadata("llama.embedding_length")?.to_u32()? as usize;
        let rope_dim = metadata("llama.rope.dimension_count")?.to_u32()? as usize;
        let eps = metadata("llama.attention.layer_norm_rms_epsilon")?.to_f32()?;
        let rope_base = metadata("llama.rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10_000.0);
        if metadata("llama.expert_count").is_ok_and(|v| v.to_u32().is_ok_and(|n| n > 1)) {
            candle_core::bail!("mixture-of-experts llama models are not supported");
        }
        if heads == 0
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || !hidden.is_multiple_of(heads)
        {
            candle_core::bail!("{heads} attention heads do not share {kv_heads} key/value heads");
        }
        let head_dim = hidden / heads;
        if rope_dim != head_dim {
            candle_core::bail!(
                "a rotary dimension of {rope_dim} for heads of {head_dim} is not supported"
            );
        }
        let tensor = |reader: &mut R, name: &str| content.tensor(reader, name, &device);
        let norm_weight = |reader: &mut R, name: &str| tensor(reader, name)?.dequantize(&device);

        let embeddings_quantized = tensor(reader, "token_embd.weight")?;
        let embeddings = embeddings_quantized.dequantize(&device)?;
        let norm = norm_weight(reader, "output_norm.weight")?;
        // Models with tied embeddings have no output matrix of their own.
        let output = match tensor(reader, "output.weight") {
            Ok(output) => output,
            Err(_) => embeddings_quantized,
        };
        let mut layers = Vec::with_capacity(blocks);
        for index in 0..blocks {
            let name = |part: &str| format!("blk.{index}.{part}.weight");
            layers.push(Layer {
                attention_norm: norm_weight(reader, &name("attn_norm"))?,
                wq: Linear::new(tensor(reader, &name("attn_q"))?)?,
                wk: Linear::new(tensor(reader, &name("attn_k"))?)?,
                wv: Linear::new(tensor(reader, &name("attn_v"))?)?,
                wo: Linear::new(tensor(reader, &name("attn_output"))?)?,
                ffn_norm: norm_weight(reader, &name("ffn_norm"))?,
                gate: Linear::new(tensor(reader, &name("ffn_gate"))?)?,
                up: Linear::new(tensor(reader, &name("ffn_up"))?)?,
                down: Linear::new(tensor(reader, &name("ffn_down"))?)?,
                keys: Cache { buffer: None },
                values: Cache { buffer: None },
            });
        }
        // Rotary tables: angle p · base^(−2i/d) for position p and pair i.
        let inverse: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / rope_base.powf(i as f32 / head_dim as f32))
            .collect();
        let inverse = Tensor::new(inverse.as_slice(), &device)?.reshape((1, head_dim / 2))?;
        let angles = Tensor::arange(0, MAX_POSITIONS as u32, &device)?
            .to_dtype(DType::F32)?
            .reshape((MAX_POSITIONS, 1))?
            .matmul(&inverse)?;
        Ok(Llama {
            embeddings,
            layers,
            norm,
            output: Linear::new(output)?,
            cos: angles.cos()?,
            sin: angles.sin()?,
            heads,
            kv_heads,
            head_dim,
            eps,
            dequantized_from_rows: DEQUANTIZED_FROM_ROWS,
        })
    }

    /// Runs `tokens` at positions `position..`, keeping their keys and values, and returns the
    /// logits of the last one. Position 0 starts a new sequence.
    pub fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Tensor> {
        let rows = tokens.len();
        if rows == 0 || position + rows > MAX_POSITIONS {
            candle_core::bail!(
                "{rows} tokens at position {position} do not fit {MAX_POSITIONS} positions"
            );
        }
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embeddings.index_select(&ids, 0)?;
        let cos = self.cos.narrow(0, position, rows)?;
        let sin = self.sin.narrow(0, position, rows)?;
        // Causal mask: 0 where a row may look, −∞ where it may not (only within the new rows).
        let mask = (rows > 1)
            .then(|| {
                let total = position + rows;
                let mask: Vec<f32> = (0..rows)
                    .flat_map(|row| {
                        (0..total).map(move |column| {
                            if column > position + row {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect();
                Tensor::from_vec(mask, (rows, total), &Device::Cpu)
            })
            .transpose()?;
        let (heads, kv_heads, head_dim) = (self.heads, self.kv_heads, self.head_dim);
        let group = heads / kv_heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let from = self.dequantized_from_rows;
        for layer in &mut self.layers {
            let h = candle_nn::ops::rms_norm(&x, &layer.attention_norm, self.eps)?;
            // [rows, heads · d] → [heads, rows, d]
            let split = |t: Tensor, n: usize| {
                t.reshape((rows, n, head_dim))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .unsqueeze(0)
            };
            let q = split(layer.wq.forward(&h, from)?, heads)?;
            let k = split(layer.wk.forward(&h, from)?, kv_heads)?;
            let v = split(layer.wv.forward(&h, from)?, kv_heads)?;
            let q = (candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?.squeeze(0)? * scale)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?.squeeze(0)?;
            let keys = layer.keys.append(&k, position)?;
            let values = layer.values.append(&v.squeeze(0)?, position)?;
            let total = position + rows;
            // The heads that share a key/value head as one batch: [kv_heads, group · rows, d].
            let q = q.reshape((kv_heads, group * rows, head_dim))?;
            let scores = q.matmul(&keys.t()?)?;
            let scores = match &mask {
                Some(mask) => scores
                    .reshape((kv_heads, group, rows, total))?
                    .broadcast_add(mask)?
                    .reshape((kv_heads, group * rows, total))?,
                None => scores,
            };
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = weights
                .matmul(&values)?
                .reshape((heads, rows, head_dim))?
                .transpose(0, 1)?
                .reshape((rows, heads * head_dim))?;
            x = (layer.wo.forward(&attended, from)? + x)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.eps)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h, from)?)?;
            let up = layer.up.forward(&h, from)?;
            x = (layer.down.forward(&(gate * up)?, from)? + x)?;
        }
        let last = x.narrow(0, rows - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.eps)?;
        self.output.forward(&last, usize::MAX)?.squeeze(0)
    }

    /// Frees the cached keys and values of the last sequence.
    pub fn clear_cache(&mut self) {
        for layer in &mut self.layers {
            layer.keys.buffer = None;
            layer.values.buffer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_dequantized_in_parallel_equals_candles_conversion() {
        let values: Vec<f32> = (0..64 * 96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let tensor = Tensor::from_vec(values, (64, 96), &Device::Cpu).unwrap();
        let quantized = QTensor::quantize(&tensor, GgmlDType::Q8_0).unwrap();
        let ours: Vec<f32> = dequantize(&quantized)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let candles: Vec<f32> = quantized
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours, candles);
    }

    #[test]
    fn the_cache_grows_and_keeps_what_it_held() {
        let mut cache = Cache { buffer: None };
        let first = Tensor::arange(0f32, 2.0 * 200.0 * 4.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 200, 4))
            .unwrap();
        let filled = cache.append(&first, 0).unwrap();
        assert_eq!(filled.dims(), [2, 200, 4]);
        // Past the first 256 positions the buffer is reallocated and the old rows copied.
        let second = Tensor::ones((2, 100, 4), DType::F32, &Device::Cpu).unwrap();
        let filled = cache.append(&second, 200).unwrap();
        assert_eq!(filled.dims(), [2, 300, 4]);
        assert_eq!(cache.buffer.as_ref().unwrap().dim(1).unwrap(), 512);
        let kept: Vec<f32> = filled
            .narrow(1, 0, 200)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let original: Vec<f32> = first.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(kept, original);
        let added: Vec<f32> = filled
            .narrow(1, 200, 100)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(added.iter().all(|&v| v == 1.0));
    }

    /// Ours and candle-transformers' `quantized_llama` on the real SmolLM2 weights (converted to
    /// Q8_0 as the engine loads them): a 40-token prompt, six single-token steps on the growing
    /// cache, then a new sequence token by token. Returns, per step, the largest logit difference over the largest
    /// logit, having checked that where the reference's best token leads clearly, ours picks it.
    fn against_candle(dequantized_from_rows: usize) -> Vec<f32> {
        use candle_transformers::models::quantized_llama::ModelWeights;
        let path = std::env::var_os("MOAT_SMOLLM2_GGUF")
            .expect("run scripts/fetch-smollm2.sh and set MOAT_SMOLLM2_GGUF");
        let mut file = std::fs::File::open(path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let (content, mut reader) = crate::local::requantized(content, &mut file).unwrap();
        let mut ours = Llama::from_gguf(&content, &mut reader).unwrap();
        ours.dequantized_from_rows = dequantized_from_rows;
        let mut theirs = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).unwrap();
        // Any ids in the vocabulary will do: this compares arithmetic, not language.
        let prompt: Vec<u32> = (0..40).map(|i| 1 + (i * 977) % 40_000).collect();
        let input = |tokens: &[u32]| Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0);
        let mut differences = Vec::new();
        // Returns the reference's next token, which both models are then given, so that a near
        // tie cannot send the two down different paths.
        let mut compare = |a: &Tensor, b: &Tensor, step: &str| -> u32 {
            let a: Vec<f32> = a.to_vec1().unwrap();
            let b: Vec<f32> = b.to_vec1().unwrap();
            assert_eq!(a.len(), b.len());
            let spread = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            differences.push(worst / spread);
            let mut ranked: Vec<usize> = (0..b.len()).collect();
            ranked.sort_by(|&x, &y| b[y].total_cmp(&b[x]));
            let (first, second) = (ranked[0], ranked[1]);
            let ours = (0..a.len()).max_by(|&x, &y| a[x].total_cmp(&a[y])).unwrap();
            if b[first] - b[second] > 2.0 * worst {
                assert_eq!(ours, first, "{step}: a different next token");
            }
            first as u32
        };
        let mut next = compare(
            &ours.forward(&prompt, 0).unwrap(),
            &theirs
                .forward(&input(&prompt).unwrap(), 0)
                .unwrap()
                .squeeze(0)
                .unwrap(),
            "prompt",
        );
        for step in 0..6 {
            let position = prompt.len() + step;
            next = compare(
                &ours.forward(&[next], position).unwrap(),
                &theirs
                    .forward(&input(&[next]).unwrap(), position)
                    .unwrap()
                    .squeeze(0)
                    .unwrap(),
                &format!("step {step}"),
            );
        }
        // A second sequence, token by token, after clearing.
        ours.clear_cache();
        theirs.clear_kv_cache();
        for (position, &token) in prompt[..12].iter().enumerate() {
            compare(
                &ours.forward(&[token], position).unwrap(),
                &theirs
                    .forward(&input(&[token]).unwrap(), position)
                    .unwrap()
                    .squeeze(0)
                    .unwrap(),
                &format!("second sequence, position {position}"),
            );
        }
        differences
    }

    /// With every product quantized, as candle's model computes them, the two agree exactly: the
    /// cache, the grouped attention, the mask and the rotary tables are the same arithmetic. (A
    /// second prompt of 12 or 16 tokens at once would not: candle's quantized product itself
    /// rounds differently for some row counts, by up to 3% of the largest logit, in both models.)
    #[test]
    fn smollm2_with_quantized_products_matches_candles_quantized_llama() {
        let differences = against_candle(usize::MAX);
        assert!(differences.iter().all(|&d| d == 0.0), "{differences:?}");
    }

    /// With the prompt's products in f32 (the default), the logits move by the rounding of the
    /// 8-bit activations the quantized products use, a few percent of the largest logit.
    #[test]
    fn smollm2_with_f32_prompt_products_stays_close_to_candles_quantized_llama() {
        let differences = against_candle(DEQUANTIZED_FROM_ROWS);
        assert!(differences.iter().all(|&d| d < 0.05), "{differences:?}");
    }
}
