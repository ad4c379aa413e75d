//! The video path: decoder → filter graph (rotation, scale when needed,
//! `yuv420p`) → the job's encoder (libx264, libx265, libsvtav1 or
//! libvpx-vp9, set up by [`super::encoders`]) → muxer.
//!
//! Mirrors what `ffmpeg -c:v libx264` (and the others) does, because the service is measured
//! against it: automatic decoder and encoder threads, the frame rate guessed
//! like the CLI's, a constant-frame-rate time base when the input has a sane
//! rate, and the encoder opened on the first filtered frame so its colour
//! properties match the pictures it receives.
//!
//! The job's [`Limits`] hold while decoding, whatever the header said: a
//! picture over `max_pixels` (refused by the decoder, or decoded at a new
//! size) or a timestamp past `max_duration_secs` stops the transcode with
//! `limits_exceeded`.
//!
//! This file owns the pipeline's state, the decoder and the filter graph;
//! opening the encoder and the packets' way from it to the muxer are in
//! [`super::video_encoder`].

use ffmpeg_next::{decoder, encoder, ffi, frame, picture, Packet, Rational, Rescale};

use super::encoders::VideoRate;
use super::input::Input;
use super::mux::Muxer;
use super::quality::QualityMeter;
use super::video_graph::{build_graph, output_size, FrameShape, VideoFilter};
use super::window::{Place, Window};
use super::{avlog, decode_error_is_fatal, encoder_error, invalid, is_again_or_eof, open_decoder};
use std::time::Duration;

use crate::protocol::{EncodeOptions, ErrorCode, Limits, Quality, TranscodeError};

/// Frame rates outside this range are treated as unknown.
const SANE_FPS: std::ops::RangeInclusive<f64> = 1.0..=1000.0;

pub(super) struct VideoPipeline {
    /// Index of the input stream this pipeline consumes.
    pub stream_index: usize,
    pub(super) out_index: usize,
    decoder: decoder::Video,
    stream_tb: Rational,
    /// Container start time in the stream time base, subtracted from
    /// timestamps.
    start_offset: i64,
    rotation: u32,
    /// Sample aspect ratio declared by the container, which the CLI prefers
    /// over the codec's.
    stream_sar: Rational,
    out_width: u32,
    out_height: u32,
    /// The constant output frame rate, or `None` to keep input timestamps.
    pub(super) frame_rate: Option<Rational>,
    pub(super) options: EncodeOptions,
    pub(super) rate: VideoRate,
    limits: Limits,
    /// Only these pictures are encoded (a sample, a segment).
    pub(super) window: Option<Window>,
    /// Whether every keyframe must start a closed group of pictures (a
    /// segment's: x265 and SVT-AV1 default to open ones).
    pub(super) closed_gop: bool,
    /// A picture past the window was decoded: the pass can stop reading.
    window_ended: bool,
    /// Whether to measure the quality, and within a budget.
    pub(super) measure: Option<bool>,
    pub(super) meter: Option<QualityMeter>,
    /// The meter's time and figures once the encoder is flushed.
    measured: Option<(Duration, Option<Quality>)>,
    /// Where the count of pictures refused for their size stood before this
    /// input was decoded.
    oversized_mark: u64,
    pub(super) filter: Option<VideoFilter>,
    pub(super) encoder: Option<encoder::video::Encoder>,
    pub(super) encoder_tb: Rational,
    /// Duration stamped on packets, in the encoder time base: the gap
    /// between the last two frames sent to the encoder (one tick at a
    /// constant rate, as the CLI stamps). The mp4 muxer takes the last
    /// sample's duration from it, so a variable-rate video keeps its length.
    pub(super) packet_duration: i64,
    pub(super) first_encoded_pts: Option<i64>,
    pub(super) last_encoded_pts: Option<i64>,
    /// Decoding timestamp of the first packet out of the encoder.
    pub(super) first_dts: Option<i64>,
    /// The latest packet, held back until the next one or the end: the
    /// last one's duration is only known then.
    pub(super) held: Option<Packet>,
    /// Where the next frame is expected, in the stream time base, for frames
    /// that carry no timestamp.
    next_pts: Option<i64>,
    frame_step: i64,
    decoded: frame::Video,
    pub(super) filtered: frame::Video,
    /// Frames that came out of the decoder.
    pub frames_decoded: u64,
    /// Packets the decoder rejected.
    pub decode_errors: u64,
    /// Presentation time in seconds of the last decoded frame.
    pub last_seconds: Option<f64>,
}

