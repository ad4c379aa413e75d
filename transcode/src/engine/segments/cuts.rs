//! Where a video is cut, as pure functions over its frames' timestamps.
//!
//! The video is cut into `round(duration / segment)` segments of equal
//! length (so each is between two thirds and one and a half of the length
//! asked for, at most [`MAX_SEGMENTS`]). Each ideal cut moves to the nearest
//! keyframe if one lies within a quarter of that length ([`cut_points`]),
//! since a segment that starts on a keyframe costs no extra decoding;
//! otherwise the cut is exact, at the first frame from the ideal point on,
//! and its segment decodes from the keyframe before and drops what comes
//! before the cut ([`segments`]). A quarter keeps every segment at least
//! half the length, however the keyframes fall.

use crate::protocol::Segment;

/// The most segments a plan has: a plan stays small enough for a job
/// record and a child's event line, and a segment is worth a dispatch.
pub(super) const MAX_SEGMENTS: i64 = 1000;

/// A video packet: its presentation timestamp and whether decoding can
/// start there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    pub pts: i64,
    pub key: bool,
}

/// Where a segment starts: at a keyframe, or exactly at an ideal point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    pub at: i64,
    pub keyframe: bool,
}

/// Returns the cuts of a video that runs from `first` to `end` (ticks) with
/// keyframes at `keyframes` (sorted), into segments of about `segment`
/// ticks. No cut for a video shorter than one and a half segments.
pub(super) fn cut_points(keyframes: &[i64], first: i64, end: i64, segment: i64) -> Vec<Cut> {
    let length = i128::from(end) - i128::from(first);
    if length <= 0 || segment <= 0 {
        return Vec::new();
    }
    let segment = i128::from(segment);
    let count = ((length + segment / 2) / segment).clamp(1, i128::from(MAX_SEGMENTS));
    let tolerance = length / (4 * count);
    let mut cuts: Vec<Cut> = Vec::new();
    for i in 1..count {
        let ideal = i128::from(first) + length * i / count;
        let after = cuts
            .last()
            .map_or(i128::from(first), |cut| i128::from(cut.at));
        let keyframe = nearest(keyframes, ideal)
            .filter(|key| (i128::from(*key) - ideal).abs() <= tolerance)
            .filter(|key| i128::from(*key) > after && i128::from(*key) < i128::from(end));
        let cut = match keyframe {
            Some(at) => Cut { at, keyframe: true },
            // Between `first` and `end`, so it fits.
            None => Cut {
                at: i64::try_from(ideal).unwrap_or(end),
                keyframe: false,
            },
        };
        if i128::from(cut.at) > after {
            cuts.push(cut);
        }
    }
    cuts
}

/// Returns the keyframe nearest `ideal` (the earlier of two as near).
fn nearest(keyframes: &[i64], ideal: i128) -> Option<i64> {
    let at = keyframes.partition_point(|key| i128::from(*key) < ideal);
    let before = at.checked_sub(1).and_then(|i| keyframes.get(i));
    let after = keyframes.get(at);
    match (before, after) {
        (Some(b), Some(a)) => {
            let (b_off, a_off) = (ideal - i128::from(*b), i128::from(*a) - ideal);
            Some(if a_off < b_off { *a } else { *b })
        }
        (Some(only), None) | (None, Some(only)) => Some(*only),
        (None, None) => None,
    }
}

