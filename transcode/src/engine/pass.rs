//! One encode of the input, or of a window of it, into a file: the demux
//! loop feeding the video and audio paths and the muxer. A rate mode runs
//! one or more of these ([`super::modes`]); a segment of a split job is one
//! ([`super::segments`]).

use std::path::Path;
use std::time::{Duration, Instant};

use ffmpeg_next::ffi;

use super::audio::AudioPipeline;
use super::demux::Packets;
use super::encoders::VideoRate;
use super::input::Input;
use super::lower;
use super::mux::Muxer;
use super::progress::Progress;
use super::segments::bounds;
use super::video::VideoPipeline;
use crate::protocol::{ChildEvent, ErrorCode, Quality, SegmentWork, TranscodeError, TranscodeJob};

/// What one pass encodes, and how.
pub(super) struct Pass<'a> {
    /// Where the file goes (created or truncated).
    pub output: &'a Path,
    pub rate: VideoRate,
    /// Only the video from `start` to `end` seconds (a sample), without
    /// audio; the whole input with its audio when `None`.
    pub window: Option<(f64, f64)>,
    /// Whether to measure the output's quality, and whether the
    /// measurement may compare fewer pictures to stay within its budget.
    pub measure: Measure,
    /// Only one segment's video, into a file for the join.
    pub segment: Option<&'a SegmentWork>,
}

/// How a pass measures its quality.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Measure {
    /// Every picture (samples of a search, whose figures decide a CRF).
    Every,
    /// Within a share of the encode's time (the output's report).
    WithinBudget,
}

/// What a pass made.
pub(super) struct PassResult {
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    /// From the first frame encoded to the end of the last.
    pub seconds: f64,
    pub quality: Option<Quality>,
    pub elapsed: Duration,
    /// The part of `elapsed` spent measuring quality.
    pub quality_time: Duration,
}

/// Runs `pass` over `input` (opened afresh for it) within `job`'s limits,
/// reporting progress through `progress`. On failure the pass's file is
/// removed.
pub(super) fn encode(
    job: &TranscodeJob,
    input: &mut Input,
    pass: &Pass,
    progress: &mut Progress,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<PassResult, TranscodeError> {
    let result = run(job, input, pass, progress, on_event);
    if result.is_err() {
        let _ = std::fs::remove_file(pass.output);
    }
    result
}

fn run(
    job: &TranscodeJob,
    input: &mut Input,
    pass: &Pass,
    progress: &mut Progress,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<PassResult, TranscodeError> {
    let started = Instant::now();
    if let Some((start, _)) = pass.window {
        seek(input, start)?;
    }
    let mut muxer = match pass.segment {
        Some(work) => {
            bounds::seek(job, input, &work.segment)?;
            Muxer::create_part(
                pass.output,
                job.options.format,
                bounds::label(work.segment.index, work.count),
            )?
        }
        None => Muxer::create(pass.output, job.options.format)?,
    };
    let mut video = VideoPipeline::new(input, &mut muxer, job.options, pass.rate)?;
    video.measure(pass.measure == Measure::WithinBudget);
    if let Some((start, end)) = pass.window {
        video.set_window(start, end);
    }
    if let Some(work) = pass.segment {
        video.set_segment(&work.segment);
    }
    let mut audio = match (input.audio_index, pass.window, pass.segment) {
        (Some(index), None, None) => {
            Some(AudioPipeline::new(input, index, &mut muxer, job.options)?)
        }
        _ => None,
    };

    let mut packets = Packets::default();
    while !video.window_ended() {
        let Some(packet) = packets.next(&mut input.ctx) else {
            break;
        };
        let index = packet.stream();
        if index == video.stream_index {
            video.send_packet(&packet, &mut muxer)?;
        } else if let Some(audio) = audio.as_mut().filter(|audio| audio.stream_index == index) {
            audio.send_packet(&packet, &mut muxer)?;
        } else {
            continue;
        }
        progress.update(video.last_seconds, position(input), on_event);
    }

    video.finish(&mut muxer, &mut || progress.heartbeat(on_event))?;
    if let Some(work) = pass.segment {
        bounds::check(&video, work)?;
    }
    if let Some(audio) = audio.as_mut() {
        audio.finish(&mut muxer)?;
    }
    if video.frames_decoded == 0 || !muxer.has_started() {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            "the file is not a readable video: no frame of the video could be decoded",
        ));
    }
    muxer.finish()?;

    let bytes = std::fs::metadata(pass.output)
        .map_err(|err| {
            TranscodeError::new(
                ErrorCode::Io,
                format!(
                    "the output file could not be read back: {}",
                    lower(&err.to_string())
                ),
            )
        })?
        .len();
    let (width, height) = video.output_size();
    let quality_time = video.quality_time();
    let quality = video.take_quality();
    tracing::debug!(
        frames = video.frames_decoded,
        video_decode_errors = video.decode_errors,
        audio_decode_errors = audio.as_ref().map_or(0, |audio| audio.decode_errors),
        demux_errors = packets.errors,
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "pass finished"
    );
    Ok(PassResult {
        bytes,
        width,
        height,
        seconds: video.encoded_seconds(),
        quality,
        elapsed: started.elapsed(),
        quality_time,
    })
}

/// Moves the input to the last keyframe at or before `seconds` (the video
/// pipeline drops the pictures before it).
fn seek(input: &mut Input, seconds: f64) -> Result<(), TranscodeError> {
    // The container's start time is in the same AV_TIME_BASE units.
    let target = ((seconds * f64::from(ffi::AV_TIME_BASE)) as i64).saturating_add(input.start_time);
    input.ctx.seek(target, ..target + 1).map_err(|err| {
        TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!(
                "the video could not be read from {seconds:.1} s on: {}",
                super::describe(err)
            ),
        )
    })
}

/// Returns how far into the input file the demuxer is, in bytes.
fn position(input: &mut Input) -> i64 {
    // SAFETY: reading the position of the input's own I/O context.
    unsafe {
        let pb = (*input.ctx.as_mut_ptr()).pb;
        if pb.is_null() {
            0
        } else {
            // avio_tell is an inline wrapper for this.
            ffi::avio_seek(pb, 0, libc::SEEK_CUR)
        }
    }
}
