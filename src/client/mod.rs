//! The command-line client: `submit`, `status`, `watch`, `cancel`, speaking
//! the HTTP API and the WebSocket event stream like any other client, over
//! TLS for an https:// server (trusting `--ca`, or the system's CAs), with
//! `--token` as a bearer token on every request.
//!
//! This module owns the commands `status`, `watch` and `cancel`, the
//! [`ClientError`] of every command, and the progress bars' style.
//!
//! # Layout
//! - `args`: the commands' flags ([`ServerArg`], [`SubmitArgs`],
//!   [`JobArgs`]) and the parsers of their values.
//! - `connection`: the connection to the server (requests carrying the
//!   token, WebSockets over TLS, refusals) and the result's download.
//! - `upload`: `submit`, the upload of a file.
//! - `follow`: following a job's events with a progress bar until it ends.

mod args;
mod connection;
mod follow;
mod upload;

use indicatif::ProgressStyle;
use reqwest::StatusCode;
use serde_json::Value;

use crate::tls::TlsError;

pub use self::args::{parse_size, JobArgs, ServerArg, SubmitArgs};
pub use self::upload::submit;

use self::connection::{expect_json, Server};
use self::follow::follow;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the event stream failed: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("{}", if *.token_given {
        "the server refused the token"
    } else {
        "the server needs a token: give --token or VIDPRESS_TOKEN"
    })]
    Unauthorized { token_given: bool },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the job ended {status}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    JobEnded {
        status: String,
        message: Option<String>,
    },
    #[error("the server sent something unexpected: {0}")]
    Protocol(String),
}

/// Prints a job's status document.
pub async fn status(args: JobArgs) -> Result<(), ClientError> {
    let server = Server::new(&args.server)?;
    let response = server
        .request(reqwest::Method::GET, &format!("/jobs/{}", args.id))
        .send()
        .await?;
    let code = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if matches!(code, StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED) {
        return Err(server.refusal(code, &body));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
    Ok(())
}

/// Follows a job's events with a progress bar until it ends.
pub async fn watch(args: JobArgs) -> Result<(), ClientError> {
    let server = Server::new(&args.server)?;
    follow(&server, &args.id, true).await.map(|_| ())
}

/// Cancels a job and prints the status it reached.
pub async fn cancel(args: JobArgs) -> Result<(), ClientError> {
    let server = Server::new(&args.server)?;
    let response = server
        .request(reqwest::Method::DELETE, &format!("/jobs/{}", args.id))
        .send()
        .await?;
    let job = expect_json(&server, response).await?;
    println!("{}", job["status"].as_str().unwrap_or("unknown"));
    Ok(())
}

fn bar_style(label: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{label:>11} [{{bar:40}}] {{percent:>3}}% {{msg}} (eta {{eta}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}
