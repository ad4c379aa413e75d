//! [`crate::protocol::Task::Segment`]: one segment's video encoded as a
//! pass over the input ([`crate::engine::pass`]) that seeks to the keyframe
//! the segment decodes from, encodes only the frames with
//! `start <= pts < end`, and writes a file labelled with its place in the
//! plan.
//!
//! The file's timestamps are those a single pass gives the same frames:
//! the pipeline shifts by the whole input's start time (not the segment's
//! first frame), keeps the input's frame-rate guess and constant-rate time
//! base, and carries on from the tick of the frame before the segment, so
//! the join copies packets without retiming them (but for the decoding
//! times B-frames make an encoder guess, `super::reorder`). The encoder is
//! opened on the segment's first frame, which makes it a keyframe, with
//! closed groups of pictures, so no picture refers to another segment's.

use std::time::Instant;

use ffmpeg_next::{ffi, Rational, Rescale};

use crate::engine::demux::Packets;
use crate::engine::input::{self, Input};
use crate::engine::pass::{self, Measure, Pass};
use crate::engine::progress::Progress;
use crate::engine::video::VideoPipeline;
use crate::engine::window::{FrameWindow, Window};
use crate::engine::{describe, modes};
use crate::protocol::{
    ChildEvent, EncodeOptions, ErrorCode, Output, RateMode, Segment, SegmentWork, TranscodeError,
    TranscodeJob, VideoRate,
};

/// Encodes `work`'s segment of `job.input` into `job.output`, calling
/// `on_event` with `probed` and `progress`, and reports on it.
pub(in crate::engine) fn encode(
    job: &TranscodeJob,
    work: &SegmentWork,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    let rate = rate(work, &job.options)?;
    if work.segment.index >= work.count {
        return Err(TranscodeError::new(
            ErrorCode::EncoderFailed,
            format!(
                "segment {} is not one of the plan's {}",
                work.segment.index, work.count
            ),
        ));
    }
    let mut input = input::open(&job.input, &job.limits)?;
    on_event(ChildEvent::Probed(input.info.clone()));
    check_time_base(&input, work)?;

    let started = Instant::now();
    let input_bytes = std::fs::metadata(&job.input).map_or(0, |meta| meta.len());
    let mut progress = Progress::new(input.info.duration_seconds, input_bytes);
    progress.band(0.0, 1.0, Some(span(&input, work)));
    let pass = Pass {
        output: &job.output,
        rate,
        window: None,
        measure: Measure::WithinBudget,
        segment: Some(work),
    };
    let result = pass::encode(job, &mut input, &pass, &mut progress, on_event)?;
    tracing::debug!(
        index = work.segment.index,
        exact = work.segment.is_exact_cut(),
        bytes = result.bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "segment encoded"
    );
    on_event(ChildEvent::Progress {
        fraction: 1.0,
        out_seconds: result.seconds,
    });
    Ok(modes::output(
        &job.options,
        result,
        rate.crf(),
        rate.bitrate_kbps(),
        0.0,
    ))
}

/// Returns the rate a segment is encoded at: the one it was given, else
/// the job's CRF. The other modes settle theirs on the whole video first.
fn rate(work: &SegmentWork, options: &EncodeOptions) -> Result<VideoRate, TranscodeError> {
    options.validate().map_err(|err| {
        TranscodeError::new(
            ErrorCode::EncoderFailed,
            format!("the encode options are invalid: {err}"),
        )
    })?;
    let refused = |message: String| Err(TranscodeError::new(ErrorCode::EncoderFailed, message));
    match (work.rate, options.rate()) {
        (Some(VideoRate::Crf(crf)), _)
            if !(options.codec.crf_min()..=options.codec.crf_max()).contains(&crf) =>
        {
            refused(format!(
                "a segment's crf must be between {} and {} for {}, got {crf}",
                options.codec.crf_min(),
                options.codec.crf_max(),
                options.codec
            ))
        }
        (Some(VideoRate::Bitrate { kbps: 0 }), _) => {
            refused("a segment's bit rate must be above 0 kbit/s".to_owned())
        }
        (Some(rate), _) => Ok(rate),
        (None, RateMode::Crf(crf)) => Ok(VideoRate::Crf(crf)),
        (None, RateMode::TargetSize(_)) => refused(
            "a segment of a target_size_bytes job needs the bit rate settled for the whole video"
                .to_owned(),
        ),
        (None, RateMode::MinSsim(_)) => {
            refused("a segment of a min_ssim job needs the crf its search found".to_owned())
        }
    }
}

/// Refuses a segment of a plan made for another file.
fn check_time_base(input: &Input, work: &SegmentWork) -> Result<(), TranscodeError> {
    let tb = input
        .ctx
        .stream(input.video_index)
        .map(|stream| stream.time_base());
    let planned = work.time_base;
    match tb {
        Some(tb) if (tb.numerator(), tb.denominator()) == (planned.num, planned.den) => Ok(()),
        _ => Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!(
                "segment {} was planned for another file: its time base is {}/{}, not this \
                 video's",
                work.segment.index, planned.num, planned.den
            ),
        )),
    }
}

