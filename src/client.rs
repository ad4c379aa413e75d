//! The command-line client: `submit`, `status`, `watch`, `cancel`, speaking
//! the HTTP API and the WebSocket event stream like any other client, over
//! TLS for an https:// server (trusting `--ca`, or the system's CAs), with
//! `--token` as a bearer token on every request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use vidpress_transcode::{Codec, EncodeOptions, Format, Preset};

use crate::tls::{self, TlsError};

/// Reconnects a watch may make after its WebSocket drops.
const RECONNECTS: u32 = 30;

/// Where the server is, and how to be let in.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArg {
    /// Base URL of any vidpress node.
    #[arg(long, env = "VIDPRESS_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token, sent as `Authorization: Bearer <token>` (needed when the
    /// server has --api-keys).
    #[arg(long, env = "VIDPRESS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA to trust for an https:// server, instead of the
    /// system's CAs (for a private CA).
    #[arg(long, env = "VIDPRESS_CA")]
    pub ca: Option<PathBuf>,
}

/// A connection to the server: its base URL, an HTTP client and the TLS
/// settings of its WebSockets, and the token sent with every request.
struct Server {
    base: String,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

impl Server {
    fn new(arg: &ServerArg) -> Result<Self, ClientError> {
        let tls = tls::client(arg.ca.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(Arc::unwrap_or_clone(tls.clone()))
            .build()?;
        Ok(Self {
            base: arg.server.trim_end_matches('/').to_owned(),
            http,
            tls,
            token: arg.token.clone(),
        })
    }

    /// Returns a request to `path` (`/jobs/…`), carrying the token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Opens the WebSocket at `path`, carrying the token as a header.
    async fn websocket(
        &self,
        path: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::Error,
    > {
        let base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let mut request = format!("{base}{path}").into_client_request()?;
        if let Some(token) = &self.token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(tokio_tungstenite::tungstenite::http::Error::from)?;
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let (stream, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await?;
        Ok(stream)
    }

    /// Returns the error of an answer with `status`: a 401 says what to do
    /// about the token.
    fn refusal(&self, status: StatusCode, body: &Value) -> ClientError {
        if status == StatusCode::UNAUTHORIZED {
            return ClientError::Unauthorized {
                token_given: self.token.is_some(),
            };
        }
        server_error(status.as_u16(), body)
    }
}

/// `vidpress submit`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The video to compress.
    pub file: PathBuf,
    /// Video codec: h264 (default), h265, av1 or vp9.
    #[arg(long)]
    pub codec: Option<Codec>,
    /// Container: mp4 (AAC audio) or webm (Opus audio) [default: webm for
    /// vp9, else mp4].
    #[arg(long)]
    pub format: Option<Format>,
    /// Constant rate factor, 0 (best; 1 for av1) to 51 (smallest) for h264
    /// and h265, 63 for av1 and vp9.
    #[arg(long, conflicts_with_all = ["target_size", "min_ssim"])]
    pub crf: Option<u8>,
    /// Aim at this size for the whole file, audio included: bytes, or with
    /// a unit, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (of 1024), e.g.
    /// `25MB`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "min_ssim")]
    pub target_size: Option<u64>,
    /// Pick the smallest file whose SSIM against the input is at least
    /// this, from 0.90 to 0.999 (e.g. 0.97).
    #[arg(long, value_name = "SSIM", value_parser = parse_min_ssim)]
    pub min_ssim: Option<f64>,
    /// Speed preset, x264's names, mapped onto each encoder's own scale.
    #[arg(long)]
    pub preset: Option<Preset>,
    /// Downscale to at most this height, keeping the aspect ratio.
    #[arg(long)]
    pub max_height: Option<u32>,
    /// AAC bitrate in kbit/s.
    #[arg(long)]
    pub audio_bitrate: Option<u32>,
    /// Follow the job to its end, then download the result.
    #[arg(long)]
    pub wait: bool,
    /// Where to write the result with --wait [default:
    /// <file>.compressed.mp4, or .webm].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A command on one job.
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The job ID.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArg,
}

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

/// Uploads a file; with `--wait`, follows it and downloads the result.
pub async fn submit(args: SubmitArgs) -> Result<(), ClientError> {
    let server = Server::new(&args.server)?;
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|source| ClientError::Read {
            path: args.file.display().to_string(),
            source,
        })?;
    let size = file
        .metadata()
        .await
        .map_err(|source| ClientError::Read {
            path: args.file.display().to_string(),
            source,
        })?
        .len();
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(codec) = args.codec {
        query.push(("codec", codec.to_string()));
    }
    if let Some(format) = args.format {
        query.push(("format", format.to_string()));
    }
    if let Some(crf) = args.crf {
        query.push(("crf", crf.to_string()));
    }
    if let Some(bytes) = args.target_size {
        query.push(("target_size_bytes", bytes.to_string()));
    }
    if let Some(ssim) = args.min_ssim {
        query.push(("min_ssim", ssim.to_string()));
    }
    if let Some(preset) = args.preset {
        query.push(("preset", preset.to_string()));
    }
    if let Some(h) = args.max_height {
        query.push(("max_height", h.to_string()));
    }
    if let Some(b) = args.audio_bitrate {
        query.push(("audio_bitrate", b.to_string()));
    }
    let bar = ProgressBar::new(size).with_style(bar_style("uploading"));
    let uploaded = bar.clone();
    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
        .inspect_ok(move |chunk| uploaded.inc(chunk.len() as u64));
    let response = server
        .request(reqwest::Method::POST, "/jobs")
        .query(&query)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    bar.finish_and_clear();
    let job = expect_json(&server, response).await?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| ClientError::Protocol("no job id in the answer".into()))?
        .to_owned();
    println!("{id}");
    if !args.wait {
        return Ok(());
    }
    let last = follow(&server, &id, true).await?;
    // The node's own choice of container (a codec's default) names the file.
    let extension = last["options"]["format"].as_str().unwrap_or("mp4");
    let output = args
        .output
        .unwrap_or_else(|| default_output(&args.file, extension));
    download(&server, &id, &output).await?;
    let result = &last["result"];
    let bytes = result["bytes"].as_u64().unwrap_or_default();
    let mut report = String::new();
    if let Some(ssim) = result["quality"]["ssim"].as_f64() {
        report.push_str(&format!(", SSIM {ssim:.4}"));
    }
    if let Some(crf) = result["crf"].as_u64() {
        report.push_str(&format!(", CRF {crf}"));
    }
    eprintln!(
        "completed: {} ({} → {} bytes{report})",
        output.display(),
        size,
        bytes
    );
    Ok(())
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

/// Follows the events of job `id` until its terminal status, reconnecting
/// with `since` when the stream drops. Returns the last status document;
/// a job that did not complete is an error.
async fn follow(server: &Server, id: &str, show_bar: bool) -> Result<Value, ClientError> {
    let bar = if show_bar {
        ProgressBar::new(1000).with_style(bar_style("compressing"))
    } else {
        ProgressBar::hidden()
    };
    let mut since: Option<u64> = None;
    let mut failures = 0;
    loop {
        let path = match since {
            Some(n) => format!("/jobs/{id}/events?since={n}"),
            None => format!("/jobs/{id}/events"),
        };
        let mut stream = match server.websocket(&path).await {
            Ok(stream) => stream,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == StatusCode::UNAUTHORIZED =>
            {
                return Err(server.refusal(StatusCode::UNAUTHORIZED, &Value::Null));
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(ClientError::Server {
                    status: response.status().as_u16(),
                    message: "the job cannot be followed (unknown id?)".into(),
                })
            }
            Err(e) if failures < RECONNECTS => {
                failures += 1;
                bar.set_message(format!("reconnecting: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(message) = stream.next().await {
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(_) => break,
            };
            let event: Value = serde_json::from_str(&text)
                .map_err(|e| ClientError::Protocol(format!("bad event: {e}")))?;
            since = event["seq"].as_u64().or(since);
            let job = &event["job"];
            let status = job["status"].as_str().unwrap_or("unknown").to_owned();
            let progress = job["progress"].as_f64().unwrap_or(0.0);
            bar.set_position((progress * 1000.0).round() as u64);
            bar.set_message(status.clone());
            match status.as_str() {
                "completed" => {
                    bar.finish_and_clear();
                    return Ok(job.clone());
                }
                "failed" | "canceled" => {
                    bar.abandon();
                    return Err(ClientError::JobEnded {
                        status,
                        message: job["error"]["message"].as_str().map(str::to_owned),
                    });
                }
                _ => {}
            }
        }
        failures += 1;
        if failures > RECONNECTS {
            return Err(ClientError::Protocol(
                "the event stream kept closing before the job ended".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn download(server: &Server, id: &str, output: &Path) -> Result<(), ClientError> {
    let response = server
        .request(reqwest::Method::GET, &format!("/jobs/{id}/result"))
        .send()
        .await?;
    if !response.status().is_success() {
        let code = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        return Err(server.refusal(code, &body));
    }
    let write_err = |source| ClientError::Write {
        path: output.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::create(output).await.map_err(write_err)?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?)
            .await
            .map_err(write_err)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(write_err)
}

async fn expect_json(server: &Server, response: reqwest::Response) -> Result<Value, ClientError> {
    let code = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if code.is_success() {
        Ok(body)
    } else {
        Err(server.refusal(code, &body))
    }
}

fn server_error(status: u16, body: &Value) -> ClientError {
    ClientError::Server {
        status,
        message: body["error"]["message"]
            .as_str()
            .unwrap_or("no error message")
            .to_owned(),
    }
}

fn default_output(input: &Path, extension: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    input.with_file_name(format!("{stem}.compressed.{extension}"))
}

/// Parses a size for `--target-size`: a number of bytes, or a number
/// (decimals allowed) with a unit: `KB`, `MB`, `GB` count in powers of
/// 1000, `KiB`, `MiB`, `GiB` in powers of 1024; units ignore case and may
/// follow a space. Returns the size rounded to a byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: give e.g. 25MB, 1.5GiB or 200000"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit {:?} in {text:?}: give bytes, or a number with \
                 KB, MB, GB (powers of 1000) or KiB, MiB, GiB (of 1024), e.g. 25MB",
                unit.trim()
            ))
        }
    };
    let bytes = (value * multiplier as f64).round();
    if bytes < 1.0 {
        return Err(format!("{text:?} is not a size above zero"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Parses `--min-ssim`: a number within the bounds the server takes.
fn parse_min_ssim(text: &str) -> Result<f64, String> {
    let (min, max) = (EncodeOptions::MIN_SSIM_MIN, EncodeOptions::MIN_SSIM_MAX);
    match text.trim().parse::<f64>() {
        Ok(ssim) if (min..=max).contains(&ssim) => Ok(ssim),
        _ => Err(format!("the SSIM must be a number from {min:.2} to {max}")),
    }
}

fn bar_style(label: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{label:>11} [{{bar:40}}] {{percent:>3}}% {{msg}} (eta {{eta}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_decimal_or_binary_units() {
        let cases = [
            ("200000", 200_000),
            ("200000B", 200_000),
            ("25MB", 25_000_000),
            ("25mb", 25_000_000),
            ("25 MB", 25_000_000),
            ("0.2MB", 200_000),
            ("1.5GB", 1_500_000_000),
            ("640KB", 640_000),
            ("1KiB", 1024),
            ("25MiB", 25 * 1024 * 1024),
            ("2GiB", 2 * 1024 * 1024 * 1024),
            ("0.5kib", 512),
            (" 7MB ", 7_000_000),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "not a size"),
            ("MB", "not a size"),
            ("25XB", "unknown unit"),
            ("25 M", "unknown unit"),
            ("-5MB", "not a size"),
            ("1.2.3MB", "not a size"),
            ("1e6", "unknown unit"),
            ("0", "above zero"),
            ("0.0001KB", "above zero"),
            ("99999999999999GiB", "too large"),
        ] {
            let error = parse_size(text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn min_ssim_is_taken_within_the_server_bounds() {
        assert_eq!(parse_min_ssim("0.97"), Ok(0.97));
        assert_eq!(parse_min_ssim("0.999"), Ok(0.999));
        for text in ["0.89", "1", "high", ""] {
            let error = parse_min_ssim(text).expect_err(text);
            assert!(error.contains("0.90 to 0.999"), "{text}: {error}");
        }
    }
}
