//! How a transcode fails: a stable code and a sentence for the end user.

use serde::{Deserialize, Serialize};
use strum::{Display, IntoStaticStr};

/// Why a transcode failed, as a stable code and a sentence for the end user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct TranscodeError {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// A human sentence, lowercase, no trailing period.
    pub message: String,
}

impl TranscodeError {
    /// Creates an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TranscodeError {
            code,
            message: message.into(),
        }
    }
}

/// The kinds of transcode failure, serialized and displayed in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(IntoStaticStr, Display)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// The file is not a readable video: garbage, empty, truncated, or no
    /// frame could be decoded.
    InvalidMedia,
    /// The file has no video stream (e.g. audio only).
    NoVideoStream,
    /// The container format or codec is not accepted (e.g. playlists,
    /// concat scripts, image sequences).
    UnsupportedFormat,
    /// The video is wider or taller than 8192 pixels, or has no size.
    UnsupportedDimensions,
    /// The video is over a limit of the node that ran it ([`Limits`]): more
    /// pixels a frame or more seconds than allowed, or its transcode needed
    /// more memory than the child may use.
    LimitsExceeded,
    /// `target_size_bytes` leaves too little for the audio and a watchable
    /// video (the message gives the smallest size that would do).
    TargetTooSmall,
    /// The encoder, the filters or the muxer failed, or the options were
    /// rejected.
    EncoderFailed,
    /// The transcoding process died without reporting an outcome.
    TranscoderCrashed,
    /// The transcoding process reported nothing for too long and was killed.
    TranscodeStalled,
    /// A file could not be read or written, or the child could not be started.
    Io,
    /// The job's attempts kept being lost with their workers (dead nodes,
    /// failed transfers) and it was given up.
    WorkerLost,
    /// The service failed the job itself (its supervisor died), not the
    /// video: submitting it again may succeed.
    Internal,
}

impl ErrorCode {
    /// Returns the snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
