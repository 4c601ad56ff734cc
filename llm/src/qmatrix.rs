//! Quantized weight matrices laid out for the product with one row: the generated token.
//!
//! A generated token multiplies every weight once, so its time is the time to read the weights:
//! candle's quantized product reads Q8_0 blocks (8.5 bits a weight) with an AVX2 kernel, and has no
//! vectorised kernel for the 4-bit formats small GGUF models ship in. Here a matrix keeps its 4-bit
//! values as stored (Q4_0, Q4_1: 5 bits a weight with the scales) or its 8-bit ones (Q8_0; any
//! other type is converted to 8 bits while loading), with the rows interleaved in groups of
//! [`LANES`]: for each block of 32 columns, the values of sixteen rows at one column sit side by
//! side, so the product is a multiply-add of whole vectors (one lane a row) that the compiler
//! vectorises from plain Rust, with no horizontal sums inside a block.
//!
//! The arithmetic is ggml's (and candle's reference code's): the input row is quantized to 8 bits
//! per block of 32 with an f16 scale (and, for the 4-bit formats, the f16 scaled sum of its values),
//! a block's integer dot product is exact, and the per-block terms are added in column order in f32.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
use half::f16;
use rayon::prelude::*;
use wide::{i16x16, i16x8, i32x8, i8x16, u8x16};

/// Columns per block, in every format here.
pub const BLOCK: usize = 32;
/// Rows interleaved side by side.
pub const LANES: usize = 16;
/// Row groups one parallel task multiplies (a quarter of a 576 × 576 matrix's groups, so that two
/// threads share even the smallest product).
const GROUPS_PER_TASK: usize = 8;

/// An input row quantized to 8 bits per block, as ggml's Q8_1 (for 4-bit weights) and Q8_0.
pub struct Activation {
    /// The 8-bit values, widened to i16 for the products.
    values: Vec<i16>,
    /// Per block: the scale, rounded to f16 as ggml stores it.
    scales: Vec<f32>,
    /// Per block: the sum of the values times the scale, rounded to f16 (Q8_1's `s`).
    sums: Vec<f32>,
    /// Per block: the sum of the values (for Q4_0's offset of −8, exact).
    integer_sums: Vec<i32>,
}

/// ggml's Q8_0 rounding of one block, for activations and weights alike: the scale `d` is the
/// largest magnitude over 127, and each value divided by it is rounded to the nearest integer and
/// given to `each` with its index. Returns `d`.
#[inline(always)]
fn q8_block(block: &[f32], mut each: impl FnMut(usize, i8)) -> f32 {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (j, &v) in block.iter().enumerate() {
        each(j, (v * inverse).round() as i8);
    }
    d
}

impl Activation {
    /// Quantizes `x`, whose length must be a multiple of [`BLOCK`].
    pub fn quantize(x: &[f32]) -> Activation {
        debug_assert!(x.len().is_multiple_of(BLOCK));
        let blocks = x.len() / BLOCK;
        let mut values = vec![0i16; x.len()];
        let mut scales = Vec::with_capacity(blocks);
        let mut sums = Vec::with_capacity(blocks);
        let mut integer_sums = Vec::with_capacity(blocks);
        for (block, out) in x.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)) {
            let mut sum = 0i32;
            let d = q8_block(block, |j, rounded| {
                out[j] = i16::from(rounded);
                sum += i32::from(rounded);
            });
            let d16 = f16::from_f32(d);
            scales.push(d16.to_f32());
            sums.push((f16::from_f32(sum as f32) * d16).to_f32());
            integer_sums.push(sum);
        }
        Activation {
            values,
            scales,
            sums,
            integer_sums,
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
}

enum Values {
    /// Q4_0: as `Nibbles`, each value less 8 (no offsets stored).
    CenteredNibbles(Vec<u8>),
    /// Per group and block, 256 bytes: byte `j · 16 + lane` holds column `j` of the lane's row in
    /// its low nibble and column `j + 16` in its high one (the order of a Q4 block's bytes).
    Nibbles(Vec<u8>),
    /// Per group and block, 512 bytes: byte `j · 16 + lane` is column `j` of the lane's row.
    Bytes(Vec<i8>),
}

/// A `[rows, cols]` weight matrix in the interleaved layout.
pub struct QMatrix {
    rows: usize,
    cols: usize,
    values: Values,
    /// Per group, block and lane: the block's scale.
    scales: Vec<f16>,
    /// Per group, block and lane: the block's offset (Q4_1 only).
    mins: Vec<f16>,
}

