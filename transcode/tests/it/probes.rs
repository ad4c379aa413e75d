//! Probes served by long-lived children (`driver::ProbeChildren`) against
//! the real child binary: one child serves probe after probe under the
//! job's limits; a hostile input fails its own probe only; a child that
//! crashes, hangs, babbles, runs out of memory or dies while idle costs at
//! most the probe it was on, and the next probe gets a new child.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vidpress_transcode::driver::{ChildCommand, ProbeChildren};
use vidpress_transcode::{ChildEvent, ErrorCode, Limits, MediaInfo, Output, TranscodeError};

use crate::fixtures;

const CHILD: &str = env!("CARGO_BIN_EXE_vidpress-transcode-child");
const STALL: Duration = Duration::from_secs(30);

/// The child, with `marker` (and `fault`, if any) in its environment, so
/// that a test finds its own children only.
fn child(marker: &str, fault: Option<&str>) -> ChildCommand {
    let mut args = vec![OsString::from(format!("VIDPRESS_TEST_MARKER={marker}"))];
    if let Some(fault) = fault {
        args.push(format!("VIDPRESS_TRANSCODE_FAULT={fault}").into());
    }
    args.push(CHILD.into());
    ChildCommand {
        program: PathBuf::from("/usr/bin/env"),
        args,
    }
}

/// A shell script standing in for the child (`$1` is the child's argument).
fn fake_child(script: &str) -> ChildCommand {
    ChildCommand {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into(), "fake-child".into()],
    }
}

/// Probes `input` into `dir`'s `name`; returns the outcome, what the probe
/// found and the thumbnail's path.
async fn probe(
    children: &ProbeChildren,
    input: PathBuf,
    dir: &TempDir,
    name: &str,
) -> (Result<Output, TranscodeError>, Option<MediaInfo>, PathBuf) {
    let thumbnail = dir.path().join(name);
    let mut media = None;
    let result = children
        .probe(input, thumbnail.clone(), |event| {
            if let ChildEvent::Probed(found) = event {
                media = Some(found);
            }
        })
        .await;
    (result, media, thumbnail)
}

/// Asserts the probe made a JPEG thumbnail of the size it reported.
fn assert_thumbnail(result: &Result<Output, TranscodeError>, thumbnail: &Path) {
    let output = result.as_ref().expect("the probe succeeds");
    let jpeg = std::fs::read(thumbnail).expect("the thumbnail is written");
    assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]), "not a JPEG");
    assert_eq!(output.bytes, jpeg.len() as u64);
}

/// Our running children whose environment holds `marker`.
fn children_marked(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let needle = format!("VIDPRESS_TEST_MARKER={marker}");
    let mut found: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let (state, ppid) = fixtures::stat(pid)?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let marked = environ
                .split(|&b| b == 0)
                .any(|var| var == needle.as_bytes());
            (ppid == me && marked && state != 'Z' && state != 'X').then_some(pid)
        })
        .collect();
    found.sort_unstable();
    found
}

/// Waits up to a second for `pid` to be gone (or a zombie).
async fn assert_gone(pid: u32) {
    let started = Instant::now();
    while fixtures::stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X') {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "child {pid} still running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_child_serves_probe_after_probe_under_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_memory_bytes: (3 << 30) + (7 << 20),
        max_open_files: 555,
        ..Limits::default()
    };
    let children = ProbeChildren::new(child("serves", None), limits, STALL);
    let mut pids = Vec::new();
    for (i, input) in [
        fixtures::mp4_with_audio(),
        fixtures::mkv(),
        fixtures::webm(),
    ]
    .into_iter()
    .enumerate()
    {
        let (result, media, thumbnail) =
            probe(&children, input.clone(), &dir, &format!("{i}.jpg")).await;
        assert_thumbnail(&result, &thumbnail);
        let media = media.expect("the media is reported");
        assert!(media.width > 0 && media.height > 0, "{media:?}");
        pids.push(children_marked("serves"));
    }
    assert_eq!(pids[0].len(), 1, "one child: {pids:?}");
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "the same child: {pids:?}"
    );

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pids[0][0])).unwrap();
    let line = |name: &str| {
        limits
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} in {limits}"))
            .split_whitespace()
            .filter(|field| field.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let memory = ((3u64 << 30) + (7 << 20)).to_string();
    assert_eq!(line("Max address space"), [memory.clone(), memory]);
    assert_eq!(line("Max open files"), ["555", "555"]);
    assert_eq!(line("Max core file size"), ["0", "0"]);
    // Below the node's own work, as an encode.
    assert_eq!(fixtures::niceness(pids[0][0]), Some(10));
}