/// Returns the segments of a video whose frames, sorted by timestamp, are
/// `frames`, cut at `cuts`: an exact cut moves to the first frame at or
/// after it, and a cut that would leave a segment without frames is
/// dropped. The first segment starts at the first frame and is never an
/// exact cut (it decodes from the file's start).
pub(super) fn segments(frames: &[Frame], cuts: &[Cut]) -> Vec<Segment> {
    let Some(first) = frames.first() else {
        return Vec::new();
    };
    let mut starts = vec![first.pts];
    for cut in cuts {
        let at = frames.partition_point(|frame| frame.pts < cut.at);
        if let Some(frame) = frames.get(at) {
            if starts.last().is_some_and(|last| frame.pts > *last) {
                starts.push(frame.pts);
            }
        }
    }
    let count_before = |pts: i64| frames.partition_point(|frame| frame.pts < pts);
    starts
        .iter()
        .enumerate()
        .map(|(index, &start)| {
            let end = starts.get(index + 1).copied();
            let from = count_before(start);
            let to = end.map_or(frames.len(), count_before);
            let decode_from = if index == 0 {
                start
            } else {
                frames[..=from.min(frames.len() - 1)]
                    .iter()
                    .rev()
                    .find(|frame| frame.key && frame.pts <= start)
                    .map_or(first.pts, |frame| frame.pts)
            };
            Segment {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                start_pts: start,
                end_pts: end,
                decode_from_pts: decode_from,
                previous_pts: from.checked_sub(1).map(|i| frames[i].pts),
                frames: (to - from) as u64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` frames a tick apart from 0, a keyframe every `gop`.
    fn frames(count: i64, gop: i64) -> Vec<Frame> {
        (0..count)
            .map(|pts| Frame {
                pts,
                key: pts % gop == 0,
            })
            .collect()
    }

    fn keys(frames: &[Frame]) -> Vec<i64> {
        frames.iter().filter(|f| f.key).map(|f| f.pts).collect()
    }

    fn plan(frames: &[Frame], segment: i64) -> Vec<Segment> {
        let end = frames.last().map_or(0, |f| f.pts + 1);
        let cuts = cut_points(&keys(frames), frames[0].pts, end, segment);
        segments(frames, &cuts)
    }

    #[test]
    fn cuts_move_to_keyframes_within_a_quarter_of_a_segment() {
        // 300 frames a tick apart, keyframes every 48, segments of 100:
        // the ideal cuts at 100 and 200 move to 96 and 192.
        let cuts = cut_points(&keys(&frames(300, 48)), 0, 300, 100);
        assert_eq!(
            cuts,
            [
                Cut {
                    at: 96,
                    keyframe: true
                },
                Cut {
                    at: 192,
                    keyframe: true
                }
            ]
        );
    }

    #[test]
    fn cuts_are_exact_where_no_keyframe_is_near() {
        // Keyframes every 1000: none within 25 of 100, 200.
        let all = frames(300, 1000);
        let cuts = cut_points(&keys(&all), 0, 300, 100);
        assert!(cuts.iter().all(|cut| !cut.keyframe), "{cuts:?}");
        let segments = segments(&all, &cuts);
        assert_eq!(segments.len(), 3);
        assert_eq!(
            segments[1],
            Segment {
                index: 1,
                start_pts: 100,
                end_pts: Some(200),
                decode_from_pts: 0,
                previous_pts: Some(99),
                frames: 100,
            }
        );
        assert!(segments[1].is_exact_cut() && !segments[0].is_exact_cut());
        assert_eq!(segments[2].end_pts, None);
    }

    #[test]
    fn every_frame_is_in_exactly_one_segment() {
        for (count, gop, segment) in [(300, 48, 100), (1000, 7, 33), (500, 250, 120), (90, 1, 10)] {
            let all = frames(count, gop);
            let segments = plan(&all, segment);
            assert_eq!(
                segments.iter().map(|s| s.frames).sum::<u64>(),
                count as u64,
                "{count} {gop} {segment}"
            );
            for pair in segments.windows(2) {
                assert_eq!(pair[0].end_pts, Some(pair[1].start_pts));
                assert_eq!(pair[1].previous_pts, Some(pair[1].start_pts - 1));
                assert!(pair[1].decode_from_pts <= pair[1].start_pts);
                let length = pair[0].frames as i64;
                assert!(
                    length * 2 >= segment && length <= segment * 2,
                    "{length} of {segment}"
                );
            }
        }
    }

    #[test]
    fn a_video_shorter_than_a_segment_is_one_segment() {
        let all = frames(40, 1000);
        let segments = plan(&all, 100);
        assert_eq!(segments.len(), 1);
        assert_eq!(
            (
                segments[0].start_pts,
                segments[0].end_pts,
                segments[0].frames
            ),
            (0, None, 40)
        );
        // Up to one and a half segments stays one.
        assert_eq!(plan(&frames(149, 1000), 100).len(), 1);
        assert_eq!(plan(&frames(150, 1000), 100).len(), 2);
    }

    #[test]
    fn exact_cuts_land_on_real_frames() {
        // A frame every tenth tick from 1000: ideal cuts at 1075, 1150 and
        // 1225 move to the frames at or after them.
        let all: Vec<Frame> = (0..30)
            .map(|i| Frame {
                pts: 1000 + 10 * i,
                key: i == 0,
            })
            .collect();
        let cuts = cut_points(&keys(&all), 1000, 1300, 70);
        let segments = segments(&all, &cuts);
        let starts: Vec<i64> = segments.iter().map(|s| s.start_pts).collect();
        assert_eq!(starts, [1000, 1080, 1150, 1230]);
        assert_eq!(segments[1].decode_from_pts, 1000);
        assert_eq!(segments[1].previous_pts, Some(1070));
        assert_eq!(segments[1].frames, 7);
    }

    #[test]
    fn the_count_is_bounded() {
        let cuts = cut_points(&[0], 0, 10_000_000, 10);
        assert_eq!(cuts.len() as i64, MAX_SEGMENTS - 1);
        assert!(cut_points(&[0], 0, 0, 10).is_empty());
        assert!(segments(&[], &cuts).is_empty());
    }
}
