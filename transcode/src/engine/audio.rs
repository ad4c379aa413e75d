//! The audio path: decoder → filter graph (`aresample`, `aformat` to the
//! sample format, rate and layout the encoder supports, frames of its fixed
//! size: 1024 samples for AAC, 20 ms for Opus) → the format's encoder
//! (native `aac` in MP4, `libopus` in WebM) → muxer.
//!
//! Timestamps are carried in 1/sample_rate from the decoder on, converted
//! with `av_rescale_delta` as the ffmpeg CLI does, so that coarse container
//! time bases (Matroska's milliseconds) do not jitter the sample clock.

use ffmpeg_next::{
    codec, decoder, encoder, ffi, format, frame, ChannelLayout, Dictionary, Packet, Rational,
    Rescale,
};

use super::graph::Graph;
use super::input::Input;
use super::mux::Muxer;
use super::{decode_error_is_fatal, encoder_error, invalid, is_again_or_eof, open_decoder};
use crate::protocol::{EncodeOptions, ErrorCode, Limits, TranscodeError};

pub(super) struct AudioPipeline {
    /// Index of the input stream this pipeline consumes.
    pub stream_index: usize,
    out_index: usize,
    decoder: decoder::Audio,
    stream_tb: Rational,
    /// Container start time in the stream time base.
    start_offset: i64,
    encoder: encoder::audio::Encoder,
    out_rate: u32,
    out_layout: ChannelLayout,
    out_format: format::Sample,
    filter: Option<AudioFilter>,
    /// `av_rescale_delta` state: the last timestamp handed out.
    rescale_last: i64,
    /// Expected timestamp of the next frame, in 1/input rate.
    next_pts: Option<i64>,
    decoded: frame::Audio,
    filtered: frame::Audio,
    limits: Limits,
    /// Packets the decoder rejected.
    pub decode_errors: u64,
}

struct AudioFilter {
    graph: Graph,
    input: AudioShape,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct AudioShape {
    rate: u32,
    format: format::Sample,
    layout: u64,
    channels: u16,
}

impl AudioPipeline {
    pub fn new(
        input: &mut Input,
        stream_index: usize,
        muxer: &mut Muxer,
        options: EncodeOptions,
    ) -> Result<Self, TranscodeError> {
        let stream = input.ctx.stream(stream_index).ok_or_else(|| {
            TranscodeError::new(ErrorCode::InvalidMedia, "the audio stream is missing")
        })?;
        let stream_tb = stream.time_base();
        let decoder = open_decoder(&stream, "audio", &input.limits)?
            .audio()
            .map_err(|err| invalid("the audio decoder could not be opened", err))?;

        let name = options.format.audio_encoder();
        let codec = encoder::find_by_name(name)
            .ok_or_else(|| {
                TranscodeError::new(
                    ErrorCode::EncoderFailed,
                    format!("the {name} encoder is not available"),
                )
            })?
            .audio()
            .map_err(|err| encoder_error("the audio encoder is not available", err))?;
        let out_layout = encoder_layout(&codec, decoder.channel_layout(), decoder.channels());
        let out_rate = encoder_rate(&codec, decoder.rate());
        let out_format = encoder_format(&codec);

        let mut context = codec::context::Context::new_with_codec(*codec)
            .encoder()
            .audio()
            .map_err(|err| encoder_error("the audio encoder could not be created", err))?;
        context.set_rate(out_rate as i32);
        context.set_channel_layout(out_layout);
        context.set_channels(out_layout.channels());
        context.set_format(out_format);
        context.set_bit_rate(options.audio_bitrate_kbps as usize * 1000);
        context.set_time_base(Rational::new(1, out_rate as i32));
        if muxer.wants_global_header() {
            super::add_codec_flag(&mut context, ffi::AV_CODEC_FLAG_GLOBAL_HEADER);
        }
        let encoder = context
            .open_as_with(codec, Dictionary::new())
            .map_err(|err| encoder_error("the audio encoder could not be opened", err))?;

        let out_index = muxer.add_stream()?;
        muxer.configure(
            out_index,
            codec::Parameters::from(&encoder),
            Rational::new(1, out_rate as i32),
            None,
            name,
        )?;

        let start_offset = input
            .start_time
            .rescale(super::input::av_time_base(), stream_tb);
        Ok(AudioPipeline {
            stream_index,
            out_index,
            decoder,
            stream_tb,
            start_offset,
            encoder,
            out_rate,
            out_layout,
            out_format,
            filter: None,
            rescale_last: ffi::AV_NOPTS_VALUE,
            next_pts: None,
            decoded: frame::Audio::empty(),
            filtered: frame::Audio::empty(),
            limits: input.limits,
            decode_errors: 0,
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
                return Err(invalid("the audio could not be decoded", err));
            }
            self.decode_errors += 1;
        }
        self.receive_frames(muxer)
    }

