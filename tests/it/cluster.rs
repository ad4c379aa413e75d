//! Three `vidpress serve` processes on loopback ports joined into a cluster:
//! any node answers any job, work spreads, and a dead or frozen worker node
//! does not lose the job.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use vidpress::signing::{Signer, SIGNATURE_HEADER};

use crate::support::{
    clip, eventually, ffprobe, fixture, get_json, listed_ids, long_clip, stream, wait_for_terminal,
};

const COOKIE: &str = "cluster-test-cookie";

/// Starts of a node whose ports were taken meanwhile, before giving up.
const PORT_TRIES: u32 = 3;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Returns whether the node at `address` serves: it answers a request
/// (over TLS, a plain one is answered by a close), whereas a socket that is
/// only bound takes connections into its backlog and says nothing, also in
/// a node about to exit because its cluster port was taken (the HTTP socket
/// is bound before the cluster listener, served after it).
fn answers_http(address: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut head = [0u8; 5];
    stream.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_ok() && stream.read(&mut head).is_ok()
}

/// One node process; killed (and reaped) on drop.
pub struct NodeProc {
    pub name: String,
    pub http: u16,
    pub cluster: u16,
    pub data: PathBuf,
    pub workers: u32,
    pub seeds: Vec<u16>,
    pub cookie: String,
    /// Extra `VIDPRESS_*` settings.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl NodeProc {
    fn spawn(name: &str, dir: &TempDir, workers: u32, seeds: Vec<u16>, cookie: &str) -> Self {
        Self::spawn_with(name, dir, workers, seeds, cookie, Vec::new())
    }

    pub(crate) fn spawn_with(
        name: &str,
        dir: &TempDir,
        workers: u32,
        seeds: Vec<u16>,
        cookie: &str,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut node = Self {
            name: name.to_owned(),
            http: free_port(),
            cluster: free_port(),
            data: dir.path().join(name),
            workers,
            seeds,
            cookie: cookie.to_owned(),
            env,
            child: None,
            log: dir.path().join(format!("{name}.log")),
        };
        // A port found free may be taken before the node binds it (by any
        // process's outgoing connection): then the node exits at once, and
        // it starts again on other ports.
        for _ in 0..PORT_TRIES {
            node.start();
            if node.listening() {
                return node;
            }
            node.kill();
            let log = node.log();
            assert!(
                log.contains("in use"),
                "{} exited at start:\n{log}",
                node.name
            );
            node.http = free_port();
            node.cluster = free_port();
        }
        panic!("{} found no free ports in {PORT_TRIES} tries", node.name);
    }

    /// Waits (at most 30 s) until the node answers on its HTTP port; returns
    /// `false` if it exits first.
    fn listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.http));
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                return false;
            }
            if answers_http(address) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not listen within 30 s:\n{}", self.name, self.log());
    }

    fn start(&mut self) {
        let seeds: Vec<String> = self
            .seeds
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_vidpress"));
        command
            .args(["serve", "--node-name", &self.name, "--cookie", &self.cookie])
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", self.cluster)])
            .args(["--workers", &self.workers.to_string()])
            .arg("--data-dir")
            .arg(&self.data)
            .env("RUST_LOG", "info")
            // Quick failure detection; a test's own settings come after
            // and win.
            .env("VIDPRESS_HEARTBEAT_MS", "200")
            .env("VIDPRESS_FAILURE_TIMEOUT_MS", "1500")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        if !seeds.is_empty() {
            command.args(["--seeds", &seeds.join(",")]);
        }
        self.child = Some(command.spawn().expect("node starts"));
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Kills the process hard and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the node's log shows `text`, or panics after 10 s.
    pub(crate) async fn wait_for_log(&self, text: &str) {
        let awaited = format!("{} to log {text:?}", self.name);
        eventually(awaited, Duration::from_secs(10), || async {
            let log = self.log();
            if log.contains(text) {
                Ok(())
            } else {
                Err(log)
            }
        })
        .await
    }

    /// Peak resident memory of the node process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT);
        }
        self.kill();
    }
}

/// A three-node cluster: `a` is the seed, `b` and `c` join through it.
struct Trio {
    nodes: Vec<NodeProc>,
    _dir: TempDir,
}

impl Trio {
    async fn start(workers: [u32; 3]) -> Self {
        Self::start_with_env(workers, &[]).await
    }

    /// Starts the three nodes with extra `VIDPRESS_*` settings.
    async fn start_with_env(workers: [u32; 3], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spawn = |name: &str, workers: u32, seeds: Vec<u16>| {
            NodeProc::spawn_with(name, &dir, workers, seeds, COOKIE, env.clone())
        };
        let a = spawn("node-a", workers[0], vec![]);
        let seed = a.cluster;
        let b = spawn("node-b", workers[1], vec![seed]);
        let c = spawn("node-c", workers[2], vec![seed]);
        let trio = Self {
            nodes: vec![a, b, c],
            _dir: dir,
        };
        for node in &trio.nodes {
            wait_members_up(node, 3, Duration::from_secs(30)).await;
        }
        trio
    }
}

/// Waits until `node` sees `count` nodes up (itself included).
pub(crate) async fn wait_members_up(node: &NodeProc, count: usize, limit: Duration) {
    let url = format!("{}/cluster", node.base());
    let awaited = format!("{} to see {count} nodes up", node.name);
    eventually(awaited, limit, || async {
        let view = get_json(&url).await;
        let up = view.as_ref().map_or(0, |(_, view)| {
            view["nodes"]
                .as_array()
                .map_or(0, |n| n.iter().filter(|m| m["state"] == "up").count())
        });
        if up >= count {
            Ok(())
        } else {
            Err(format!("{view:?}\n{}", node.log()))
        }
    })
    .await
}

/// Waits until `node` reports `name` down, or panics after 10 s.
async fn wait_marked_down(node: &NodeProc, name: &str) {
    let awaited = format!("{} to mark {name} down", node.name);
    eventually(awaited, Duration::from_secs(10), || async {
        match member_state(node, name).await {
            Some(state) if state == "down" => Ok(()),
            state => Err(format!("{state:?}")),
        }
    })
    .await
}

/// Returns the state `node` reports for `name`, if it lists it.
async fn member_state(node: &NodeProc, name: &str) -> Option<String> {
    let (_, view) = get_json(&format!("{}/cluster", node.base())).await?;
    view["nodes"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["state"].as_str().map(str::to_owned))
}

async fn submit(node: &NodeProc, path: &std::path::Path, query: &str) -> String {
    let body = tokio::fs::read(path).await.unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/jobs{query}", node.base()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().to_owned()
}

