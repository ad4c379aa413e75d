//! Segment-parallel encoding end to end, in-process and through the child:
//! a generated moving pattern is planned, every segment and the audio are
//! encoded, the parts are joined, and the joined file is held frame by
//! frame to a single pass of the same input with the same options: the
//! same frames at the same timestamps, decoding times that only rise,
//! audio in sync, and no seam to see at the cuts.

mod measure;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use vidpress_transcode::driver::{self, ChildCommand};
use vidpress_transcode::engine;
use vidpress_transcode::{
    Codec, EncodeOptions, ErrorCode, Format, JoinWork, OutputReport, Preset, Quality, SegmentPlan,
    SegmentWork, Task, TranscodeError, TranscodeJob, VideoRate,
};

use self::measure::{assert_index_in_front, packets, span, ssim_per_frame};
use crate::fixtures;

/// The segment length asked for: about three segments of a 6 s input.
const SEGMENT_MS: u64 = 2000;

/// 6 s of 320x240 at 30 fps (H.264 with B-frames, so decoding and display
/// orders differ) and a 440 Hz tone, keyframes every `gop` frames only.
fn moving_pattern(gop: u32) -> PathBuf {
    fixtures::ffmpeg(
        &format!("segments-gop{gop}.mp4"),
        &format!(
            "-f lavfi -i testsrc2=size=320x240:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
             -t 6 -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p -g {gop} -keyint_min {gop} \
             -sc_threshold 0 -c:a aac -b:a 128k -f mp4"
        ),
    )
}

fn job(input: &Path, output: PathBuf, options: EncodeOptions, task: Task) -> TranscodeJob {
    TranscodeJob {
        input: input.to_owned(),
        output,
        options,
        limits: Default::default(),
        task,
    }
}

fn options(codec: Codec, format: Format) -> EncodeOptions {
    EncodeOptions {
        codec,
        format,
        ..EncodeOptions::default()
    }
}

/// A video split, encoded in parts, joined; and its single pass.
struct Split {
    plan: SegmentPlan,
    segments: Vec<OutputReport>,
    joined: PathBuf,
    joined_report: OutputReport,
    single: PathBuf,
    _dir: TempDir,
}

fn plan(input: &Path, segment_ms: u64) -> SegmentPlan {
    let task = Task::Plan { segment_ms };
    let job = job(
        input,
        PathBuf::from("/nonexistent/plan"),
        EncodeOptions::default(),
        task,
    );
    engine::plan(&job, segment_ms, &mut |_| {}).expect("a plan")
}

fn split(input: &Path, options: EncodeOptions, segment_ms: u64) -> Split {
    let dir = tempfile::tempdir().unwrap();
    let ext = options.format.extension();
    let plan = plan(input, segment_ms);
    let mut files = Vec::new();
    let mut segments = Vec::new();
    for index in 0..plan.segments.len() {
        let work = plan.work(index, None).expect("a segment");
        let file = dir.path().join(format!("segment-{index}.{ext}"));
        let job = job(input, file.clone(), options, Task::Segment(work.clone()));
        let output = engine::encode_segment(&job, &work, &mut |_| {})
            .unwrap_or_else(|err| panic!("segment {index}: {err:?}"));
        segments.push(output.report.expect("a segment's report"));
        files.push(file);
    }
    let audio = dir.path().join(format!("audio.{ext}"));
    assert!(plan.has_audio);
    engine::encode_audio(
        &job(input, audio.clone(), options, Task::Audio),
        &mut |_| {},
    )
    .expect("the audio");
    let joined = dir.path().join(format!("joined.{ext}"));
    let work = JoinWork {
        segments: files,
        audio: Some(audio),
        rate: None,
    };
    let join = job(input, joined.clone(), options, Task::Join(work.clone()));
    let output = engine::join(&join, &work, &mut |_| {}).expect("the join");
    assert_eq!(output.bytes, std::fs::metadata(&joined).unwrap().len());
    let single = dir.path().join(format!("single.{ext}"));
    engine::transcode(
        &job(input, single.clone(), options, Task::Transcode),
        &mut |_| {},
    )
    .expect("the single pass");
    Split {
        plan,
        segments,
        joined,
        joined_report: output.report.expect("a join's report"),
        single,
        _dir: dir,
    }
}

