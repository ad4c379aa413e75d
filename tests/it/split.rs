//! Segment-parallel encoding (issue 16) on three `vidpress serve` processes
//! on loopback: a long job is cut into segments that run on several nodes
//! and are joined into one file, which is held frame by frame (ffprobe and
//! the ffmpeg CLI) to a `parallel=off` job of the same input: the same
//! frame count, timestamps a frame apart, audio in sync within one audio
//! frame, no seam at the cuts (per-frame SSIM). `parallel=off` and a clip
//! under `--segment-min-secs` run as one pass; a node killed while it runs
//! a segment costs only that segment, in segments and in time.
//!
//! The tests of this module take turns on a lock file: the one that
//! compares two runs' times holds it alone, so the others' encodes do not
//! land in one of its runs and not the other.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::cluster::{wait_members_up, NodeProc};
use crate::jobs::transcoders_of;
use crate::support::{eventually, fixture, get_json, run_cli};

const COOKIE: &str = "split-test-cookie";

/// The segment settings of most clusters here: 2 s segments, any input
/// over 4 s split.
const SEGMENTS: Segmenting = Segmenting {
    secs: 2,
    min_secs: 4,
};

/// `--segment-secs` and `--segment-min-secs`.
#[derive(Clone, Copy)]
struct Segmenting {
    secs: u64,
    min_secs: u64,
}

/// The longest any small job here may take, from upload to its end.
const JOB_LIMIT: Duration = Duration::from_secs(120);

/// The longest a CLI measurement (ffprobe, ffmpeg) may take.
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// How long a test waits for its turn on the lock.
const TURN_LIMIT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------
// Taking turns

/// A turn on the module's lock file, held until dropped.
struct Turn {
    _lock: File,
}

