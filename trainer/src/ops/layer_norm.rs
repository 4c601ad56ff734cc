//! Layer normalisation with *trainable* `gamma` and `beta` as one fused CPU op: the forward pass and
//! the backward pass (input, `gamma` and `beta` gradients together) are each one parallel pass over the
//! rows. candle's `layer_norm_slow`, the portable alternative, records about ten element-wise ops (each
//! a single-threaded pass that the graph keeps alive until the backward pass) and runs twice as many
//! backward.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, layer_norm_row_backward, row_moments, rows_per_task};

/// `(x − mean) / σ · γ + β` over the last dimension, `σ = √(var + eps)`; on the CPU in f32 one fused
/// op, elsewhere [`candle_nn::ops::layer_norm_slow`].
pub fn layer_norm_trainable(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let fused = matches!(x.device(), Device::Cpu)
        && [x, gamma, beta].iter().all(|t| t.dtype() == DType::F32)
        && gamma.rank() == 1
        && beta.dims() == gamma.dims()
        && x.dims().last() == gamma.dims().first();
    if !fused {
        return candle_nn::ops::layer_norm_slow(x, gamma, beta, eps as f32);
    }
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        TrainableLayerNorm { eps: eps as f32 },
    )
}

struct TrainableLayerNorm {
    eps: f32,
}

fn f32_of<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    contiguous_f32(storage, layout)
        .ok_or_else(|| candle_core::Error::Msg(format!("layer norm: {what} is not contiguous f32")))
}

impl CustomOp3 for TrainableLayerNorm {
    fn name(&self) -> &'static str {
        "trainable-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_of(s1, l1, "the input")?;
        let gamma = f32_of(s2, l2, "gamma")?;
        let beta = f32_of(s3, l3, "beta")?;
        let row = gamma.len();
        let chunk = row * rows_per_task(row);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(out, x)| {
                for (out, x) in out.chunks_mut(row).zip(x.chunks(row)) {
                    let (mean, inv_std) = row_moments(x, self.eps);
                    for (((out, x), gamma), beta) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
                        *out = (x - mean) * inv_std * gamma + beta;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _result: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (x_storage, x_layout) = x.storage_and_layout();
        let (g_storage, g_layout) = grad.storage_and_layout();
        let (gamma_storage, gamma_layout) = gamma.storage_and_layout();
        let (
            candle_core::Storage::Cpu(x_storage),
            candle_core::Storage::Cpu(g_storage),
            candle_core::Storage::Cpu(gamma_storage),
        ) = (&*x_storage, &*g_storage, &*gamma_storage)
        else {
            candle_core::bail!("layer norm: the backward pass runs on the CPU only")
        };
        let x_values = f32_of(x_storage, x_layout, "the input")?;
        let g = f32_of(g_storage, g_layout, "the gradient")?;
        let gamma_values = f32_of(gamma_storage, gamma_layout, "gamma")?;
        let row = gamma_values.len();
        let chunk = row * rows_per_task(row);
        let mut dx = vec![0f32; x_values.len()];
        // Each task returns its partial sums of dγ = Σ g ⊙ x̂ and dβ = Σ g; they are added in task
        // order below, so the result is the same every run whatever the thread count.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(chunk)
            .zip(x_values.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .map(|(dx, (x, g))| {
                let mut d_gamma = vec![0f32; row];
                let mut d_beta = vec![0f32; row];
                for ((dx, x), g) in dx.chunks_mut(row).zip(x.chunks(row)).zip(g.chunks(row)) {
                    layer_norm_row_backward(
                        x,
                        g,
                        gamma_values,
                        self.eps,
                        dx,
                        Some((&mut d_gamma, &mut d_beta)),
                    );
                }
                (d_gamma, d_beta)
            })
            .collect();
        let mut d_gamma = vec![0f32; row];
        let mut d_beta = vec![0f32; row];
        for (partial_gamma, partial_beta) in &partials {
            for (sum, value) in d_gamma.iter_mut().zip(partial_gamma) {
                *sum += value;
            }
            for (sum, value) in d_beta.iter_mut().zip(partial_beta) {
                *sum += value;
            }
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(d_gamma, row, device)?),
            Some(Tensor::from_vec(d_beta, row, device)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The fused op and candle's differentiable `layer_norm_slow` agree on the value and on all three
    /// gradients (of `sum(y ⊙ w)`, so that every output element matters).
    #[test]
    fn fused_trainable_layer_norm_matches_the_portable_one() -> Result<()> {
        let device = Device::Cpu;
        let (rows, width) = (37, 24);
        let values = |count: usize, seed: usize| {
            (0..count)
                .map(|i| (((i * 37 + seed) % 29) as f32 - 14.0) / 5.0)
                .collect::<Vec<_>>()
        };
        let x = Tensor::from_vec(values(rows * width, 3), (rows, width), &device)?;
        let weights = Tensor::from_vec(values(rows * width, 11), (rows, width), &device)?;
        let gamma = Tensor::from_vec(values(width, 5), width, &device)?;
        let beta = Tensor::from_vec(values(width, 7), width, &device)?;
        let mut results = Vec::new();
        for fused in [true, false] {
            let (x, gamma, beta) = (
                Var::from_tensor(&x)?,
                Var::from_tensor(&gamma)?,
                Var::from_tensor(&beta)?,
            );
            let y = if fused {
                layer_norm_trainable(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 1e-5)?
            } else {
                candle_nn::ops::layer_norm_slow(
                    x.as_tensor(),
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    1e-5,
                )?
            };
            let grads = (&y * &weights)?.sum_all()?.backward()?;
            let grad = |var: &Var| grads.get(var.as_tensor()).expect("a gradient").clone();
            results.push([y, grad(&x), grad(&gamma), grad(&beta)]);
        }
        for (name, (fused, slow)) in ["value", "dx", "dgamma", "dbeta"]
            .iter()
            .zip(results[0].iter().zip(&results[1]))
        {
            let difference = (fused - slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = slow.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                difference <= 1e-5 * (1.0 + scale),
                "{name}: fused and portable differ by {difference} (scale {scale})"
            );
        }
        Ok(())
    }
}
