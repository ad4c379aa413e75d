//! Integration tests of vidpress, one binary with a module per area.

mod api;
mod bad_input;
mod cli;
mod cluster;
mod compression;
mod corpus;
mod events;
mod failover;
mod jobs;
mod limits;
mod metrics;
mod openapi;
mod probe;
mod replication;
mod split;
mod support;
mod tenants;
mod tls;
mod web;

/// Makes aws-lc-rs the process's TLS provider before any test runs:
/// reqwest's rustls backend panics without one, and the test harness has no
/// hook that runs before each test (the `vidpress` binary does the same at
/// the start of `main`).
#[ctor::ctor]
unsafe fn install_tls_provider() {
    vidpress::tls::install_default_provider();
}
