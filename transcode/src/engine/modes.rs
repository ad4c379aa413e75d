//! The three rate modes as passes: a CRF is one pass; a size target is a
//! pass at a bit rate, corrected and run again while it misses; a minimum
//! SSIM is a CRF search on samples, then one pass at the CRF found (one
//! more, a step lower, if the output measures under the target).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::encoders::VideoRate;
use super::input::{self, Input};
use super::pass::{self, Measure, Pass, PassResult};
use super::progress::Progress;
use super::rate::{self, CrfSearch, SizeBudget};
use crate::protocol::{
    ChildEvent, EncodeOptions, ErrorCode, Output, OutputReport, Quality, RateMode, Timings,
    TranscodeError, TranscodeJob,
};

/// The share of a `min_ssim` job's progress its search stands for.
const SEARCH_SHARE: f64 = 0.3;

/// Samples of a search: about one per this many seconds of video…
const SECONDS_PER_SAMPLE: f64 = 15.0;
/// …between these many…
const SAMPLES: std::ops::RangeInclusive<usize> = 2..=6;
/// …of this length.
const SAMPLE_SECONDS: f64 = 2.0;

/// How much lower the CRF goes when the output measures under `min_ssim`.
const RETRY_STEP: u8 = 2;

/// Encodes `job` by its rate mode into `job.output` and reports on it.
/// `input` is open already (its probe reported); passes after the first
/// open the file again.
pub(super) fn encode(
    job: &TranscodeJob,
    input: Input,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    let input_bytes = std::fs::metadata(&job.input).map_or(0, |meta| meta.len());
    let mut progress = Progress::new(input.info.duration_seconds, input_bytes);
    let mut runner = Runner {
        job,
        input: Some(input),
        progress: &mut progress,
        on_event,
    };
    match job.options.rate() {
        RateMode::Crf(crf) => runner.at_crf(crf),
        RateMode::TargetSize(bytes) => runner.fit_size(bytes),
        RateMode::MinSsim(target) => runner.reach_ssim(target),
    }
}

/// Runs the passes of one job.
struct Runner<'a> {
    job: &'a TranscodeJob,
    /// The input as the probe opened it, for the first pass.
    input: Option<Input>,
    progress: &'a mut Progress,
    on_event: &'a mut dyn FnMut(ChildEvent),
}

