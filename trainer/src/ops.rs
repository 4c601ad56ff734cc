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

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor, D};

/// A custom op over `(input, value)`: forward returns `value`, backward returns
/// `backward(input, value, grad)` as the gradient of `input` (and nothing for `value`, which is
/// detached).
struct AttachGradient<F> {
    name: &'static str,
    backward: F,
}

fn copy_exact(storage: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
    let start = layout.start_offset();
    let count = layout.shape().elem_count();
    match storage {
        CpuStorage::F32(data) => Ok(CpuStorage::F32(data[start..start + count].to_vec())),
        CpuStorage::F64(data) => Ok(CpuStorage::F64(data[start..start + count].to_vec())),
        _ => candle_core::bail!("attach_gradient supports f32 and f64 only"),
    }
}

impl<F> CustomOp2 for AttachGradient<F>
where
    F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _input: &CpuStorage,
        _input_layout: &Layout,
        value: &CpuStorage,
        value_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((
            copy_exact(value, value_layout)?,
            value_layout.shape().clone(),
        ))
    }

    fn cuda_fwd(
        &self,
        _input: &CudaStorage,
        _input_layout: &Layout,
        value: &CudaStorage,
        value_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        // `attach_gradient` hands over a contiguous value that starts at offset 0, so a clone of the
        // storage read through the output's contiguous layout is exactly the value.
        Ok((value.try_clone(value_layout)?, value_layout.shape().clone()))
    }

    fn bwd(
        &self,
        input: &Tensor,
        _value: &Tensor,
        result: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some((self.backward)(input, result, grad)?), None))
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
    input.apply_op2(&value, AttachGradient { name, backward })
}

/// Softmax over the last dimension: candle's fast kernel forward, hand-written backward
/// `dx = y ⊙ (g − Σ g ⊙ y)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let value = candle_nn::ops::softmax_last_dim(&x.detach())?;
    attach_gradient(x, value, "softmax-last-dim", |_x, y, g| {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        y * g.broadcast_sub(&dot)?
    })
}

/// Layer normalisation over the last dimension with *frozen* `gamma` and `beta` (plain tensors):
/// candle's fast kernel forward, hand-written input gradient
/// `dx = (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) / σ` with `ĝ = g ⊙ γ`.
/// When `gamma` or `beta` are trainable, [`candle_nn::ops::layer_norm_slow`] is used instead: it is
/// built from differentiable primitives and so also yields their gradients.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if gamma.track_op() || beta.track_op() {
        return candle_nn::ops::layer_norm_slow(x, gamma, beta, eps as f32);
    }
    // The fast kernel exists for f32 only; other dtypes (the f64 gradient tests) take the slow forward
    // but still this module's backward.
    let value = if x.dtype() == candle_core::DType::F32 {
        candle_nn::ops::layer_norm(&x.detach(), gamma, beta, eps as f32)?
    } else {
        candle_nn::ops::layer_norm_slow(&x.detach(), gamma, beta, eps as f32)?
    };
    let gamma = gamma.clone();
    attach_gradient(x, value, "layer-norm", move |x, _y, g| {
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