impl QMatrix {
    /// Converts a quantized `[rows, cols]` tensor. Q4_0 and Q4_1 keep their values and scales
    /// exactly, Q8_0 too; any other type is dequantized and quantized to 8 bits per weight.
    pub fn from_qtensor(tensor: &QTensor) -> Result<QMatrix> {
        let (rows, cols) = tensor.shape().dims2()?;
        if !cols.is_multiple_of(BLOCK) {
            candle_core::bail!("a matrix of {cols} columns is not made of blocks of {BLOCK}");
        }
        let blocks = cols / BLOCK;
        let groups = rows.div_ceil(LANES);
        let slots = groups * blocks * LANES;
        let data = tensor.data()?;
        let mut scales = vec![f16::ZERO; slots];
        let slot =
            |row: usize, block: usize| ((row / LANES) * blocks + block) * LANES + row % LANES;
        match tensor.dtype() {
            dtype @ (GgmlDType::Q4_0 | GgmlDType::Q4_1) => {
                let with_min = dtype == GgmlDType::Q4_1;
                let size = if with_min { 20 } else { 18 };
                check_size(&data, rows * blocks * size)?;
                let mut nibbles = vec![0u8; groups * blocks * 256];
                let mut mins = vec![f16::ZERO; if with_min { slots } else { 0 }];
                for (index, raw) in data.chunks_exact(size).enumerate() {
                    let (row, block) = (index / blocks, index % blocks);
                    let at = slot(row, block);
                    let d = f16::from_le_bytes([raw[0], raw[1]]);
                    scales[at] = d;
                    if with_min {
                        mins[at] = f16::from_le_bytes([raw[2], raw[3]]);
                    }
                    let base = ((row / LANES) * blocks + block) * 256 + row % LANES;
                    for (j, &byte) in raw[size - 16..].iter().enumerate() {
                        nibbles[base + j * LANES] = byte;
                    }
                }
                Ok(QMatrix {
                    rows,
                    cols,
                    values: if with_min {
                        Values::Nibbles(nibbles)
                    } else {
                        Values::CenteredNibbles(nibbles)
                    },
                    scales,
                    mins,
                })
            }
            GgmlDType::Q8_0 => {
                check_size(&data, rows * blocks * 34)?;
                let mut bytes = vec![0i8; groups * blocks * 512];
                for (index, raw) in data.chunks_exact(34).enumerate() {
                    let (row, block) = (index / blocks, index % blocks);
                    scales[slot(row, block)] = f16::from_le_bytes([raw[0], raw[1]]);
                    let base = ((row / LANES) * blocks + block) * 512 + row % LANES;
                    for (j, &byte) in raw[2..].iter().enumerate() {
                        bytes[base + j * LANES] = byte as i8;
                    }
                }
                Ok(QMatrix {
                    rows,
                    cols,
                    values: Values::Bytes(bytes),
                    scales,
                    mins: Vec::new(),
                })
            }
            _ => {
                let values: Vec<f32> = tensor.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
                Ok(QMatrix::q8_from_f32(&values, rows, cols))
            }
        }
    }

    /// Quantizes f32 rows to 8 bits per weight (ggml's Q8_0 rounding).
    fn q8_from_f32(values: &[f32], rows: usize, cols: usize) -> QMatrix {
        let blocks = cols / BLOCK;
        let groups = rows.div_ceil(LANES);
        let mut bytes = vec![0i8; groups * blocks * 512];
        let mut scales = vec![f16::ZERO; groups * blocks * LANES];
        for (index, block) in values.chunks_exact(BLOCK).enumerate() {
            let (row, b) = (index / blocks, index % blocks);
            let base = ((row / LANES) * blocks + b) * 512 + row % LANES;
            let d = q8_block(block, |j, rounded| bytes[base + j * LANES] = rounded);
            scales[((row / LANES) * blocks + b) * LANES + row % LANES] = f16::from_f32(d);
        }
        QMatrix {
            rows,
            cols,
            values: Values::Bytes(bytes),
            scales,
            mins: Vec::new(),
        }
    }

    /// Whether `next` can be stacked below this matrix: same format and width, and this one's rows
    /// fill their groups.
    pub fn can_stack(&self, next: &QMatrix) -> bool {
        let same_format = matches!(
            (&self.values, &next.values),
            (Values::Nibbles(_), Values::Nibbles(_))
                | (Values::CenteredNibbles(_), Values::CenteredNibbles(_))
                | (Values::Bytes(_), Values::Bytes(_))
        );
        same_format && self.cols == next.cols && self.rows.is_multiple_of(LANES)
    }