impl Runner<'_> {
    /// `crf`: one pass.
    fn at_crf(&mut self, crf: u8) -> Result<Output, TranscodeError> {
        let output = self.job.output.clone();
        let result = self.pass(&output, VideoRate::Crf(crf), None, Measure::WithinBudget)?;
        Ok(self.output(result, Some(crf), None, 0.0))
    }

    /// `target_size_bytes`: passes at a bit rate until one lands within
    /// [`rate::SIZE_TOLERANCE`]; the closest is kept.
    fn fit_size(&mut self, target: u64) -> Result<Output, TranscodeError> {
        let max_height = self.job.options.max_height;
        let (duration, fps, has_audio, (width, height)) = {
            let input = self.input_mut()?;
            let duration = input
                .info
                .duration_seconds
                .filter(|seconds| *seconds > 0.0)
                .ok_or_else(|| {
                    TranscodeError::new(
                        ErrorCode::UnsupportedFormat,
                        "target_size_bytes needs the video's duration, which this file does \
                         not declare",
                    )
                })?;
            let fps = input
                .ctx
                .stream(input.video_index)
                .map(|stream| f64::from(stream.avg_frame_rate()))
                .filter(|fps| fps.is_finite() && *fps > 0.0)
                .unwrap_or(30.0);
            let size =
                super::video_graph::output_size(input.info.width, input.info.height, max_height);
            (duration, fps, input.audio_index.is_some(), size)
        };
        let audio = has_audio.then_some(self.job.options.audio_bitrate_kbps);
        let budget = SizeBudget::new(target, duration, audio);
        let mut kbps = budget.video_kbps(width, height, fps)?;

        let started = Instant::now();
        let mut best: Option<(PassResult, u32, PathBuf)> = None;
        for round in 0..rate::MAX_SIZE_PASSES {
            let path = pass_path(&self.job.output, round);
            let from = self.progress.fraction();
            let share = 1.0 / (rate::MAX_SIZE_PASSES - round) as f64;
            self.progress.band(from, from + (1.0 - from) * share, None);
            let result = self.pass(
                &path,
                VideoRate::Bitrate { kbps },
                None,
                Measure::WithinBudget,
            )?;
            let miss = budget.miss(result.bytes);
            tracing::debug!(round, kbps, bytes = result.bytes, miss, "size pass");
            let next = budget.corrected(kbps, result.bytes);
            let closer = best
                .as_ref()
                .is_none_or(|(kept, _, _)| miss < budget.miss(kept.bytes));
            if closer {
                if let Some((_, _, old)) = best.replace((result, kbps, path)) {
                    let _ = std::fs::remove_file(old);
                }
            } else {
                let _ = std::fs::remove_file(&path);
            }
            if miss <= rate::SIZE_TOLERANCE || next == kbps {
                break;
            }
            kbps = next;
        }
        let Some((result, kbps, path)) = best else {
            return Err(TranscodeError::new(ErrorCode::Internal, "no size pass ran"));
        };
        std::fs::rename(&path, &self.job.output).map_err(|err| {
            TranscodeError::new(
                ErrorCode::Io,
                format!(
                    "the output could not be stored: {}",
                    super::lower(&err.to_string())
                ),
            )
        })?;
        let search = (started.elapsed() - result.elapsed).as_secs_f64();
        Ok(self.output(result, None, Some(kbps), search))
    }

    /// `min_ssim`: a CRF search on samples, then the output at the CRF
    /// found, once more a step lower if it measures under the target.
    fn reach_ssim(&mut self, target: f64) -> Result<Output, TranscodeError> {
        let started = Instant::now();
        let duration = self.input_mut()?.info.duration_seconds.unwrap_or(0.0);
        let count = ((duration / SECONDS_PER_SAMPLE).round() as usize)
            .clamp(*SAMPLES.start(), *SAMPLES.end());
        let windows = rate::sample_windows(duration, count, SAMPLE_SECONDS);
        let whole = windows.len() == 1;
        let sample = pass_path(&self.job.output, 0);

        let codec = self.job.options.codec;
        let mut search = CrfSearch::new(codec, target + rate::SSIM_MARGIN);
        // An estimate of the search's length, for its share of progress.
        let probes = 5.0;
        while let Some(crf) = search.next() {
            let (mut weighted, mut frames) = (0.0, 0u64);
            for (i, window) in windows.iter().enumerate() {
                let step = SEARCH_SHARE / probes / windows.len() as f64;
                let from = self.progress.fraction().max(
                    SEARCH_SHARE * (search.tried().len() as f64 / probes).min(0.95)
                        + step * i as f64,
                );
                let to = (from + step).min(SEARCH_SHARE);
                // A video too short to sample is searched whole.
                let span = (!whole).then_some(*window);
                self.progress.band(from, to, span);
                let result = self.pass(&sample, VideoRate::Crf(crf), span, Measure::Every);
                let _ = std::fs::remove_file(&sample);
                let quality = result?.quality.ok_or_else(unmeasured)?;
                weighted += quality.ssim * quality.frames as f64;
                frames += quality.frames;
            }
            let ssim = weighted / (frames.max(1) as f64);
            tracing::debug!(crf, ssim, frames, "search probe");
            search.record(crf, ssim);
        }
        let mut crf = search.best();
        let search_seconds = started.elapsed().as_secs_f64();

        let output = self.job.output.clone();
        self.progress.band(SEARCH_SHARE, 1.0, None);
        let mut result = self.pass(&output, VideoRate::Crf(crf), None, Measure::WithinBudget)?;
        let mut wasted = 0.0;
        let under = |quality: Option<Quality>| quality.is_some_and(|q| q.ssim < target);
        if under(result.quality) && crf > search.min() {
            tracing::debug!(crf, ssim = ?result.quality, "output under min_ssim, once more");
            wasted = result.elapsed.as_secs_f64();
            crf = crf.saturating_sub(RETRY_STEP).max(search.min());
            let from = self.progress.fraction();
            self.progress.band(from, 1.0, None);
            result = self.pass(&output, VideoRate::Crf(crf), None, Measure::WithinBudget)?;
        }
        Ok(self.output(result, Some(crf), None, search_seconds + wasted))
    }

    /// Returns the input for the next pass: the probe's for the first,
    /// else the file opened again.
    fn input_mut(&mut self) -> Result<&mut Input, TranscodeError> {
        if self.input.is_none() {
            self.input = Some(input::open(&self.job.input, &self.job.limits)?);
        }
        self.input
            .as_mut()
            .ok_or_else(|| TranscodeError::new(ErrorCode::Internal, "the input is not open"))
    }

    /// Runs one pass into `path`; the input is used up by it.
    fn pass(
        &mut self,
        path: &Path,
        rate: VideoRate,
        window: Option<(f64, f64)>,
        measure: Measure,
    ) -> Result<PassResult, TranscodeError> {
        let job = self.job;
        self.input_mut()?;
        let mut input = self
            .input
            .take()
            .ok_or_else(|| TranscodeError::new(ErrorCode::Internal, "the input is not open"))?;
        let pass = Pass {
            output: path,
            rate,
            window,
            measure,
            segment: None,
        };
        pass::encode(job, &mut input, &pass, self.progress, self.on_event)
    }

    /// The job's output and its report, from the pass that made it.
    fn output(
        &mut self,
        result: PassResult,
        crf: Option<u8>,
        video_bitrate_kbps: Option<u32>,
        search_seconds: f64,
    ) -> Output {
        (self.on_event)(ChildEvent::Progress {
            fraction: 1.0,
            out_seconds: result.seconds,
        });
        output(
            &self.job.options,
            result,
            crf,
            video_bitrate_kbps,
            search_seconds,
        )
    }
}

/// Returns the output a pass made with `options` and its report: encoded
/// at `crf` or at `video_bitrate_kbps`, after `search_seconds` of passes
/// thrown away.
pub(super) fn output(
    options: &EncodeOptions,
    result: PassResult,
    crf: Option<u8>,
    video_bitrate_kbps: Option<u32>,
    search_seconds: f64,
) -> Output {
    Output {
        bytes: result.bytes,
        report: Some(OutputReport {
            codec: options.codec,
            format: options.format,
            crf,
            video_bitrate_kbps,
            width: result.width,
            height: result.height,
            duration_seconds: result.seconds,
            quality: result.quality,
            timings: Timings {
                search_seconds,
                encode_seconds: result.elapsed.as_secs_f64(),
                quality_seconds: result.quality_time.as_secs_f64(),
            },
        }),
    }
}

/// Returns where pass `round` of a job writes: beside the output, removed
/// or renamed over it once done.
fn pass_path(output: &Path, round: usize) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".pass-{round}"));
    output.with_file_name(name)
}

fn unmeasured() -> TranscodeError {
    TranscodeError::new(
        ErrorCode::EncoderFailed,
        "a sample of the CRF search could not be measured",
    )
}
