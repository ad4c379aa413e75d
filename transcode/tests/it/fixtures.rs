//! Test inputs, generated with the ffmpeg CLI from its `testsrc2` and `sine`
//! sources (or written byte by byte), cached under Cargo's per-target temp
//! directory so a rerun does not regenerate them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// Serializes generation: tests run in parallel and may want the same file.
static GENERATE: Mutex<()> = Mutex::new(());

/// Bump when a recipe changes, so stale cached files are not reused.
const VERSION: &str = "v1";

fn dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("vidpress-transcode-fixtures")
        .join(VERSION);
    std::fs::create_dir_all(&dir).expect("create the fixture directory");
    dir
}

/// Returns `dir()/name`, running `make` to create it on first use. `make`
/// writes to the path it is given; the result is renamed into place so a
/// failed or interrupted run never leaves a half-written fixture. nextest
/// runs tests in parallel processes, which the lock does not serialize:
/// each process writes its own partial file (two may make the same
/// fixture; the last rename wins, with a whole file either way).
fn cached(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let _lock = GENERATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = dir().join(name);
    if !path.exists() {
        let partial = dir().join(format!("partial.{}.{name}", std::process::id()));
        make(&partial);
        assert!(partial.exists(), "fixture {name} was not generated");
        std::fs::rename(&partial, &path).expect("move the fixture into place");
    }
    path
}

