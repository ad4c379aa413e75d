//! What a finished transcode says about its output: the quality report.

use serde::{Deserialize, Serialize};

use super::codec::{Codec, Format};

/// What came out of a transcode, measured on the file written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputReport {
    /// The video codec.
    pub codec: Codec,
    /// The container.
    pub format: Format,
    /// The CRF the video was encoded at, also when searched (`min_ssim`);
    /// `None` when the encoder aimed at a bit rate (`target_size_bytes`).
    pub crf: Option<u8>,
    /// The average video bit rate in kbit/s the encoder aimed at
    /// (`target_size_bytes`), `None` at a CRF.
    #[serde(default)]
    pub video_bitrate_kbps: Option<u32>,
    /// Width of the video as stored.
    pub width: u32,
    /// Height of the video as stored.
    pub height: u32,
    /// From the first frame to the end of the last.
    pub duration_seconds: f64,
    /// How the output looks against the input scaled alike; `None` when no
    /// frame could be compared.
    pub quality: Option<Quality>,
    /// Where the time went.
    pub timings: Timings,
}

/// SSIM and PSNR of the output against the input, as ffmpeg's `ssim`
/// ("All") and `psnr` ("average") filters give them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Mean SSIM over the frames compared, 0 to 1.
    pub ssim: f64,
    /// PSNR in dB of the mean squared error over the frames compared
    /// (capped at 100 for identical pictures).
    pub psnr_db: f64,
    /// Whether only evenly spaced frames were compared.
    pub sampled: bool,
    /// How many frames were compared.
    pub frames: u64,
}

/// Seconds spent in each part of a transcode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Searching the CRF (`min_ssim`) or calibrating the bit rate
    /// (`target_size_bytes`, passes that were thrown away).
    pub search_seconds: f64,
    /// The encode of the output, quality measurement included.
    pub encode_seconds: f64,
    /// The share of `encode_seconds` spent measuring quality: CPU time of
    /// the encode's thread, on which the measurement runs.
    pub quality_seconds: f64,
}

/// A finished run of the child: the file's size, and for a transcode what
/// it is and how it looks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Size of the output file in bytes.
    pub bytes: u64,
    /// The transcode's report; `None` for a thumbnail, or from a node
    /// that made none.
    #[serde(default)]
    pub report: Option<OutputReport>,
}
