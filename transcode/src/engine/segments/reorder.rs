//! The one timestamp a segment's encoder cannot know: with B-frames, x264
//! and x265 stamp each packet's decoding time with the presentation time of
//! the picture `delay` places earlier in display order, and for a stream's
//! first `delay` packets, which have no such picture, they guess backwards
//! from the pictures after. In a single pass the pictures before a cut are
//! the previous segment's, so the join gives a segment's first `delay`
//! packets those times, as the single pass has them. At a constant frame
//! rate the guess is right already; with gaps between frames it would go
//! back in time.
//!
//! `delay` is learnt from the first segment: its packets decoded before its
//! first picture is shown (none without B-frames, as with VP9 and AV1).

/// The most reordering any encoder here uses (x264 allows 16 B-frames).
const MAX_DELAY: usize = 16;

/// What the join has seen of the decoding delay and the latest pictures.
#[derive(Debug, Default)]
pub(super) struct Reorder {
    /// The first picture's presentation time and the delay counted so far,
    /// until a packet decodes at or after it.
    first: Option<(i64, usize)>,
    /// The delay, once the first segment's leading packets are past.
    delay: Option<usize>,
    /// The latest presentation times, ascending, at most [`MAX_DELAY`].
    latest: Vec<i64>,
    /// The times the current segment's first packets decode at.
    owed: Vec<i64>,
}

impl Reorder {
    /// Returns the decoding time of packet `nth` of segment `index`, stamped
    /// `(dts, pts)` by its encoder.
    pub fn dts(
        &mut self,
        index: usize,
        nth: usize,
        dts: Option<i64>,
        pts: Option<i64>,
    ) -> Option<i64> {
        if index == 0 {
            self.learn(dts, pts);
        } else if nth == 0 {
            let delay = self.delay.unwrap_or(0).min(self.latest.len());
            self.owed = self.latest[self.latest.len() - delay..].to_vec();
        }
        let decoded = match self.owed.get(nth) {
            Some(owed) if index > 0 => Some(*owed),
            _ => dts,
        };
        if let Some(pts) = pts {
            let at = self.latest.partition_point(|latest| *latest < pts);
            self.latest.insert(at, pts);
            if self.latest.len() > MAX_DELAY {
                self.latest.remove(0);
            }
        }
        decoded
    }

    /// Counts the first segment's packets that decode before its first
    /// picture is shown.
    fn learn(&mut self, dts: Option<i64>, pts: Option<i64>) {
        if self.delay.is_some() {
            return;
        }
        let Some((first, counted)) = self.first.or(pts.map(|pts| (pts, 0))) else {
            return;
        };
        match dts {
            Some(dts) if dts < first && counted < MAX_DELAY => {
                self.first = Some((first, counted + 1));
            }
            _ => self.delay = Some(counted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `segments` of `(dts, pts)` through, returning the times given.
    fn run(segments: &[&[(i64, i64)]]) -> Vec<Vec<i64>> {
        let mut reorder = Reorder::default();
        segments
            .iter()
            .enumerate()
            .map(|(index, packets)| {
                packets
                    .iter()
                    .enumerate()
                    .map(|(nth, (dts, pts))| {
                        reorder
                            .dts(index, nth, Some(*dts), Some(*pts))
                            .unwrap_or(i64::MIN)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_segment_after_a_gap_decodes_as_the_single_pass_does() {
        // Two B-frames of delay; pictures at 0..=29 a tick apart, then
        // every third tick from 30, as x264 stamps a segment starting there
        // (guessing 30 - (36 - 30) for its first packet).
        let first: Vec<(i64, i64)> = [(-2, 0), (-1, 2), (0, 1), (1, 4), (2, 3)].to_vec();
        let second: Vec<(i64, i64)> = [(24, 30), (27, 36), (30, 33), (33, 39)].to_vec();
        let given = run(&[&first, &second]);
        assert_eq!(given[0], [-2, -1, 0, 1, 2]);
        // The single pass: the pictures at 3 and 4 decode them.
        assert_eq!(given[1], [3, 4, 30, 33]);
    }

    #[test]
    fn without_b_frames_nothing_changes() {
        let first: Vec<(i64, i64)> = (0..5).map(|t| (t, t)).collect();
        let second: Vec<(i64, i64)> = (5..9).map(|t| (t, t)).collect();
        let given = run(&[&first, &second]);
        assert_eq!(given[1], [5, 6, 7, 8]);
    }
}
