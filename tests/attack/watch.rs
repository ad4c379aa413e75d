//! Measuring a node during an attack, and judging it.
//!
//! A [`Watch`] samples the resident memory of the node (or of its whole
//! process tree) every 50 ms and times `GET /healthz` on a fresh connection
//! every 200 ms, on two OS threads of their own, so that the attack's tasks
//! on the test's runtime cannot slow the measurement down. Past a kill line
//! well above the test's bound it kills the node: a protection that is
//! missing fails the test instead of exhausting the machine.
//!
//! A [`Verdict`] checks the figures (memory bound, every `/healthz` within a
//! second), what the attack achieved, and the node afterwards ([`Verdict::after`]),
//! then prints the attack's summary line and appends it to
//! `target/artifacts/attack-summary.txt`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fixtures::small_clip;
use crate::node::{kill_tree, rss_kib, tree_rss_kib, Node};

/// The longest a `/healthz` may take, during an attack included.
pub const HEALTHZ_WITHIN: Duration = Duration::from_secs(1);
/// How long a probe waits before it counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Whose memory counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The node processes alone.
    Node,
    /// The nodes and every process they started (transcoder children).
    Tree,
}

/// One `GET /healthz`.
#[derive(Clone, Debug)]
pub struct Probe {
    pub latency: Duration,
    /// The status code and whether a `Retry-After` came with it, or why
    /// there was no answer.
    pub answer: Result<(u16, bool), String>,
}

/// Memory and `/healthz` figures of one attack.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_after_kib: u64,
    pub healthz_before: Duration,
    pub healthz_max: Duration,
    pub healthz_after: Duration,
    /// The probes made during the attack.
    pub probes: Vec<Probe>,
    /// The memory (KiB) at which the watch killed the node, if it did.
    pub killed_at_kib: Option<u64>,
}

/// Memory sampling and `/healthz` timing while an attack runs.
pub struct Watch {
    pids: Vec<i32>,
    scope: Scope,
    probe_at: SocketAddr,
    before: (u64, Duration),
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<(u64, Option<u64>)>,
    prober: JoinHandle<Vec<Probe>>,
}

impl Watch {
    /// Measures the nodes as they are (memory, the median of three
    /// `/healthz`), then watches them until [`Watch::finish`]: `probe_at` is
    /// the node whose `/healthz` is timed; once memory (in `scope`) grows by
    /// more than `kill_growth_mb`, every node is killed.
    pub fn start(nodes: &[&Node], probe_at: &Node, scope: Scope, kill_growth_mb: u64) -> Self {
        let pids: Vec<i32> = nodes.iter().map(|n| n.pid()).collect();
        let probe_at = probe_at.addr;
        let before = (memory_kib(&pids, scope), median_probe(probe_at));
        let kill_above_kib = before.0 + kill_growth_mb * 1024;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (pids, stop) = (pids.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    let now = memory_kib(&pids, scope);
                    peak = peak.max(now);
                    if now > kill_above_kib {
                        for &pid in &pids {
                            kill_tree(pid);
                        }
                        return (peak, Some(now));
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                (peak, None)
            })
        };
        let prober = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut probes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    probes.push(probe(probe_at));
                    std::thread::sleep(PROBE_EVERY);
                }
                probes
            })
        };
        Self {
            pids,
            scope,
            probe_at,
            before,
            stop,
            sampler,
            prober,
        }
    }

    /// Ends the attack's measurement; after a second for the node to settle,
    /// measures it again as "after".
    pub async fn finish(self) -> Figures {
        tokio::task::spawn_blocking(move || {
            self.stop.store(true, Ordering::Relaxed);
            let (peak, killed_at_kib) = self.sampler.join().expect("sampler");
            let probes = self.prober.join().expect("prober");
            std::thread::sleep(Duration::from_secs(1));
            let after = memory_kib(&self.pids, self.scope);
            Figures {
                rss_before_kib: self.before.0,
                rss_peak_kib: peak.max(self.before.0),
                rss_after_kib: after,
                healthz_before: self.before.1,
                healthz_max: probes.iter().map(|p| p.latency).max().unwrap_or_default(),
                healthz_after: median_probe(self.probe_at),
                probes,
                killed_at_kib,
            }
        })
        .await
        .expect("watch")
    }
}

fn memory_kib(pids: &[i32], scope: Scope) -> u64 {
    pids.iter()
        .map(|&pid| match scope {
            Scope::Node => rss_kib(pid),
            Scope::Tree => tree_rss_kib(pid),
        })
        .sum()
}

fn median_probe(addr: SocketAddr) -> Duration {
    let mut latencies: Vec<Duration> = (0..3)
        .map(|_| {
            let probe = probe(addr);
            std::thread::sleep(Duration::from_millis(50));
            probe.latency
        })
        .collect();
    latencies.sort();
    latencies[1]
}

/// Times one `GET /healthz` on a new connection, up to the full answer.
pub fn probe(addr: SocketAddr) -> Probe {
    let start = Instant::now();
    let answer = (|| -> Result<(u16, bool), String> {
        let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(PROBE_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if start.elapsed() > PROBE_TIMEOUT {
                return Err("no full answer in 3 s".into());
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                Err(e) if response.is_empty() => return Err(format!("read: {e}")),
                // A reset after the answer (the node closing at once) still
                // leaves the answer.
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "no status line in {:?}",
                    text.chars().take(80).collect::<String>()
                )
            })?;
        let retry_after = text
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
        Ok((status, retry_after))
    })();
    Probe {
        latency: start.elapsed(),
        answer,
    }
}

