//! What a transcode is asked to do: the encoder's options and their bounds.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

use super::codec::{Codec, Format, UnknownName};

/// An x264 speed/compression trade-off, from fastest (`ultrafast`, biggest
/// files) to slowest (`veryslow`, smallest files at the same quality).
///
/// Serialized, displayed and parsed as x264's lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(IntoStaticStr, Display, EnumString)]
#[strum(
    serialize_all = "lowercase",
    parse_err_ty = OptionsError,
    parse_err_fn = OptionsError::unknown_preset
)]
pub enum Preset {
    /// x264 `ultrafast`.
    Ultrafast,
    /// x264 `superfast`.
    Superfast,
    /// x264 `veryfast`, the default: good compression at a few times real time.
    #[default]
    Veryfast,
    /// x264 `faster`.
    Faster,
    /// x264 `fast`.
    Fast,
    /// x264 `medium`, x264's own default.
    Medium,
    /// x264 `slow`.
    Slow,
    /// x264 `slower`.
    Slower,
    /// x264 `veryslow`.
    Veryslow,
}

impl Preset {
    /// Every preset, fastest first.
    pub const ALL: [Preset; 9] = [
        Preset::Ultrafast,
        Preset::Superfast,
        Preset::Veryfast,
        Preset::Faster,
        Preset::Fast,
        Preset::Medium,
        Preset::Slow,
        Preset::Slower,
        Preset::Veryslow,
    ];

    /// Returns the x264 name of the preset, e.g. `"veryfast"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Returns where the preset falls on x264's scale, 0 (`ultrafast`) to
    /// 8 (`veryslow`).
    fn rank(self) -> u8 {
        Preset::ALL.iter().position(|p| *p == self).unwrap_or(2) as u8
    }

    /// Returns SVT-AV1's `preset` (13 fastest, 0 slowest) for this speed:
    /// `ultrafast` 12 down to `veryslow` 4, one step each.
    pub fn svt_av1(self) -> u8 {
        12 - self.rank()
    }

    /// Returns libvpx-vp9's `cpu-used` (at `deadline=good`; 5 fastest, 0
    /// slowest) for this speed: `ultrafast` and `superfast` 5, `veryfast`
    /// and `faster` 4, `fast` 3, `medium` 2, `slow` and `slower` 1,
    /// `veryslow` 0.
    pub fn vpx_cpu_used(self) -> u8 {
        const BY_RANK: [u8; 9] = [5, 5, 4, 4, 3, 2, 1, 1, 0];
        BY_RANK[usize::from(self.rank())]
    }
}

/// Whether a long video may be cut into segments encoded on many nodes at
/// once (and joined without encoding again), or must run as one pass.
///
/// Serialized, displayed and parsed as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(IntoStaticStr, Display, EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum Parallel {
    /// Split when the video is long enough (the node's `--segment-min-secs`).
    #[default]
    Auto,
    /// One pass on one worker, however long the video.
    Off,
}

impl Parallel {
    /// Both choices, the default first.
    pub const ALL: [Parallel; 2] = [Parallel::Auto, Parallel::Off];

    /// Returns the lowercase name, e.g. `"off"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How a job spends bits: exactly one of these per job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateMode {
    /// Constant quality at this CRF, on the codec's own scale.
    Crf(u8),
    /// The whole file, audio included, at this many bytes (within ±5 %).
    TargetSize(u64),
    /// The largest CRF whose SSIM against the input is at least this.
    MinSsim(f64),
}