/// Polls `node` for job `id` until `done` says so, or panics after `limit`.
async fn poll_until(
    node: &NodeProc,
    id: &str,
    limit: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> Value {
    let url = format!("{}/jobs/{id}", node.base());
    eventually(format!("job {id} on {}", node.name), limit, || async {
        match get_json(&url).await {
            Some((status, doc)) if done(status, &doc) => Ok(doc),
            Some((status, doc)) => Err(format!("{status} {doc}")),
            None => Err("no answer".to_owned()),
        }
    })
    .await
}

/// Subscribes to job `id`'s events through the node serving HTTP on
/// `port` and returns them with the close code, once the stream closes
/// (each frame within `limit`).
async fn events_through(port: u16, id: &str, limit: Duration) -> (Vec<Value>, Option<u16>) {
    let url = format!("ws://127.0.0.1:{port}/jobs/{id}/events");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("upgrade through port {port}: {e}"));
    let mut events = Vec::new();
    while let Some(frame) = tokio::time::timeout(limit, futures::StreamExt::next(&mut ws))
        .await
        .unwrap()
    {
        match frame.unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                events.push(serde_json::from_str::<Value>(&t).unwrap())
            }
            tokio_tungstenite::tungstenite::Message::Close(f) => {
                return (events, f.map(|f| u16::from(f.code)));
            }
            _ => {}
        }
    }
    (events, None)
}

#[tokio::test]
async fn any_node_answers_any_job_and_events_cross_nodes() {
    let trio = Trio::start([1, 1, 1]).await;
    let [a, b, c] = [&trio.nodes[0], &trio.nodes[1], &trio.nodes[2]];
    let id = submit(a, &clip(3), "?preset=medium").await;

    // WebSocket on C for a job owned by A.
    let (events, close) = events_through(c.http, &id, Duration::from_secs(60)).await;
    assert_eq!(close, Some(1000));
    assert_eq!(events[0]["event"], "snapshot");
    assert_eq!(events.last().unwrap()["job"]["status"], "completed");

    // Polling on B, download from C.
    let doc = wait_for_terminal(&b.base(), &id, Duration::from_secs(30))
        .await
        .1;
    assert_eq!(doc["status"], "completed");
    let response = reqwest::get(format!("{}/jobs/{id}/result", c.base()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let out = trio._dir.path().join("via-c.mp4");
    std::fs::write(&out, response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        stream(&ffprobe(&out), "video").unwrap()["codec_name"],
        "h264"
    );

    // Unknown jobs are 404 everywhere once a node's view has settled (a
    // node that just joined cannot tell an unknown owner from one it has not
    // heard of yet, and answers 503); cancel works from another node.
    let unknown = uuid::Uuid::now_v7();
    let url = format!("{}/jobs/{unknown}", b.base());
    let status = eventually(
        "an answer other than 503",
        Duration::from_secs(10),
        || async {
            match get_json(&url).await.expect("b answers") {
                (503, doc) => Err(doc),
                (status, _) => Ok(status),
            }
        },
    )
    .await;
    assert_eq!(status, 404);
    let response = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", b.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "already completed: cancel is a no-op"
    );

    // GET /cluster on every node lists all three, up, each with its
    // cluster address and its HTTP URL, the same seen from any node.
    for node in [a, b, c] {
        let (_, view) = get_json(&format!("{}/cluster", node.base())).await.unwrap();
        assert_eq!(view["self"], node.name.as_str());
        let listed = view["nodes"].as_array().unwrap();
        for expected in [a, b, c] {
            let shown = listed
                .iter()
                .find(|n| n["name"] == expected.name.as_str())
                .unwrap_or_else(|| panic!("{} lists {listed:?}", node.name));
            assert_eq!(
                shown["address"],
                format!("127.0.0.1:{}", expected.cluster).as_str(),
                "{} shows {}: {shown}",
                node.name,
                expected.name
            );
            assert_eq!(shown["http"], expected.base().as_str(), "{shown}");
        }
    }
}

#[tokio::test]
async fn jobs_spread_over_more_than_one_node() {
    let trio = Trio::start([1, 1, 1]).await;
    let a = &trio.nodes[0];
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(submit(a, &clip(2), "?preset=slow").await);
    }
    let mut nodes = std::collections::HashSet::new();
    for id in &ids {
        let doc = wait_for_terminal(&a.base(), id, Duration::from_secs(120))
            .await
            .1;
        assert_eq!(doc["status"], "completed", "{doc}");
        nodes.insert(doc["node"].as_str().unwrap().to_owned());
    }
    assert!(nodes.len() > 1, "all jobs ran on {nodes:?}");
}

/// Submits a long job on A (which has no workers), waits until it runs on
/// another node, hits that node with `fault`, and returns the job's final
/// document and the time from the fault to the job running elsewhere.
async fn fault_running_node(fault: i32) -> (Value, Duration, Trio, String) {
    let mut trio = Trio::start([0, 1, 1]).await;
    let id = submit(&trio.nodes[0], &long_clip(), "?preset=veryfast").await;
    let running = poll_until(&trio.nodes[0], &id, Duration::from_secs(30), |_, d| {
        d["status"] == "running" && d["progress"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    let victim = running["node"].as_str().unwrap().to_owned();
    let index = trio.nodes.iter().position(|n| n.name == victim).unwrap();
    let hit = Instant::now();
    if fault == libc::SIGKILL {
        trio.nodes[index].kill();
    } else {
        trio.nodes[index].signal(fault);
    }
    let moved = poll_until(&trio.nodes[0], &id, Duration::from_secs(30), |_, d| {
        d["status"] == "running" && d["attempt"] == 2
    })
    .await;
    let recovery = hit.elapsed();
    assert_ne!(moved["node"], victim.as_str());
    (moved, recovery, trio, id)
}

#[tokio::test]
async fn sigkill_of_the_worker_node_reruns_the_job_elsewhere() {
    let (_, recovery, trio, id) = fault_running_node(libc::SIGKILL).await;
    eprintln!("sigkill recovery: {recovery:?}");
    let doc = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(120))
        .await
        .1;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["attempt"], 2);
    assert!(
        recovery < Duration::from_secs(5),
        "recovered in {recovery:?}"
    );
}

#[tokio::test]
async fn a_job_whose_worker_node_dies_runs_again_at_once_on_a_spare_while_every_slot_is_busy() {
    // One worker and one spare (the default) a node: three jobs fill the
    // three slots and a fourth waits in the queue.
    let mut trio = Trio::start([1, 1, 1]).await;
    let a = &trio.nodes[0];
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(a, &long_clip(), "?preset=veryfast").await);
    }
    let status = |doc: &Value| doc["status"].as_str().unwrap_or_default().to_owned();
    let (running, waiting) = eventually(
        "three jobs running, one queued",
        Duration::from_secs(30),
        || async {
            let mut docs = Vec::new();
            for id in &ids {
                docs.push(
                    get_json(&format!("{}/jobs/{id}", a.base()))
                        .await
                        .map(|(_, d)| d),
                );
            }
            let docs: Vec<Value> = docs.into_iter().flatten().collect();
            let running: Vec<&Value> = docs.iter().filter(|d| status(d) == "running").collect();
            let queued: Vec<&Value> = docs.iter().filter(|d| status(d) == "queued").collect();
            match (running.as_slice(), queued.as_slice()) {
                ([_, _, _], [waiting]) => {
                    let on_other = running
                        .iter()
                        .find(|d| d["node"] != "node-a")
                        .copied()
                        .cloned();
                    on_other
                        .map(|r| (r, (*waiting).clone()))
                        .ok_or_else(|| format!("{docs:?}"))
                }
                _ => Err(format!("{docs:?}")),
            }
        },
    )
    .await;
    let (id, victim) = (
        running["id"].as_str().unwrap().to_owned(),
        running["node"].as_str().unwrap().to_owned(),
    );
    let index = trio.nodes.iter().position(|n| n.name == victim).unwrap();
    let hit = Instant::now();
    trio.nodes[index].kill();
    let a = &trio.nodes[0];
    let moved = poll_until(a, &id, Duration::from_secs(30), |_, d| {
        d["status"] == "running" && d["attempt"] == 2
    })
    .await;
    let recovery = hit.elapsed();
    eprintln!("recovery on a spare: {recovery:?}, on {}", moved["node"]);
    assert_ne!(moved["node"], victim.as_str());
    // It did not wait for a slot: the job queued before the loss still waits.
    let queued = get_json(&format!(
        "{}/jobs/{}",
        a.base(),
        waiting["id"].as_str().unwrap()
    ))
    .await
    .expect("an answer")
    .1;
    assert_eq!(queued["status"], "queued", "{queued}");
    assert!(
        recovery < Duration::from_secs(5),
        "recovered in {recovery:?}"
    );
    let doc = wait_for_terminal(&a.base(), &id, Duration::from_secs(240))
        .await
        .1;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["attempt"], 2);
}