/// Which `/healthz` answers count as the node answering.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Healthy {
    /// 200 only.
    Ok,
    /// 200, or 503 with `Retry-After`: the attack fills the connection cap,
    /// and a refusal at once is the cap doing its job.
    OkOrRefused,
}

/// The checks of one attack, and its summary line.
pub struct Verdict {
    name: &'static str,
    figures: Figures,
    bound_mb: u64,
    outcome: String,
    failures: Vec<String>,
}

impl Verdict {
    /// Checks the figures: memory peak at most `growth_mb` above the figure
    /// before the attack, every `/healthz` during the attack answered within
    /// a second as `healthy` says.
    pub fn new(name: &'static str, figures: Figures, growth_mb: u64, healthy: Healthy) -> Self {
        let bound_mb = figures.rss_before_kib / 1024 + growth_mb;
        let mut verdict = Self {
            name,
            bound_mb,
            outcome: String::new(),
            failures: Vec::new(),
            figures,
        };
        let figures = &verdict.figures;
        if let Some(killed) = figures.killed_at_kib {
            let failure = format!("the watch killed the node at {} MB", killed / 1024);
            verdict.failures.push(failure);
        } else if figures.rss_peak_kib > bound_mb * 1024 {
            let failure = format!(
                "memory peaked at {} MB, over the bound of {bound_mb} MB",
                figures.rss_peak_kib / 1024
            );
            verdict.failures.push(failure);
        }
        let bad: Vec<&Probe> = figures
            .probes
            .iter()
            .filter(|p| {
                p.latency > HEALTHZ_WITHIN
                    || !matches!(
                        (p.answer.as_ref(), healthy),
                        (Ok((200, _)), _) | (Ok((503, true)), Healthy::OkOrRefused)
                    )
            })
            .collect();
        if let Some(first) = bad.first() {
            let failure = format!(
                "{} of {} /healthz during the attack not answered within 1 s as expected \
                 (first: {:?} after {} ms)",
                bad.len(),
                figures.probes.len(),
                first.answer,
                first.latency.as_millis()
            );
            verdict.failures.push(failure);
        }
        if figures.probes.is_empty() {
            verdict
                .failures
                .push("no /healthz was made during the attack".into());
        }
        verdict
    }

    /// Sets what the attack achieved, for the summary line.
    pub fn outcome(&mut self, outcome: impl Into<String>) {
        self.outcome = outcome.into();
    }

    /// Records a failure unless `ok`.
    pub fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    /// Checks the node after the attack: the same process still runs, it
    /// logged no panic, `uploads/` holds no stray file, and a normal small
    /// job is accepted and completes.
    pub async fn after(&mut self, node: &mut Node) {
        if !node.alive() {
            self.failures.push("the node process died".into());
            return;
        }
        if let Some(line) = node.log().lines().find(|l| l.contains("panicked")) {
            self.failures.push(format!("the node panicked: {line}"));
        }
        // A partial upload is removed when its request ends, which may be
        // a moment after the client saw the answer.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !node.uploads().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stray = node.uploads();
        self.check(stray.is_empty(), || {
            format!("{} stray files in uploads/: {stray:?}", stray.len())
        });
        match normal_job(node).await {
            Ok(()) => {}
            Err(e) => self
                .failures
                .push(format!("a normal job after the attack: {e}")),
        }
    }

    /// Prints the summary line, appends it to the summary file, and fails
    /// the test with every failure (and the nodes' last log lines) if any.
    pub fn report(self, nodes: &[&Node]) {
        let f = &self.figures;
        let mut line = format!(
            "attack {}: rss {}/{}/{} MB (bound {} MB), healthz {}/{}/{} ms, {}",
            self.name,
            f.rss_before_kib / 1024,
            f.rss_peak_kib / 1024,
            f.rss_after_kib / 1024,
            self.bound_mb,
            f.healthz_before.as_millis(),
            f.healthz_max.as_millis(),
            f.healthz_after.as_millis(),
            self.outcome,
        );
        if !self.failures.is_empty() {
            line.push_str(&format!(" -- FAILED: {}", self.failures.join("; ")));
        }
        println!("{line}");
        append_summary(&line);
        if self.failures.is_empty() {
            return;
        }
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| {
                format!(
                    "--- last lines of the log of {} ---\n{}",
                    n.addr,
                    n.log_tail(25)
                )
            })
            .collect();
        panic!("{line}\n{}", logs.join("\n"));
    }
}

/// Submits the one-second clip and waits for it to complete.
pub async fn normal_job(node: &Node) -> Result<(), String> {
    let (status, job) = node.submit(&small_clip(), "?preset=ultrafast").await?;
    if status != 202 {
        return Err(format!("submit answered {status}: {job}"));
    }
    let id = job["id"].as_str().ok_or("no job id")?;
    let (status, job) = node.wait_terminal(id, Duration::from_secs(30)).await?;
    if status != 200 {
        return Err(format!("the job ended {status}: {job}"));
    }
    Ok(())
}

/// Returns `target/artifacts/attack-summary.txt`.
pub fn summary_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("artifacts")
        .join("attack-summary.txt")
}

fn append_summary(line: &str) {
    let path = summary_path();
    let _ = std::fs::create_dir_all(path.parent().expect("artifacts dir"));
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(file, "{stamp} {line}");
    }
}
