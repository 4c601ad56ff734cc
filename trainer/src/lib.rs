//! Reward-model trainer (issue 5): Bradley–Terry training of a scalar reward model on preference pairs,
//! with candle.
//!
//! - [`hashed`]: hashed n-gram features and a linear or MLP head, the fast baseline.
//! - [`bert`]: a BERT-family encoder from a local folder, trained head-only, top-N layers or with LoRA.
//! - [`train()`]: the loop (AdamW with warmup and decay, gradient accumulation, length-bucketed batches,
//!   evaluation, early stopping, checkpoints and `--resume`); [`eval::EvalReport`] the held-out report.
//!   Each micro-batch's pairs are shared among one-thread workers (`step.rs`) on the CPU.
//! - [`benchmark`]: `moat rm eval` on RewardBench v1/v2, TRL and HH-RLHF files; [`ceiling`]: the raters'
//!   own agreement next to the model's on a study's multiply-rated items.
//! - [`cli`]: `moat train` / `moat score` / `moat rm eval` arguments and entry points.
//!
//! Measured figures, commands and seeds are in `trainer/BENCHMARKS.md`. Freed attention-sized buffers
//! that go back to the OS cost a fifth or more of bert training's time: the `moat` binary (mimalloc)
//! runs `moat train` with `MIMALLOC_PURGE_DELAY=-1`; on glibc (the `moat_train` example) set
//! `MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824`.
//!
//! **Determinism:** everything random (splits, batch order, initialisation) comes from `--seed`.
//! **Scoring is batch-invariant:** rows are scored one at a time (see [`model::RewardModel`]).

pub mod active;
pub mod benchmark;
pub mod bert;
pub mod ceiling;
pub mod cli;
pub mod data;
pub mod eval;
pub mod hashed;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod params;
mod step;
pub mod train;

#[cfg(test)]
mod tests;

pub use cli::{
    run_rm_ceiling, run_rm_eval, run_score, run_train, run_train_on, RmEvalArgs, ScoreArgs,
    TrainArgs,
};
pub use data::PreferencePair;
pub use eval::EvalReport;
pub use train::{load_trained, train, BackboneConfig, TrainConfig, TrainReport};

#[cfg(test)]
pub(crate) mod test_data {
    use std::path::PathBuf;

    /// The HH-RLHF harmless-base test file shipped in `testdata/` (see its README).
    pub fn hh_rlhf() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/hh-rlhf/harmless-base-test.jsonl.gz")
    }
}