#[tokio::test]
async fn sigstop_of_the_worker_node_reruns_the_job_and_sigcont_changes_nothing() {
    let (moved, recovery, trio, id) = fault_running_node(libc::SIGSTOP).await;
    eprintln!("sigstop recovery: {recovery:?}");
    assert!(
        recovery < Duration::from_secs(5),
        "recovered in {recovery:?}"
    );
    let frozen = trio
        .nodes
        .iter()
        .find(|n| n.name != "node-a" && n.name != moved["node"].as_str().unwrap())
        .unwrap();
    frozen.signal(libc::SIGCONT);
    let doc = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(120))
        .await
        .1;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["attempt"], 2, "the stale attempt did not take over");
    assert_eq!(doc["node"], moved["node"]);
    // The thawed node is readmitted.
    wait_members_up(&trio.nodes[0], 3, Duration::from_secs(15)).await;
    let out = trio._dir.path().join("after-stop.mp4");
    let bytes = reqwest::get(format!("{}/jobs/{id}/result", trio.nodes[0].base()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(&out, &bytes).unwrap();
    assert_eq!(doc["result"]["bytes"], bytes.len() as u64);
    assert_eq!(
        stream(&ffprobe(&out), "video").unwrap()["codec_name"],
        "h264"
    );
}

/// A cancel whose attempt cannot stop within the wait for it (2 s): its
/// worker's node is frozen, and not yet marked down (a failure timeout of
/// 20 s). The cancel answers 202 with the job still stopping, and the job
/// ends canceled once that node is back.
#[tokio::test]
async fn a_cancel_whose_attempt_cannot_stop_yet_answers_202_and_the_job_ends_canceled() {
    let trio = Trio::start_with_env([1, 1, 1], &[("VIDPRESS_FAILURE_TIMEOUT_MS", "20000")]).await;
    let a = &trio.nodes[0];
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(submit(a, &long_clip(), "?preset=veryslow").await);
    }
    let running = eventually(
        "a job running on another node",
        Duration::from_secs(30),
        || async {
            for id in &ids {
                if let Some((_, doc)) = get_json(&format!("{}/jobs/{id}", a.base())).await {
                    // Under way on the worker (progress reported), not
                    // only dispatched: a stop sent before the worker took
                    // the attempt in is answered at once.
                    let progress = doc["progress"].as_f64().unwrap_or(0.0);
                    if doc["status"] == "running" && doc["node"] != "node-a" && progress > 0.0 {
                        return Ok(doc);
                    }
                }
            }
            Err("none yet")
        },
    )
    .await;
    let id = running["id"].as_str().unwrap().to_owned();
    let worker = trio
        .nodes
        .iter()
        .find(|n| n.name == running["node"].as_str().unwrap())
        .unwrap();

    worker.signal(libc::SIGSTOP);
    let asked = Instant::now();
    let response = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", a.base()))
        .send()
        .await
        .unwrap();
    let waited = asked.elapsed();
    let status = response.status().as_u16();
    let doc: Value = response.json().await.unwrap();
    worker.signal(libc::SIGCONT);
    assert_eq!(status, 202, "still stopping: {doc}");
    assert_eq!(doc["status"], "running", "{doc}");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );

    let (code, doc) = wait_for_terminal(&a.base(), &id, Duration::from_secs(30)).await;
    assert_eq!(
        (code, doc["status"].as_str()),
        (400, Some("canceled")),
        "{doc}"
    );
    assert_eq!(
        doc["attempt"], running["attempt"],
        "no attempt after the cancel"
    );
}

#[tokio::test]
async fn a_node_with_the_wrong_cookie_is_refused() {
    let trio = Trio::start([1, 1, 1]).await;
    let dir = tempfile::tempdir().unwrap();
    let intruder = NodeProc::spawn(
        "node-x",
        &dir,
        1,
        vec![trio.nodes[0].cluster],
        "wrong-cookie",
    );
    // The seed's refusal is the moment the intruder's attempt is over.
    trio.nodes[0].wait_for_log("cluster peer refused").await;
    for node in &trio.nodes {
        assert_eq!(
            member_state(node, "node-x").await,
            None,
            "{} admitted the intruder",
            node.name
        );
    }
    let intruder_view = format!("{}/cluster", intruder.base());
    let (_, view) = eventually(
        "the intruder to answer",
        Duration::from_secs(10),
        || async { get_json(&intruder_view).await.ok_or("no answer") },
    )
    .await;
    assert!(member_state(&intruder, "node-a").await.is_none(), "{view}");
}

