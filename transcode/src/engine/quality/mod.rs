//! The quality report's measurement: SSIM and PSNR of the output against
//! the input scaled alike, taken while encoding.
//!
//! The reference is each picture exactly as the encoder received it (the
//! input rotated, scaled and converted to `yuv420p` by the video graph),
//! and the distorted picture is the encoder's packet decoded again, so the
//! comparison is that of `ffmpeg -i OUT -i IN -lavfi
//! "[1:v]scale=W:H,format=yuv420p[r];[0:v][r]ssim" -f null -` without
//! reading either file a second time. Both go through libavfilter's own
//! `ssim` and `psnr` filters, and their per-frame figures are averaged as
//! those filters average them at the end ("All" of `ssim`, "average" of
//! `psnr`, which is the PSNR of the mean squared error).
//!
//! The measurement runs on the encode's thread and its cost is that
//! thread's CPU time spent measuring, so that a busy machine does not
//! count as measuring. It may cost about an eighth of the encode's time
//! ([`BUDGET_SHARE`]; the first windows, before the stride adapts, and the
//! decode can take it to the quarter the report is allowed): when it would
//! cost more, only every `stride`-th picture is compared, the stride
//! doubling as needed, and each compared picture weighs as many pictures
//! as it stands for.
//!
//! Pictures that are not compared and that no other picture refers to
//! are not decoded at all. The decode of the rest is still the floor of
//! that cost, as much as a twentieth of a fast x264 encode, so a long
//! video is also sampled by whole groups of pictures: at each keyframe
//! after the first, the group it starts is measured only if the
//! measurement so far has cost at most [`GROUP_SHARE`] of the CPU time
//! the encode has used, else its packets are not decoded at all. Whole
//! groups, because the pictures after a keyframe look better than those
//! at the end of its group: a sample of group openings alone would
//! flatter the result. Only when decoding alone would take
//! the measurement past [`CUT_SHARE`] (a fast encoder, long groups) is a
//! group cut short.
//!
//! Measuring never fails a transcode: a decoder or filter error stops the
//! measurement and the report says no quality.
//!
//! The meter here decides what is decoded and compared; [`pairs`] feeds
//! the filters and sums their figures.

mod pairs;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ffmpeg_next::{codec, decoder, ffi, frame, Discard, Packet, Rational};

use self::pairs::Pairs;
use super::is_again_or_eof;
use crate::protocol::Quality;

/// The share of the elapsed encode the measurement may take before it
/// compares fewer pictures.
const BUDGET_SHARE: f64 = 0.12;

/// The share of the CPU time the encode has used that the measurement may
/// have taken so far for the next group of pictures to be measured too.
/// CPU time, not the encode's wall time: an encoder on many cores uses
/// more of it per second, and the measurement is to cost a share of the
/// work whatever the cores.
const GROUP_SHARE: f64 = 0.01;

/// The share of the encode's time past which the group being measured is
/// cut short: with a fast encoder and long groups, decoding a whole group
/// alone could cost more than the quarter the report may.
const CUT_SHARE: f64 = 0.22;

/// How long the encode runs before a group may be cut short: its start,
/// the encoder's lookahead filling before any packet, would count as cost.
const CUT_AFTER: Duration = Duration::from_millis(500);

/// How often the cost is judged against the budget.
const BUDGET_WINDOW: Duration = Duration::from_millis(200);

/// At most one picture in this many is skipped.
const MAX_STRIDE: u64 = 256;

/// Pictures held for comparison while the encoder has not yet returned
/// them (its lookahead); more means the encoder lost some, and the oldest
/// are dropped.
const MAX_KEPT: usize = 512;

