//! What a transcode may cost, and the sentences that name a limit passed.

use serde::{Deserialize, Serialize};

use super::{ErrorCode, TranscodeError};

/// What one transcode may cost: the node's `--max-pixels`,
/// `--max-duration-secs` and `--max-child-memory-bytes`, and a cap on the
/// child's open files.
///
/// The engine checks the pixel and duration limits when it opens the input,
/// before any frame is decoded, and again while decoding (a header can lie);
/// the driver makes the memory and file limits the child's resource limits.
/// A video over a limit fails with [`ErrorCode::LimitsExceeded`] and a
/// sentence naming the limit and its flag. Missing JSON fields take their
/// [`Default`] values, the contract's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest frame, in pixels (width × height as coded).
    pub max_pixels: u64,
    /// Longest video, in seconds, declared or decoded.
    pub max_duration_secs: u64,
    /// Address space of the transcoding child (`RLIMIT_AS`), in bytes.
    pub max_memory_bytes: u64,
    /// Open file descriptors of the transcoding child (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
}

impl Limits {
    /// Default `max_pixels`: 4096 × 2304, a little over 4K UHD (3840 × 2160).
    pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 2304;
    /// Default `max_duration_secs`: four hours.
    pub const DEFAULT_MAX_DURATION_SECS: u64 = 14_400;
    /// Default `max_memory_bytes`: 2 GiB.
    pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 2 << 30;
    /// Default `max_open_files`. A transcode holds a dozen descriptors (stdio,
    /// the input, the output, a few of libav's); 1024 is Linux's usual soft
    /// limit, so no real input comes near it, while a leak in a decoder on a
    /// hostile file stops there instead of at the node's (often much higher)
    /// hard limit.
    pub const DEFAULT_MAX_OPEN_FILES: u64 = 1024;

    /// Returns the error for a frame of `width`×`height` over `max_pixels`.
    pub fn pixels_exceeded(&self, width: u32, height: u32) -> TranscodeError {
        let pixels = u64::from(width) * u64::from(height);
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the video is {width}x{height} ({pixels} pixels), over the limit of {} pixels (--max-pixels)",
                self.max_pixels
            ),
        )
    }

    /// Returns the error for a video whose header declares `seconds`, over
    /// `max_duration_secs`.
    pub fn duration_exceeded(&self, seconds: f64) -> TranscodeError {
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the video lasts {} s, over the limit of {} s (--max-duration-secs)",
                describe_seconds(seconds),
                self.max_duration_secs
            ),
        )
    }

    /// Returns the error for a decoded timestamp of `seconds`, past
    /// `max_duration_secs` (the header declared less, or nothing).
    pub fn decoded_duration_exceeded(&self, seconds: f64) -> TranscodeError {
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the video has a frame at {} s, past the limit of {} s (--max-duration-secs)",
                describe_seconds(seconds),
                self.max_duration_secs
            ),
        )
    }

    /// Returns the error for a child that ran out of its address space.
    pub fn memory_exceeded(&self) -> TranscodeError {
        TranscodeError::new(
            ErrorCode::LimitsExceeded,
            format!(
                "the transcode needed more memory than the limit of {} (--max-child-memory-bytes)",
                describe_bytes(self.max_memory_bytes)
            ),
        )
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
            max_duration_secs: Self::DEFAULT_MAX_DURATION_SECS,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            max_open_files: Self::DEFAULT_MAX_OPEN_FILES,
        }
    }
}

/// Describes a time in seconds with up to three decimals, none when whole:
/// "20000", "1.04".
pub(super) fn describe_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Describes a byte count for people: "2 GiB", "300 MiB", or the exact count
/// with an approximation when it is no whole number of either.
pub(super) fn describe_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}