/// How to encode the output: codec and container, the rate mode, the
/// encoder's speed, an optional downscale, and the audio bit rate.
///
/// Missing JSON fields take their [`Default`] values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncodeOptions {
    /// The video codec; default H.264.
    pub codec: Codec,
    /// The container (and so the audio codec); default MP4.
    pub format: Format,
    /// Constant rate factor on the codec's scale (0 best; 51 for x264 and
    /// x265, 63 for AV1 and VP9, worst); `None` is the codec's default
    /// ([`Codec::default_crf`]) unless another rate mode is asked for.
    pub crf: Option<u8>,
    /// Aim the whole file at this many bytes.
    pub target_size_bytes: Option<u64>,
    /// Search the largest CRF whose SSIM is at least this.
    pub min_ssim: Option<f64>,
    /// Speed preset, x264's names mapped onto each encoder; default `veryfast`.
    pub preset: Preset,
    /// Downscale so the output is at most this many pixels high, keeping the
    /// aspect ratio (dimensions are rounded to even numbers). `None` keeps the
    /// input size. Never upscales.
    pub max_height: Option<u32>,
    /// Audio bit rate in kbit/s (AAC or Opus), 8 to 512; default 96.
    pub audio_bitrate_kbps: u32,
    /// Whether a long video may be split over many workers.
    pub parallel: Parallel,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            codec: Codec::H264,
            format: Format::Mp4,
            crf: None,
            target_size_bytes: None,
            min_ssim: None,
            preset: Preset::Veryfast,
            max_height: None,
            audio_bitrate_kbps: 96,
            parallel: Parallel::Auto,
        }
    }
}

impl EncodeOptions {
    /// Lowest accepted `crf`.
    pub const CRF_MIN: u8 = 0;
    /// Highest accepted `crf` of any codec (each has its own,
    /// [`Codec::crf_max`]).
    pub const CRF_MAX: u8 = 63;
    /// Lowest accepted `max_height`.
    pub const MAX_HEIGHT_MIN: u32 = 2;
    /// Highest accepted `max_height`.
    pub const MAX_HEIGHT_MAX: u32 = 8192;
    /// Lowest accepted `audio_bitrate_kbps`.
    pub const AUDIO_BITRATE_MIN: u32 = 8;
    /// Highest accepted `audio_bitrate_kbps`.
    pub const AUDIO_BITRATE_MAX: u32 = 512;
    /// Smallest accepted `target_size_bytes` (10 kB).
    pub const TARGET_SIZE_MIN: u64 = 10_000;
    /// Largest accepted `target_size_bytes` (1 TB).
    pub const TARGET_SIZE_MAX: u64 = 1_000_000_000_000;
    /// Lowest accepted `min_ssim`.
    pub const MIN_SSIM_MIN: f64 = 0.90;
    /// Highest accepted `min_ssim`.
    pub const MIN_SSIM_MAX: f64 = 0.999;

    /// Returns the rate mode asked for; a CRF without a value is the
    /// codec's default. Call [`EncodeOptions::validate`] first: with two
    /// modes set, the size wins.
    pub fn rate(&self) -> RateMode {
        match (self.target_size_bytes, self.min_ssim) {
            (Some(bytes), _) => RateMode::TargetSize(bytes),
            (None, Some(ssim)) => RateMode::MinSsim(ssim),
            (None, None) => RateMode::Crf(self.crf.unwrap_or(self.codec.default_crf())),
        }
    }

    /// Checks every option against its documented range, the codec against
    /// the format, and that at most one rate mode is asked for.
    ///
    /// Returns the first option that is out of range.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let modes = [
            self.crf.map(|_| "crf"),
            self.target_size_bytes.map(|_| "target_size_bytes"),
            self.min_ssim.map(|_| "min_ssim"),
        ];
        let asked: Vec<&'static str> = modes.into_iter().flatten().collect();
        if let [first, second, ..] = asked[..] {
            return Err(OptionsError::TwoRateModes { first, second });
        }
        if !self.format.holds(self.codec) {
            return Err(OptionsError::Pair {
                codec: self.codec,
                format: self.format,
            });
        }
        if let Some(crf) = self.crf {
            if !(self.codec.crf_min()..=self.codec.crf_max()).contains(&crf) {
                return Err(OptionsError::Crf {
                    value: crf,
                    codec: self.codec,
                });
            }
        }
        if let Some(bytes) = self.target_size_bytes {
            if !(Self::TARGET_SIZE_MIN..=Self::TARGET_SIZE_MAX).contains(&bytes) {
                return Err(OptionsError::TargetSize { value: bytes });
            }
        }
        if let Some(ssim) = self.min_ssim {
            if !(Self::MIN_SSIM_MIN..=Self::MIN_SSIM_MAX).contains(&ssim) {
                return Err(OptionsError::MinSsim { value: ssim });
            }
        }
        if let Some(height) = self.max_height {
            if !(Self::MAX_HEIGHT_MIN..=Self::MAX_HEIGHT_MAX).contains(&height) {
                return Err(OptionsError::MaxHeight { value: height });
            }
        }
        if !(Self::AUDIO_BITRATE_MIN..=Self::AUDIO_BITRATE_MAX).contains(&self.audio_bitrate_kbps) {
            return Err(OptionsError::AudioBitrate {
                value: self.audio_bitrate_kbps,
            });
        }
        Ok(())
    }
}

