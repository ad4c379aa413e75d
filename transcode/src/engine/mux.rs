//! The output file, MP4 or WebM: stream registration, the deferred header,
//! interleaved packet writing and the trailer (MP4's `+faststart`, WebM's
//! cues in front, so that either plays while it downloads).
//!
//! A part of a split job (a segment, the audio) is written for the join
//! rather than for a player: its file says what part it is (a `comment`
//! the join checks) and an MP4 part keeps its timestamps exact, its movie
//! timescale (in which the edit list places the first frame) being the
//! track's, not milliseconds.
//!
//! The header can only be written once every encoder is open, and the video
//! encoder opens on the first filtered frame (its colour properties come from
//! that frame, as in the ffmpeg CLI). Packets that arrive earlier, audio
//! typically, wait in a bounded queue.

use std::path::Path;

use ffmpeg_next::{codec, format, Dictionary, Packet, Rational};

use super::{demuxers::file_url, encoder_error, write_error};
use crate::protocol::{ErrorCode, Format, TranscodeError};

/// How many packets may wait for the header before the input is declared
/// broken (about 90 s of AAC): a file whose video never starts is not worth
/// buffering without bound.
const MAX_PENDING_PACKETS: usize = 4096;

struct OutStream {
    /// Time base the encoder stamps packets in.
    encoder_tb: Rational,
    /// Time base of the muxer stream, known once the header is written.
    muxer_tb: Rational,
    ready: bool,
}

pub(super) struct Muxer {
    ctx: format::context::Output,
    format: Format,
    /// What part of a split job this file is, or `None` for a job's output.
    part: Option<String>,
    streams: Vec<OutStream>,
    header_written: bool,
    pending: Vec<Packet>,
}

impl Muxer {
    /// Creates `path` (truncating it) as a part of a split job in
    /// `format`, labelled `part` (e.g. "vidpress segment 2 of 5").
    pub fn create_part(path: &Path, format: Format, part: String) -> Result<Self, TranscodeError> {
        let mut muxer = Muxer::create(path, format)?;
        muxer.part = Some(part);
        Ok(muxer)
    }

    /// Creates `path` (truncating it) as a file in `format`.
    pub fn create(path: &Path, format: Format) -> Result<Self, TranscodeError> {
        let url = file_url(path)?;
        let url = url.to_str().map_err(|_| {
            TranscodeError::new(ErrorCode::Io, "the output path is not valid UTF-8")
        })?;
        let mut options = Dictionary::new();
        options.set("protocol_whitelist", "file");
        let ctx = format::output_as_with(url, format.muxer(), options).map_err(|err| {
            TranscodeError::new(
                ErrorCode::Io,
                format!(
                    "the output file could not be created: {}",
                    super::describe(err)
                ),
            )
        })?;
        Ok(Muxer {
            ctx,
            format,
            part: None,
            streams: Vec::new(),
            header_written: false,
            pending: Vec::new(),
        })
    }

    /// Returns whether encoders must put their headers in extradata.
    pub fn wants_global_header(&self) -> bool {
        self.ctx
            .format()
            .flags()
            .contains(format::Flags::GLOBAL_HEADER)
    }

    /// Reserves an output stream, returning its index. Its parameters are set
    /// later by [`Muxer::configure`].
    pub fn add_stream(&mut self) -> Result<usize, TranscodeError> {
        let stream = self
            .ctx
            .add_stream(ffmpeg_next::encoder::find(codec::Id::None))
            .map_err(|err| encoder_error("the output stream could not be created", err))?;
        let index = stream.index();
        self.streams.push(OutStream {
            encoder_tb: Rational::new(0, 1),
            muxer_tb: Rational::new(0, 1),
            ready: false,
        });
        Ok(index)
    }