impl VideoPipeline {
    pub fn new(
        input: &mut Input,
        muxer: &mut Muxer,
        options: EncodeOptions,
        rate: VideoRate,
    ) -> Result<Self, TranscodeError> {
        // The CLI's frame-rate guess (mostly r_frame_rate), taken before the
        // stream is borrowed below.
        // SAFETY: both pointers come from the open input context, and the
        // index was checked when the stream was selected.
        let guessed = unsafe {
            let ctx = input.ctx.as_mut_ptr();
            let stream = *(*ctx).streams.add(input.video_index);
            Rational::from(ffi::av_guess_frame_rate(ctx, stream, std::ptr::null_mut()))
        };
        let stream = input.ctx.stream(input.video_index).ok_or_else(|| {
            TranscodeError::new(ErrorCode::NoVideoStream, "the file has no video stream")
        })?;
        let stream_tb = stream.time_base();
        // SAFETY: reading a plain field of a stream of the open context.
        let stream_sar = Rational::from(unsafe { (*stream.as_ptr()).sample_aspect_ratio });
        let decoder = open_decoder(&stream, "video", &input.limits)?
            .video()
            .map_err(|err| invalid("the video decoder could not be opened", err))?;

        let frame_rate = [guessed, stream.avg_frame_rate()]
            .into_iter()
            .find(|rate| is_sane_rate(*rate));
        // At a sane rate, a tick per frame as in the CLI's constant-rate
        // mode; otherwise the input's own timestamps.
        let encoder_tb = frame_rate.map_or(stream_tb, |rate| rate.invert());
        let frame_step = frame_rate
            .map(|rate| 1i64.rescale(rate.invert(), stream_tb).max(1))
            .unwrap_or(1);

        let (out_width, out_height) =
            output_size(input.info.width, input.info.height, options.max_height);
        let out_index = muxer.add_stream()?;
        let start_offset = input
            .start_time
            .rescale(super::input::av_time_base(), stream_tb);

        Ok(VideoPipeline {
            stream_index: input.video_index,
            out_index,
            decoder,
            stream_tb,
            start_offset,
            rotation: input.rotation,
            stream_sar,
            out_width,
            out_height,
            frame_rate,
            options,
            rate,
            limits: input.limits,
            window: None,
            closed_gop: false,
            window_ended: false,
            measure: None,
            meter: None,
            measured: None,
            oversized_mark: input.oversized_mark,
            filter: None,
            encoder: None,
            encoder_tb,
            packet_duration: 1,
            first_encoded_pts: None,
            last_encoded_pts: None,
            first_dts: None,
            held: None,
            next_pts: None,
            frame_step,
            decoded: frame::Video::empty(),
            filtered: frame::Video::empty(),
            frames_decoded: 0,
            decode_errors: 0,
            last_seconds: None,
        })
    }

    /// Decodes one demuxed packet and pushes whatever comes out downstream.
    pub fn send_packet(
        &mut self,
        packet: &Packet,
        muxer: &mut Muxer,
    ) -> Result<(), TranscodeError> {
        if let Err(err) = self.decoder.send_packet(packet) {
            if decode_error_is_fatal(&err) {
                return Err(invalid("the video could not be decoded", err));
            }
            // The CLI logs and carries on past a corrupt packet; so do we,
            // unless the decoder refused a picture over the pixel limit.
            self.decode_errors += 1;
            self.check_oversized()?;
        }
        self.receive_frames(muxer)
    }

    /// Fails if the decoder refused a picture for exceeding `max_pixels`
    /// (it reports that only as EINVAL, and in its log).
    fn check_oversized(&self) -> Result<(), TranscodeError> {
        match avlog::oversized_since(self.oversized_mark) {
            Some((width, height)) => Err(self.limits.pixels_exceeded(width, height)),
            None => Ok(()),
        }
    }

