//! The compression choices as a client meets them over HTTP: every codec
//! and container pair comes back as what it says (probed by ffprobe, served
//! with its content type) with a quality report; a pair that does not
//! exist, or two rate modes at once, is refused; `target_size_bytes` lands
//! within 5 % of the target on two different inputs; `min_ssim` results
//! measure at least the target by ffmpeg's own `ssim` filter; a target no
//! video fits in fails with `target_too_small`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{clip, duration, ffprobe, fixture, stream, Served, TestNode};

const JOB_LIMIT: Duration = Duration::from_secs(120);

/// Submits `input` with `query`, waits for it to end, and returns its
/// final document; panics unless it completed.
async fn completed(node: &Served, input: &Path, query: &str) -> Value {
    let (status, accepted) = node.submit(input, query).await;
    assert_eq!(status, 202, "{query}: {accepted}");
    let id = accepted["id"].as_str().expect("an id").to_owned();
    let (status, job) = node.wait_for_terminal(&id, JOB_LIMIT).await;
    assert_eq!(status, 200, "{query}: {job}");
    job
}

/// Downloads a completed job's result; returns its content type and bytes.
async fn download(node: &Served, job: &Value) -> (String, Vec<u8>) {
    let id = job["id"].as_str().expect("an id");
    let response = reqwest::get(format!("{}/jobs/{id}/result", node.base))
        .await
        .expect("the result");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        content_type,
        response.bytes().await.expect("a body").to_vec(),
    )
}

