//! `vidpress-bench`: measures vidpress against baselines run in the same
//! process tree on the same machine, and writes `report.json` and
//! `report.md`. Every figure is a ratio, since absolute times on a shared
//! machine drift. `scripts/bench.sh` builds everything and runs it.
//!
//! - submit: `POST /jobs` of a ~200 KB clip, 64 connections (wrk), against a
//!   bare axum handler that streams the body to a file and answers 202;
//! - poll: `GET /jobs/{id}` over 1,000 known jobs against a bare handler
//!   answering a document of the same size; and through a non-owner;
//! - secure: submit and poll with API keys and TLS against the same node
//!   open over plain HTTP (`secure.rs`);
//! - fairness: a tenant's one job after another tenant's burst of 100,
//!   its wait against one job's time (`fairness.rs`);
//! - transcode: upload → completed against the `ffmpeg` CLI with the same
//!   settings on a 40 s 720p input: wall, CPU, output size;
//! - codecs: each codec/format pair at its default preset the same way on a
//!   40 s 720p input with detail, the quality report's SSIM against ffmpeg's
//!   `ssim` filter, and `min_ssim=0.97`: its search's cost and each codec's
//!   size there (`codecs.rs`; a table for the closing note in `codecs.md`).

mod baseline;
mod codecs;
mod fairness;
mod node;
mod replicated;
mod report;
mod secure;
mod wrk;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;

use crate::node::{Node, NodeSpec};
use crate::report::{Entry, Goal};

#[derive(Parser)]
#[command(about = "Benchmarks vidpress against baselines measured in the same run")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Where the report and the scratch files go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The vidpress binary to measure (a release build).
    #[arg(long, default_value = "target/release/vidpress")]
    vidpress: PathBuf,
    /// Seconds of each HTTP load run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs of each side of the transcode comparison, alternating.
    #[arg(long, default_value_t = 3)]
    transcode_runs: usize,
    /// Runs of each side of each codec in the codecs comparison, alternating.
    #[arg(long, default_value_t = 1)]
    codecs_runs: usize,
    /// Codecs of the codecs benchmark (h264, h265, av1, vp9); all by default.
    #[arg(long, value_delimiter = ',')]
    codecs: Vec<String>,
    /// Leaves out the codecs benchmark's min_ssim jobs.
    #[arg(long)]
    codecs_no_search: bool,
    /// Subscribers of the WebSocket fan-out benchmark.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Finished job records the scale benchmark fills a node with.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Size of the replicated submit benchmark's upload, in MB.
    #[arg(long, default_value_t = 500)]
    replicated_mb: u64,
    /// Runs of each side of the replicated submit benchmark.
    #[arg(long, default_value_t = 5)]
    replicated_runs: usize,
    /// The client's link in the replicated submit's second run, in Mbit/s
    /// (0: that run is left out).
    #[arg(long, default_value_t = 1000)]
    replicated_link_mbit: u64,
    /// Benchmarks to run (submit, replicated, poll, secure, events, fanout, scale, fairness, transcode, codecs); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serves the bare baseline handlers (started by the harness itself).
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        http: SocketAddr,
        #[arg(long)]
        dir: PathBuf,
        /// The document `GET /jobs/{id}` answers.
        #[arg(long)]
        doc: Option<PathBuf>,
        /// fsync each upload before answering 202.
        #[arg(long)]
        durable: bool,
    },
}

