//! Differentiable building blocks that candle 0.11 lacks or makes needlessly slow.
//!
//! Two facts about candle shape this module (both measured, see `BUILD-NOTES.md`):
//! - the fast kernels `candle_nn::ops::softmax_last_dim` and `candle_nn::ops::layer_norm` have no
//!   backward pass, and a gradient through them is silently dropped rather than reported;
//! - the backward pass of `matmul` always computes the gradient of both operands, so a frozen weight
//!   costs a full extra matrix product per step although nobody reads that gradient.
//!
//! Both are solved with one device-independent trick, [`attach_gradient`]: compute the forward value
//! with whatever fast kernel there is on a *detached* input (so candle records no graph for it), then
//! pass it through a custom op whose forward is a copy and whose backward is written here by hand.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Storage,
    Tensor, D,
};
use rayon::prelude::*;

mod attention;
mod layer_norm;
mod math;
pub use attention::attention_probabilities;
pub use layer_norm::layer_norm_trainable;

/// A tensor computed before a custom op and handed to its forward pass once, then dropped: the graph
/// keeps only the op's output, not a second copy of it.
struct HandOver(Mutex<Option<Tensor>>);

impl HandOver {
    fn new(tensor: Tensor) -> Self {
        HandOver(Mutex::new(Some(tensor)))
    }

    fn take(&self, op: &str) -> Result<Tensor> {
        let mut slot = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{op}: poisoned hand-over slot")))?;
        slot.take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{op}: forward ran twice")))
    }
}

/// A custom op on `input` whose forward returns `value` and whose backward returns
/// `backward(input, output, grad)`.
struct AttachGradient<F> {
    name: &'static str,
    value: HandOver,
    backward: F,
}

fn copy_exact(storage: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
    let start = layout.start_offset();
    let count = layout.shape().elem_count();
    match storage {
        CpuStorage::F32(data) if layout.is_contiguous() => {
            Ok(CpuStorage::F32(data[start..start + count].to_vec()))
        }
        CpuStorage::F64(data) if layout.is_contiguous() => {
            Ok(CpuStorage::F64(data[start..start + count].to_vec()))
        }
        _ => candle_core::bail!("attach_gradient supports contiguous f32 and f64 only"),
    }
}

impl<F> CustomOp1 for AttachGradient<F>
where
    F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _input: &CpuStorage, _input_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let value = self.value.take(self.name)?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cpu(storage) => Ok((copy_exact(storage, layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: value and input on different devices", self.name),
        }
    }

    fn cuda_fwd(
        &self,
        _input: &CudaStorage,
        _input_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let value = self.value.take(self.name)?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            // `attach_gradient` hands over a contiguous value that starts at offset 0, so a clone of
            // the storage read through the output's contiguous layout is exactly the value.
            Storage::Cuda(storage) => Ok((storage.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: value and input on different devices", self.name),
        }
    }

    fn bwd(&self, input: &Tensor, result: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.backward)(input, result, grad)?))
    }
}

/// Returns `value` (computed from `input.detach()`) as a tensor whose gradient with respect to `input`
/// is `backward(input, value, grad_of_value)`. When `input` is not part of a graph there is nothing to
/// attach and `value` is returned as it is.
pub fn attach_gradient<F>(
    input: &Tensor,
    value: Tensor,
    name: &'static str,
    backward: F,
) -> Result<Tensor>
where
    F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    if !input.track_op() {
        return Ok(value);
    }
    let value = value.detach().contiguous()?;
    let value = if value.layout().start_offset() == 0 {
        value
    } else {
        value.copy()?
    };
    input.apply_op1(AttachGradient {
        name,
        value: HandOver::new(value),
        backward,
    })
}

/// Softmax over the last dimension: candle's fast kernel forward, hand-written backward
/// `dx = y ⊙ (g − Σ g ⊙ y)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    softmax_last_dim_masked(x, None)
}

/// `softmax(x + mask)` over the last dimension, with `mask` (broadcast to `x`) a constant: adding it
/// inside the op keeps one more attention-sized tensor out of the graph.
pub fn softmax_last_dim_masked(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let masked = match mask {
        Some(mask) => x.detach().broadcast_add(mask)?,
        None => x.detach(),
    };
    let value = candle_nn::ops::softmax_last_dim(&masked)?;
    attach_gradient(x, value, "softmax-last-dim", |_x, y, g| {
        softmax_backward(y, g)
    })
}

