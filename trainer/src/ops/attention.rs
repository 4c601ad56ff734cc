//! The attention probabilities `softmax(q · kᵀ + mask)` as one op whose graph keeps `q`, `k` and the
//! probabilities, never the scores.
//!
//! Written out with candle ops, a trained layer's attention records the scores (the input of the
//! softmax) and the probabilities, two `(batch, heads, tokens, tokens)` tensors, and runs three passes
//! over them (add the mask, softmax, copy the value into the graph). Here the scores are computed without
//! a graph, the mask is added and the softmax taken in one parallel pass (in place when nothing is
//! trained below), and the backward pass derives `dq = dS · k` and `dk = dSᵀ · q` from the probabilities
//! `y` alone, with `dS = y ⊙ (g − Σ g ⊙ y)`.

use candle_core::{
    CpuStorage, CustomOp2, DType, Device, InplaceOp1, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::{contiguous_f32, rows_per_task, softmax_backward, softmax_last_dim_masked, HandOver};

/// `softmax(q · kᵀ + mask)` over the last dimension for `q`, `k` of shape `(batch, heads, tokens,
/// head_size)` and an additive key mask of shape `(batch, 1, 1, tokens)` (0 for real tokens, the most
/// negative f32 for padding).
pub fn attention_probabilities(q: &Tensor, k: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (batch, heads, tokens, _) = q.dims4()?;
    let fused = matches!(q.device(), Device::Cpu)
        && q.dtype() == DType::F32
        && k.dtype() == DType::F32
        && mask.dims() == [batch, 1, 1, tokens];
    if !fused {
        let scores = q.matmul(&k.t()?)?;
        return softmax_last_dim_masked(&scores, Some(mask));
    }
    let softmax = MaskedSoftmax {
        mask: mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
        tokens,
        rows_per_batch: heads * tokens,
    };
    let scores = q.detach().matmul(&k.detach().t()?)?.contiguous()?;
    if !q.track_op() && !k.track_op() {
        scores.inplace_op1(&softmax)?;
        return Ok(scores);
    }
    q.apply_op2(
        k,
        AttentionProbabilities {
            scores: HandOver::new(scores),
            softmax,
        },
    )
}

/// `softmax(row + mask of the row's batch)` for rows of `tokens` scores.
struct MaskedSoftmax {
    /// `(batch, tokens)`, flattened.
    mask: Vec<f32>,
    tokens: usize,
    /// Rows of scores per batch entry: heads × query tokens.
    rows_per_batch: usize,
}

impl MaskedSoftmax {
    fn check(&self, layout: &Layout) -> Result<()> {
        let rows = layout.shape().elem_count() / self.tokens.max(1);
        if layout.dims().last() != Some(&self.tokens)
            || rows != self.rows_per_batch * (self.mask.len() / self.tokens.max(1))
        {
            candle_core::bail!(
                "attention: scores of shape {:?} do not match the mask",
                layout.dims()
            )
        }
        Ok(())
    }

    /// Turns the rows of `rows` (the first of them row `first_row` of the scores) into
    /// `softmax(row + mask)` in place.
    fn run(&self, first_row: usize, rows: &mut [f32]) {
        let tokens = self.tokens;
        for (index, row) in rows.chunks_mut(tokens).enumerate() {
            let batch = (first_row + index) / self.rows_per_batch;
            let mask = &self.mask[batch * tokens..(batch + 1) * tokens];
            let mut max = f32::NEG_INFINITY;
            for (value, mask) in row.iter_mut().zip(mask) {
                *value += mask;
                max = max.max(*value);
            }
            let mut sum = 0f32;
            for value in row.iter_mut() {
                *value = (*value - max).exp();
                sum += *value;
            }
            let inverse = 1.0 / sum;
            for value in row.iter_mut() {
                *value *= inverse;
            }
        }
    }

    /// [`Self::run`] over all rows, in parallel.
    fn run_all(&self, rows: &mut [f32]) {
        let per_task = rows_per_task(self.tokens);
        rows.par_chunks_mut(self.tokens * per_task)
            .enumerate()
            .for_each(|(task, rows)| self.run(task * per_task, rows));
    }
}

impl InplaceOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        self.check(layout)?;
        let (start, count) = (layout.start_offset(), layout.shape().elem_count());
        match storage {
            CpuStorage::F32(data) if layout.is_contiguous() => {
                self.run_all(&mut data[start..start + count]);
                Ok(())
            }
            _ => candle_core::bail!("masked softmax takes contiguous f32 scores"),
        }
    }
}