/// Connections of the HTTP load runs.
const CONNECTIONS: u32 = 64;
/// Jobs the poll benchmark reads.
const POLL_JOBS: usize = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest's rustls backend (enabled for the workspace) panics without a
    // process-wide provider; aws-lc-rs is the one the workspace builds.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    if let Some(Cmd::Baseline {
        http,
        dir,
        doc,
        durable,
    }) = cli.command
    {
        let doc = match doc {
            Some(path) => std::fs::read(path)?,
            None => b"{}".to_vec(),
        };
        return baseline::serve(http, dir, doc, durable).await;
    }
    let bench = Bench::new(&cli)?;
    let wanted = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    let mut entries = Vec::new();
    if wanted("submit") {
        entries.extend(bench.submit().await?);
    }
    if wanted("replicated") {
        let mut links = vec![None];
        if cli.replicated_link_mbit > 0 {
            links.push(Some(cli.replicated_link_mbit));
        }
        for link in links {
            entries.push(
                bench
                    .replicated(cli.replicated_mb, cli.replicated_runs, link)
                    .await?,
            );
        }
    }
    if wanted("poll") {
        entries.extend(bench.poll().await?);
    }
    if wanted("events") {
        entries.extend(bench.events().await?);
    }
    if wanted("fanout") {
        entries.extend(bench.fanout(cli.subscribers).await?);
    }
    if wanted("scale") {
        entries.extend(bench.scale(cli.records).await?);
    }
    if wanted("secure") {
        entries.extend(bench.secure().await?);
    }
    if wanted("fairness") {
        let dir = bench.dir("fairness")?;
        entries.push(fairness::run(&bench.vidpress, &dir, &bench.small_clip()?, 100).await?);
    }
    if wanted("transcode") {
        entries.extend(bench.transcode(cli.transcode_runs).await?);
    }
    if wanted("codecs") {
        entries.extend(
            bench
                .codecs(cli.codecs_runs, &cli.codecs, !cli.codecs_no_search)
                .await?,
        );
    }
    let context = format!(
        "{} CPUs, load average at the end {}; HTTP runs: wrk, {CONNECTIONS} connections, {} s each.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        cli.seconds
    );
    report::write(&cli.out, &entries, &context)?;
    print!("{}", report::markdown(&entries, &context));
    let failed = entries.iter().filter(|e| e.pass == Some(false)).count();
    println!(
        "\n{} benchmarks, {failed} below target; report in {}",
        entries.len(),
        cli.out.display()
    );
    Ok(())
}

struct Bench {
    out: PathBuf,
    scratch: tempfile::TempDir,
    vidpress: PathBuf,
    duration: Duration,
    lua: PathBuf,
    client: reqwest::Client,
}

