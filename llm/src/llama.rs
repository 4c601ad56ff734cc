//! The llama-family forward pass of the local engine.
//!
//! candle-transformers' `quantized_llama` runs every matrix product through candle's quantized
//! kernel (a dot product per output and row, and for 4-bit weights scalar code), grows each layer's
//! key/value cache by concatenation at every token, copies the shared key/value heads of
//! grouped-query attention for every head, and spends a tensor operation (an allocation, a
//! dispatch, often a thread hand-off) on every small step. Here:
//! - a generated token, one row, is computed in plain Rust on slices: its products read the weights
//!   in the interleaved quantized layout of [`crate::qmatrix`] (4-bit weights stay 4-bit), the
//!   query, key and value projections as one matrix and the gate and up projections as another,
//!   and its attention reads the cache in place;
//! - a prompt, many rows at once, is multiplied by each weight dequantized to f32 (in parallel, one
//!   matrix at a time, then dropped) with candle's blocked f32 matrix product;
//! - keys and values are written into a per-layer cache that grows by doubling;
//! - grouped-query attention multiplies the queries of a group against its keys and values as one
//!   batch, so nothing is repeated.
//!
//! The numbers computed are those of `quantized_llama` up to float rounding (sums in another order,
//! and the prompt's f32 products skip the 8-bit rounding of the activations); the tests compare the
//! two.

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use crate::qmatrix::{Activation, QMatrix};

/// Rows (tokens) from which a matrix product uses the dequantized weight. Below it the quantized
/// kernel is faster: dequantizing costs as much as a few rows of products.
const DEQUANTIZED_FROM_ROWS: usize = 8;

/// Cached positions from which a generated token's attention runs its key/value heads in parallel.
const PARALLEL_ATTENTION_FROM: usize = 128;

/// Positions the rotary tables cover; a longer context is refused when the model loads.
pub const MAX_POSITIONS: usize = 4096;

/// Weight matrices multiplied by the same input, stacked into as few matrices as their formats
/// allow; the output is the parts' outputs one after the other.
struct Projection {
    matrices: Vec<QMatrix>,
    rows: usize,
}

impl Projection {
    fn new(parts: Vec<QMatrix>) -> Result<Projection> {
        let rows = parts.iter().map(QMatrix::rows).sum();
        let mut matrices: Vec<QMatrix> = Vec::new();
        for part in parts {
            match matrices.pop() {
                Some(last) if last.can_stack(&part) => {
                    matrices.push(QMatrix::stacked(vec![last, part])?)
                }
                Some(last) => matrices.extend([last, part]),
                None => matrices.push(part),
            }
        }
        Ok(Projection { matrices, rows })
    }

    fn single(matrix: QMatrix) -> Projection {
        Projection {
            rows: matrix.rows(),
            matrices: vec![matrix],
        }
    }

    /// One quantized input row; `out` receives `rows` values.
    fn matvec(&self, x: &Activation, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.rows, 0.0);
        let mut start = 0;
        for matrix in &self.matrices {
            matrix.matvec(x, &mut out[start..start + matrix.rows()]);
            start += matrix.rows();
        }
    }

    /// `x` is `[rows, in]`; the result `[rows, out]`. From `dequantized_from_rows` rows on, the
    /// product is taken with the weights in f32, below it row by row on the quantized weights.
    fn forward(&self, x: &Tensor, dequantized_from_rows: usize) -> Result<Tensor> {
        let rows = x.dim(0)?;
        if rows >= dequantized_from_rows {
            let weights = self
                .matrices
                .iter()
                .map(QMatrix::dequantize_transposed)
                .collect::<Result<Vec<_>>>()?;
            let transposed = if weights.len() == 1 {
                weights.into_iter().next().expect("one")
            } else {
                Tensor::cat(&weights, 1)?
            };
            return x.matmul(&transposed);
        }
        let input: Vec<Vec<f32>> = x.to_vec2()?;
        let mut all = Vec::with_capacity(rows * self.rows);
        let mut out = Vec::new();
        for row in &input {
            self.matvec(&Activation::quantize(row), &mut out);
            all.extend_from_slice(&out);
        }
        Tensor::from_vec(all, (rows, self.rows), &Device::Cpu)
    }
}

