//! Measures what answering "any job from any node" costs in a running
//! three-node cluster (see `scripts/bench-cluster.sh`, which starts one).
//!
//! ```text
//! cluster_latency http://A http://B http://C [--polls N] [--out FILE] [--ws-size WxH] [--ws-seconds S]
//! ```
//!
//! `A` must have no workers (`--workers 0`), so every job it accepts runs on
//! `B` or `C` while `A` stays its owner.
//!
//! 1. Poll latency: a few small jobs are submitted on `A` and run to the
//!    end; then `N` sequential `GET /jobs/{id}` go to the owner `A` and `N`
//!    to the non-owner `B` (which forwards to `A`), one keep-alive client
//!    per node, interleaved in blocks so that drift hits both alike. Each
//!    sample is the time from sending the request to the last byte of the
//!    body.
//! 2. WebSocket latency: one long job (by default 30 s of 1280x720 with
//!    `preset=slow`, so that it emits 40+ progress events at the service's
//!    one per 250 ms at most) is submitted on `A`; subscribers on `A`
//!    (owner), `B` and `C` (non-owners, bridged to `A`) are opened at once
//!    in this process; for every event
//!    `seq` seen by the owner subscriber and a non-owner one, the receipt
//!    time on the non-owner minus the receipt time on the owner is the
//!    latency added by the bridge. Snapshots (the first frame of each
//!    subscription) are left out: they measure the connection, not an event.
//!
//! Prints a plain-text report and writes the numbers as JSON (default
//! `target/bench/cluster.json`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Requests per block before switching node, in the poll benchmark.
const BLOCK: usize = 100;
/// Requests per node sent before measuring (connections, caches).
const WARMUP: usize = 50;
/// Jobs polled in the poll benchmark.
const POLL_JOBS: usize = 3;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    bases: [String; 3],
    polls: usize,
    out: PathBuf,
    ws_size: String,
    ws_seconds: u32,
}

fn parse_args() -> Result<Args, Error> {
    let mut bases = Vec::new();
    let mut polls = 2000;
    let mut ws_size = "1280x720".to_owned();
    let mut ws_seconds = 30;
    let mut out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/cluster.json");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--polls" => polls = args.next().ok_or("--polls needs a value")?.parse()?,
            "--out" => out = args.next().ok_or("--out needs a value")?.into(),
            "--ws-size" => ws_size = args.next().ok_or("--ws-size needs a value")?,
            "--ws-seconds" => {
                ws_seconds = args.next().ok_or("--ws-seconds needs a value")?.parse()?
            }
            "-h" | "--help" => {
                println!(
                    "usage: cluster_latency http://A http://B http://C [--polls N] [--out FILE] [--ws-size WxH] [--ws-seconds S]"
                );
                std::process::exit(0);
            }
            _ => bases.push(arg.trim_end_matches('/').to_owned()),
        }
    }
    let bases: [String; 3] = bases
        .try_into()
        .map_err(|_| "expected three base URLs: owner A (no workers), B, C")?;
    Ok(Args {
        bases,
        polls,
        out,
        ws_size,
        ws_seconds,
    })
}

