//! The server's integration tests: one binary, one module per area.

mod admin;
mod api;
mod arena;
mod assigner_memory;
mod bench_llm;
mod durability;
mod identity;
mod internal_errors;
mod judge;
mod leaderboard_cli;
mod openapi;
mod properties;
mod repository;
mod rigging;
mod scale_out;
mod security;
mod serving;
mod sessions;
mod settings;
mod startup;
mod store_suite;
mod support;
