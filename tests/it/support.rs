//! Shared test support: generated fixtures, nodes on port 0, ffprobe, and
//! waiting for what a test expects to happen ([`eventually`],
//! [`wait_for_terminal`]).

use std::fmt::Display;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use vidpress::config::ServeConfig;
use vidpress::server::Server;

/// The longest an `ffmpeg` CLI run making a fixture may take.
const FIXTURE_LIMIT: Duration = Duration::from_secs(300);

/// Runs `command` within `limit`; returns its standard output. Panics,
/// naming `what`, when it fails or overruns (then it is killed).
pub fn run_cli(what: &str, command: &mut Command, limit: Duration) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    command
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"));
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the CLI") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "{what} failed ({status}): {stderr}");
    std::fs::read(&out).expect("the CLI's output")
}

/// Returns a fixture made by the `ffmpeg` CLI with `args` (inputs and
/// codec settings; the output path is appended), cached by name.
pub fn fixture(name: &str, args: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    // Tests run in parallel processes: write aside, then rename atomically.
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("bin");
    let tmp = dir.join(format!("{}.{}.tmp.{ext}", name, std::process::id()));
    run_cli(
        &format!("ffmpeg making {name}"),
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(&tmp),
        FIXTURE_LIMIT,
    );
    std::fs::rename(&tmp, &path).expect("fixture rename");
    path
}

/// A small clip with video and audio: 320x240, 25 fps, `seconds` long.
pub fn clip(seconds: u32) -> PathBuf {
    let t = seconds.to_string();
    fixture(
        &format!("clip-{seconds}s.mp4"),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            &t,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "18",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// A clip big enough to still be encoding a few seconds after it starts.
pub fn long_clip() -> PathBuf {
    fixture(
        "long-720p-60s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "60",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "30",
            "-c:a",
            "aac",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// Probes a media file with ffprobe: `{"streams": [...], "format": {...}}`.
pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// Returns the stream of `kind` ("video" or "audio") in a probe, if any.
pub fn stream<'a>(probe: &'a Value, kind: &str) -> Option<&'a Value> {
    probe["streams"]
        .as_array()?
        .iter()
        .find(|s| s["codec_type"] == kind)
}

/// Returns the duration in seconds of a probe.
pub fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a duration")
}

/// The job IDs of a `GET /jobs` page, in order.
pub fn listed_ids(page: &Value) -> Vec<&str> {
    page["jobs"]
        .as_array()
        .expect("a jobs array")
        .iter()
        .map(|job| job["id"].as_str().expect("a job id"))
        .collect()
}

/// A node on 127.0.0.1:0 with its own data directory.
pub struct TestNode {
    pub server: Server,
    data: Data,
}

/// A data directory: a fresh temporary one, or one kept across restarts.
enum Data {
    Temp(TempDir),
    Kept(PathBuf),
}

impl Data {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }
}

impl TestNode {
    /// Starts a node whose transcoder is the real `vidpress` binary.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after `tweak` adjusts its settings.
    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let data = Data::Temp(tempfile::tempdir().expect("temp dir"));
        Self::start_on(data, tweak).await
    }

    /// Starts a node on an existing data directory, as a restart would.
    pub async fn start_at(dir: &Path, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::start_on(Data::Kept(dir.to_owned()), tweak).await
    }

    async fn start_on(data: Data, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = ServeConfig::defaults();
        config.http = "127.0.0.1:0".parse().expect("addr");
        config.data_dir = data.path().to_owned();
        config.workers = Some(2);
        config.transcoder = Some(PathBuf::from(env!("CARGO_BIN_EXE_vidpress")));
        tweak(&mut config);
        let server = Server::start(&config).await.expect("node starts");
        Self { server, data }
    }

    /// Returns the node's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Serves over a real socket in the background; returns the base URL.
    pub fn serve(self) -> Served {
        let addr = self.server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.server.run(async move {
            let _ = stopped.await;
        }));
        Served {
            base: format!("http://{addr}"),
            data: self.data,
            stop,
            task,
        }
    }
}

/// A node serving on a socket until dropped or stopped.
pub struct Served {
    pub base: String,
    data: Data,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), vidpress::server::ServeError>>,
}

impl Served {
    /// Returns the node's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Shuts the node down (SIGTERM's path) and waits until it is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// Uploads `path` with `query` and returns (status, body).
    pub async fn submit(&self, path: &Path, query: &str) -> (u16, Value) {
        let body = std::fs::read(path).expect("read fixture");
        let response = reqwest::Client::new()
            .post(format!("{}/jobs{query}", self.base))
            .body(body)
            .send()
            .await
            .expect("submit");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// Polls a job until it ends: [`wait_for_terminal`] on this node.
    pub async fn wait_for_terminal(&self, id: &str, limit: Duration) -> (u16, Value) {
        wait_for_terminal(&self.base, id, limit).await
    }
}

/// How long [`eventually`] waits between two looks.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Looks at `check` until it answers `Ok`, and returns that value. While the
/// awaited thing has not happened, `check` answers `Err` with what it saw
/// instead; if `limit` passes first, the test panics naming `awaited` and
/// that last state.
pub async fn eventually<T, Seen, Check, Fut>(
    awaited: impl Display,
    limit: Duration,
    mut check: Check,
) -> T
where
    Seen: Display,
    Check: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Seen>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {awaited}; last seen: {seen}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Returns the status code and JSON body of `GET url`; `None` when the node
/// does not answer (within 5 s) or the body is not JSON.
pub async fn get_json(url: &str) -> Option<(u16, Value)> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Polls job `id` on the node at `base` until it is completed, failed or
/// canceled, and returns that answer (status code, document). A 202 (queued
/// or running), a 503 (the cluster cannot answer for it yet) or no answer
/// at all is "not yet"; any other answer ends the wait, for the caller's
/// assertions to judge. After `limit` the test panics with the last document.
pub async fn wait_for_terminal(base: &str, id: &str, limit: Duration) -> (u16, Value) {
    let url = format!("{base}/jobs/{id}");
    eventually(format!("job {id} on {base} to end"), limit, || async {
        match get_json(&url).await {
            Some((status, doc)) if status != 202 && status != 503 => Ok((status, doc)),
            Some((status, doc)) => Err(format!("{status} {doc}")),
            None => Err("no answer".to_owned()),
        }
    })
    .await
}