#[tokio::test]
async fn hostile_inputs_fail_their_own_probe_and_the_child_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let children = ProbeChildren::new(child("hostile", None), Limits::default(), STALL);
    let cases = [
        (fixtures::garbage(), ErrorCode::InvalidMedia),
        (fixtures::truncated(), ErrorCode::InvalidMedia),
        (fixtures::bomb(), ErrorCode::LimitsExceeded),
        (fixtures::audio_only(), ErrorCode::NoVideoStream),
    ];
    let mut pids = Vec::new();
    for (i, (input, code)) in cases.into_iter().enumerate() {
        let (result, _, thumbnail) =
            probe(&children, input.clone(), &dir, &format!("{i}.jpg")).await;
        let err = result.expect_err("a hostile input fails");
        assert_eq!(err.code, code, "{}: {err:?}", input.display());
        assert!(!thumbnail.exists(), "{}: no thumbnail", input.display());
        pids.push(children_marked("hostile"));
    }
    let (result, _, thumbnail) = probe(&children, fixtures::mp4_with_audio(), &dir, "ok.jpg").await;
    assert_thumbnail(&result, &thumbnail);
    pids.push(children_marked("hostile"));
    assert_eq!(pids[0].len(), 1, "{pids:?}");
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "the same child: {pids:?}"
    );
}

#[tokio::test]
async fn a_child_that_crashes_mid_probe_fails_that_probe_and_the_next_gets_a_new_child() {
    let dir = tempfile::tempdir().unwrap();
    // The first child started crashes on its first probe, after `probed`;
    // the ones after are sound.
    let armed = dir.path().join("armed");
    std::fs::write(&armed, b"").unwrap();
    let script = format!(
        "if rm '{}' 2>/dev/null; then export VIDPRESS_TRANSCODE_FAULT=crash-probe; fi; \
         exec '{CHILD}' \"$1\"",
        armed.display()
    );
    let children = ProbeChildren::new(fake_child(&script), Limits::default(), STALL);

    let (result, media, thumbnail) =
        probe(&children, fixtures::mp4_with_audio(), &dir, "crash.jpg").await;
    let err = result.expect_err("the child aborts");
    assert!(media.is_some(), "what came before the crash is delivered");
    assert_eq!(err.code, ErrorCode::TranscoderCrashed);
    assert!(
        err.message.starts_with("the transcoder crashed (signal 6)"),
        "{}",
        err.message
    );
    assert!(!thumbnail.exists());

    for i in 0..2 {
        let (result, media, thumbnail) = probe(
            &children,
            fixtures::mp4_with_audio(),
            &dir,
            &format!("{i}.jpg"),
        )
        .await;
        assert_thumbnail(&result, &thumbnail);
        assert!(media.is_some());
    }
}

