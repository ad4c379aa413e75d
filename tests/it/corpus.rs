//! Malformed media at scale: hundreds of broken files, made from the
//! generated fixtures by seeded mutations (`fuzz/src/mutate.rs`, shared with
//! the probe fuzz target), go through a real `vidpress serve` process under
//! an address-space limit. Every upload is refused at once with a code, or
//! becomes a job that ends `completed` or `failed` with a code and a
//! message in bounded time; the node never dies, never restarts and leaves
//! no job running.
//!
//! Files the fuzzer found (`tests/corpus/`) are replayed as they are.
//!
//! Settings (environment):
//! - `VIDPRESS_CORPUS_SEED`: the seed (decimal or `0x` hex); a fresh one
//!   each run by default, printed, and named again in any failure;
//! - `VIDPRESS_CORPUS_FILES`: how many mutated files (default 300);
//! - `VIDPRESS_CORPUS_ONLY`: a comma-separated list of file numbers to run
//!   alone, as a failure names them.

#[path = "../../fuzz/src/mutate.rs"]
mod mutate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{eventually, fixture};

/// Mutated files in a default run.
const DEFAULT_FILES: usize = 300;
/// Uploads in flight at once: enough to keep two workers and the
/// accept-time probes busy, few enough that each job's time is its own.
const IN_FLIGHT: usize = 6;
/// Longest a single job may take from upload to terminal state.
const JOB_LIMIT: Duration = Duration::from_secs(60);
/// Time to start uploading the whole corpus: a fixed part and a share per
/// file (a default run takes 30 s on an idle 2-core machine, 2 minutes
/// beside other tests). Files not uploaded by then fail the test, which
/// so ends within this plus [`JOB_LIMIT`].
fn run_limit(files: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(600) * files as u32
}
/// Seconds of silence after which the node kills a transcoder, well under
/// [`JOB_LIMIT`], so that a libav hang ends the job instead of the test.
const STALL_TIMEOUT_SECS: &str = "20";
/// Address space of the node process (its transcoder children inherit it).
const NODE_ADDRESS_SPACE: u64 = 4 << 30;

/// The clips every mutation starts from: about a second, 160x120, one per
/// container family the service reads, with the codecs usual in each.
/// Written bit-exact and single-threaded so that a seed replays the same
/// bytes.
fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let sources: &[&str] = &[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=15",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "1",
        "-threads",
        "1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-pix_fmt",
        "yuv420p",
        "-ac",
        "1",
    ];
    let clips: [(&str, &[&str]); 6] = [
        (
            "corpus-h264-aac.mp4",
            &[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "aac",
                "-b:a",
                "32k",
            ],
        ),
        (
            "corpus-mjpeg-pcm-faststart.mov",
            &[
                "-c:v",
                "mjpeg",
                "-q:v",
                "8",
                "-c:a",
                "pcm_s16le",
                "-movflags",
                "+faststart",
            ],
        ),
        (
            "corpus-h264-aac.mkv",
            &[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "aac",
                "-b:a",
                "32k",
            ],
        ),
        (
            "corpus-vp8-opus.webm",
            &[
                "-c:v",
                "libvpx",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "200k",
                "-c:a",
                "libopus",
                "-b:a",
                "24k",
            ],
        ),
        (
            "corpus-mpeg4-mp3.avi",
            &[
                "-c:v",
                "mpeg4",
                "-q:v",
                "5",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "32k",
            ],
        ),
        (
            "corpus-mpeg2-mp2.ts",
            &[
                "-c:v",
                "mpeg2video",
                "-q:v",
                "5",
                "-c:a",
                "mp2",
                "-b:a",
                "64k",
            ],
        ),
    ];
    clips
        .into_iter()
        .map(|(name, codecs)| {
            let args: Vec<&str> = sources.iter().chain(codecs).copied().collect();
            let path = fixture(name, &args);
            (name, std::fs::read(&path).expect("read fixture"))
        })
        .collect()
}

