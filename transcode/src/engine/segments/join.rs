//! [`crate::protocol::Task::Join`]: the segments' video packets and the
//! audio's, copied as they are into the job's output (MP4 with
//! `+faststart`, WebM with its cues in front, as a single pass writes it),
//! interleaved by decoding time.
//!
//! The segments already carry the timestamps of a single pass, so the join
//! retimes nothing but the decoding times a segment's encoder had to guess
//! for its first packets ([`super::reorder`]); it checks that the parts
//! fit: each file is
//! the part it is given as (its label), every segment was encoded like the
//! first (codec, size, headers, time base), and decoding times only rise
//! from one segment into the next. A part that does not fit fails the join
//! with a sentence naming it, rather than making a file that stutters.

use std::time::Instant;

use ffmpeg_next::{ffi, Rational};

use super::parts::{file_size, Part, Role, Shape};
use super::reorder::Reorder;
use crate::engine::mux::Muxer;
use crate::engine::progress::Progress;
use crate::protocol::{
    ChildEvent, ErrorCode, JoinWork, Output, OutputReport, RateMode, Timings, TranscodeError,
    TranscodeJob, VideoRate,
};

/// Joins `work`'s files into `job.output`, calling `on_event` with
/// `progress`, and reports on the output.
pub(in crate::engine) fn join(
    job: &TranscodeJob,
    work: &JoinWork,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    let started = Instant::now();
    let (format, limits) = (job.options.format, &job.limits);
    let count = work.segments.len();
    let mut total_bytes = 0;
    for (index, path) in work.segments.iter().enumerate() {
        total_bytes += file_size(path, &format!("segment {index}"))?;
    }
    if let Some(path) = &work.audio {
        total_bytes += file_size(path, "the audio")?;
    }
    let Some(first) = work.segments.first() else {
        return Err(TranscodeError::new(
            ErrorCode::EncoderFailed,
            "a join needs at least one segment",
        ));
    };
    let mut video = Part::open(first, Role::Segment { index: 0, count }, format, limits)?;
    let shape = Shape::of(&video);
    if shape.codec != job.options.codec.libav_name() {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!(
                "segment 0 is {}, not the job's {}",
                shape.codec,
                job.options.codec.libav_name()
            ),
        ));
    }
    let mut audio = match &work.audio {
        Some(path) => Some(Part::open(path, Role::Audio, format, limits)?),
        None => None,
    };

    let mut muxer = Muxer::create(&job.output, format)?;
    let video_out = muxer.add_stream()?;
    let audio_out = match audio {
        Some(_) => Some(muxer.add_stream()?),
        None => None,
    };
    let frame_rate = video.frame_rate();
    muxer.configure(
        video_out,
        video.parameters()?,
        video.time_base,
        frame_rate,
        job.options.codec.encoder(),
    )?;
    if let (Some(part), Some(out)) = (audio.as_ref(), audio_out) {
        muxer.configure(
            out,
            part.parameters()?,
            part.time_base,
            None,
            format.audio_encoder(),
        )?;
    }

    let mut progress = Progress::new(None, total_bytes);
    let mut timeline = Timeline::default();
    let mut reorder = Reorder::default();
    let mut read_bytes = 0u64;
    let mut audio_next = match audio.as_mut() {
        Some(part) => part.next()?,
        None => None,
    };
    for (index, path) in work.segments.iter().enumerate() {
        if index > 0 {
            video = Part::open(path, Role::Segment { index, count }, format, limits)?;
            shape.check(&Shape::of(&video), index)?;
        }
        let mut nth = 0;
        while let Some(mut packet) = video.next()? {
            let dts = reorder.dts(index, nth, packet.dts(), packet.pts());
            packet.set_dts(dts);
            let stamps = (dts, packet.pts(), packet.duration());
            let dts = timeline.add(stamps, index, nth == 0, video.time_base)?;
            nth += 1;
            // The audio due before this picture, so the muxer's
            // interleaving queue stays short.
            while let (Some(part), Some(out)) = (audio.as_mut(), audio_out) {
                let Some(mut due) = audio_next.take() else {
                    break;
                };
                let at = due.dts().or(due.pts()).unwrap_or(i64::MIN);
                // SAFETY: pure arithmetic on plain values.
                let before = unsafe {
                    ffi::av_compare_ts(at, part.time_base.into(), dts, video.time_base.into())
                } <= 0;
                if !before {
                    audio_next = Some(due);
                    break;
                }
                read_bytes += due.size() as u64;
                due.set_stream(out);
                muxer.write(due)?;
                audio_next = part.next()?;
            }
            read_bytes += packet.size() as u64;
            packet.set_stream(video_out);
            muxer.write(packet)?;
            let seconds = dts as f64 * f64::from(video.time_base);
            progress.update(Some(seconds), read_bytes as i64, on_event);
        }
        if nth == 0 {
            return Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                format!("segment {index} holds no video"),
            ));
        }
    }
    if let (Some(part), Some(out)) = (audio.as_mut(), audio_out) {
        while let Some(mut due) = audio_next.take() {
            due.set_stream(out);
            muxer.write(due)?;
            audio_next = part.next()?;
        }
    }
    muxer.finish()?;

    let bytes = file_size(&job.output, "the output")?;
    let seconds = timeline.seconds(video.time_base);
    on_event(ChildEvent::Progress {
        fraction: 1.0,
        out_seconds: seconds,
    });
    let rate = match (work.rate, job.options.rate()) {
        (Some(rate), _) => Some(rate),
        (None, RateMode::Crf(crf)) => Some(VideoRate::Crf(crf)),
        (None, _) => None,
    };
    Ok(Output {
        bytes,
        report: Some(OutputReport {
            codec: job.options.codec,
            format,
            crf: rate.and_then(VideoRate::crf),
            video_bitrate_kbps: rate.and_then(VideoRate::bitrate_kbps),
            width: shape.width,
            height: shape.height,
            duration_seconds: seconds,
            // Measured on the segments as they were encoded:
            // `Quality::combine` adds their reports up.
            quality: None,
            timings: Timings {
                encode_seconds: started.elapsed().as_secs_f64(),
                ..Timings::default()
            },
        }),
    })
}