    /// Copies an opened encoder's parameters into stream `index`; writes the
    /// header once every stream is configured. `encoder_name` (`"libx264"`)
    /// is recorded the way the CLI records it.
    pub fn configure(
        &mut self,
        index: usize,
        parameters: codec::Parameters,
        encoder_tb: Rational,
        frame_rate: Option<Rational>,
        encoder_name: &str,
    ) -> Result<(), TranscodeError> {
        {
            let mut stream = self.ctx.stream_mut(index).ok_or_else(|| {
                TranscodeError::new(ErrorCode::EncoderFailed, "the output stream is missing")
            })?;
            stream.set_parameters(parameters);
            if self.format == Format::Mp4 && stream.parameters().id() == codec::Id::HEVC {
                // `hvc1` (parameter sets in the header only) is the tag
                // browsers and Apple's players take; the muxer's default
                // is `hev1`.
                // SAFETY: a plain field of the stream's own parameters,
                // before the header is written.
                unsafe {
                    (*(*stream.as_mut_ptr()).codecpar).codec_tag = u32::from_le_bytes(*b"hvc1");
                }
            }
            // A hint the mp4 muxer uses to pick its timescale, as the CLI gives.
            stream.set_time_base(encoder_tb);
            if let Some(rate) = frame_rate {
                stream.set_avg_frame_rate(rate);
            }
            let mut metadata = Dictionary::new();
            metadata.set("encoder", &format!("{} {encoder_name}", libavcodec_ident()));
            stream.set_metadata(metadata);
        }
        let slot = &mut self.streams[index];
        slot.encoder_tb = encoder_tb;
        slot.ready = true;

        if self.streams.iter().all(|stream| stream.ready) {
            self.write_header()?;
        }
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), TranscodeError> {
        let mut options = Dictionary::new();
        match (self.format, &self.part) {
            (Format::Mp4, None) => options.set("movflags", "+faststart"),
            // Written at the end, then moved before the clusters, as
            // faststart moves MP4's index.
            (Format::Webm, None) => options.set("cues_to_front", "1"),
            (format, Some(part)) => {
                let mut metadata = Dictionary::new();
                metadata.set("comment", part);
                self.ctx.set_metadata(metadata);
                let first = self.streams.first().map(|stream| stream.encoder_tb);
                if let (Format::Mp4, Some(time_base)) = (format, first) {
                    options.set("movie_timescale", &mov_timescale(time_base).to_string());
                }
            }
        }
        self.ctx
            .write_header_with(options)
            .map_err(|err| write_error("the output header could not be written", err))?;
        self.header_written = true;
        for (index, slot) in self.streams.iter_mut().enumerate() {
            slot.muxer_tb = self
                .ctx
                .stream(index)
                .map_or(slot.encoder_tb, |stream| stream.time_base());
        }
        for packet in std::mem::take(&mut self.pending) {
            self.write_now(packet)?;
        }
        Ok(())
    }

    /// Writes an encoded packet stamped in its encoder's time base, or
    /// queues it until the header is written.
    pub fn write(&mut self, packet: Packet) -> Result<(), TranscodeError> {
        if self.header_written {
            return self.write_now(packet);
        }
        if self.pending.len() >= MAX_PENDING_PACKETS {
            return Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                "the video stream has no decodable frame near its start",
            ));
        }
        self.pending.push(packet);
        Ok(())
    }

    fn write_now(&mut self, mut packet: Packet) -> Result<(), TranscodeError> {
        let slot = &self.streams[packet.stream()];
        packet.rescale_ts(slot.encoder_tb, slot.muxer_tb);
        packet
            .write_interleaved(&mut self.ctx)
            .map_err(|err| write_error("the output could not be written", err))
    }

    /// Returns whether the header (and so every encoder) is in place.
    pub fn has_started(&self) -> bool {
        self.header_written
    }

    /// Writes the trailer (where the index is moved to the front) and
    /// closes the file.
    pub fn finish(mut self) -> Result<(), TranscodeError> {
        if !self.header_written {
            return Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                "no frame of the video could be decoded",
            ));
        }
        self.ctx
            .write_trailer()
            .map_err(|err| write_error("the output could not be finalized", err))?;
        // Dropping the context closes the file before the caller stats it.
        drop(self);
        Ok(())
    }
}

/// Returns the timescale the mp4 muxer gives a track stamped in
/// `time_base`, as libavformat's movenc picks it: the time base's
/// denominator, doubled until it is at least 10000.
fn mov_timescale(time_base: Rational) -> i64 {
    let mut timescale = i64::from(time_base.denominator().max(1));
    while timescale < 10_000 {
        timescale *= 2;
    }
    timescale
}

/// Returns libavcodec's identity as the CLI writes it, e.g. `Lavc59.37.100`.
fn libavcodec_ident() -> String {
    // SAFETY: a pure query of the linked library.
    let version = unsafe { ffmpeg_next::ffi::avcodec_version() };
    format!(
        "Lavc{}.{}.{}",
        version >> 16,
        (version >> 8) & 0xff,
        version & 0xff
    )
}