    /// Drains the decoder, the filter graph and the encoder at end of input.
    /// Calls `tick` after each packet of the encoder flush, which can take a
    /// while with slow presets (the lookahead holds dozens of frames), so
    /// the caller can show it is alive.
    pub fn finish(
        &mut self,
        muxer: &mut Muxer,
        tick: &mut dyn FnMut(),
    ) -> Result<(), TranscodeError> {
        // An error here means the decoder was already drained.
        let _ = self.decoder.send_eof();
        self.receive_frames(muxer)?;
        self.check_oversized()?;
        if let Some(filter) = self.filter.as_mut() {
            filter
                .graph
                .flush()
                .map_err(|err| encoder_error("the video filter failed", err))?;
            self.drain_filter(muxer)?;
        }
        if let Some(encoder) = self.encoder.as_mut() {
            encoder
                .send_eof()
                .map_err(|err| encoder_error("the video encoder failed", err))?;
            while self.receive_packet(muxer)? {
                tick();
            }
        }
        if let Some(meter) = self.meter.take() {
            let busy = meter.busy();
            let quality = meter.finish();
            self.measured = Some((busy, quality));
        }
        self.write_last_packet(muxer)
    }

    fn receive_frames(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(err) if is_again_or_eof(&err) => return Ok(()),
                Err(err) if decode_error_is_fatal(&err) => {
                    return Err(invalid("the video could not be decoded", err));
                }
                Err(_) => {
                    self.decode_errors += 1;
                    self.check_oversized()?;
                    return Ok(());
                }
            }
            self.frames_decoded += 1;

            let pts = match self.decoded.timestamp() {
                Some(ts) => ts - self.start_offset,
                None => self.next_pts.unwrap_or(0),
            };
            self.next_pts = Some(pts + self.frame_step);
            self.decoded.set_pts(Some(pts));
            self.decoded.set_kind(picture::Type::None);
            let seconds = pts as f64 * f64::from(self.stream_tb);
            self.last_seconds = Some(seconds);
            if self.window_ended {
                continue;
            }
            let raw = pts + self.start_offset;
            match self.window.as_mut().map(|w| w.place(raw, seconds)) {
                Some(Place::After) => {
                    self.window_ended = true;
                    continue;
                }
                Some(Place::Before) => continue,
                Some(Place::Inside) | None => {}
            }
            // A header that understated the duration (or gave none) costs
            // at most the limit.
            if seconds > self.limits.max_duration_secs as f64 {
                return Err(self.limits.decoded_duration_exceeded(seconds));
            }

