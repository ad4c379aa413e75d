//! The transcoder itself: libav* through ffmpeg-next, in-process.
//!
//! Only ever called inside the child process (see [`crate::child`]), because
//! a malformed file can crash or hang libav*. It owns opening inputs safely
//! (`input`), the video and audio paths (`video`, `audio`, sharing
//! `graph`), the MP4 muxer (`mux`) and libav's log output (`avlog`).
//!
//! The output is meant to match `ffmpeg -i IN -c:v libx264 -preset P -crf C
//! -c:a aac -b:a Bk -movflags +faststart OUT` in size and speed, so the
//! pipeline copies the CLI's choices where they matter: automatic codec
//! threads, the CLI's frame-rate guess and constant-rate time base, and the
//! encoder opened on its first frame.

mod audio;
mod avlog;
mod demuxers;
mod graph;
mod input;
mod mux;
mod thumbnail;
mod video;
mod video_graph;

use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use ffmpeg_next::{ffi, Error, Packet};

use crate::protocol::{
    ChildEvent, ErrorCode, Limits, MediaInfo, Output, OutputReport, RateMode, Timings,
    TranscodeError, TranscodeJob,
};
use audio::AudioPipeline;
use mux::Muxer;
use video::VideoPipeline;

/// Minimum time between two progress events.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Longest silence while work continues without new frames (the final
/// encoder flush).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How many unreadable packets in a row the demuxer may skip before the rest
/// of the input is given up on.
const MAX_CONSECUTIVE_DEMUX_ERRORS: u32 = 1000;

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

/// Transcodes `job.input` into an H.264/AAC MP4 at `job.output`, within
/// `job.limits` (pixels and duration; memory and files are the driver's).
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
    let mut input = input::open(&job.input, &job.limits)?;
    on_event(ChildEvent::Probed(input.info.clone()));

    let result = run(job, &mut input, on_event);
    if result.is_err() {
        let _ = std::fs::remove_file(&job.output);
    }
    result
}

fn run(
    job: &TranscodeJob,
    input: &mut input::Input,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    let started = Instant::now();
    let mut muxer = Muxer::create(&job.output)?;
    let mut video = VideoPipeline::new(input, &mut muxer, job.options)?;
    let mut audio = match input.audio_index {
        Some(index) => Some(AudioPipeline::new(input, index, &mut muxer, job.options)?),
        None => None,
    };
    let input_bytes = std::fs::metadata(&job.input).map_or(0, |meta| meta.len());
    let mut progress = Progress::new(input.info.duration_seconds, input_bytes);

    let mut demux_errors: u64 = 0;
    let mut consecutive_errors: u32 = 0;
    loop {
        let mut packet = Packet::empty();
        match packet.read(&mut input.ctx) {
            Ok(()) => consecutive_errors = 0,
            Err(Error::Eof) => break,
            Err(Error::InvalidData) if consecutive_errors < MAX_CONSECUTIVE_DEMUX_ERRORS => {
                demux_errors += 1;
                consecutive_errors += 1;
                continue;
            }
            Err(err) => {
                // The CLI treats a read error as the end of the input.
                tracing::warn!(error = %err, "reading the input stopped early");
                demux_errors += 1;
                break;
            }
        }
        let index = packet.stream();
        if index == video.stream_index {
            video.send_packet(&packet, &mut muxer)?;
        } else if let Some(audio) = audio.as_mut().filter(|audio| audio.stream_index == index) {
            audio.send_packet(&packet, &mut muxer)?;
        } else {
            continue;
        }
        // SAFETY: reading the position of the input's own I/O context.
        let position = unsafe {
            let pb = (*input.ctx.as_mut_ptr()).pb;
            if pb.is_null() {
                0
            } else {
                // avio_tell is an inline wrapper for this.
                ffi::avio_seek(pb, 0, libc::SEEK_CUR)
            }
        };
        progress.update(video.last_seconds, position, on_event);
    }

    video.finish(&mut muxer, &mut || progress.heartbeat(on_event))?;
    if let Some(audio) = audio.as_mut() {
        audio.finish(&mut muxer)?;
    }
    if video.frames_decoded == 0 || !muxer.has_started() {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            "the file is not a readable video: no frame of the video could be decoded",
        ));
    }
    muxer.finish()?;

    let output_bytes = std::fs::metadata(&job.output)
        .map_err(|err| {
            TranscodeError::new(
                ErrorCode::Io,
                format!(
                    "the output file could not be read back: {}",
                    lower(&err.to_string())
                ),
            )
        })?
        .len();
    on_event(ChildEvent::Progress {
        fraction: 1.0,
        out_seconds: video.last_seconds.unwrap_or(0.0).max(0.0),
    });
    tracing::debug!(
        frames = video.frames_decoded,
        video_decode_errors = video.decode_errors,
        audio_decode_errors = audio.as_ref().map_or(0, |audio| audio.decode_errors),
        demux_errors,
        output_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "transcode finished"
    );
    let (width, height) = video.output_size();
    Ok(Output {
        bytes: output_bytes,
        report: Some(OutputReport {
            codec: job.options.codec,
            format: job.options.format,
            crf: match job.options.rate() {
                RateMode::Crf(crf) => Some(crf),
                _ => None,
            },
            video_bitrate_kbps: None,
            width,
            height,
            duration_seconds: video.encoded_seconds(),
            quality: None,
            timings: Timings {
                encode_seconds: started.elapsed().as_secs_f64(),
                ..Timings::default()
            },
        }),
    })
}

/// Turns "where the video is" into throttled, non-decreasing progress events.
struct Progress {
    duration: Option<f64>,
    input_bytes: u64,
    last_emit: Option<Instant>,
    fraction: f64,
    seconds: f64,
}

impl Progress {
    fn new(duration: Option<f64>, input_bytes: u64) -> Self {
        Progress {
            duration: duration.filter(|seconds| *seconds > 0.0),
            input_bytes,
            last_emit: None,
            fraction: 0.0,
            seconds: 0.0,
        }
    }

    /// Repeats the last progress if nothing was sent for a second, so the
    /// parent's stall timer sees a live child while the encoder flushes.
    fn heartbeat(&mut self, on_event: &mut dyn FnMut(ChildEvent)) {
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

    fn update(
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
        let fraction = match self.duration {
            Some(duration) => seconds / duration,
            // Without a duration, how far into the file the demuxer is.
            None if self.input_bytes > 0 => position.max(0) as f64 / self.input_bytes as f64,
            None => 0.0,
        };
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

/// Adds AV_CODEC_FLAG_GLOBAL_HEADER to an encoder's flags. ffmpeg-next's
/// `set_flags` replaces them, which would drop the codec's own defaults
/// (libx264's `+cgop`: closed GOPs, as the CLI gets).
fn add_global_header_flag(context: &mut ffmpeg_next::codec::Context) {
    // SAFETY: plain field update on a context that is not open yet.
    unsafe {
        (*context.as_mut_ptr()).flags |= ffi::AV_CODEC_FLAG_GLOBAL_HEADER as libc::c_int;
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
    options.set("threads", "auto");
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
        let fractions: Vec<f64> = events
            .iter()
            .map(|event| match event {
                ChildEvent::Progress { fraction, .. } => *fraction,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(fractions, vec![0.5, 0.5, 0.999]);
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
    fn libav_messages_start_lowercase() {
        assert_eq!(
            av_error(ffi::AVERROR_INVALIDDATA),
            "invalid data found when processing input"
        );
    }
}
