//! The files a join reads: a segment's or the audio's, opened like any
//! input (a container on the allow list, within the job's limits), checked
//! to be the part they are given as (their label, their container), and
//! read packet by packet; and what every segment's video must share with
//! the first's.

use std::path::Path;

use ffmpeg_next::{ffi, format, media, Packet, Rational};

use super::audio::LABEL as AUDIO_LABEL;
use crate::engine::input;
use crate::engine::{describe, lower};
use crate::protocol::{ErrorCode, Format, Limits, TranscodeError};

/// Returns the size of the file at `path`, which `what` names in errors.
pub(super) fn file_size(path: &Path, what: &str) -> Result<u64, TranscodeError> {
    std::fs::metadata(path)
        .map(|meta| meta.len())
        .map_err(|err| {
            TranscodeError::new(
                ErrorCode::Io,
                format!(
                    "{what}'s file {} could not be read: {}",
                    path.display(),
                    lower(&err.to_string())
                ),
            )
        })
}

/// What a file is to the join.
#[derive(Clone, Copy)]
pub(super) enum Role {
    Segment { index: usize, count: usize },
    Audio,
}

impl Role {
    fn name(self) -> String {
        match self {
            Role::Segment { index, .. } => format!("segment {index}"),
            Role::Audio => "the audio".to_owned(),
        }
    }

    fn label(self) -> String {
        match self {
            Role::Segment { index, count } => super::label(index, count),
            Role::Audio => AUDIO_LABEL.to_owned(),
        }
    }
}

/// One opened part and the stream taken from it.
pub(super) struct Part {
    ctx: format::context::Input,
    stream: usize,
    pub time_base: Rational,
    name: String,
}

impl Part {
    /// Opens the file at `path` as `role`, checking its container and label.
    pub fn open(
        path: &Path,
        role: Role,
        format: Format,
        limits: &Limits,
    ) -> Result<Part, TranscodeError> {
        let name = role.name();
        let unreadable = |detail: &str| {
            TranscodeError::new(
                ErrorCode::InvalidMedia,
                format!("{name} ({}) is not readable: {detail}", path.display()),
            )
        };
        let (ctx, _) = input::open_file(path, limits).map_err(|err| match err.code {
            ErrorCode::Io => err,
            _ => unreadable(&err.message),
        })?;
        if !ctx
            .format()
            .name()
            .split(',')
            .any(|name| name == format.muxer())
        {
            return Err(unreadable(&format!("it is not {format}")));
        }
        let label = ctx.metadata().get("comment").map(str::to_owned);
        if label.as_deref() != Some(role.label().as_str()) {
            return Err(unreadable(&format!(
                "it is {}, not {}",
                label.as_deref().unwrap_or("no part of a split job"),
                role.label()
            )));
        }
        let medium = match role {
            Role::Segment { .. } => media::Type::Video,
            Role::Audio => media::Type::Audio,
        };
        let Some(stream) = ctx.streams().find(|s| s.parameters().medium() == medium) else {
            return Err(unreadable("it holds no stream of its kind"));
        };
        let (stream, time_base) = (stream.index(), stream.time_base());
        Ok(Part {
            ctx,
            stream,
            time_base,
            name,
        })
    }

    /// Returns the next packet of the part's stream, or `None` at its end.
    /// A part that cannot be read to its end fails the join.
    pub fn next(&mut self) -> Result<Option<Packet>, TranscodeError> {
        loop {
            let mut packet = Packet::empty();
            match packet.read(&mut self.ctx) {
                Ok(()) if packet.stream() == self.stream => return Ok(Some(packet)),
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(None),
                Err(err) => {
                    return Err(TranscodeError::new(
                        ErrorCode::InvalidMedia,
                        format!("{} is damaged: {}", self.name, describe(err)),
                    ))
                }
            }
        }
    }

    pub fn parameters(&self) -> Result<ffmpeg_next::codec::Parameters, TranscodeError> {
        self.ctx
            .stream(self.stream)
            .map(|stream| stream.parameters())
            .ok_or_else(|| TranscodeError::new(ErrorCode::Internal, "a part's stream is missing"))
    }

    /// Returns the frame rate the segment's encode had, as read back (the
    /// CLI's guess), if sane.
    pub fn frame_rate(&mut self) -> Option<Rational> {
        // SAFETY: both pointers come from the open context, the index from
        // its stream list.
        let guessed = unsafe {
            let ctx = self.ctx.as_mut_ptr();
            let stream = *(*ctx).streams.add(self.stream);
            Rational::from(ffi::av_guess_frame_rate(ctx, stream, std::ptr::null_mut()))
        };
        let fps = f64::from(guessed);
        (guessed.numerator() > 0 && (1.0..=1000.0).contains(&fps)).then_some(guessed)
    }
}

/// What every segment's video must share with the first's.
#[derive(PartialEq)]
pub(super) struct Shape {
    pub codec: &'static str,
    pub width: u32,
    pub height: u32,
    pixel_format: i32,
    extradata: Vec<u8>,
    time_base: Rational,
}

impl Shape {
    pub fn of(part: &Part) -> Shape {
        let stream = part.ctx.stream(part.stream);
        let parameters = stream.as_ref().map(|stream| stream.parameters());
        let codec = parameters.as_ref().map_or("none", |p| p.id().name());
        // SAFETY: plain fields of the parameters of an open stream; the
        // extradata holds `extradata_size` bytes when not null.
        let (width, height, pixel_format, extradata) = match &parameters {
            Some(parameters) => unsafe {
                let par = parameters.as_ptr();
                let extradata = if (*par).extradata.is_null() || (*par).extradata_size <= 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts((*par).extradata, (*par).extradata_size as usize)
                        .to_vec()
                };
                ((*par).width, (*par).height, (*par).format, extradata)
            },
            None => (0, 0, -1, Vec::new()),
        };
        Shape {
            codec,
            width: width.max(0) as u32,
            height: height.max(0) as u32,
            pixel_format,
            extradata,
            time_base: part.time_base,
        }
    }

    /// Fails if segment `index`'s video (`other`) differs from this one.
    pub fn check(&self, other: &Shape, index: usize) -> Result<(), TranscodeError> {
        let differs = [
            (self.codec != other.codec, "codec"),
            (
                (self.width, self.height) != (other.width, other.height),
                "size",
            ),
            (self.pixel_format != other.pixel_format, "pixel format"),
            (self.extradata != other.extradata, "stream headers"),
            (self.time_base != other.time_base, "time base"),
        ];
        match differs.iter().find(|(differs, _)| *differs) {
            Some((_, what)) => Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                format!(
                    "segment {index} was not encoded like segment 0: they differ in their {what} \
                     (were they encoded at one rate?)"
                ),
            )),
            None => Ok(()),
        }
    }
}
