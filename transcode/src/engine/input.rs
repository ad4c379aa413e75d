//! Opening an untrusted input safely and deciding what in it gets transcoded.
//!
//! **Invariant:** only the one local file is ever opened. The protocol
//! whitelist is `file`, and the container is detected first and checked
//! against [`ALLOWED_DEMUXERS`](super::demuxers::ALLOWED_DEMUXERS), a list of demuxers that read a single file
//! and never open another file or URL (no HLS, DASH, concat, image
//! sequences). The same list is passed to libav as `format_whitelist`, so
//! the check holds even if detection here and in libav ever disagreed.
//!
//! **Invariant:** no frame of a video over the job's [`Limits`] is decoded
//! at probe time. The frame size and duration the container's header
//! declares are checked right after `avformat_open_input`, before
//! `avformat_find_stream_info` decodes anything; that decoding runs with
//! libav's `max_pixels` option, so a stream whose pictures are larger than
//! its header says is refused too; and what `find_stream_info` learned is
//! checked again. (The decoders of the transcode get the same option, and
//! the pipelines check decoded sizes and timestamps: a lying header costs
//! at most the limits.)

use std::ffi::CString;
use std::path::Path;
use std::ptr;

use ffmpeg_next::{ffi, format, media, Dictionary, Rational};

use super::demuxers::{detect_format, file_url, whitelist_options};
use super::{av_error, avlog};
use crate::protocol::{ErrorCode, Limits, MediaInfo, TranscodeError};

/// Largest accepted width or height; beyond this a frame would cost hundreds
/// of megabytes and x264 levels stop anyway.
pub(super) const MAX_DIMENSION: u32 = 8192;

/// Room above `max_pixels` in the `max_pixels` option given to libav's
/// decoders: they check the picture with its width rounded up to their
/// stride alignment (up to 64), so a video exactly at the limit would be
/// refused without it. Exact checks are ours; this option is the backstop
/// against pictures far beyond what the header said.
const DECODER_PIXEL_SLACK: u64 = 64 * MAX_DIMENSION as u64;

/// Returns the value of libav's `max_pixels` decoder option for `limits`.
pub(super) fn decoder_max_pixels(limits: &Limits) -> String {
    limits
        .max_pixels
        .saturating_add(DECODER_PIXEL_SLACK)
        .min(i32::MAX as u64)
        .to_string()
}

/// An opened input and the streams chosen from it.
pub(super) struct Input {
    pub ctx: format::context::Input,
    /// What decoding it may cost.
    pub limits: Limits,
    /// [`avlog::oversized_mark`] from before anything was decoded: a picture
    /// refused for its size since then is this input's.
    pub oversized_mark: u64,
    pub video_index: usize,
    pub audio_index: Option<usize>,
    pub info: MediaInfo,
    /// Width and height of the video as coded (before rotation).
    pub coded_size: (u32, u32),
    /// Clockwise rotation to apply for display: 0, 90, 180 or 270.
    pub rotation: u32,
    /// Container start time in AV_TIME_BASE units, subtracted from every
    /// timestamp so the output starts at zero, as the ffmpeg CLI does.
    pub start_time: i64,
}

/// Opens `path`, checks it is a video we accept within `limits`, and picks
/// its streams.
pub(super) fn open(path: &Path, limits: &Limits) -> Result<Input, TranscodeError> {
    let (ctx, oversized_mark) = open_file(path, limits)?;
    let input = select_streams(ctx, limits, oversized_mark)?;
    check_limits(&input.info, input.coded_size, limits)?;
    Ok(input)
}

/// Opens `path` as [`open`] does, in a container we accept and within
/// `limits`, whatever streams it holds. Returns the context and the
/// [`avlog::oversized_mark`] from before it was probed.
pub(super) fn open_file(
    path: &Path,
    limits: &Limits,
) -> Result<(format::context::Input, u64), TranscodeError> {
    let metadata = std::fs::metadata(path).map_err(|err| {
        TranscodeError::new(
            ErrorCode::Io,
            format!("the input file could not be read: {}", io_reason(&err)),
        )
    })?;
    if !metadata.is_file() {
        return Err(TranscodeError::new(
            ErrorCode::Io,
            "the input is not a regular file",
        ));
    }
    if metadata.len() == 0 {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            "the file is empty",
        ));
    }

    let url = file_url(path)?;
    let demuxer = detect_format(&url)?;
    let oversized_mark = avlog::oversized_mark();
    let ctx = open_with_whitelist(&url, demuxer, limits)?;
    if let Some((width, height)) = avlog::oversized_since(oversized_mark) {
        return Err(limits.pixels_exceeded(width, height));
    }
    Ok((ctx, oversized_mark))
}

