//! The driver against the real child binary: events cross the process
//! boundary intact, and a crashing, hanging, babbling or cancelled child
//! ends the way the contract says.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vidpress_transcode::driver::{self, ChildCommand};
use vidpress_transcode::{
    ChildEvent, EncodeOptions, ErrorCode, Limits, Preset, Task, TranscodeJob,
};

use crate::fixtures::{self, ffprobe, streams};

const CHILD: &str = env!("CARGO_BIN_EXE_vidpress-transcode-child");
const STALL: Duration = Duration::from_secs(30);

fn child() -> ChildCommand {
    ChildCommand {
        program: PathBuf::from(CHILD),
        args: Vec::new(),
    }
}

/// The child with `VIDPRESS_TRANSCODE_FAULT=<fault>` in its environment
/// only, through env(1), so parallel tests are unaffected.
fn faulty_child(fault: &str) -> ChildCommand {
    ChildCommand {
        program: PathBuf::from("/usr/bin/env"),
        args: vec![
            OsString::from(format!("VIDPRESS_TRANSCODE_FAULT={fault}")),
            OsString::from(CHILD),
        ],
    }
}

/// A shell script standing in for the child.
fn fake_child(script: &str) -> ChildCommand {
    ChildCommand {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into(), "fake-child".into()],
    }
}

fn job(input: PathBuf, dir: &TempDir, options: EncodeOptions) -> TranscodeJob {
    TranscodeJob {
        input,
        output: dir.path().join("out.mp4"),
        options,
        limits: Limits::default(),
        task: Default::default(),
    }
}

#[tokio::test]
async fn happy_path_reports_probe_progress_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    let mut events = Vec::new();
    let bytes = driver::run(&child(), &job, STALL, |event| events.push(event))
        .await
        .expect("transcode succeeds")
        .bytes;

    assert_eq!(bytes, std::fs::metadata(&job.output).unwrap().len());
    let probe = ffprobe(&job.output);
    assert_eq!(streams(&probe, "video")[0]["codec_name"], "h264");
    assert_eq!(streams(&probe, "audio")[0]["codec_name"], "aac");

    assert!(matches!(events.first(), Some(ChildEvent::Probed(info)) if info.video_codec == "h264"));
    let fractions: Vec<f64> = events[1..]
        .iter()
        .map(|event| match event {
            ChildEvent::Progress { fraction, .. } => *fraction,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
    assert!(
        *fractions.last().expect("some progress") >= 0.99,
        "{fractions:?}"
    );
}

#[tokio::test]
async fn child_failures_arrive_with_their_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::truncated(), &dir, EncodeOptions::default());
    let err = driver::run(&child(), &job, STALL, |_| {})
        .await
        .expect_err("a truncated file fails");
    assert_eq!(err.code, ErrorCode::InvalidMedia);
    assert!(
        err.message.contains("moov atom not found"),
        "{}",
        err.message
    );
    assert!(!job.output.exists());
}

#[tokio::test]
async fn a_crash_is_reported_with_its_signal() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    let mut probed = false;
    let err = driver::run(&faulty_child("crash"), &job, STALL, |event| {
        probed |= matches!(event, ChildEvent::Probed(_));
    })
    .await
    .expect_err("the child aborts");
    assert!(probed, "events before the crash are delivered");
    assert_eq!(err.code, ErrorCode::TranscoderCrashed);
    assert!(
        err.message.starts_with("the transcoder crashed (signal 6)"),
        "{}",
        err.message
    );
    assert!(!job.output.exists(), "a partial output is removed");
}

#[tokio::test]
async fn a_hang_is_stopped_after_the_stall_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    let started = Instant::now();
    let err = driver::run(
        &faulty_child("hang"),
        &job,
        Duration::from_millis(1500),
        |_| {},
    )
    .await
    .expect_err("the child hangs");
    let elapsed = started.elapsed();
    assert_eq!(err.code, ErrorCode::TranscodeStalled, "{err:?}");
    assert!(err.message.contains("no progress"), "{}", err.message);
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "stopped after {elapsed:?}"
    );
    assert!(!job.output.exists());
}

#[tokio::test]
async fn malformed_output_is_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    let started = Instant::now();
    let err = driver::run(
        &fake_child("echo this is not json; sleep 30"),
        &job,
        STALL,
        |_| {},
    )
    .await
    .expect_err("not an event");
    assert_eq!(err.code, ErrorCode::TranscoderCrashed);
    assert!(err.message.contains("malformed"), "{}", err.message);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the child is killed, not awaited"
    );
}

#[tokio::test]
async fn an_exit_without_outcome_is_a_crash_with_the_last_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    let err = driver::run(
        &fake_child("echo decoder exploded >&2; exit 7"),
        &job,
        STALL,
        |_| {},
    )
    .await
    .expect_err("no outcome");
    assert_eq!(err.code, ErrorCode::TranscoderCrashed);
    assert_eq!(
        err.message,
        "the transcoder exited unexpectedly (exit code 7): decoder exploded"
    );
}

