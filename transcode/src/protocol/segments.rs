//! Segment-parallel encoding as plain data: a video's [`SegmentPlan`] (where
//! it is cut), what each child task of a split job is given
//! ([`SegmentWork`], [`JoinWork`]), the [`VideoRate`] a segment is encoded
//! at, and how the segments' quality figures add up to the whole's.
//!
//! Timestamps are exact integers in the input video stream's own time base,
//! as its demuxer gives them (before the start-time shift the encode
//! applies), so that a cut is a single frame boundary: no frame is lost or
//! encoded twice, whichever node encodes which segment.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::report::Quality;

/// How the video encoder spends bits: a CRF, or an average bit rate (a
/// `target_size_bytes` job's, calibrated on the whole video).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoRate {
    /// Constant quality at this CRF, on the codec's own scale.
    Crf(u8),
    /// An average bit rate.
    Bitrate {
        /// Kilobits a second.
        kbps: u32,
    },
}

impl VideoRate {
    /// Returns the CRF, if this is one.
    pub fn crf(self) -> Option<u8> {
        match self {
            VideoRate::Crf(crf) => Some(crf),
            VideoRate::Bitrate { .. } => None,
        }
    }

    /// Returns the bit rate in kbit/s, if this is one.
    pub fn bitrate_kbps(self) -> Option<u32> {
        match self {
            VideoRate::Bitrate { kbps } => Some(kbps),
            VideoRate::Crf(_) => None,
        }
    }
}

/// A stream's time base, `num/den` seconds a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeBase {
    /// Numerator.
    pub num: i32,
    /// Denominator.
    pub den: i32,
}

impl TimeBase {
    /// Returns `ticks` in seconds.
    pub fn seconds(self, ticks: i64) -> f64 {
        ticks as f64 * f64::from(self.num) / f64::from(self.den)
    }

    /// Returns the ticks nearest `millis` milliseconds, or `None` for a
    /// time base that is not one.
    pub fn ticks_of_millis(self, millis: u64) -> Option<i64> {
        if self.num <= 0 || self.den <= 0 {
            return None;
        }
        let scale = 1000 * i128::from(self.num);
        let ticks = (i128::from(millis) * i128::from(self.den) + scale / 2) / scale;
        i64::try_from(ticks).ok()
    }
}

/// Where a video is cut: the segments to encode apart and join.
///
/// Small (about 100 bytes a segment in JSON), made once per job by
/// [`super::Task::Plan`], meant to be kept in the job's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPlan {
    /// The input video stream's time base, which every timestamp here
    /// counts in.
    pub time_base: TimeBase,
    /// The first frame's timestamp.
    pub first_pts: i64,
    /// Where the last frame ends.
    pub end_pts: i64,
    /// Frames (video packets) in the input.
    pub frames: u64,
    /// Whether the input has audio to encode ([`super::Task::Audio`]).
    pub has_audio: bool,
    /// The segments, in order, covering every frame once.
    pub segments: Vec<Segment>,
}

impl SegmentPlan {
    /// Returns the video's length in seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.time_base.seconds(self.end_pts - self.first_pts)
    }

    /// Returns the work of segment `index` at `rate` (`None`: the job's
    /// CRF), or `None` past the last segment.
    pub fn work(&self, index: usize, rate: Option<VideoRate>) -> Option<SegmentWork> {
        let segment = *self.segments.get(index)?;
        Some(SegmentWork {
            segment,
            count: u32::try_from(self.segments.len()).ok()?,
            time_base: self.time_base,
            rate,
        })
    }
}

/// One segment of a plan: the frames with `start_pts <= pts < end_pts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Its place in the plan, from 0.
    pub index: u32,
    /// The first frame's timestamp.
    pub start_pts: i64,
    /// The next segment's `start_pts`; `None` for the last segment.
    pub end_pts: Option<i64>,
    /// The keyframe decoding starts from: `start_pts` when the cut is at a
    /// keyframe, else the last one before it (its frames up to the cut are
    /// decoded and dropped).
    pub decode_from_pts: i64,
    /// The timestamp of the frame just before this segment (`None` for the
    /// first), so that the segment drops what a single encode would drop
    /// after it (two frames on one output tick keep the first).
    pub previous_pts: Option<i64>,
    /// Frames (video packets) in the segment.
    pub frames: u64,
}

impl Segment {
    /// Returns whether the segment starts between keyframes, decoded from
    /// the one before.
    pub fn is_exact_cut(&self) -> bool {
        self.decode_from_pts != self.start_pts
    }
}