impl Bench {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        if !cli.vidpress.exists() {
            bail!(
                "{} does not exist: build it with cargo build --release",
                cli.vidpress.display()
            );
        }
        std::fs::create_dir_all(&cli.out)?;
        Ok(Self {
            out: cli.out.clone(),
            scratch: tempfile::Builder::new()
                .prefix("scratch-")
                .tempdir_in(&cli.out)?,
            vidpress: cli.vidpress.clone(),
            duration: Duration::from_secs(cli.seconds),
            lua: Path::new(env!("CARGO_MANIFEST_DIR")).join("lua"),
            client: reqwest::Client::new(),
        })
    }

    /// A fresh scratch folder.
    fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.scratch.path().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn node(&self, dir: &Path, spec: NodeSpec<'_>) -> anyhow::Result<Node> {
        Node::start(&self.vidpress, dir, &spec)
    }

    /// One node on its own (the embedded default), with `workers`.
    fn solo(&self, name: &str, workers: u32) -> anyhow::Result<Node> {
        let spec = NodeSpec {
            name: "solo",
            workers,
            seed: None,
            clustered: false,
            args: &[],
        };
        self.node(&self.dir(name)?, spec)
    }

    /// Two clustered nodes with `workers` each, each seeing the other up.
    async fn pair(&self, name: &str, workers: [u32; 2]) -> anyhow::Result<(Node, Node)> {
        let dir = self.dir(name)?;
        let a = self.node(
            &dir,
            NodeSpec {
                name: "node-a",
                workers: workers[0],
                seed: None,
                clustered: true,
                args: &[],
            },
        )?;
        let b = self.node(
            &dir,
            NodeSpec {
                name: "node-b",
                workers: workers[1],
                seed: Some(a.cluster),
                clustered: true,
                args: &[],
            },
        )?;
        a.wait_members(&self.client, 2).await?;
        b.wait_members(&self.client, 2).await?;
        Ok((a, b))
    }

    /// Starts the baseline server; killed when the returned guard drops.
    fn baseline(&self, name: &str, doc: Option<&Path>) -> anyhow::Result<(String, ChildGuard)> {
        self.baseline_server(name, doc, false)
    }

    /// Starts the baseline server, fsyncing uploads if `durable`.
    fn baseline_server(
        &self,
        name: &str,
        doc: Option<&Path>,
        durable: bool,
    ) -> anyhow::Result<(String, ChildGuard)> {
        let port = node::free_port()?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["baseline", "--http", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(self.dir(name)?)
            .stdout(Stdio::null());
        if let Some(doc) = doc {
            command.arg("--doc").arg(doc);
        }
        if durable {
            command.arg("--durable");
        }
        let guard = ChildGuard(command.spawn()?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the baseline server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((format!("http://127.0.0.1:{port}"), guard))
    }

    fn load(&self, script: &str, url: &str, env: &[(&str, &Path)]) -> anyhow::Result<wrk::Load> {
        self.load_for(self.duration, script, url, env)
    }

    /// A load run of `duration` instead of the configured one.
    fn load_for(
        &self,
        duration: Duration,
        script: &str,
        url: &str,
        env: &[(&str, &Path)],
    ) -> anyhow::Result<wrk::Load> {
        wrk::run(&self.lua.join(script), url, CONNECTIONS, duration, env)
    }

    /// The ~200 KB clip the submit and poll benchmarks upload.
    fn small_clip(&self) -> anyhow::Result<PathBuf> {
        fixture(
            &self.out,
            "clip-200k.mp4",
            "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 \
             -t 5 -c:v libx264 -preset ultrafast -b:v 280k -c:a aac -b:a 48k -shortest",
        )
    }

    async fn submit(&self) -> anyhow::Result<Vec<Entry>> {
        let clip = self.small_clip()?;
        let env = [("BENCH_BODY", clip.as_path())];
        let size = std::fs::metadata(&clip)?.len();
        // This machine slows down as runs write gigabytes (its disk, and
        // page cache put in memory the VM's host had taken back), so a side
        // measured later would lose: each side runs four times, a quarter
        // as long, in the order A B C C B A A B C C B A, and each run
        // starts with no dirty pages of the one before and, after the
        // node's, once its probes are done.
        let (base_url, base_server) = self.baseline("submit-baseline", None)?;
        let (durable_url, durable_server) = self.baseline_server("submit-durable", None, true)?;
        let node = self.solo("submit-one", 0)?;
        let urls = [
            ("baseline", format!("{base_url}/jobs")),
            ("baseline that fsyncs", format!("{durable_url}/jobs")),
            ("one node, no workers", format!("{}/jobs", node.base())),
        ];
        let pids = [base_server.0.id(), durable_server.0.id(), node.pid()];
        // CPU each side spent during its runs; the node's also in all,
        // from its first run until the probes it still had queued are done.
        let mut cpu = [0.0f64; 3];
        let mut node_from = None;
        let leg = self.duration / 4;
        let there_and_back: Vec<usize> = (0..urls.len()).chain((0..urls.len()).rev()).collect();
        let mut runs: Vec<Option<wrk::Load>> = vec![None; urls.len()];
        for &i in there_and_back.iter().chain(&there_and_back) {
            let (name, url) = &urls[i];
            eprintln!("submit: {name}");
            let before = node::cpu_seconds_with_children(pids[i])?;
            if i == 2 && node_from.is_none() {
                node_from = Some(before);
            }
            let load = self.load_for(leg, "submit.lua", url, &env)?;
            cpu[i] += node::cpu_seconds_with_children(pids[i])? - before;
            runs[i] = Some(match runs[i] {
                Some(first) => first.merge(&load),
                None => load,
            });
            if i == 2 {
                // The probes a run leaves queued (they yield to the node's
                // answers) are done before the next run, so that they take
                // no CPU from a baseline's.
                node_idle_cpu(&node).await?;
            }
            flush_dirty_pages();
        }
        let [Some(base), Some(durable), Some(ours)] = runs[..] else {
            bail!("a submit run is missing");
        };
        let node_all = node_idle_cpu(&node).await? - node_from.unwrap_or_default();
        let per_request = |cpu: f64, load: &wrk::Load| 1e3 * cpu / load.requests.max(1) as f64;
        let cpu_note = format!(
            "during the runs: {:.3} ms (a bare handler that fdatasyncs: {:.3} ms); \
             all the node's CPU from its first run until its probes were done: {:.3} ms",
            per_request(cpu[2], &ours),
            per_request(cpu[1], &durable),
            per_request(node_all, &ours),
        );
        drop((node, base_server, durable_server));
        for name in ["submit-baseline", "submit-durable", "submit-one"] {
            self.settle(name)?;
        }

        eprintln!("submit: two nodes, replicated");
        let (a, _b) = self.pair("submit-two", [0, 0]).await?;
        let replicated = self.load("submit.lua", &format!("{}/jobs", a.base()), &env)?;

        let note = |load: &wrk::Load| {
            format!(
                "{size} B body; {} requests, {} non-2xx, {} socket errors",
                load.requests, load.non_2xx, load.socket_errors
            )
        };
        let durable_note = format!(
            "against a bare handler that fdatasyncs each upload before its 202: {:.0} req/s, p99 {:.1} ms",
            durable.throughput(),
            durable.p99_ms()
        );
        Ok(vec![
            Entry::throughput(
                "submit throughput",
                &ours,
                &base,
                Goal::AtLeast(0.5),
                note(&ours),
            ),
            Entry::p99("submit p99", &ours, &base, Goal::AtMost(2.0), note(&base)),
            Entry::throughput(
                "submit throughput vs a durable bare handler",
                &ours,
                &durable,
                Goal::AtLeast(0.9),
                durable_note,
            ),
            Entry::p99(
                "submit p99 vs a durable bare handler",
                &ours,
                &durable,
                Goal::Report,
                note(&durable),
            ),
            Entry::new(
                "submit CPU per request",
                "ms",
                per_request(cpu[2], &ours),
                per_request(cpu[0], &base),
                Goal::Report,
                cpu_note,
            ),
            Entry::throughput(
                "submit throughput, replicated (2 nodes)",
                &replicated,
                &base,
                Goal::Report,
                note(&replicated),
            ),
            Entry::p99(
                "submit p99, replicated (2 nodes)",
                &replicated,
                &base,
                Goal::Report,
                String::new(),
            ),
        ])
    }

    /// Removes a finished run's scratch folder and flushes the page cache's
    /// dirty pages, so the next run does not pay for this one's writeback.
    fn settle(&self, name: &str) -> anyhow::Result<()> {
        std::fs::remove_dir_all(self.scratch.path().join(name))?;
        flush_dirty_pages();
        Ok(())
    }

    /// Submits `count` jobs to `node`; returns the file of their paths.
    async fn known_jobs(
        &self,
        node: &Node,
        count: usize,
        name: &str,
    ) -> anyhow::Result<(PathBuf, Vec<String>)> {
        let body = std::fs::read(self.small_clip()?)?;
        let ids = self.submit_many(node, count, &body).await?;
        let paths: String = ids.iter().map(|id| format!("/jobs/{id}\n")).collect();
        let file = self.scratch.path().join(format!("{name}.paths"));
        std::fs::write(&file, paths)?;
        Ok((file, ids))
    }

    async fn poll(&self) -> anyhow::Result<Vec<Entry>> {
        eprintln!("poll: one node, {POLL_JOBS} queued jobs");
        let node = self.solo("poll-one", 0)?;
        let (paths, ids) = self.known_jobs(&node, POLL_JOBS, "poll-one").await?;
        let doc = self
            .client
            .get(format!("{}/jobs/{}", node.base(), ids[0]))
            .send()
            .await?
            .bytes()
            .await?;
        let doc_file = self.scratch.path().join("poll-doc.json");
        std::fs::write(&doc_file, &doc)?;
        let env = [("BENCH_PATHS", paths.as_path())];
        let ours = self.load("poll.lua", &node.base(), &env)?;
        drop(node);
        eprintln!("poll: baseline");
        let (base_url, _base) = self.baseline("poll-baseline", Some(&doc_file))?;
        let base = self.load("poll.lua", &base_url, &env)?;
        drop(_base);

        eprintln!("poll: two nodes, through the owner and through the other");
        let (a, b) = self.pair("poll-two", [0, 0]).await?;
        let (paths, _) = self.known_jobs(&a, POLL_JOBS, "poll-two").await?;
        let env = [("BENCH_PATHS", paths.as_path())];
        let owner = self.load("poll.lua", &a.base(), &env)?;
        let other = self.load("poll.lua", &b.base(), &env)?;

        let note = |load: &wrk::Load| {
            format!(
                "{} B document; {} requests, {} non-2xx, {} socket errors",
                doc.len(),
                load.requests,
                load.non_2xx,
                load.socket_errors
            )
        };
        let added = |ours: f64, base: f64| format!("adds {:.3} ms", ours - base);
        Ok(vec![
            Entry::throughput(
                "poll throughput",
                &ours,
                &base,
                Goal::AtLeast(0.7),
                note(&ours),
            ),
            Entry::p99("poll p99", &ours, &base, Goal::AtMost(2.0), note(&base)),
            Entry::new(
                "poll p50 via a non-owner (vs the owner)",
                "ms",
                other.p50_ms(),
                owner.p50_ms(),
                Goal::Report,
                added(other.p50_ms(), owner.p50_ms()),
            ),
            Entry::p99(
                "poll p99 via a non-owner (vs the owner)",
                &other,
                &owner,
                Goal::Report,
                added(other.p99_ms(), owner.p99_ms()),
            ),
        ])
    }

    /// Submits `count` copies of `body` to `node`, 16 at a time.
    async fn submit_many(
        &self,
        node: &Node,
        count: usize,
        body: &[u8],
    ) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/jobs", node.base());
        let ids: Vec<anyhow::Result<String>> = futures::stream::iter(0..count)
            .map(|_| submit(&self.client, url.clone(), body.to_vec()))
            .buffer_unordered(16)
            .collect()
            .await;
        ids.into_iter().collect()
    }

    /// Cancels the jobs `ids` on `node`, 16 at a time.
    async fn cancel_many(&self, node: &Node, ids: &[String]) -> anyhow::Result<()> {
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(ids)
            .map(|id| {
                let request = self.client.delete(format!("{}/jobs/{id}", node.base()));
                async move {
                    let status = request.send().await?.status();
                    if !status.is_success() {
                        bail!("cancel answered {status}");
                    }
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Memory per queued job and per finished job record, and polls on a
    /// node holding `records` finished records.
    async fn scale(&self, records: usize) -> anyhow::Result<Vec<Entry>> {
        const SAMPLE: usize = 2000;
        let tiny = std::fs::read(fixture(
            &self.out,
            "clip-tiny.mp4",
            "-f lavfi -i testsrc2=size=64x64:rate=5 -t 1 -c:v libx264 -preset ultrafast",
        )?)?;
        let node = self.solo("scale", 0)?;
        // Warm the node up (allocator arenas, first connections) before measuring.
        let warm = self.submit_many(&node, 100, &tiny).await?;
        self.cancel_many(&node, &warm).await?;
        eprintln!("scale: memory of {SAMPLE} queued jobs, then finished");
        let before = node.rss_kib()?;
        let ids = self.submit_many(&node, SAMPLE, &tiny).await?;
        let queued = node.rss_kib()?;
        self.cancel_many(&node, &ids).await?;
        let finished = node.rss_kib()?;
        let per = |kib: u64| kib.saturating_sub(before) as f64 / SAMPLE as f64;
        eprintln!("scale: filling the node with {records} finished records");
        let mut held = warm.len() + ids.len();
        let mut sample = ids;
        while held < records {
            let batch = self
                .submit_many(&node, (records - held).min(5000), &tiny)
                .await?;
            self.cancel_many(&node, &batch).await?;
            held += batch.len();
            sample = batch;
        }
        // Finished jobs keep their actor 5 s (for resuming subscribers),
        // then only their snapshot: measure after that.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let filled = node.rss_kib()?;
        let sampled = warm.len() + SAMPLE;
        let per_record =
            filled.saturating_sub(finished) as f64 / held.saturating_sub(sampled).max(1) as f64;
        eprintln!("scale: polls among {records} records");
        let paths: String = sample
            .iter()
            .take(POLL_JOBS)
            .map(|id| format!("/jobs/{id}\n"))
            .collect();
        let paths_file = self.scratch.path().join("scale.paths");
        std::fs::write(&paths_file, paths)?;
        let env = [("BENCH_PATHS", paths_file.as_path())];
        let ours = self.load("poll.lua", &node.base(), &env)?;
        let doc = self
            .client
            .get(format!("{}/jobs/{}", node.base(), sample[0]))
            .send()
            .await?
            .bytes()
            .await?;
        drop(node);
        let doc_file = self.scratch.path().join("scale-doc.json");
        std::fs::write(&doc_file, &doc)?;
        let (base_url, _base) = self.baseline("scale-baseline", Some(&doc_file))?;
        let base = self.load("poll.lua", &base_url, &env)?;
        Ok(vec![
            Entry::new("memory per queued job", "KiB", per(queued), 64.0, Goal::AtMost(1.0),
                format!("node RSS over {SAMPLE} jobs; baseline = the target itself (64 KiB)")),
            Entry::new("memory per finished job record", "KiB", per_record, 4.0, Goal::AtMost(1.0),
                format!("node RSS growth from {sampled} to {held} finished records ({finished} -> {filled} KiB; freed memory the allocator keeps makes a first sample useless); baseline = the target itself (4 KiB)")),
            Entry::throughput(&format!("poll throughput with {records} finished records"), &ours, &base, Goal::AtLeast(0.7), format!("{} requests, {} non-2xx", ours.requests, ours.non_2xx)),
            Entry::p99(&format!("poll p99 with {records} finished records"), &ours, &base, Goal::AtMost(2.0), String::new()),
        ])
    }

    /// A 30 s 640x360 clip whose encode sends a few dozen progress events.
    fn events_clip(&self) -> anyhow::Result<Vec<u8>> {
        let path = fixture(
            &self.out,
            "clip-360p-30s.mp4",
            "-f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 \
             -t 30 -c:v libx264 -preset ultrafast -c:a aac -shortest",
        )?;
        Ok(std::fs::read(path)?)
    }

    /// Event latency, publication to receipt, on a subscriber of the owner
    /// (where the worker runs too) and on one of the other node (bridged).
    async fn events(&self) -> anyhow::Result<Vec<Entry>> {
        eprintln!("events: latency on the owner and through the other node");
        let (a, b) = self.pair("events", [1, 0]).await?;
        let url = format!("{}/jobs?preset=veryfast", a.base());
        let id = submit(&self.client, url, self.events_clip()?).await?;
        let (on_owner, via_other) = (
            ws::connect(&a.base(), &id).await?,
            ws::connect(&b.base(), &id).await?,
        );
        let limit = Duration::from_secs(300);
        let (mut owner, mut other) =
            futures::join!(ws::read(on_owner, limit), ws::read(via_other, limit));
        let entry = |name: &str, seen: &mut ws::Seen| {
            let n = seen.latencies_ms.len();
            let p50 = ws::quantile(&seen.latencies_ms, 0.5);
            let p99 = ws::quantile(&seen.latencies_ms, 0.99);
            let note = format!(
                "{n} events, p50 {p50:.2} ms; baseline = the target itself (10 ms); all events in order: {}",
                seen.complete()
            );
            Entry::new(name, "ms", p99, 10.0, Goal::AtMost(1.0), note)
        };
        Ok(vec![
            entry("WebSocket event latency p99, on the owner", &mut owner),
            entry(
                "WebSocket event latency p99, through another node",
                &mut other,
            ),
        ])
    }

    /// One job's events to `count` subscribers on one node: connected while
    /// the job waits behind another (their idle memory is measured then),
    /// then the other is canceled and the job runs. Then the same number of
    /// events, of the same size and at the same pace, from a bare axum
    /// broadcast to as many subscribers: what this machine does at the least.
    async fn fanout(&self, count: usize) -> anyhow::Result<Vec<Entry>> {
        eprintln!("fanout: {count} subscribers");
        let node = self.solo("fanout", 1)?;
        let url = format!("{}/jobs?preset=veryfast", node.base());
        let blocker = submit(&self.client, url.clone(), self.events_clip()?).await?;
        let id = submit(&self.client, url, self.events_clip()?).await?;
        let before = node.rss_kib()?;
        let base = node.base();
        let sockets = subscribe(&base, &id, count).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_kib = node.rss_kib()?.saturating_sub(before) as f64 / count as f64;
        let started = Instant::now();
        let readers = read_all(sockets);
        let canceled = self
            .client
            .delete(format!("{base}/jobs/{blocker}"))
            .send()
            .await?;
        if !canceled.status().is_success() {
            bail!("cannot cancel the job ahead: {}", canceled.status());
        }
        let mut ours = FanOut::collect(readers).await?;
        let elapsed = started.elapsed();
        drop(node);

        eprintln!("fanout: bare broadcast to {count} subscribers");
        let (base_url, _guard) = self.baseline("fanout-baseline", None)?;
        let sockets = subscribe(&base_url, "0", count).await?;
        let readers = read_all(sockets);
        let every_ms = elapsed.as_millis() as u64 / ours.events.max(1) as u64;
        let started = self
            .client
            .post(format!(
                "{base_url}/fanout?events={}&every_ms={every_ms}&bytes={}",
                ours.events, ours.frame_bytes
            ))
            .send()
            .await?;
        if !started.status().is_success() {
            bail!("the bare broadcast answered {}", started.status());
        }
        let mut bare = FanOut::collect(readers).await?;
        let (p50, p99) = ours.quantiles();
        let (bare_p50, bare_p99) = bare.quantiles();
        Ok(vec![
            Entry::new(
                "fan-out: subscribers that got every event",
                "subscribers",
                ours.complete as f64,
                count as f64,
                Goal::AtLeast(1.0),
                format!("{} events after the snapshot, {} B each, one every {every_ms} ms", ours.events, ours.frame_bytes),
            ),
            Entry::new(
                "fan-out event latency p99",
                "ms",
                p99,
                100.0,
                Goal::AtMost(1.0),
                format!("p50 {p50:.1} ms over {} deliveries ({}); baseline = the target itself (100 ms)", ours.latencies.len(), ours.per_event()),
            ),
            Entry::new(
                "fan-out event latency p99 vs a bare broadcast",
                "ms",
                p99,
                bare_p99,
                Goal::Report,
                format!("the same events from a bare axum broadcast to {count} subscribers: p50 {bare_p50:.1} ms, p99 {bare_p99:.1} ms ({}); {} of them got every event", bare.per_event(), bare.complete),
            ),
            Entry::new(
                "memory per idle subscriber",
                "KiB",
                idle_kib,
                32.0,
                Goal::AtMost(1.0),
                format!("node RSS {before} KiB before {count} subscribers connected; baseline = the target itself (32 KiB)"),
            ),
        ])
    }

    async fn transcode(&self, runs: usize) -> anyhow::Result<Vec<Entry>> {
        let input = fixture(
            &self.out,
            "input-720p-40s.mp4",
            "-f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
             -t 40 -c:v libx264 -preset veryfast -crf 18 -c:a aac -b:a 128k -shortest",
        )?;
        let node = self.solo("transcode", 1)?;
        let dir = self.dir("transcode-cli")?;
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for run in 0..runs {
            eprintln!("transcode: run {} of {runs}", run + 1);
            // Alternate which side goes first, against drift.
            if run % 2 == 0 {
                ours.push(self.transcode_ours(&node, &input).await?);
                base.push(transcode_cli(&input, &dir.join("cli.mp4"))?);
            } else {
                base.push(transcode_cli(&input, &dir.join("cli.mp4"))?);
                ours.push(self.transcode_ours(&node, &input).await?);
            }
        }
        let median = |runs: &[Run], f: fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let note = |f: fn(&Run) -> f64| {
            let show = |runs: &[Run]| {
                runs.iter()
                    .map(|r| format!("{:.2}", f(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "medians of {runs} runs; ours: {}; ffmpeg CLI: {}",
                show(&ours),
                show(&base)
            )
        };
        let entry = |name: &str, unit: &str, f: fn(&Run) -> f64, goal: Goal| {
            Entry::new(
                name,
                unit,
                median(&ours, f),
                median(&base, f),
                goal,
                note(f),
            )
        };
        Ok(vec![
            entry(
                "transcode wall (upload to completed)",
                "s",
                |r| r.wall,
                Goal::AtMost(1.05),
            ),
            entry("transcode CPU time", "s", |r| r.cpu, Goal::AtMost(1.05)),
            entry(
                "transcode output size",
                "bytes",
                |r| r.bytes,
                Goal::Within(0.02),
            ),
        ])
    }

    /// Uploads `input` and polls every 100 ms until the job completes.
    async fn transcode_ours(&self, node: &Node, input: &Path) -> anyhow::Result<Run> {
        let (run, _) = self
            .job(node, input, "preset=veryfast&crf=28&audio_bitrate=96")
            .await?;
        Ok(run)
    }

    /// Uploads `input` with the options `query`, polls every 100 ms until
    /// the job completes, and returns its figures and status document.
    async fn job(
        &self,
        node: &Node,
        input: &Path,
        query: &str,
    ) -> anyhow::Result<(Run, serde_json::Value)> {
        let cpu = node.cpu_seconds()?;
        let started = Instant::now();
        let file = tokio::fs::File::open(input).await?;
        let size = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util_stream(file));
        let response = self
            .client
            .post(format!("{}/jobs?{query}", node.base()))
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await?;
        if response.status() != 202 {
            bail!("submit answered {}", response.status());
        }
        let doc: serde_json::Value = response.json().await?;
        let id = doc["id"].as_str().context("no id")?.to_owned();
        loop {
            let response = self
                .client
                .get(format!("{}/jobs/{id}", node.base()))
                .send()
                .await?;
            let status = response.status().as_u16();
            let doc: serde_json::Value = response.json().await?;
            match status {
                202 => tokio::time::sleep(Duration::from_millis(100)).await,
                200 => {
                    let wall = started.elapsed().as_secs_f64();
                    // The transcoder child has been reaped by now.
                    let cpu = node.cpu_seconds()? - cpu;
                    let bytes = doc["result"]["bytes"].as_f64().context("no result size")?;
                    return Ok((Run { wall, cpu, bytes }, doc));
                }
                _ => bail!("the job ended {status}: {doc}"),
            }
        }
    }
}

/// Connects `count` subscribers to a job's events on `base`.
async fn subscribe(base: &str, id: &str, count: usize) -> anyhow::Result<Vec<ws::Socket>> {
    let sockets: Vec<anyhow::Result<ws::Socket>> = futures::stream::iter(0..count)
        .map(|_| ws::connect(base, id))
        .buffer_unordered(128)
        .collect()
        .await;
    sockets.into_iter().collect()
}

/// Starts receiving on every socket, each on its own task.
fn read_all(sockets: Vec<ws::Socket>) -> Vec<tokio::task::JoinHandle<ws::Received>> {
    sockets
        .into_iter()
        .map(|socket| tokio::spawn(ws::receive(socket, Duration::from_secs(300))))
        .collect()
}

/// What the subscribers of a fan-out saw, together.
struct FanOut {
    /// Subscribers that got every event, in order, and the close.
    complete: usize,
    /// Most events any subscriber got after its first frame.
    events: usize,
    /// Size of the largest event frame.
    frame_bytes: usize,
    latencies: Vec<f64>,
    by_event: Vec<Vec<f64>>,
}

impl FanOut {
    async fn collect(readers: Vec<tokio::task::JoinHandle<ws::Received>>) -> anyhow::Result<Self> {
        let mut all = Self {
            complete: 0,
            events: 0,
            frame_bytes: 0,
            latencies: Vec::new(),
            by_event: Vec::new(),
        };
        let mut received = Vec::with_capacity(readers.len());
        for reader in readers {
            received.push(reader.await?);
        }
        for seen in received.into_iter().map(ws::Received::seen) {
            all.complete += usize::from(seen.complete());
            all.events = all.events.max(seen.seqs.len());
            all.frame_bytes = all.frame_bytes.max(seen.frame_bytes);
            for (i, latency) in seen.latencies_ms.iter().enumerate() {
                if all.by_event.len() <= i {
                    all.by_event.push(Vec::new());
                }
                all.by_event[i].push(*latency);
            }
            all.latencies.extend(seen.latencies_ms);
        }
        Ok(all)
    }

    /// How each event's delivery to every subscriber went: the range of the
    /// events' p50 and of their slowest delivery, in milliseconds.
    fn per_event(&mut self) -> String {
        let (p50s, maxes): (Vec<f64>, Vec<f64>) = self
            .by_event
            .iter()
            .map(|l| (ws::quantile(l, 0.5), ws::quantile(l, 1.0)))
            .unzip();
        let range = |v: &[f64]| (ws::quantile(v, 0.0), ws::quantile(v, 1.0));
        let ((p50_lo, p50_hi), (max_lo, max_hi)) = (range(&p50s), range(&maxes));
        format!("per event: p50 {p50_lo:.0}-{p50_hi:.0} ms, slowest delivery {max_lo:.0}-{max_hi:.0} ms")
    }

    /// p50 and p99 of the latencies, in milliseconds.
    fn quantiles(&self) -> (f64, f64) {
        (
            ws::quantile(&self.latencies, 0.5),
            ws::quantile(&self.latencies, 0.99),
        )
    }
}

/// Waits until `node` has used no CPU for a second (the probes of the jobs
/// it accepted are done), five minutes at most; returns its CPU seconds,
/// its children's included.
async fn node_idle_cpu(node: &Node) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = node::cpu_seconds_with_children(node.pid())?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = node::cpu_seconds_with_children(node.pid())?;
        if now - last < 0.02 || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Writes every dirty page to the disk (sync(2)), so that a run does not pay
/// for the writeback of the one before.
fn flush_dirty_pages() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Posts `body` to `url` and returns the new job's ID.
async fn submit(client: &reqwest::Client, url: String, body: Vec<u8>) -> anyhow::Result<String> {
    let response = client.post(url).body(body).send().await?;
    if response.status() != 202 {
        bail!("submit answered {}", response.status());
    }
    let doc: serde_json::Value = response.json().await?;
    doc["id"].as_str().map(str::to_owned).context("no id")
}

/// Wall time, CPU seconds and output bytes of one transcode.
struct Run {
    wall: f64,
    cpu: f64,
    bytes: f64,
}

/// Runs the `ffmpeg` CLI with the settings vidpress uses by default.
fn transcode_cli(input: &Path, output: &Path) -> anyhow::Result<Run> {
    let before = children_cpu();
    let started = Instant::now();
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "28"])
        .args(["-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart"])
        .arg(output)
        .status()?;
    if !status.success() {
        bail!("ffmpeg failed: {status}");
    }
    Ok(Run {
        wall: started.elapsed().as_secs_f64(),
        cpu: children_cpu() - before,
        bytes: std::fs::metadata(output)?.len() as f64,
    })
}

/// CPU seconds of this process's reaped children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Streams a file in 256 KiB chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

/// Makes `name` under `<out>/fixtures` with the `ffmpeg` CLI, once.
fn fixture(out: &Path, name: &str, args: &str) -> anyhow::Result<PathBuf> {
    let dir = out.join("fixtures");
    let path = dir.join(name);
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join(format!("partial-{name}"));
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(args.split_whitespace())
        .arg(&partial)
        .status()?;
    if !status.success() {
        bail!("ffmpeg could not make {name}");
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// A child process killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
