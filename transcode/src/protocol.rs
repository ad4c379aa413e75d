//! The data that crosses the process boundary: what a transcode is asked to do
//! ([`TranscodeJob`], [`EncodeOptions`]) and what it may cost ([`Limits`]),
//! what the child reports while doing it ([`ChildEvent`]) and how it fails
//! ([`TranscodeError`]).
//!
//! Everything here is plain serde data with no ffmpeg types, so the parent side
//! (the driver, the actors, the HTTP layer) can use it without linking to
//! libav*. On the wire each [`ChildEvent`] is one JSON object on one line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

/// An x264 speed/compression trade-off, from fastest (`ultrafast`, biggest
/// files) to slowest (`veryslow`, smallest files at the same quality).
///
/// Serialized, displayed and parsed as x264's lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(IntoStaticStr, Display, EnumString)]
#[strum(
    serialize_all = "lowercase",
    parse_err_ty = OptionsError,
    parse_err_fn = OptionsError::unknown_preset
)]
pub enum Preset {
    /// x264 `ultrafast`.
    Ultrafast,
    /// x264 `superfast`.
    Superfast,
    /// x264 `veryfast`, the default: good compression at a few times real time.
    #[default]
    Veryfast,
    /// x264 `faster`.
    Faster,
    /// x264 `fast`.
    Fast,
    /// x264 `medium`, x264's own default.
    Medium,
    /// x264 `slow`.
    Slow,
    /// x264 `slower`.
    Slower,
    /// x264 `veryslow`.
    Veryslow,
}

impl Preset {
    /// Every preset, fastest first.
    pub const ALL: [Preset; 9] = [
        Preset::Ultrafast,
        Preset::Superfast,
        Preset::Veryfast,
        Preset::Faster,
        Preset::Fast,
        Preset::Medium,
        Preset::Slow,
        Preset::Slower,
        Preset::Veryslow,
    ];

    /// Returns the x264 name of the preset, e.g. `"veryfast"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How to encode the output: x264 quality and speed, an optional downscale,
/// and the AAC bit rate.
///
/// Missing JSON fields take their [`Default`] values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncodeOptions {
    /// x264 constant rate factor, 0 (lossless) to 51 (worst); default 28.
    pub crf: u8,
    /// x264 preset; default `veryfast`.
    pub preset: Preset,
    /// Downscale so the output is at most this many pixels high, keeping the
    /// aspect ratio (dimensions are rounded to even numbers). `None` keeps the
    /// input size. Never upscales.
    pub max_height: Option<u32>,
    /// AAC bit rate in kbit/s, 8 to 512; default 96.
    pub audio_bitrate_kbps: u32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            crf: 28,
            preset: Preset::Veryfast,
            max_height: None,
            audio_bitrate_kbps: 96,
        }
    }
}

impl EncodeOptions {
    /// Lowest accepted `crf`.
    pub const CRF_MIN: u8 = 0;
    /// Highest accepted `crf`.
    pub const CRF_MAX: u8 = 51;
    /// Lowest accepted `max_height`.
    pub const MAX_HEIGHT_MIN: u32 = 2;
    /// Highest accepted `max_height`.
    pub const MAX_HEIGHT_MAX: u32 = 8192;
    /// Lowest accepted `audio_bitrate_kbps`.
    pub const AUDIO_BITRATE_MIN: u32 = 8;
    /// Highest accepted `audio_bitrate_kbps`.
    pub const AUDIO_BITRATE_MAX: u32 = 512;

    /// Checks every option against its documented range.
    ///
    /// Returns the first option that is out of range.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(Self::CRF_MIN..=Self::CRF_MAX).contains(&self.crf) {
            return Err(OptionsError::Crf { value: self.crf });
        }
        if let Some(height) = self.max_height {
            if !(Self::MAX_HEIGHT_MIN..=Self::MAX_HEIGHT_MAX).contains(&height) {
                return Err(OptionsError::MaxHeight { value: height });
            }
        }
        if !(Self::AUDIO_BITRATE_MIN..=Self::AUDIO_BITRATE_MAX).contains(&self.audio_bitrate_kbps) {
            return Err(OptionsError::AudioBitrate {
                value: self.audio_bitrate_kbps,
            });
        }
        Ok(())
    }
}

/// An encode option outside its accepted range, or an unknown preset name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `crf` is above 51.
    #[error("crf must be between 0 and 51, got {value}")]
    Crf {
        /// The rejected value.
        value: u8,
    },
    /// `max_height` is outside 2..=8192.
    #[error("max_height must be between 2 and 8192, got {value}")]
    MaxHeight {
        /// The rejected value.
        value: u32,
    },
    /// `audio_bitrate` is outside 8..=512 kbit/s.
    #[error("audio_bitrate must be between 8 and 512 kbit/s, got {value}")]
    AudioBitrate {
        /// The rejected value.
        value: u32,
    },
    /// `preset` is not one of x264's preset names.
    #[error(
        "preset must be one of ultrafast, superfast, veryfast, faster, fast, medium, slow, \
         slower, veryslow, got {value:?}"
    )]
    UnknownPreset {
        /// The rejected name.
        value: String,
    },
}