#[tokio::test]
async fn a_missing_program_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    let cmd = ChildCommand {
        program: PathBuf::from("/nonexistent/vidpress"),
        args: Vec::new(),
    };
    let err = driver::run(&cmd, &job, STALL, |_| {})
        .await
        .expect_err("cannot spawn");
    assert_eq!(err.code, ErrorCode::Io);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_future_kills_the_child_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    // Slow settings on 10 s of 640x360: many seconds of work.
    let options = EncodeOptions {
        preset: Preset::Veryslow,
        crf: Some(12),
        ..Default::default()
    };
    let job = job(fixtures::long(), &dir, options);
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
    let cmd = child();
    let mut run = Box::pin(driver::run(&cmd, &job, STALL, move |event| {
        if matches!(event, ChildEvent::Progress { .. }) {
            let _ = progress_tx.send(());
        }
    }));

    tokio::select! {
        result = &mut run => panic!("finished before it could be cancelled: {result:?}"),
        _ = progress_rx.recv() => {}
    }
    let pid = find_child(&job.output).expect("the child process is running");
    assert!(is_running(pid));

    drop(run);
    let cancelled = Instant::now();
    while is_running(pid) {
        assert!(
            cancelled.elapsed() < Duration::from_secs(1),
            "child {pid} still running 1 s after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!job.output.exists(), "the partial output is removed");
}

/// Finds our child process whose command line mentions `marker`.
fn find_child(marker: &Path) -> Option<u32> {
    let me = std::process::id();
    let marker = marker.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let (_, ppid) = fixtures::stat(pid)?;
            (ppid == me && String::from_utf8_lossy(&cmdline).contains(&marker)).then_some(pid)
        })
}

/// Returns whether `pid` exists and is not a zombie (a zombie uses no CPU).
fn is_running(pid: u32) -> bool {
    fixtures::stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Runs the child binary on `job` directly (no driver, so no resource
/// limits) and returns its events, its peak resident memory in KiB and how
/// long it ran. The peak comes from wait4, for this child alone.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports its peak memory"
)]
fn run_measured(job: &TranscodeJob) -> (Vec<ChildEvent>, u64, Duration) {
    use std::io::Read;
    let started = Instant::now();
    let mut child = std::process::Command::new(CHILD)
        .arg(serde_json::to_string(job).unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the child");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (std never waited for it).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 on the child");
    let elapsed = started.elapsed();
    let events = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event line"))
        .collect();
    (events, usage.ru_maxrss as u64, elapsed)
}

#[tokio::test]
async fn a_decompression_bomb_fails_at_probe_fast_and_costs_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let options = EncodeOptions {
        preset: Preset::Veryslow,
        crf: Some(0),
        ..Default::default()
    };
    for input in [fixtures::bomb(), fixtures::lying_bomb()] {
        let job = job(input.clone(), &dir, options);
        let mut events = Vec::new();
        let started = Instant::now();
        let err = driver::run(&child(), &job, STALL, |event| events.push(event))
            .await
            .expect_err("over the pixel limit");
        let elapsed = started.elapsed();
        assert_eq!(
            err.code,
            ErrorCode::LimitsExceeded,
            "{}: {err:?}",
            input.display()
        );
        assert!(
            err.message.contains("8192x8192") && err.message.ends_with("(--max-pixels)"),
            "{}",
            err.message
        );
        assert!(events.is_empty(), "refused at probe: {events:?}");
        assert!(elapsed < Duration::from_secs(5), "failed after {elapsed:?}");

        // One decoded 8192x8192 picture alone is 96 MiB; the child stays
        // near what it needs to start (about 50 MiB).
        let (events, peak_kib, _) = run_measured(&job);
        assert!(
            matches!(events.as_slice(), [ChildEvent::Failed(err)] if err.code == ErrorCode::LimitsExceeded),
            "{events:?}"
        );
        assert!(
            peak_kib < 120 * 1024,
            "{}: the child peaked at {} MiB",
            input.display(),
            peak_kib / 1024
        );
    }
}

#[tokio::test]
async fn a_child_out_of_memory_fails_with_limits_exceeded_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = EncodeOptions {
        preset: Preset::Veryslow,
        crf: Some(0),
        ..Default::default()
    };
    // The bomb's pictures allowed, the memory for them not. At 400 MiB the
    // decoder runs out (the child maps about 250 MiB of code and libraries,
    // a picture needs 96 MiB more); at the default 2 GiB, x264 does (it
    // wants gigabytes for its lookahead at 8192x8192).
    for (memory, limit) in [(400 << 20, "400 MiB"), (2 << 30, "2 GiB")] {
        let mut job = job(fixtures::bomb(), &dir, options);
        job.limits = Limits {
            max_pixels: 8192 * 8192,
            max_memory_bytes: memory,
            ..Limits::default()
        };
        let started = Instant::now();
        let err = driver::run(&child(), &job, STALL, |_| {})
            .await
            .expect_err("out of memory");
        let elapsed = started.elapsed();
        assert_eq!(err.code, ErrorCode::LimitsExceeded, "{err:?}");
        assert_eq!(
            err.message,
            format!(
                "the transcode needed more memory than the limit of {limit} (--max-child-memory-bytes)"
            )
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "failed after {elapsed:?}"
        );
        assert!(!job.output.exists());
    }
}