/// How the input's frames are spaced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// A frame every tick.
    Constant,
    /// Gaps between frames, and a look that changes with them.
    Variable,
}

/// Checks the joined file against the single pass and the input, and logs
/// what was measured.
fn assert_like_a_single_pass(split: &Split, input: &Path, label: &str, timing: Timing) {
    let constant_rate = timing == Timing::Constant;
    let (joined, video_tb) = packets(&split.joined, "v:0");
    let (single, single_tb) = packets(&split.single, "v:0");
    assert_eq!(video_tb, single_tb, "{label}: video time bases");
    // The same frames at the same times.
    assert_eq!(joined.len(), single.len(), "{label}: frame count");
    assert_eq!(
        joined.len() as u64,
        split.plan.frames,
        "{label}: every input frame"
    );
    let mut joined_pts: Vec<i64> = joined.iter().map(|s| s.pts).collect();
    let mut single_pts: Vec<i64> = single.iter().map(|s| s.pts).collect();
    joined_pts.sort_unstable();
    single_pts.sort_unstable();
    assert_eq!(joined_pts, single_pts, "{label}: presentation times");
    let (start, end) = span(&joined, video_tb);
    let (single_start, single_end) = span(&single, video_tb);
    let frame = (end - start) / joined.len() as f64;
    assert!(
        ((end - start) - (single_end - single_start)).abs() <= frame,
        "{label}: {} s against {} s",
        end - start,
        single_end - single_start
    );
    assert!(
        (split.joined_report.duration_seconds - (end - start)).abs() <= frame,
        "{label}: the report's duration"
    );
    // Continuous: each picture follows the one before by about a frame
    // (WebM's milliseconds alternate 33 and 34 at 30 fps), and decoding
    // times only rise.
    let nominal = (end - start) / joined.len() as f64;
    for pair in joined_pts.windows(2).filter(|_| constant_rate) {
        let step = (pair[1] - pair[0]) as f64 * video_tb;
        assert!(
            (step - nominal).abs() < nominal / 2.0,
            "{label}: a gap or an overlap of {step} s at {} s",
            pair[1] as f64 * video_tb
        );
    }
    assert!(
        joined.windows(2).all(|pair| pair[0].dts < pair[1].dts),
        "{label}: decoding times rise"
    );
    let same_dts = joined
        .iter()
        .map(|s| s.dts)
        .eq(single.iter().map(|s| s.dts));

    // Audio: the single pass's, in sync within one audio frame.
    let (audio, audio_tb) = packets(&split.joined, "a:0");
    let (single_audio, _) = packets(&split.single, "a:0");
    assert_eq!(audio.len(), single_audio.len(), "{label}: audio packets");
    let audio_frame = audio.iter().map(|s| s.duration).max().unwrap_or(0) as f64 * audio_tb;
    let (audio_start, audio_end) = span(&audio, audio_tb);
    let (single_audio_start, single_audio_end) = span(&single_audio, audio_tb);
    let offset = audio_start - start;
    let single_offset = single_audio_start - single_start;
    assert!(
        (offset - single_offset).abs() <= audio_frame,
        "{label}: audio starts {offset} s after the video, {single_offset} s in a single pass"
    );
    let (length, single_length) = (
        audio_end - audio_start,
        single_audio_end - single_audio_start,
    );
    assert!(
        (length - single_length).abs() <= audio_frame,
        "{label}: audio lasts {length} s, {single_length} s in a single pass"
    );

    // No seam: the frames around each cut look like the rest, or, where
    // the frame rate changes what the rest looks like, like the single
    // pass's same frames.
    let dir = tempfile::tempdir().unwrap();
    let ssim = ssim_per_frame(&split.joined, input, dir.path());
    assert_eq!(ssim.len(), joined.len(), "{label}: frames compared");
    let mut sorted = ssim.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let single_ssim = ssim_per_frame(&split.single, input, dir.path());
    let mut boundary = 0usize;
    let mut seams = Vec::new();
    for segment in &split.plan.segments[..split.plan.segments.len() - 1] {
        boundary += segment.frames as usize;
        let around = boundary.saturating_sub(2)..(boundary + 2).min(ssim.len());
        for (at, value) in ssim.iter().enumerate().take(around.end).skip(around.start) {
            seams.push((at, *value));
            let (against, what) = match timing {
                Timing::Constant => (median, "the median"),
                Timing::Variable => (single_ssim[at], "the single pass's"),
            };
            assert!(
                (value - against).abs() <= 0.02,
                "{label}: frame {at} by the cut at frame {boundary} has SSIM {value} against \
                 {what} {against}"
            );
        }
    }
    let whole = Quality::combine(
        split
            .segments
            .iter()
            .zip(&split.plan.segments)
            .filter_map(|(report, segment)| Some((report.quality?, segment.frames))),
    );
    eprintln!(
        "{label}: {} frames in {} segments ({} exact cuts), {:.3} s (single pass {:.3} s), \
         decoding times the single pass's: {same_dts}; \
         audio starts {offset:.4} s after the video (single pass {single_offset:.4} s), lasts \
         {length:.4} s ({single_length:.4} s); SSIM median {median:.4}, by the cuts {seams:?}; \
         segments' measured quality {whole:?}; {} bytes against {} in a single pass",
        joined.len(),
        split.plan.segments.len(),
        split
            .plan
            .segments
            .iter()
            .filter(|s| s.is_exact_cut())
            .count(),
        end - start,
        single_end - single_start,
        std::fs::metadata(&split.joined).unwrap().len(),
        std::fs::metadata(&split.single).unwrap().len(),
    );
}