/// Returns the CPU time the calling thread has used. The measurement runs
/// on the encode's thread alone (one decoder thread, filters without
/// threads), so what it adds to this is what it costs, whatever else the
/// machine is doing.
fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Returns the CPU time the whole process (the transcoding child: its
/// decoder, encoders and measurement) has used.
fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct it is given; both CPU
    // clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut now) };
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// A reference picture waiting for its encoded twin.
struct Kept {
    pts: i64,
    /// How many pictures this one stands for.
    weight: f64,
    frame: frame::Video,
}

/// Measures an encode as it goes: [`QualityMeter::reference`] with each
/// picture sent to the encoder, [`QualityMeter::packet`] with each packet
/// out of it, [`QualityMeter::finish`] at the end.
pub(super) struct QualityMeter {
    decoder: decoder::Video,
    kept: VecDeque<Kept>,
    pairs: Pairs,
    /// Pictures sent to the encoder so far.
    index: u64,
    /// One picture in `stride` is compared.
    stride: u64,
    /// Whether the stride may grow to keep within the budget.
    thin: bool,
    compared: u64,
    decoded: frame::Video,
    /// Set when measuring failed; nothing more is measured.
    broken: bool,
    /// Whether the current group of pictures is left out.
    skipping: bool,
    /// Whether the decoder must be reset before the next group it decodes.
    dirty: bool,
    /// Groups of pictures left out so far.
    groups_left_out: u64,
    /// When the measurement began, with the encode.
    started: Instant,
    /// The process's CPU time when it began.
    cpu_at_start: Duration,
    /// When the current budget window began.
    window_started: Instant,
    /// `busy` when it began.
    busy_at_window: Duration,
    busy: Duration,
}

impl QualityMeter {
    /// Opens a decoder for the encoder's stream (`parameters`, packets in
    /// `time_base`). Returns `None` if it cannot be, and the transcode goes
    /// on without a report of its quality.
    pub fn new(parameters: codec::Parameters, time_base: Rational, thin: bool) -> Option<Self> {
        let started = Instant::now();
        let began = thread_cpu();
        let codec = decoder::find(parameters.id())?;
        let mut context = codec::context::Context::from_parameters(parameters).ok()?;
        // SAFETY: plain field write on a context that is not open yet.
        unsafe {
            (*context.as_mut_ptr()).pkt_timebase = time_base.into();
        }
        // One thread: frame threads would cost a tenth more CPU for the
        // same pictures, and the pictures this decoder skips (below) are
        // chosen packet by packet.
        let mut options = ffmpeg_next::Dictionary::new();
        options.set("threads", "1");
        let decoder = context
            .decoder()
            .open_as_with(codec, options)
            .ok()?
            .video()
            .ok()?;
        Some(QualityMeter {
            decoder,
            kept: VecDeque::new(),
            pairs: Pairs::new(time_base),
            index: 0,
            stride: 1,
            thin,
            compared: 0,
            decoded: frame::Video::empty(),
            broken: false,
            skipping: false,
            dirty: false,
            groups_left_out: 0,
            started,
            cpu_at_start: process_cpu(),
            window_started: started,
            busy_at_window: Duration::ZERO,
            busy: thread_cpu().saturating_sub(began),
        })
    }

    /// Takes note of a picture just sent to the encoder (its `pts` in the
    /// encoder's time base), keeping a reference to it if it is one to
    /// compare.
    pub fn reference(&mut self, picture: &frame::Video) {
        let began = thread_cpu();
        let index = self.index;
        self.index += 1;
        if self.broken || index % self.stride != 0 {
            return;
        }
        let Some(pts) = picture.pts() else {
            return;
        };
        // SAFETY: av_frame_clone adds a reference to the picture's buffers
        // (no copy); it returns null only when out of memory.
        let cloned = unsafe { ffi::av_frame_clone(picture.as_ptr()) };
        if cloned.is_null() {
            self.broken = true;
            return;
        }
        // SAFETY: a frame just allocated by av_frame_clone, owned from here.
        let frame = unsafe { frame::Video::wrap(cloned) };
        if self.kept.len() >= MAX_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(Kept {
            pts,
            weight: self.stride as f64,
            frame,
        });
        self.busy += thread_cpu().saturating_sub(began);
    }

    /// Decodes a packet the encoder produced and compares what comes out
    /// with the pictures kept for it.
    pub fn packet(&mut self, packet: &Packet) {
        if self.broken {
            return;
        }
        let began = thread_cpu();
        if packet.is_key() && self.compared > 0 {
            self.next_group(packet.pts());
        }
        if self.skipping {
            // Not decoded: its picture is not compared.
            if let Some(pts) = packet.pts() {
                if let Ok(at) = self.kept.binary_search_by_key(&pts, |kept| kept.pts) {
                    self.kept.remove(at);
                }
            }
            self.busy += thread_cpu().saturating_sub(began);
            return;
        }
        // A picture that is not compared and that no other picture refers
        // to need not be decoded at all: with x264's default B-pyramid that
        // is more than two in five.
        let compared = packet.pts().is_some_and(|pts| {
            self.kept
                .binary_search_by_key(&pts, |kept| kept.pts)
                .is_ok()
        });
        self.decoder.skip_frame(if compared {
            Discard::Default
        } else {
            Discard::NonReference
        });
        if self.decoder.send_packet(packet).is_err() {
            self.broken = true;
        }
        self.receive();
        self.busy += thread_cpu().saturating_sub(began);
        self.thin();
        let elapsed = self.started.elapsed();
        // Never before a first comparison: the report would have none.
        if self.thin
            && self.compared > 0
            && elapsed >= CUT_AFTER
            && self.busy.as_secs_f64() > CUT_SHARE * elapsed.as_secs_f64()
        {
            self.leave_out_group();
        }
    }

    /// At a keyframe (`pts`), decides whether the group it starts is
    /// measured: only while the measurement is within [`GROUP_SHARE`] of
    /// the encode's time, or when it is not to sample.
    fn next_group(&mut self, pts: Option<i64>) {
        let within = !self.thin
            || self.busy.as_secs_f64()
                <= GROUP_SHARE
                    * process_cpu()
                        .saturating_sub(self.cpu_at_start)
                        .as_secs_f64();
        if within && self.skipping {
            if self.dirty {
                self.decoder.flush();
                self.dirty = false;
            }
            // Pictures before the keyframe belong to the group left out.
            if let Some(pts) = pts {
                while self.kept.front().is_some_and(|kept| kept.pts < pts) {
                    self.kept.pop_front();
                }
            }
            self.skipping = false;
        } else if !within && !self.skipping {
            self.leave_out_group();
        } else if self.skipping {
            self.groups_left_out += 1;
        }
    }

    /// Stops decoding until a later keyframe: the pictures sent so far are
    /// compared, the rest of the group is left out.
    fn leave_out_group(&mut self) {
        if self.decoder.send_eof().is_ok() {
            self.receive();
        }
        self.dirty = true;
        self.skipping = true;
        self.groups_left_out += 1;
    }

    /// Returns the time spent measuring so far.
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// Drains the decoder and the filters and returns the figures, or
    /// `None` if no picture could be compared.
    pub fn finish(mut self) -> Option<Quality> {
        let began = thread_cpu();
        if !self.broken && !self.skipping {
            let _ = self.decoder.send_eof();
            self.receive();
        }
        self.broken |= !self.pairs.finish();
        self.busy += thread_cpu().saturating_sub(began);
        if self.broken {
            return None;
        }
        let (ssim, psnr_db) = self.pairs.means()?;
        Some(Quality {
            ssim,
            psnr_db,
            sampled: self.stride > 1 || self.groups_left_out > 0,
            frames: self.compared,
        })
    }

    /// Takes every picture the decoder has ready and compares those with a
    /// kept twin.
    fn receive(&mut self) {
        while !self.broken {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(err) if is_again_or_eof(&err) => return,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
            let Some(pts) = self.decoded.pts() else {
                continue;
            };
            // Kept pictures older than this one will never come back.
            while self.kept.front().is_some_and(|kept| kept.pts < pts) {
                self.kept.pop_front();
            }
            if self.kept.front().is_some_and(|kept| kept.pts == pts) {
                if let Some(kept) = self.kept.pop_front() {
                    self.compare(kept);
                }
            }
        }
    }

    fn compare(&mut self, kept: Kept) {
        if self.pairs.push(&self.decoded, &kept.frame, kept.weight) {
            self.compared += 1;
        } else {
            self.broken = true;
        }
    }

    /// At the end of each window of the encode, compares half as many
    /// pictures from then on if measuring cost more than its share of the
    /// window.
    fn thin(&mut self) {
        let elapsed = self.window_started.elapsed();
        if !self.thin || elapsed < BUDGET_WINDOW {
            return;
        }
        let spent = (self.busy - self.busy_at_window).as_secs_f64();
        let allowed = BUDGET_SHARE * elapsed.as_secs_f64();
        if spent > allowed {
            // Straight to the stride that would have kept within it.
            let factor = (spent / allowed).ceil() as u64;
            self.stride = (self.stride * factor.next_power_of_two()).min(MAX_STRIDE);
        }
        self.window_started = Instant::now();
        self.busy_at_window = self.busy;
    }
}
