//! Generated fixtures: made by the `ffmpeg` CLI from its `testsrc2`, `sine`
//! and `color` sources, cached under `target/tmp/fixtures` (the same cache
//! and names as the `it` tests, so a clip is made once for both).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns a fixture made by `ffmpeg` with `args` (the output path is
/// appended), cached by name.
fn fixture(name: &str, args: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    // Test binaries run at once: write aside, then rename atomically.
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("bin");
    let tmp = dir.join(format!("{name}.{}.tmp.{ext}", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&tmp)
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(status.success(), "ffmpeg failed to make fixture {name}");
    std::fs::rename(&tmp, &path).expect("fixture rename");
    path
}

/// A one-second 320x240 clip with audio: the "normal small job".
pub fn small_clip() -> PathBuf {
    fixture(
        "clip-1s.mp4",
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
            "1",
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

/// A 60-second 720p clip: a job that is still encoding long after it starts,
/// and a real container to begin uploads with.
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

/// The decompression bomb: about 200 KB of twenty 8192x8192 black frames
/// (the had 60 frames in as many bytes; twenty take a third of the
/// time to make and decode to the same frame size).
pub fn bomb() -> PathBuf {
    fixture(
        "bomb-8192x8192.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=black:s=8192x8192:r=2",
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}
