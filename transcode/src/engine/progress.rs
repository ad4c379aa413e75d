//! A transcode's progress events: throttled, never decreasing, never 1.0
//! before the end, over every pass a rate mode runs.
//!
//! A job may encode more than once (samples of a CRF search, passes of a
//! size target, then the output), so each pass owns a band of the job's
//! progress ([`Progress::band`]) and reports where it is within its own
//! stretch of the video.

use std::time::{Duration, Instant};

use crate::protocol::ChildEvent;

/// Minimum time between two progress events.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Longest silence while work continues without new frames (the final
/// encoder flush).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Turns "where the video is" into throttled, non-decreasing progress events.
pub(super) struct Progress {
    duration: Option<f64>,
    input_bytes: u64,
    last_emit: Option<Instant>,
    fraction: f64,
    seconds: f64,
    /// The stretch of the video the current pass encodes, in seconds.
    span: Option<(f64, f64)>,
    /// The share of the job the current pass stands for.
    band: (f64, f64),
}

impl Progress {
    /// Progress over a video of `duration` seconds (if known) read from a
    /// file of `input_bytes`, one pass over the whole of it.
    pub fn new(duration: Option<f64>, input_bytes: u64) -> Self {
        Progress {
            duration: duration.filter(|seconds| *seconds > 0.0),
            input_bytes,
            last_emit: None,
            fraction: 0.0,
            seconds: 0.0,
            span: None,
            band: (0.0, 1.0),
        }
    }

    /// Starts a pass that encodes `span` (the whole video when `None`)
    /// and stands for the job's progress from `from` to `to`.
    pub fn band(&mut self, from: f64, to: f64, span: Option<(f64, f64)>) {
        self.band = (from.clamp(0.0, 1.0), to.clamp(from, 1.0));
        self.span = span.filter(|(start, end)| end > start);
    }

    /// Returns the job's progress so far.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// Repeats the last progress if nothing was sent for a second, so the
    /// parent's stall timer sees a live child while the encoder flushes.
    pub fn heartbeat(&mut self, on_event: &mut dyn FnMut(ChildEvent)) {
        if self
            .last_emit
            .is_some_and(|last| last.elapsed() < HEARTBEAT_INTERVAL)
        {
            return;
        }
        self.last_emit = Some(Instant::now());
        on_event(ChildEvent::Progress {
            fraction: self.fraction,
            out_seconds: self.seconds,
        });
    }

    /// Notes that the pass reached `seconds` into the video, `position`
    /// bytes into the file.
    pub fn update(
        &mut self,
        seconds: Option<f64>,
        position: i64,
        on_event: &mut dyn FnMut(ChildEvent),
    ) {
        let Some(seconds) = seconds else {
            return;
        };
        if self
            .last_emit
            .is_some_and(|last| last.elapsed() < PROGRESS_INTERVAL)
        {
            return;
        }
        let within = match (self.span, self.duration) {
            (Some((start, end)), _) => (seconds - start) / (end - start),
            (None, Some(duration)) => seconds / duration,
            // Without a duration, how far into the file the demuxer is.
            (None, None) if self.input_bytes > 0 => {
                position.max(0) as f64 / self.input_bytes as f64
            }
            (None, None) => 0.0,
        };
        let (from, to) = self.band;
        let fraction = from + (to - from) * within.clamp(0.0, 1.0);
        // Never 1.0 before the end: the flush and trailer are still to come.
        self.fraction = self.fraction.max(fraction.clamp(0.0, 0.999));
        self.seconds = self.seconds.max(seconds);
        self.last_emit = Some(Instant::now());
        on_event(ChildEvent::Progress {
            fraction: self.fraction,
            out_seconds: self.seconds,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_throttled_monotonic_and_below_one() {
        let mut events = Vec::new();
        let mut record = |event: ChildEvent| events.push(event);
        let mut progress = Progress::new(Some(10.0), 0);
        progress.update(Some(5.0), 0, &mut record);
        // Within 100 ms of the last one: dropped.
        progress.update(Some(6.0), 0, &mut record);
        std::thread::sleep(PROGRESS_INTERVAL);
        // Going backwards does not lower the fraction.
        progress.update(Some(2.0), 0, &mut record);
        std::thread::sleep(PROGRESS_INTERVAL);
        progress.update(Some(20.0), 0, &mut record);
        assert_eq!(fractions(&events), vec![0.5, 0.5, 0.999]);
    }

    #[test]
    fn heartbeat_repeats_the_last_progress_at_most_every_second() {
        let mut events = Vec::new();
        let mut progress = Progress::new(Some(4.0), 0);
        progress.update(Some(3.0), 0, &mut |event| events.push(event));
        progress.heartbeat(&mut |event| events.push(event));
        assert_eq!(events.len(), 1, "too soon after the last event");
        progress.last_emit = Some(Instant::now() - HEARTBEAT_INTERVAL);
        progress.heartbeat(&mut |event| events.push(event));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], events[1]);
    }

    #[test]
    fn progress_falls_back_to_bytes_read() {
        let mut events = Vec::new();
        let mut progress = Progress::new(None, 1000);
        progress.update(Some(1.0), 250, &mut |event| events.push(event));
        assert_eq!(
            events,
            vec![ChildEvent::Progress {
                fraction: 0.25,
                out_seconds: 1.0
            }]
        );
    }

    #[test]
    fn passes_fill_their_bands_and_never_go_back() {
        let mut events = Vec::new();
        let mut progress = Progress::new(Some(40.0), 0);
        // A sample of 10 s to 12 s stands for the first fifth.
        progress.band(0.0, 0.2, Some((10.0, 12.0)));
        progress.update(Some(11.0), 0, &mut |event| events.push(event));
        progress.last_emit = None;
        // The output's encode, from there to the end.
        progress.band(progress.fraction().max(0.2), 1.0, None);
        progress.update(Some(0.0), 0, &mut |event| events.push(event));
        progress.last_emit = None;
        progress.update(Some(20.0), 0, &mut |event| events.push(event));
        assert_eq!(fractions(&events), vec![0.1, 0.2, 0.6]);
    }

    fn fractions(events: &[ChildEvent]) -> Vec<f64> {
        events
            .iter()
            .map(|event| match event {
                ChildEvent::Progress { fraction, .. } => (*fraction * 1e9).round() / 1e9,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }
}