    /// The matrices' rows one after the other, as one matrix (for instance the query, key and value
    /// projections, multiplied by the same input in one pass). Their formats and widths must agree,
    /// and every part but the last must have a multiple of [`LANES`] rows.
    pub fn stacked(parts: Vec<QMatrix>) -> Result<QMatrix> {
        let mut parts = parts.into_iter();
        let mut all = parts
            .next()
            .ok_or_else(|| candle_core::Error::Msg("nothing to stack".into()))?;
        for part in parts {
            if !all.can_stack(&part) {
                candle_core::bail!("these matrices cannot be stacked");
            }
            match (&mut all.values, part.values) {
                (Values::Nibbles(a), Values::Nibbles(b))
                | (Values::CenteredNibbles(a), Values::CenteredNibbles(b)) => a.extend(b),
                (Values::Bytes(a), Values::Bytes(b)) => a.extend(b),
                _ => unreachable!("checked above"),
            }
            all.scales.extend(part.scales);
            all.mins.extend(part.mins);
            all.rows += part.rows;
        }
        Ok(all)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `self · x` for one quantized input row, into `out` (`rows` values), on rayon's threads.
    pub fn matvec(&self, x: &Activation, out: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "input width");
        assert_eq!(out.len(), self.rows, "output height");
        let blocks = self.cols / BLOCK;
        let whole = self.rows / LANES * LANES;
        let (head, tail) = out.split_at_mut(whole);
        head.par_chunks_mut(LANES * GROUPS_PER_TASK)
            .enumerate()
            .for_each(|(task, out)| {
                for (offset, out) in out.chunks_exact_mut(LANES).enumerate() {
                    let lanes = self.group(task * GROUPS_PER_TASK + offset, blocks, x);
                    out.copy_from_slice(&lanes);
                }
            });
        if !tail.is_empty() {
            let lanes = self.group(whole / LANES, blocks, x);
            tail.copy_from_slice(&lanes[..tail.len()]);
        }
    }

    /// The sixteen outputs of one row group.
    fn group(&self, group: usize, blocks: usize, x: &Activation) -> [f32; LANES] {
        let mut sums = [0f32; LANES];
        for block in 0..blocks {
            let at = (group * blocks + block) * LANES;
            let y = &x.values[block * BLOCK..(block + 1) * BLOCK];
            let (dy, sy) = (x.scales[block], x.sums[block]);
            let mut d = [0f32; LANES];
            for (d, s) in d.iter_mut().zip(&self.scales[at..at + LANES]) {
                *d = s.to_f32();
            }
            match &self.values {
                Values::Nibbles(nibbles) => {
                    let bytes = &nibbles[at * 16..at * 16 + 256];
                    let dots = nibble_dots(bytes, &y[..16], &y[16..]);
                    let mins = &self.mins[at..at + LANES];
                    for lane in 0..LANES {
                        sums[lane] += dots[lane] as f32 * d[lane] * dy + mins[lane].to_f32() * sy;
                    }
                }
                Values::CenteredNibbles(nibbles) => {
                    let bytes = &nibbles[at * 16..at * 16 + 256];
                    let dots = nibble_dots(bytes, &y[..16], &y[16..]);
                    let offset = 8 * x.integer_sums[block];
                    for lane in 0..LANES {
                        sums[lane] += (dots[lane] - offset) as f32 * d[lane] * dy;
                    }
                }
                Values::Bytes(bytes) => {
                    let bytes = &bytes[at * 32..at * 32 + 512];
                    let dots = byte_dots(bytes, y);
                    for lane in 0..LANES {
                        sums[lane] += dots[lane] as f32 * d[lane] * dy;
                    }
                }
            }
        }
        sums
    }

