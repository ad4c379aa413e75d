//! Attack tests: each starts the real `vidpress serve` as its own process
//! under an address-space limit, attacks it over loopback the way issue 12
//! lists, and holds it to "Safe to expose" (DESIGN.md) and invariant 6: the
//! node's memory stays under a stated bound, `GET /healthz` answers within a
//! second on a fresh connection throughout, and afterwards the node is the
//! same process, has nothing left in `uploads/` and still completes a job.
//!
//! Every test prints one summary line (memory and `/healthz` latency before,
//! at worst during, and after the attack, then what the attack achieved) and
//! appends it to `target/artifacts/attack-summary.txt`, passed or not.
//! nextest runs them one at a time (`.config/nextest.toml`), so that their
//! latency figures are their own.
//!
//! # Layout
//! - [`node`]: a node process (or two, clustered), its memory, its children.
//! - [`watch`]: memory sampling and `/healthz` timing during an attack, and
//!   the verdict that checks the figures and prints the summary line.
//! - [`raw`]: HTTP and WebSocket over raw sockets, for malformed traffic.
//! - [`fixtures`]: generated videos, the decompression bomb among them.
//! - The attacks: [`websocket`], [`multipart`], [`bomb`], [`connections`]
//!   (slowloris, stalled uploads, open-file limit, connection cap), [`disk`]
//!   (admission, file modes), [`small`] (`since`, `/internal` cookie).

mod bomb;
mod connections;
mod disk;
mod fixtures;
mod multipart;
mod node;
mod raw;
mod small;
mod watch;
mod websocket;

/// Makes aws-lc-rs the process's TLS provider before any test runs:
/// reqwest's rustls backend panics without one, and the test harness has no
/// hook that runs before each test (the `vidpress` binary does the same at
/// the start of `main`).
#[ctor::ctor]
unsafe fn install_tls_provider() {
    vidpress::tls::install_default_provider();
}