/// Runs `ffmpeg -y <args> <out>`, failing the test with ffmpeg's stderr.
pub fn ffmpeg(name: &str, args: &str) -> PathBuf {
    cached(name, |out| {
        let output = Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-y"])
            .args(args.split_whitespace())
            .arg(out)
            .output()
            .expect("run ffmpeg");
        assert!(
            output.status.success(),
            "ffmpeg {args} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    })
}

const VIDEO_320: &str = "-f lavfi -i testsrc2=size=320x240:rate=30";
const VIDEO_160: &str = "-f lavfi -i testsrc2=size=160x120:rate=30";
const SINE_48K: &str = "-f lavfi -i sine=frequency=440:sample_rate=48000";

/// MP4, H.264 at a high quality (so re-encoding shrinks it) + AAC, 2 s.
pub fn mp4_with_audio() -> PathBuf {
    ffmpeg(
        "av.mp4",
        &format!("{VIDEO_320} {SINE_48K} -t 2 -c:v libx264 -preset ultrafast -crf 10 -pix_fmt yuv420p -c:a aac -b:a 128k -f mp4"),
    )
}

/// QuickTime, Motion JPEG (full-range yuvj422p) + 16-bit PCM, 2 s.
pub fn mov() -> PathBuf {
    ffmpeg(
        "av.mov",
        &format!("{VIDEO_160} {SINE_48K} -t 2 -c:v mjpeg -q:v 3 -c:a pcm_s16le -f mov"),
    )
}

/// Matroska, MPEG-4 Part 2 + FLAC stereo at 44.1 kHz, 2 s.
pub fn mkv() -> PathBuf {
    ffmpeg(
        "av.mkv",
        &format!("{VIDEO_320} -f lavfi -i sine=frequency=300:sample_rate=44100 -t 2 -ac 2 -c:v mpeg4 -q:v 2 -c:a flac -f matroska"),
    )
}

/// Matroska, MPEG-4 Part 2 + six channels of 22.05 kHz PCM whose layout
/// the container leaves unknown, 2 s.
pub fn surround_unknown_layout() -> PathBuf {
    ffmpeg(
        "surround.mkv",
        &format!("{VIDEO_160} -f lavfi -i sine=frequency=440:sample_rate=22050 -t 2 -filter_complex [1:a]pan=5.1(side)|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0[a] -map 0:v -map [a] -c:v mpeg4 -c:a pcm_s16le -f matroska"),
    )
}

/// WebM, VP9 + Opus, 2 s.
pub fn webm() -> PathBuf {
    ffmpeg(
        "av.webm",
        &format!("{VIDEO_160} {SINE_48K} -t 2 -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 300k -c:a libopus -b:a 48k -f webm"),
    )
}

/// AVI, MPEG-4 Part 2 + MP3, 2 s.
pub fn avi() -> PathBuf {
    ffmpeg(
        "av.avi",
        &format!("{VIDEO_160} {SINE_48K} -t 2 -c:v mpeg4 -q:v 3 -c:a libmp3lame -b:a 64k -f avi"),
    )
}

/// MP4 with video only, 2 s.
pub fn video_only() -> PathBuf {
    ffmpeg(
        "video.mp4",
        &format!("{VIDEO_320} -t 2 -c:v libx264 -preset ultrafast -crf 20 -pix_fmt yuv420p -f mp4"),
    )
}

/// 321x241 (odd both ways) FFV1 in Matroska, 1 s. testsrc2 only makes
/// even sizes and 4:2:0 crops round to even, hence 4:4:4 and a crop.
pub fn odd_dimensions() -> PathBuf {
    ffmpeg(
        "odd-321x241.mkv",
        "-f lavfi -i testsrc2=size=322x242:rate=25 -t 1 -vf format=yuv444p,crop=321:241:0:0 -c:v ffv1 -f matroska",
    )
}

/// Variable frame rate: 30 fps for a second, then every third frame, with
/// audio, 3 s, in Matroska with the gaps kept.
pub fn variable_frame_rate() -> PathBuf {
    ffmpeg(
        "vfr.mkv",
        &format!("{VIDEO_320} {SINE_48K} -t 3 -vf select=lt(n\\,30)+not(mod(n\\,3)) -fps_mode vfr -c:v libx264 -preset ultrafast -crf 20 -pix_fmt yuv420p -c:a libopus -f matroska"),
    )
}

/// Audio only (AAC in an M4A), 2 s.
pub fn audio_only() -> PathBuf {
    ffmpeg("audio.m4a", &format!("{SINE_48K} -t 2 -c:a aac -f ipod"))
}

/// A 10000x16 video, wider than anything accepted, one second of FFV1.
pub fn too_wide() -> PathBuf {
    ffmpeg(
        "wide.mkv",
        "-f lavfi -i color=c=red:size=10000x16:rate=5 -t 1 -c:v ffv1 -f matroska",
    )
}

/// MP4 whose display matrix says "rotate 90° clockwise", 320x240 coded,
/// as phones write portrait video. (FFmpeg 5.1 has no option for this, so
/// the matrix in the track header is patched in.)
pub fn rotated() -> PathBuf {
    let upright = ffmpeg(
        "upright.mp4",
        &format!("{VIDEO_320} -t 1 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mp4"),
    );
    cached("rotated.mp4", |out| {
        let mut bytes = std::fs::read(&upright).expect("read the mp4 fixture");
        let tkhd = find_box(&bytes, &["moov", "trak", "tkhd"]).expect("a track header");
        let version = bytes[tkhd];
        let matrix = tkhd + if version == 1 { 52 } else { 40 };
        // 16.16 fixed point a, b, u, c, d, v and 2.30 x, y, w: a 90° turn.
        let rotate_90: [i32; 9] = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x4000_0000];
        for (i, value) in rotate_90.iter().enumerate() {
            bytes[matrix + 4 * i..matrix + 4 * i + 4].copy_from_slice(&value.to_be_bytes());
        }
        std::fs::write(out, bytes).expect("write the rotated mp4");
    })
}

/// A decompression bomb: 4 black frames of 8192x8192 H.264 (64 Mpixels,
/// about 100 MB each decoded) in a file of about 200 KB. Slow to make
/// (seconds), so made once.
pub fn bomb() -> PathBuf {
    ffmpeg(
        "bomb-8192.mp4",
        "-f lavfi -i color=c=black:size=8192x8192:rate=2 -frames:v 4 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mp4",
    )
}

/// The bomb with a lying header: its sample description and track header
/// say 320x240, while its H.264 pictures are 8192x8192.
pub fn lying_bomb() -> PathBuf {
    let bomb = bomb();
    cached("bomb-says-320x240.mp4", |out| {
        let mut bytes = std::fs::read(&bomb).expect("read the bomb");
        let stsd = find_box(&bytes, &["moov", "trak", "mdia", "minf", "stbl", "stsd"])
            .expect("a sample description");
        // After the version, flags and entry count: the avc1 entry, whose
        // width and height follow 24 bytes of other fields.
        let entry = stsd + 8;
        assert_eq!(&bytes[entry + 4..entry + 8], b"avc1");
        bytes[entry + 32..entry + 34].copy_from_slice(&320u16.to_be_bytes());
        bytes[entry + 34..entry + 36].copy_from_slice(&240u16.to_be_bytes());
        let tkhd = find_box(&bytes, &["moov", "trak", "tkhd"]).expect("a track header");
        let size = tkhd + if bytes[tkhd] == 1 { 88 } else { 76 };
        bytes[size..size + 4].copy_from_slice(&(320u32 << 16).to_be_bytes());
        bytes[size + 4..size + 8].copy_from_slice(&(240u32 << 16).to_be_bytes());
        std::fs::write(out, bytes).expect("write the lying bomb");
    })
}

/// The 2 s video-only MP4 whose movie header declares 20000 s, more than
/// the default duration limit (14400 s).
pub fn declares_20000_seconds() -> PathBuf {
    let whole = video_only();
    cached("declares-20000s.mp4", |out| {
        let mut bytes = std::fs::read(&whole).expect("read the mp4 fixture");
        let mvhd = find_box(&bytes, &["moov", "mvhd"]).expect("a movie header");
        assert_eq!(bytes[mvhd], 0, "a version 0 movie header");
        let timescale = u32::from_be_bytes(bytes[mvhd + 12..mvhd + 16].try_into().unwrap());
        let duration = timescale.checked_mul(20_000).expect("a duration that fits");
        bytes[mvhd + 16..mvhd + 20].copy_from_slice(&duration.to_be_bytes());
        std::fs::write(out, bytes).expect("write the mp4");
    })
}

/// 3 s of raw H.264 (an elementary stream): no header declares a duration.
pub fn raw_h264() -> PathBuf {
    ffmpeg(
        "raw-3s.h264",
        &format!("{VIDEO_160} -t 3 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f h264"),
    )
}

/// Returns the offset of the payload of the box at `path` (first match at
/// each level) in an ISO-BMFF file.
fn find_box(bytes: &[u8], path: &[&str]) -> Option<usize> {
    let (mut start, mut end) = (0usize, bytes.len());
    for name in path {
        let mut at = start;
        let mut found = None;
        while at + 8 <= end {
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
            if size < 8 {
                return None;
            }
            if &bytes[at + 4..at + 8] == name.as_bytes() {
                found = Some((at + 8, at + size));
                break;
            }
            at += size;
        }
        (start, end) = found?;
    }
    Some(start)
}

/// 10 s of 640x360, long enough to still be encoding when a test cancels.
pub fn long() -> PathBuf {
    ffmpeg(
        "long.mp4",
        &format!("-f lavfi -i testsrc2=size=640x360:rate=30 {SINE_48K} -t 10 -c:v libx264 -preset ultrafast -crf 18 -pix_fmt yuv420p -c:a aac -f mp4"),
    )
}

/// 64 KiB of deterministic noise.
pub fn garbage() -> PathBuf {
    cached("garbage.bin", |out| {
        std::fs::write(out, noise(65_536)).expect("write garbage");
    })
}

/// Deterministic pseudo-random bytes (xorshift32): reproducible, and not
/// any container's magic.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// A zero-byte `.mp4`.
pub fn empty() -> PathBuf {
    cached("empty.mp4", |out| {
        std::fs::write(out, b"").expect("write empty file");
    })
}

/// The first half of an MP4 whose index (moov) is at the end, so the index
/// is missing.
pub fn truncated() -> PathBuf {
    let whole = mp4_with_audio();
    cached("truncated.mp4", |out| {
        let bytes = std::fs::read(&whole).expect("read the mp4 fixture");
        assert_eq!(
            top_level_boxes(&bytes).last().map(String::as_str),
            Some("moov"),
            "the fixture must keep its index at the end"
        );
        std::fs::write(out, &bytes[..bytes.len() / 2]).expect("write truncated file");
    })
}

/// The MP4 fixture with 4 KiB of noise written over the middle of its media
/// data: the container is intact, some frames are not.
pub fn corrupt_frames() -> PathBuf {
    let whole = mp4_with_audio();
    cached("corrupt.mp4", |out| {
        let mut bytes = std::fs::read(&whole).expect("read the mp4 fixture");
        let mdat = find_box(&bytes, &["mdat"]).expect("a media data box");
        let start = mdat + (bytes.len() - mdat) / 3;
        let noise = noise(4096);
        bytes[start..start + noise.len()].copy_from_slice(&noise);
        std::fs::write(out, bytes).expect("write the corrupt mp4");
    })
}

/// MPEG-TS, which starts its clock at 1.4 s rather than 0, 1 s of H.264.
pub fn mpegts() -> PathBuf {
    ffmpeg(
        "segment.ts",
        &format!("{VIDEO_160} -t 1 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mpegts"),
    )
}

/// An HLS playlist next to the local MPEG-TS segment it lists.
pub fn hls_playlist() -> PathBuf {
    let segment = mpegts();
    cached("playlist.m3u8", |out| {
        let playlist = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n",
            segment.display()
        );
        std::fs::write(out, playlist).expect("write playlist");
    })
}

/// An ffconcat script listing a real local MP4.
pub fn concat_script() -> PathBuf {
    let part = mp4_with_audio();
    cached("list.ffconcat", |out| {
        let script = format!("ffconcat version 1.0\nfile '{}'\n", part.display());
        std::fs::write(out, script).expect("write concat script");
    })
}

/// Returns the names of an ISO-BMFF file's top-level boxes, in order.
pub fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as u64;
        names.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
        let size = match size {
            0 => break,
            1 if at + 16 <= bytes.len() => {
                let mut large = [0u8; 8];
                large.copy_from_slice(&bytes[at + 8..at + 16]);
                u64::from_be_bytes(large)
            }
            size => size,
        };
        at = at.saturating_add(size as usize);
    }
    names
}

/// Runs ffprobe on `path` and returns its JSON (`streams` and `format`).
pub fn ffprobe(path: &Path) -> Value {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        output.status.success(),
        "ffprobe {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe prints JSON")
}

/// Returns the container duration ffprobe reports, in seconds.
pub fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a format duration")
}

/// Returns the streams of one kind (`"video"`, `"audio"`).
pub fn streams<'a>(probe: &'a Value, kind: &str) -> Vec<&'a Value> {
    probe["streams"]
        .as_array()
        .map(|streams| {
            streams
                .iter()
                .filter(|stream| stream["codec_type"] == kind)
                .collect()
        })
        .unwrap_or_default()
}

/// Returns the scheduling niceness of `pid` from /proc.
pub fn niceness(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state, ppid, ... nice is the 17th field.
    stat[stat.rfind(')')? + 2..]
        .split(' ')
        .nth(16)?
        .parse()
        .ok()
}

/// Returns the state letter and parent pid of `pid` from /proc.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}
