//! Integration tests of moat-stats, in one binary (one link step instead of one per file).

mod composite;
mod determinism;
mod questions;
mod reference;
mod simulation;
mod weighting;
