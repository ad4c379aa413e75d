//! `vidpress serve` processes on loopback ports, each with its own data
//! directory; stopped when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The cluster cookie of the harness's nodes.
const COOKIE: &str = "vidpress-bench-cookie";

/// Returns a loopback port that is free now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How to start one node.
pub struct NodeSpec<'a> {
    pub name: &'a str,
    pub workers: u32,
    /// Cluster port of a node to join; `None` for the first node.
    pub seed: Option<u16>,
    /// Whether the node is in a cluster at all (else the embedded default).
    pub clustered: bool,
    /// More `serve` arguments.
    pub args: &'a [String],
}

/// A running node.
pub struct Node {
    pub name: String,
    /// Served over TLS (`--tls-cert` among its arguments).
    pub https: bool,
    pub http: u16,
    pub cluster: u16,
    child: Child,
}

impl Node {
    /// Starts a node and waits until it answers `/readyz`.
    pub fn start(binary: &Path, dir: &Path, spec: &NodeSpec<'_>) -> anyhow::Result<Self> {
        let (http, cluster) = (free_port()?, free_port()?);
        let data = dir.join(spec.name);
        let log = std::fs::File::create(dir.join(format!("{}.log", spec.name)))?;
        let mut command = Command::new(binary);
        command
            .args(["serve", "--node-name", spec.name])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--workers", &spec.workers.to_string()])
            .args(["--queue-capacity", "1000000"])
            // The fan-out holds 10,000 WebSockets at once, more than the
            // default cap (4096); the node still lowers the cap to fit its
            // open-files limit.
            .args(["--max-connections", "1000000"])
            .arg("--data-dir")
            .arg(&data)
            .args(spec.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        if spec.clustered {
            command
                .args(["--cookie", COOKIE])
                .args(["--cluster-listen", &format!("127.0.0.1:{cluster}")]);
            if let Some(seed) = spec.seed {
                command.args(["--seeds", &format!("127.0.0.1:{seed}")]);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let node = Self {
            name: spec.name.to_owned(),
            https: spec.args.iter().any(|a| a == "--tls-cert"),
            http,
            cluster,
            child,
        };
        node.wait_ready()?;
        Ok(node)
    }

    pub fn base(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Keeps every thread of the node, and so every child it starts from
    /// now on, to `core`, or lets them run anywhere again (`None`).
    pub fn pin(&self, core: Option<usize>) -> anyhow::Result<()> {
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let tid: libc::pid_t = task?
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
                .context("a task id")?;
            // A thread that has ended since the listing is no matter.
            let _ = set_affinity(tid, core);
        }
        Ok(())
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/readyz", self.base());
        while Instant::now() < deadline {
            let ready = std::process::Command::new("curl")
                // -k: the harness's own certificate, made for this run.
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .map(|o| o.stdout == b"200")
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{} did not become ready", self.name)
    }

    /// Waits until this node sees `count` nodes up (itself included).
    pub async fn wait_members(&self, client: &reqwest::Client, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = client.get(format!("{}/cluster", self.base())).send().await {
                if let Ok(view) = response.json::<serde_json::Value>().await {
                    let up = view["nodes"]
                        .as_array()
                        .map_or(0, |n| n.iter().filter(|m| m["state"] == "up").count());
                    if up >= count {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} never saw {count} nodes up", self.name)
    }

    /// CPU seconds of the node and of the children it has reaped (its
    /// transcoder processes), from `/proc`.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid())
    }
}

impl Node {
    /// Resident memory of the node process, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc status")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets the CPU affinity of thread `tid` (0: the calling one) to `core`
/// alone, or to every core (`None`).
pub fn set_affinity(tid: libc::pid_t, core: Option<usize>) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; the macros only set
    // bits within it, and sched_setaffinity reads the set it is given.
    let failed = unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        match core {
            Some(core) => libc::CPU_SET(core, &mut set),
            None => {
                for core in 0..libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(core, &mut set);
                }
            }
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
    };
    if failed {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// CPU seconds of process `pid` and of its children, those it has reaped
/// and those still running (a node's kept probe children).
pub fn cpu_seconds_with_children(pid: u32) -> anyhow::Result<f64> {
    let mut total = cpu_seconds(pid)?;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let children = std::fs::read_to_string(task?.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            // A child may end (and be reaped into `pid`'s figure) meanwhile.
            total += cpu_seconds(child).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// CPU seconds of process `pid`: its own user and system time and that of
/// the children it has reaped.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 (1-based) of the
    // line; `rest` starts at field 3.
    let ticks: u64 = fields
        .get(11..15)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}
