//! The rate modes' arithmetic, apart from any encoding: the CRF search of
//! `min_ssim` and the bit rate of `target_size_bytes`.
//!
//! `min_ssim` searches as ab-av1's `crf-search` does: encode short samples
//! at a CRF, measure them, and pick the next CRF by interpolating between
//! the nearest CRF that reached the target and the nearest that missed it,
//! until they are one apart; the answer is the largest CRF that reached it.
//!
//! `target_size_bytes` gives the video what the file has left once the
//! audio and the container's overhead are paid for, spread over the
//! duration as an average bit rate; a pass that misses the size by more
//! than [`SIZE_TOLERANCE`] corrects the rate by what it missed and runs
//! again, at most [`MAX_SIZE_PASSES`] passes in all.

use crate::protocol::{Codec, ErrorCode, TranscodeError};

/// How far from the asked size a pass may land and be kept without
/// another (the contract allows ±5 %).
pub(super) const SIZE_TOLERANCE: f64 = 0.03;

/// Passes of a `target_size_bytes` encode at most.
pub(super) const MAX_SIZE_PASSES: usize = 3;

/// The search aims this much above `min_ssim`, since the samples only
/// predict the whole video's SSIM.
pub(super) const SSIM_MARGIN: f64 = 0.002;

/// CRFs tried at most by one search.
const MAX_PROBES: usize = 8;

/// The lowest video bit rate a target may leave, whatever the picture.
const MIN_VIDEO_KBPS: f64 = 16.0;

/// The fewest bits a pixel of a frame may get on average for a watchable
/// video (at 1280x720 and 30 fps, 138 kbit/s).
const MIN_BITS_PER_PIXEL: f64 = 0.005;

/// Where a CRF search stands: every CRF tried and the SSIM it gave.
#[derive(Debug)]
pub(super) struct CrfSearch {
    target: f64,
    min: u8,
    max: u8,
    first: u8,
    /// A step when only one side of the target is known.
    step: u8,
    tried: Vec<(u8, f64)>,
}

impl CrfSearch {
    /// Starts a search for the largest CRF of `codec` whose SSIM is at least
    /// `target`, from the codec's default CRF.
    pub fn new(codec: Codec, target: f64) -> Self {
        CrfSearch {
            target,
            min: codec.crf_min(),
            max: codec.crf_max(),
            first: codec.default_crf(),
            step: codec.crf_max() / 8,
            tried: Vec::new(),
        }
    }

    /// Notes that `crf` gave `ssim`.
    pub fn record(&mut self, crf: u8, ssim: f64) {
        self.tried.push((crf, ssim));
    }

    /// Returns every CRF tried, in order, with its SSIM.
    pub fn tried(&self) -> &[(u8, f64)] {
        &self.tried
    }

    /// The lowest CRF tried that missed the target, with its SSIM.
    fn lowest_miss(&self) -> Option<(u8, f64)> {
        self.tried
            .iter()
            .filter(|(_, ssim)| *ssim < self.target)
            .min_by_key(|(crf, _)| *crf)
            .copied()
    }

    /// The highest CRF tried that reached the target below every miss.
    fn highest_hit(&self) -> Option<(u8, f64)> {
        let ceiling = self.lowest_miss().map_or(u8::MAX, |(crf, _)| crf);
        self.tried
            .iter()
            .filter(|(crf, ssim)| *ssim >= self.target && *crf < ceiling)
            .max_by_key(|(crf, _)| *crf)
            .copied()
    }

    /// Returns the next CRF to try, or `None` when the search is over.
    pub fn next(&self) -> Option<u8> {
        if self.tried.is_empty() {
            return Some(self.first);
        }
        if self.tried.len() >= MAX_PROBES {
            return None;
        }
        let candidate = match (self.highest_hit(), self.lowest_miss()) {
            (Some((hit, _)), None) => hit.saturating_add(self.step).min(self.max),
            (None, Some((miss, _))) if miss > self.min => {
                miss.saturating_sub(self.step).max(self.min)
            }
            (None, Some(_)) => return None,
            (Some((hit, hit_ssim)), Some((miss, miss_ssim))) => {
                if miss <= hit + 1 {
                    return None;
                }
                // Where the line through both points meets the target.
                let share = (hit_ssim - self.target) / (hit_ssim - miss_ssim).max(f64::EPSILON);
                let guess = f64::from(hit) + share * f64::from(miss - hit);
                (guess.round() as u8).clamp(hit + 1, miss - 1)
            }
            (None, None) => return None,
        };
        (!self.tried.iter().any(|(crf, _)| *crf == candidate)).then_some(candidate)
    }

