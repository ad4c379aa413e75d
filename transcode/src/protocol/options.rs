//! What a transcode is asked to do: the encoder's options and their bounds.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

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
}

/// How to encode the output: x264 quality and speed, an optional downscale,
/// and the AAC bit rate.
///
/// Missing JSON fields take their [`Default`] values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncodeOptions {
    /// x264 constant rate factor, 0 (lossless) to 51 (worst); default 28.
    pub crf: u8,
    /// x264 preset; default `veryfast`.
    pub preset: Preset,
    /// Downscale so the output is at most this many pixels high, keeping the
    /// aspect ratio (dimensions are rounded to even numbers). `None` keeps the
    /// input size. Never upscales.
    pub max_height: Option<u32>,
    /// AAC bit rate in kbit/s, 8 to 512; default 96.
    pub audio_bitrate_kbps: u32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            crf: 28,
            preset: Preset::Veryfast,
            max_height: None,
            audio_bitrate_kbps: 96,
        }
    }
}

impl EncodeOptions {
    /// Lowest accepted `crf`.
    pub const CRF_MIN: u8 = 0;
    /// Highest accepted `crf`.
    pub const CRF_MAX: u8 = 51;
    /// Lowest accepted `max_height`.
    pub const MAX_HEIGHT_MIN: u32 = 2;
    /// Highest accepted `max_height`.
    pub const MAX_HEIGHT_MAX: u32 = 8192;
    /// Lowest accepted `audio_bitrate_kbps`.
    pub const AUDIO_BITRATE_MIN: u32 = 8;
    /// Highest accepted `audio_bitrate_kbps`.
    pub const AUDIO_BITRATE_MAX: u32 = 512;

    /// Checks every option against its documented range.
    ///
    /// Returns the first option that is out of range.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(Self::CRF_MIN..=Self::CRF_MAX).contains(&self.crf) {
            return Err(OptionsError::Crf { value: self.crf });
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `crf` is above 51.
    #[error("crf must be between 0 and 51, got {value}")]
    Crf {
        /// The rejected value.
        value: u8,
    },
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
    /// `"crf"`, `"max_height"`, `"audio_bitrate"` or `"preset"`.
    pub fn option(&self) -> &'static str {
        match self {
            OptionsError::Crf { .. } => "crf",
            OptionsError::MaxHeight { .. } => "max_height",
            OptionsError::AudioBitrate { .. } => "audio_bitrate",
            OptionsError::UnknownPreset { .. } => "preset",
        }
    }
}