/// One layer's keys or values, `[kv_heads, capacity, head_dim]`, of which the first `len`
/// positions are filled.
struct Cache {
    buffer: Vec<f32>,
    heads: usize,
    head_dim: usize,
    capacity: usize,
}

impl Cache {
    fn new(heads: usize, head_dim: usize) -> Cache {
        Cache {
            buffer: Vec::new(),
            heads,
            head_dim,
            capacity: 0,
        }
    }

    /// Makes room for `needed` positions, keeping the first `kept`.
    fn reserve(&mut self, needed: usize, kept: usize) {
        if needed <= self.capacity {
            return;
        }
        let grown = needed
            .next_power_of_two()
            .clamp(256, MAX_POSITIONS.max(needed));
        let mut buffer = vec![0f32; self.heads * grown * self.head_dim];
        let d = self.head_dim;
        for head in 0..self.heads {
            let old = &self.buffer[head * self.capacity * d..][..kept * d];
            buffer[head * grown * d..][..kept * d].copy_from_slice(old);
        }
        self.buffer = buffer;
        self.capacity = grown;
    }

    /// Writes one position's vector for `head`.
    fn write(&mut self, head: usize, position: usize, values: &[f32]) {
        let d = self.head_dim;
        self.buffer[(head * self.capacity + position) * d..][..d].copy_from_slice(values);
    }

    /// The first `len` positions of `head`, `[len, head_dim]` row-major.
    fn head(&self, head: usize, len: usize) -> &[f32] {
        &self.buffer[head * self.capacity * self.head_dim..][..len * self.head_dim]
    }

    /// Appends `[kv_heads, rows, head_dim]` at `position` and returns the filled part as a tensor.
    fn append(&mut self, values: &Tensor, position: usize) -> Result<Tensor> {
        let (heads, rows, head_dim) = values.dims3()?;
        if heads != self.heads || head_dim != self.head_dim {
            candle_core::bail!("the cache holds {} heads of {}", self.heads, self.head_dim);
        }
        let needed = position + rows;
        self.reserve(needed, position);
        let values: Vec<Vec<Vec<f32>>> = values.to_vec3()?;
        let mut filled = Vec::with_capacity(heads * needed * head_dim);
        for (head, rows) in values.iter().enumerate() {
            for (offset, row) in rows.iter().enumerate() {
                self.write(head, position + offset, row);
            }
            filled.extend_from_slice(self.head(head, needed));
        }
        Tensor::from_vec(filled, (heads, needed, head_dim), &Device::Cpu)
    }

    fn clear(&mut self) {
        self.buffer = Vec::new();
        self.capacity = 0;
    }
}

struct Layer {
    attention_norm: Tensor,
    attention_norm_values: Vec<f32>,
    /// Query, key and value projections, in that order.
    qkv: Projection,
    wo: Projection,
    ffn_norm: Tensor,
    ffn_norm_values: Vec<f32>,
    /// Gate and up projections, in that order.
    gate_up: Projection,
    down: Projection,
    keys: Cache,
    values: Cache,
}

/// A llama-family model read from a GGUF file, with its key/value cache.
pub struct Llama {
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    norm_values: Vec<f32>,
    output: Projection,
    cos: Tensor,
    sin: Tensor,
    cos_values: Vec<f32>,
    sin_values: Vec<f32>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
    ffn: usize,
    eps: f32,
    /// [`DEQUANTIZED_FROM_ROWS`]; the tests raise it to compare the quantized products alone.
    dequantized_from_rows: usize,
    /// [`PARALLEL_ATTENTION_FROM`]; the tests change it to compare the two ways.
    parallel_attention_from: usize,
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
        let matrix = |reader: &mut R, name: &str| QMatrix::from_qtensor(&tensor(reader, name)?);
        let norm_weight = |reader: &mut R, name: &str| tensor(reader, name)?.dequantize(&device);