    /// Returns the lowest CRF the codec takes.
    pub fn min(&self) -> u8 {
        self.min
    }

    /// Returns the answer: the largest CRF that reached the target, or the
    /// lowest tried when none did.
    pub fn best(&self) -> u8 {
        match self.highest_hit() {
            Some((crf, _)) => crf,
            None => self
                .tried
                .iter()
                .map(|(crf, _)| *crf)
                .min()
                .unwrap_or(self.min),
        }
    }
}

/// What a `target_size_bytes` encode is to fit in.
#[derive(Debug, Clone, Copy)]
pub(super) struct SizeBudget {
    /// The whole file, as asked.
    pub target_bytes: u64,
    /// Bytes that are not the video's: the audio and the container.
    pub fixed_bytes: f64,
    pub duration_seconds: f64,
}

impl SizeBudget {
    /// Works out what the audio (`audio_kbps`, `None` without audio) and
    /// the container take of `target_bytes` over `duration_seconds`.
    pub fn new(target_bytes: u64, duration_seconds: f64, audio_kbps: Option<u32>) -> Self {
        let audio = audio_kbps.map_or(0.0, |kbps| f64::from(kbps) * 1000.0 / 8.0);
        // Headers and the index: a few kB, and about a kB a second of
        // per-sample tables and cluster headers.
        let container = 4_000.0 + 1_000.0 * duration_seconds;
        SizeBudget {
            target_bytes,
            fixed_bytes: container + audio * duration_seconds,
            duration_seconds,
        }
    }

    /// Returns the video bit rate in kbit/s that fills the budget, or
    /// `target_too_small` if that is below a watchable rate for pictures of
    /// `width`×`height` at `fps`.
    pub fn video_kbps(&self, width: u32, height: u32, fps: f64) -> Result<u32, TranscodeError> {
        let left = self.target_bytes as f64 - self.fixed_bytes;
        let kbps = left * 8.0 / 1000.0 / self.duration_seconds;
        let floor = MIN_VIDEO_KBPS
            .max(MIN_BITS_PER_PIXEL * f64::from(width) * f64::from(height) * fps / 1000.0);
        if kbps < floor {
            let smallest = (self.fixed_bytes + floor * 1000.0 / 8.0 * self.duration_seconds).ceil();
            return Err(TranscodeError::new(
                ErrorCode::TargetTooSmall,
                format!(
                    "target_size_bytes {} leaves {:.0} kbit/s for {:.1} s of {width}x{height} \
                     video once the audio and the container are paid for; a watchable video \
                     needs at least {floor:.0} kbit/s, a file of at least {smallest:.0} bytes",
                    self.target_bytes,
                    kbps.max(0.0),
                    self.duration_seconds,
                ),
            ));
        }
        Ok(kbps.round() as u32)
    }

    /// Returns the bit rate for another pass after one at `kbps` made a
    /// file of `got_bytes`: scaled by how far the video part missed, by at
    /// most a factor of two either way.
    pub fn corrected(&self, kbps: u32, got_bytes: u64) -> u32 {
        let wanted = self.target_bytes as f64 - self.fixed_bytes;
        let got = (got_bytes as f64 - self.fixed_bytes).max(1.0);
        let ratio = (wanted / got).clamp(0.5, 2.0);
        ((f64::from(kbps) * ratio).round() as u32).max(1)
    }

    /// Returns how far `got_bytes` is from the target, as a share of it.
    pub fn miss(&self, got_bytes: u64) -> f64 {
        (got_bytes as f64 - self.target_bytes as f64).abs() / self.target_bytes as f64
    }
}

