//! What keys and TLS cost: the same node twice, once open over plain HTTP,
//! once with API keys and HTTPS (a certificate made for the run with the
//! `openssl` CLI), submit and poll throughput side by side, each side run
//! twice in the order A B B A. Only 2xx answers count; non-2xx are named.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use futures::StreamExt;

use crate::node::{Node, NodeSpec};
use crate::report::{Entry, Goal};
use crate::{flush_dirty_pages, wrk, Bench, CONNECTIONS, POLL_JOBS};

/// The token of the secure node's only key.
const TOKEN: &str = "bench-tenant-token-0123456789abcdef";

/// Successful requests per second of a load run.
fn ok_throughput(load: &wrk::Load) -> f64 {
    load.requests.saturating_sub(load.non_2xx) as f64 / (load.duration_us.max(1) as f64 / 1e6)
}

impl Bench {
    pub(crate) async fn secure(&self) -> anyhow::Result<Vec<Entry>> {
        let dir = self.dir("secure")?;
        let (cert, key) = certificate(&dir)?;
        let keys = dir.join("api-keys");
        std::fs::write(&keys, format!("bench:{TOKEN}\n"))?;
        let token_file = dir.join("token");
        std::fs::write(&token_file, TOKEN)?;
        let args: Vec<String> = [
            "--api-keys".as_ref(),
            keys.as_os_str(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        let spec = |name, args| NodeSpec {
            name,
            workers: 0,
            seed: None,
            clustered: false,
            args,
        };
        let plain = self.node(&dir, spec("plain", &[]))?;
        let secure = self.node(&dir, spec("secure", &args))?;
        let client = reqwest::Client::builder()
            // The run's own certificate, trusted by nothing else.
            .danger_accept_invalid_certs(true)
            .build()?;

        let clip = self.small_clip()?;
        let body_env = ("BENCH_BODY", clip.as_path());
        let token_env = ("BENCH_TOKEN_FILE", token_file.as_path());
        let half = self.duration / 2;
        let sides = [
            (format!("{}/jobs", plain.base()), vec![body_env]),
            (format!("{}/jobs", secure.base()), vec![body_env, token_env]),
        ];
        let mut submit: Vec<Option<wrk::Load>> = vec![None, None];
        for i in [0, 1, 1, 0] {
            let (url, env) = &sides[i];
            eprintln!("secure: submit {url}");
            let load = self.load_for(half, "submit.lua", url, env)?;
            submit[i] = Some(submit[i].map_or(load, |first| first.merge(&load)));
            flush_dirty_pages();
        }

        let body = std::fs::read(&clip)?;
        let mut poll: Vec<Option<wrk::Load>> = vec![None, None];
        let mut poll_env = Vec::new();
        for (node, name, token) in [(&plain, "plain", None), (&secure, "secure", Some(TOKEN))] {
            let ids = submit_many(&client, node, token, POLL_JOBS, &body).await?;
            let file = dir.join(format!("{name}.paths"));
            let paths: String = ids.iter().map(|id| format!("/jobs/{id}\n")).collect();
            std::fs::write(&file, paths)?;
            poll_env.push(file);
        }
        for i in [0, 1, 1, 0] {
            let node = if i == 0 { &plain } else { &secure };
            let mut env = vec![("BENCH_PATHS", poll_env[i].as_path())];
            if i == 1 {
                env.push(token_env);
            }
            eprintln!("secure: poll {}", node.base());
            let load = self.load_for(half, "poll.lua", &node.base(), &env)?;
            poll[i] = Some(poll[i].map_or(load, |first| first.merge(&load)));
        }

        let (Some(submit_plain), Some(submit_secure), Some(poll_plain), Some(poll_secure)) =
            (submit[0], submit[1], poll[0], poll[1])
        else {
            bail!("a side of the comparison did not run");
        };
        let note = |secure: &wrk::Load, plain: &wrk::Load| {
            format!(
                "keys + TLS: {} requests, {} non-2xx, {} socket errors, p99 {:.2} ms; \
                 open over plain HTTP: {} requests, {} non-2xx, p99 {:.2} ms; {CONNECTIONS} \
                 connections, 2xx only",
                secure.requests,
                secure.non_2xx,
                secure.socket_errors,
                secure.p99_ms(),
                plain.requests,
                plain.non_2xx,
                plain.p99_ms()
            )
        };
        Ok(vec![
            Entry::new(
                "submit with keys + TLS (vs open, plain HTTP)",
                "req/s",
                ok_throughput(&submit_secure),
                ok_throughput(&submit_plain),
                Goal::Report,
                note(&submit_secure, &submit_plain),
            ),
            Entry::new(
                "poll with keys + TLS (vs open, plain HTTP)",
                "req/s",
                ok_throughput(&poll_secure),
                ok_throughput(&poll_plain),
                Goal::Report,
                note(&poll_secure, &poll_plain),
            ),
        ])
    }
}

/// Makes a self-signed certificate for 127.0.0.1 and its key in `dir`.
fn certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("cannot run openssl (scripts/bench.sh installs it)")?;
    if !status.status.success() {
        bail!(
            "openssl could not make a certificate: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    Ok((cert, key))
}

/// Submits `count` copies of `body`, 16 at a time, with `token` if given.
async fn submit_many(
    client: &reqwest::Client,
    node: &Node,
    token: Option<&str>,
    count: usize,
    body: &[u8],
) -> anyhow::Result<Vec<String>> {
    let url = format!("{}/jobs", node.base());
    let answers: Vec<anyhow::Result<String>> = futures::stream::iter(0..count)
        .map(|_| {
            let mut request = client.post(&url).body(body.to_vec());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await?.error_for_status()?;
                let doc: serde_json::Value = response.json().await?;
                doc["id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("a job id in the answer")
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    answers.into_iter().collect()
}