impl OptionsError {
    /// Returns the error of a name that is no preset's.
    fn unknown_preset(value: &str) -> Self {
        OptionsError::UnknownPreset {
            value: value.to_owned(),
        }
    }

    /// Returns the name of the offending option as the HTTP API spells it:
    /// `"crf"`, `"max_height"`, `"audio_bitrate"` or `"preset"`.
    pub fn option(&self) -> &'static str {
        match self {
            OptionsError::Crf { .. } => "crf",
            OptionsError::MaxHeight { .. } => "max_height",
            OptionsError::AudioBitrate { .. } => "audio_bitrate",
            OptionsError::UnknownPreset { .. } => "preset",
        }
    }
}

/// What the transcoder learned about an input before encoding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Container duration in seconds, when the input declares one.
    pub duration_seconds: Option<f64>,
    /// Width of the video as displayed (after any rotation metadata).
    pub width: u32,
    /// Height of the video as displayed (after any rotation metadata).
    pub height: u32,
    /// libav name of the input video codec, e.g. `"h264"`, `"vp9"`.
    pub video_codec: String,
    /// Whether the input has an audio stream that will be encoded.
    pub has_audio: bool,
}

/// What one transcode may cost: the node's `--max-pixels`,
/// `--max-duration-secs` and `--max-child-memory-bytes`, and a cap on the
/// child's open files.
///
/// The engine checks the pixel and duration limits when it opens the input,
/// before any frame is decoded, and again while decoding (a header can lie);
/// the driver makes the memory and file limits the child's resource limits.
/// A video over a limit fails with [`ErrorCode::LimitsExceeded`] and a
/// sentence naming the limit and its flag. Missing JSON fields take their
/// [`Default`] values, the contract's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest frame, in pixels (width × height as coded).
    pub max_pixels: u64,
    /// Longest video, in seconds, declared or decoded.
    pub max_duration_secs: u64,
    /// Address space of the transcoding child (`RLIMIT_AS`), in bytes.
    pub max_memory_bytes: u64,
    /// Open file descriptors of the transcoding child (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
}

impl Limits {
    /// Default `max_pixels`: 4096 × 2304, a little over 4K UHD (3840 × 2160).
    pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 2304;
    /// Default `max_duration_secs`: four hours.
    pub const DEFAULT_MAX_DURATION_SECS: u64 = 14_400;
    /// Default `max_memory_bytes`: 2 GiB.
    pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 2 << 30;
    /// Default `max_open_files`. A transcode holds a dozen descriptors (stdio,
    /// the input, the output, a few of libav's); 1024 is Linux's usual soft
    /// limit, so no real input comes near it, while a leak in a decoder on a
    /// hostile file stops there instead of at the node's (often much higher)
    /// hard limit.
    pub const DEFAULT_MAX_OPEN_FILES: u64 = 1024;

    /// Returns the error for a frame of `width`×`height` over `max_pixels`.
    pub fn pixels_exceeded(&self, width: u32, height: u32) -> TranscodeError {
        let pixels = u64::from(width) * u64::from(height);
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the video is {width}x{height} ({pixels} pixels), over the limit of {} pixels (--max-pixels)",
                self.max_pixels
            ),
        )
    }

    /// Returns the error for a video whose header declares `seconds`, over
    /// `max_duration_secs`.
    pub fn duration_exceeded(&self, seconds: f64) -> TranscodeError {
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the video lasts {} s, over the limit of {} s (--max-duration-secs)",
                describe_seconds(seconds),
                self.max_duration_secs
            ),
        )
    }

    /// Returns the error for a decoded timestamp of `seconds`, past
    /// `max_duration_secs` (the header declared less, or nothing).
    pub fn decoded_duration_exceeded(&self, seconds: f64) -> TranscodeError {
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the video has a frame at {} s, past the limit of {} s (--max-duration-secs)",
                describe_seconds(seconds),
                self.max_duration_secs
            ),
        )
    }

    /// Returns the error for a child that ran out of its address space.
    pub fn memory_exceeded(&self) -> TranscodeError {
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the transcode needed more memory than the limit of {} (--max-child-memory-bytes)",
                describe_bytes(self.max_memory_bytes)
            ),
        )
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
            max_duration_secs: Self::DEFAULT_MAX_DURATION_SECS,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            max_open_files: Self::DEFAULT_MAX_OPEN_FILES,
        }
    }
}

