//! [`crate::protocol::Task::Plan`]: the input's video packets read without
//! decoding (their timestamps and keyframe flags are all a plan needs, so a
//! long video is planned in the time it takes to read it), then cut by
//! [`super::cuts`].

use ffmpeg_next::packet::Ref;
use ffmpeg_next::{Packet, Rescale};

use super::cuts::{self, Frame};
use crate::engine::demux::Packets;
use crate::engine::input::{av_time_base, Input};
use crate::engine::progress::Progress;
use crate::protocol::{ChildEvent, ErrorCode, SegmentPlan, Task, TimeBase, TranscodeError};

/// Reads `input`'s video packets and cuts it into segments of about
/// `segment_ms`.
pub(in crate::engine) fn plan(
    input: &mut Input,
    segment_ms: u64,
    progress: &mut Progress,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<SegmentPlan, TranscodeError> {
    if segment_ms < Task::MIN_SEGMENT_MS {
        return Err(TranscodeError::new(
            ErrorCode::EncoderFailed,
            format!(
                "segments must be at least {} ms long, not {segment_ms} ms",
                Task::MIN_SEGMENT_MS
            ),
        ));
    }
    let stream = input.ctx.stream(input.video_index).ok_or_else(|| {
        TranscodeError::new(ErrorCode::NoVideoStream, "the file has no video stream")
    })?;
    let tb = stream.time_base();
    let time_base = TimeBase {
        num: tb.numerator(),
        den: tb.denominator(),
    };
    let segment = time_base
        .ticks_of_millis(segment_ms)
        .filter(|ticks| *ticks > 0)
        .ok_or_else(|| {
            TranscodeError::new(
                ErrorCode::InvalidMedia,
                format!(
                    "the video's time base ({}/{}) cannot be cut into segments",
                    time_base.num, time_base.den
                ),
            )
        })?;
    let offset = input.start_time.rescale(av_time_base(), tb);

    let (mut frames, ends) = read_frames(input, time_base, offset, progress, on_event)?;
    frames.sort_by_key(|frame| frame.pts);
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            "the file is not a readable video: it holds no video packet",
        ));
    };
    let end = plan_end(&frames, ends).max(last.pts + 1);
    let keyframes: Vec<i64> = frames.iter().filter(|f| f.key).map(|f| f.pts).collect();
    let cuts = cuts::cut_points(&keyframes, first.pts, end, segment);
    let segments = cuts::segments(&frames, &cuts);
    tracing::debug!(
        frames = frames.len(),
        keyframes = keyframes.len(),
        segments = segments.len(),
        exact = segments.iter().filter(|s| s.is_exact_cut()).count(),
        "planned"
    );
    Ok(SegmentPlan {
        time_base,
        first_pts: first.pts,
        end_pts: end,
        frames: frames.len() as u64,
        has_audio: input.audio_index.is_some(),
        segments,
    })
}

/// Returns where the video ends: the furthest `pts + duration` a packet
/// declared (`ends`), else the last frame plus the gap before it.
fn plan_end(frames: &[Frame], ends: Option<i64>) -> i64 {
    let gap = match frames {
        [.., before, last] => last.pts - before.pts,
        _ => 1,
    };
    let guessed = frames.last().map_or(0, |last| last.pts + gap.max(1));
    ends.unwrap_or(guessed)
}

/// Reads every video packet: its timestamp (the decoding one when it has
/// no other) and keyframe flag, and the furthest end any declared.
fn read_frames(
    input: &mut Input,
    time_base: TimeBase,
    offset: i64,
    progress: &mut Progress,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<(Vec<Frame>, Option<i64>), TranscodeError> {
    let mut frames = Vec::new();
    let mut ends: Option<i64> = None;
    let mut packets = Packets::default();
    while let Some(packet) = packets.next(&mut input.ctx) {
        if packet.stream() != input.video_index || is_discarded(&packet) {
            continue;
        }
        let Some(pts) = packet.pts().or(packet.dts()) else {
            return Err(TranscodeError::new(
                ErrorCode::UnsupportedFormat,
                "the video's packets carry no timestamps, so it cannot be cut into segments",
            ));
        };
        let seconds = time_base.seconds(pts - offset);
        if seconds > input.limits.max_duration_secs as f64 {
            return Err(input.limits.decoded_duration_exceeded(seconds));
        }
        if packet.duration() > 0 {
            let end = pts.saturating_add(packet.duration());
            ends = Some(ends.map_or(end, |known| known.max(end)));
        }
        frames.push(Frame {
            pts,
            key: packet.is_key(),
        });
        progress.update(Some(seconds), 0, on_event);
    }
    Ok((frames, ends))
}

/// Returns whether the demuxer marks `packet` as decoded but not shown
/// (before an MP4 edit list's start), which the encode never sees either.
fn is_discarded(packet: &Packet) -> bool {
    // SAFETY: reading a plain field of a packet the demuxer just filled.
    let flags = unsafe { (*packet.as_ptr()).flags };
    flags & ffmpeg_next::ffi::AV_PKT_FLAG_DISCARD as libc::c_int != 0
}
