//! The server's integration tests: one binary, one module per area.

mod api;
mod arena;
mod bench_llm;
mod durability;
mod identity;
mod openapi;
mod properties;
mod security;
mod serving;
mod store_suite;
mod support;