        let embeddings_quantized = tensor(reader, "token_embd.weight")?;
        let embeddings = embeddings_quantized.dequantize(&device)?;
        let norm = norm_weight(reader, "output_norm.weight")?;
        // Models with tied embeddings have no output matrix of their own.
        let output = match tensor(reader, "output.weight") {
            Ok(output) => QMatrix::from_qtensor(&output)?,
            Err(_) => QMatrix::from_qtensor(&embeddings_quantized)?,
        };
        drop(embeddings_quantized);
        let mut layers = Vec::with_capacity(blocks);
        let mut ffn = 0;
        for index in 0..blocks {
            let name = |part: &str| format!("blk.{index}.{part}.weight");
            let attention_norm = norm_weight(reader, &name("attn_norm"))?;
            let ffn_norm = norm_weight(reader, &name("ffn_norm"))?;
            let gate = matrix(reader, &name("ffn_gate"))?;
            ffn = gate.rows();
            layers.push(Layer {
                attention_norm_values: attention_norm.to_vec1()?,
                attention_norm,
                qkv: Projection::new(vec![
                    matrix(reader, &name("attn_q"))?,
                    matrix(reader, &name("attn_k"))?,
                    matrix(reader, &name("attn_v"))?,
                ])?,
                wo: Projection::single(matrix(reader, &name("attn_output"))?),
                ffn_norm_values: ffn_norm.to_vec1()?,
                ffn_norm,
                gate_up: Projection::new(vec![gate, matrix(reader, &name("ffn_up"))?])?,
                down: Projection::single(matrix(reader, &name("ffn_down"))?),
                keys: Cache::new(kv_heads, head_dim),
                values: Cache::new(kv_heads, head_dim),
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
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        Ok(Llama {
            embeddings,
            layers,
            norm_values: norm.to_vec1()?,
            norm,
            output: Projection::single(output),
            cos_values: cos.flatten_all()?.to_vec1()?,
            sin_values: sin.flatten_all()?.to_vec1()?,
            cos,
            sin,
            heads,
            kv_heads,
            head_dim,
            hidden,
            ffn,
            eps,
            dequantized_from_rows: DEQUANTIZED_FROM_ROWS,
            parallel_attention_from: PARALLEL_ATTENTION_FROM,
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
        if rows == 1 {
            let logits = self.step(tokens[0], position)?;
            let count = logits.len();
            return Tensor::from_vec(logits, count, &Device::Cpu);
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
        let (hidden, kv_dim) = (self.hidden, self.kv_heads * self.head_dim);
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
            let qkv = layer.qkv.forward(&h, from)?;
            let q = split(qkv.narrow(1, 0, hidden)?, heads)?;
            let k = split(qkv.narrow(1, hidden, kv_dim)?, kv_heads)?;
            let v = split(qkv.narrow(1, hidden + kv_dim, kv_dim)?, kv_heads)?;
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
            let gate_up = layer.gate_up.forward(&h, from)?;
            let gate = candle_nn::ops::silu(&gate_up.narrow(1, 0, self.ffn)?)?;
            let up = gate_up.narrow(1, self.ffn, self.ffn)?;
            x = (layer.down.forward(&(gate * up)?, from)? + x)?;
        }
        let last = x.narrow(0, rows - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.eps)?;
        self.output.forward(&last, usize::MAX)?.squeeze(0)
    }

    /// One generated token at `position`, on slices: the logits.
    fn step(&mut self, token: u32, position: usize) -> Result<Vec<f32>> {
        let (heads, kv_heads, d) = (self.heads, self.kv_heads, self.head_dim);
        let (hidden, kv_dim) = (self.hidden, kv_heads * d);
        let group = heads / kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let half = d / 2;
        let cos = &self.cos_values[position * half..][..half];
        let sin = &self.sin_values[position * half..][..half];
        let total = position + 1;
        let mut x: Vec<f32> = self.embeddings.get(token as usize)?.to_vec1()?;
        let (mut projected, mut h) = (Vec::new(), vec![0f32; hidden]);
        let mut attended = vec![0f32; hidden];
        for layer in &mut self.layers {
            rms_norm(&x, &layer.attention_norm_values, self.eps, &mut h);
            layer.qkv.matvec(&Activation::quantize(&h), &mut projected);
            let (q, kv) = projected.split_at_mut(hidden);
            let (k, v) = kv.split_at_mut(kv_dim);
            for head in q.chunks_exact_mut(d) {
                rope(head, cos, sin);
                head.iter_mut().for_each(|value| *value *= scale);
            }
            layer.keys.reserve(total, position);
            layer.values.reserve(total, position);
            for (head, (key, value)) in k.chunks_exact_mut(d).zip(v.chunks_exact(d)).enumerate() {
                rope(key, cos, sin);
                layer.keys.write(head, position, key);
                layer.values.write(head, position, value);
            }
            // Each key/value head with the query heads that share it; on both cores once the
            // context is long enough to pay for the hand-off.
            let (q, keys, values): (&[f32], &Cache, &Cache) = (q, &layer.keys, &layer.values);
            let attend = |(kv_head, out): (usize, &mut [f32])| {
                let keys = keys.head(kv_head, total);
                let values = values.head(kv_head, total);
                let mut scores = vec![0f32; total];
                for (index, out) in out.chunks_exact_mut(d).enumerate() {
                    let query = &q[(kv_head * group + index) * d..][..d];
                    for (score, key) in scores.iter_mut().zip(keys.chunks_exact(d)) {
                        *score = dot(query, key);
                    }
                    softmax(&mut scores);
                    out.fill(0.0);
                    for (&weight, value) in scores.iter().zip(values.chunks_exact(d)) {
                        for (o, &v) in out.iter_mut().zip(value) {
                            *o += weight * v;
                        }
                    }
                }
            };
            if total >= self.parallel_attention_from {
                attended
                    .par_chunks_mut(group * d)
                    .enumerate()
                    .for_each(attend);
            } else {
                attended.chunks_mut(group * d).enumerate().for_each(attend);
            }
            layer
                .wo
                .matvec(&Activation::quantize(&attended), &mut projected);
            x.iter_mut().zip(&projected).for_each(|(x, p)| *x += p);

            rms_norm(&x, &layer.ffn_norm_values, self.eps, &mut h);
            layer
                .gate_up
                .matvec(&Activation::quantize(&h), &mut projected);
            let (gate, up) = projected.split_at_mut(self.ffn);
            for (g, &u) in gate.iter_mut().zip(up.iter()) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            let activation = Activation::quantize(gate);
            layer.down.matvec(&activation, &mut projected);
            x.iter_mut().zip(&projected).for_each(|(x, p)| *x += p);
        }
        rms_norm(&x, &self.norm_values, self.eps, &mut h);
        let mut logits = Vec::new();
        self.output.matvec(&Activation::quantize(&h), &mut logits);
        Ok(logits)
    }

    /// Frees the cached keys and values of the last sequence.
    pub fn clear_cache(&mut self) {
        for layer in &mut self.layers {
            layer.keys.clear();
            layer.values.clear();
        }
    }
}

/// `x / sqrt(mean(x²) + eps) · weight`, as candle's `rms_norm`.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v / m * w;
    }
}

/// Rotates the pairs `(x[2i], x[2i+1])` by their angles, as candle's `rope_i`.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// A dot product in eight independent sums, which the compiler vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    sums.iter().sum::<f32>() + tail
}

fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for score in scores.iter_mut() {
        *score = (*score - max).exp();
        sum += *score;
    }
    scores.iter_mut().for_each(|score| *score /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_grows_and_keeps_what_it_held() {
        let mut cache = Cache::new(2, 4);
        let first = Tensor::arange(0f32, 2.0 * 200.0 * 4.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 200, 4))
            .unwrap();
        let filled = cache.append(&first, 0).unwrap();
        assert_eq!(filled.dims(), [2, 200, 4]);
        assert_eq!(cache.capacity, 256);
        // Past the first 256 positions the buffer is reallocated and the old rows copied.
        let second = Tensor::ones((2, 100, 4), DType::F32, &Device::Cpu).unwrap();
        let filled = cache.append(&second, 200).unwrap();
        assert_eq!(filled.dims(), [2, 300, 4]);
        assert_eq!(cache.capacity, 512);
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
        // One position written in place, as a generated token does, after a growth.
        cache.reserve(301, 300);
        cache.write(1, 300, &[7.0; 4]);
        assert_eq!(&cache.head(1, 301)[300 * 4..], &[7.0; 4]);
        assert_eq!(cache.head(0, 301)[..200 * 4], original[..200 * 4]);
    }