/// The gradient of a softmax's input from its output `y` and the output's gradient `g`:
/// `y ⊙ (g − Σ g ⊙ y)` over the last dimension (one fused pass on the CPU).
fn softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    if let Some(fused) = fused_cpu(y, g, &BackwardKernel::Softmax)? {
        return Ok(fused);
    }
    let dot = (g * y)?.sum_keepdim(D::Minus1)?;
    y * g.broadcast_sub(&dot)?
}

/// Layer normalisation over the last dimension with *frozen* `gamma` and `beta` (plain tensors):
/// candle's fast kernel forward, hand-written input gradient
/// `dx = (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) / σ` with `ĝ = g ⊙ γ`.
/// When `gamma` or `beta` are trainable, [`layer_norm_trainable`] is used instead: it also yields
/// their gradients.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if gamma.track_op() || beta.track_op() {
        return layer_norm_trainable(x, gamma, beta, eps);
    }
    // The fast kernel exists for f32 only; other dtypes (the f64 gradient tests) take the slow forward
    // but still this module's backward.
    let value = if x.dtype() == candle_core::DType::F32 {
        candle_nn::ops::layer_norm(&x.detach(), gamma, beta, eps as f32)?
    } else {
        candle_nn::ops::layer_norm_slow(&x.detach(), gamma, beta, eps as f32)?
    };
    let gamma = gamma.clone();
    let gamma_values = if gamma.device().is_cpu() && gamma.dtype() == DType::F32 {
        Some(gamma.to_vec1::<f32>()?)
    } else {
        None
    };
    attach_gradient(x, value, "layer-norm", move |x, _y, g| {
        if let Some(gamma) = &gamma_values {
            let kernel = BackwardKernel::LayerNorm {
                gamma: gamma.clone(),
                eps: eps as f32,
            };
            if let Some(fused) = fused_cpu(x, g, &kernel)? {
                return Ok(fused);
            }
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_std = (variance + eps)?.sqrt()?.recip()?;
        let normalized = centered.broadcast_mul(&inv_std)?;
        let scaled_grad = g.broadcast_mul(&gamma)?;
        let mean_grad = scaled_grad.mean_keepdim(D::Minus1)?;
        let mean_grad_normalized = (&scaled_grad * &normalized)?.mean_keepdim(D::Minus1)?;
        scaled_grad
            .broadcast_sub(&mean_grad)?
            .sub(&normalized.broadcast_mul(&mean_grad_normalized)?)?
            .broadcast_mul(&inv_std)
    })
}

/// GELU with the exact (erf) form, as BERT uses. On the CPU both directions are one fused, parallel pass
/// (candle's element-wise ops run on one thread, and its GELU backward takes a dozen passes).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let value = match fused_cpu_unary(&x.detach(), &GeluForward)? {
        Some(value) => value,
        None => x.detach().gelu_erf()?,
    };
    attach_gradient(x, value, "gelu-erf", |x, _y, g| {
        if let Some(fused) = fused_cpu(x, g, &BackwardKernel::Gelu)? {
            return Ok(fused);
        }
        let cdf = (((x / std::f64::consts::SQRT_2)?.erf()? + 1.0)? * 0.5)?;
        let density = ((x.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt()))?;
        g * (cdf + (x * density)?)?
    })
}

/// Fused CPU kernels over `(a, g)` of the same shape, row by row along the last dimension.
enum BackwardKernel {
    /// `a` = softmax output y: `y ⊙ (g − Σ g ⊙ y)`.
    Softmax,
    /// `a` = layer-norm input x: `(ĝ − mean ĝ − x̂ mean(ĝ ⊙ x̂)) / σ`, `ĝ = g ⊙ γ`.
    LayerNorm { gamma: Vec<f32>, eps: f32 },
    /// `a` = GELU input x: `g ⊙ (Φ(x) + x φ(x))`.
    Gelu,
}

const INV_SQRT_2PI: f32 = 0.398_942_3;

fn gelu_derivative(x: f32) -> f32 {
    0.5 * (1.0 + math::erf(x * std::f32::consts::FRAC_1_SQRT_2))
        + x * INV_SQRT_2PI * math::exp(-0.5 * x * x)
}

/// The mean and 1/σ of one row, `σ = √(var + eps)`.
fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (variance + eps).sqrt())
}

