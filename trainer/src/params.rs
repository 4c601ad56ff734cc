//! Trainable parameters: named candle `Var`s in learning-rate groups, seeded initialisation, and
//! safetensors save/load by name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Which learning rate a parameter trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamGroup {
    /// The reward head (and every parameter of the hashed backbone).
    Head,
    /// Encoder weights being fine-tuned: LoRA adapters or the top layers.
    Encoder,
}

pub struct Param {
    pub name: String,
    pub var: Var,
    pub group: ParamGroup,
    /// Whether AdamW's decoupled weight decay applies (matrices yes; biases and norms no).
    pub decay: bool,
}

/// The trainable parameters of a model, in a fixed order (the optimizer state follows it).
#[derive(Default)]
pub struct ParamSet {
    params: Vec<Param>,
}

impl ParamSet {
    /// Registers `tensor` as a trainable parameter and returns the variable's tensor.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        tensor: Tensor,
        group: ParamGroup,
    ) -> candle_core::Result<Tensor> {
        let decay = tensor.rank() >= 2;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        self.params.push(Param {
            name: name.into(),
            var,
            group,
            decay,
        });
        Ok(out)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The number of scalar parameters, in total or of one group.
    pub fn count(&self, group: Option<ParamGroup>) -> usize {
        self.params
            .iter()
            .filter(|param| group.is_none_or(|group| param.group == group))
            .map(|param| param.var.elem_count())
            .sum()
    }

    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|param| (param.name.clone(), param.var.as_tensor().detach()))
            .collect()
    }

    /// Detached tensors by name, split by group (each group is saved to its own file).
    pub fn tensors_by_group(&self) -> HashMap<ParamGroup, HashMap<String, Tensor>> {
        let mut groups: HashMap<ParamGroup, HashMap<String, Tensor>> = HashMap::new();
        for param in &self.params {
            groups
                .entry(param.group)
                .or_default()
                .insert(param.name.clone(), param.var.as_tensor().detach());
        }
        groups
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tensors = self.tensors();
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Sets every parameter from the safetensors file at `path`; names and shapes must match exactly.
    pub fn load(&self, path: &Path, device: &Device) -> anyhow::Result<()> {
        let tensors = candle_core::safetensors::load(path, device)
            .with_context(|| format!("reading {}", path.display()))?;
        self.set_from(&tensors)
            .with_context(|| format!("loading {}", path.display()))
    }

    pub fn set_from(&self, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        for param in &self.params {
            let tensor = tensors
                .get(&param.name)
                .with_context(|| format!("no tensor {:?}", param.name))?;
            anyhow::ensure!(
                tensor.shape() == param.var.shape(),
                "tensor {:?} has shape {:?}, the model expects {:?}",
                param.name,
                tensor.shape(),
                param.var.shape()
            );
            param.var.set(&tensor.to_dtype(param.var.dtype())?)?;
        }
        anyhow::ensure!(
            tensors.len() == self.params.len(),
            "the file has {} tensors, the model {} trainable ones",
            tensors.len(),
            self.params.len()
        );
        Ok(())
    }
}

/// Uniform values in `[-bound, bound)` drawn from `rng`: seeded initialisation (a candle `VarMap`
/// initialiser draws from an unseeded generator).
pub fn uniform(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    bound: f64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| rng.gen_range(-bound..bound) as f32)
        .collect();
    Tensor::from_vec(values, shape, device)
}

pub fn zeros(shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    Tensor::zeros(shape, DType::F32, device)
}
