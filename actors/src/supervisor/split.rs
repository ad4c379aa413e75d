//! A split job's pieces as plain data: which videos are split
//! ([`SplitPolicy`]), and where each piece of one stands ([`Split`]): which
//! to hand the next worker, which attempt a report is about, how far the
//! whole is, what polls show of each segment, and what the join is given.
//! The supervisor's side of it (dispatch, reports, losses, the join) is
//! `pieces`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ractor::ActorId;
use vidpress_cluster::NodeName;
use vidpress_transcode::{
    EncodeOptions, JoinWork, MediaInfo, Parallel, Quality, RateMode, SegmentPlan, Timings,
};

use crate::counters::Attempt;
use crate::job::{Piece, SegmentStatus, SegmentView};
use crate::protocol::PieceWork;
use crate::record::DonePiece;

/// The share of a split job's progress that its audio stands for (it is
/// encoded once, in a small fraction of a segment's time).
const AUDIO_SHARE: f64 = 0.02;
/// The share of a split job's progress left for the join, reached only
/// when the result is in place.
const JOIN_SHARE: f64 = 0.01;

/// Which videos are cut into segments encoded on many workers at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    /// The length a segment aims at.
    pub segment: Duration,
    /// Videos longer than this are split.
    pub min_duration: Duration,
}

impl Default for SplitPolicy {
    /// `--segment-secs 30`, `--segment-min-secs 120`.
    fn default() -> Self {
        Self {
            segment: Duration::from_secs(30),
            min_duration: Duration::from_secs(120),
        }
    }
}

impl SplitPolicy {
    /// Returns whether a job of `options` on an input of `media` is split:
    /// it asks for no single pass, it is encoded at a CRF (the other rate
    /// modes settle their rate on the whole video), and its video is longer
    /// than [`Self::min_duration`] and than one segment.
    pub fn splits(&self, options: &EncodeOptions, media: Option<&MediaInfo>) -> bool {
        let Some(duration) = media.and_then(|m| m.duration_seconds) else {
            return false;
        };
        options.parallel == Parallel::Auto
            && matches!(options.rate(), RateMode::Crf(_))
            && duration > self.min_duration.as_secs_f64()
            && duration > self.segment.as_secs_f64()
    }
}

impl SplitPolicy {
    /// Returns the length to cut a video of `duration` seconds into, for a
    /// cluster of `workers` worker slots: about [`Self::segment`], as many
    /// segments as a multiple of the workers (rounded up), so that the last
    /// round of segments keeps every worker busy: 150 s in segments of 30 s
    /// is 5 segments, which two workers finish in three rounds; 6 of 25 s
    /// take them two.
    pub fn segment_for(&self, duration: f64, workers: usize) -> Duration {
        let aimed = self.segment.as_secs_f64();
        if duration <= 0.0 || aimed <= 0.0 {
            return self.segment;
        }
        // The plan makes round(duration / segment) segments.
        let count = (duration / aimed).round().max(1.0) as u64;
        let workers = workers.max(1) as u64;
        let count = count.div_ceil(workers) * workers;
        Duration::from_secs_f64(duration / count as f64)
    }
}

/// A piece being encoded.
#[derive(Clone, Debug)]
pub(super) struct Run {
    pub(super) attempt: Attempt,
    /// The node it runs on (the slot's, then as the worker says).
    pub(super) node: NodeName,
    /// The worker holding its slot.
    pub(super) worker: ActorId,
    /// Whether the worker said it started.
    pub(super) started: bool,
    /// When it was dispatched or last reported.
    pub(super) last_report: Instant,
    /// Fraction encoded, 0–1.
    pub(super) progress: f64,
}

/// Where one piece stands.
#[derive(Clone, Debug)]
pub(super) enum PieceState {
    Pending,
    Running(Run),
    Done(DonePiece),
}

/// A split job's pieces: each segment of its plan, then its audio.
#[derive(Debug)]
pub(super) struct Split {
    pub(super) plan: SegmentPlan,
    pub(super) pieces: BTreeMap<Piece, PieceState>,
    /// The join's attempt, once every piece is done and it started.
    pub(super) joining: Option<Attempt>,
}