    /// Drains the decoder, the filter graph and the encoder at end of input.
    pub fn finish(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        let _ = self.decoder.send_eof();
        self.receive_frames(muxer)?;
        if let Some(filter) = self.filter.as_mut() {
            filter
                .graph
                .flush()
                .map_err(|err| encoder_error("the audio filter failed", err))?;
            self.drain_filter(muxer)?;
        }
        self.encoder
            .send_eof()
            .map_err(|err| encoder_error("the audio encoder failed", err))?;
        self.receive_packets(muxer)
    }

    fn receive_frames(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(err) if is_again_or_eof(&err) => return Ok(()),
                Err(err) if decode_error_is_fatal(&err) => {
                    return Err(invalid("the audio could not be decoded", err));
                }
                Err(_) => {
                    self.decode_errors += 1;
                    return Ok(());
                }
            }
            let rate = self.decoded.rate();
            let samples = self.decoded.samples();
            if rate == 0 || samples == 0 {
                continue;
            }
            // SAFETY: the decoder just filled this frame; its layout is
            // replaced in place with a valid native one.
            let (layout, channels) = unsafe {
                let raw = self.decoded.as_mut_ptr();
                if (*raw).ch_layout.order != ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE {
                    // Unknown layout: assume the usual one for the channel
                    // count, as the CLI does.
                    let channels = (*raw).ch_layout.nb_channels;
                    ffi::av_channel_layout_uninit(&mut (*raw).ch_layout);
                    ffi::av_channel_layout_default(&mut (*raw).ch_layout, channels);
                }
                let layout = (*raw).ch_layout.u.mask;
                (*raw).channel_layout = layout;
                (*raw).channels = (*raw).ch_layout.nb_channels;
                (layout, (*raw).ch_layout.nb_channels)
            };
            if layout == 0 || channels <= 0 {
                self.decode_errors += 1;
                continue;
            }
            let shape = AudioShape {
                rate,
                format: self.decoded.format(),
                layout,
                channels: channels as u16,
            };
            if self.filter.as_ref().map(|filter| filter.input) != Some(shape) {
                self.rebuild_filter(shape, muxer)?;
            }

            let sample_tb = Rational::new(1, rate as i32);
            let pts = match self.decoded.timestamp() {
                // SAFETY: pure arithmetic on plain values.
                Some(ts) => unsafe {
                    ffi::av_rescale_delta(
                        self.stream_tb.into(),
                        ts - self.start_offset,
                        sample_tb.into(),
                        samples as i32,
                        &mut self.rescale_last,
                        sample_tb.into(),
                    )
                },
                None => self.next_pts.unwrap_or(0),
            };
            self.next_pts = Some(pts + samples as i64);
            self.decoded.set_pts(Some(pts));
            // Audio that runs on past the video counts against the limit too.
            let seconds = pts as f64 / f64::from(rate);
            if seconds > self.limits.max_duration_secs as f64 {
                return Err(self.limits.decoded_duration_exceeded(seconds));
            }