/// Checks what the header declares, before anything is decoded: the size
/// of every video stream that states one (cover art aside) and the
/// container's duration, if known.
fn check_header(ctx: *const ffi::AVFormatContext, limits: &Limits) -> Result<(), TranscodeError> {
    // SAFETY: `ctx` is an input context just opened by avformat_open_input;
    // its stream array holds `nb_streams` valid streams with parameters.
    let streams = unsafe {
        if (*ctx).streams.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts((*ctx).streams, (*ctx).nb_streams as usize)
        }
    };
    for &stream in streams {
        // SAFETY: see above.
        let (medium, width, height, disposition) = unsafe {
            let par = (*stream).codecpar;
            (
                (*par).codec_type,
                (*par).width,
                (*par).height,
                (*stream).disposition,
            )
        };
        let cover_art = disposition & ffi::AV_DISPOSITION_ATTACHED_PIC as libc::c_int != 0;
        if medium != ffi::AVMediaType::AVMEDIA_TYPE_VIDEO || cover_art {
            continue;
        }
        let (width, height) = (width.max(0) as u32, height.max(0) as u32);
        if u64::from(width) * u64::from(height) > limits.max_pixels {
            return Err(limits.pixels_exceeded(width, height));
        }
    }
    // SAFETY: reading a plain field of the open context.
    let duration = unsafe { (*ctx).duration };
    if duration > 0 && duration != ffi::AV_NOPTS_VALUE {
        let seconds = duration as f64 / f64::from(ffi::AV_TIME_BASE);
        if seconds > limits.max_duration_secs as f64 {
            return Err(limits.duration_exceeded(seconds));
        }
    }
    Ok(())
}

/// Checks the chosen video against `limits` once its streams are known:
/// its coded size and its duration.
fn check_limits(
    info: &MediaInfo,
    (width, height): (u32, u32),
    limits: &Limits,
) -> Result<(), TranscodeError> {
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(limits.pixels_exceeded(width, height));
    }
    match info.duration_seconds {
        Some(seconds) if seconds > limits.max_duration_secs as f64 => {
            Err(limits.duration_exceeded(seconds))
        }
        _ => Ok(()),
    }
}

fn open_with_whitelist(
    url: &CString,
    demuxer: *const ffi::AVInputFormat,
    limits: &Limits,
) -> Result<format::context::Input, TranscodeError> {
    let mut ps: *mut ffi::AVFormatContext = ptr::null_mut();
    avlog::clear();
    // SAFETY: `url` is a valid C string and `demuxer` a format returned by
    // av_probe_input_buffer2. On failure avformat_open_input frees `ps`.
    let ret = unsafe {
        let mut raw = whitelist_options().disown();
        let ret = ffi::avformat_open_input(&mut ps, url.as_ptr(), demuxer, &mut raw);
        drop(Dictionary::own(raw));
        ret
    };
    if ret < 0 {
        let detail = avlog::take().unwrap_or_else(|| av_error(ret));
        if detail.contains("not on whitelist") {
            return Err(TranscodeError::new(
                ErrorCode::UnsupportedFormat,
                "the file format is not supported",
            ));
        }
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!("the file is not a readable video: {detail}"),
        ));
    }

    if let Err(err) = check_header(ps, limits) {
        // SAFETY: `ps` is an open input context that nothing else owns.
        unsafe { ffi::avformat_close_input(&mut ps) };
        return Err(err);
    }

    avlog::clear();
    // SAFETY: `ps` was opened above; on failure it is closed below. The
    // options array has one dictionary per stream, as libav requires; it
    // may replace them, and what it hands back is freed here.
    let ret = unsafe {
        let count = (*ps).nb_streams as usize;
        let max_pixels = decoder_max_pixels(limits);
        let mut options: Vec<*mut ffi::AVDictionary> = (0..count)
            .map(|_| {
                let mut options = Dictionary::new();
                options.set("max_pixels", &max_pixels);
                options.disown()
            })
            .collect();
        let ret = ffi::avformat_find_stream_info(ps, options.as_mut_ptr());
        for raw in options {
            drop(Dictionary::own(raw));
        }
        ret
    };
    if ret < 0 {
        // SAFETY: `ps` is an open input context that nothing else owns.
        unsafe { ffi::avformat_close_input(&mut ps) };
        let detail = avlog::take().unwrap_or_else(|| av_error(ret));
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            format!("the file is not a readable video: {detail}"),
        ));
    }
    // SAFETY: `ps` is an open input context; the wrapper now owns it.
    Ok(unsafe { format::context::Input::wrap(ps) })
}