#[tokio::test]
async fn a_rust_allocation_failure_in_the_child_is_a_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    let started = Instant::now();
    let err = driver::run(
        &fake_child("echo 'memory allocation of 33554432 bytes failed' >&2; kill -ABRT $$"),
        &job,
        STALL,
        |_| {},
    )
    .await
    .expect_err("the child aborts");
    assert_eq!(err.code, ErrorCode::LimitsExceeded, "{err:?}");
    assert_eq!(
        err.message,
        "the transcode needed more memory than the limit of 2 GiB (--max-child-memory-bytes)"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_runs_under_the_jobs_resource_limits_without_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = job(fixtures::mp4_with_audio(), &dir, EncodeOptions::default());
    job.limits = Limits {
        max_memory_bytes: (3 << 30) + (5 << 20),
        max_open_files: 777,
        ..Limits::default()
    };
    let (probed_tx, mut probed_rx) = tokio::sync::mpsc::unbounded_channel();
    let cmd = faulty_child("hang");
    let mut run = Box::pin(driver::run(&cmd, &job, STALL, move |event| {
        if matches!(event, ChildEvent::Probed(_)) {
            let _ = probed_tx.send(());
        }
    }));
    tokio::select! {
        result = &mut run => panic!("the hanging child ended: {result:?}"),
        _ = probed_rx.recv() => {}
    }
    let pid = find_child(&job.output).expect("the child process is running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    // A job's own work yields to the node's.
    assert_eq!(fixtures::niceness(pid), Some(10));
    drop(run);

    let limit = |name: &str| -> (String, String) {
        let line = limits
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} in {limits}"));
        let mut fields = line[name.len()..].split_whitespace();
        (
            fields.next().unwrap().to_owned(),
            fields.next().unwrap().to_owned(),
        )
    };
    let address_space = ((3u64 << 30) + (5 << 20)).to_string();
    assert_eq!(
        limit("Max address space"),
        (address_space.clone(), address_space)
    );
    assert_eq!(limit("Max open files"), ("777".into(), "777".into()));
    assert_eq!(limit("Max core file size"), ("0".into(), "0".into()));
}

/// A probe job (`Task::Probe`): its output is the thumbnail.
fn probe_job(input: PathBuf, dir: &TempDir) -> TranscodeJob {
    TranscodeJob {
        output: dir.path().join("thumbnail.jpg"),
        task: Task::Probe,
        ..job(input, dir, EncodeOptions::default())
    }
}

#[tokio::test]
async fn a_probe_reports_the_media_and_writes_a_small_jpeg_faults_aside() {
    let dir = tempfile::tempdir().unwrap();
    let job = probe_job(fixtures::mp4_with_audio(), &dir);
    let mut events = Vec::new();
    // The crash fault is a transcode's: a probe runs to its end anyway.
    let bytes = driver::run(&faulty_child("crash"), &job, STALL, |event| {
        events.push(event)
    })
    .await
    .expect("the probe succeeds")
    .bytes;

    assert!(
        matches!(events.as_slice(), [ChildEvent::Probed(info)] if info.video_codec == "h264"),
        "{events:?}"
    );
    let jpeg = std::fs::read(&job.output).unwrap();
    assert_eq!(bytes, jpeg.len() as u64);
    assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
    let probe = ffprobe(&job.output);
    let picture = &streams(&probe, "video")[0];
    assert_eq!(picture["codec_name"], "mjpeg");
    assert!(picture["width"].as_u64().unwrap() <= 320, "{picture}");
    assert_eq!(picture["pix_fmt"], "yuvj420p");
}

#[tokio::test]
async fn a_probe_of_a_bad_input_fails_with_its_code_and_leaves_no_file() {
    for (input, code) in [
        (fixtures::garbage(), ErrorCode::InvalidMedia),
        (fixtures::audio_only(), ErrorCode::NoVideoStream),
        (fixtures::bomb(), ErrorCode::LimitsExceeded),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let job = probe_job(input.clone(), &dir);
        let err = driver::run(&child(), &job, STALL, |_| {})
            .await
            .expect_err("not a probe-able video");
        assert_eq!(err.code, code, "{}: {err:?}", input.display());
        assert!(!job.output.exists(), "{}", input.display());
    }
}

#[tokio::test]
async fn a_thumbnail_is_turned_as_a_player_shows_the_video() {
    let dir = tempfile::tempdir().unwrap();
    // 320x240 as coded, turned 90 degrees for display, as phones write.
    let job = probe_job(fixtures::rotated(), &dir);
    driver::run(&child(), &job, STALL, |_| {})
        .await
        .expect("the probe succeeds");
    let probe = ffprobe(&job.output);
    let picture = &streams(&probe, "video")[0];
    assert_eq!(
        (&picture["width"], &picture["height"]),
        (&240.into(), &320.into())
    );
}