/// One file to upload.
struct Sample {
    /// `0042-corpus-h264-aac.mp4`, or the file name of a replayed finding.
    name: String,
    /// Its number in the seeded sequence; `None` for a replayed file.
    index: Option<usize>,
    bytes: Vec<u8>,
    /// The mutations that made it.
    how: String,
}

/// Returns the seed of mutated file `index`: every file has its own, so one
/// replays alone.
fn file_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Makes mutated file `index` of the corpus of `seed`.
fn mutated(seed: u64, index: usize, bases: &[(&str, Vec<u8>)]) -> Sample {
    let (base_name, base) = &bases[index % bases.len()];
    let mut rng = fastrand::Rng::with_seed(file_seed(seed, index));
    let mut bytes = base.clone();
    let how = mutate::mutate(&mut bytes, &mut rng, base.len() * 2 + 64 * 1024);
    Sample {
        name: format!("{index:04}-{base_name}"),
        index: Some(index),
        bytes,
        how,
    }
}

/// The fuzzer's findings, kept in `tests/corpus/` (everything but READMEs).
fn findings() -> Vec<Sample> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .filter(|path| {
            !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("README"))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| Sample {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            index: None,
            bytes: std::fs::read(&path).expect("read corpus file"),
            how: "found by the fuzzer".to_owned(),
        })
        .collect()
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// A `vidpress serve` process under `prlimit --as`, niced, killed on drop.
struct NodeProcess {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("node.log");
        // prlimit and nice exec what follows them, so the child's pid is
        // the node's. Niced, so that tests running beside this one (some
        // time their node's answers) keep their share of the CPU.
        let child = Command::new("prlimit")
            .arg(format!("--as={NODE_ADDRESS_SPACE}"))
            .args(["--", "nice", "-n", "10"])
            .arg(env!("CARGO_BIN_EXE_vidpress"))
            .args(["serve", "--http", &format!("127.0.0.1:{port}")])
            .args(["--workers", "2", "--stall-timeout", STALL_TIMEOUT_SECS])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("prlimit runs the node");
        let node = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        eventually("the node to start", Duration::from_secs(30), || async {
            if node.healthy().await {
                Ok(())
            } else {
                Err(node.log_tail())
            }
        })
        .await;
        node
    }

    async fn healthy(&self) -> bool {
        let response = reqwest::Client::new()
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        matches!(response, Ok(r) if r.status() == 200)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How one upload ended.
#[derive(Debug)]
enum Outcome {
    /// A 4xx at submit, with its error code.
    Refused(u16, String),
    Completed,
    /// The job failed with this code and message.
    Failed(String, String),
    /// Anything the contract does not allow, said in a sentence.
    Broken(String),
}

/// Uploads one file and follows its job to the end, unless the run is
/// already past `run_deadline`.
async fn run_one(
    client: &reqwest::Client,
    base: &str,
    sample: &Sample,
    run_deadline: Instant,
) -> (Outcome, Duration) {
    let started = Instant::now();
    if started > run_deadline {
        let why = "not uploaded: the corpus ran out of its time bound".to_owned();
        return (Outcome::Broken(why), Duration::ZERO);
    }
    let outcome = match follow(client, base, sample, started + JOB_LIMIT).await {
        Ok(outcome) => outcome,
        Err(broken) => Outcome::Broken(broken),
    };
    (outcome, started.elapsed())
}

async fn follow(
    client: &reqwest::Client,
    base: &str,
    sample: &Sample,
    deadline: Instant,
) -> Result<Outcome, String> {
    let response = loop {
        let response = client
            .post(format!("{base}/jobs"))
            .body(sample.bytes.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("submit: {e}"))?;
        // The queue is kept short here, but a full one is no failure.
        if response.status() != 503 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = response.status().as_u16();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("submit answered {status} without a JSON body: {e}"))?;
    if (400..500).contains(&status) {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        if code.is_empty() || message.trim().is_empty() {
            return Err(format!(
                "refused with {status} but no error code or message: {body}"
            ));
        }
        return Ok(Outcome::Refused(status, code.to_owned()));
    }
    if status != 202 {
        return Err(format!("submit answered {status}: {body}"));
    }
    let id = body["id"]
        .as_str()
        .ok_or_else(|| format!("202 without a job id: {body}"))?
        .to_owned();
    loop {
        let response = client
            .get(format!("{base}/jobs/{id}"))
            .header("Prefer", "wait=5")
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| format!("poll {id}: {e}"))?;
        let status = response.status().as_u16();
        let doc: Value = response
            .json()
            .await
            .map_err(|e| format!("poll {id} answered {status} without a JSON body: {e}"))?;
        match (status, doc["status"].as_str().unwrap_or_default()) {
            (202, "queued" | "running") => {
                if Instant::now() > deadline {
                    return Err(format!("job {id} not terminal in {JOB_LIMIT:?}: {doc}"));
                }
            }
            (200, "completed") => {
                if doc["result"]["bytes"].as_u64().unwrap_or(0) == 0 {
                    return Err(format!("job {id} completed without a result: {doc}"));
                }
                return Ok(Outcome::Completed);
            }
            (400, "failed") => {
                let code = doc["error"]["code"].as_str().unwrap_or_default();
                let message = doc["error"]["message"].as_str().unwrap_or_default();
                if code.is_empty() || message.trim().is_empty() {
                    return Err(format!(
                        "job {id} failed without a code or a message: {doc}"
                    ));
                }
                return Ok(Outcome::Failed(code.to_owned(), message.to_owned()));
            }
            _ => return Err(format!("poll of job {id} answered {status}: {doc}")),
        }
    }
}

