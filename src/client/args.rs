//! The client commands' flags: where the server is and how to be let in
//! ([`ServerArg`]), `vidpress submit`'s options ([`SubmitArgs`]) and a
//! command on one job ([`JobArgs`]), with the parsers of `--target-size`
//! and `--min-ssim`.

use std::path::PathBuf;

use vidpress_transcode::{Codec, EncodeOptions, Format, Parallel, Preset};

/// Where the server is, and how to be let in.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArg {
    /// Base URL of any vidpress node.
    #[arg(long, env = "VIDPRESS_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token, sent as `Authorization: Bearer <token>` (needed when the
    /// server has --api-keys).
    #[arg(long, env = "VIDPRESS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA to trust for an https:// server, instead of the
    /// system's CAs (for a private CA).
    #[arg(long, env = "VIDPRESS_CA")]
    pub ca: Option<PathBuf>,
}

/// `vidpress submit`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The video to compress.
    pub file: PathBuf,
    /// Video codec: h264 (default), h265, av1 or vp9.
    #[arg(long)]
    pub codec: Option<Codec>,
    /// Container: mp4 (AAC audio) or webm (Opus audio) [default: webm for
    /// vp9, else mp4].
    #[arg(long)]
    pub format: Option<Format>,
    /// Constant rate factor, 0 (best; 1 for av1) to 51 (smallest) for h264
    /// and h265, 63 for av1 and vp9.
    #[arg(long, conflicts_with_all = ["target_size", "min_ssim"])]
    pub crf: Option<u8>,
    /// Aim at this size for the whole file, audio included: bytes, or with
    /// a unit, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (of 1024), e.g.
    /// `25MB`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "min_ssim")]
    pub target_size: Option<u64>,
    /// Pick the smallest file whose SSIM against the input is at least
    /// this, from 0.90 to 0.999 (e.g. 0.97).
    #[arg(long, value_name = "SSIM", value_parser = parse_min_ssim)]
    pub min_ssim: Option<f64>,
    /// Speed preset, x264's names, mapped onto each encoder's own scale.
    #[arg(long)]
    pub preset: Option<Preset>,
    /// Downscale to at most this height, keeping the aspect ratio.
    #[arg(long)]
    pub max_height: Option<u32>,
    /// AAC bitrate in kbit/s.
    #[arg(long)]
    pub audio_bitrate: Option<u32>,
    /// `off`: encode in one pass on one worker, however long the video
    /// (`auto`, the default, splits a long one over the cluster's workers).
    #[arg(long, value_name = "auto|off")]
    pub parallel: Option<Parallel>,
    /// Follow the job to its end, then download the result.
    #[arg(long)]
    pub wait: bool,
    /// Where to write the result with --wait [default:
    /// <file>.compressed.mp4, or .webm].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A command on one job.
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The job ID.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArg,
}

/// Parses a size for `--target-size`: a number of bytes, or a number
/// (decimals allowed) with a unit: `KB`, `MB`, `GB` count in powers of
/// 1000, `KiB`, `MiB`, `GiB` in powers of 1024; units ignore case and may
/// follow a space. Returns the size rounded to a byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: give e.g. 25MB, 1.5GiB or 200000"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit {:?} in {text:?}: give bytes, or a number with \
                 KB, MB, GB (powers of 1000) or KiB, MiB, GiB (of 1024), e.g. 25MB",
                unit.trim()
            ))
        }
    };
    let bytes = (value * multiplier as f64).round();
    if bytes < 1.0 {
        return Err(format!("{text:?} is not a size above zero"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Parses `--min-ssim`: a number within the bounds the server takes.
fn parse_min_ssim(text: &str) -> Result<f64, String> {
    let (min, max) = (EncodeOptions::MIN_SSIM_MIN, EncodeOptions::MIN_SSIM_MAX);
    match text.trim().parse::<f64>() {
        Ok(ssim) if (min..=max).contains(&ssim) => Ok(ssim),
        _ => Err(format!("the SSIM must be a number from {min:.2} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_decimal_or_binary_units() {
        let cases = [
            ("200000", 200_000),
            ("200000B", 200_000),
            ("25MB", 25_000_000),
            ("25mb", 25_000_000),
            ("25 MB", 25_000_000),
            ("0.2MB", 200_000),
            ("1.5GB", 1_500_000_000),
            ("640KB", 640_000),
            ("1KiB", 1024),
            ("25MiB", 25 * 1024 * 1024),
            ("2GiB", 2 * 1024 * 1024 * 1024),
            ("0.5kib", 512),
            (" 7MB ", 7_000_000),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "not a size"),
            ("MB", "not a size"),
            ("25XB", "unknown unit"),
            ("25 M", "unknown unit"),
            ("-5MB", "not a size"),
            ("1.2.3MB", "not a size"),
            ("1e6", "unknown unit"),
            ("0", "above zero"),
            ("0.0001KB", "above zero"),
            ("99999999999999GiB", "too large"),
        ] {
            let error = parse_size(text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn min_ssim_is_taken_within_the_server_bounds() {
        assert_eq!(parse_min_ssim("0.97"), Ok(0.97));
        assert_eq!(parse_min_ssim("0.999"), Ok(0.999));
        for text in ["0.89", "1", "high", ""] {
            let error = parse_min_ssim(text).expect_err(text);
            assert!(error.contains("0.90 to 0.999"), "{text}: {error}");
        }
    }
}
