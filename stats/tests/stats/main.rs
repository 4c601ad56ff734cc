//! Integration tests of moat-stats, in one binary (one link step instead of one per file).

mod determinism;
mod questions;
mod reference;
mod simulation;