/// The graph node of [`attention_probabilities`]: inputs `q` and `k`, output the probabilities.
struct AttentionProbabilities {
    /// The scores, computed without a graph, handed over once to the forward pass and then dropped.
    scores: HandOver,
    softmax: MaskedSoftmax,
}

impl CustomOp2 for AttentionProbabilities {
    fn name(&self) -> &'static str {
        "attention-probabilities"
    }

    fn cpu_fwd(
        &self,
        _q: &CpuStorage,
        _q_layout: &Layout,
        _k: &CpuStorage,
        _k_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let scores = self.scores.take(self.name())?;
        let (storage, layout) = scores.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("attention: scores off the CPU")
        };
        self.softmax.check(layout)?;
        let Some(values) = contiguous_f32(storage, layout) else {
            candle_core::bail!("attention: scores are not contiguous f32")
        };
        let mut out = values.to_vec();
        self.softmax.run_all(&mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        probabilities: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d_scores = softmax_backward(probabilities, grad)?;
        let d_q = if q.track_op() {
            Some(d_scores.matmul(&k.detach())?)
        } else {
            None
        };
        let d_k = if k.track_op() {
            Some(d_scores.t()?.matmul(&q.detach())?)
        } else {
            None
        };
        Ok((d_q, d_k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Var, D};

    /// The fused op agrees with the same computation written in candle ops (matmul, mask, softmax), in
    /// value and in the gradients of `q` and `k`, with padding in one batch entry.
    #[test]
    fn fused_attention_matches_candle_ops() -> Result<()> {
        let device = Device::Cpu;
        let (batch, heads, tokens, head_size) = (2, 3, 5, 4);
        let values = |count: usize, seed: usize| {
            (0..count)
                .map(|i| (((i * 37 + seed) % 23) as f32 - 11.0) / 7.0)
                .collect::<Vec<_>>()
        };
        let shape = (batch, heads, tokens, head_size);
        let q = Tensor::from_vec(
            values(batch * heads * tokens * head_size, 1),
            shape,
            &device,
        )?;
        let k = Tensor::from_vec(
            values(batch * heads * tokens * head_size, 5),
            shape,
            &device,
        )?;
        let weights = Tensor::from_vec(
            values(batch * heads * tokens * tokens, 9),
            (batch, heads, tokens, tokens),
            &device,
        )?;
        // The second entry has two padding tokens.
        let mask = Tensor::from_vec(
            vec![0f32, 0., 0., 0., 0., 0., 0., 0., f32::MIN, f32::MIN],
            (batch, 1, 1, tokens),
            &device,
        )?;
        let mut results = Vec::new();
        for fused in [true, false] {
            let (qv, kv) = (Var::from_tensor(&q)?, Var::from_tensor(&k)?);
            let y = if fused {
                attention_probabilities(qv.as_tensor(), kv.as_tensor(), &mask)?
            } else {
                let scores = qv.as_tensor().matmul(&kv.as_tensor().t()?)?;
                candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?
            };
            let grads = (&y * &weights)?.sum_all()?.backward()?;
            let grad = |var: &Var| grads.get(var.as_tensor()).expect("a gradient").clone();
            results.push([y, grad(&qv), grad(&kv)]);
        }
        for (name, (fused, reference)) in ["value", "dq", "dk"]
            .iter()
            .zip(results[0].iter().zip(&results[1]))
        {
            let difference = (fused - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(difference < 1e-5, "{name}: differs by {difference}");
        }
        // Padding keys get no attention at all.
        let padded = results[0][0].narrow(0, 1, 1)?.narrow(3, 3, 2)?;
        assert_eq!(padded.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        // Without a graph the probabilities are the same, computed in place.
        let plain = attention_probabilities(&q, &k, &mask)?;
        let difference = (&plain - &results[0][0])?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(difference, 0.0);
        Ok(())
    }
}
