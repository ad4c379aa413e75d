//! [`crate::protocol::Task::Audio`]: the whole input's audio, encoded once
//! for a split job by the same audio path as a single pass (the same start
//! shift, encoder and sample clock), so its timeline is the one a single
//! pass gives it, into a file labelled for the join.

use std::time::Instant;

use crate::engine::audio::AudioPipeline;
use crate::engine::demux::Packets;
use crate::engine::input::{self, av_time_base};
use crate::engine::lower;
use crate::engine::mux::Muxer;
use crate::engine::progress::Progress;
use crate::protocol::{ChildEvent, ErrorCode, Output, TranscodeError, TranscodeJob};

use ffmpeg_next::Rescale;

/// The label of the audio's file.
pub(in crate::engine) const LABEL: &str = "vidpress audio";

/// Encodes `job.input`'s audio into `job.output` by `job.options` (format
/// and audio bit rate), calling `on_event` with `probed` and `progress`.
pub(in crate::engine) fn encode(
    job: &TranscodeJob,
    on_event: &mut dyn FnMut(ChildEvent),
) -> Result<Output, TranscodeError> {
    job.options.validate().map_err(|err| {
        TranscodeError::new(
            ErrorCode::EncoderFailed,
            format!("the encode options are invalid: {err}"),
        )
    })?;
    let mut input = input::open(&job.input, &job.limits)?;
    on_event(ChildEvent::Probed(input.info.clone()));
    let index = input.audio_index.ok_or_else(|| {
        TranscodeError::new(
            ErrorCode::InvalidMedia,
            "the file has no audio stream to encode",
        )
    })?;
    let started = Instant::now();
    let input_bytes = std::fs::metadata(&job.input).map_or(0, |meta| meta.len());
    let mut progress = Progress::new(input.info.duration_seconds, input_bytes);
    let (time_base, offset) = match input.ctx.stream(index) {
        Some(stream) => (
            stream.time_base(),
            input.start_time.rescale(av_time_base(), stream.time_base()),
        ),
        None => {
            return Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                "the audio stream is missing",
            ))
        }
    };

    let mut muxer = Muxer::create_part(&job.output, job.options.format, LABEL.to_owned())?;
    let mut audio = AudioPipeline::new(&mut input, index, &mut muxer, job.options)?;
    let mut packets = Packets::default();
    let mut seconds = 0.0;
    while let Some(packet) = packets.next(&mut input.ctx) {
        if packet.stream() != index {
            continue;
        }
        audio.send_packet(&packet, &mut muxer)?;
        if let Some(pts) = packet.pts() {
            seconds = (pts - offset) as f64 * f64::from(time_base);
            progress.update(Some(seconds), 0, on_event);
        }
    }
    audio.finish(&mut muxer)?;
    muxer.finish()?;
    let bytes = std::fs::metadata(&job.output)
        .map_err(|err| {
            TranscodeError::new(
                ErrorCode::Io,
                format!(
                    "the audio file could not be read back: {}",
                    lower(&err.to_string())
                ),
            )
        })?
        .len();
    tracing::debug!(
        bytes,
        decode_errors = audio.decode_errors,
        demux_errors = packets.errors,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "audio encoded"
    );
    on_event(ChildEvent::Progress {
        fraction: 1.0,
        out_seconds: seconds,
    });
    Ok(Output {
        bytes,
        report: None,
    })
}