            let filter = self.filter.as_mut().ok_or_else(|| {
                TranscodeError::new(ErrorCode::EncoderFailed, "the audio filter is missing")
            })?;
            filter
                .graph
                .push(&self.decoded)
                .map_err(|err| encoder_error("the audio filter failed", err))?;
            self.drain_filter(muxer)?;
        }
    }

    fn rebuild_filter(
        &mut self,
        shape: AudioShape,
        muxer: &mut Muxer,
    ) -> Result<(), TranscodeError> {
        if let Some(filter) = self.filter.as_mut() {
            filter
                .graph
                .flush()
                .map_err(|err| encoder_error("the audio filter failed", err))?;
            self.drain_filter(muxer)?;
        }
        // A new sample clock starts with the new parameters.
        self.rescale_last = ffi::AV_NOPTS_VALUE;
        let source_args = format!(
            "time_base=1/{rate}:sample_rate={rate}:sample_fmt={format}:channel_layout=0x{layout:x}",
            rate = shape.rate,
            format = shape.format.name(),
            layout = shape.layout,
        );
        let chain = format!(
            "aresample={rate},aformat=sample_fmts={format}:sample_rates={rate}:channel_layouts=0x{layout:x}",
            rate = self.out_rate,
            format = self.out_format.name(),
            layout = self.out_layout.bits(),
        );
        let mut graph = Graph::build("abuffer", &source_args, &chain, "abuffersink")
            .map_err(|err| encoder_error("the audio filter could not be set up", err))?;
        let variable_frame_size = self.encoder.codec().is_some_and(|codec| {
            codec
                .capabilities()
                .contains(codec::capabilities::Capabilities::VARIABLE_FRAME_SIZE)
        });
        if !variable_frame_size && self.encoder.frame_size() > 0 {
            graph.set_frame_size(self.encoder.frame_size());
        }
        self.filter = Some(AudioFilter {
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
                .map_err(|err| encoder_error("the audio filter failed", err))?;
            if !pulled {
                return Ok(());
            }
            let sink_tb = filter.graph.time_base();
            if let Some(pts) = self.filtered.pts() {
                let pts = pts.rescale(sink_tb, Rational::new(1, self.out_rate as i32));
                self.filtered.set_pts(Some(pts));
            }
            self.encoder
                .send_frame(&self.filtered)
                .map_err(|err| encoder_error("the audio encoder failed", err))?;
            self.receive_packets(muxer)?;
        }
    }

    fn receive_packets(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        loop {
            let mut packet = Packet::empty();
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {}
                Err(err) if is_again_or_eof(&err) => return Ok(()),
                Err(err) => return Err(encoder_error("the audio encoder failed", err)),
            }
            packet.set_stream(self.out_index);
            muxer.write(packet)?;
        }
    }
}

/// Picks the sample format: float, planar or packed, as the encoder takes
/// it (AAC planar, Opus packed), else the first it lists.
fn encoder_format(codec: &codec::Audio) -> format::Sample {
    let planar = format::Sample::F32(format::sample::Type::Planar);
    let packed = format::Sample::F32(format::sample::Type::Packed);
    match codec.formats() {
        Some(formats) => {
            let formats: Vec<format::Sample> = formats.collect();
            [planar, packed]
                .into_iter()
                .find(|wanted| formats.contains(wanted))
                .or_else(|| formats.first().copied())
                .unwrap_or(planar)
        }
        None => planar,
    }
}

/// Picks the channel layout: the input's when the encoder supports it, else the
/// supported layout with the most channels not above the input's. An unknown
/// input layout is taken as the default for its channel count, or stereo.
fn encoder_layout(codec: &codec::Audio, layout: ChannelLayout, channels: u16) -> ChannelLayout {
    let layout = Some(layout)
        .filter(|layout| layout.bits() != 0)
        .or_else(|| Some(ChannelLayout::default(i32::from(channels))))
        .filter(|layout| layout.bits() != 0)
        .unwrap_or(ChannelLayout::STEREO);
    match codec.channel_layouts() {
        Some(supported) => {
            let supported: Vec<ChannelLayout> = supported.collect();
            if supported.contains(&layout) {
                layout
            } else {
                supported
                    .into_iter()
                    .filter(|candidate| candidate.channels() <= layout.channels())
                    .max_by_key(|candidate| candidate.channels())
                    .unwrap_or(ChannelLayout::STEREO)
            }
        }
        None => layout,
    }
}

/// Picks the sample rate: the input's when supported, else the closest
/// supported rate (Opus: 48 kHz for 44.1 kHz).
fn encoder_rate(codec: &codec::Audio, rate: u32) -> u32 {
    let rate = if rate == 0 { 48_000 } else { rate };
    match codec.rates() {
        Some(supported) => supported
            .filter_map(|candidate| u32::try_from(candidate).ok())
            .min_by_key(|candidate| candidate.abs_diff(rate))
            .unwrap_or(rate),
        None => rate,
    }
}
