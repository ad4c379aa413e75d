//! vidpress: a clustered video-compression service.
//!
//! # Layout
//! - [`config`]: `vidpress serve` settings (flags and `VIDPRESS_*` env).
//! - [`server`]: starts a node's actors and serves its HTTP API.
//! - [`http`]: the axum router, handlers, documents and errors.
//! - [`client`]: the `submit`, `status`, `watch` and `cancel` commands.
//! - [`transfer`]: node-to-node byte transfers over HTTP.
//! - [`signing`]: the signatures of node-to-node requests (HMAC keyed by
//!   the cookie, which never leaves the node).
//! - [`tls`]: the rustls configurations of the HTTP API, the cluster
//!   protocol, node-to-node HTTPS and the CLI.
//!
//! The actors live in `vidpress-actors`, the transcoder in
//! `vidpress-transcode`, node identity and membership in `vidpress-cluster`.

pub mod client;
pub mod config;
pub mod http;
pub mod server;
pub mod signing;
pub mod tls;
pub mod transfer;