/// Returns the seconds the segment spans, as progress counts them (after
/// the input's start).
fn span(input: &Input, work: &SegmentWork) -> (f64, f64) {
    let start_time = input.start_time as f64 / f64::from(ffi::AV_TIME_BASE);
    let seconds = |pts: i64| work.time_base.seconds(pts) - start_time;
    let end = match work.segment.end_pts {
        Some(end) => seconds(end),
        None => input.info.duration_seconds.unwrap_or(f64::MAX),
    };
    (seconds(work.segment.start_pts), end)
}

/// Moves `input` to the keyframe `segment` decodes from (the last one at
/// or before it); the first segment reads from the file's start.
///
/// A container without an index (MPEG-TS, elementary streams) seeks by
/// searching its bytes and can land just past that keyframe, where nothing
/// decodes until the next one: the seek is tried again further back
/// ([`SEEK_MARGINS`]), and at worst the segment is read from the file's
/// start (`job.input` opened again).
pub(in crate::engine) fn seek(
    job: &TranscodeJob,
    input: &mut Input,
    segment: &Segment,
) -> Result<(), TranscodeError> {
    if segment.index == 0 {
        return Ok(());
    }
    let time_base = input
        .ctx
        .stream(input.video_index)
        .map(|stream| stream.time_base());
    for margin in SEEK_MARGINS {
        let back = time_base.map_or(0, |tb| margin.rescale(Rational::new(1, 1), tb));
        let target = segment.decode_from_pts.saturating_sub(back);
        seek_to(input, target, segment.index)?;
        if first_keyframe(input).is_some_and(|pts| pts <= segment.decode_from_pts) {
            // Back to it: the same seek lands in the same place, or on a
            // keyframe before it now that the demuxer has seen them.
            return seek_to(input, target, segment.index);
        }
    }
    tracing::debug!(
        index = segment.index,
        "every seek missed the segment's keyframe; reading from the start"
    );
    *input = input::open(&job.input, &job.limits)?;
    Ok(())
}

/// How far before a segment's keyframe a seek aims, in seconds, try after
/// try: exactly at it first, as an index allows.
const SEEK_MARGINS: [i64; 4] = [0, 2, 10, 60];

fn seek_to(input: &mut Input, target: i64, index: u32) -> Result<(), TranscodeError> {
    let stream = libc::c_int::try_from(input.video_index).unwrap_or(libc::c_int::MAX);
    // SAFETY: a seek on the open input context, by a stream it has.
    let ret = unsafe {
        ffi::avformat_seek_file(input.ctx.as_mut_ptr(), stream, i64::MIN, target, target, 0)
    };
    if ret < 0 {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!(
                "the video could not be read from segment {index}'s start: {}",
                describe(ffmpeg_next::Error::from(ret))
            ),
        ));
    }
    Ok(())
}

/// Reads on to the first video keyframe and returns its timestamp.
fn first_keyframe(input: &mut Input) -> Option<i64> {
    let mut packets = Packets::default();
    while let Some(packet) = packets.next(&mut input.ctx) {
        if packet.stream() == input.video_index && packet.is_key() {
            return packet.pts().or(packet.dts());
        }
    }
    None
}

impl VideoPipeline {
    /// Encodes only `segment`'s frames, as a single pass would: closed
    /// groups of pictures, and carrying on from the tick of the frame
    /// before (a frame on the same tick is dropped here as it would be
    /// there, and the first frame's duration is the same).
    pub(in crate::engine) fn set_segment(&mut self, segment: &Segment) {
        self.window = Some(Window::Frames(FrameWindow::new(
            segment.start_pts,
            segment.end_pts,
        )));
        self.closed_gop = true;
        self.last_encoded_pts = segment.previous_pts.map(|raw| self.tick_of(raw));
    }
}

/// Fails a segment that holds no frame, or one after the first whose
/// decode began after its start (a seek that overshot would lose frames
/// silently; the first segment decodes from the file's start, as a single
/// pass does).
pub(in crate::engine) fn check(
    video: &VideoPipeline,
    work: &SegmentWork,
) -> Result<(), TranscodeError> {
    let Some(Window::Frames(window)) = video.window.as_ref() else {
        return Err(TranscodeError::new(
            ErrorCode::Internal,
            "the segment's window is missing",
        ));
    };
    let segment = &work.segment;
    let at = |pts: i64| work.time_base.seconds(pts);
    let range = match segment.end_pts {
        Some(end) => format!("from {:.3} s to {:.3} s", at(segment.start_pts), at(end)),
        None => format!("from {:.3} s to the end", at(segment.start_pts)),
    };
    if window.admitted == 0 {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!(
                "segment {} holds no frame of the video: none {range}",
                segment.index
            ),
        ));
    }
    let late = window
        .first_decoded
        .filter(|first| *first > segment.start_pts);
    if let Some(first) = late.filter(|_| segment.index > 0) {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!(
                "segment {} ({range}) could not be decoded from its start: the first frame \
                 decoded is at {:.3} s",
                segment.index,
                at(first)
            ),
        ));
    }
    Ok(())
}
