//! The transcoder itself: libav* through ffmpeg-next, in-process.
//!
//! Only ever called inside the child process (see [`crate::child`]), because
//! a malformed file can crash or hang libav*. It owns opening inputs safely
//! (`input`), the rate modes (`modes`, their arithmetic in `rate`) run as
//! passes (`pass`: the demux loop, with `progress` over every pass), the
//! video and audio paths (`video`, its encoder's opening and packets in
//! `video_encoder`, and `audio`, sharing `graph`; each video encoder's
//! options in `encoders`), the quality
//! measurement (`quality`), the muxer (`mux`), the thumbnail (`thumbnail`)
//! and libav's log output (`avlog`); reading packets (`demux`) and the part
//! of the video a pass encodes (`window`); and a video split into segments
//! ([`segments`]: plan, segment, audio, join).
//!
//! The output is meant to match `ffmpeg -i IN -c:v libx264 -preset P -crf C
//! -c:a aac -b:a Bk -movflags +faststart OUT` (and the same with each
//! codec's encoder and options) in size and speed, so the
//! pipeline copies the CLI's choices where they matter: automatic codec
//! threads, the CLI's frame-rate guess and constant-rate time base, and the
//! encoder opened on its first frame.

mod audio;
mod avlog;
mod demux;
mod demuxers;
mod encoders;
mod graph;
mod input;
mod modes;
mod mux;
mod pass;
mod progress;
mod quality;
mod rate;
pub mod segments;
mod thumbnail;
mod video;
mod video_encoder;
mod video_graph;
mod window;

use std::path::Path;
use std::sync::Once;

use ffmpeg_next::{ffi, Error};

use crate::protocol::{
    ChildEvent, ErrorCode, Limits, MediaInfo, Output, TranscodeError, TranscodeJob,
};

pub use segments::{encode_audio, encode_segment, join, plan};

/// Sets libav up once per process: registers formats (for old libav
/// versions), installs the log callback that keeps the last error message,
/// and lowers libav's log level to errors. Safe to call repeatedly.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(err) = ffmpeg_next::init() {
            tracing::warn!(error = %err, "libav initialisation reported an error");
        }
        avlog::install();
        // libav's default (info) is chatty: x264 prints its settings.
        ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);
    });
}

/// Opens `path` and describes its video, without transcoding anything,
/// within the default [`Limits`].
///
/// Fails as [`transcode`] would on the same file before encoding starts:
/// refused formats, no video stream, bad dimensions, over a limit,
/// unreadable data.
pub fn probe(path: &Path) -> Result<MediaInfo, TranscodeError> {
    probe_with_limits(path, &Limits::default())
}

/// Opens `path` and describes its video, as [`probe`] does, within `limits`.
pub fn probe_with_limits(path: &Path, limits: &Limits) -> Result<MediaInfo, TranscodeError> {
    init();
    input::open(path, limits).map(|input| input.info)
}

/// Probes `job.input` and writes a JPEG thumbnail of it to `job.output`
/// (the child's [`crate::protocol::Task::Probe`]), within `job.limits`.
///
/// Calls `on_event` with [`ChildEvent::Probed`] once the input is open,
/// before decoding the picture, so a thumbnail that cannot be made still
/// leaves the probe's findings. Returns the thumbnail's size; on failure
/// no file is left at `job.output`.
pub fn probe_and_thumbnail(
    job: &TranscodeJob,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    init();
    let mut input = input::open(&job.input, &job.limits)?;
    on_event(ChildEvent::Probed(input.info.clone()));
    let result = thumbnail::write(&mut input, &job.output);
    if result.is_err() {
        let _ = std::fs::remove_file(&job.output);
    }
    result.map(|bytes| Output {
        bytes,
        report: None,
    })
}

/// Transcodes `job.input` into `job.output` by `job.options` (codec,
/// container, rate mode), within `job.limits` (pixels and duration; memory
/// and files are the driver's), and reports what it made.
///
/// Calls `on_event` with [`ChildEvent::Probed`] once the input is open, then
/// with [`ChildEvent::Progress`] (at most every 100 ms, non-decreasing, the
/// last one at 1.0). `Done` and `Failed` are left to the caller, which gets
/// the output size or the error. On failure the output file is removed.
pub fn transcode(
    job: &TranscodeJob,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    init();
    job.options.validate().map_err(|err| {
        TranscodeError::new(
            ErrorCode::EncoderFailed,
            format!("the encode options are invalid: {err}"),
        )
    })?;
    let input = input::open(&job.input, &job.limits)?;
    on_event(ChildEvent::Probed(input.info.clone()));

    let result = modes::encode(job, input, on_event);
    if result.is_err() {
        let _ = std::fs::remove_file(&job.output);
    }
    result
}

