//! The server's integration tests: one binary, one module per area.

mod api;
mod durability;
mod security;
mod store_suite;
mod support;
