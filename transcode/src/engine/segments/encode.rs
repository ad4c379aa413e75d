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

use ffmpeg_next::ffi;

use crate::engine::input::{self, Input};
use crate::engine::modes;
use crate::engine::pass::{self, Measure, Pass};
use crate::engine::progress::Progress;
use crate::protocol::{
    ChildEvent, EncodeOptions, ErrorCode, Output, RateMode, SegmentWork, TranscodeError,
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