impl Split {
    /// Returns the pieces of `plan`, those in `done` finished (when
    /// `kept` says their file is there; the others are encoded again).
    pub(super) fn new(plan: SegmentPlan, done: &[DonePiece], kept: impl Fn(Piece) -> bool) -> Self {
        let audio = plan.has_audio.then_some(Piece::Audio);
        let mut pieces: BTreeMap<Piece, PieceState> = (0..plan.segments.len() as u32)
            .map(Piece::Segment)
            .chain(audio)
            .map(|piece| (piece, PieceState::Pending))
            .collect();
        for d in done {
            if let Some(state) = pieces.get_mut(&d.piece) {
                if kept(d.piece) {
                    *state = PieceState::Done(d.clone());
                }
            }
        }
        Self {
            plan,
            pieces,
            joining: None,
        }
    }

    /// Returns the piece the next worker gets: the first pending segment,
    /// else the audio (short, so it fills a worker the last segments leave).
    pub(super) fn next_pending(&self) -> Option<Piece> {
        self.pieces
            .iter()
            .find(|(_, state)| matches!(state, PieceState::Pending))
            .map(|(piece, _)| *piece)
    }

    /// Returns the piece attempt `attempt` encodes, if it is running.
    pub(super) fn running_of(&self, attempt: Attempt) -> Option<Piece> {
        self.running()
            .find(|(_, run)| run.attempt == attempt)
            .map(|(piece, _)| piece)
    }

    /// Returns the running pieces.
    pub(super) fn running(&self) -> impl Iterator<Item = (Piece, &Run)> {
        self.pieces.iter().filter_map(|(piece, state)| match state {
            PieceState::Running(run) => Some((*piece, run)),
            _ => None,
        })
    }

    /// Returns the running piece `piece`, to update.
    pub(super) fn run_mut(&mut self, piece: Piece) -> Option<&mut Run> {
        match self.pieces.get_mut(&piece) {
            Some(PieceState::Running(run)) => Some(run),
            _ => None,
        }
    }

    /// Returns whether every piece is done.
    pub(super) fn all_done(&self) -> bool {
        self.pieces
            .values()
            .all(|state| matches!(state, PieceState::Done(_)))
    }

    /// Returns what a worker encodes for `piece`.
    pub(super) fn work(&self, piece: Piece) -> Option<PieceWork> {
        match piece {
            Piece::Segment(index) => self.plan.work(index as usize, None).map(PieceWork::Segment),
            Piece::Audio => self.plan.has_audio.then_some(PieceWork::Audio),
        }
    }

    /// Returns how much of the job is done, 0–1: the segments by their
    /// frames, the audio as [`AUDIO_SHARE`], short of the join's
    /// [`JOIN_SHARE`].
    pub(super) fn fraction(&self) -> f64 {
        let frames = self.plan.frames.max(1) as f64;
        let audio_share = if self.plan.has_audio {
            AUDIO_SHARE
        } else {
            0.0
        };
        let done = |state: &PieceState| match state {
            PieceState::Pending => 0.0,
            PieceState::Running(run) => run.progress.clamp(0.0, 1.0),
            PieceState::Done(_) => 1.0,
        };
        let whole: f64 = self
            .pieces
            .iter()
            .map(|(piece, state)| match piece {
                Piece::Segment(index) => {
                    let segment_frames = self
                        .plan
                        .segments
                        .get(*index as usize)
                        .map_or(0, |s| s.frames) as f64;
                    done(state) * segment_frames / frames * (1.0 - audio_share)
                }
                Piece::Audio => done(state) * audio_share,
            })
            .sum();
        whole.clamp(0.0, 1.0) * (1.0 - JOIN_SHARE)
    }

    /// Returns what polls show of each segment.
    pub(super) fn views(&self) -> Vec<SegmentView> {
        let plan = &self.plan;
        let at = |pts: i64| plan.time_base.seconds(pts - plan.first_pts).max(0.0);
        plan.segments
            .iter()
            .map(|segment| {
                let (status, node, progress) = match self.pieces.get(&Piece::Segment(segment.index))
                {
                    Some(PieceState::Running(run)) => {
                        (SegmentStatus::Running, Some(run.node.clone()), run.progress)
                    }
                    Some(PieceState::Done(done)) => {
                        (SegmentStatus::Done, Some(done.node.clone()), 1.0)
                    }
                    _ => (SegmentStatus::Pending, None, 0.0),
                };
                SegmentView {
                    index: segment.index,
                    start_seconds: at(segment.start_pts),
                    end_seconds: at(segment.end_pts.unwrap_or(plan.end_pts)),
                    status,
                    node,
                    progress: progress.clamp(0.0, 1.0),
                }
            })
            .collect()
    }

