//! AdamW with parameter groups, a warmup-then-linear-decay schedule, gradient accumulation and
//! clipping, and a state that can be saved for `--resume`.
//!
//! candle-nn's `AdamW` has one learning rate and keeps its moments private, so it can neither train the
//! head faster than the encoder nor be checkpointed; this is the same algorithm (Loshchilov & Hutter,
//! decoupled weight decay) with both.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};

use crate::params::{ParamGroup, ParamSet};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm of each step to this value (0 disables).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
        }
    }
}

/// Linear warmup from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`.
pub fn schedule(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else if total <= warmup {
        1.0
    } else {
        ((total - step) as f64 / (total - warmup) as f64).clamp(0.0, 1.0)
    }
}

pub struct AdamW {
    config: AdamWConfig,
    /// Completed optimizer steps.
    pub steps: usize,
    moments: Vec<(Tensor, Tensor)>,
    /// Gradients summed over the micro-batches of the step in progress, one slot per parameter.
    accumulated: Vec<Option<Tensor>>,
}

impl AdamW {
    pub fn new(params: &ParamSet, config: AdamWConfig) -> candle_core::Result<Self> {
        let moments = params
            .iter()
            .map(|param| Ok((param.var.zeros_like()?, param.var.zeros_like()?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(AdamW {
            config,
            steps: 0,
            moments,
            accumulated: vec![None; params.len()],
        })
    }

    /// Adds one micro-batch's gradients (already scaled by the caller) to the step in progress.
    pub fn accumulate(&mut self, params: &ParamSet, grads: &GradStore) -> candle_core::Result<()> {
        for (slot, param) in self.accumulated.iter_mut().zip(params.iter()) {
            if let Some(grad) = grads.get(param.var.as_tensor()) {
                *slot = Some(match slot.take() {
                    Some(sum) => (sum + grad)?,
                    None => grad.clone(),
                });
            }
        }
        Ok(())
    }

    /// Applies the accumulated gradients with the given learning rate per group; returns the global
    /// gradient norm before clipping.
    pub fn step(
        &mut self,
        params: &ParamSet,
        learning_rate: impl Fn(ParamGroup) -> f64,
    ) -> candle_core::Result<f64> {
        let mut squared_norm = 0.0;
        for grad in self.accumulated.iter().flatten() {
            squared_norm += grad
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        let norm = squared_norm.sqrt();
        let clip = if self.config.max_grad_norm > 0.0 && norm > self.config.max_grad_norm {
            self.config.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.steps += 1;
        let t = self.steps as i32;
        let (beta1, beta2) = (self.config.beta1, self.config.beta2);
        let correction1 = 1.0 - beta1.powi(t);
        let correction2 = 1.0 - beta2.powi(t);
        for ((param, (m, v)), grad) in params
            .iter()
            .zip(self.moments.iter_mut())
            .zip(self.accumulated.iter_mut())
        {
            let Some(grad) = grad.take() else { continue };
            let grad = (grad * clip)?;
            let lr = learning_rate(param.group);
            *m = ((&*m * beta1)? + (&grad * (1.0 - beta1))?)?;
            *v = ((&*v * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let update =
                ((&*m / correction1)? / ((&*v / correction2)?.sqrt()? + self.config.eps)?)?;
            let decay = if param.decay {
                1.0 - lr * self.config.weight_decay
            } else {
                1.0
            };
            let theta = ((param.var.as_tensor() * decay)? - (update * lr)?)?;
            param.var.set(&theta)?;
        }
        Ok(norm)
    }

    pub fn save(&self, params: &ParamSet, path: &Path) -> anyhow::Result<()> {
        let mut tensors = HashMap::new();
        for (param, (m, v)) in params.iter().zip(&self.moments) {
            tensors.insert(format!("m.{}", param.name), m.clone());
            tensors.insert(format!("v.{}", param.name), v.clone());
        }
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(
        &mut self,
        params: &ParamSet,
        path: &Path,
        steps: usize,
        device: &Device,
    ) -> anyhow::Result<()> {
        let tensors = candle_core::safetensors::load(path, device)
            .with_context(|| format!("reading {}", path.display()))?;
        for (param, (m, v)) in params.iter().zip(self.moments.iter_mut()) {
            *m = tensors
                .get(&format!("m.{}", param.name))
                .with_context(|| format!("no moment for {}", param.name))?
                .clone();
            *v = tensors
                .get(&format!("v.{}", param.name))
                .with_context(|| format!("no moment for {}", param.name))?
                .clone();
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(schedule(0, 4, 10), 0.25);
        assert_eq!(schedule(3, 4, 10), 1.0);
        assert_eq!(schedule(4, 4, 10), 1.0);
        assert_eq!(schedule(7, 4, 10), 0.5);
        assert_eq!(schedule(10, 4, 10), 0.0);
    }

    /// One AdamW step moves each parameter by lr · sign(g) (bias-corrected m/√v = ±1), after decay.
    #[test]
    fn first_step_moves_by_the_learning_rate() -> anyhow::Result<()> {
        let device = Device::Cpu;
        let mut params = ParamSet::default();
        let w = params.add(
            "w",
            Tensor::new(&[[1.0f32, -2.0]], &device)?,
            ParamGroup::Head,
        )?;
        let b = params.add("b", Tensor::new(&[0.5f32], &device)?, ParamGroup::Encoder)?;
        let config = AdamWConfig {
            weight_decay: 0.1,
            max_grad_norm: 0.0,
            ..Default::default()
        };
        let mut optimizer = AdamW::new(&params, config)?;
        let loss = (w.sum_all()? * 3.0)?.sub(&b.sum_all()?)?;
        optimizer.accumulate(&params, &loss.backward()?)?;
        optimizer.step(
            &params,
            |group| if group == ParamGroup::Head { 0.1 } else { 0.01 },
        )?;
        let w = params.iter().next().unwrap().var.to_vec2::<f32>()?;
        // w ← w(1 − 0.1·0.1) − 0.1: 1 → 0.89, −2 → −2.08; b has no decay: 0.5 + 0.01 = 0.51.
        assert!(
            (w[0][0] - 0.89).abs() < 1e-6 && (w[0][1] + 2.08).abs() < 1e-6,
            "{w:?}"
        );
        let b = params.iter().nth(1).unwrap().var.to_vec1::<f32>()?;
        assert!((b[0] - 0.51).abs() < 1e-6, "{b:?}");
        Ok(())
    }
}