/// One row of the layer-norm backward pass: writes `dx = (ĝ − mean ĝ − x̂ mean(ĝ ⊙ x̂)) / σ` with
/// `ĝ = g ⊙ γ`, and, when `param_grads` is given, adds `g ⊙ x̂` to dγ and `g` to dβ.
fn layer_norm_row_backward(
    x: &[f32],
    g: &[f32],
    gamma: &[f32],
    eps: f32,
    dx: &mut [f32],
    mut param_grads: Option<(&mut [f32], &mut [f32])>,
) {
    let n = x.len() as f32;
    let (mean, inv_std) = row_moments(x, eps);
    let (mut mean_grad, mut mean_grad_normalized) = (0.0f32, 0.0f32);
    for (i, ((x, g), gamma)) in x.iter().zip(g).zip(gamma).enumerate() {
        let normalized = (x - mean) * inv_std;
        let scaled = g * gamma;
        mean_grad += scaled;
        mean_grad_normalized += scaled * normalized;
        if let Some((d_gamma, d_beta)) = param_grads.as_mut() {
            d_gamma[i] += g * normalized;
            d_beta[i] += g;
        }
    }
    mean_grad /= n;
    mean_grad_normalized /= n;
    for (((dx, x), g), gamma) in dx.iter_mut().zip(x).zip(g).zip(gamma) {
        let normalized = (x - mean) * inv_std;
        *dx = (g * gamma - mean_grad - normalized * mean_grad_normalized) * inv_std;
    }
}

impl BackwardKernel {
    fn run(&self, a: &[f32], g: &[f32], out: &mut [f32]) {
        match self {
            BackwardKernel::Softmax => {
                let dot: f32 = a.iter().zip(g).map(|(y, g)| y * g).sum();
                for ((out, y), g) in out.iter_mut().zip(a).zip(g) {
                    *out = y * (g - dot);
                }
            }
            BackwardKernel::LayerNorm { gamma, eps } => {
                layer_norm_row_backward(a, g, gamma, *eps, out, None)
            }
            BackwardKernel::Gelu => {
                for ((out, x), g) in out.iter_mut().zip(a).zip(g) {
                    *out = g * gelu_derivative(*x);
                }
            }
        }
    }
}

/// Elements per parallel task of the fused CPU kernels: enough to amortise rayon's scheduling.
const TASK_ELEMENTS: usize = 16_384;

/// Whole rows of `row` elements per parallel task (at least one).
fn rows_per_task(row: usize) -> usize {
    (TASK_ELEMENTS / row.max(1)).max(1)
}

/// The contiguous f32 data of a CPU storage, if it is that.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        CpuStorage::F32(data) if layout.is_contiguous() => {
            Some(&data[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()])
        }
        _ => None,
    }
}