            let shape = FrameShape {
                width: self.decoded.width(),
                height: self.decoded.height(),
                format: self.decoded.format(),
            };
            if self.filter.as_ref().map(|filter| filter.input) != Some(shape) {
                self.rebuild_filter(shape, muxer)?;
            }
            let filter = self.filter.as_mut().ok_or_else(|| {
                TranscodeError::new(ErrorCode::EncoderFailed, "the video filter is missing")
            })?;
            filter
                .graph
                .push(&self.decoded)
                .map_err(|err| encoder_error("the video filter failed", err))?;
            self.drain_filter(muxer)?;
        }
    }

    /// Builds the graph for frames of `shape`, first draining any graph built
    /// for an earlier shape.
    fn rebuild_filter(
        &mut self,
        shape: FrameShape,
        muxer: &mut Muxer,
    ) -> Result<(), TranscodeError> {
        if shape.width == 0
            || shape.height == 0
            || shape.width > super::input::MAX_DIMENSION
            || shape.height > super::input::MAX_DIMENSION
        {
            return Err(TranscodeError::new(
                ErrorCode::UnsupportedDimensions,
                format!(
                    "the video changes size to {}x{}, beyond the supported {} pixels",
                    shape.width,
                    shape.height,
                    super::input::MAX_DIMENSION
                ),
            ));
        }
        if u64::from(shape.width) * u64::from(shape.height) > self.limits.max_pixels {
            return Err(self.limits.pixels_exceeded(shape.width, shape.height));
        }
        if let Some(filter) = self.filter.as_mut() {
            filter
                .graph
                .flush()
                .map_err(|err| encoder_error("the video filter failed", err))?;
            self.drain_filter(muxer)?;
        }
        let valid = |sar: Rational| sar.numerator() > 0 && sar.denominator() > 0;
        let sar = [self.stream_sar, self.decoded.aspect_ratio()]
            .into_iter()
            .find(|sar| valid(*sar))
            .unwrap_or(Rational::new(0, 1));
        let graph = build_graph(
            shape,
            sar,
            self.stream_tb,
            self.frame_rate,
            self.rotation,
            (self.out_width, self.out_height),
        )
        .map_err(|err| encoder_error("the video filter could not be set up", err))?;
        self.filter = Some(VideoFilter {
            graph,
            input: shape,
        });
        Ok(())
    }

    fn drain_filter(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        loop {
            let Some(filter) = self.filter.as_mut() else {
                return Ok(());
            };
            let pulled = filter
                .graph
                .pull(&mut self.filtered)
                .map_err(|err| encoder_error("the video filter failed", err))?;
            if !pulled {
                return Ok(());
            }
            let sink_tb = filter.graph.time_base();
            if self.encoder.is_none() {
                self.open_encoder(muxer)?;
            }

            let Some(pts) = self.filtered.pts() else {
                continue;
            };
            let pts = pts.rescale(sink_tb, self.encoder_tb);
            // In constant-rate mode two frames closer than one frame period
            // land on the same tick; keep the first, as the CLI drops the
            // second.
            if self.last_encoded_pts.is_some_and(|last| pts <= last) {
                continue;
            }
            if let Some(last) = self.last_encoded_pts {
                self.packet_duration = pts - last;
            }
            self.first_encoded_pts.get_or_insert(pts);
            self.last_encoded_pts = Some(pts);
            self.filtered.set_pts(Some(pts));
            self.filtered.set_kind(picture::Type::None);
            let encoder = self.encoder.as_mut().ok_or_else(|| {
                TranscodeError::new(ErrorCode::EncoderFailed, "the video encoder is missing")
            })?;
            encoder
                .send_frame(&self.filtered)
                .map_err(|err| encoder_error("the video encoder failed", err))?;
            if let Some(meter) = self.meter.as_mut() {
                meter.reference(&self.filtered);
            }
            self.receive_packets(muxer)?;
        }
    }
}

impl VideoPipeline {
    /// Measures the output's quality against the pictures encoded; with
    /// `thin`, within a share of the encode's time (see `quality`).
    pub fn measure(&mut self, thin: bool) {
        self.measure = Some(thin);
    }

    /// Encodes only the pictures from `start` to `end` seconds.
    pub fn set_window(&mut self, start: f64, end: f64) {
        self.window = Some(Window::Seconds { start, end });
    }

    /// Returns the output tick a picture stamped `raw_pts` (as demuxed)
    /// gets, as `drain_filter` stamps it: the graph keeps
    /// the stream's time base.
    pub(super) fn tick_of(&self, raw_pts: i64) -> i64 {
        (raw_pts - self.start_offset).rescale(self.stream_tb, self.encoder_tb)
    }

    /// Returns whether a picture past the window was decoded.
    pub fn window_ended(&self) -> bool {
        self.window_ended
    }

    /// Returns the time spent measuring quality.
    pub fn quality_time(&self) -> Duration {
        self.measured
            .as_ref()
            .map_or(Duration::ZERO, |(busy, _)| *busy)
    }

    /// Returns the measured quality, once [`VideoPipeline::finish`] ran.
    pub fn take_quality(&mut self) -> Option<Quality> {
        self.measured
            .as_mut()
            .and_then(|(_, quality)| quality.take())
    }

    /// Returns the width and height of the pictures encoded.
    pub fn output_size(&self) -> (u32, u32) {
        (self.out_width, self.out_height)
    }

    /// Returns the encoded video's length: from its first frame to the end
    /// of its last, in seconds.
    pub fn encoded_seconds(&self) -> f64 {
        match (self.first_encoded_pts, self.last_encoded_pts) {
            (Some(first), Some(last)) => {
                (last - first + self.packet_duration) as f64 * f64::from(self.encoder_tb)
            }
            _ => 0.0,
        }
    }
}

fn is_sane_rate(rate: Rational) -> bool {
    rate.numerator() > 0 && rate.denominator() > 0 && SANE_FPS.contains(&f64::from(rate))
}
