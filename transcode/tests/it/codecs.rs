//! Every codec and container the service offers, encoded in-process: the
//! file is what its pair says (codec, audio codec, container, index in
//! front), lasts as long as the input at the input's size, carries its
//! report, and weighs what the `ffmpeg` CLI's encode with the same settings
//! weighs.

use std::path::Path;
use std::process::Command;

use vidpress_transcode::engine;
use vidpress_transcode::{Codec, EncodeOptions, Format, Output, Preset, TranscodeJob};

use crate::fixtures::{self, duration, ffprobe, streams, top_level_boxes};

/// The five pairs of the contract.
const PAIRS: [(Codec, Format); 5] = [
    (Codec::H264, Format::Mp4),
    (Codec::H265, Format::Mp4),
    (Codec::Av1, Format::Mp4),
    (Codec::Av1, Format::Webm),
    (Codec::Vp9, Format::Webm),
];

fn encode(input: &Path, output: &Path, options: EncodeOptions) -> Output {
    let job = TranscodeJob {
        input: input.to_owned(),
        output: output.to_owned(),
        options,
        limits: Default::default(),
        task: Default::default(),
    };
    engine::transcode(&job, &mut |_| {})
        .unwrap_or_else(|err| panic!("{} {}: {err:?}", options.codec, options.format))
}

fn pair(codec: Codec, format: Format) -> EncodeOptions {
    EncodeOptions {
        codec,
        format,
        // The fastest of each scale keeps the suite quick.
        preset: Preset::Ultrafast,
        ..EncodeOptions::default()
    }
}

/// Returns where the first element with this EBML ID starts.
fn ebml_position(bytes: &[u8], id: [u8; 4]) -> Option<usize> {
    bytes.windows(4).position(|window| window == id)
}

#[test]
fn every_pair_is_its_codec_in_its_container_with_its_audio() {
    let input = fixtures::mp4_with_audio();
    let input_seconds = duration(&ffprobe(&input));
    let dir = tempfile::tempdir().unwrap();
    for (codec, format) in PAIRS {
        let output = dir.path().join(format!("{codec}.{format}"));
        let result = encode(&input, &output, pair(codec, format));
        let label = format!("{codec}/{format}");

        let probe = ffprobe(&output);
        let container = probe["format"]["format_name"].as_str().unwrap_or_default();
        assert!(
            container.contains(match format {
                Format::Mp4 => "mp4",
                Format::Webm => "webm",
            }),
            "{label}: container {container}"
        );
        let video = streams(&probe, "video");
        assert_eq!(video.len(), 1, "{label}");
        assert_eq!(video[0]["codec_name"], codec.libav_name(), "{label}");
        assert_eq!(video[0]["pix_fmt"], "yuv420p", "{label}");
        assert_eq!(
            (&video[0]["width"], &video[0]["height"]),
            (&320.into(), &240.into()),
            "{label}"
        );
        let audio = streams(&probe, "audio");
        assert_eq!(audio.len(), 1, "{label}");
        let audio_codec = match format {
            Format::Mp4 => "aac",
            Format::Webm => "opus",
        };
        assert_eq!(audio[0]["codec_name"], audio_codec, "{label}");
        let seconds = duration(&probe);
        assert!(
            (seconds - input_seconds).abs() <= 0.1,
            "{label}: {seconds} s against the input's {input_seconds} s"
        );

        let bytes = std::fs::read(&output).unwrap();
        assert_eq!(result.bytes, bytes.len() as u64, "{label}");
        match format {
            Format::Mp4 => {
                let boxes = top_level_boxes(&bytes);
                let moov = boxes.iter().position(|b| b == "moov");
                let mdat = boxes.iter().position(|b| b == "mdat");
                assert!(moov < mdat && moov.is_some(), "{label}: {boxes:?}");
                if codec == Codec::H265 {
                    assert_eq!(video[0]["codec_tag_string"], "hvc1", "{label}");
                }
            }
            Format::Webm => {
                let cues = ebml_position(&bytes, [0x1C, 0x53, 0xBB, 0x6B]);
                let cluster = ebml_position(&bytes, [0x1F, 0x43, 0xB6, 0x75]);
                assert!(
                    cues.is_some() && cues < cluster,
                    "{label}: the cues ({cues:?}) come before the first cluster ({cluster:?})"
                );
            }
        }

        let report = result.report.as_ref().expect("a report");
        assert_eq!((report.codec, report.format), (codec, format), "{label}");
        assert_eq!(report.crf, Some(codec.default_crf()), "{label}");
        assert_eq!((report.width, report.height), (320, 240), "{label}");
        assert!(
            (report.duration_seconds - input_seconds).abs() <= 0.1,
            "{label}"
        );
        let quality = report.quality.as_ref().expect("a quality figure");
        assert!(
            (0.8..=1.0).contains(&quality.ssim) && quality.psnr_db > 20.0,
            "{label}: {quality:?}"
        );
    }
}

/// Returns the `ffmpeg` arguments that encode like `options` (the table in
/// the engine's `encoders`).
fn cli_arguments(options: &EncodeOptions) -> String {
    let crf = options.codec.default_crf();
    let video = match options.codec {
        Codec::H264 => format!("-c:v libx264 -preset {} -crf {crf}", options.preset),
        Codec::H265 => format!("-c:v libx265 -preset {} -crf {crf}", options.preset),
        Codec::Av1 => format!(
            "-c:v libsvtav1 -preset {} -crf {crf} -g 250",
            options.preset.svt_av1()
        ),
        Codec::Vp9 => format!(
            "-c:v libvpx-vp9 -cpu-used {} -row-mt 1 -crf {crf} -b:v 0 -g 250",
            options.preset.vpx_cpu_used()
        ),
    };
    let audio = match options.format {
        Format::Mp4 => "-c:a aac -b:a 96k -movflags +faststart",
        Format::Webm => "-c:a libopus -b:a 96k -cues_to_front 1",
    };
    format!("{video} {audio}")
}

#[test]
fn each_codec_weighs_what_the_ffmpeg_cli_makes_with_the_same_settings() {
    // 300 frames: more than one 250-frame GOP.
    let input = fixtures::long();
    let dir = tempfile::tempdir().unwrap();
    for (codec, format) in [
        (Codec::H265, Format::Mp4),
        (Codec::Av1, Format::Mp4),
        (Codec::Vp9, Format::Webm),
    ] {
        let options = pair(codec, format);
        let theirs = dir.path().join(format!("cli-{codec}.{format}"));
        let arguments = cli_arguments(&options);
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-y", "-i"])
            .arg(&input)
            .args(arguments.split(' '))
            .arg(&theirs)
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "ffmpeg {arguments}");
        let ours = dir.path().join(format!("ours-{codec}.{format}"));
        let bytes = encode(&input, &ours, options).bytes;
        let reference = std::fs::metadata(&theirs).unwrap().len();
        let ratio = bytes as f64 / reference as f64;
        assert!(
            (0.98..=1.02).contains(&ratio),
            "{codec}: ours {bytes} bytes, ffmpeg {arguments}: {reference} bytes (ratio {ratio:.4})"
        );
    }
}