#[tokio::test]
async fn a_restarted_node_rejoins_and_takes_work() {
    let mut trio = Trio::start([0, 1, 0]).await;
    trio.nodes[1].kill();
    wait_marked_down(&trio.nodes[0], "node-b").await;
    trio.nodes[1].start();
    wait_members_up(&trio.nodes[0], 3, Duration::from_secs(30)).await;
    let id = submit(&trio.nodes[0], &clip(1), "").await;
    let doc = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(60))
        .await
        .1;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["node"], "node-b");
}

#[tokio::test]
async fn a_300_mb_input_crosses_nodes_with_bounded_memory() {
    let big = fixture(
        "raw-300mb.avi",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "110",
            "-c:v",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let size = std::fs::metadata(&big).unwrap().len();
    assert!(size > 300_000_000, "fixture is {size} bytes");
    let trio = Trio::start([0, 1, 0]).await;
    let [a, b] = [&trio.nodes[0], &trio.nodes[1]];
    let file = tokio::fs::File::open(&big).await.unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/jobs?preset=ultrafast", a.base()))
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = wait_for_terminal(&a.base(), &id, Duration::from_secs(300))
        .await
        .1;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["node"], "node-b");
    let (a_rss, b_rss) = (a.peak_rss_kib(), b.peak_rss_kib());
    eprintln!("peak rss: owner {a_rss} KiB, worker node {b_rss} KiB for a {size}-byte input");
    assert!(
        a_rss < 128 * 1024 && b_rss < 128 * 1024,
        "memory grew with the file: a {a_rss} KiB, b {b_rss} KiB"
    );
}

#[tokio::test]
async fn a_job_whose_worker_node_dies_ten_times_fails_clearly() {
    // Losing a node is not the job's fault: the job runs again, past the
    // three losses a silent worker is allowed, and fails only at the tenth.
    let mut trio = Trio::start([0, 1, 1]).await;
    let id = submit(&trio.nodes[0], &long_clip(), "?preset=veryfast").await;
    for attempt in 1..=10u64 {
        let running = poll_until(&trio.nodes[0], &id, Duration::from_secs(30), |_, d| {
            d["status"] == "running" && d["attempt"] == attempt && !d["node"].is_null()
        })
        .await;
        let victim = running["node"].as_str().unwrap().to_owned();
        let index = trio.nodes.iter().position(|n| n.name == victim).unwrap();
        trio.nodes[index].kill();
        if attempt < 10 {
            // Bring the other worker node back if it was killed before, so
            // the next attempt has somewhere to run.
            if let Some(dead) = trio
                .nodes
                .iter_mut()
                .skip(1)
                .find(|n| n.name != victim && n.child.is_none())
            {
                dead.start();
            }
        }
    }
    let doc = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(30))
        .await
        .1;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "worker_lost");
    assert_eq!(doc["attempt"], 10);
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("interrupted 10 times"));
}

/// Tells `node` that another node took `id` over under `epoch`, its copy
/// `finished` or not, signed as a node does; returns the status of the answer.
async fn relinquish(node: &NodeProc, id: &str, epoch: u32, finished: bool) -> u16 {
    let path = format!("/internal/jobs/{id}/relinquish?epoch={epoch}&finished={finished}");
    let signature = sign(COOKIE, &path);
    post_internal(node, &path, Some(&signature)).await
}

/// Returns the signature of a POST to `path` with `cookie`, made now.
fn sign(cookie: &str, path: &str) -> String {
    let value = Signer::new(cookie)
        .sign(&reqwest::Method::POST, path)
        .unwrap();
    value.to_str().unwrap().to_owned()
}

/// POSTs to `path` on `node` with `signature`; returns the status.
async fn post_internal(node: &NodeProc, path: &str, signature: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().post(format!("{}{path}", node.base()));
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn internal_requests_need_a_fresh_signature_of_the_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::spawn("node-a", &dir, 0, vec![], COOKIE);
    wait_members_up(&node, 1, Duration::from_secs(30)).await;
    // A query the handler refuses (400) tells a request that got through.
    let path = "/internal/jobs/01936a6e-7f1c-7000-8000-000000000000/relinquish?epoch=oops";
    let plain_cookie = reqwest::Client::new()
        .post(format!("{}{path}", node.base()))
        .header("x-vidpress-cookie", COOKIE)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(plain_cookie, 403, "the cookie itself is no longer a key");
    assert_eq!(post_internal(&node, path, None).await, 403);
    let wrong_cookie = sign("not-the-cookie", path);
    assert_eq!(post_internal(&node, path, Some(&wrong_cookie)).await, 403);
    let other_path = sign(
        COOKIE,
        "/internal/jobs/01936a6e-7f1c-7000-8000-000000000000/relinquish?epoch=1",
    );
    assert_eq!(post_internal(&node, path, Some(&other_path)).await, 403);

    let good = sign(COOKIE, path);
    assert_eq!(post_internal(&node, path, Some(&good)).await, 400);
    assert_eq!(
        post_internal(&node, path, Some(&good)).await,
        403,
        "a replayed signature got through"
    );
    let log = node.log();
    assert!(log.contains("a replay"), "{log}");
}

#[tokio::test]
async fn a_finished_job_is_kept_against_an_unfinished_copy_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::spawn("node-a", &dir, 1, vec![], COOKIE);
    wait_members_up(&node, 1, Duration::from_secs(30)).await;
    let id = submit(&node, &clip(1), "").await;
    let done = wait_for_terminal(&node.base(), &id, Duration::from_secs(60))
        .await
        .1;
    assert_eq!(done["status"], "completed");

    // The other copy has a later epoch but did not finish: running the job
    // again there would execute it twice, so this one stays.
    assert_eq!(relinquish(&node, &id, 1, false).await, 409);
    let (status, kept) = get_json(&format!("{}/jobs/{id}", node.base()))
        .await
        .unwrap();
    assert_eq!((status, &kept["status"]), (200, &done["status"]));

    // A later copy that finished too wins: this one gives way. The job is
    // held elsewhere, by a node this one cannot reach (there is none here):
    // unavailable, not unknown.
    assert_eq!(relinquish(&node, &id, 1, true).await, 204);
    let (status, _) = get_json(&format!("{}/jobs/{id}", node.base()))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(!node.data.join("jobs").join(&id).exists());
}