#[test]
fn h264_cut_exactly_between_keyframes_joins_like_a_single_pass() {
    // One keyframe in 10 s: every cut is exact.
    let input = moving_pattern(300);
    let split = split(&input, options(Codec::H264, Format::Mp4), SEGMENT_MS);
    assert_eq!(split.plan.segments.len(), 3);
    assert!(split.plan.segments[1..].iter().all(|s| s.is_exact_cut()));
    assert_like_a_single_pass(&split, &input, "h264/mp4, exact cuts", Timing::Constant);
    assert_index_in_front(&split.joined, Format::Mp4);
    assert_eq!(split.joined_report.crf, Some(28));
    assert_eq!(split.segments[1].crf, Some(28));
}

#[test]
fn h264_cut_at_keyframes_joins_like_a_single_pass() {
    // Keyframes every 0.8 s: the ideal cuts at 2 s and 4 s move to them.
    let input = moving_pattern(24);
    let split = split(&input, options(Codec::H264, Format::Mp4), SEGMENT_MS);
    assert_eq!(split.plan.segments.len(), 3);
    assert!(split.plan.segments.iter().all(|s| !s.is_exact_cut()));
    let starts: Vec<i64> = split.plan.segments.iter().map(|s| s.start_pts).collect();
    let tb = split.plan.time_base;
    let seconds: Vec<f64> = starts.iter().map(|pts| tb.seconds(*pts)).collect();
    assert!(
        (seconds[1] - 1.6).abs() < 1e-6 && (seconds[2] - 4.0).abs() < 1e-6,
        "{seconds:?}"
    );
    assert_like_a_single_pass(&split, &input, "h264/mp4, keyframe cuts", Timing::Constant);
}

#[test]
fn vp9_in_webm_joins_like_a_single_pass() {
    let input = moving_pattern(300);
    let split = split(&input, options(Codec::Vp9, Format::Webm), SEGMENT_MS);
    assert_like_a_single_pass(&split, &input, "vp9/webm", Timing::Constant);
    assert_index_in_front(&split.joined, Format::Webm);
}