    /// Returns what the join is given: every segment's file (`file_of`
    /// says where a piece is), in order, and the audio's.
    pub(super) fn join_work(&self, file_of: impl Fn(Piece) -> PathBuf) -> JoinWork {
        JoinWork {
            segments: (0..self.plan.segments.len() as u32)
                .map(|index| file_of(Piece::Segment(index)))
                .collect(),
            audio: self.plan.has_audio.then(|| file_of(Piece::Audio)),
            rate: None,
        }
    }

    /// Returns the time the pieces took, added up (each on its own worker;
    /// the join's own time is not in it).
    pub(super) fn timings(&self) -> Timings {
        let mut sum = Timings {
            search_seconds: 0.0,
            encode_seconds: 0.0,
            quality_seconds: 0.0,
        };
        for state in self.pieces.values() {
            let PieceState::Done(done) = state else {
                continue;
            };
            if let Some(report) = &done.output.report {
                sum.search_seconds += report.timings.search_seconds;
                sum.encode_seconds += report.timings.encode_seconds;
                sum.quality_seconds += report.timings.quality_seconds;
            }
        }
        sum
    }

    /// Returns the quality of the whole, from its segments' figures, each
    /// standing for its frames.
    pub(super) fn quality(&self) -> Option<Quality> {
        Quality::combine(self.pieces.iter().filter_map(|(piece, state)| {
            let (Piece::Segment(index), PieceState::Done(done)) = (piece, state) else {
                return None;
            };
            let quality = done.output.report.as_ref()?.quality?;
            let frames = self.plan.segments.get(*index as usize)?.frames;
            Some((quality, frames))
        }))
    }
}

#[cfg(test)]
mod tests {
    use vidpress_transcode::{Output, Segment, TimeBase};

    use super::*;

    fn node(name: &str) -> NodeName {
        name.parse().expect("a node name")
    }

    /// Three segments of 30, 30 and 40 frames at 1/30 s a frame, and audio.
    fn plan() -> SegmentPlan {
        let segment = |index: u32, start: i64, end: Option<i64>, frames| Segment {
            index,
            start_pts: start,
            end_pts: end,
            decode_from_pts: start,
            previous_pts: (start > 0).then(|| start - 1),
            frames,
        };
        SegmentPlan {
            time_base: TimeBase { num: 1, den: 30 },
            first_pts: 0,
            end_pts: 100,
            frames: 100,
            has_audio: true,
            segments: vec![
                segment(0, 0, Some(30), 30),
                segment(1, 30, Some(60), 30),
                segment(2, 60, None, 40),
            ],
        }
    }

    fn done(piece: Piece) -> DonePiece {
        DonePiece {
            piece,
            attempt: Attempt::new(1),
            node: node("node-a"),
            output: Output {
                bytes: 10,
                report: None,
            },
        }
    }

    fn running(attempt: u32, progress: f64) -> PieceState {
        PieceState::Running(Run {
            attempt: Attempt::new(attempt),
            node: node("node-b"),
            worker: ActorId::Local(7),
            started: true,
            last_report: Instant::now(),
            progress,
        })
    }

    #[test]
    fn only_long_crf_jobs_that_allow_it_are_split() {
        let policy = SplitPolicy::default();
        let media = |seconds: f64| MediaInfo {
            duration_seconds: Some(seconds),
            width: 1280,
            height: 720,
            video_codec: "h264".into(),
            has_audio: true,
        };
        let crf = EncodeOptions::default();
        assert!(policy.splits(&crf, Some(&media(150.0))));
        assert!(!policy.splits(&crf, Some(&media(120.0))));
        assert!(!policy.splits(&crf, None));
        let off = EncodeOptions {
            parallel: Parallel::Off,
            ..crf
        };
        assert!(!policy.splits(&off, Some(&media(600.0))));
        let sized = EncodeOptions {
            target_size_bytes: Some(1 << 20),
            ..crf
        };
        assert!(!policy.splits(&sized, Some(&media(600.0))));
    }