/// The joined video's timeline so far: decoding times must rise, and a
/// segment must begin after the pictures of the one before.
#[derive(Default)]
struct Timeline {
    last_dts: Option<i64>,
    /// The latest picture so far.
    last_pts: Option<i64>,
    first_pts: Option<i64>,
    /// Where the latest picture ends.
    end: Option<i64>,
}

impl Timeline {
    /// Takes note of a packet of segment `index` (its `first` one, or not),
    /// stamped `(dts, pts, duration)`, and returns its decoding time; fails
    /// if it does not follow on.
    fn add(
        &mut self,
        (dts, pts, duration): (Option<i64>, Option<i64>, i64),
        index: usize,
        first: bool,
        time_base: Rational,
    ) -> Result<i64, TranscodeError> {
        let (Some(dts), Some(pts)) = (dts.or(pts), pts.or(dts)) else {
            return Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                format!("segment {index} has a packet without timestamps"),
            ));
        };
        let at = |ts: i64| ts as f64 * f64::from(time_base);
        let overlaps = first && self.last_pts.is_some_and(|last| pts <= last);
        if overlaps || self.last_dts.is_some_and(|last| dts <= last) {
            let what = if first {
                "overlaps the one before it"
            } else {
                "goes back in time"
            };
            return Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                format!("segment {index} {what}: a picture at {:.3} s", at(pts)),
            ));
        }
        self.last_dts = Some(dts);
        self.last_pts = Some(self.last_pts.map_or(pts, |last| last.max(pts)));
        self.first_pts = Some(self.first_pts.map_or(pts, |known| known.min(pts)));
        let end = pts + duration.max(0);
        self.end = Some(self.end.map_or(end, |known| known.max(end)));
        Ok(dts)
    }

    /// Returns the video's length, from its first picture to the end of
    /// its last, in seconds.
    fn seconds(&self, time_base: Rational) -> f64 {
        match (self.first_pts, self.end) {
            (Some(first), Some(end)) => (end - first) as f64 * f64::from(time_base),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: Rational = Rational(1, 30);

    #[test]
    fn segments_follow_on_when_decoding_times_rise() {
        let mut timeline = Timeline::default();
        // Two segments of B-frame video: decoding two ticks behind.
        for (index, packets) in [[(-2, 0), (-1, 2), (0, 1)], [(1, 3), (2, 5), (3, 4)]]
            .into_iter()
            .enumerate()
        {
            for (i, (dts, pts)) in packets.into_iter().enumerate() {
                let added = timeline.add((Some(dts), Some(pts), 1), index, i == 0, TB);
                assert_eq!(added.expect("follows on"), dts);
            }
        }
        assert!((timeline.seconds(TB) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn a_segment_that_overlaps_or_goes_back_fails() {
        let mut timeline = Timeline::default();
        timeline.add((Some(0), Some(0), 1), 0, true, TB).unwrap();
        timeline.add((Some(1), Some(30), 1), 0, false, TB).unwrap();
        let err = timeline
            .add((Some(2), Some(15), 1), 1, true, TB)
            .unwrap_err();
        assert_eq!(
            err.message,
            "segment 1 overlaps the one before it: a picture at 0.500 s"
        );
        let err = timeline
            .add((Some(1), Some(31), 1), 0, false, TB)
            .unwrap_err();
        assert!(err.message.contains("goes back in time"), "{}", err.message);
        let err = timeline.add((None, None, 1), 2, true, TB).unwrap_err();
        assert!(
            err.message.contains("without timestamps"),
            "{}",
            err.message
        );
    }
}
