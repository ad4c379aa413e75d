//! The data that crosses the process boundary: what a transcode is asked to do
//! ([`TranscodeJob`], [`EncodeOptions`], and for a video split into segments
//! its [`SegmentPlan`] and each part's [`Task`]) and what it may cost ([`Limits`]),
//! what the child reports while doing it ([`ChildEvent`]) and how it fails
//! ([`TranscodeError`]).
//!
//! Everything here is plain serde data with no ffmpeg types, so the parent side
//! (the driver, the actors, the HTTP layer) can use it without linking to
//! libav*. On the wire each [`ChildEvent`] is one JSON object on one line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod codec;
mod error;
mod limits;
mod options;
mod report;
mod segments;

pub use codec::{Codec, Format};
pub use error::{ErrorCode, TranscodeError};
pub use limits::Limits;
pub use options::{EncodeOptions, OptionsError, Parallel, Preset, RateMode};
pub use report::{Output, OutputReport, Quality, Timings};
pub use segments::{JoinWork, Segment, SegmentPlan, SegmentWork, TimeBase, VideoRate};

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

/// One run of the child: read `input` and, by `task`, write an MP4 to
/// `output` with `options` or a JPEG thumbnail to `output`, within `limits`.
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
    /// What the child does with the input.
    #[serde(default)]
    pub task: Task,
}

/// What a run of the child does with its input.
///
/// The first two are a job's single pass and its probe; the others are the
/// parts of a job split into segments, run on any node: a `plan`, then every
/// `segment` and the `audio` at once, then the `join`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Encode the input into `output` (`probed`, `progress`…, `done`).
    #[default]
    Transcode,
    /// Probe the input (`probed`), then write a JPEG of one representative
    /// frame, at most [`THUMBNAIL_MAX_WIDTH`] wide, to `output` (`done`
    /// with its size). Made when a job is accepted, before any worker.
    Probe,
    /// Read the input's video packets (no decoding) and cut it into
    /// segments of about `segment_ms`: `probed`, `progress`…, then `done`
    /// with the [`SegmentPlan`] in its `plan`. Writes nothing to `output`
    /// (which, as for every task, is removed if the run fails).
    Plan {
        /// The length aimed at, in milliseconds (at least
        /// [`Task::MIN_SEGMENT_MS`]).
        segment_ms: u64,
    },
    /// Encode one segment's video (no audio) into `output`, in the job's
    /// format, starting on a keyframe of a closed group of pictures, with
    /// the timestamps a single pass would give those frames: `probed`,
    /// `progress`…, `done` with the segment's report.
    Segment(SegmentWork),
    /// Encode the whole input's audio (AAC in MP4, Opus in WebM, at the
    /// job's audio bit rate) into `output`, timed as a single pass times
    /// it: `probed`, `progress`…, `done`. Fails on an input without audio.
    Audio,
    /// Put the segments' files and the audio's together into `output`
    /// without encoding again (MP4 with `+faststart`, WebM with its cues in
    /// front): `progress`…, `done` with the output's report. `input` is not
    /// read.
    Join(JoinWork),
}

impl Task {
    /// The shortest segment a plan may aim at.
    pub const MIN_SEGMENT_MS: u64 = 1000;
}

/// The widest a thumbnail is, in pixels.
pub const THUMBNAIL_MAX_WIDTH: u32 = 320;

/// A report from the transcoding child, one JSON object per line on its
/// stdout, tagged by `"event"`.
///
/// A run is `probed` (except a [`Task::Join`], which opens no input), any
/// number of `progress`, then exactly one of `done` or `failed` (unless the
/// child dies first).
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
    /// The output is complete and closed (a plan's is in `plan`).
    Done {
        /// Size of the output file in bytes.
        output_bytes: u64,
        /// What the output is and how it looks (a transcode's; a
        /// thumbnail has none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<OutputReport>,
        /// Where the input is cut (a [`Task::Plan`]'s, only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<SegmentPlan>,
    },
    /// The transcode failed; the output file has been removed.
    Failed(TranscodeError),
}

