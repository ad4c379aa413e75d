//! How each video encoder is asked for a rate and a speed: one place that
//! knows libx264's, libx265's, libsvtav1's and libvpx-vp9's option names,
//! so that the rest of the video path is the same for every codec.
//!
//! The settings are the ones the `ffmpeg` CLI is given for the same job
//! (the benchmark runs it with them), so the two encode alike:
//!
//! | codec | speed | constant quality | bit rate |
//! |-------|-------|------------------|----------|
//! | h264 (libx264) | `-preset` | `-crf` | `-b:v` |
//! | h265 (libx265) | `-preset` | `-crf` | `-b:v` |
//! | av1 (libsvtav1) | `-preset` 12 (ultrafast) to 4 (placebo) | `-crf` | `-b:v` |
//! | vp9 (libvpx-vp9) | `-cpu-used` 5 to 0, `-row-mt 1` | `-crf` with `-b:v 0` | `-b:v` |
//!
//! SVT-AV1 and libvpx key frames come every `-g` 250 pictures, as x264's
//! and x265's do by default (libavcodec's own default of 12 would cost
//! those two a third of their size).

use ffmpeg_next::Dictionary;

pub(crate) use crate::protocol::VideoRate;
use crate::protocol::{Codec, EncodeOptions};

/// Key frames at most this many pictures apart, for the encoders whose
/// libavcodec default is 12.
pub(crate) const GOP: u32 = 250;

/// What an encoder is opened with: its private options, and the bit rate
/// and key-frame interval set on its context.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EncoderSettings {
    pub options: Vec<(&'static str, String)>,
    /// Bits a second, or `None` to leave the context's default.
    pub bit_rate: Option<usize>,
    /// The largest key-frame interval, or `None` for the encoder's own.
    pub gop: Option<u32>,
}

impl EncoderSettings {
    /// Returns the private options as libav wants them.
    pub fn dictionary(&self) -> Dictionary<'static> {
        let mut dictionary = Dictionary::new();
        for (key, value) in &self.options {
            dictionary.set(key, value);
        }
        dictionary
    }
}

/// Returns the settings for `options.codec` at `options.preset` and `rate`.
pub(crate) fn settings(options: &EncodeOptions, rate: VideoRate) -> EncoderSettings {
    let mut settings = EncoderSettings {
        options: Vec::new(),
        bit_rate: None,
        gop: None,
    };
    let mut set = |key: &'static str, value: String| settings.options.push((key, value));
    match options.codec {
        Codec::H264 | Codec::H265 => {
            set("preset", options.preset.as_str().to_owned());
        }
        Codec::Av1 => {
            set("preset", options.preset.svt_av1().to_string());
        }
        Codec::Vp9 => {
            set("cpu-used", options.preset.vpx_cpu_used().to_string());
            // libvpx threads over tile rows only when asked.
            set("row-mt", "1".to_owned());
        }
    }
    // As the CLI does for every encoder (libavcodec's default is one
    // thread): each library picks its count from the cores.
    set("threads", "auto".to_owned());
    if matches!(options.codec, Codec::Av1 | Codec::Vp9) {
        settings.gop = Some(GOP);
    }
    match rate {
        VideoRate::Crf(crf) => {
            settings.options.push(("crf", crf.to_string()));
            // libvpx reads a bit rate of 0 as "quality only"; its default
            // would cap the rate instead.
            if options.codec == Codec::Vp9 {
                settings.bit_rate = Some(0);
            }
        }
        VideoRate::Bitrate { kbps } => settings.bit_rate = Some(kbps as usize * 1000),
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Preset;

    fn options(codec: Codec) -> EncodeOptions {
        EncodeOptions {
            codec,
            format: codec.default_format(),
            ..EncodeOptions::default()
        }
    }

    fn get<'a>(settings: &'a EncoderSettings, key: &str) -> Option<&'a str> {
        settings
            .options
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_encoder_gets_its_own_speed_scale() {
        let rate = VideoRate::Crf(30);
        assert_eq!(
            get(&settings(&options(Codec::H264), rate), "preset"),
            Some("veryfast")
        );
        assert_eq!(
            get(&settings(&options(Codec::H265), rate), "preset"),
            Some("veryfast")
        );
        let av1 = settings(&options(Codec::Av1), rate);
        assert_eq!(
            get(&av1, "preset"),
            Some(Preset::Veryfast.svt_av1().to_string().as_str())
        );
        assert_eq!(av1.gop, Some(GOP));
        let vp9 = settings(&options(Codec::Vp9), rate);
        assert_eq!(
            get(&vp9, "cpu-used"),
            Some(Preset::Veryfast.vpx_cpu_used().to_string().as_str())
        );
        assert_eq!(get(&vp9, "preset"), None);
    }

    #[test]
    fn crf_is_quality_only_and_a_bit_rate_replaces_it() {
        let vp9 = settings(&options(Codec::Vp9), VideoRate::Crf(40));
        assert_eq!((get(&vp9, "crf"), vp9.bit_rate), (Some("40"), Some(0)));
        let x264 = settings(&options(Codec::H264), VideoRate::Crf(23));
        assert_eq!((get(&x264, "crf"), x264.bit_rate), (Some("23"), None));
        for codec in Codec::ALL {
            let by_rate = settings(&options(codec), VideoRate::Bitrate { kbps: 500 });
            assert_eq!(get(&by_rate, "crf"), None, "{codec}");
            assert_eq!(by_rate.bit_rate, Some(500_000), "{codec}");
        }
    }
}