#[tokio::main]
async fn main() {
    // reqwest's rustls backend panics without a process-wide provider.
    vidpress::tls::install_default_provider();
    if let Err(e) = run().await {
        eprintln!("cluster_latency: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let [a, b, c] = &args.bases;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();

    let small = make_clip(dir.path(), "small.mp4", "320x240", 2)?;
    let long = make_clip(dir.path(), "long.mp4", &args.ws_size, args.ws_seconds)?;

    // 1. Poll latency.
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..POLL_JOBS {
        ids.push(submit(&http, a, &small, "?preset=veryfast").await?);
    }
    let mut poll_jobs = Vec::new();
    for id in &ids {
        let doc = wait_terminal(&http, a, id, Duration::from_secs(120)).await?;
        poll_jobs.push(json!({"id": id, "status": doc["status"], "node": doc["node"]}));
    }
    let polls = poll_latency(a, b, &ids, args.polls).await?;

    // 2. WebSocket event latency.
    let mut ws = ws_latency(&http, [a, b, c], &long).await?;
    ws["clip"] = json!(format!(
        "{} {} s, preset=slow",
        args.ws_size, args.ws_seconds
    ));

    let report = json!({
        "bases": {"a": a, "b": b, "c": c},
        "poll": {
            "jobs": poll_jobs,
            "requests_per_node": args.polls,
            "block": BLOCK,
            "warmup_per_node": WARMUP,
            "owner_a": polls.owner.summary(),
            "non_owner_b": polls.non_owner.summary(),
            "added_p50_ms": polls.non_owner.pct(50.0) - polls.owner.pct(50.0),
            "added_p99_ms": polls.non_owner.pct(99.0) - polls.owner.pct(99.0),
        },
        "websocket": ws,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "load_avg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    print_report(&report);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Generates a test clip (H.264 + AAC) with the ffmpeg CLI.
fn make_clip(dir: &Path, name: &str, size: &str, seconds: u32) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=25"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-shortest"])
        .arg(&path)
        .status()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !status.success() {
        return Err(format!("ffmpeg failed for {name}: {status}").into());
    }
    Ok(path)
}

async fn submit(
    http: &reqwest::Client,
    base: &str,
    file: &Path,
    query: &str,
) -> Result<String, Error> {
    let body = tokio::fs::read(file).await?;
    let response = http
        .post(format!("{base}/jobs{query}"))
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = response.status();
    let doc: Value = response.json().await?;
    if status != 202 {
        return Err(format!("submit to {base}: {status} {doc}").into());
    }
    Ok(doc["id"]
        .as_str()
        .ok_or("no id in the submit answer")?
        .to_owned())
}

async fn wait_terminal(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    limit: Duration,
) -> Result<Value, Error> {
    let deadline = Instant::now() + limit;
    loop {
        let response = http
            .get(format!("{base}/jobs/{id}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = response.status();
        let doc: Value = response.json().await?;
        if status != 202 {
            return Ok(doc);
        }
        if Instant::now() > deadline {
            return Err(format!("job {id} still {} after {limit:?}", doc["status"]).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Latency samples in milliseconds (signed: a difference may be negative).
#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The `p`th percentile, in ms, to the microsecond (an HDR histogram of
    /// three significant digits).
    fn pct(&self, p: f64) -> f64 {
        let Ok(mut histogram) = hdrhistogram::Histogram::<u64>::new(3) else {
            return f64::NAN;
        };
        for v in &self.0 {
            histogram.saturating_record((v.max(0.0) * 1000.0).round() as u64);
        }
        if histogram.is_empty() {
            return f64::NAN;
        }
        histogram.value_at_quantile(p / 100.0) as f64 / 1000.0
    }

    fn summary(&self) -> Value {
        let v = self.sorted();
        let n = v.len();
        json!({
            "n": n,
            "min_ms": v.first(),
            "p50_ms": (n > 0).then(|| self.pct(50.0)),
            "p90_ms": (n > 0).then(|| self.pct(90.0)),
            "p99_ms": (n > 0).then(|| self.pct(99.0)),
            "max_ms": v.last(),
            "mean_ms": (n > 0).then(|| v.iter().sum::<f64>() / n as f64),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct PollResult {
    owner: Samples,
    non_owner: Samples,
}

/// One GET, timed from send to the end of the body; checks it is a 200 with
/// the job's document.
async fn timed_get(client: &reqwest::Client, url: &str, id: &str) -> Result<Duration, Error> {
    let start = Instant::now();
    let response = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    let took = start.elapsed();
    if status != 200 {
        return Err(format!("GET {url}: {status} {}", String::from_utf8_lossy(&body)).into());
    }
    let doc: Value = serde_json::from_slice(&body)?;
    if doc["id"] != id {
        return Err(format!("GET {url} answered for another job: {doc}").into());
    }
    Ok(took)
}

async fn poll_latency(a: &str, b: &str, ids: &[String], n: usize) -> Result<PollResult, Error> {
    // One keep-alive connection per node.
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
    };
    let (to_a, to_b) = (client()?, client()?);
    let url = |base: &str, i: usize| (format!("{base}/jobs/{}", ids[i % ids.len()]), i % ids.len());
    for i in 0..WARMUP {
        let (u, j) = url(a, i);
        timed_get(&to_a, &u, &ids[j]).await?;
        let (u, j) = url(b, i);
        timed_get(&to_b, &u, &ids[j]).await?;
    }
    let mut result = PollResult {
        owner: Samples::default(),
        non_owner: Samples::default(),
    };
    let (mut done_a, mut done_b) = (0, 0);
    let mut block = 0;
    while done_a < n || done_b < n {
        // Alternate which node goes first in each pair of blocks.
        let order = if block % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for owner in order {
            let (base, client, done, samples) = if owner {
                (a, &to_a, &mut done_a, &mut result.owner)
            } else {
                (b, &to_b, &mut done_b, &mut result.non_owner)
            };
            for _ in 0..BLOCK.min(n - *done) {
                let (u, j) = url(base, *done);
                samples.0.push(ms(timed_get(client, &u, &ids[j]).await?));
                *done += 1;
            }
        }
        block += 1;
    }
    Ok(result)
}

/// One event as received by one subscriber.
struct Received {
    seq: u64,
    kind: String,
    at: Instant,
}

/// Reads one subscription to its close; returns the events and close code.
async fn subscribe(base: &str, id: &str) -> Result<(Vec<Received>, Option<u16>), Error> {
    let url = format!("{}/jobs/{id}/events", base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let mut events = Vec::new();
    let mut close = None;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(120), ws.next()).await? {
        let at = Instant::now();
        match frame? {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text)?;
                events.push(Received {
                    seq: event["seq"].as_u64().ok_or("event without seq")?,
                    kind: event["event"].as_str().unwrap_or("?").to_owned(),
                    at,
                });
            }
            Message::Close(frame) => {
                close = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    Ok((events, close))
}

async fn ws_latency(
    http: &reqwest::Client,
    bases: [&String; 3],
    clip: &Path,
) -> Result<Value, Error> {
    let [a, b, c] = bases;
    let id = submit(http, a, clip, "?preset=slow").await?;
    let submitted = Instant::now();
    // All three subscriptions are opened at once, each on its own task.
    let spawn = |base: &String| {
        let (base, id) = (base.clone(), id.clone());
        tokio::spawn(async move { subscribe(&base, &id).await })
    };
    let (on_a, on_b, on_c) = (spawn(a), spawn(b), spawn(c));
    let (events_a, close_a) = on_a.await??;
    let (events_b, close_b) = on_b.await??;
    let (events_c, close_c) = on_c.await??;
    let doc = wait_terminal(http, a, &id, Duration::from_secs(30)).await?;
    let compare = |other: &[Received]| {
        let mut added = Vec::new();
        let mut negative = 0;
        for e in other.iter().filter(|e| e.kind != "snapshot") {
            if let Some(o) = events_a
                .iter()
                .find(|o| o.seq == e.seq && o.kind != "snapshot")
            {
                // Signed: an event may reach the non-owner's reader first
                // when the owner's reader task is scheduled late.
                let d = if e.at >= o.at {
                    ms(e.at - o.at)
                } else {
                    -ms(o.at - e.at)
                };
                if d < 0.0 {
                    negative += 1;
                }
                added.push(d);
            }
        }
        let samples = Samples(added);
        let mut s = samples.summary();
        s["compared"] = json!(samples.0.len());
        s["non_owner_first"] = json!(negative);
        s["events"] = json!(other.len());
        s
    };
    let first_seq = |v: &[Received]| v.first().map(|e| e.seq);
    let progress = events_a.iter().filter(|e| e.kind == "progress").count();
    Ok(json!({
        "job": id,
        "job_status": doc["status"],
        "job_node": doc["node"],
        "job_seconds": submitted.elapsed().as_secs_f64(),
        "owner_events": events_a.len(),
        "owner_progress_events": progress,
        "snapshot_seq": {"a": first_seq(&events_a), "b": first_seq(&events_b), "c": first_seq(&events_c)},
        "close_codes": {"a": close_a, "b": close_b, "c": close_c},
        "added_b": compare(&events_b),
        "added_c": compare(&events_c),
    }))
}

fn print_report(r: &Value) {
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.3}"));
    let p = &r["poll"];
    println!();
    println!("== poll latency: GET /jobs/{{id}}, {} sequential requests per node, keep-alive, blocks of {} ==", p["requests_per_node"], p["block"]);
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "min", "p50", "p99", "max", "mean"
    );
    for (label, key) in [
        ("owner (a)", "owner_a"),
        ("non-owner (b -> a)", "non_owner_b"),
    ] {
        let s = &p[key];
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
            label,
            f(&s["min_ms"]),
            f(&s["p50_ms"]),
            f(&s["p99_ms"]),
            f(&s["max_ms"]),
            f(&s["mean_ms"])
        );
    }
    println!(
        "added by forwarding: p50 {} ms, p99 {} ms",
        f(&p["added_p50_ms"]),
        f(&p["added_p99_ms"])
    );
    let w = &r["websocket"];
    println!();
    println!(
        "== WebSocket events: job {} ran on {}, {}, {:.1} s; owner saw {} events ({} progress) ==",
        w["job"],
        w["job_node"],
        w["job_status"],
        w["job_seconds"].as_f64().unwrap_or(0.0),
        w["owner_events"],
        w["owner_progress_events"]
    );
    println!(
        "{:<28} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "receipt on X minus on a, ms", "compared", "p50", "p99", "max", "mean"
    );
    for (label, key) in [("b (non-owner)", "added_b"), ("c (non-owner)", "added_c")] {
        let s = &w[key];
        println!(
            "{:<28} {:>8} {:>9} {:>9} {:>9} {:>9}",
            label,
            s["compared"],
            f(&s["p50_ms"]),
            f(&s["p99_ms"]),
            f(&s["max_ms"]),
            f(&s["mean_ms"])
        );
    }
    println!(
        "snapshot seq a/b/c: {}/{}/{}; close codes a/b/c: {}/{}/{}; non-owner first: b {}, c {}",
        w["snapshot_seq"]["a"],
        w["snapshot_seq"]["b"],
        w["snapshot_seq"]["c"],
        w["close_codes"]["a"],
        w["close_codes"]["b"],
        w["close_codes"]["c"],
        w["added_b"]["non_owner_first"],
        w["added_c"]["non_owner_first"]
    );
    println!(
        "load average at the end: {}; elapsed {:.1} s",
        r["load_avg"],
        r["elapsed_s"].as_f64().unwrap_or(0.0)
    );
}
