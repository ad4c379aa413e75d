//! codecs: each codec/format pair at its default preset on one 40 s 720p
//! input against the `ffmpeg` CLI with the same settings (CPU time, wall,
//! size; on a machine of two cores or more, each job runs at the same time
//! as its CLI run, the node on one core and the CLI on another), the
//! quality report's SSIM against ffmpeg's `ssim` filter on the
//! same files, and `min_ssim=0.97`: what its search costs and the size each
//! codec needs to get there (issue 15, item 6).

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::node::Node;
use crate::report::{Entry, Goal};
use crate::{children_cpu, fixture, flush_dirty_pages, Bench, Run};

/// 40 s of 1280x720 at 30 fps with audio. testsrc2 alone compresses to
/// almost nothing, so every picture gets fresh noise (moving detail that
/// costs bits, as camera grain does); x264 at CRF 16 keeps it (about
/// 10 Mbit/s), so that each codec's re-encode shrinks it.
const INPUT_ARGS: &str = "-f lavfi -i testsrc2=size=1280x720:rate=30,noise=alls=3:allf=t \
     -f lavfi -i sine=frequency=440:sample_rate=48000 -t 40 -pix_fmt yuv420p \
     -c:v libx264 -preset veryfast -crf 16 -c:a aac -b:a 128k -shortest";

/// The `min_ssim` the search rows ask for, and what ffmpeg's own filter
/// must measure on the result at least (the target less 0.005).
const MIN_SSIM: f64 = 0.97;
const MIN_SSIM_MEASURED: f64 = MIN_SSIM - 0.005;

/// The service's default preset.
const PRESET: &str = "veryfast";

/// One codec/format pair at its default preset and CRF, and the `ffmpeg`
/// CLI arguments the engine's settings equal (transcode/src/engine/
/// encoders.rs; transcode/tests/it/codecs.rs `cli_arguments`).
struct Pair {
    codec: &'static str,
    format: &'static str,
    crf: u8,
    /// The preset on the encoder's own scale.
    speed: &'static str,
    cli: &'static str,
}

const MP4_AUDIO: &str = "-c:a aac -b:a 96k -movflags +faststart";
const WEBM_AUDIO: &str = "-c:a libopus -b:a 96k -cues_to_front 1";

const PAIRS: [Pair; 4] = [
    Pair {
        codec: "h264",
        format: "mp4",
        crf: 28,
        speed: "x264 veryfast",
        cli: "-c:v libx264 -preset veryfast -crf 28",
    },
    Pair {
        codec: "h265",
        format: "mp4",
        crf: 30,
        speed: "x265 veryfast",
        cli: "-c:v libx265 -preset veryfast -crf 30",
    },
    Pair {
        codec: "av1",
        format: "mp4",
        crf: 40,
        speed: "SVT-AV1 preset 10",
        cli: "-c:v libsvtav1 -preset 10 -crf 40 -g 250",
    },
    Pair {
        codec: "vp9",
        format: "webm",
        crf: 40,
        speed: "libvpx cpu-used 4",
        cli: "-c:v libvpx-vp9 -cpu-used 4 -row-mt 1 -crf 40 -b:v 0 -g 250",
    },
];

impl Pair {
    fn name(&self) -> String {
        format!("{}/{}", self.codec, self.format)
    }

    fn cli_arguments(&self) -> String {
        let audio = if self.format == "webm" {
            WEBM_AUDIO
        } else {
            MP4_AUDIO
        };
        format!("{} {audio}", self.cli)
    }

    fn query(&self, rate: &str) -> String {
        format!(
            "codec={}&format={}&preset={PRESET}&{rate}&audio_bitrate=96",
            self.codec, self.format
        )
    }
}

/// What the closing note's table shows of one codec.
struct Row {
    pair: &'static Pair,
    ours: Run,
    cli: Run,
    ssim_report: f64,
    ssim_filter: f64,
    /// bytes, CRF, ffmpeg-measured SSIM at `min_ssim`.
    at_target: Option<(f64, u64, f64)>,
}

