//! A `vidpress serve` process under test: started through `prlimit` with an
//! address-space limit (so an attack that works cannot take the machine with
//! it), on a free loopback port, with its own data directory; killed with
//! every process it started on drop. Also the reads of `/proc` the tests
//! measure it with, and the plain HTTP calls they check it with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Address space the node process may use. A healthy node lives in a few
/// hundred MB of it; the transcoder children inherit the limit unless the
/// node sets a lower one.
pub const ADDRESS_SPACE_BYTES: u64 = 4 << 30;

/// The cookie of the clusters the tests start.
pub const COOKIE: &str = "attack-test-cookie";

/// Returns a loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How to start a node: extra `serve` flags and process limits.
#[derive(Default)]
pub struct Launch {
    args: Vec<String>,
    nofile: Option<u64>,
    umask: Option<u32>,
    parent: Option<PathBuf>,
    cluster: Option<(String, Vec<u16>)>,
}

impl Launch {
    /// A node with every default `serve` setting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `--flag value`.
    pub fn flag(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(format!("--{flag}"));
        self.args.push(value.to_string());
        self
    }

    /// Limits the node's open files (`prlimit --nofile`).
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Starts the node with this umask instead of the test's.
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }

    /// Puts the data directory on the file system of `dir`.
    pub fn data_under(mut self, dir: &Path) -> Self {
        self.parent = Some(dir.to_owned());
        self
    }

    /// Makes the node a cluster member named `name` joining through the
    /// cluster ports `seeds`.
    pub fn cluster(mut self, name: &str, seeds: &[u16]) -> Self {
        self.cluster = Some((name.to_owned(), seeds.to_vec()));
        self
    }

    /// Starts the node and waits until `/healthz` answers.
    pub async fn start(self) -> Node {
        let dir = match &self.parent {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .expect("temp dir");
        // A folder the node creates itself, so its mode is the node's doing.
        let data = dir.path().join("data");
        let log = dir.path().join("node.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new("prlimit");
        command.arg(format!("--as={ADDRESS_SPACE_BYTES}"));
        if let Some(nofile) = self.nofile {
            command.arg(format!("--nofile={nofile}"));
        }
        command
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_vidpress"))
            .args(["serve", "--http", &addr.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .args(&self.args);
        let mut cluster_port = None;
        if let Some((name, seeds)) = &self.cluster {
            let port = free_port();
            cluster_port = Some(port);
            command
                .args(["--node-name", name, "--cookie", COOKIE])
                .args(["--cluster-listen", &format!("127.0.0.1:{port}")]);
            if !seeds.is_empty() {
                let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
                command.args(["--seeds", &seeds.join(",")]);
            }
        }
        let stderr = std::fs::File::create(&log).expect("log file");
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask(2) is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        // prlimit sets the limits on itself, then execs: the child's pid is
        // the node's.
        let child = command.spawn().expect("prlimit starts");
        let mut node = Node {
            addr,
            cluster_port,
            data,
            log,
            child,
            _dir: dir,
        };
        node.wait_healthy(Duration::from_secs(30)).await;
        node
    }
}

/// A running node process.
pub struct Node {
    pub addr: SocketAddr,
    /// The cluster listener's port, for a cluster member.
    pub cluster_port: Option<u16>,
    /// The node's `--data-dir`.
    pub data: PathBuf,
    log: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl Node {
    /// Returns the node's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Returns the base URL of the node's HTTP API.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns whether the process started by the test still runs (a node
    /// that died, and any node restarted in its place, fails this).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Returns the node's log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns the last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Returns the files left in `<data-dir>/uploads`.
    pub fn uploads(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data.join("uploads"))
            .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    async fn wait_healthy(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let url = format!("{}/healthz", self.base());
        loop {
            if let Ok(response) = client().get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                self.alive(),
                "the node exited at start:\n{}",
                self.log_tail(30)
            );
            assert!(
                Instant::now() < deadline,
                "the node did not answer /healthz in {limit:?}:\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the node sees `count` nodes up, itself included.
    pub async fn wait_members_up(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok((200, view)) = get_json(&format!("{}/cluster", self.base())).await {
                let up = view["nodes"]
                    .as_array()
                    .map_or(0, |n| n.iter().filter(|m| m["state"] == "up").count());
                if up >= count {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not form in {limit:?}:\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Submits `path` with `query` (e.g. `?preset=ultrafast`); returns the
    /// status code and the body.
    pub async fn submit(&self, path: &Path, query: &str) -> Result<(u16, Value), String> {
        let body = std::fs::read(path).expect("read fixture");
        let response = client()
            .post(format!("{}/jobs{query}", self.base()))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("submit failed: {e}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.map_err(|e| format!("submit: {e}"))?;
        Ok((status, body))
    }

    /// Polls a job until it is terminal; returns the status code and the
    /// status document, or why not within `limit`.
    pub async fn wait_terminal(&self, id: &str, limit: Duration) -> Result<(u16, Value), String> {
        let deadline = Instant::now() + limit;
        let url = format!("{}/jobs/{id}", self.base());
        loop {
            let last = match get_json(&url).await {
                Ok((202 | 503, body)) => body.to_string(),
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("job {id} not terminal in {limit:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a job's transcode is under way (progress above 0), so a
    /// transcoder child runs.
    pub async fn wait_encoding(&self, id: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let url = format!("{}/jobs/{id}", self.base());
        loop {
            if let Ok((_, job)) = get_json(&url).await {
                if job["status"] == "running" && job["progress"].as_f64() > Some(0.0) {
                    return;
                }
                assert!(
                    job["status"] == "queued" || job["status"] == "running",
                    "job {id} ended before the attack: {job}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not encoding in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Cancels a job and waits for its end.
    pub async fn cancel(&self, id: &str) {
        let _ = client()
            .delete(format!("{}/jobs/{id}", self.base()))
            .send()
            .await;
        let _ = self.wait_terminal(id, Duration::from_secs(10)).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill_tree(self.pid());
        let _ = self.child.wait();
    }
}

/// An HTTP client with a timeout, so a node that stops answering fails the
/// test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GETs `url`; returns the status code and the JSON body.
pub async fn get_json(url: &str) -> Result<(u16, Value), String> {
    let response = client()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok((status, body))
}

/// Returns every process started by `pid`, its children's children too.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(parent) = todo.pop() {
        // Each thread keeps its own list of the children it started.
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    todo.push(child);
                }
            }
        }
    }
    found
}

/// Returns a process's resident memory in KiB (0 once it is gone).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Returns the resident memory of `pid` and all its descendants, in KiB.
pub fn tree_rss_kib(pid: i32) -> u64 {
    rss_kib(pid) + descendants(pid).into_iter().map(rss_kib).sum::<u64>()
}

/// Kills `pid` and every process it started. The descendants are listed
/// first: once their parent is gone they can no longer be found from it.
pub fn kill_tree(pid: i32) {
    let mut pids = descendants(pid);
    pids.push(pid);
    for pid in pids {
        signal(pid, libc::SIGCONT);
        signal(pid, libc::SIGKILL);
    }
}

/// Stops (SIGSTOP) every process the nodes started; returns them, for
/// [`thaw`]. A frozen transcoder keeps its job `running` without using the
/// CPU the attack's latency figures are measured on.
pub fn freeze_children(nodes: &[&Node]) -> Vec<i32> {
    let pids: Vec<i32> = nodes.iter().flat_map(|n| descendants(n.pid())).collect();
    for &pid in &pids {
        signal(pid, libc::SIGSTOP);
    }
    pids
}

/// Lets processes stopped by [`freeze_children`] run again.
pub fn thaw(pids: &[i32]) {
    for &pid in pids {
        signal(pid, libc::SIGCONT);
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a pid of a process this test started (or its
    // descendants); a pid that is gone only makes it fail with ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}
