//! Where a segment's pass starts and what it must hold: the seek to the
//! keyframe the segment decodes from, the video path set to the segment's
//! frames, and the check that none was lost. The single-pass code
//! ([`crate::engine::pass`]) calls these, so they depend on nothing of the
//! segment's encode ([`super::encode`]).

use ffmpeg_next::{ffi, Rational, Rescale};

use crate::engine::demux::Packets;
use crate::engine::describe;
use crate::engine::input::{self, Input};
use crate::engine::video::VideoPipeline;
use crate::engine::window::{FrameWindow, Window};
use crate::protocol::{ErrorCode, Segment, SegmentWork, TranscodeError, TranscodeJob};

/// Returns the label of segment `index`'s file in a plan of `count`.
pub(in crate::engine) fn label(
    index: impl std::fmt::Display,
    count: impl std::fmt::Display,
) -> String {
    format!("vidpress segment {index} of {count}")
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