/// Returns the IDs of the node's jobs in `status`, or why they cannot be listed.
async fn jobs_in(
    client: &reqwest::Client,
    base: &str,
    status: &str,
) -> Result<Vec<String>, String> {
    let response = client
        .get(format!("{base}/jobs?status={status}&limit=1000"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot list {status} jobs: {e}"))?;
    let page: Value = response
        .json()
        .await
        .map_err(|e| format!("cannot list {status} jobs: {e}"))?;
    let jobs = page["jobs"]
        .as_array()
        .ok_or_else(|| format!("a job list without jobs: {page}"))?;
    Ok(jobs
        .iter()
        .filter_map(|job| job["id"].as_str().map(str::to_owned))
        .collect())
}

/// Writes the files that broke the contract where a person can open them.
fn keep(seed: u64, broken: &[(&Sample, String)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("corpus-failures")
        .join(format!("{seed:#x}"));
    std::fs::create_dir_all(&dir).expect("failure dir");
    for (sample, _) in broken {
        std::fs::write(dir.join(&sample.name), &sample.bytes).expect("keep failing file");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_media_at_scale_ends_every_job_clearly_and_the_node_survives() {
    let seed = env_number("VIDPRESS_CORPUS_SEED").unwrap_or_else(|| fastrand::u64(..));
    let files = env_number("VIDPRESS_CORPUS_FILES").map_or(DEFAULT_FILES, |n| n as usize);
    let only: Option<Vec<usize>> = std::env::var("VIDPRESS_CORPUS_ONLY").ok().map(|list| {
        list.split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("VIDPRESS_CORPUS_ONLY: file numbers")
            })
            .collect()
    });
    let replay = format!("VIDPRESS_CORPUS_SEED={seed:#x} VIDPRESS_CORPUS_FILES={files}");
    println!("corpus: seed {seed:#x}; replay with {replay}");

    let bases = fixtures();
    let mut samples: Vec<Sample> = match &only {
        Some(indices) => indices.iter().map(|&i| mutated(seed, i, &bases)).collect(),
        None => (0..files).map(|i| mutated(seed, i, &bases)).collect(),
    };
    samples.extend(findings());
    // Names the bytes, so that a replay can be seen to upload the same files.
    let digest = samples
        .iter()
        .fold(Sha256::new(), |hash, sample| {
            hash.chain_update(&sample.bytes)
        })
        .finalize();
    let digest: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();

    let mut node = NodeProcess::start().await;
    let pid = node.child.id();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let run_deadline = started + run_limit(samples.len());
    let results: Vec<(Outcome, Duration)> = futures::stream::iter(&samples)
        .map(|sample| run_one(&client, &node.base, sample, run_deadline))
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let wall = started.elapsed();

    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    let mut completed = 0;
    let mut broken: Vec<(&Sample, String)> = Vec::new();
    for (sample, (outcome, _)) in samples.iter().zip(&results) {
        match outcome {
            Outcome::Refused(status, code) => {
                *refused.entry(format!("{status} {code}")).or_default() += 1
            }
            Outcome::Completed => completed += 1,
            Outcome::Failed(code, message) => {
                *failed.entry(code.clone()).or_default() += 1;
                examples
                    .entry(code.clone())
                    .or_insert_with(|| format!("{} ({}): {message}", sample.name, sample.how));
            }
            Outcome::Broken(why) => broken.push((sample, why.clone())),
        }
    }
    let slowest = results
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    println!(
        "corpus: {} files ({} mutated, {} replayed findings; digest {digest}) in {:.1} s, slowest job {:.1} s: \
         refused at submit {} {refused:?}; completed {completed}; failed {} {failed:?}; broken {}",
        samples.len(),
        samples.iter().filter(|s| s.index.is_some()).count(),
        samples.iter().filter(|s| s.index.is_none()).count(),
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
        refused.values().sum::<usize>(),
        failed.values().sum::<usize>(),
        broken.len(),
    );
    for (code, example) in &examples {
        println!("corpus: e.g. {code}: {example}");
    }

    // The node lived through it all: the same process, still answering,
    // nothing left running, no panic in its log.
    let exited = node.child.try_wait().expect("the node's status");
    let healthy = node.healthy().await;
    let unfinished = match (
        jobs_in(&client, &node.base, "running").await,
        jobs_in(&client, &node.base, "queued").await,
    ) {
        (Ok(running), Ok(queued)) if running.is_empty() && queued.is_empty() => None,
        (Ok(running), Ok(queued)) => Some(format!(
            "jobs left unfinished: running {running:?}, queued {queued:?}"
        )),
        (Err(why), _) | (_, Err(why)) => Some(why),
    };
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    let panics: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panicked"))
        .take(5)
        .collect();

    let mut problems = Vec::new();
    if !broken.is_empty() {
        let kept = keep(seed, &broken);
        // The first few are enough to replay a failure, and keep it readable.
        let numbers: Vec<String> = broken
            .iter()
            .filter_map(|(s, _)| s.index.map(|i| i.to_string()))
            .take(40)
            .collect();
        let lines: Vec<String> = broken
            .iter()
            .take(20)
            .map(|(s, why)| format!("  {} ({}): {why}", s.name, s.how))
            .collect();
        problems.push(format!(
            "{} files broke the contract (kept in {}; run them alone with {replay} VIDPRESS_CORPUS_ONLY={}):\n{}",
            broken.len(),
            kept.display(),
            numbers.join(","),
            lines.join("\n"),
        ));
    }
    if let Some(status) = exited {
        problems.push(format!("the node (pid {pid}) exited: {status}"));
    }
    if !healthy {
        problems.push("the node no longer answers /healthz within a second".to_owned());
    }
    problems.extend(unfinished);
    if !panics.is_empty() {
        problems.push(format!(
            "the node's log shows panics:\n{}",
            panics.join("\n")
        ));
    }
    assert!(
        problems.is_empty(),
        "malformed corpus, seed {seed:#x} (replay with {replay}):\n{}\nnode log tail:\n{}",
        problems.join("\n"),
        node.log_tail(),
    );
}