/// What a [`super::Task::Segment`] encodes: one segment of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentWork {
    /// The segment, as the plan has it.
    pub segment: Segment,
    /// How many segments the plan has: written into the segment's file, so
    /// that the join can tell a missing or stray one.
    pub count: u32,
    /// The plan's time base: a segment of a plan made for another file is
    /// refused.
    pub time_base: TimeBase,
    /// The rate to encode at; `None` takes the job options' CRF (and is
    /// refused for a `target_size_bytes` or `min_ssim` job, whose rate is
    /// settled on the whole video first).
    #[serde(default)]
    pub rate: Option<VideoRate>,
}

/// What a [`super::Task::Join`] puts together into the job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinWork {
    /// Every segment's file, in the plan's order.
    pub segments: Vec<PathBuf>,
    /// The audio's file ([`super::Task::Audio`]), if the input has audio.
    #[serde(default)]
    pub audio: Option<PathBuf>,
    /// The rate the segments were encoded at, for the report; `None`: the
    /// job options' CRF.
    #[serde(default)]
    pub rate: Option<VideoRate>,
}

impl Quality {
    /// Returns the quality of a whole made of parts, each given with the
    /// frames it stands for (a segment's frame count): SSIM averaged by
    /// frames, PSNR of the mean squared error, as ffmpeg's filters would
    /// give over the whole. `None` when no part was measured.
    pub fn combine(parts: impl IntoIterator<Item = (Quality, u64)>) -> Option<Quality> {
        let (mut weight, mut ssim, mut error) = (0.0, 0.0, 0.0);
        let (mut sampled, mut frames) = (false, 0);
        for (part, stands_for) in parts {
            let w = stands_for as f64;
            weight += w;
            ssim += part.ssim * w;
            // PSNR = 10 log10(peak² / MSE): the peak cancels out.
            error += 10f64.powf(-part.psnr_db / 10.0) * w;
            sampled |= part.sampled;
            frames += part.frames;
        }
        if weight <= 0.0 {
            return None;
        }
        Some(Quality {
            ssim: ssim / weight,
            psnr_db: (-10.0 * (error / weight).log10()).min(100.0),
            sampled,
            frames,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_become_ticks_of_any_time_base() {
        let mp4 = TimeBase { num: 1, den: 15360 };
        assert_eq!(mp4.ticks_of_millis(30_000), Some(460_800));
        let ntsc = TimeBase {
            num: 1001,
            den: 30000,
        };
        // 2 s is 59.94 ticks of 1001/30000.
        assert_eq!(ntsc.ticks_of_millis(2_000), Some(60));
        assert_eq!(TimeBase { num: 0, den: 1 }.ticks_of_millis(1), None);
        assert!((ntsc.seconds(30) - 1.001).abs() < 1e-12);
    }

    #[test]
    fn tasks_read_as_json() {
        let work = SegmentWork {
            segment: Segment {
                index: 1,
                start_pts: 30720,
                end_pts: None,
                decode_from_pts: 0,
                previous_pts: Some(30208),
                frames: 30,
            },
            count: 2,
            time_base: TimeBase { num: 1, den: 15360 },
            rate: Some(VideoRate::Bitrate { kbps: 800 }),
        };
        let json = serde_json::to_string(&work).unwrap();
        assert!(
            json.contains(r#""rate":{"bitrate":{"kbps":800}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<SegmentWork>(&json).unwrap(), work);
        assert!(work.segment.is_exact_cut());
        let crf = serde_json::to_string(&VideoRate::Crf(30)).unwrap();
        assert_eq!(crf, r#"{"crf":30}"#);
    }

    #[test]
    fn quality_adds_up_by_frames_and_squared_error() {
        let part = |ssim, psnr_db, frames| Quality {
            ssim,
            psnr_db,
            sampled: false,
            frames,
        };
        let whole = Quality::combine([(part(0.9, 30.0, 10), 10), (part(0.99, 40.0, 30), 30)])
            .expect("a figure");
        assert!((whole.ssim - (0.9 * 10.0 + 0.99 * 30.0) / 40.0).abs() < 1e-12);
        // MSEs 1e-3 and 1e-4 (relative to the peak), weighted 1:3.
        let mse: f64 = (1e-3 + 3.0 * 1e-4) / 4.0;
        assert!((whole.psnr_db - (-10.0 * mse.log10())).abs() < 1e-9);
        assert_eq!(whole.frames, 40);
        assert_eq!(Quality::combine([]), None);
    }
}
