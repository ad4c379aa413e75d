//! Runs `wrk` (Debian's package) with one of the harness's Lua scripts and
//! reads the JSON line its `done` hook prints.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// What one `wrk` run measured.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Load {
    pub requests: u64,
    pub duration_us: u64,
    pub socket_errors: u64,
    pub non_2xx: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Load {
    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub fn p50_ms(&self) -> f64 {
        self.p50_us as f64 / 1000.0
    }

    pub fn p99_ms(&self) -> f64 {
        self.p99_us as f64 / 1000.0
    }

    /// Two runs against the same server as one: counts added, percentiles
    /// averaged weighted by requests (wrk reports no histogram to merge).
    pub fn merge(&self, other: &Load) -> Load {
        let requests = self.requests + other.requests;
        let weighted = |a: u64, b: u64| {
            ((a as u128 * self.requests as u128 + b as u128 * other.requests as u128)
                / requests.max(1) as u128) as u64
        };
        Load {
            requests,
            duration_us: self.duration_us + other.duration_us,
            socket_errors: self.socket_errors + other.socket_errors,
            non_2xx: self.non_2xx + other.non_2xx,
            p50_us: weighted(self.p50_us, other.p50_us),
            p99_us: weighted(self.p99_us, other.p99_us),
        }
    }
}

/// Loads `url` with `connections` connections for `duration`, driven by
/// `script`, with `env` for the script.
pub fn run(
    script: &Path,
    url: &str,
    connections: u32,
    duration: Duration,
    env: &[(&str, &Path)],
) -> anyhow::Result<Load> {
    let output = Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string()])
        .args(["-d", &format!("{}s", duration.as_secs().max(1))])
        .args(["--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .envs(env.iter().copied())
        .env("BENCH_LUA", script.parent().unwrap_or(Path::new(".")))
        .output()
        .context("cannot run wrk (scripts/bench.sh installs it)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no result line from wrk:\n{stdout}"))?;
    let load: Load = serde_json::from_str(line).context("wrk's result line")?;
    if load.requests == 0 {
        bail!("wrk made no request:\n{stdout}");
    }
    Ok(load)
}