    /// The f32 values transposed, `[cols, rows]`, expanded on rayon's threads (for the prompt's
    /// products, which multiply by the transpose). The sixteen rows of a group are sixteen
    /// neighbouring values of each output row, so the expansion is whole-vector arithmetic.
    pub fn dequantize_transposed(&self) -> Result<Tensor> {
        let blocks = self.cols / BLOCK;
        let groups = self.rows.div_ceil(LANES);
        let padded = groups * LANES;
        let mut values = vec![0f32; self.cols * padded];
        values
            .par_chunks_mut(BLOCK * padded)
            .enumerate()
            .for_each(|(block, out)| {
                for group in 0..groups {
                    let at = (group * blocks + block) * LANES;
                    let d: [f32; LANES] = std::array::from_fn(|l| self.scales[at + l].to_f32());
                    let column = |j: usize| j * padded + group * LANES;
                    match &self.values {
                        Values::Nibbles(nibbles) => {
                            let m: [f32; LANES] =
                                std::array::from_fn(|l| self.mins[at + l].to_f32());
                            let bytes = &nibbles[at * 16..at * 16 + 256];
                            for (j, row) in bytes.chunks_exact(LANES).enumerate() {
                                let low = &mut out[column(j)..][..LANES];
                                for l in 0..LANES {
                                    low[l] = f32::from(row[l] & 15) * d[l] + m[l];
                                }
                                let high = &mut out[column(j + 16)..][..LANES];
                                for l in 0..LANES {
                                    high[l] = f32::from(row[l] >> 4) * d[l] + m[l];
                                }
                            }
                        }
                        Values::CenteredNibbles(nibbles) => {
                            let bytes = &nibbles[at * 16..at * 16 + 256];
                            for (j, row) in bytes.chunks_exact(LANES).enumerate() {
                                let low = &mut out[column(j)..][..LANES];
                                for l in 0..LANES {
                                    low[l] = (f32::from(row[l] & 15) - 8.0) * d[l];
                                }
                                let high = &mut out[column(j + 16)..][..LANES];
                                for l in 0..LANES {
                                    high[l] = (f32::from(row[l] >> 4) - 8.0) * d[l];
                                }
                            }
                        }
                        Values::Bytes(bytes) => {
                            let bytes = &bytes[at * 32..at * 32 + 512];
                            for (j, row) in bytes.chunks_exact(LANES).enumerate() {
                                let out = &mut out[column(j)..][..LANES];
                                for l in 0..LANES {
                                    out[l] = f32::from(row[l]) * d[l];
                                }
                            }
                        }
                    }
                }
            });
        let all = Tensor::from_vec(values, (self.cols, padded), &Device::Cpu)?;
        if padded == self.rows {
            Ok(all)
        } else {
            all.narrow(1, 0, self.rows)?.contiguous()
        }
    }
}

fn check_size(data: &[u8], expected: usize) -> Result<()> {
    if data.len() != expected {
        candle_core::bail!(
            "a quantized matrix holds {} bytes where {expected} were expected",
            data.len()
        );
    }
    Ok(())
}

/// One block's integer dot products for sixteen rows of 4-bit values: per column, the sixteen
/// rows' values as one vector times the input's value. Each lane's partial sums stay within i16:
/// 16 columns × 15 × 127 < 32,768.
#[inline(always)]
fn nibble_dots(bytes: &[u8], low: &[i16], high: &[i16]) -> [i32; LANES] {
    let mask = i16x16::splat(15);
    let mut lo = i16x16::splat(0);
    let mut hi = i16x16::splat(0);
    for ((row, &yl), &yh) in bytes.chunks_exact(LANES).zip(low).zip(high) {
        let row: [u8; LANES] = row.try_into().expect("sixteen lanes");
        let values = i16x16::from(u8x16::new(row));
        lo += (values & mask) * i16x16::splat(yl);
        hi += (values >> 4) * i16x16::splat(yh);
    }
    let (lo, hi) = (lo.to_array(), hi.to_array());
    std::array::from_fn(|lane| i32::from(lo[lane]) + i32::from(hi[lane]))
}