/// Describes a time in seconds with up to three decimals, none when whole:
/// "20000", "1.04".
fn describe_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Describes a byte count for people: "2 GiB", "300 MiB", or the exact count
/// with an approximation when it is no whole number of either.
fn describe_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// One transcode: read `input`, write an MP4 to `output` with `options`,
/// within `limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscodeJob {
    /// The video to read. Only the local file is opened, never anything it
    /// refers to.
    pub input: PathBuf,
    /// Where to write the MP4. Created or truncated; removed if the transcode
    /// fails.
    pub output: PathBuf,
    /// How to encode.
    #[serde(default)]
    pub options: EncodeOptions,
    /// What the transcode may cost: those of the node that runs it.
    #[serde(default)]
    pub limits: Limits,
}

/// A report from the transcoding child, one JSON object per line on its
/// stdout, tagged by `"event"`.
///
/// A run is `probed`, any number of `progress`, then exactly one of `done` or
/// `failed` (unless the child dies first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChildEvent {
    /// The input was opened and is about to be transcoded.
    Probed(MediaInfo),
    /// Encoding advanced; sent at most every 100 ms and at least every second
    /// while frames flow.
    Progress {
        /// Share of the input encoded so far, 0 to 1, never decreasing.
        fraction: f64,
        /// Timestamp in seconds of the last video frame encoded.
        out_seconds: f64,
    },
    /// The output is complete and closed.
    Done {
        /// Size of the output file in bytes.
        output_bytes: u64,
    },
    /// The transcode failed; the output file has been removed.
    Failed(TranscodeError),
}

/// Why a transcode failed, as a stable code and a sentence for the end user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct TranscodeError {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// A human sentence, lowercase, no trailing period.
    pub message: String,
}

impl TranscodeError {
    /// Creates an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TranscodeError {
            code,
            message: message.into(),
        }
    }
}

/// The kinds of transcode failure, serialized and displayed in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(IntoStaticStr, Display)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// The file is not a readable video: garbage, empty, truncated, or no
    /// frame could be decoded.
    InvalidMedia,
    /// The file has no video stream (e.g. audio only).
    NoVideoStream,
    /// The container format or codec is not accepted (e.g. playlists,
    /// concat scripts, image sequences).
    UnsupportedFormat,
    /// The video is wider or taller than 8192 pixels, or has no size.
    UnsupportedDimensions,
    /// The video is over a limit of the node that ran it ([`Limits`]): more
    /// pixels a frame or more seconds than allowed, or its transcode needed
    /// more memory than the child may use.
    LimitsExceeded,
    /// The encoder, the filters or the muxer failed, or the options were
    /// rejected.
    EncoderFailed,
    /// The transcoding process died without reporting an outcome.
    TranscoderCrashed,
    /// The transcoding process reported nothing for too long and was killed.
    TranscodeStalled,
    /// A file could not be read or written, or the child could not be started.
    Io,
    /// The job's attempts kept being lost with their workers (dead nodes,
    /// failed transfers) and it was given up.
    WorkerLost,
    /// The service failed the job itself (its supervisor died), not the
    /// video: submitting it again may succeed.
    Internal,
}