impl Bench {
    /// Runs the codecs benchmark: `runs` of each side per pair (alternating),
    /// for the codecs in `only` (all when empty), and the `min_ssim` jobs
    /// unless `search` is false.
    pub(crate) async fn codecs(
        &self,
        runs: usize,
        only: &[String],
        search: bool,
    ) -> anyhow::Result<Vec<Entry>> {
        let input = fixture(&self.out, "codecs-720p-40s-noise.mp4", INPUT_ARGS)?;
        let node = self.solo("codecs", 1)?;
        let dir = self.dir("codecs-files")?;
        let runs = runs.max(1);
        let side_by_side = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        let mut entries = Vec::new();
        let mut rows = Vec::new();
        let pairs = PAIRS
            .iter()
            .filter(|p| only.is_empty() || only.iter().any(|o| o == p.codec));
        for (index, pair) in pairs.enumerate() {
            let name = pair.name();
            let cli_file = dir.join(format!("cli-{}.{}", pair.codec, pair.format));
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            let mut docs = Vec::new();
            for run in 0..runs {
                eprintln!("codecs: {name}, run {} of {runs}", run + 1);
                let query = pair.query(&format!("crf={}", pair.crf));
                if side_by_side {
                    // Both at once, each on its own core, the cores swapped
                    // from one run to the next: the machine's drift, which
                    // moves a minute-long encode by more than 5 % between
                    // runs, then slows both alike.
                    let (ours_core, cli_core) = if (run + index) % 2 == 0 {
                        (0, 1)
                    } else {
                        (1, 0)
                    };
                    node.pin(Some(ours_core))?;
                    let cli_run = {
                        let (input, cli_file) = (input.clone(), cli_file.clone());
                        let arguments = pair.cli_arguments();
                        tokio::task::spawn_blocking(move || {
                            cli(&input, &cli_file, &arguments, Some(cli_core))
                        })
                    };
                    let (r, doc) = self.job(&node, &input, &query).await?;
                    ours.push(r);
                    docs.push(doc);
                    base.push(cli_run.await??);
                } else if (run + index) % 2 == 0 {
                    // One after the other, alternating which side goes
                    // first, against drift, also across codecs when there
                    // is one run each.
                    let (r, doc) = self.job(&node, &input, &query).await?;
                    ours.push(r);
                    docs.push(doc);
                    flush_dirty_pages();
                    base.push(cli(&input, &cli_file, &pair.cli_arguments(), None)?);
                } else {
                    base.push(cli(&input, &cli_file, &pair.cli_arguments(), None)?);
                    flush_dirty_pages();
                    let (r, doc) = self.job(&node, &input, &query).await?;
                    ours.push(r);
                    docs.push(doc);
                }
                flush_dirty_pages();
            }
            // The quality report of the first run against ffmpeg's filter on
            // that run's output.
            let doc = &docs[0];
            let ours_file = dir.join(format!("ours-{}.{}", pair.codec, pair.format));
            self.download(&node, doc, &ours_file).await?;
            eprintln!("codecs: {name}, ffmpeg's ssim filter on our output");
            let ssim_filter = ffmpeg_ssim(&ours_file, &input)?;
            let quality = &doc["result"]["quality"];
            let ssim_report = quality["ssim"].as_f64().context("no quality report")?;
            let timings = &doc["result"]["timings"];
            let measuring = format!(
                "of our job's encode {:.1} s, {:.1} s measured quality (timings)",
                timings["encode_seconds"].as_f64().unwrap_or(f64::NAN),
                timings["quality_seconds"].as_f64().unwrap_or(f64::NAN),
            );
            let how = if side_by_side {
                "each ours at once with the CLI's, each on its own core, the cores swapped between runs"
            } else {
                "ours and the CLI's one after the other"
            };
            let note = |f: fn(&Run) -> f64| {
                format!(
                    "medians of {runs} runs, {how}; ours: {}; ffmpeg CLI `{}`: {}",
                    show(&ours, f),
                    pair.cli_arguments(),
                    show(&base, f)
                )
            };
            let entry = |what: &str, unit: &str, f: fn(&Run) -> f64, goal: Goal, extra: &str| {
                Entry::new(
                    &format!("codecs {name} {what}"),
                    unit,
                    median(&ours, f),
                    median(&base, f),
                    goal,
                    format!("{}{extra}", note(f)),
                )
            };
            // Each run of ours against the CLI's run beside it: the
            // machine's speed drifts between runs more than by 5 %.
            let pairs: Vec<f64> = ours.iter().zip(&base).map(|(o, b)| o.cpu / b.cpu).collect();
            // An encoder may set its own threads' affinity (x265's thread
            // pools take every core of their NUMA node): more CPU than wall
            // on one core says the pin did not hold.
            let unpinned = if side_by_side && base.iter().any(|r| r.cpu > 1.05 * r.wall) {
                "; the CLI's CPU time exceeds its wall time: the encoder's threads left the pin, so both sides shared both cores (CPU still compares like with like; wall does not)"
            } else {
                ""
            };
            entries.push(entry(
                "CPU time",
                "s",
                |r| r.cpu,
                Goal::AtMost(1.05),
                &format!(
                    "; ratio of each run to the CLI's beside it: {} (median {:.3}); {measuring}{unpinned}",
                    pairs
                        .iter()
                        .map(|r| format!("{r:.3}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    median_of(&pairs)
                ),
            ));
            // The target is held on CPU time: on this shared machine the
            // wall of a minute-long encode moves with the other builds' load
            // more than by 5 %.
            entries.push(entry(
                "wall (upload to completed)",
                "s",
                |r| r.wall,
                Goal::Report,
                "; no target: the CPU time row carries it, wall follows the machine's load",
            ));
            entries.push(entry(
                "output size",
                "bytes",
                |r| r.bytes,
                Goal::Within(0.02),
                "",
            ));
            entries.push(Entry::new(
                &format!("codecs {name} SSIM: quality report vs ffmpeg's ssim filter"),
                "SSIM",
                ssim_report,
                ssim_filter,
                Goal::Diff(0.005),
                format!(
                    "difference {:+.5}; report: sampled {}, {} frames, PSNR {} dB; filter: `ffmpeg -i ours -i input -lavfi [0:v][1:v]ssim`, All",
                    ssim_report - ssim_filter,
                    quality["sampled"],
                    quality["frames"],
                    quality["psnr_db"]
                ),
            ));
            rows.push(Row {
                pair,
                ours: middle(&ours),
                cli: middle(&base),
                ssim_report,
                ssim_filter,
                at_target: None,
            });
        }

        node.pin(None)?;
        if search {
            for row in &mut rows {
                let pair = row.pair;
                let name = pair.name();
                eprintln!("codecs: {name}, min_ssim={MIN_SSIM}");
                let query = pair.query(&format!("min_ssim={MIN_SSIM}"));
                let (run, doc) = self.job(&node, &input, &query).await?;
                let file = dir.join(format!("ssim-{}.{}", pair.codec, pair.format));
                self.download(&node, &doc, &file).await?;
                let measured = ffmpeg_ssim(&file, &input)?;
                let result = &doc["result"];
                let crf = result["crf"].as_u64().context("no CRF in the result")?;
                let search = result["timings"]["search_seconds"]
                    .as_f64()
                    .context("no timings")?;
                let encode = result["timings"]["encode_seconds"]
                    .as_f64()
                    .context("no timings")?;
                let reported = result["quality"]["ssim"].as_f64().unwrap_or(f64::NAN);
                entries.push(Entry::new(
                    &format!("codecs {name} size at min_ssim={MIN_SSIM} (vs CRF {})", pair.crf),
                    "bytes",
                    run.bytes,
                    row.ours.bytes,
                    Goal::Report,
                    format!(
                        "CRF {crf} chosen (default {}); SSIM {reported:.5} reported, {measured:.5} by ffmpeg's filter; search {search:.1} s of {:.1} s (search + encode), job {:.1} s upload to completed, {:.1} CPU s",
                        pair.crf,
                        search + encode,
                        run.wall,
                        run.cpu
                    ),
                ));
                entries.push(Entry::new(
                    &format!("codecs {name} min_ssim={MIN_SSIM}: ffmpeg's ssim on the output"),
                    "SSIM",
                    measured,
                    MIN_SSIM_MEASURED,
                    Goal::AtLeast(1.0),
                    format!(
                        "baseline = the target less 0.005; CRF {crf}, the report said {reported:.5}"
                    ),
                ));
                if pair.codec == "h264" {
                    entries.push(Entry::new(
                        &format!("codecs min_ssim={MIN_SSIM} search share of the job ({name})"),
                        "s",
                        search,
                        search + encode,
                        Goal::Report,
                        format!(
                            "ratio = timings.search_seconds / (search_seconds + encode_seconds); CRF {crf} chosen; the whole job took {:.1} s upload to completed",
                            run.wall
                        ),
                    ));
                }
                row.at_target = Some((run.bytes, crf, measured));
            }
        }
        drop(node);

        let table = closing_table(&rows);
        std::fs::create_dir_all(&self.out)?;
        std::fs::write(self.out.join("codecs.md"), &table)?;
        eprint!("{table}");
        Ok(entries)
    }

    /// Downloads the result of the completed job `doc` into `path`.
    async fn download(
        &self,
        node: &Node,
        doc: &serde_json::Value,
        path: &Path,
    ) -> anyhow::Result<()> {
        let id = doc["id"].as_str().context("no id")?;
        let response = self
            .client
            .get(format!("{}/jobs/{id}/result", node.base()))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("the result answered {}", response.status());
        }
        tokio::fs::write(path, response.bytes().await?).await?;
        Ok(())
    }
}

/// Runs the `ffmpeg` CLI on `input` with `arguments` into `output`, on
/// `core` alone if given. Its CPU time is that of the children this
/// process reaped meanwhile: nothing else it starts may end before it.
fn cli(input: &Path, output: &Path, arguments: &str, core: Option<usize>) -> anyhow::Result<Run> {
    let before = children_cpu();
    let started = Instant::now();
    let mut command = Command::new("ffmpeg");
    command
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(arguments.split_whitespace())
        .arg(output);
    if let Some(core) = core {
        // SAFETY: the closure only makes the sched_setaffinity system call
        // on a set built on its stack, which is safe between fork and exec.
        unsafe {
            command.pre_exec(move || crate::node::set_affinity(0, Some(core)));
        }
    }
    let result = command.output()?;
    if !result.status.success() {
        bail!(
            "ffmpeg {arguments} failed: {}: {}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(Run {
        wall: started.elapsed().as_secs_f64(),
        cpu: children_cpu() - before,
        bytes: std::fs::metadata(output)?.len() as f64,
    })
}

/// SSIM "All" of `output` against `input` by ffmpeg's `ssim` filter.
fn ffmpeg_ssim(output: &Path, input: &Path) -> anyhow::Result<f64> {
    let result = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-nostats", "-i"])
        .arg(output)
        .arg("-i")
        .arg(input)
        .args(["-lavfi", "[0:v][1:v]ssim", "-f", "null", "-"])
        .output()?;
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() {
        bail!("ffmpeg's ssim failed: {}: {stderr}", result.status);
    }
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("SSIM") && l.contains("All:"))
        .and_then(|l| l.split("All:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no SSIM line from ffmpeg")?
        .parse()
        .context("unreadable SSIM from ffmpeg")
}

fn median(runs: &[Run], f: fn(&Run) -> f64) -> f64 {
    median_of(&runs.iter().map(f).collect::<Vec<_>>())
}

/// The middle value (the upper of the two middle ones of an even count).
fn median_of(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The run of median CPU time.
fn middle(runs: &[Run]) -> Run {
    let mut v: Vec<&Run> = runs.iter().collect();
    v.sort_by(|a, b| a.cpu.total_cmp(&b.cpu));
    let r = v[v.len() / 2];
    Run {
        wall: r.wall,
        cpu: r.cpu,
        bytes: r.bytes,
    }
}

fn show(runs: &[Run], f: fn(&Run) -> f64) -> String {
    runs.iter()
        .map(|r| format!("{:.2}", f(r)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closing note's table: per codec, its preset, time, size and SSIM,
/// ours and the CLI's, and what `min_ssim` chose.
fn closing_table(rows: &[Row]) -> String {
    let mut md = String::from(
        "| codec | preset | CPU s ours / CLI | wall s ours / CLI | size ours / CLI | SSIM report / ffmpeg filter | size at SSIM 0.97 (CRF, ffmpeg SSIM) |\n|---|---|---|---|---|---|---|\n",
    );
    let mb = |b: f64| format!("{:.2} MB", b / 1e6);
    for r in rows {
        let at = match r.at_target {
            Some((bytes, crf, ssim)) => format!("{} (CRF {crf}, {ssim:.4})", mb(bytes)),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} | {PRESET} ({}), CRF {} | {:.1} / {:.1} ({:.3}x) | {:.1} / {:.1} ({:.3}x) | {} / {} ({:+.2} %) | {:.4} / {:.4} | {at} |",
            r.pair.name(),
            r.pair.speed,
            r.pair.crf,
            r.ours.cpu,
            r.cli.cpu,
            r.ours.cpu / r.cli.cpu,
            r.ours.wall,
            r.cli.wall,
            r.ours.wall / r.cli.wall,
            mb(r.ours.bytes),
            mb(r.cli.bytes),
            (r.ours.bytes / r.cli.bytes - 1.0) * 100.0,
            r.ssim_report,
            r.ssim_filter,
        );
    }
    md
}