#[test]
fn h265_in_mp4_joins_like_a_single_pass() {
    let input = moving_pattern(24);
    let split = split(&input, options(Codec::H265, Format::Mp4), SEGMENT_MS);
    assert_like_a_single_pass(&split, &input, "h265/mp4", Timing::Constant);
    assert_index_in_front(&split.joined, Format::Mp4);
}

#[test]
fn av1_in_mp4_and_webm_joins_like_a_single_pass() {
    let input = moving_pattern(24);
    for format in [Format::Mp4, Format::Webm] {
        let options = EncodeOptions {
            preset: Preset::Ultrafast,
            ..options(Codec::Av1, format)
        };
        let split = split(&input, options, SEGMENT_MS);
        assert_like_a_single_pass(&split, &input, &format!("av1/{format}"), Timing::Constant);
        assert_index_in_front(&split.joined, format);
    }
}

#[test]
fn an_mpeg_ts_whose_clock_starts_late_joins_like_a_single_pass() {
    // MPEG-TS starts its clock at 1.4 s and has no index to seek by.
    let input = fixtures::ffmpeg(
        "segments-gop300.ts",
        "-f lavfi -i testsrc2=size=320x240:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
         -t 6 -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p -g 300 -sc_threshold 0 \
         -c:a aac -b:a 128k -f mpegts",
    );
    let split = split(&input, options(Codec::H264, Format::Mp4), SEGMENT_MS);
    assert!(split.plan.first_pts > 0, "{:?}", split.plan);
    assert!(split.plan.segments[1..].iter().all(|s| s.is_exact_cut()));
    assert_like_a_single_pass(&split, &input, "h264/mp4 from mpeg-ts", Timing::Constant);
}

#[test]
fn a_variable_frame_rate_joins_like_a_single_pass() {
    // 30 fps for a second, then every third frame: x264 cannot know the
    // decoding times of a segment's first packets after such a gap.
    let input = fixtures::variable_frame_rate();
    let split = split(&input, options(Codec::H264, Format::Mp4), 1000);
    assert_eq!(split.plan.segments.len(), 3);
    assert_like_a_single_pass(&split, &input, "h264/mp4, variable rate", Timing::Variable);
}

#[test]
fn an_input_shorter_than_a_segment_is_one_segment() {
    let plan = plan(&moving_pattern(300), 30_000);
    assert_eq!(plan.segments.len(), 1);
    let only = plan.segments[0];
    assert_eq!((only.end_pts, only.frames), (None, 180));
    assert!((plan.duration_seconds() - 6.0).abs() < 0.05, "{plan:?}");
}

fn fails(result: Result<impl std::fmt::Debug, TranscodeError>, code: ErrorCode, says: &str) {
    let err = result.expect_err("it fails");
    assert_eq!(err.code, code, "{err:?}");
    assert!(
        err.message.contains(says),
        "{:?} says {says:?}",
        err.message
    );
}

#[test]
fn a_segment_without_frames_or_rate_fails_clearly() {
    let input = moving_pattern(300);
    let plan = plan(&input, SEGMENT_MS);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("segment.mp4");
    let mut work = plan.work(2, None).unwrap();
    // Past the end of the video: nothing to encode.
    work.segment.start_pts = plan.end_pts + 1000;
    work.segment.decode_from_pts = plan.end_pts + 1000;
    let options = EncodeOptions::default();
    let segment = |work: &SegmentWork, options| {
        let job = job(&input, output.clone(), options, Task::Segment(work.clone()));
        engine::encode_segment(&job, work, &mut |_| {})
    };
    fails(
        segment(&work, options),
        ErrorCode::InvalidMedia,
        "segment 2 holds no frame",
    );
    assert!(!output.exists(), "no file is left");
    // A size target's rate is settled on the whole video first.
    let sized = EncodeOptions {
        target_size_bytes: Some(500_000),
        ..options
    };
    let work = plan.work(1, None).unwrap();
    fails(segment(&work, sized), ErrorCode::EncoderFailed, "bit rate");
    let calibrated = plan
        .work(1, Some(VideoRate::Bitrate { kbps: 400 }))
        .unwrap();
    let report = segment(&calibrated, sized)
        .expect("a calibrated segment")
        .report
        .unwrap();
    assert_eq!((report.crf, report.video_bitrate_kbps), (None, Some(400)));
}

