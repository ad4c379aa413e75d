//! The engine's side of segment-parallel encoding: a long video is planned
//! (`plan`, cut where `cuts` decides), its segments' video encoded apart on
//! any node (`encode`, where its pass starts and what it holds in
//! `bounds`) and its audio once (`audio`), then the parts (read
//! by `parts`) joined without encoding again (`join`). Each is one child task
//! ([`crate::protocol::Task`]); what runs them where is the caller's.
//!
//! **Invariant:** the joined file is the single pass's, frame for frame: the
//! same frames (a plan puts each in exactly one segment, by its exact
//! timestamp), the same timestamps (each segment is timed as the single
//! pass times those frames; the join completes only the decoding times an
//! encoder with B-frames guesses for a segment's first packets, `reorder`),
//! the same audio (encoded by the same path), so the join copies packets
//! and checks that they follow on.

mod audio;
pub(super) mod bounds;
mod cuts;
mod encode;
mod join;
mod parts;
mod plan;
mod reorder;

use crate::engine::input;
use crate::engine::progress::Progress;
use crate::protocol::{
    ChildEvent, JoinWork, Output, SegmentPlan, SegmentWork, TranscodeError, TranscodeJob,
};

use bounds::label;

/// Plans `job.input` into segments of about `segment_ms`
/// ([`crate::protocol::Task::Plan`]), calling `on_event` with `probed` and
/// `progress`.
pub fn plan(
    job: &TranscodeJob,
    segment_ms: u64,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<SegmentPlan, TranscodeError> {
    crate::engine::init();
    let mut input = input::open(&job.input, &job.limits)?;
    on_event(ChildEvent::Probed(input.info.clone()));
    let input_bytes = std::fs::metadata(&job.input).map_or(0, |meta| meta.len());
    let mut progress = Progress::new(input.info.duration_seconds, input_bytes);
    let plan = plan::plan(&mut input, segment_ms, &mut progress, on_event)?;
    on_event(ChildEvent::Progress {
        fraction: 1.0,
        out_seconds: plan.duration_seconds(),
    });
    Ok(plan)
}

/// Encodes one segment of `job.input` into `job.output`
/// ([`crate::protocol::Task::Segment`]), calling `on_event` with `probed`
/// and `progress`. On failure no file is left at `job.output`.
pub fn encode_segment(
    job: &TranscodeJob,
    work: &SegmentWork,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    crate::engine::init();
    removing_on_failure(job, encode::encode(job, work, on_event))
}

/// Encodes `job.input`'s audio into `job.output`
/// ([`crate::protocol::Task::Audio`]), calling `on_event` with `probed` and
/// `progress`. On failure no file is left at `job.output`.
pub fn encode_audio(
    job: &TranscodeJob,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    crate::engine::init();
    removing_on_failure(job, audio::encode(job, on_event))
}

/// Joins `work`'s files into `job.output` ([`crate::protocol::Task::Join`]),
/// calling `on_event` with `progress`. On failure no file is left at
/// `job.output`.
pub fn join(
    job: &TranscodeJob,
    work: &JoinWork,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    crate::engine::init();
    removing_on_failure(job, join::join(job, work, on_event))
}

fn removing_on_failure(
    job: &TranscodeJob,
    result: Result<Output, TranscodeError>,
) -> Result<Output, TranscodeError> {
    if result.is_err() {
        let _ = std::fs::remove_file(&job.output);
    }
    result
}
