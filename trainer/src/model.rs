//! What every reward model offers the training loop and the scorer.

use candle_core::{Device, Tensor};
use moat_exports::Message;

use crate::params::ParamSet;

/// A scalar reward model over (prompt, response).
///
/// **Scoring is batch-invariant**: [`RewardModel::score`] runs one row at a time, so a row's reward
/// never depends on which other rows were scored with it (padding and the blocking of a batched
/// matrix product would otherwise change the last bits). Training batches freely.
pub trait RewardModel {
    /// One (prompt, response) prepared for the model: hashed features or token ids.
    type Input: Clone + Send + Sync;

    fn encode(&self, prompt: &[Message], response: &str) -> anyhow::Result<Self::Input>;

    /// A size used to bucket inputs of similar cost into one batch (tokens, features).
    fn input_len(&self, input: &Self::Input) -> usize;

    /// Rewards of a batch, shape `(n,)`; with `train` the graph to the trainable parameters is kept.
    fn rewards(&self, inputs: &[&Self::Input], train: bool) -> candle_core::Result<Tensor>;

    fn params(&self) -> &ParamSet;

    fn device(&self) -> &Device;

    /// The reward of one row, computed alone.
    fn score(&self, input: &Self::Input) -> candle_core::Result<f32> {
        self.rewards(&[input], false)?
            .to_vec1::<f32>()
            .map(|values| values[0])
    }
}