/// Waits (at most [`TURN_LIMIT`]) for a turn: shared with the other
/// correctness tests, or `alone`.
fn take_turn(alone: bool) -> Turn {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("split-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("the lock file");
    let mode = if alone { libc::LOCK_EX } else { libc::LOCK_SH };
    let deadline = Instant::now() + TURN_LIMIT;
    loop {
        // SAFETY: flock(2) on a descriptor this function owns.
        let locked =
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), mode | libc::LOCK_NB) };
        if locked == 0 {
            return Turn { _lock: file };
        }
        assert!(
            Instant::now() < deadline,
            "waited {TURN_LIMIT:?} for a turn on {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// The cluster

/// Three nodes, `node-a` the seed, one worker each.
struct Cluster {
    nodes: Vec<NodeProc>,
    dir: TempDir,
}

impl Cluster {
    /// Starts node-a, node-b and node-c with `workers` workers each.
    async fn start(segmenting: Segmenting, workers: [u32; 3]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = vec![
            (
                "VIDPRESS_SEGMENT_SECS".to_owned(),
                segmenting.secs.to_string(),
            ),
            (
                "VIDPRESS_SEGMENT_MIN_SECS".to_owned(),
                segmenting.min_secs.to_string(),
            ),
            // Read by `one_pass_gave_way`.
            ("VIDPRESS_LOG_FORMAT".to_owned(), "json".to_owned()),
        ];
        let [wa, wb, wc] = workers;
        let a = NodeProc::spawn_with("node-a", &dir, wa, vec![], COOKIE, env.clone());
        let seed = a.cluster;
        let b = NodeProc::spawn_with("node-b", &dir, wb, vec![seed], COOKIE, env.clone());
        let c = NodeProc::spawn_with("node-c", &dir, wc, vec![seed], COOKIE, env);
        let cluster = Self {
            nodes: vec![a, b, c],
            dir,
        };
        for node in &cluster.nodes {
            wait_members_up(node, 3, Duration::from_secs(30)).await;
        }
        cluster
    }

    fn owner(&self) -> &NodeProc {
        &self.nodes[0]
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} (last 40 lines) ---\n{}", n.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------------
// Jobs over HTTP

/// A job followed from its upload to its end.
struct Run {
    id: String,
    /// From the start of the upload to the first poll that saw it end.
    took: Duration,
    /// Every document polled, in order.
    docs: Vec<Value>,
}

impl Run {
    fn last(&self) -> &Value {
        self.docs.last().expect("at least one document")
    }
}

/// Uploads `input` to `node` with `query`; returns the job's ID and the
/// moment the upload started. Panics unless the answer is a 202.
async fn submit(node: &NodeProc, input: &Path, query: &str) -> (String, Instant) {
    let body = tokio::fs::read(input).await.expect("read the input");
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/jobs{query}", node.base()))
        .timeout(Duration::from_secs(60))
        .body(body)
        .send()
        .await
        .expect("the upload");
    let status = response.status().as_u16();
    let doc: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, 202, "POST /jobs{query}: {doc}");
    let id = doc["id"].as_str().expect("an id").to_owned();
    (id, started)
}

fn is_terminal(doc: &Value) -> bool {
    matches!(
        doc["status"].as_str(),
        Some("completed" | "failed" | "canceled")
    )
}

/// Polls job `id` on `node` every 100 ms until it ends, keeping every
/// document; panics after `limit` (counted from `started`).
async fn follow(node: &NodeProc, id: &str, started: Instant, limit: Duration) -> Run {
    let url = format!("{}/jobs/{id}", node.base());
    let mut docs = Vec::new();
    loop {
        let last_seen = match get_json(&url).await {
            Some((_, doc)) if doc["id"] == id => {
                let ended = is_terminal(&doc);
                let seen = doc.to_string();
                docs.push(doc);
                if ended {
                    return Run {
                        id: id.to_owned(),
                        took: started.elapsed(),
                        docs,
                    };
                }
                seen
            }
            Some((status, doc)) => format!("{status} {doc}"),
            None => "no answer".to_owned(),
        };
        assert!(
            started.elapsed() < limit,
            "job {id} on {} did not end within {limit:?}; last seen: {last_seen}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits and follows a job; panics unless it completed.
async fn completed(cluster: &Cluster, input: &Path, query: &str, limit: Duration) -> Run {
    let node = cluster.owner();
    let (id, started) = submit(node, input, query).await;
    let run = follow(node, &id, started, limit).await;
    assert_eq!(
        run.last()["status"],
        "completed",
        "POST /jobs{query}: {}\n{}",
        run.last(),
        cluster.logs()
    );
    run
}

/// Downloads a completed job's result into `dir`; checks its length
/// against the document.
async fn download(node: &NodeProc, run: &Run, dir: &Path, name: &str) -> PathBuf {
    let response = reqwest::Client::new()
        .get(format!("{}/jobs/{}/result", node.base(), run.id))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the result");
    assert_eq!(response.status().as_u16(), 200, "GET the result of {name}");
    let bytes = response.bytes().await.expect("the result's bytes");
    assert_eq!(
        run.last()["result"]["bytes"],
        bytes.len() as u64,
        "{name}: the document's size"
    );
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write the result");
    path
}

/// Appends `param` to a query string (`""` or `"?..."`).
fn with_param(query: &str, param: &str) -> String {
    if query.is_empty() {
        format!("?{param}")
    } else {
        format!("{query}&{param}")
    }
}

/// One element of a status document's `segments`.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    index: u64,
    start: f64,
    end: f64,
    state: String,
    node: Option<String>,
    progress: f64,
}

/// The `segments` of a status document; panics if it has none (the field
/// is always there, empty for a job that is not split).
fn segments(doc: &Value) -> Vec<Segment> {
    let list = doc["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("no segments array in {doc}"));
    list.iter()
        .map(|s| Segment {
            index: s["index"].as_u64().unwrap_or_else(|| panic!("index: {s}")),
            start: s["start_seconds"]
                .as_f64()
                .unwrap_or_else(|| panic!("start_seconds: {s}")),
            end: s["end_seconds"]
                .as_f64()
                .unwrap_or_else(|| panic!("end_seconds: {s}")),
            state: s["state"]
                .as_str()
                .unwrap_or_else(|| panic!("state: {s}"))
                .to_owned(),
            node: s["node"].as_str().map(str::to_owned),
            progress: s["progress"]
                .as_f64()
                .unwrap_or_else(|| panic!("progress: {s}")),
        })
        .collect()
}

/// Returns whether job `id`'s one pass had started before its plan came
/// and gave way to the pieces, as the owner logs it ("job split" with
/// `one_pass`); panics if the owner did not log the split.
fn one_pass_gave_way(owner: &NodeProc, id: &str) -> bool {
    let log = owner.log();
    let split = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "job split" && line["job_id"] == id)
        .unwrap_or_else(|| panic!("{} did not log the split of {id}", owner.name));
    split["one_pass"].as_bool().unwrap_or(false)
}

/// The attempts of a split job that lost nothing: each segment, the audio,
/// the join, and the one pass that started before the plan came, if one
/// did and gave way.
fn unfaulted_attempts(owner: &NodeProc, id: &str, segments: usize) -> u64 {
    segments as u64 + 2 + u64::from(one_pass_gave_way(owner, id))
}

/// Checks that a job's progress never went down while it was followed.
fn assert_progress_never_decreases(label: &str, run: &Run) {
    let seen: Vec<f64> = run
        .docs
        .iter()
        .filter_map(|d| d["progress"].as_f64())
        .collect();
    for (at, pair) in seen.windows(2).enumerate() {
        assert!(
            pair[1] >= pair[0] - 1e-9,
            "{label}: progress went from {} to {} at poll {}: {seen:?}",
            pair[0],
            pair[1],
            at + 1
        );
    }
}

/// Checks the segments of a completed split job: several, contiguous, in
/// order, each done on a named node; returns them.
fn assert_split_done(label: &str, run: &Run) -> Vec<Segment> {
    let doc = run.last();
    let list = segments(doc);
    assert!(list.len() >= 3, "{label}: not split in several: {doc}");
    for (i, s) in list.iter().enumerate() {
        assert_eq!(s.index, i as u64, "{label}: segments in order: {list:?}");
        assert_eq!(s.state, "done", "{label}: {list:?}");
        assert!(s.node.is_some(), "{label}: a done segment names its node");
        assert!((s.progress - 1.0).abs() < 1e-6, "{label}: {list:?}");
        assert!(s.end > s.start, "{label}: {list:?}");
    }
    for pair in list.windows(2) {
        assert!(
            (pair[1].start - pair[0].end).abs() < 1e-3,
            "{label}: segments cover the video without gap or overlap: {list:?}"
        );
    }
    list
}

// ---------------------------------------------------------------------------
// The ffmpeg CLI, bounded

/// A moving pattern, 320x240 at 30 fps, with a 440 Hz tone at 48 kHz,
/// `seconds` long; H.264 with B-frames and a keyframe every 2.5 s, so some
/// cuts fall on keyframes and the others are exact.
fn pattern(seconds: u32) -> PathBuf {
    let t = seconds.to_string();
    fixture(
        &format!("split-pattern-320x240-{seconds}s.mp4"),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &t,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "18",
            "-g",
            "75",
            "-keyint_min",
            "75",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
        ],
    )
}

/// A rational such as `30/1` or `1/15360`, as a number.
fn ratio(text: &str) -> f64 {
    let (num, den) = text.split_once('/').unwrap_or((text, "1"));
    let (num, den): (f64, f64) = (num.parse().expect("num"), den.parse().expect("den"));
    assert!(den != 0.0, "a ratio over zero: {text}");
    num / den
}

/// Decodes one stream of `path` with ffprobe: its frames (display order)
/// and its stream entry.
fn probe_frames(path: &Path, stream: &str, entries: &str) -> (Vec<Value>, Value) {
    let out = run_cli(
        &format!("ffprobe -show_frames {}", path.display()),
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", stream])
            .args(["-show_entries", entries, "-of", "json"])
            .arg(path),
        CLI_LIMIT,
    );
    let json: Value = serde_json::from_slice(&out).expect("ffprobe's JSON");
    let frames = json["frames"].as_array().cloned().unwrap_or_default();
    let stream = json["streams"][0].clone();
    (frames, stream)
}

/// A frame's timestamp in ticks: its `pts`, else its best-effort one.
fn frame_pts(frame: &Value) -> i64 {
    frame["pts"]
        .as_i64()
        .or_else(|| frame["best_effort_timestamp"].as_i64())
        .unwrap_or_else(|| panic!("a frame without a timestamp: {frame}"))
}

/// A file's decoded video frames.
#[derive(Debug)]
struct Video {
    /// Display times in seconds, in the order the decoder gave them.
    times: Vec<f64>,
    /// One tick of the stream's time base, in seconds.
    tick: f64,
}

fn video(path: &Path) -> Video {
    let (frames, stream) = probe_frames(
        path,
        "v:0",
        "frame=pts,best_effort_timestamp:stream=time_base",
    );
    let tick = ratio(stream["time_base"].as_str().expect("a time base"));
    let times = frames.iter().map(|f| frame_pts(f) as f64 * tick).collect();
    Video { times, tick }
}

/// A file's decoded audio: where it starts and ends, and its longest frame.
#[derive(Debug)]
struct Audio {
    start: f64,
    end: f64,
    /// The longest decoded frame, in seconds (1024 samples for AAC, 960
    /// for Opus at 48 kHz).
    frame: f64,
    tick: f64,
}

fn audio(path: &Path) -> Audio {
    let (frames, stream) = probe_frames(
        path,
        "a:0",
        "frame=pts,best_effort_timestamp,nb_samples:stream=time_base,sample_rate",
    );
    assert!(!frames.is_empty(), "no audio in {}", path.display());
    let tick = ratio(stream["time_base"].as_str().expect("a time base"));
    let rate: f64 = stream["sample_rate"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("a sample rate");
    let samples = |f: &Value| f["nb_samples"].as_i64().expect("nb_samples") as f64;
    let start = frame_pts(&frames[0]) as f64 * tick;
    let end = frames
        .iter()
        .map(|f| frame_pts(f) as f64 * tick + samples(f) / rate)
        .fold(f64::MIN, f64::max);
    let frame = frames.iter().map(samples).fold(0.0, f64::max) / rate;
    Audio {
        start,
        end,
        frame,
        tick,
    }
}

/// The frame rate of `path`'s video (its `r_frame_rate`).
fn frame_rate(path: &Path) -> f64 {
    let out = run_cli(
        "ffprobe r_frame_rate",
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=r_frame_rate,width,height"])
            .args(["-of", "json"])
            .arg(path),
        CLI_LIMIT,
    );
    let json: Value = serde_json::from_slice(&out).expect("ffprobe's JSON");
    ratio(json["streams"][0]["r_frame_rate"].as_str().expect("a rate"))
}

/// Per-frame SSIM ("All") of `output`'s video against `input`'s, the input
/// scaled to the output's size, by the `ssim` filter's stats file.
fn ssim_per_frame(output: &Path, input: &Path, dir: &Path) -> Vec<f64> {
    let out = run_cli(
        "ffprobe the output's size",
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=width,height", "-of", "json"])
            .arg(output),
        CLI_LIMIT,
    );
    let json: Value = serde_json::from_slice(&out).expect("ffprobe's JSON");
    let (width, height) = (&json["streams"][0]["width"], &json["streams"][0]["height"]);
    let stats = dir.join(format!(
        "ssim-{}.log",
        output.file_name().unwrap().to_string_lossy()
    ));
    let graph = format!(
        "[1:v]scale={width}:{height}:flags=bicubic[reference];\
         [0:v][reference]ssim=stats_file={}",
        stats.display()
    );
    run_cli(
        "ffmpeg ssim",
        Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-nostats", "-i"])
            .arg(output)
            .arg("-i")
            .arg(input)
            .args(["-lavfi", &graph, "-an", "-f", "null", "-"]),
        CLI_LIMIT,
    );
    std::fs::read_to_string(&stats)
        .expect("the SSIM stats file")
        .lines()
        .filter_map(|line| line.split_once("All:"))
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Checks that each frame follows the one before by one frame's duration
/// (`1 / fps`, within one tick of the time base: WebM's milliseconds
/// alternate 33 and 34 at 30 fps): no gap, no repeat, no reordering.
fn assert_continuous(label: &str, video: &Video, fps: f64) {
    let nominal = 1.0 / fps;
    for (at, pair) in video.times.windows(2).enumerate() {
        let step = pair[1] - pair[0];
        assert!(
            (step - nominal).abs() <= video.tick + 1e-6,
            "{label}: frame {} is {step:.6} s after frame {at} (at {:.6} s), not one frame \
             ({nominal:.6} s)",
            at + 1,
            pair[0]
        );
    }
}

// ---------------------------------------------------------------------------
// The tests

/// Runs `input` on three nodes split and with `parallel=off`, and holds the
/// split result frame by frame to the single pass and the input.
async fn split_joins_like_a_single_pass(input: PathBuf, query: &str, ext: &str, label: &str) {
    let _turn = take_turn(false);
    let cluster = Cluster::start(SEGMENTS, [1, 1, 1]).await;
    let owner = cluster.owner();

    let split = completed(&cluster, &input, query, JOB_LIMIT).await;
    let doc = split.last();
    assert_eq!(doc["options"]["parallel"], "auto", "{label}: {doc}");
    let list = assert_split_done(label, &split);
    let nodes: BTreeSet<&str> = list.iter().filter_map(|s| s.node.as_deref()).collect();
    assert!(
        nodes.len() >= 2,
        "{label}: every segment ran on {nodes:?}: {list:?}"
    );
    // Every piece dispatched is an attempt: the segments, the audio, the
    // join (and a one pass that gave way to them); nothing ran twice on a
    // cluster that lost nothing.
    assert_eq!(
        doc["attempt"].as_u64(),
        Some(unfaulted_attempts(owner, &split.id, list.len())),
        "{label}: attempts of {} segments, the audio, the join and a one pass that gave way \
         ({}): {doc}",
        list.len(),
        one_pass_gave_way(owner, &split.id)
    );
    assert_progress_never_decreases(label, &split);

    let single = completed(
        &cluster,
        &input,
        &with_param(query, "parallel=off"),
        JOB_LIMIT,
    )
    .await;
    assert_eq!(single.last()["options"]["parallel"], "off");
    assert_eq!(
        segments(single.last()),
        Vec::<Segment>::new(),
        "{label}: parallel=off"
    );

    let dir = cluster.dir.path();
    let joined = download(owner, &split, dir, &format!("split.{ext}")).await;
    let one_pass = download(owner, &single, dir, &format!("single.{ext}")).await;
    let fps = frame_rate(&input);
    let (joined_video, single_video) = (video(&joined), video(&one_pass));
    let frames = joined_video.times.len();

    // The same frames as the single pass, a frame apart, over the same span.
    assert_eq!(
        frames,
        single_video.times.len(),
        "{label}: frame count against parallel=off"
    );
    assert_continuous(label, &joined_video, fps);
    let frame = 1.0 / fps;
    let (start, end) = (
        joined_video.times[0],
        joined_video.times[frames - 1] + frame,
    );
    let (single_start, single_end) = (
        single_video.times[0],
        single_video.times[frames - 1] + frame,
    );
    assert!(
        (start - single_start).abs() <= frame && (end - single_end).abs() <= frame,
        "{label}: video {start:.4}..{end:.4} s, {single_start:.4}..{single_end:.4} s in one pass"
    );

    // Audio starts with the video and lasts as long, within one audio frame.
    let sound = audio(&joined);
    let slack = sound.frame + sound.tick + 1e-6;
    assert!(
        (sound.start - start).abs() <= slack,
        "{label}: audio starts at {:.4} s, video at {start:.4} s (one audio frame: {:.4} s)",
        sound.start,
        sound.frame
    );
    let (audio_length, video_length) = (sound.end - sound.start, end - start);
    assert!(
        (audio_length - video_length).abs() <= slack,
        "{label}: audio lasts {audio_length:.4} s, video {video_length:.4} s (one audio frame: \
         {:.4} s)",
        sound.frame
    );

    // No seam: the frames around each cut look like the rest.
    let ssim = ssim_per_frame(&joined, &input, dir);
    assert_eq!(ssim.len(), frames, "{label}: frames compared by SSIM");
    let mut sorted = ssim.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut seams = Vec::new();
    for segment in &list[1..] {
        // The first frame of the segment, counted in the output.
        let cut = start + (segment.start - list[0].start);
        let boundary = joined_video
            .times
            .iter()
            .filter(|t| **t < cut - frame / 2.0)
            .count();
        assert!(
            boundary > 0 && boundary < frames,
            "{label}: the cut at {} s falls outside the video",
            segment.start
        );
        // The two frames before the cut and the two from it on.
        let around = boundary.saturating_sub(2)..(boundary + 2).min(frames);
        for (at, value) in ssim.iter().enumerate().take(around.end).skip(around.start) {
            seams.push((at, *value));
            assert!(
                (value - median).abs() <= 0.02,
                "{label}: frame {at}, by the cut at frame {boundary} ({} s), has SSIM {value} \
                 against the median {median}",
                segment.start,
            );
        }
    }
    let single_bytes = single.last()["result"]["bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "{label}: {} segments on {nodes:?}, {frames} frames, video {start:.4}..{end:.4} s \
         ({single_start:.4}..{single_end:.4} s in one pass), audio {:.4}..{:.4} s; split {:?}, \
         single pass {:?}; SSIM median {median:.4}, by the cuts {seams:?}; {} bytes against \
         {single_bytes} in one pass",
        list.len(),
        sound.start,
        sound.end,
        split.took,
        single.took,
        doc["result"]["bytes"],
    );
}

#[tokio::test]
async fn an_h264_job_split_over_three_nodes_joins_like_a_single_pass() {
    split_joins_like_a_single_pass(pattern(12), "", "mp4", "h264/mp4").await;
}

#[tokio::test]
async fn a_vp9_job_split_over_three_nodes_joins_like_a_single_pass() {
    split_joins_like_a_single_pass(pattern(8), "?codec=vp9&format=webm", "webm", "vp9/webm").await;
}

/// Checks that no document of a run listed a segment and that one attempt
/// did the whole job.
fn assert_one_pass(label: &str, run: &Run) {
    for doc in &run.docs {
        assert_eq!(segments(doc), Vec::<Segment>::new(), "{label}: {doc}");
    }
    assert_eq!(run.last()["attempt"], 1, "{label}: {}", run.last());
}

#[tokio::test]
async fn parallel_off_runs_a_long_input_as_one_pass() {
    let _turn = take_turn(false);
    let cluster = Cluster::start(SEGMENTS, [1, 1, 1]).await;
    let input = pattern(12);
    let run = completed(&cluster, &input, "?parallel=off", JOB_LIMIT).await;
    assert_eq!(run.last()["options"]["parallel"], "off");
    assert_one_pass("parallel=off", &run);
    let out = download(cluster.owner(), &run, cluster.dir.path(), "off.mp4").await;
    assert_eq!(video(&out).times.len(), video(&input).times.len());

    // Only the two values exist.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/jobs?parallel=sometimes",
            cluster.owner().base()
        ))
        .timeout(Duration::from_secs(30))
        .body(std::fs::read(&input).unwrap())
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = response.json().await.expect("an error document");
    assert_eq!(error["error"]["code"], "invalid_option", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("parallel")),
        "{error}"
    );
}

#[tokio::test]
async fn a_clip_shorter_than_segment_min_secs_is_not_split() {
    let _turn = take_turn(false);
    let cluster = Cluster::start(SEGMENTS, [1, 1, 1]).await;
    // 3 s, under the 4 s of VIDPRESS_SEGMENT_MIN_SECS (a 2 s segment's
    // worth more than one).
    let run = completed(&cluster, &pattern(3), "", JOB_LIMIT).await;
    assert_eq!(run.last()["options"]["parallel"], "auto");
    assert_one_pass("a 3 s clip", &run);
}

/// The input of the fault test: heavy enough per second (noise, a slower
/// preset) that a 4 s segment takes seconds to encode, so a node can be
/// killed in the middle of one, and short enough that two runs fit in a
/// few minutes.
fn fault_input() -> PathBuf {
    fixture(
        "split-fault-640x360-40s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30,noise=alls=6:allf=t",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "40",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    )
}

/// The options of the fault test's jobs: a slower preset, so that each
/// segment is seconds of work.
const FAULT_QUERY: &str = "?preset=medium";

/// The fault test's segments: ten of 4 s.
const FAULT_SEGMENTS: Segmenting = Segmenting {
    secs: 4,
    min_secs: 10,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_while_it_runs_a_segment_costs_only_that_segment() {
    let _turn = take_turn(true);
    let input = fault_input();
    // node-c has two workers: its loss costs the job the pieces both ran,
    // and counts as one interruption.
    let mut cluster = Cluster::start(FAULT_SEGMENTS, [1, 1, 2]).await;

    // The same job unfaulted, for its time and its count of attempts.
    let calm = completed(&cluster, &input, FAULT_QUERY, Duration::from_secs(150)).await;
    let calm_segments = assert_split_done("unfaulted", &calm);
    let calm_attempts = calm.last()["attempt"].as_u64().expect("an attempt count");
    assert_eq!(
        calm_attempts,
        unfaulted_attempts(cluster.owner(), &calm.id, calm_segments.len()),
        "unfaulted: {}",
        calm.last()
    );
    eprintln!(
        "unfaulted: {:?}, {} segments, {calm_attempts} attempts",
        calm.took,
        calm_segments.len()
    );

    // node-c (neither the owner, node-a, nor its standby, node-b) is killed
    // in the middle of a segment, once another node has finished one.
    let victim = "node-c";
    let owner = cluster.owner();
    let (id, started) = submit(owner, &input, FAULT_QUERY).await;
    let url = format!("{}/jobs/{id}", owner.base());
    let before = std::cell::RefCell::new(Vec::new());
    let awaited = format!("{victim} to be in the middle of a segment of job {id}");
    let (seen, job) = (&before, &id);
    let at_kill = eventually(awaited, calm.took * 2, || {
        let url = url.clone();
        async move {
            let (_, doc) = get_json(&url).await.ok_or("no answer".to_owned())?;
            seen.borrow_mut().push(doc.clone());
            if is_terminal(&doc) {
                // Ends the wait at once: the moment cannot come any more.
                panic!("job {job} ended before {victim} ran a segment: {doc}");
            }
            let list = segments(&doc);
            let busy = list.iter().any(|s| {
                s.state == "running"
                    && s.node.as_deref() == Some(victim)
                    && (0.05..=0.6).contains(&s.progress)
            });
            let done_elsewhere = list
                .iter()
                .any(|s| s.state == "done" && s.node.as_deref() != Some(victim));
            if busy && done_elsewhere {
                Ok(doc)
            } else {
                Err(doc.to_string())
            }
        }
    })
    .await;
    let index = cluster.nodes.iter().position(|n| n.name == victim).unwrap();
    cluster.nodes[index].kill();
    let killed_after = started.elapsed();

    let at_kill_segments = segments(&at_kill);
    let done_before: BTreeMap<u64, String> = at_kill_segments
        .iter()
        .filter(|s| s.state == "done")
        .map(|s| (s.index, s.node.clone().expect("a done segment's node")))
        .collect();
    let lost: Vec<u64> = at_kill_segments
        .iter()
        .filter(|s| s.state == "running" && s.node.as_deref() == Some(victim))
        .map(|s| s.index)
        .collect();

    let mut run = follow(cluster.owner(), &id, started, calm.took * 3).await;
    let mut docs = before.into_inner();
    docs.append(&mut run.docs);
    run.docs = docs;
    let doc = run.last().clone();
    assert_eq!(doc["status"], "completed", "{doc}\n{}", cluster.logs());
    let after = assert_split_done("faulted", &run);
    assert_eq!(
        after.len(),
        calm_segments.len(),
        "the same plan as the unfaulted run"
    );

    // The segments done before the kill were kept where they were done
    // (those by the killed node too: their bytes were on the owner); the
    // segments it was running were done again by a node still up.
    for (index, node) in &done_before {
        assert_eq!(
            after[*index as usize].node.as_deref(),
            Some(node.as_str()),
            "segment {index}, done on {node} before the kill, was done again: {after:?}"
        );
    }
    assert!(
        done_before.values().any(|n| n != victim),
        "segments done on surviving nodes before the kill: {done_before:?}"
    );
    for index in &lost {
        let node = after[*index as usize].node.as_deref();
        assert!(
            node.is_some() && node != Some(victim),
            "segment {index}, running on {victim} when it died, ended on {node:?}"
        );
    }
    // Only what the dead node was running was dispatched again: its
    // segments, and the audio if it ran there (the document does not list
    // the audio).
    let attempts = doc["attempt"].as_u64().expect("an attempt count");
    let unfaulted = unfaulted_attempts(cluster.owner(), &id, after.len());
    assert!(
        attempts <= unfaulted + lost.len() as u64 + 1,
        "{attempts} attempts against {unfaulted} without a loss, {} lost on {victim}: {doc}",
        lost.len()
    );
    // However many pieces it ran, the node's loss is one interruption of
    // the job (ten fail it).
    let record = cluster.owner().data.join("jobs").join(&id).join("job.json");
    let record: Value =
        serde_json::from_slice(&std::fs::read(&record).expect("the job's record")).expect("json");
    assert_eq!(record["interrupted"], 1, "{record}");
    assert_progress_never_decreases("faulted", &run);

    // The time lost is about one segment and the failure detection.
    let slowdown = run.took.as_secs_f64() / calm.took.as_secs_f64();
    eprintln!(
        "faulted: {victim} killed after {killed_after:?} (segments done {done_before:?}, lost \
         {lost:?}); {:?} against {:?} unfaulted ({slowdown:.2}x), {attempts} attempts",
        run.took, calm.took
    );
    assert!(
        slowdown < 1.6,
        "the faulted job took {:?}, {slowdown:.2}x the unfaulted {:?}",
        run.took,
        calm.took
    );

    // The joined file is whole: every frame, a frame apart.
    let dir = cluster.dir.path();
    let out = download(cluster.owner(), &run, dir, "faulted.mp4").await;
    let calm_out = download(cluster.owner(), &calm, dir, "unfaulted.mp4").await;
    let (faulted_video, calm_video) = (video(&out), video(&calm_out));
    assert_eq!(
        faulted_video.times.len(),
        calm_video.times.len(),
        "frame count against the unfaulted run"
    );
    assert_continuous("faulted", &faulted_video, frame_rate(&input));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_every_segment_on_every_node() {
    let _turn = take_turn(true);
    let input = fault_input();
    let cluster = Cluster::start(FAULT_SEGMENTS, [1, 1, 1]).await;
    let owner = cluster.owner();
    let (id, _) = submit(owner, &input, FAULT_QUERY).await;
    let url = format!("{}/jobs/{id}", owner.base());

    // Segments encoding on at least two nodes at once.
    let awaited = format!("segments of job {id} to run on two nodes");
    let job = id.as_str();
    eventually(awaited, Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let (_, doc) = get_json(&url).await.ok_or("no answer".to_owned())?;
            let running: BTreeSet<String> = segments(&doc)
                .into_iter()
                .filter(|s| s.state == "running")
                .filter_map(|s| s.node)
                .collect();
            if running.len() >= 2 && transcoders_of(job).len() >= 2 {
                Ok(())
            } else {
                Err(doc.to_string())
            }
        }
    })
    .await;

    let response = reqwest::Client::new()
        .delete(&url)
        .send()
        .await
        .expect("the cancel is answered");
    assert!(response.status().is_success(), "{}", response.status());
    let doc: Value = response.json().await.expect("a status document");
    assert_eq!(doc["status"], "canceled", "{doc}");

    // Every encoder of the job, on every node, stops within two seconds.
    let awaited = format!("every encoder of job {id} to stop");
    eventually(awaited, Duration::from_secs(2), || {
        let pids = transcoders_of(&id);
        std::future::ready(if pids.is_empty() {
            Ok(())
        } else {
            Err(format!("encoder pids {pids:?}"))
        })
    })
    .await;

    // It stays canceled: nothing is dispatched again, on any node.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &cluster.nodes {
        let (_, doc) = get_json(&format!("{}/jobs/{id}", node.base()))
            .await
            .expect("the node answers");
        assert_eq!(doc["status"], "canceled", "{}: {doc}", node.name);
        assert!(
            segments(&doc).iter().all(|s| s.state != "running"),
            "{}: {doc}",
            node.name
        );
    }
    assert!(transcoders_of(&id).is_empty(), "an encoder started again");
}
