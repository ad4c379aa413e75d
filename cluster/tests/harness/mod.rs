//! A `vidpress-member` child process and what it printed: its views (one
//! JSON line each), its member events, its log lines. Waits are bounded and
//! panic with the node's last view and log tail; dropping a [`Node`] kills
//! its process.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HEARTBEAT: Duration = Duration::from_millis(200);
pub const TIMEOUT: Duration = Duration::from_millis(1500);
const COOKIE: &str = "vidpress-test-cookie";

/// What a node printed, with the instant each line arrived.
#[derive(Default)]
struct Output {
    views: Vec<(Instant, Value)>,
    events: Vec<(Instant, String, String)>,
    stderr: Vec<String>,
}

#[derive(Default)]
struct Shared {
    output: Mutex<Output>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One cluster node, a child process.
pub struct Node {
    name: String,
    listen: SocketAddr,
    seeds: Vec<String>,
    cookie: String,
    /// A command the node runs under (`setpriv …`), if any.
    wrapper: Vec<String>,
    child: Child,
    shared: Arc<Shared>,
}

/// Returns a loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Returns the member `name` of a printed view.
pub fn member<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

impl Node {
    /// Starts node `name` joining through `seeds`, with the shared cookie.
    pub fn start(name: &str, seeds: &[&Node]) -> Node {
        Self::start_with_cookie(name, seeds, COOKIE)
    }

    pub fn start_with_cookie(name: &str, seeds: &[&Node], cookie: &str) -> Node {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let seeds = seeds.iter().map(|s| s.advertise()).collect();
        Self::spawn(
            name.to_owned(),
            listen,
            seeds,
            cookie.to_owned(),
            Vec::new(),
        )
    }

    /// Starts node `name` as user `nobody`, so that [`NetworkCut`] can cut
    /// it off (needs root and `setpriv`).
    pub fn start_as_nobody(name: &str, seeds: &[&Node]) -> Node {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let seeds = seeds.iter().map(|s| s.advertise()).collect();
        let wrapper = [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ];
        let wrapper = wrapper.into_iter().map(str::to_owned).collect();
        Self::spawn(name.to_owned(), listen, seeds, COOKIE.to_owned(), wrapper)
    }