/// Adds `flag` (`AV_CODEC_FLAG_*`) to an encoder's flags. ffmpeg-next's
/// `set_flags` replaces them, which would drop the codec's own defaults
/// (libx264's `+cgop`: closed GOPs, as the CLI gets).
fn add_codec_flag(context: &mut ffmpeg_next::codec::Context, flag: u32) {
    // SAFETY: plain field update on a context that is not open yet.
    unsafe {
        (*context.as_mut_ptr()).flags |= flag as libc::c_int;
    }
}

/// Returns `text` with its first letter in lowercase, for libav messages
/// ("Invalid data found…") quoted inside our sentences.
fn lower(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Describes a negative libav return code, e.g. "invalid data found when
/// processing input".
fn av_error(code: libc::c_int) -> String {
    let mut buffer = [0 as libc::c_char; 256];
    // SAFETY: av_strerror writes at most `buffer.len()` bytes, NUL included.
    let known = unsafe { ffi::av_strerror(code, buffer.as_mut_ptr(), buffer.len()) } == 0;
    if !known {
        return format!("error {code}");
    }
    // SAFETY: NUL-terminated by av_strerror.
    lower(&unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy())
}

/// Describes a libav error.
/// Returns an `InvalidMedia` error naming what failed.
fn invalid(context: &str, err: Error) -> TranscodeError {
    TranscodeError::new(
        ErrorCode::InvalidMedia,
        format!("{context}: {}", describe(err)),
    )
}

/// Opens the decoder of `stream` (`kind` is "audio" or "video", for errors)
/// with its packet time base set and `threads=auto`, as the ffmpeg CLI does:
/// the libavcodec default is one thread, which halves throughput on two cores.
/// Pictures over `limits.max_pixels` are refused by the decoder itself
/// (libav's `max_pixels`), before it allocates them.
fn open_decoder(
    stream: &ffmpeg_next::format::stream::Stream,
    kind: &str,
    limits: &Limits,
) -> Result<ffmpeg_next::decoder::Opened, TranscodeError> {
    open_decoder_with_threads(stream, kind, limits, "auto")
}

/// Opens a decoder for `stream` as [`open_decoder`] does, with `threads`
/// (libavcodec's option: a count, or `auto`).
fn open_decoder_with_threads(
    stream: &ffmpeg_next::format::stream::Stream,
    kind: &str,
    limits: &Limits,
    threads: &str,
) -> Result<ffmpeg_next::decoder::Opened, TranscodeError> {
    let parameters = stream.parameters();
    let codec = ffmpeg_next::decoder::find(parameters.id()).ok_or_else(|| {
        TranscodeError::new(
            ErrorCode::UnsupportedFormat,
            format!(
                "the {} {kind} codec is not supported",
                parameters.id().name()
            ),
        )
    })?;
    let mut context = ffmpeg_next::codec::context::Context::from_parameters(parameters)
        .map_err(|err| invalid(&format!("the {kind} stream parameters are invalid"), err))?;
    // SAFETY: plain field write on a context that is not open yet.
    unsafe {
        (*context.as_mut_ptr()).pkt_timebase = stream.time_base().into();
    }
    let mut options = ffmpeg_next::Dictionary::new();
    options.set("threads", threads);
    options.set("max_pixels", &input::decoder_max_pixels(limits));
    context
        .decoder()
        .open_as_with(codec, options)
        .map_err(|err| invalid(&format!("the {kind} decoder could not be opened"), err))
}

fn describe(err: Error) -> String {
    av_error(err.into())
}

/// Returns whether a send/receive call only means "nothing more for now".
fn is_again_or_eof(err: &Error) -> bool {
    matches!(err, Error::Eof) || matches!(err, Error::Other { errno } if *errno == libc::EAGAIN)
}

/// Returns whether a decoding error should stop the transcode rather than
/// skip a packet, as the CLI skips corrupt ones.
fn decode_error_is_fatal(err: &Error) -> bool {
    matches!(err, Error::Other { errno } if *errno == libc::ENOMEM)
}

fn encoder_error(context: &str, err: Error) -> TranscodeError {
    TranscodeError::new(
        ErrorCode::EncoderFailed,
        format!("{context}: {}", describe(err)),
    )
}

/// Maps a muxer error: file-system failures are `Io`, the rest the encoder's.
fn write_error(context: &str, err: Error) -> TranscodeError {
    let io = matches!(
        err,
        Error::Other { errno } if [
            libc::EIO,
            libc::ENOSPC,
            libc::EDQUOT,
            libc::EFBIG,
            libc::EACCES,
            libc::EPERM,
            libc::EROFS,
        ]
        .contains(&errno)
    );
    let code = if io {
        ErrorCode::Io
    } else {
        ErrorCode::EncoderFailed
    };
    TranscodeError::new(code, format!("{context}: {}", describe(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libav_messages_start_lowercase() {
        assert_eq!(
            av_error(ffi::AVERROR_INVALIDDATA),
            "invalid data found when processing input"
        );
    }
}