/// An encode option outside its accepted range, or an unknown preset name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionsError {
    /// `crf` is outside the codec's range.
    #[error(
        "crf must be between {} and {} for {codec}, got {value}",
        codec.crf_min(),
        codec.crf_max()
    )]
    Crf {
        /// The rejected value.
        value: u8,
        /// The codec whose scale it is on.
        codec: Codec,
    },
    /// `target_size_bytes` is outside 10 kB to 1 TB.
    #[error("target_size_bytes must be between 10000 and 1000000000000, got {value}")]
    TargetSize {
        /// The rejected value.
        value: u64,
    },
    /// `min_ssim` is outside 0.90 to 0.999.
    #[error("min_ssim must be between 0.90 and 0.999, got {value}")]
    MinSsim {
        /// The rejected value.
        value: f64,
    },
    /// Two rate modes at once.
    #[error(
        "{first} and {second} are two rate modes; ask for one of crf, target_size_bytes, min_ssim"
    )]
    TwoRateModes {
        /// The first mode named.
        first: &'static str,
        /// The second mode named.
        second: &'static str,
    },
    /// The codec does not go in the container.
    #[error(
        "{codec} does not go in {format}; the pairs are h264/mp4, h265/mp4, av1/mp4, av1/webm, \
         vp9/webm"
    )]
    Pair {
        /// The codec asked for.
        codec: Codec,
        /// The container asked for.
        format: Format,
    },
    /// `codec` or `format` is not one of the names.
    #[error(transparent)]
    UnknownName(#[from] UnknownName),
    /// `max_height` is outside 2..=8192.
    #[error("max_height must be between 2 and 8192, got {value}")]
    MaxHeight {
        /// The rejected value.
        value: u32,
    },
    /// `audio_bitrate` is outside 8..=512 kbit/s.
    #[error("audio_bitrate must be between 8 and 512 kbit/s, got {value}")]
    AudioBitrate {
        /// The rejected value.
        value: u32,
    },
    /// `preset` is not one of x264's preset names.
    #[error(
        "preset must be one of ultrafast, superfast, veryfast, faster, fast, medium, slow, \
         slower, veryslow, got {value:?}"
    )]
    UnknownPreset {
        /// The rejected name.
        value: String,
    },
}

impl OptionsError {
    /// Returns the error of a name that is no preset's.
    fn unknown_preset(value: &str) -> Self {
        OptionsError::UnknownPreset {
            value: value.to_owned(),
        }
    }

    /// Returns the name of the offending option as the HTTP API spells it:
    /// e.g. `"crf"`, `"max_height"` or `"format"`.
    pub fn option(&self) -> &'static str {
        match self {
            OptionsError::Crf { .. } => "crf",
            OptionsError::TargetSize { .. } => "target_size_bytes",
            OptionsError::MinSsim { .. } => "min_ssim",
            OptionsError::TwoRateModes { second, .. } => second,
            OptionsError::Pair { .. } => "format",
            OptionsError::UnknownName(unknown) => unknown.option,
            OptionsError::MaxHeight { .. } => "max_height",
            OptionsError::AudioBitrate { .. } => "audio_bitrate",
            OptionsError::UnknownPreset { .. } => "preset",
        }
    }
}