impl CustomOp2 for BackwardKernel {
    fn name(&self) -> &'static str {
        "fused-row-kernel"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some(a), Some(g)) = (contiguous_f32(s1, l1), contiguous_f32(s2, l2)) else {
            candle_core::bail!("fused kernels take contiguous f32 tensors")
        };
        let row = *l1.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; a.len()];
        let chunk = row * rows_per_task(row);
        out.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(out, (a, g))| {
                for ((out, a), g) in out.chunks_mut(row).zip(a.chunks(row)).zip(g.chunks(row)) {
                    self.run(a, g, out);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Runs `kernel` on the CPU when both tensors are f32 there (made contiguous); `None` elsewhere, for the
/// caller's portable fallback.
fn fused_cpu(a: &Tensor, g: &Tensor, kernel: &BackwardKernel) -> Result<Option<Tensor>> {
    if !matches!(a.device(), Device::Cpu) || a.dtype() != DType::F32 || g.dtype() != DType::F32 {
        return Ok(None);
    }
    let (a, g) = (a.contiguous()?, g.contiguous()?);
    a.apply_op2_no_bwd(&g, kernel).map(Some)
}

struct GeluForward;

impl CustomOp1 for GeluForward {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some(x) = contiguous_f32(storage, layout) else {
            candle_core::bail!("fused GELU takes a contiguous f32 tensor")
        };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(TASK_ELEMENTS)
            .zip(x.par_chunks(TASK_ELEMENTS))
            .for_each(|(out, x)| {
                for (out, &x) in out.iter_mut().zip(x) {
                    *out = 0.5 * x * (1.0 + math::erf(x * std::f32::consts::FRAC_1_SQRT_2));
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn fused_cpu_unary(x: &Tensor, kernel: &impl CustomOp1) -> Result<Option<Tensor>> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        return Ok(None);
    }
    x.contiguous()?.apply_op1_no_bwd(kernel).map(Some)
}

/// `x · wᵀ + b` over the last dimension of `x` for any rank ≥ 2.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (rows, inner) = (
        dims[..dims.len() - 1].iter().product::<usize>(),
        dims[dims.len() - 1],
    );
    let out = x.reshape((rows, inner))?.matmul(&weight.t()?)?;
    let out = match bias {
        Some(bias) => out.broadcast_add(bias)?,
        None => out,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank >= 1") = weight.dim(0)?;
    out.reshape(out_dims)
}

/// A linear layer whose weight and bias are frozen (plain tensors): the forward product is computed
/// without a graph and the backward pass computes only the input gradient `g · w`, never the unused
/// weight gradient that candle's matmul backward would compute. This is what makes LoRA cheaper than
/// full fine-tuning here.
pub fn frozen_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let value = linear(&x.detach(), weight, bias)?;
    let weight = weight.clone();
    attach_gradient(x, value, "frozen-linear", move |x, _y, g| {
        let dims = g.dims().to_vec();
        let rows = dims[..dims.len() - 1].iter().product::<usize>();
        g.reshape((rows, dims[dims.len() - 1]))?
            .matmul(&weight)?
            .reshape(x.shape())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Central finite differences of a scalar function of one tensor, element by element (f64).
    fn numeric_gradient(x: &Tensor, f: &dyn Fn(&Tensor) -> Result<f64>) -> Result<Vec<f64>> {
        let values = x.flatten_all()?.to_vec1::<f64>()?;
        let step = 1e-5;
        let mut gradient = Vec::with_capacity(values.len());
        for index in 0..values.len() {
            let mut plus = values.clone();
            plus[index] += step;
            let mut minus = values.clone();
            minus[index] -= step;
            let plus = Tensor::from_vec(plus, x.shape(), x.device())?;
            let minus = Tensor::from_vec(minus, x.shape(), x.device())?;
            gradient.push((f(&plus)? - f(&minus)?) / (2.0 * step));
        }
        Ok(gradient)
    }

    /// Checks the analytic gradient of `sum(op(x) ⊙ w)` (w fixed, so every output element matters)
    /// against finite differences.
    fn check_gradient(op: &dyn Fn(&Tensor) -> Result<Tensor>, shape: &[usize]) -> Result<()> {
        let device = Device::Cpu;
        let count: usize = shape.iter().product();
        let x = Tensor::from_vec(
            (0..count)
                .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
                .collect::<Vec<_>>(),
            shape,
            &device,
        )?;
        let out_shape = op(&x)?.shape().clone();
        let weights = Tensor::from_vec(
            (0..out_shape.elem_count())
                .map(|i| ((i * 13 % 7) as f64 - 3.0) / 2.0)
                .collect::<Vec<_>>(),
            out_shape,
            &device,
        )?;
        let var = Var::from_tensor(&x)?;
        let loss = (op(var.as_tensor())? * &weights)?.sum_all()?;
        let grads = loss.backward()?;
        let analytic = grads
            .get(var.as_tensor())
            .expect("gradient reaches the input")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let numeric =
            numeric_gradient(&x, &|x| (op(x)? * &weights)?.sum_all()?.to_scalar::<f64>())?;
        for (index, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
            assert!(
                (a - n).abs() < 1e-6 * (1.0 + n.abs()),
                "element {index}: analytic {a} vs numeric {n}"
            );
        }
        Ok(())
    }

    #[test]
    fn softmax_gradient_matches_finite_differences() -> Result<()> {
        check_gradient(&|x| softmax_last_dim(x), &[2, 3, 5])
    }

    #[test]
    fn layer_norm_gradient_matches_finite_differences() -> Result<()> {
        let gamma = Tensor::new(&[0.5f64, -1.0, 2.0, 1.5], &Device::Cpu)?;
        let beta = Tensor::new(&[0.1f64, 0.0, -0.3, 0.2], &Device::Cpu)?;
        check_gradient(&|x| layer_norm(x, &gamma, &beta, 1e-5), &[3, 4])
    }

    #[test]
    fn gelu_gradient_matches_finite_differences() -> Result<()> {
        check_gradient(&|x| gelu_erf(x), &[3, 5])
    }

    /// The fused f32 CPU kernels compute what the portable tensor formulas compute.
    #[test]
    fn fused_kernels_agree_with_portable_formulas() -> Result<()> {
        let device = Device::Cpu;
        let x64 = Tensor::from_vec(
            (0..60)
                .map(|i| ((i * 37 % 23) as f64 - 11.0) / 4.0)
                .collect::<Vec<_>>(),
            (3, 4, 5),
            &device,
        )?;
        let w64 = Tensor::from_vec(
            (0..60)
                .map(|i| ((i * 13 % 7) as f64 - 3.0) / 2.0)
                .collect::<Vec<_>>(),
            (3, 4, 5),
            &device,
        )?;
        let gamma64 = Tensor::new(&[0.5f64, -1.0, 2.0, 1.5, 0.7], &device)?;
        let beta64 = Tensor::new(&[0.1f64, 0.0, -0.3, 0.2, 0.0], &device)?;
        type Op = dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;
        let ops: [(&str, &Op); 3] = [
            ("softmax", &|x, _, _| softmax_last_dim(x)),
            ("layer norm", &|x, gamma, beta| {
                layer_norm(x, gamma, beta, 1e-5)
            }),
            ("gelu", &|x, _, _| gelu_erf(x)),
        ];
        for (name, op) in ops {
            let mut grads = Vec::new();
            for dtype in [DType::F64, DType::F32] {
                let var = Var::from_tensor(&x64.to_dtype(dtype)?)?;
                let (gamma, beta) = (gamma64.to_dtype(dtype)?, beta64.to_dtype(dtype)?);
                let loss =
                    (op(var.as_tensor(), &gamma, &beta)? * w64.to_dtype(dtype)?)?.sum_all()?;
                let grad = loss
                    .backward()?
                    .get(var.as_tensor())
                    .expect("a gradient")
                    .to_dtype(DType::F64)?;
                grads.push(grad);
            }
            let difference = (&grads[0] - &grads[1])?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(
                difference < 1e-4,
                "{name}: fused f32 and portable f64 differ by {difference}"
            );
        }
        Ok(())
    }

    #[test]
    fn frozen_linear_gradient_matches_finite_differences() -> Result<()> {
        let weight = Tensor::new(&[[0.5f64, -1.0, 2.0], [1.5, 0.25, -0.75]], &Device::Cpu)?;
        let bias = Tensor::new(&[0.1f64, -0.2], &Device::Cpu)?;
        check_gradient(
            &|x| frozen_linear(x, &weight, Some(&bias))?.sqr(),
            &[2, 2, 3],
        )
    }

    /// The fast forward kernels agree with the differentiable reference implementations.
    #[test]
    fn fast_forwards_agree_with_reference_ops() -> Result<()> {
        let x = Tensor::new(
            &[[1.0f32, -2.0, 0.5, 3.0], [0.0, 0.1, -0.1, 7.0]],
            &Device::Cpu,
        )?;
        let gamma = Tensor::new(&[0.5f32, -1.0, 2.0, 1.5], &Device::Cpu)?;
        let beta = Tensor::new(&[0.1f32, 0.0, -0.3, 0.2], &Device::Cpu)?;
        let var = Var::from_tensor(&x)?;
        let ours = layer_norm(var.as_tensor(), &gamma, &beta, 1e-12)?;
        let reference = candle_nn::ops::layer_norm_slow(&x, &gamma, &beta, 1e-12)?;
        let difference = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(difference < 1e-5, "layer norm differs by {difference}");
        let ours = softmax_last_dim(var.as_tensor())?;
        let reference = candle_nn::ops::softmax(&x, D::Minus1)?;
        let difference = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(difference < 1e-6, "softmax differs by {difference}");
        Ok(())
    }

    /// The point of `frozen_linear`: no gradient is produced for the frozen weight.
    #[test]
    fn frozen_linear_computes_no_weight_gradient() -> Result<()> {
        let weight = Tensor::new(&[[0.5f32, -1.0], [1.5, 0.25]], &Device::Cpu)?;
        let x = Var::new(&[[1.0f32, 2.0]], &Device::Cpu)?;
        let grads = frozen_linear(x.as_tensor(), &weight, None)?
            .sum_all()?
            .backward()?;
        assert!(grads.get(&weight).is_none());
        // d/dx sum(x wᵀ) = column sums of w = [2.0, -0.75].
        assert_eq!(
            grads.get(x.as_tensor()).unwrap().to_vec2::<f32>()?,
            vec![vec![2.0, -0.75]]
        );
        Ok(())
    }
}