#[test]
fn a_join_with_a_missing_corrupt_or_stray_segment_fails_clearly() {
    let input = moving_pattern(300);
    let plan = plan(&input, SEGMENT_MS);
    let dir = tempfile::tempdir().unwrap();
    let options = EncodeOptions::default();
    let mut files = Vec::new();
    for index in 0..2 {
        let work = plan.work(index, None).unwrap();
        let file = dir.path().join(format!("segment-{index}.mp4"));
        let job = job(&input, file.clone(), options, Task::Segment(work.clone()));
        engine::encode_segment(&job, &work, &mut |_| {}).expect("a segment");
        files.push(file);
    }
    let output = dir.path().join("joined.mp4");
    let join = |segments: Vec<PathBuf>| {
        let work = JoinWork {
            segments,
            audio: None,
            rate: None,
        };
        let job = job(&input, output.clone(), options, Task::Join(work.clone()));
        engine::join(&job, &work, &mut |_| {})
    };
    let missing = dir.path().join("segment-2.mp4");
    fails(
        join(vec![files[0].clone(), files[1].clone(), missing]),
        ErrorCode::Io,
        "segment 2's file",
    );
    let corrupt = dir.path().join("corrupt.mp4");
    let mut bytes = std::fs::read(&files[1]).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, &bytes).unwrap();
    fails(
        join(vec![files[0].clone(), corrupt, files[1].clone()]),
        ErrorCode::InvalidMedia,
        "segment 1",
    );
    // Out of order, or one left out: each file says which it is.
    fails(
        join(vec![files[1].clone(), files[0].clone()]),
        ErrorCode::InvalidMedia,
        "it is vidpress segment 1 of 3, not vidpress segment 0 of 2",
    );
    fails(
        join(files.clone()),
        ErrorCode::InvalidMedia,
        "not vidpress segment 0 of 2",
    );
    assert!(!output.exists(), "no file is left");
}

#[tokio::test]
async fn the_child_plans_and_encodes_a_segment_over_its_protocol() {
    let child = ChildCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_vidpress-transcode-child")),
        args: Vec::new(),
    };
    let stall = Duration::from_secs(30);
    let input = moving_pattern(24);
    let dir = tempfile::tempdir().unwrap();
    let task = Task::Plan {
        segment_ms: SEGMENT_MS,
    };
    let plan_job = job(
        &input,
        dir.path().join("plan"),
        EncodeOptions::default(),
        task,
    );
    let mut events = 0;
    let planned = driver::plan(&child, &plan_job, stall, |_| events += 1)
        .await
        .expect("a plan over the wire");
    assert_eq!(planned, plan(&input, SEGMENT_MS));
    assert!(events >= 1, "probed, at least");
    let work = planned.work(1, Some(VideoRate::Crf(30))).unwrap();
    let output = dir.path().join("segment-1.mp4");
    let segment = job(
        &input,
        output.clone(),
        EncodeOptions::default(),
        Task::Segment(work),
    );
    let done = driver::run(&child, &segment, stall, |_| {})
        .await
        .expect("a segment over the wire");
    assert_eq!(done.bytes, std::fs::metadata(&output).unwrap().len());
    assert_eq!(done.report.and_then(|r| r.crf), Some(30));
    let transcode = job(
        &input,
        dir.path().join("x.mp4"),
        EncodeOptions::default(),
        Task::Transcode,
    );
    fails(
        driver::plan(&child, &transcode, stall, |_| {}).await,
        ErrorCode::Internal,
        "only a plan job",
    );
}