#[tokio::test]
async fn a_running_job_given_away_stops_its_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::spawn("node-a", &dir, 1, vec![], COOKIE);
    wait_members_up(&node, 1, Duration::from_secs(30)).await;
    let id = submit(&node, &long_clip(), "?preset=veryfast").await;
    poll_until(&node, &id, Duration::from_secs(30), |_, d| {
        d["status"] == "running" && d["progress"].as_f64().is_some_and(|p| p > 0.0)
    })
    .await;
    // Same epoch: this copy is as good as the other and stays.
    assert_eq!(relinquish(&node, &id, 0, false).await, 409);
    assert_eq!(relinquish(&node, &id, 1, false).await, 204);
    let url = format!("{}/cluster", node.base());
    eventually("the attempt to stop", Duration::from_secs(10), || async {
        let (_, view) = get_json(&url).await.expect("the node answers");
        if view["nodes"][0]["busy"] == 0 {
            Ok(())
        } else {
            Err(format!("{view}\n{}", node.log()))
        }
    })
    .await;
    // Given away: unavailable here, not unknown.
    let (status, _) = get_json(&format!("{}/jobs/{id}", node.base()))
        .await
        .unwrap();
    assert_eq!(status, 503);
}

#[tokio::test]
async fn sigterm_drains_the_node_and_its_queued_jobs_run_elsewhere() {
    let mut trio = Trio::start([0, 1, 1]).await;
    let b = &trio.nodes[1];
    let input = fixture(
        "drain-640x360-20s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(b, &input, "?preset=veryfast").await);
    }
    // Two run (on b and c), one waits in b's queue.
    poll_until(b, &ids[1], Duration::from_secs(30), |_, d| {
        d["status"] == "running"
    })
    .await;
    b.signal(libc::SIGTERM);
    let readyz = format!("{}/readyz", b.base());
    eventually("b to stop being ready", Duration::from_secs(5), || async {
        match reqwest::get(&readyz).await.map(|r| r.status().as_u16()) {
            Ok(503) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let refused = reqwest::Client::new()
        .post(format!("{}/jobs", b.base()))
        .body(std::fs::read(clip(1)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503, "a draining node takes no new job");

    // Follow all three through a: b exits once they are done (or its drain
    // times out, and its standby takes the rest over).
    let a = trio.nodes[0].base();
    let ends = ids.iter().map(|id| async {
        let (_, doc) = wait_for_terminal(&a, id, Duration::from_secs(120)).await;
        (id.clone(), doc)
    });
    let finals: std::collections::HashMap<String, Value> =
        futures::future::join_all(ends).await.into_iter().collect();
    let mut nodes = Vec::new();
    for doc in finals.values() {
        assert_eq!(doc["status"], "completed", "{doc}");
        nodes.push(doc["node"].as_str().unwrap().to_owned());
    }
    assert!(
        nodes.iter().filter(|n| *n == "node-c").count() >= 2,
        "the queued job ran elsewhere: {nodes:?}"
    );
    // Then b exits on its own, cleanly.
    let child = trio.nodes[1].child.as_mut().unwrap();
    let status = eventually("b to exit after draining", Duration::from_secs(10), || {
        std::future::ready(child.try_wait().unwrap().ok_or("still running"))
    })
    .await;
    assert!(status.success(), "b exited with {status}");
    trio.nodes[1].child = None;

    // Its standby, node-c, takes its jobs over with their final records:
    // finished, none runs again.
    wait_marked_down(&trio.nodes[0], "node-b").await;
    for (id, done) in &finals {
        let doc = poll_until(&trio.nodes[0], id, Duration::from_secs(30), |s, _| s != 503).await;
        assert_eq!(doc["status"], "completed", "{doc}");
        assert_eq!(doc["attempt"], done["attempt"], "no second execution");
    }
}

#[tokio::test]
async fn the_owner_dies_after_its_202_and_the_job_survives_on_its_standby() {
    let mut trio = Trio::start([1, 1, 1]).await;
    let id = submit(&trio.nodes[0], &long_clip(), "?preset=veryfast").await;
    // The owner is node-a; its standby is the next node by name, node-b.
    poll_until(&trio.nodes[2], &id, Duration::from_secs(30), |_, d| {
        d["status"] == "running"
    })
    .await;
    let killed = Instant::now();
    trio.nodes[0].kill();

    // Every live node answers, and the job runs to the end on the standby.
    let doc = wait_for_terminal(&trio.nodes[2].base(), &id, Duration::from_secs(180))
        .await
        .1;
    eprintln!(
        "owner kill → completed via standby in {:?}",
        killed.elapsed()
    );
    assert_eq!(doc["status"], "completed", "{doc}");
    assert!(
        doc["attempt"].as_u64().unwrap() >= 2,
        "a new attempt ran: {doc}"
    );
    let (status, from_b) = get_json(&format!("{}/jobs/{id}", trio.nodes[1].base()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(from_b["result"]["bytes"], doc["result"]["bytes"]);

    // The old owner comes back with its stale copy and gives way.
    trio.nodes[0].start();
    wait_members_up(&trio.nodes[1], 3, Duration::from_secs(30)).await;
    let url = format!("{}/jobs/{id}", trio.nodes[0].base());
    let awaited = "node-a to answer with the standby's result";
    eventually(awaited, Duration::from_secs(15), || async {
        match get_json(&url).await {
            Some((200, doc_a)) if doc_a["result"]["bytes"] == doc["result"]["bytes"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let bytes = reqwest::get(format!("{}/jobs/{id}/result", trio.nodes[0].base()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(doc["result"]["bytes"], bytes.len() as u64);
    assert!(
        !trio.nodes[0].data.join("jobs").join(&id).exists(),
        "the stale copy was dropped"
    );
}

#[tokio::test]
async fn a_completed_result_survives_the_loss_of_its_owner() {
    let mut trio = Trio::start([1, 1, 1]).await;
    let id = submit(&trio.nodes[0], &clip(2), "").await;
    let done = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(60))
        .await
        .1;
    assert_eq!(done["status"], "completed");
    trio.nodes[0].kill();
    let doc = poll_until(&trio.nodes[2], &id, Duration::from_secs(30), |s, _| {
        s != 503
    })
    .await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let response = reqwest::get(format!("{}/jobs/{id}/result", trio.nodes[2].base()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let out = trio._dir.path().join("survived.mp4");
    std::fs::write(&out, response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        stream(&ffprobe(&out), "video").unwrap()["codec_name"],
        "h264"
    );
}

/// Takes job `id` of node-a over twice: node-a dies, node-b takes the job
/// over and copies it (with `file`, the input or the result) to node-c, a
/// new standby; node-a comes back and gives its own copy up; node-b dies,
/// and node-c, in a majority with node-a, takes the job over.
async fn take_over_twice(trio: &mut Trio, id: &str, file: &str) {
    trio.nodes[0].kill();
    let copy = trio.nodes[2].data.join("replicas").join(id);
    eventually(
        "node-c to hold a whole copy of the job node-b took over",
        Duration::from_secs(30),
        || async {
            let (record, file) = (copy.join("job.json"), copy.join(file));
            match (record.exists(), file.exists()) {
                (true, true) => Ok(()),
                held => Err(format!("{held:?}\n{}", trio.nodes[1].log())),
            }
        },
    )
    .await;

    trio.nodes[0].start();
    wait_members_up(&trio.nodes[2], 3, Duration::from_secs(30)).await;
    let stale = trio.nodes[0].data.join("jobs").join(id);
    eventually(
        "node-a to give its copy up",
        Duration::from_secs(15),
        || async {
            if stale.exists() {
                Err("still there".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    trio.nodes[1].kill();
}

/// A job taken over from a lost owner has a new standby, so that it
/// survives the loss of its new owner too: node-c, its second taker,
/// answers for it, also through node-a, whose ID names neither node-c nor
/// a node up.
#[tokio::test]
async fn a_job_taken_over_survives_the_loss_of_its_new_owner_too() {
    let mut trio = Trio::start([1, 1, 1]).await;
    let id = submit(&trio.nodes[0], &clip(1), "").await;
    let done = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(60))
        .await
        .1;
    assert_eq!(done["status"], "completed");

    take_over_twice(&mut trio, &id, "output.mp4").await;
    for node in [&trio.nodes[2], &trio.nodes[0]] {
        let doc = poll_until(node, &id, Duration::from_secs(30), |status, _| {
            status == 200
        })
        .await;
        assert_eq!(doc["status"], "completed", "{doc}");
        assert_eq!(doc["result"]["bytes"], done["result"]["bytes"]);
    }
    let response = reqwest::get(format!("{}/jobs/{id}/result", trio.nodes[0].base()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(done["result"]["bytes"], bytes.len() as u64);
}

/// The same for a job still running: its second taker runs it to the end,
/// from the input the first one copied to it.
#[tokio::test]
async fn a_running_job_taken_over_twice_runs_to_the_end() {
    let mut trio = Trio::start([1, 1, 1]).await;
    let id = submit(&trio.nodes[0], &long_clip(), "?preset=veryfast").await;
    poll_until(&trio.nodes[0], &id, Duration::from_secs(60), |_, doc| {
        doc["status"] == "running"
    })
    .await;

    take_over_twice(&mut trio, &id, "input").await;
    let (_, doc) = get_json(&format!("{}/jobs/{id}", trio.nodes[2].base()))
        .await
        .unwrap();
    assert!(
        !["completed", "failed", "canceled"].contains(&doc["status"].as_str().unwrap_or("")),
        "the job ended before its second owner was lost: {doc}"
    );
    // A subscriber through node-a is bridged to node-c, whichever holds
    // the job's copy or the job, and sees it to its end.
    let subscriber = {
        let (port, id) = (trio.nodes[0].http, id.clone());
        tokio::spawn(async move { events_through(port, &id, Duration::from_secs(240)).await })
    };
    // Polled through both nodes left, a majority, until it ends: neither
    // answers 5xx while node-c takes the job over (DESIGN.md, invariant 7),
    // nor 404 (node-a gave the job up, and may not know node-b any more).
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let doc = loop {
        assert!(
            Instant::now() < deadline,
            "the job did not end: {answers:?}"
        );
        let node = &trio.nodes[if answers.len() % 2 == 0 { 2 } else { 0 }];
        if let Some((status, doc)) = get_json(&format!("{}/jobs/{id}", node.base())).await {
            answers.push((node.name.clone(), status, doc["status"].clone()));
            // Neither a 5xx nor a 404: the job exists, and is found.
            assert!(
                status == 200 || status == 202,
                "{} answered {status}: {doc}\n{}",
                node.name,
                node.log()
            );
            if status == 200 && node.name == "node-c" {
                break doc;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(doc["status"], "completed", "{doc}");
    assert!(
        doc["attempt"].as_u64().unwrap() >= 3,
        "each taker ran an attempt of its own: {doc}"
    );
    let (status, through_a) = get_json(&format!("{}/jobs/{id}", trio.nodes[0].base()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(through_a["result"]["bytes"], doc["result"]["bytes"]);
    let (events, close) = subscriber.await.unwrap();
    assert_eq!(close, Some(1000), "{events:?}");
    assert_eq!(events.last().unwrap()["job"]["status"], "completed");
}

#[tokio::test]
async fn finished_jobs_and_their_copies_are_removed_after_the_retention() {
    let trio = Trio::start_with_env([1, 1, 1], &[("VIDPRESS_RETENTION_SECS", "3")]).await;
    let id = submit(&trio.nodes[0], &clip(1), "").await;
    let done = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(60))
        .await
        .1;
    assert_eq!(done["status"], "completed");
    let owner_copy = trio.nodes[0].data.join("jobs").join(&id);
    let standby_copy = trio.nodes[1].data.join("replicas").join(&id);
    assert!(
        standby_copy.join("output.mp4").exists(),
        "the standby holds the result"
    );
    eventually(
        "the copies to go after the retention",
        Duration::from_secs(20),
        || {
            let left: Vec<_> = [&owner_copy, &standby_copy]
                .into_iter()
                .filter(|copy| copy.exists())
                .collect();
            std::future::ready(if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            })
        },
    )
    .await;
}

#[tokio::test]
async fn a_standby_that_was_away_is_brought_up_to_date_before_it_is_needed() {
    let mut trio = Trio::start([1, 0, 1]).await;
    // Jobs owned by node-a stand by on node-b; node-b misses the whole job.
    trio.nodes[1].kill();
    wait_marked_down(&trio.nodes[0], "node-b").await;
    trio.nodes[1].start();
    wait_members_up(&trio.nodes[0], 3, Duration::from_secs(30)).await;
    let id = submit(&trio.nodes[0], &clip(1), "").await;
    // Take node-b away again before the job finishes, then bring it back.
    trio.nodes[1].kill();
    let done = wait_for_terminal(&trio.nodes[0].base(), &id, Duration::from_secs(60))
        .await
        .1;
    assert_eq!(done["status"], "completed");
    trio.nodes[1].start();
    let replica = trio.nodes[1].data.join("replicas").join(&id);
    let owner = &trio.nodes[0];
    eventually(
        "node-b to get the finished job",
        Duration::from_secs(30),
        || {
            let record = std::fs::read(replica.join("job.json")).ok();
            let finished = record
                .and_then(|r| serde_json::from_slice::<Value>(&r).ok())
                .is_some_and(|r| r["outcome"]["status"] == "completed");
            std::future::ready(if finished && replica.join("output.mp4").exists() {
                Ok(())
            } else {
                Err(owner.log())
            })
        },
    )
    .await;
    // Now the owner can go: the standby serves the result without a re-run.
    trio.nodes[0].kill();
    let doc = poll_until(&trio.nodes[2], &id, Duration::from_secs(30), |s, _| {
        s != 503
    })
    .await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["attempt"], done["attempt"], "no second execution");
    assert_eq!(doc["result"]["bytes"], done["result"]["bytes"]);
}

#[tokio::test]
async fn a_standby_cut_off_from_the_majority_takes_over_only_once_it_sees_one_again() {
    let mut trio = Trio::start([1, 1, 1]).await;
    // Owned by node-b, standby node-c.
    let id = submit(&trio.nodes[1], &long_clip(), "?preset=veryfast").await;
    poll_until(&trio.nodes[2], &id, Duration::from_secs(30), |_, d| {
        d["status"] == "running"
    })
    .await;
    trio.nodes[0].kill();
    trio.nodes[1].kill();
    wait_marked_down(&trio.nodes[2], "node-a").await;
    wait_marked_down(&trio.nodes[2], "node-b").await;
    // Alone, node-c cannot tell whether it or the others are cut off: it
    // does not take the job over, and says so with 503s. Its decision is
    // logged: after it, no takeover is on its way.
    let c = &trio.nodes[2];
    eventually(
        "node-c to decline the takeover",
        Duration::from_secs(10),
        || {
            let log = c.log();
            let declined = log
                .lines()
                .any(|l| l.contains("no majority in sight") && l.contains("node-b"));
            std::future::ready(if declined { Ok(()) } else { Err(log) })
        },
    )
    .await;
    let (status, _) = get_json(&format!("{}/jobs/{id}", trio.nodes[2].base()))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(!trio.nodes[2].data.join("jobs").join(&id).exists());

    // With node-a back, two of three are in sight: the job is taken over
    // and completes.
    trio.nodes[0].start();
    let doc = wait_for_terminal(&trio.nodes[2].base(), &id, Duration::from_secs(120))
        .await
        .1;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert!(trio.nodes[2]
        .log()
        .contains("job taken over from a lost owner"));
}

#[tokio::test]
async fn json_log_lines_about_a_job_carry_its_id_node_and_attempt() {
    let trio = Trio::start_with_env([0, 1, 1], &[("VIDPRESS_LOG_FORMAT", "json")]).await;
    let a = &trio.nodes[0];
    let id = submit(a, &clip(1), "").await;
    let done = wait_for_terminal(&a.base(), &id, Duration::from_secs(60))
        .await
        .1;
    assert_eq!(done["status"], "completed", "{done}");
    let ran_on = done["node"].as_str().unwrap();
    let mut about_the_job = Vec::new();
    for node in &trio.nodes {
        for line in node.log().lines() {
            let line: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", node.name));
            // A field of the event itself, or of the span it was logged in.
            let field = |name: &str| {
                line.get(name)
                    .or_else(|| line.get("span").and_then(|s| s.get(name)))
                    .cloned()
            };
            if field("job_id").and_then(|v| v.as_str().map(str::to_owned)) == Some(id.clone()) {
                assert!(field("node").is_some(), "no node: {line}");
                assert!(field("attempt").is_some(), "no attempt: {line}");
                about_the_job.push((node.name.clone(), line["message"].clone()));
            }
        }
    }
    let logged =
        |node: &str, message: &str| about_the_job.iter().any(|(n, m)| n == node && m == message);
    assert!(logged("node-a", "job accepted"), "{about_the_job:?}");
    assert!(logged("node-a", "job dispatched"), "{about_the_job:?}");
    assert!(logged(ran_on, "attempt started"), "{about_the_job:?}");
    assert!(logged(ran_on, "attempt finished"), "{about_the_job:?}");
    assert!(logged("node-a", "job finished"), "{about_the_job:?}");
}

#[tokio::test]
async fn any_node_lists_every_nodes_jobs_newest_first_in_pages() {
    let mut trio = Trio::start([0, 0, 0]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        for node in &trio.nodes {
            ids.push(submit(node, &clip(1), "").await);
        }
    }
    // Newest first: the reverse of the submission order (IDs sort by time).
    ids.reverse();
    let list = |node: &NodeProc, query: &str| {
        let url = format!("{}/jobs{query}", node.base());
        async move { get_json(&url).await.expect("list answered") }
    };
    let (status, all) = list(&trio.nodes[1], "").await;
    assert_eq!(status, 200);
    assert_eq!(listed_ids(&all), ids, "{all}");
    assert_eq!(all["unreachable"], serde_json::json!([]));

    let (_, first) = list(&trio.nodes[2], "?limit=4").await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = list(&trio.nodes[2], &format!("?limit=4&cursor={cursor}")).await;
    assert_eq!([listed_ids(&first), listed_ids(&second)].concat(), ids);
    assert_eq!(second["next_cursor"], Value::Null);

    // A node that is gone is named; its jobs are listed again once their
    // standbys have taken them over.
    trio.nodes[2].kill();
    wait_marked_down(&trio.nodes[0], "node-c").await;
    let (_, without_c) = list(&trio.nodes[0], "").await;
    assert_eq!(without_c["unreachable"], serde_json::json!(["node-c"]));
    let listed = listed_ids(&without_c);
    let expected: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| listed.contains(id))
        .collect();
    assert_eq!(listed, expected, "newest first, no job twice");
    assert!(listed.len() >= 4, "{without_c}");
}

#[tokio::test]
async fn a_long_poll_through_another_node_answers_when_the_job_ends() {
    let trio = Trio::start([0, 0, 0]).await;
    let (a, b) = (&trio.nodes[0], &trio.nodes[1]);
    let id = submit(a, &clip(1), "").await;
    let waiting = {
        let (base, id) = (b.base(), id.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let response = reqwest::Client::new()
                .get(format!("{base}/jobs/{id}"))
                .header("prefer", "wait=30")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (started.elapsed(), status, body)
        })
    };
    // "Not at once" is a claim about time, and no event marks the poll's
    // arrival: it must still be open half a second on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the long poll answered at once");
    let canceled = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", a.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    let (elapsed, status, body) = waiting.await.unwrap();
    assert_eq!((status, body["status"].as_str()), (400, Some("canceled")));
    assert!(
        elapsed < Duration::from_secs(3),
        "answered {elapsed:?} after"
    );
}

#[tokio::test]
async fn metrics_show_the_cluster() {
    let mut trio = Trio::start([1, 2, 0]).await;
    let rtt_of = |peer: &str| format!(r#"vidpress_heartbeat_rtt_seconds{{peer="{peer}"}} "#);
    // Round trips appear with a view published after the first heartbeats
    // came back (the view refreshes them every VIEW_REFRESH, 5 s).
    let text = eventually(
        "round trips to both peers",
        Duration::from_secs(15),
        || async {
            let text = scrape(&trio.nodes[0]).await;
            let measured = ["node-b", "node-c"]
                .iter()
                .all(|peer| text.lines().any(|line| line.starts_with(&rtt_of(peer))));
            if measured {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert_samples(
        &text,
        &[
            r#"vidpress_cluster_nodes{state="up"} 3"#,
            r#"vidpress_cluster_nodes{state="down"} 0"#,
            r#"vidpress_worker_slots{node="node-b",state="free"} 2"#,
            r#"vidpress_worker_slots{node="node-c",state="free"} 0"#,
        ],
    );

    // A node that dies offers no slots, and is counted down.
    trio.nodes[1].kill();
    wait_marked_down(&trio.nodes[0], "node-b").await;
    let text = scrape(&trio.nodes[0]).await;
    assert_samples(
        &text,
        &[
            r#"vidpress_cluster_nodes{state="down"} 1"#,
            r#"vidpress_worker_slots{node="node-b",state="free"} 0"#,
            r#"vidpress_worker_slots{node="node-b",state="busy"} 0"#,
        ],
    );
}

/// Returns `node`'s `GET /metrics`.
async fn scrape(node: &NodeProc) -> String {
    let response = reqwest::get(format!("{}/metrics", node.base())).await;
    response.unwrap().text().await.unwrap()
}

/// Asserts that a Prometheus scrape has each of `samples` as a line.
fn assert_samples(text: &str, samples: &[&str]) {
    for sample in samples {
        assert!(
            text.lines().any(|line| line == *sample),
            "no {sample} in:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_the_majority_stops_its_attempts_until_it_sees_one_again() {
    // Only node-a has a worker: its own job runs there.
    let trio = Trio::start([1, 0, 0]).await;
    let a = &trio.nodes[0];
    let id = submit(a, &long_clip(), "?preset=veryfast").await;
    poll_until(a, &id, Duration::from_secs(30), |_, d| {
        d["status"] == "running"
    })
    .await;
    trio.nodes[1].signal(libc::SIGSTOP);
    trio.nodes[2].signal(libc::SIGSTOP);
    wait_marked_down(a, "node-b").await;
    wait_marked_down(a, "node-c").await;

    // node-b and node-c could be a majority taking the job over: node-a
    // stops its attempt, starts none while it cannot see them, and does not
    // answer for the job, whose copy there may be ahead of its own.
    eventually(
        "the attempt to be interrupted",
        Duration::from_secs(10),
        || {
            let log = a.log();
            std::future::ready(if log.contains("attempt interrupted") {
                Ok(())
            } else {
                Err(log)
            })
        },
    )
    .await;
    // The interrupted job back in the queue beside a free slot is the
    // moment a dispatch would have happened.
    let cluster = format!("{}/cluster", a.base());
    let requeued = "the job queued again beside a free slot";
    let view = eventually(requeued, Duration::from_secs(10), || async {
        let (_, view) = get_json(&cluster).await.expect("node-a answers");
        let own = &view["nodes"][0];
        if own["queued"] == 1 && own["workers"] == 1 {
            Ok(view)
        } else {
            Err(view)
        }
    })
    .await;
    assert_eq!(view["nodes"][0]["busy"], 0, "no new attempt: {view}");
    let poll = reqwest::get(format!("{}/jobs/{id}", a.base()))
        .await
        .unwrap();
    assert_eq!(poll.status(), 503);
    assert!(poll.headers().contains_key("retry-after"));
    // Nor does it cancel it, or stream its events.
    let cancel = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", a.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 503);
    let url = format!(
        "ws://{}/jobs/{id}/events",
        a.base().trim_start_matches("http://")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected a 503 before the upgrade: {other:?}"),
    }
    // A new job could not run here before the cut heals: 503, to go elsewhere.
    let upload = std::fs::read(clip(1)).unwrap();
    let refused = reqwest::Client::new()
        .post(format!("{}/jobs", a.base()))
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    // With the others back, the job runs again, once, and completes.
    trio.nodes[1].signal(libc::SIGCONT);
    trio.nodes[2].signal(libc::SIGCONT);
    let doc = wait_for_terminal(&a.base(), &id, Duration::from_secs(180))
        .await
        .1;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert!(doc["attempt"].as_u64() >= Some(2), "{doc}");
    for node in &trio.nodes {
        let (status, doc) = get_json(&format!("{}/jobs/{id}", node.base()))
            .await
            .unwrap();
        assert_eq!(
            (status, &doc["status"]),
            (200, &Value::from("completed")),
            "{}",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stops_the_attempt_of_an_owner_that_died() {
    // node-a owns the job (standby node-b); node-b's one worker runs it.
    let mut trio = Trio::start([0, 1, 0]).await;
    let id = submit(&trio.nodes[0], &long_clip(), "?preset=veryfast").await;
    // Encoding: the input has crossed to node-b.
    poll_until(&trio.nodes[1], &id, Duration::from_secs(30), |_, d| {
        d["progress"].as_f64() > Some(0.0)
    })
    .await;
    trio.nodes[0].kill();
    wait_marked_down(&trio.nodes[1], "node-a").await;

    // Its result could reach no one: the worker drops it at once, so the
    // standby's new attempt gets the cluster's only worker without waiting
    // for the old one to run to its end.
    let doc = poll_until(&trio.nodes[1], &id, Duration::from_secs(15), |_, d| {
        d["status"] == "running" && d["attempt"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(doc["node"], "node-b", "{doc}");
    let log = trio.nodes[1].log();
    assert!(
        log.contains("attempt interrupted") && log.contains("its owner node-a is down"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_page_shows_the_cluster_and_jobs_run_elsewhere() {
    use crate::web::{follow, Browser};

    // node-a has no workers: what is uploaded to its page runs elsewhere.
    let mut trio = Trio::start([0, 1, 1]).await;
    let browser = Browser::start().await;
    browser.open(&trio.nodes[0].base()).await;
    for name in ["node-a", "node-b", "node-c"] {
        browser
            .wait_for(
                &format!("#cluster tr[data-node='{name}'][data-state='up']"),
                Duration::from_secs(10),
            )
            .await;
    }
    let input = clip(4);
    browser.pick(&[&input]).await;
    let card = browser.card(&input).await;
    let seen = follow(&card, "completed", Duration::from_secs(60)).await;
    assert_eq!(seen.last(), Some(&100), "the bar ends full: {seen:?}");
    let place = card
        .find(fantoccini::Locator::Css(".where"))
        .await
        .expect("where it ran")
        .text()
        .await
        .expect("text");
    assert!(
        place == "on node-b" || place == "on node-c",
        "ran on a node with workers: {place:?}"
    );

    // A node that dies is shown as such.
    trio.nodes[2].kill();
    browser
        .wait_for(
            "#cluster tr[data-node='node-c']:not([data-state='up'])",
            Duration::from_secs(15),
        )
        .await;
    browser.screenshot("cluster").await;
    browser.close().await;
}
