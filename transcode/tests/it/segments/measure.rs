//! What the segment tests measure on a file, with the ffmpeg CLI: its
//! packets' timestamps (ffprobe), per-frame SSIM against the input (the
//! `ssim` filter's stats file), and where its index stands.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vidpress_transcode::Format;

use crate::fixtures::top_level_boxes;

/// One packet as ffprobe lists it, in its stream's time base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    pub pts: i64,
    pub dts: i64,
    pub duration: i64,
}

/// A stream's packets in file order and its time base in seconds a tick.
pub fn packets(path: &Path, stream: &str) -> (Vec<Stamp>, f64) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args(["-show_entries", "packet=pts,dts,duration:stream=time_base"])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(output.status.success(), "ffprobe {}", path.display());
    let json: Value = serde_json::from_slice(&output.stdout).expect("ffprobe prints JSON");
    let time_base = json["streams"][0]["time_base"]
        .as_str()
        .and_then(|tb| tb.split_once('/'))
        .map(|(num, den)| num.parse::<f64>().unwrap() / den.parse::<f64>().unwrap())
        .expect("a time base");
    let int = |packet: &Value, key: &str| packet[key].as_i64();
    let stamps = json["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|packet| Stamp {
            pts: int(packet, "pts").expect("a pts"),
            dts: int(packet, "dts").or(int(packet, "pts")).expect("a dts"),
            duration: int(packet, "duration").unwrap_or(0),
        })
        .collect();
    (stamps, time_base)
}

/// Where a stream starts and ends, in seconds.
pub fn span(stamps: &[Stamp], time_base: f64) -> (f64, f64) {
    let start = stamps.iter().map(|s| s.pts).min().unwrap_or(0);
    let end = stamps.iter().map(|s| s.pts + s.duration).max().unwrap_or(0);
    (start as f64 * time_base, end as f64 * time_base)
}

/// Per-frame SSIM ("All") of `output` against `input`, in display order.
pub fn ssim_per_frame(output: &Path, input: &Path, dir: &Path) -> Vec<f64> {
    let stats = dir.join("ssim.log");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(output)
        .arg("-i")
        .arg(input)
        .arg("-lavfi")
        .arg(format!("[0:v][1:v]ssim=stats_file={}", stats.display()))
        .args(["-f", "null", "-"])
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg ssim");
    std::fs::read_to_string(&stats)
        .expect("the SSIM log")
        .lines()
        .filter_map(|line| line.split_once("All:"))
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Checks the container puts its index in front, as a single pass does.
pub fn assert_index_in_front(path: &Path, format: Format) {
    let bytes = std::fs::read(path).unwrap();
    match format {
        Format::Mp4 => {
            let boxes = top_level_boxes(&bytes);
            let moov = boxes.iter().position(|b| b == "moov");
            let mdat = boxes.iter().position(|b| b == "mdat");
            assert!(moov.is_some() && moov < mdat, "{boxes:?}");
            assert_eq!(boxes.iter().filter(|b| *b == "moov").count(), 1);
        }
        Format::Webm => {
            let find = |id: [u8; 4]| bytes.windows(4).position(|w| w == id);
            let cues = find([0x1C, 0x53, 0xBB, 0x6B]);
            let cluster = find([0x1F, 0x43, 0xB6, 0x75]);
            assert!(cues.is_some() && cues < cluster, "{cues:?} {cluster:?}");
        }
    }
}