fn select_streams(
    mut ctx: format::context::Input,
    limits: &Limits,
    oversized_mark: u64,
) -> Result<Input, TranscodeError> {
    let is_video = |stream: &format::stream::Stream| {
        stream.parameters().medium() == media::Type::Video
            // Cover art is a still picture, not the video.
            && !stream
                .disposition()
                .contains(format::stream::Disposition::ATTACHED_PIC)
    };
    let candidates: Vec<usize> = ctx
        .streams()
        .filter(|stream| is_video(stream))
        .map(|stream| stream.index())
        .collect();
    let video_index = match ctx.streams().best(media::Type::Video) {
        Some(best) if candidates.contains(&best.index()) => best.index(),
        _ => *candidates.first().ok_or_else(|| {
            TranscodeError::new(ErrorCode::NoVideoStream, "the file has no video stream")
        })?,
    };

    let video = ctx.stream(video_index).ok_or_else(|| {
        TranscodeError::new(ErrorCode::NoVideoStream, "the file has no video stream")
    })?;
    let parameters = video.parameters();
    let codec_id = parameters.id();
    // SAFETY: parameters of a stream of an open context are valid.
    let (coded_width, coded_height) = unsafe {
        let par = parameters.as_ptr();
        ((*par).width, (*par).height)
    };
    let (coded_width, coded_height) = (coded_width.max(0) as u32, coded_height.max(0) as u32);
    if coded_width == 0
        || coded_height == 0
        || coded_width > MAX_DIMENSION
        || coded_height > MAX_DIMENSION
    {
        return Err(TranscodeError::new(
            ErrorCode::UnsupportedDimensions,
            format!(
                "the video is {coded_width}x{coded_height}; width and height must be between 1 and {MAX_DIMENSION} pixels"
            ),
        ));
    }
    if ffmpeg_next::decoder::find(codec_id).is_none() {
        return Err(TranscodeError::new(
            ErrorCode::UnsupportedFormat,
            format!("the {} video codec is not supported", codec_id.name()),
        ));
    }

    let rotation = display_rotation(&video);
    let (width, height) = if rotation % 180 == 90 {
        (coded_height, coded_width)
    } else {
        (coded_width, coded_height)
    };

    let audio_index = ctx
        .streams()
        .best(media::Type::Audio)
        .filter(|stream| {
            let parameters = stream.parameters();
            // SAFETY: as above.
            let (rate, channels) = unsafe {
                let par = parameters.as_ptr();
                ((*par).sample_rate, (*par).channels)
            };
            rate > 0 && channels > 0 && ffmpeg_next::decoder::find(parameters.id()).is_some()
        })
        .map(|stream| stream.index());

    let duration_seconds = {
        let container = ctx.duration();
        if container > 0 {
            Some(container as f64 / f64::from(ffi::AV_TIME_BASE))
        } else if video.duration() > 0 {
            Some(video.duration() as f64 * f64::from(video.time_base()))
        } else {
            None
        }
    };
    let info = MediaInfo {
        duration_seconds,
        width,
        height,
        video_codec: codec_id.name().to_owned(),
        has_audio: audio_index.is_some(),
    };

    // SAFETY: reading a plain field of an open context.
    let start_time = unsafe { (*ctx.as_mut_ptr()).start_time };
    let start_time = if start_time == ffi::AV_NOPTS_VALUE {
        0
    } else {
        start_time
    };

    Ok(Input {
        ctx,
        limits: *limits,
        oversized_mark,
        video_index,
        audio_index,
        info,
        coded_size: (coded_width, coded_height),
        rotation,
        start_time,
    })
}

/// Returns the clockwise rotation (0, 90, 180, 270) a player applies to the
/// stream, from its display matrix, computed as the ffmpeg CLI does for
/// `-autorotate`.
fn display_rotation(stream: &format::stream::Stream) -> u32 {
    let Some(side_data) = stream
        .side_data()
        .find(|data| data.kind() == ffmpeg_next::packet::side_data::Type::DisplayMatrix)
    else {
        return 0;
    };
    let bytes = side_data.data();
    if bytes.len() < 9 * 4 {
        return 0;
    }
    let mut matrix = [0i32; 9];
    for (value, chunk) in matrix.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    // SAFETY: `matrix` holds the nine values the function reads.
    let counter_clockwise = unsafe { ffi::av_display_rotation_get(matrix.as_ptr()) };
    if !counter_clockwise.is_finite() {
        return 0;
    }
    let theta = -counter_clockwise.round();
    let theta = theta - 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
    [90.0, 180.0, 270.0]
        .into_iter()
        .find(|angle| (theta - angle).abs() < 1.0)
        .map_or(0, |angle| angle as u32)
}

/// Returns the libav time base used for container-level times.
pub(super) fn av_time_base() -> Rational {
    Rational::new(1, ffi::AV_TIME_BASE)
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string().to_lowercase(),
    }
}