#[cfg(test)]
mod tests {
    use super::limits::describe_bytes;
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
        assert_eq!(options.crf, None);
        assert_eq!(options.rate(), RateMode::Crf(28));
        assert_eq!(options.codec, Codec::H264);
        assert_eq!(options.format, Format::Mp4);
        assert_eq!(options.preset, Preset::Veryfast);
        assert_eq!(options.max_height, None);
        assert_eq!(options.audio_bitrate_kbps, 96);
        assert_eq!(options.validate(), Ok(()));
        let parsed: EncodeOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, options);
        // A record written before codecs existed still reads.
        let old: EncodeOptions = serde_json::from_str(
            r#"{"crf":23,"preset":"fast","max_height":null,"audio_bitrate_kbps":64}"#,
        )
        .unwrap();
        assert_eq!(old.rate(), RateMode::Crf(23));
        assert_eq!(old.codec, Codec::H264);
    }

    #[test]
    fn validate_checks_every_bound() {
        let ok = |o: EncodeOptions| o.validate().map_err(|e| e.option());
        let base = EncodeOptions::default();
        let crf = |codec, crf| EncodeOptions {
            codec,
            format: Codec::default_format(codec),
            crf: Some(crf),
            ..base
        };
        assert_eq!(ok(crf(Codec::H264, 0)), Ok(()));
        assert_eq!(ok(crf(Codec::H264, 51)), Ok(()));
        assert_eq!(ok(crf(Codec::H264, 52)), Err("crf"));
        assert_eq!(ok(crf(Codec::H265, 52)), Err("crf"));
        assert_eq!(ok(crf(Codec::Av1, 63)), Ok(()));
        assert_eq!(ok(crf(Codec::Vp9, 64)), Err("crf"));
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
        let size = |bytes| EncodeOptions {
            target_size_bytes: Some(bytes),
            ..base
        };
        assert_eq!(ok(size(10_000)), Ok(()));
        assert_eq!(ok(size(9_999)), Err("target_size_bytes"));
        assert_eq!(size(2_000_000).rate(), RateMode::TargetSize(2_000_000));
        let ssim = |value| EncodeOptions {
            min_ssim: Some(value),
            ..base
        };
        assert_eq!(ok(ssim(0.9)), Ok(()));
        assert_eq!(ok(ssim(0.999)), Ok(()));
        assert_eq!(ok(ssim(0.8)), Err("min_ssim"));
        assert_eq!(ok(ssim(1.0)), Err("min_ssim"));
        assert_eq!(ssim(0.97).rate(), RateMode::MinSsim(0.97));
    }

    #[test]
    fn two_rate_modes_or_a_wrong_pair_are_refused() {
        let base = EncodeOptions::default();
        let two = EncodeOptions {
            crf: Some(30),
            min_ssim: Some(0.95),
            ..base
        };
        let err = two.validate().unwrap_err();
        assert_eq!(err.option(), "min_ssim");
        assert!(err.to_string().contains("two rate modes"), "{err}");
        let pair = EncodeOptions {
            codec: Codec::Vp9,
            format: Format::Mp4,
            ..base
        };
        let err = pair.validate().unwrap_err();
        assert_eq!(err.option(), "format");
        assert!(
            err.to_string().starts_with("vp9 does not go in mp4"),
            "{err}"
        );
        let pair = EncodeOptions {
            codec: Codec::H264,
            format: Format::Webm,
            ..base
        };
        assert_eq!(pair.validate().unwrap_err().option(), "format");
    }

    #[test]
    fn presets_map_onto_each_encoder_s_scale() {
        let svt: Vec<u8> = Preset::ALL.iter().map(|p| p.svt_av1()).collect();
        assert_eq!(svt, [12, 11, 10, 9, 8, 7, 6, 5, 4]);
        let vpx: Vec<u8> = Preset::ALL.iter().map(|p| p.vpx_cpu_used()).collect();
        assert_eq!(vpx, [5, 5, 4, 4, 3, 2, 1, 1, 0]);
    }

    #[test]
    fn option_errors_read_as_sentences() {
        let err = EncodeOptions {
            crf: Some(60),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "crf must be between 0 and 51 for h264, got 60"
        );
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
            ChildEvent::Done {
                output_bytes: 42,
                report: None,
                plan: None,
            },
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
            ErrorCode::TargetTooSmall,
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
