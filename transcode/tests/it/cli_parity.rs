//! The service is measured against the ffmpeg CLI with the same settings:
//! x264 must be configured identically and the output size be within 2 %.

use std::path::Path;
use std::process::Command;

use vidpress_transcode::engine;
use vidpress_transcode::{EncodeOptions, TranscodeJob};

use crate::fixtures;

/// Returns the settings line libx264 embeds in its first SEI message
/// ("x264 - core 164 … options: cabac=1 ref=1 …").
fn x264_settings(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read output");
    let marker = b"x264 - core";
    let start = bytes
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("an x264 settings SEI");
    let end = bytes[start..]
        .iter()
        .position(|byte| *byte == 0)
        .map_or(bytes.len(), |len| start + len);
    String::from_utf8_lossy(&bytes[start..end]).into_owned()
}

#[test]
fn output_matches_the_ffmpeg_cli() {
    // 300 frames: more than one 250-frame GOP, so GOP settings show.
    let input = fixtures::long();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.mp4");
    let theirs = dir.path().join("theirs.mp4");

    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y", "-i"])
        .arg(&input)
        .args(
            "-c:v libx264 -preset veryfast -crf 28 -c:a aac -b:a 96k -movflags +faststart"
                .split(' '),
        )
        .arg(&theirs)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());

    let job = TranscodeJob {
        input,
        output: ours.clone(),
        options: EncodeOptions::default(),
        limits: Default::default(),
        task: Default::default(),
    };
    let bytes = engine::transcode(&job, &mut |_| {})
        .expect("transcode")
        .bytes;

    assert_eq!(x264_settings(&ours), x264_settings(&theirs));
    let reference = std::fs::metadata(&theirs).unwrap().len();
    let ratio = bytes as f64 / reference as f64;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "ours {bytes} bytes, ffmpeg {reference} bytes (ratio {ratio:.4})"
    );
}