impl ErrorCode {
    /// Returns the snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_their_names() {
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>(), Ok(preset));
            assert_eq!(preset.to_string(), preset.as_str());
            let json = serde_json::to_string(&preset).unwrap();
            assert_eq!(json, format!("\"{}\"", preset.as_str()));
        }
        assert_eq!(Preset::default(), Preset::Veryfast);
    }

    #[test]
    fn unknown_preset_names_the_option() {
        let err = "Fast".parse::<Preset>().unwrap_err();
        assert_eq!(err.option(), "preset");
        assert!(
            err.to_string().starts_with("preset must be one of"),
            "{err}"
        );
    }

    #[test]
    fn defaults_match_the_contract() {
        let options = EncodeOptions::default();
        assert_eq!(options.crf, 28);
        assert_eq!(options.preset, Preset::Veryfast);
        assert_eq!(options.max_height, None);
        assert_eq!(options.audio_bitrate_kbps, 96);
        assert_eq!(options.validate(), Ok(()));
        let parsed: EncodeOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, options);
    }

    #[test]
    fn validate_checks_every_bound() {
        let ok = |o: EncodeOptions| o.validate().map_err(|e| e.option());
        let base = EncodeOptions::default();
        assert_eq!(ok(EncodeOptions { crf: 0, ..base }), Ok(()));
        assert_eq!(ok(EncodeOptions { crf: 51, ..base }), Ok(()));
        assert_eq!(ok(EncodeOptions { crf: 52, ..base }), Err("crf"));
        for h in [2, 8192] {
            let o = EncodeOptions {
                max_height: Some(h),
                ..base
            };
            assert_eq!(ok(o), Ok(()));
        }
        for h in [0, 1, 8193] {
            let o = EncodeOptions {
                max_height: Some(h),
                ..base
            };
            assert_eq!(ok(o), Err("max_height"));
        }
        for kbps in [8, 512] {
            let o = EncodeOptions {
                audio_bitrate_kbps: kbps,
                ..base
            };
            assert_eq!(ok(o), Ok(()));
        }
        for kbps in [0, 7, 513] {
            let o = EncodeOptions {
                audio_bitrate_kbps: kbps,
                ..base
            };
            assert_eq!(ok(o), Err("audio_bitrate"));
        }
    }

    #[test]
    fn option_errors_read_as_sentences() {
        let err = EncodeOptions {
            crf: 60,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.to_string(), "crf must be between 0 and 51, got 60");
    }

    #[test]
    fn child_events_are_tagged_json_lines() {
        let failed = ChildEvent::Failed(TranscodeError::new(
            ErrorCode::InvalidMedia,
            "the file is not a readable video",
        ));
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            json,
            r#"{"event":"failed","code":"invalid_media","message":"the file is not a readable video"}"#
        );
        let progress = ChildEvent::Progress {
            fraction: 0.5,
            out_seconds: 1.25,
        };
        let json = serde_json::to_string(&progress).unwrap();
        assert_eq!(
            json,
            r#"{"event":"progress","fraction":0.5,"out_seconds":1.25}"#
        );
        for event in [
            failed,
            progress,
            ChildEvent::Done { output_bytes: 42 },
            ChildEvent::Probed(MediaInfo {
                duration_seconds: None,
                width: 2,
                height: 4,
                video_codec: "h264".into(),
                has_audio: false,
            }),
        ] {
            let line = serde_json::to_string(&event).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<ChildEvent>(&line).unwrap(), event);
        }
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [
            ErrorCode::InvalidMedia,
            ErrorCode::NoVideoStream,
            ErrorCode::UnsupportedFormat,
            ErrorCode::UnsupportedDimensions,
            ErrorCode::LimitsExceeded,
            ErrorCode::EncoderFailed,
            ErrorCode::TranscoderCrashed,
            ErrorCode::TranscodeStalled,
            ErrorCode::Io,
            ErrorCode::WorkerLost,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(
            serde_json::to_string(&ErrorCode::LimitsExceeded).unwrap(),
            r#""limits_exceeded""#
        );
        let err = TranscodeError::new(ErrorCode::Io, "disk full");
        assert_eq!(err.to_string(), "disk full");
    }

    #[test]
    fn limits_default_to_the_contract() {
        let limits = Limits::default();
        assert_eq!(limits.max_pixels, 4096 * 2304);
        assert_eq!(limits.max_duration_secs, 14_400);
        assert_eq!(limits.max_memory_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(limits.max_open_files, 1024);
        let parsed: Limits = serde_json::from_str(r#"{"max_pixels":100}"#).unwrap();
        assert_eq!(
            parsed,
            Limits {
                max_pixels: 100,
                ..limits
            }
        );
    }

    #[test]
    fn a_job_without_limits_gets_the_defaults() {
        let job: TranscodeJob =
            serde_json::from_str(r#"{"input":"in.mp4","output":"out.mp4"}"#).unwrap();
        assert_eq!(job.limits, Limits::default());
        assert_eq!(job.options, EncodeOptions::default());
    }

    #[test]
    fn limit_errors_name_the_limit_its_flag_and_the_value_seen() {
        let limits = Limits::default();
        let err = limits.pixels_exceeded(8192, 8192);
        assert_eq!(err.code, ErrorCode::LimitsExceeded);
        assert_eq!(
            err.message,
            "the video is 8192x8192 (67108864 pixels), over the limit of 9437184 pixels (--max-pixels)"
        );
        assert_eq!(
            limits.duration_exceeded(20_000.0).message,
            "the video lasts 20000 s, over the limit of 14400 s (--max-duration-secs)"
        );
        assert_eq!(
            limits.decoded_duration_exceeded(14_400.04).message,
            "the video has a frame at 14400.04 s, past the limit of 14400 s (--max-duration-secs)"
        );
        assert_eq!(
            limits.memory_exceeded().message,
            "the transcode needed more memory than the limit of 2 GiB (--max-child-memory-bytes)"
        );
        assert_eq!(describe_bytes(300 << 20), "300 MiB");
        assert_eq!(describe_bytes(200_000_000), "200000000 bytes (190.7 MiB)");
        assert_eq!(describe_bytes(1000), "1000 bytes");
    }
}
