//! The codecs and containers a job can ask for, and which pairs exist.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

/// The video codec of the output, each with its libav encoder.
///
/// Serialized, displayed and parsed as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(IntoStaticStr, Display, EnumString)]
#[strum(
    serialize_all = "lowercase",
    parse_err_ty = UnknownName,
    parse_err_fn = UnknownName::codec
)]
pub enum Codec {
    /// H.264 with libx264, the default: plays everywhere.
    #[default]
    H264,
    /// H.265/HEVC with libx265: about a third smaller than H.264 for the
    /// same look, slower, and not played by every browser.
    H265,
    /// AV1 with libsvtav1: the smallest, slowest to encode.
    Av1,
    /// VP9 with libvpx-vp9, in WebM.
    Vp9,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Av1, Codec::Vp9];

    /// Returns the lowercase name, e.g. `"h264"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Returns the name of the libav encoder, e.g. `"libx264"`.
    pub fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => "libx264",
            Codec::H265 => "libx265",
            Codec::Av1 => "libsvtav1",
            Codec::Vp9 => "libvpx-vp9",
        }
    }

    /// Returns the name ffprobe gives the codec, e.g. `"hevc"`.
    pub fn libav_name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "hevc",
            Codec::Av1 => "av1",
            Codec::Vp9 => "vp9",
        }
    }

    /// Returns the lowest CRF the encoder takes (its best quality): 0, but
    /// 1 for SVT-AV1, which libav 5.1 hands a CRF of 0 as "none set" (the
    /// encoder's default quality instead).
    pub fn crf_min(self) -> u8 {
        match self {
            Codec::Av1 => 1,
            Codec::H264 | Codec::H265 | Codec::Vp9 => 0,
        }
    }

    /// Returns the highest CRF the encoder takes (its lowest quality):
    /// 51 for x264 and x265, 63 for SVT-AV1 and libvpx.
    pub fn crf_max(self) -> u8 {
        match self {
            Codec::H264 | Codec::H265 => 51,
            Codec::Av1 | Codec::Vp9 => 63,
        }
    }

    /// Returns the CRF used when a job names none: about the look of
    /// x264's 28 at a smaller size, for each encoder's own scale.
    pub fn default_crf(self) -> u8 {
        match self {
            Codec::H264 => 28,
            Codec::H265 => 30,
            Codec::Av1 => 40,
            Codec::Vp9 => 40,
        }
    }

    /// Returns the container used when a job names a codec but no format:
    /// MP4 where the codec goes in it, else WebM.
    pub fn default_format(self) -> Format {
        match self {
            Codec::Vp9 => Format::Webm,
            _ => Format::Mp4,
        }
    }
}

/// The container of the output, each with its audio codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(IntoStaticStr, Display, EnumString)]
#[strum(
    serialize_all = "lowercase",
    parse_err_ty = UnknownName,
    parse_err_fn = UnknownName::format
)]
pub enum Format {
    /// MP4 with AAC audio and `+faststart`, the default.
    #[default]
    Mp4,
    /// WebM with Opus audio, its cues in front.
    Webm,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 2] = [Format::Mp4, Format::Webm];

    /// Returns the lowercase name, e.g. `"mp4"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Returns the HTTP content type of a file in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Mp4 => "video/mp4",
            Format::Webm => "video/webm",
        }
    }

    /// Returns the file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    /// Returns the libav muxer's name.
    pub fn muxer(self) -> &'static str {
        self.as_str()
    }

    /// Returns the audio encoder used in this container: `aac` or `libopus`.
    pub fn audio_encoder(self) -> &'static str {
        match self {
            Format::Mp4 => "aac",
            Format::Webm => "libopus",
        }
    }

    /// Returns whether `codec` goes in this container: H.264, H.265 and
    /// AV1 in MP4; VP9 and AV1 in WebM.
    pub fn holds(self, codec: Codec) -> bool {
        match self {
            Format::Mp4 => matches!(codec, Codec::H264 | Codec::H265 | Codec::Av1),
            Format::Webm => matches!(codec, Codec::Vp9 | Codec::Av1),
        }
    }
}

/// A name that is no codec's or no container's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} must be one of {choices}, got {value:?}")]
pub struct UnknownName {
    /// The option as the HTTP API spells it: `codec` or `format`.
    pub option: &'static str,
    choices: &'static str,
    /// The rejected name.
    pub value: String,
}

impl UnknownName {
    fn codec(value: &str) -> Self {
        UnknownName {
            option: "codec",
            choices: "h264, h265, av1, vp9",
            value: value.to_owned(),
        }
    }

    fn format(value: &str) -> Self {
        UnknownName {
            option: "format",
            choices: "mp4, webm",
            value: value.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pairs_are_the_contract_s_five() {
        let pairs: Vec<(&str, &str)> = Codec::ALL
            .iter()
            .flat_map(|c| Format::ALL.iter().map(move |f| (*c, *f)))
            .filter(|(c, f)| f.holds(*c))
            .map(|(c, f)| (c.as_str(), f.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("h264", "mp4"),
                ("h265", "mp4"),
                ("av1", "mp4"),
                ("av1", "webm"),
                ("vp9", "webm")
            ]
        );
        for codec in Codec::ALL {
            assert!(codec.default_format().holds(codec), "{codec}");
            assert!((codec.crf_min()..=codec.crf_max()).contains(&codec.default_crf()));
        }
    }

    #[test]
    fn names_round_trip() {
        for codec in Codec::ALL {
            assert_eq!(codec.as_str().parse::<Codec>(), Ok(codec));
            let json = serde_json::to_string(&codec).unwrap();
            assert_eq!(json, format!("\"{codec}\""));
        }
        for format in Format::ALL {
            assert_eq!(format.as_str().parse::<Format>(), Ok(format));
        }
        let unknown = "x264".parse::<Codec>().unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "codec must be one of h264, h265, av1, vp9, got \"x264\""
        );
        assert_eq!("mkv".parse::<Format>().unwrap_err().option, "format");
    }
}