/// One block's integer dot products for sixteen rows of 8-bit values. Two columns' products
/// (each at most 127 × 127) still fit i16; the pair is then widened and added in i32.
#[inline(always)]
fn byte_dots(bytes: &[i8], y: &[i16]) -> [i32; LANES] {
    let mut low = i32x8::splat(0);
    let mut high = i32x8::splat(0);
    for (rows, y) in bytes.chunks_exact(2 * LANES).zip(y.chunks_exact(2)) {
        let first: [i8; LANES] = rows[..LANES].try_into().expect("sixteen lanes");
        let second: [i8; LANES] = rows[LANES..].try_into().expect("sixteen lanes");
        let pair = i16x16::from(i8x16::new(first)) * i16x16::splat(y[0])
            + i16x16::from(i8x16::new(second)) * i16x16::splat(y[1]);
        let pair = pair.to_array();
        let halves: [[i16; 8]; 2] = [
            pair[..8].try_into().expect("eight"),
            pair[8..].try_into().expect("eight"),
        ];
        low += i32x8::from_i16x8(i16x8::new(halves[0]));
        high += i32x8::from_i16x8(i16x8::new(halves[1]));
    }
    let (low, high) = (low.to_array(), high.to_array());
    std::array::from_fn(|lane| if lane < 8 { low[lane] } else { high[lane - 8] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Tensor {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 613.0)
            .collect();
        Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
    }

    fn input(cols: usize) -> Vec<f32> {
        (0..cols)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) / 211.0)
            .collect()
    }

    /// Row by row, candle's quantized product of the same blocks with the same 8-bit input.
    fn candles(quantized: &QTensor, x: &[f32]) -> Vec<f32> {
        let x = Tensor::new(x, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let product = candle_core::quantized::QMatMul::from_qtensor(
            QTensor::quantize(
                &quantized.dequantize(&Device::Cpu).unwrap(),
                quantized.dtype(),
            )
            .unwrap(),
        )
        .unwrap();
        candle_core::Module::forward(&product, &x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The prompt's expansion, transposed back, equals candle's dequantization of the same blocks.
    fn assert_expansion_is_exact(ours: &QMatrix, quantized: &QTensor) {
        let flat = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let expanded = flat(ours.dequantize_transposed().unwrap().t().unwrap());
        let reference = flat(quantized.dequantize(&Device::Cpu).unwrap());
        assert_eq!(expanded, reference, "{:?}", quantized.dtype());
    }

    /// 4-bit blocks give candle's reference arithmetic bit for bit (its Q4_1 kernel is the scalar
    /// reference one), rows that do not fill the last group included.
    #[test]
    fn q4_products_equal_candles_and_dequantization_is_exact() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q4_0] {
            // An even number of blocks: candle's Q4_1 kernel asserts it in debug builds.
            let (rows, cols) = (37, 128);
            let quantized = QTensor::quantize(&matrix(rows, cols), dtype).unwrap();
            let ours = QMatrix::from_qtensor(&quantized).unwrap();
            let x = input(cols);
            let mut out = vec![0f32; rows];
            ours.matvec(&Activation::quantize(&x), &mut out);
            let theirs = candles(&quantized, &x);
            if dtype == GgmlDType::Q4_1 {
                assert_eq!(out, theirs, "{dtype:?}");
            } else {
                // candle's Q4_0 kernel is its AVX2 one here, which adds the blocks in another order.
                for (a, b) in out.iter().zip(&theirs) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{dtype:?}: {a} {b}"
                    );
                }
            }
            assert_expansion_is_exact(&ours, &quantized);
        }
    }

    #[test]
    fn q8_products_match_candles_and_other_types_become_8_bits() {
        let (rows, cols) = (50, 64);
        let q8 = QTensor::quantize(&matrix(rows, cols), GgmlDType::Q8_0).unwrap();
        let ours = QMatrix::from_qtensor(&q8).unwrap();
        let x = input(cols);
        let mut out = vec![0f32; rows];
        ours.matvec(&Activation::quantize(&x), &mut out);
        for (a, b) in out.iter().zip(candles(&q8, &x)) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} {b}");
        }
        // Q8_0's values and scales are kept exactly.
        assert_expansion_is_exact(&ours, &q8);
        // A K-quant is converted: the product stays within the 8-bit rounding of the weights.
        let (rows, cols) = (20, 256);
        let f32s = matrix(rows, cols);
        let q6 = QTensor::quantize(&f32s, GgmlDType::Q6K).unwrap();
        let ours = QMatrix::from_qtensor(&q6).unwrap();
        let x = input(cols);
        let mut out = vec![0f32; rows];
        ours.matvec(&Activation::quantize(&x), &mut out);
        let exact: Vec<f32> = q6
            .dequantize(&Device::Cpu)
            .unwrap()
            .matmul(
                &Tensor::new(x.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(1)
                    .unwrap(),
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in out.iter().zip(&exact) {
            assert!((a - b).abs() <= 0.02 * scale, "{a} {b}");
        }
    }

    #[test]
    fn stacked_matrices_multiply_as_their_parts() {
        let cols = 64;
        let parts: Vec<QTensor> = [32, 16, 21]
            .iter()
            .map(|&rows| QTensor::quantize(&matrix(rows, cols), GgmlDType::Q4_1).unwrap())
            .collect();
        let x = Activation::quantize(&input(cols));
        let mut expected = Vec::new();
        for part in &parts {
            let matrix = QMatrix::from_qtensor(part).unwrap();
            let mut out = vec![0f32; matrix.rows()];
            matrix.matvec(&x, &mut out);
            expected.extend(out);
        }
        let stacked = QMatrix::stacked(
            parts
                .iter()
                .map(|part| QMatrix::from_qtensor(part).unwrap())
                .collect(),
        )
        .unwrap();
        assert_eq!(stacked.rows(), 69);
        let mut out = vec![0f32; 69];
        stacked.matvec(&x, &mut out);
        assert_eq!(out, expected);
        // A part that does not fill its last group cannot be followed by another.
        let short = QMatrix::from_qtensor(&parts[2]).unwrap();
        let other = QMatrix::from_qtensor(&parts[0]).unwrap();
        assert!(QMatrix::stacked(vec![short, other]).is_err());
    }
}
