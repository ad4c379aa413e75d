//! The video path's encoder end: opening the job's encoder on the first
//! filtered frame (its size, aspect and colour properties taken from the
//! filter graph's sink and that frame, its options from
//! [`super::encoders`]) and registering the stream with the muxer, then the
//! packet path: packets moved from the encoder to the muxer, each held back
//! until the next one so that it gets a duration, and the last one written
//! with a duration that ends the video where its last frame does.

use ffmpeg_next::{codec, encoder, ffi, format, Packet, Rational};

use super::encoders;
use super::mux::Muxer;
use super::quality::QualityMeter;
use super::video::VideoPipeline;
use super::{encoder_error, is_again_or_eof};

use crate::protocol::{ErrorCode, TranscodeError};

impl VideoPipeline {
    /// Opens the job's encoder for the first filtered frame and registers
    /// the stream.
    pub(super) fn open_encoder(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        let name = self.options.codec.encoder();
        let codec = encoder::find_by_name(name).ok_or_else(|| {
            TranscodeError::new(
                ErrorCode::EncoderFailed,
                format!(
                    "the {} encoder ({name}) is not available",
                    self.options.codec
                ),
            )
        })?;
        let mut context = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|err| encoder_error("the video encoder could not be created", err))?;
        let sink = self
            .filter
            .as_ref()
            .ok_or_else(|| {
                TranscodeError::new(ErrorCode::EncoderFailed, "the video filter is missing")
            })?
            .graph
            .sink();
        // SAFETY: reading properties of a configured buffersink.
        let (width, height, sar) = unsafe {
            let ptr = sink.as_ptr();
            (
                ffi::av_buffersink_get_w(ptr),
                ffi::av_buffersink_get_h(ptr),
                Rational::from(ffi::av_buffersink_get_sample_aspect_ratio(ptr)),
            )
        };
        context.set_width(width.max(0) as u32);
        context.set_height(height.max(0) as u32);
        context.set_format(format::Pixel::YUV420P);
        context.set_aspect_ratio(sar);
        context.set_time_base(self.encoder_tb);
        context.set_frame_rate(self.frame_rate);
        context.set_color_range(self.filtered.color_range());
        context.set_colorspace(self.filtered.color_space());
        context.set_color_primaries(self.filtered.color_primaries());
        context.set_color_transfer_characteristic(self.filtered.color_transfer_characteristic());
        // SAFETY: plain field write on a context that is not open yet.
        unsafe {
            (*context.as_mut_ptr()).chroma_sample_location = self.filtered.chroma_location().into();
        }
        if muxer.wants_global_header() {
            super::add_codec_flag(&mut context, ffi::AV_CODEC_FLAG_GLOBAL_HEADER);
        }
        if self.closed_gop {
            // x265 reads it as `open-gop=0`, SVT-AV1 as key frames that
            // refresh everything (`irefresh-type=2`); libx264 has it by
            // default and libvpx has no open groups.
            super::add_codec_flag(&mut context, ffi::AV_CODEC_FLAG_CLOSED_GOP);
        }

        let settings = encoders::settings(&self.options, self.rate);
        if let Some(bit_rate) = settings.bit_rate {
            context.set_bit_rate(bit_rate);
        }
        if let Some(gop) = settings.gop {
            context.set_gop(gop);
        }
        let options = settings.dictionary();
        let encoder = context
            .open_with(options)
            .map_err(|err| encoder_error("the video encoder could not be opened", err))?;

        muxer.configure(
            self.out_index,
            codec::Parameters::from(&encoder),
            self.encoder_tb,
            self.frame_rate,
            name,
        )?;
        if let Some(thin) = self.measure {
            self.meter =
                QualityMeter::new(codec::Parameters::from(&encoder), self.encoder_tb, thin);
        }
        self.encoder = Some(encoder);
        Ok(())
    }

    pub(super) fn receive_packets(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        while self.receive_packet(muxer)? {}
        Ok(())
    }

    /// Moves one packet from the encoder to the muxer; `false` when the
    /// encoder has none ready.
    pub(super) fn receive_packet(&mut self, muxer: &mut Muxer) -> Result<bool, TranscodeError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(false);
        };
        let mut packet = Packet::empty();
        match encoder.receive_packet(&mut packet) {
            Ok(()) => {}
            Err(err) if is_again_or_eof(&err) => return Ok(false),
            Err(err) => return Err(encoder_error("the video encoder failed", err)),
        }
        if let Some(meter) = self.meter.as_mut() {
            meter.packet(&packet);
        }
        packet.set_stream(self.out_index);
        if self.first_dts.is_none() {
            self.first_dts = packet.dts();
        }
        if let Some(mut previous) = self.held.replace(packet) {
            if previous.duration() <= 0 {
                previous.set_duration(self.packet_duration);
            }
            muxer.write(previous)?;
        }
        Ok(true)
    }

    /// Writes the held-back last packet with a duration that ends the video
    /// where the last frame's display ends. mp4 measures a track both in
    /// decoding timestamps (which lag the presentation ones by the B-frame
    /// delay) and by the furthest `pts + duration`; the duration is the
    /// smaller of the two that would reach the end, so neither overshoots.
    /// At a constant rate this is one frame, as the CLI writes.
    pub(super) fn write_last_packet(&mut self, muxer: &mut Muxer) -> Result<(), TranscodeError> {
        let Some(mut last) = self.held.take() else {
            return Ok(());
        };
        let fitted = match (
            self.first_encoded_pts,
            self.last_encoded_pts,
            self.first_dts,
            last.dts(),
            last.pts(),
        ) {
            (Some(first_pts), Some(last_pts), Some(first_dts), Some(dts), Some(pts)) => {
                let end = last_pts + self.packet_duration;
                let by_dts = end - first_pts + first_dts - dts;
                let by_pts = end - pts;
                Some(by_dts.min(by_pts))
            }
            _ => None,
        };
        let duration = fitted
            .filter(|duration| *duration > 0)
            .unwrap_or(self.packet_duration);
        if last.duration() <= 0 {
            last.set_duration(duration);
        }
        muxer.write(last)
    }
}