#[tokio::test]
async fn a_hanging_probe_is_stopped_after_the_stall_timeout_and_its_child_killed() {
    let dir = tempfile::tempdir().unwrap();
    let stall = Duration::from_millis(1500);
    let children = ProbeChildren::new(child("hang", Some("hang-probe")), Limits::default(), stall);
    let started = Instant::now();
    let (result, media, thumbnail) =
        probe(&children, fixtures::mp4_with_audio(), &dir, "hang.jpg").await;
    let elapsed = started.elapsed();
    let err = result.expect_err("the child hangs");
    assert_eq!(err.code, ErrorCode::TranscodeStalled, "{err:?}");
    assert!(media.is_some());
    assert!(
        elapsed >= stall && elapsed < Duration::from_secs(10),
        "stopped after {elapsed:?}"
    );
    assert!(!thumbnail.exists());
    assert_eq!(
        children_marked("hang"),
        Vec::<u32>::new(),
        "the child is killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_probe_kills_its_child_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let children = ProbeChildren::new(child("drop", Some("hang-probe")), Limits::default(), STALL);
    let (probed_tx, mut probed_rx) = tokio::sync::mpsc::unbounded_channel();
    let thumbnail = dir.path().join("drop.jpg");
    let mut run = Box::pin(children.probe(
        fixtures::mp4_with_audio(),
        thumbnail.clone(),
        move |event| {
            if matches!(event, ChildEvent::Probed(_)) {
                let _ = probed_tx.send(());
            }
        },
    ));
    tokio::select! {
        result = &mut run => panic!("the hanging probe ended: {result:?}"),
        _ = probed_rx.recv() => {}
    }
    let pids = children_marked("drop");
    assert_eq!(pids.len(), 1, "{pids:?}");
    drop(run);
    assert_gone(pids[0]).await;
    assert!(!thumbnail.exists());
}

#[tokio::test]
async fn a_babbling_child_fails_the_probe_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let children = ProbeChildren::new(
        fake_child("read job; echo this is not json; sleep 30"),
        Limits::default(),
        STALL,
    );
    let started = Instant::now();
    let (result, _, _) = probe(&children, fixtures::mp4_with_audio(), &dir, "b.jpg").await;
    let err = result.expect_err("not an event");
    assert_eq!(err.code, ErrorCode::TranscoderCrashed);
    assert!(err.message.contains("malformed"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_probe_over_the_memory_limit_fails_and_the_next_is_served() {
    let dir = tempfile::tempdir().unwrap();
    // The bomb's pictures allowed, the memory for one not (the child maps
    // about 250 MiB of code and libraries, a picture needs 96 MiB more).
    // libav's decoder reports it as a picture it could not get a buffer
    // for, so the probe fails as one that decoded nothing.
    let limits = Limits {
        max_pixels: 8192 * 8192,
        max_memory_bytes: 320 << 20,
        ..Limits::default()
    };
    let children = ProbeChildren::new(child("memory", None), limits, STALL);
    let (result, _, thumbnail) = probe(&children, fixtures::bomb(), &dir, "bomb.jpg").await;
    result.expect_err("no memory for a picture");
    assert!(!thumbnail.exists());
    let (result, _, thumbnail) = probe(&children, fixtures::mp4_with_audio(), &dir, "ok.jpg").await;
    assert_thumbnail(&result, &thumbnail);
}

#[tokio::test]
async fn a_child_that_aborts_out_of_memory_fails_with_limits_exceeded_and_the_next_is_served() {
    let dir = tempfile::tempdir().unwrap();
    // The first child started reads its job and aborts as Rust does when
    // an allocation fails; the ones after are sound.
    let armed = dir.path().join("armed");
    std::fs::write(&armed, b"").unwrap();
    let script = format!(
        "if rm '{}' 2>/dev/null; then read job; \
         echo 'memory allocation of 33554432 bytes failed' >&2; kill -ABRT $$; fi; \
         exec '{CHILD}' \"$1\"",
        armed.display()
    );
    let children = ProbeChildren::new(fake_child(&script), Limits::default(), STALL);
    let (result, _, thumbnail) =
        probe(&children, fixtures::mp4_with_audio(), &dir, "oom.jpg").await;
    let err = result.expect_err("the child aborts");
    assert_eq!(err.code, ErrorCode::LimitsExceeded, "{err:?}");
    assert_eq!(
        err.message,
        "the transcode needed more memory than the limit of 2 GiB (--max-child-memory-bytes)"
    );
    assert!(!thumbnail.exists());
    let (result, _, thumbnail) = probe(&children, fixtures::mp4_with_audio(), &dir, "ok.jpg").await;
    assert_thumbnail(&result, &thumbnail);
}

#[tokio::test]
async fn a_kept_child_gone_while_idle_is_replaced_and_the_probe_served() {
    let dir = tempfile::tempdir().unwrap();
    let children = ProbeChildren::new(child("idle", None), Limits::default(), STALL);
    let (result, _, thumbnail) = probe(&children, fixtures::mp4_with_audio(), &dir, "1.jpg").await;
    assert_thumbnail(&result, &thumbnail);
    let pids = children_marked("idle");
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(pids[0] as libc::pid_t, libc::SIGKILL) },
        0
    );
    assert_gone(pids[0]).await;

    let (result, media, thumbnail) =
        probe(&children, fixtures::mp4_with_audio(), &dir, "2.jpg").await;
    assert_thumbnail(&result, &thumbnail);
    assert!(media.is_some());
    let now = children_marked("idle");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, pids, "a new child");
}