    #[test]
    fn segments_come_in_rounds_of_the_clusters_workers() {
        let policy = SplitPolicy::default();
        let seconds = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        assert_eq!(seconds(policy.segment_for(150.0, 1)), 30.0);
        assert_eq!(seconds(policy.segment_for(150.0, 2)), 25.0);
        assert_eq!(seconds(policy.segment_for(150.0, 3)), 25.0);
        assert_eq!(seconds(policy.segment_for(150.0, 4)), 18.75);
        assert_eq!(seconds(policy.segment_for(600.0, 3)), 28.571);
        // Shorter than a segment: one round of the workers.
        assert_eq!(seconds(policy.segment_for(20.0, 2)), 10.0);
        for (duration, workers) in [(150.0, 2), (151.3, 3), (3600.0, 7), (125.0, 1)] {
            let segment = policy.segment_for(duration, workers).as_secs_f64();
            let count = (duration / segment).round() as usize;
            assert_eq!(count % workers, 0, "{duration} s on {workers}");
        }
    }

    #[test]
    fn segments_go_out_in_order_and_the_audio_last() {
        let mut split = Split::new(plan(), &[], |_| true);
        assert_eq!(split.next_pending(), Some(Piece::Segment(0)));
        split.pieces.insert(Piece::Segment(0), running(1, 0.0));
        split
            .pieces
            .insert(Piece::Segment(1), PieceState::Done(done(Piece::Segment(1))));
        assert_eq!(split.next_pending(), Some(Piece::Segment(2)));
        split.pieces.insert(Piece::Segment(2), running(2, 0.0));
        assert_eq!(split.next_pending(), Some(Piece::Audio));
        assert_eq!(split.running_of(Attempt::new(2)), Some(Piece::Segment(2)));
        assert_eq!(split.running_of(Attempt::new(3)), None);
    }

    #[test]
    fn done_pieces_are_kept_only_with_their_file() {
        let record = [done(Piece::Segment(0)), done(Piece::Segment(2))];
        let split = Split::new(plan(), &record, |piece| piece != Piece::Segment(2));
        assert!(matches!(
            split.pieces[&Piece::Segment(0)],
            PieceState::Done(_)
        ));
        assert!(matches!(
            split.pieces[&Piece::Segment(2)],
            PieceState::Pending
        ));
        assert_eq!(split.next_pending(), Some(Piece::Segment(1)));
        assert!(!split.all_done());
    }

    #[test]
    fn progress_weighs_segments_by_frames_and_leaves_the_join_its_share() {
        let mut split = Split::new(plan(), &[], |_| true);
        assert_eq!(split.fraction(), 0.0);
        split
            .pieces
            .insert(Piece::Segment(2), PieceState::Done(done(Piece::Segment(2))));
        split.pieces.insert(Piece::Segment(0), running(3, 0.5));
        let expected = (0.4 + 0.15) * (1.0 - AUDIO_SHARE) * (1.0 - JOIN_SHARE);
        assert!((split.fraction() - expected).abs() < 1e-12);
        for piece in [Piece::Segment(0), Piece::Segment(1), Piece::Audio] {
            split.pieces.insert(piece, PieceState::Done(done(piece)));
        }
        assert!(split.all_done());
        assert!((split.fraction() - (1.0 - JOIN_SHARE)).abs() < 1e-12);
    }

    #[test]
    fn polls_see_each_segment_with_its_times_and_node() {
        let mut split = Split::new(plan(), &[], |_| true);
        split.pieces.insert(Piece::Segment(1), running(4, 0.25));
        split
            .pieces
            .insert(Piece::Segment(2), PieceState::Done(done(Piece::Segment(2))));
        let views = split.views();
        assert_eq!(views.len(), 3);
        assert_eq!(views[0].status, SegmentStatus::Pending);
        assert_eq!(views[0].node, None);
        assert_eq!((views[1].start_seconds, views[1].end_seconds), (1.0, 2.0));
        assert_eq!(views[1].status, SegmentStatus::Running);
        assert_eq!(views[1].node, Some(node("node-b")));
        assert_eq!(views[1].progress, 0.25);
        assert_eq!(views[2].end_seconds, 100.0 / 30.0);
        assert_eq!(
            (views[2].status, views[2].progress),
            (SegmentStatus::Done, 1.0)
        );
    }

    #[test]
    fn the_join_gets_every_segment_in_order_and_the_audio() {
        let split = Split::new(plan(), &[], |_| true);
        let work = split.join_work(|piece| PathBuf::from(piece.file_name()));
        assert_eq!(
            work.segments,
            [
                "segment-0000.media",
                "segment-0001.media",
                "segment-0002.media"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(work.audio, Some(PathBuf::from("audio.media")));
    }
}