    fn spawn(
        name: String,
        listen: SocketAddr,
        seeds: Vec<String>,
        cookie: String,
        wrapper: Vec<String>,
    ) -> Node {
        let binary = env!("CARGO_BIN_EXE_vidpress-member");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--name", &name])
            .args(["--listen", &listen.to_string()])
            .args(["--seeds", &seeds.join(",")])
            .args(["--cookie", &cookie])
            .args(["--heartbeat-ms", &HEARTBEAT.as_millis().to_string()])
            .args(["--timeout-ms", &TIMEOUT.as_millis().to_string()])
            .args(["--workers", "2"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vidpress-member starts");
        let shared = Arc::new(Shared::default());
        read_lines(child.stdout.take().unwrap(), shared.clone(), |out, line| {
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                return;
            };
            let now = Instant::now();
            if let Some(kind) = value["event"].as_str() {
                let node = value["node"].as_str().unwrap_or_default().to_owned();
                out.events.push((now, kind.to_owned(), node));
            } else {
                out.views.push((now, value));
            }
        });
        read_lines(child.stderr.take().unwrap(), shared.clone(), |out, line| {
            out.stderr.push(line)
        });
        Node {
            name,
            listen,
            seeds,
            cookie,
            wrapper,
            child,
            shared,
        }
    }

    /// Starts this node again, same name, address, seeds and cookie (after
    /// [`Node::kill`]).
    pub fn restart(&self) -> Node {
        Self::spawn(
            self.name.clone(),
            self.listen,
            self.seeds.clone(),
            self.cookie.clone(),
            self.wrapper.clone(),
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn advertise(&self) -> String {
        self.listen.to_string()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (SIGSTOP, SIGCONT…) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Returns the last view printed.
    pub fn view(&self) -> Value {
        self.shared
            .lock()
            .views
            .last()
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null)
    }

    /// Returns every view printed.
    pub fn history(&self) -> Vec<Value> {
        self.shared
            .lock()
            .views
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Returns the events printed since `since`, as `(kind, node)`.
    pub fn events_since(&self, since: Instant) -> Vec<(String, String)> {
        self.shared
            .lock()
            .events
            .iter()
            .filter(|(at, ..)| *at >= since)
            .map(|(_, kind, node)| (kind.clone(), node.clone()))
            .collect()
    }

    /// Returns the first log line containing `needle`.
    pub fn stderr_line(&self, needle: &str) -> Option<String> {
        self.shared
            .lock()
            .stderr
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Waits until `found` holds of the output; returns the time waited.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&Output) -> bool,
    ) -> Duration {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut out = self.shared.lock();
        loop {
            if found(&out) {
                return start.elapsed();
            }
            let now = Instant::now();
            if now >= deadline {
                let tail = out.stderr[out.stderr.len().saturating_sub(40)..].join("\n");
                let view = out.views.last().map(|(_, v)| v.to_string());
                drop(out);
                panic!(
                    "node {}: no {what} within {timeout:?}\nlast view: {}\nlog tail:\n{tail}",
                    self.name,
                    view.unwrap_or_default()
                );
            }
            out = self
                .shared
                .changed
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until the last view satisfies `pred`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Duration {
        self.wait(what, timeout, |out| {
            out.views.last().is_some_and(|(_, v)| pred(v))
        })
    }

    /// Waits until the last view has every node of `names` up.
    pub fn wait_all_up(&self, names: &[&str], timeout: Duration) -> Duration {
        self.wait_for(&format!("view with {names:?} up"), timeout, |view| {
            names
                .iter()
                .all(|n| member(view, n).is_some_and(|m| m["state"] == "up"))
        })
    }

    /// Waits until a view printed after `since` shows `node` in `state`;
    /// returns when that view arrived, measured from `since`.
    pub fn wait_state_since(
        &self,
        node: &str,
        state: &str,
        since: Instant,
        timeout: Duration,
    ) -> Duration {
        let mut at = None;
        let remaining = (since + timeout).saturating_duration_since(Instant::now());
        self.wait(&format!("view with {node} {state}"), remaining, |out| {
            at = out
                .views
                .iter()
                .find(|(t, v)| *t >= since && member(v, node).is_some_and(|m| m["state"] == state))
                .map(|(t, _)| *t);
            at.is_some()
        });
        at.unwrap().duration_since(since)
    }

    /// Waits for the event `kind` about `node` printed after `since`.
    pub fn wait_event(
        &self,
        kind: &str,
        node: &str,
        since: Instant,
        timeout: Duration,
    ) -> Duration {
        self.wait(&format!("{kind} event for {node}"), timeout, |out| {
            out.events
                .iter()
                .any(|(t, k, n)| *t >= since && k == kind && n == node)
        })
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> Duration {
        self.wait(&format!("log line with {needle:?}"), timeout, |out| {
            out.stderr.iter().any(|l| l.contains(needle))
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `stream` line by line on a thread, recording each line.
fn read_lines(
    stream: impl Read + Send + 'static,
    shared: Arc<Shared>,
    record: impl Fn(&mut Output, String) + Send + 'static,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            record(&mut shared.lock(), line);
            shared.changed.notify_all();
        }
    });
}

/// Drops every packet user `nobody` sends while it lives: a network cut of
/// the nodes started with [`Node::start_as_nobody`] (their peers' packets
/// still arrive, unanswered, as over a one-way broken link).
pub struct NetworkCut;

const CUT_RULE: [&str; 7] = [
    "OUTPUT",
    "-m",
    "owner",
    "--uid-owner",
    "nobody",
    "-j",
    "DROP",
];

impl NetworkCut {
    pub fn start() -> NetworkCut {
        let status = Command::new("iptables")
            .arg("-I")
            .args(CUT_RULE)
            .status()
            .expect("iptables runs");
        assert!(status.success(), "iptables -I failed");
        NetworkCut
    }
}

impl Drop for NetworkCut {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(CUT_RULE).status();
    }
}