/// Returns the SSIM ("All") of `output` against `input` by the ffmpeg
/// CLI's `ssim` filter, the input scaled to the output's size.
fn cli_ssim(output: &Path, input: &Path) -> f64 {
    let video = stream(&ffprobe(output), "video")
        .cloned()
        .expect("a video stream");
    let (width, height) = (&video["width"], &video["height"]);
    let graph =
        format!("[1:v]scale={width}:{height}:flags=bicubic[reference];[0:v][reference]ssim");
    let run = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(output)
        .arg("-i")
        .arg(input)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()
        .expect("the ffmpeg CLI runs");
    let log = String::from_utf8_lossy(&run.stderr);
    log.lines()
        .filter_map(|line| line.split(" All:").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no SSIM in ffmpeg's output: {log}"))
}

/// A 10 s 640x360 clip with audio, of `testsrc2`.
fn pattern_clip() -> std::path::PathBuf {
    fixture(
        "compression-pattern-640x360-10s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "16",
            "-c:a",
            "aac",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// An 8 s 480x270 clip of noisy fractal motion without audio: costlier to
/// encode per pixel than the pattern, and rate-controlled differently.
fn noisy_clip() -> std::path::PathBuf {
    fixture(
        "compression-noisy-480x270-8s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "mandelbrot=size=480x270:rate=25,noise=alls=12:allf=t",
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "14",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

#[tokio::test]
async fn every_pair_comes_back_as_its_codec_in_its_container_with_a_report() {
    let node = TestNode::start().await.serve();
    let input = clip(2);
    let input_seconds = duration(&ffprobe(&input));
    let dir = tempfile::tempdir().unwrap();
    for (codec, format, libav, content_type) in [
        ("h264", "mp4", "h264", "video/mp4"),
        ("h265", "mp4", "hevc", "video/mp4"),
        ("av1", "mp4", "av1", "video/mp4"),
        ("av1", "webm", "av1", "video/webm"),
        ("vp9", "webm", "vp9", "video/webm"),
    ] {
        let label = format!("{codec}/{format}");
        let query = format!("?codec={codec}&format={format}&preset=ultrafast");
        let job = completed(&node, &input, &query).await;
        assert_eq!(job["options"]["codec"], codec, "{label}");
        assert_eq!(job["options"]["format"], format, "{label}");

        let result = &job["result"];
        assert_eq!(result["codec"], codec, "{label}: {result}");
        assert_eq!(result["format"], format, "{label}");
        assert_eq!(result["content_type"], content_type, "{label}");
        assert_eq!(
            (&result["width"], &result["height"]),
            (&320.into(), &240.into())
        );
        assert!(result["crf"].as_u64().is_some(), "{label}: the crf used");
        let ssim = result["quality"]["ssim"].as_f64().expect("an SSIM");
        let psnr = result["quality"]["psnr_db"].as_f64().expect("a PSNR");
        assert!(
            (0.8..=1.0).contains(&ssim) && psnr > 20.0,
            "{label}: {result}"
        );
        let reported = result["duration_seconds"].as_f64().expect("a duration");
        assert!(
            (reported - input_seconds).abs() <= 0.1,
            "{label}: {reported} s"
        );

        let (served_type, bytes) = download(&node, &job).await;
        assert_eq!(served_type, content_type, "{label}");
        assert_eq!(
            Some(bytes.len() as u64),
            result["bytes"].as_u64(),
            "{label}"
        );
        let output = dir.path().join(format!("{codec}.{format}"));
        std::fs::write(&output, &bytes).unwrap();
        let probe = ffprobe(&output);
        let video = stream(&probe, "video").expect("a video stream");
        assert_eq!(video["codec_name"], libav, "{label}");
        assert_eq!(
            (&video["width"], &video["height"]),
            (&320.into(), &240.into())
        );
        let audio = stream(&probe, "audio").expect("an audio stream");
        let audio_codec = if format == "mp4" { "aac" } else { "opus" };
        assert_eq!(audio["codec_name"], audio_codec, "{label}");
        let seconds = duration(&probe);
        assert!(
            (seconds - input_seconds).abs() <= 0.1,
            "{label}: {seconds} s"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn pairs_that_do_not_exist_and_two_rate_modes_are_refused() {
    let node = TestNode::start().await.serve();
    let input = clip(1);
    for (query, names) in [
        ("?codec=vp9&format=mp4", "the pairs are"),
        ("?codec=h265&format=webm", "the pairs are"),
        ("?codec=h264&format=webm", "the pairs are"),
        ("?codec=mpeg2", "codec"),
        ("?format=mkv", "format"),
        ("?crf=30&target_size_bytes=500000", "target_size_bytes"),
        ("?target_size_bytes=500000&min_ssim=0.97", "min_ssim"),
        ("?crf=30&min_ssim=0.97", "min_ssim"),
        ("?codec=h265&crf=52", "crf"),
        ("?codec=av1&crf=0", "between 1 and 63"),
        ("?target_size_bytes=9999", "target_size_bytes"),
        ("?min_ssim=0.5", "min_ssim"),
        ("?min_ssim=1", "min_ssim"),
    ] {
        let (status, body) = node.submit(&input, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_option", "{query}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{query}: {message}");
    }
    let (_, list) = node.submit(&input, "?codec=vp9&crf=63").await;
    assert_eq!(list["options"]["crf"], 63, "vp9 takes crf up to 63");
    node.stop().await;
}

#[tokio::test]
async fn target_size_lands_within_five_percent_on_two_inputs() {
    let node = TestNode::start().await.serve();
    for (input, target, codec) in [
        (pattern_clip(), 400_000u64, "h264"),
        (noisy_clip(), 300_000u64, "h264"),
        (noisy_clip(), 250_000u64, "vp9"),
    ] {
        let query = format!("?codec={codec}&target_size_bytes={target}&preset=ultrafast");
        let job = completed(&node, &input, &query).await;
        assert_eq!(job["options"]["target_size_bytes"], target);
        assert!(job["options"]["crf"].is_null(), "no crf in this mode");
        let (_, bytes) = download(&node, &job).await;
        let miss = bytes.len() as f64 / target as f64 - 1.0;
        assert!(
            miss.abs() <= 0.05,
            "{} with {codec}: {} bytes for a target of {target} ({:+.1} %)",
            input.display(),
            bytes.len(),
            miss * 100.0
        );
        assert!(job["result"]["video_bitrate_kbps"].as_u64().is_some());
        assert!(job["result"]["quality"]["ssim"].as_f64().is_some());
    }
    node.stop().await;
}

#[tokio::test]
async fn min_ssim_results_measure_at_least_the_target_with_ffmpegs_filter() {
    let node = TestNode::start().await.serve();
    let dir = tempfile::tempdir().unwrap();
    for (input, target, codec) in [
        (pattern_clip(), 0.97, "h264"),
        (noisy_clip(), 0.95, "h264"),
        (pattern_clip(), 0.97, "vp9"),
    ] {
        let query = format!("?codec={codec}&min_ssim={target}&preset=ultrafast");
        let job = completed(&node, &input, &query).await;
        let result = &job["result"];
        let crf = result["crf"].as_u64().expect("the crf chosen");
        let (_, bytes) = download(&node, &job).await;
        let output = dir.path().join(format!("{codec}-{target}.out"));
        std::fs::write(&output, &bytes).unwrap();
        let measured = cli_ssim(&output, &input);
        assert!(
            measured >= target - 0.005,
            "{} with {codec} at crf {crf}: ffmpeg measures SSIM {measured:.5}, the target is {target}",
            input.display()
        );
        let reported = result["quality"]["ssim"].as_f64().expect("a reported SSIM");
        assert!(
            (reported - measured).abs() <= 0.005,
            "the report's SSIM {reported:.5} against ffmpeg's {measured:.5}"
        );
        assert!(
            result["timings"]["search_seconds"].as_f64() > Some(0.0),
            "the search is timed: {result}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn a_target_no_video_fits_in_fails_with_target_too_small() {
    let node = TestNode::start().await.serve();
    // 10 s of 96 kbit/s audio alone is 120 kB.
    let (status, accepted) = node
        .submit(&pattern_clip(), "?target_size_bytes=100000")
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("an id");
    let (status, job) = node.wait_for_terminal(id, JOB_LIMIT).await;
    assert_eq!(status, 400, "{job}");
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "target_too_small", "{job}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("at least"),
        "says what would fit: {message}"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_quality_report_costs_at_most_a_quarter_of_the_encode_and_holds_when_sampled() {
    let node = TestNode::start().await.serve();
    // 720p at x264's fastest: comparing every picture would cost more
    // than encoding it, so the report samples.
    let input = fixture(
        "compression-720p-12s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-t",
            "12",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "16",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let job = completed(&node, &input, "?preset=ultrafast").await;
    let result = &job["result"];
    let timings = &result["timings"];
    let encode = timings["encode_seconds"].as_f64().expect("encode seconds");
    let quality = timings["quality_seconds"]
        .as_f64()
        .expect("quality seconds");
    eprintln!("measuring took {quality:.3} s of an encode of {encode:.3} s");
    assert!(
        quality <= 0.25 * encode,
        "measuring took {quality:.2} s of an encode of {encode:.2} s: {result}"
    );
    let frames = result["quality"]["frames"]
        .as_u64()
        .expect("frames compared");
    assert!(frames > 0, "{result}");
    if result["quality"]["sampled"] == true {
        assert!(
            frames < 360,
            "a sample compares fewer than the 360 pictures"
        );
    } else {
        assert_eq!(frames, 360, "every picture compared");
    }
    // Sampled or not, the figure is the whole video's within 0.005.
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.mp4");
    std::fs::write(&output, download(&node, &job).await.1).unwrap();
    let measured = cli_ssim(&output, &input);
    let reported = result["quality"]["ssim"].as_f64().expect("a reported SSIM");
    assert!(
        (reported - measured).abs() <= 0.005,
        "the report's SSIM {reported:.5} against ffmpeg's {measured:.5}: {result}"
    );
    node.stop().await;
}