/// Returns `count` windows of `length` seconds spread evenly over a video
/// of `duration` seconds (each centred in its share of the video), or the
/// whole video as one window when it is not longer than the windows
/// together.
pub(super) fn sample_windows(duration: f64, count: usize, length: f64) -> Vec<(f64, f64)> {
    if count == 0 || duration <= length * count as f64 {
        return vec![(0.0, duration.max(0.0))];
    }
    let share = duration / count as f64;
    (0..count)
        .map(|i| {
            let start = share * i as f64 + (share - length) / 2.0;
            (start, start + length)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a made-up SSIM curve, returning the answer and
    /// the CRFs tried.
    fn search(codec: Codec, target: f64, curve: impl Fn(u8) -> f64) -> (u8, Vec<u8>) {
        let mut search = CrfSearch::new(codec, target);
        while let Some(crf) = search.next() {
            search.record(crf, curve(crf));
        }
        let tried = search.tried().iter().map(|(crf, _)| *crf).collect();
        (search.best(), tried)
    }

    /// SSIM falling steadily with the CRF, as it roughly does.
    fn linear(crf: u8) -> f64 {
        1.0 - 0.002 * f64::from(crf)
    }

    #[test]
    fn finds_the_largest_crf_that_reaches_the_target() {
        // 1 - 0.002 crf >= 0.95  <=>  crf <= 25.
        let (best, tried) = search(Codec::H264, 0.95, linear);
        assert_eq!(best, 25, "tried {tried:?}");
        assert!(tried.len() <= 5, "tried {tried:?}");
        // Upwards from the default when the default passes.
        let (best, tried) = search(Codec::Av1, 0.90, linear);
        assert_eq!(best, 50, "tried {tried:?}");
        assert_eq!(tried[0], 40);
    }

    #[test]
    fn stops_at_the_ends_of_the_scale() {
        let (best, _) = search(Codec::H264, 0.5, linear);
        assert_eq!(best, 51);
        // Nothing reaches it: the lowest CRF tried.
        let (best, tried) = search(Codec::H264, 1.5, linear);
        assert_eq!(best, 0, "tried {tried:?}");
        // SVT-AV1's scale starts at 1.
        let (best, tried) = search(Codec::Av1, 1.5, linear);
        assert_eq!(best, 1, "tried {tried:?}");
        assert!(tried.iter().all(|crf| *crf >= 1), "tried {tried:?}");
    }

    #[test]
    fn a_noisy_curve_never_answers_above_a_miss() {
        // 30 misses but 33 passes: the answer stays below 30.
        let noisy = |crf: u8| match crf {
            33 => 0.96,
            _ => linear(crf),
        };
        let (best, tried) = search(Codec::H264, 0.95, noisy);
        assert!(best < 30 || !tried.contains(&30), "{best} {tried:?}");
        assert!(linear(best) >= 0.95);
    }

    #[test]
    fn the_budget_pays_for_audio_and_container_first() {
        let budget = SizeBudget::new(10_000_000, 40.0, Some(96));
        // 96 kbit/s of audio is 480 kB; the container 44 kB.
        assert_eq!(budget.fixed_bytes, 44_000.0 + 480_000.0);
        let kbps = budget.video_kbps(1280, 720, 30.0).unwrap();
        assert_eq!(
            kbps,
            ((10_000_000.0 - 524_000.0) * 8.0 / 1000.0 / 40.0f64).round() as u32
        );
    }

    #[test]
    fn a_target_too_small_says_what_would_do() {
        let budget = SizeBudget::new(300_000, 40.0, Some(96));
        let err = budget.video_kbps(1280, 720, 30.0).unwrap_err();
        assert_eq!(err.code, ErrorCode::TargetTooSmall);
        assert!(
            err.message.contains("at least 138 kbit/s"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("a file of at least 1215"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_missed_pass_is_corrected_by_what_the_video_missed() {
        let budget = SizeBudget::new(1_100_000, 10.0, None);
        // fixed 14 kB: the video wanted 1,086 kB and made 1,300 kB - 14 kB.
        let kbps = budget.corrected(1000, 1_300_000);
        assert_eq!(kbps, (1000.0 * 1_086_000.0 / 1_286_000.0f64).round() as u32);
        assert_eq!(budget.corrected(1000, 20_000), 2000, "at most doubled");
        assert!((budget.miss(1_155_000) - 0.05).abs() < 1e-9);
    }

    #[test]
    fn samples_spread_over_the_video() {
        assert_eq!(sample_windows(5.0, 3, 2.0), vec![(0.0, 5.0)]);
        let windows = sample_windows(40.0, 4, 2.0);
        assert_eq!(windows.len(), 4);
        assert_eq!(windows[0], (4.0, 6.0));
        assert_eq!(windows[3], (34.0, 36.0));
    }
}