    /// Ours and candle-transformers' `quantized_llama` on the real SmolLM2 weights (as stored:
    /// Q4_1 layers, a Q8_0 embedding): a 40-token prompt, six single-token steps on the growing
    /// cache, then a new sequence token by token. Returns, per step, the largest logit difference over the largest
    /// logit, having checked that where the reference's best token leads clearly, ours picks it.
    fn against_candle(dequantized_from_rows: usize) -> Vec<f32> {
        use candle_transformers::models::quantized_llama::ModelWeights;
        let path = std::env::var_os("MOAT_SMOLLM2_GGUF")
            .expect("run scripts/fetch-smollm2.sh and set MOAT_SMOLLM2_GGUF");
        let mut file = std::fs::File::open(path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut ours = Llama::from_gguf(&content, &mut file).unwrap();
        let mut reader = file;
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

    /// With every product quantized, as candle's model computes them, the two agree to the rounding
    /// of the 8-bit activations: the 4-bit products are candle's arithmetic bit for bit (see
    /// `qmatrix`), and so is everything else up to six cached positions; from seven on, candle's
    /// softmax sums its exponentials eight at a time (AVX) where ours sums them in order, and a last
    /// bit of difference that moves an activation across a rounding boundary of its 8-bit
    /// quantization moves the logits by up to a few percent.
    #[test]
    fn smollm2_with_quantized_products_matches_candles_quantized_llama() {
        let differences = against_candle(usize::MAX);
        assert!(differences.iter().all(|&d| d < 0.05), "{differences:?}");
        // The prompt, and the first single token after it, are computed exactly as candle does.
        assert!(
            differences[..2].iter().all(|&d| d < 1e-5),
            "{differences:?}"
        );
    }

    /// A generated token's attention gives the same logits, to the bit, whether its heads run on one
    /// core or on all.
    #[test]
    fn parallel_attention_equals_sequential_attention() {
        let path = std::env::var_os("MOAT_SMOLLM2_GGUF")
            .expect("run scripts/fetch-smollm2.sh and set MOAT_SMOLLM2_GGUF");
        let mut file = std::fs::File::open(path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut model = Llama::from_gguf(&content, &mut file).unwrap();
        let prompt: Vec<u32> = (0..20).map(|i| 1 + (i * 977) % 40_000).collect();
        let mut logits = Vec::new();
        for from in [usize::MAX, 0] {
            model.parallel_attention_from = from;
            model.clear_cache();
            model.forward(&prompt, 0).unwrap();
            let steps: Vec<Vec<f32>> = (0..3)
                .map(|step| {
                    model
                        .forward(&[5 + step as u32], prompt.len() + step)
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                })
                .collect();
            logits.push(steps);
        }
        assert_eq!(logits[0], logits[1]);
    }

    /// With the prompt's products in f32 (the default), the logits move by the rounding of the
    /// 8-bit activations the quantized products use, a few percent of the largest logit.
    #[test]
    fn smollm2_with_f32_prompt_products_stays_close_to_candles_quantized_llama() {
        let differences = against_candle(DEQUANTIZED_FROM_ROWS);
        assert!(differences.iter().all(|&d| d < 0.05), "{differences:?}");
    }
}
