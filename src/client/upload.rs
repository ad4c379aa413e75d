//! `vidpress submit`: streams a file to `POST /jobs` with the job's options
//! as its query, behind an upload progress bar; with `--wait`, follows the
//! job and downloads the result beside the input.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use indicatif::ProgressBar;

use super::connection::{download, expect_json, Server};
use super::follow::follow;
use super::{bar_style, ClientError, SubmitArgs};

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
    if let Some(parallel) = args.parallel {
        query.push(("parallel", parallel.to_string()));
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

fn default_output(input: &Path, extension: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    input.with_file_name(format!("{stem}.compressed.{extension}"))
}
