//! The thumbnail: one representative frame of the input, decoded after a
//! seek to [`timestamp`], scaled with swscale to [`size`] (at most
//! [`THUMBNAIL_MAX_WIDTH`] wide, aspect kept, even dimensions) into
//! `yuvj420p`, turned as a player shows the video (its display rotation),
//! and encoded as one JPEG by libav's `mjpeg` encoder.
//!
//! It decodes from the keyframe at or before the chosen time and keeps the
//! first picture that comes out, so it costs one group of pictures at most,
//! under the same decoder limits (`max_pixels`) as a transcode.

use std::path::Path;

use ffmpeg_next::{codec, encoder, ffi, format, frame, software::scaling, Error, Packet, Rational};

use super::input::{self, Input};
use super::{decode_error_is_fatal, encoder_error, invalid, open_decoder_with_threads};
use crate::protocol::{ErrorCode, TranscodeError, THUMBNAIL_MAX_WIDTH};

/// Packets read after a seek before giving up on getting a picture there.
const MAX_PACKETS: u32 = 5000;

/// JPEG quantiser scale (the CLI's `-q:v`: 2 is best, 31 worst).
const JPEG_QSCALE: i32 = 4;

/// Returns where the representative frame is taken, in seconds from the
/// start: 15 % into a video of 10 s or more (past intros and fades to
/// black), 1 s into a shorter one of over 2 s, else the first frame.
pub fn timestamp(duration_seconds: Option<f64>) -> f64 {
    match duration_seconds {
        Some(d) if d.is_finite() && d >= 10.0 => d * 0.15,
        Some(d) if d.is_finite() && d > 2.0 => 1.0,
        _ => 0.0,
    }
}

/// Returns the thumbnail's size for a `width`×`height` picture: at most
/// [`THUMBNAIL_MAX_WIDTH`] wide, never upscaled, the aspect kept (rounded),
/// both dimensions even and at least 2.
pub fn size(width: u32, height: u32) -> (u32, u32) {
    let width = width.max(1);
    let out_width = width.clamp(2, THUMBNAIL_MAX_WIDTH) & !1;
    let out_height =
        (u64::from(height) * u64::from(out_width) + u64::from(width) / 2) / u64::from(width);
    let out_height = u32::try_from(out_height).unwrap_or(u32::MAX).max(2) & !1;
    (out_width, out_height)
}

/// Writes the thumbnail of the open `input` to `output`; returns its size
/// in bytes.
pub(super) fn write(input: &mut Input, output: &Path) -> Result<u64, TranscodeError> {
    let picture = representative_frame(input)?;
    let jpeg = encode(&picture, input.rotation)?;
    // Written aside and renamed: a reader (the thumbnail route) sees the
    // old picture or the new one, never a part of it.
    let partial = output.with_extension("partial");
    std::fs::write(&partial, &jpeg)
        .and_then(|()| std::fs::rename(&partial, output))
        .map_err(|err| {
            let _ = std::fs::remove_file(&partial);
            TranscodeError::new(
                ErrorCode::Io,
                format!("the thumbnail could not be written: {err}"),
            )
        })?;
    Ok(jpeg.len() as u64)
}

/// Decodes the first picture at or after the keyframe before
/// [`timestamp`]; from the start again if none comes from there.
fn representative_frame(input: &mut Input) -> Result<frame::Video, TranscodeError> {
    let at = timestamp(input.info.duration_seconds);
    if at > 0.0 {
        let base = f64::from(input::av_time_base().denominator());
        let ts = input.start_time.saturating_add((at * base) as i64);
        // A failed seek leaves the demuxer at the start, which is fine.
        if input.ctx.seek(ts, ..ts).is_ok() {
            if let Some(picture) = first_frame(input)? {
                return Ok(picture);
            }
        }
        let _ = input.ctx.seek(i64::MIN, ..);
    }
    first_frame(input)?.ok_or_else(|| {
        TranscodeError::new(
            ErrorCode::InvalidMedia,
            "no picture of the video could be decoded for the thumbnail",
        )
    })
}

/// Decodes packets of the video stream until one picture comes out.
fn first_frame(input: &mut Input) -> Result<Option<frame::Video>, TranscodeError> {
    let stream = input.ctx.stream(input.video_index).ok_or_else(|| {
        TranscodeError::new(ErrorCode::NoVideoStream, "the file has no video stream")
    })?;
    // One thread: a frame-threaded decoder holds back its first picture
    // until each of its threads has a packet (cores + 1 of them), so it
    // would decode that many pictures, each thread with a copy of the
    // decoder's state, to give the one wanted here.
    let mut decoder = open_decoder_with_threads(&stream, "video", &input.limits, "1")?
        .video()
        .map_err(|err| invalid("the video decoder could not be opened", err))?;
    let mut picture = frame::Video::empty();
    for _ in 0..MAX_PACKETS {
        let mut packet = Packet::empty();
        match packet.read(&mut input.ctx) {
            Ok(()) => {}
            Err(Error::Eof) => break,
            Err(Error::InvalidData) => continue,
            Err(err) => return Err(invalid("the input could not be read", err)),
        }
        if packet.stream() != input.video_index {
            continue;
        }
        if let Err(err) = decoder.send_packet(&packet) {
            if decode_error_is_fatal(&err) {
                return Err(invalid("the video could not be decoded", err));
            }
            continue;
        }
        if decoder.receive_frame(&mut picture).is_ok() {
            return Ok(Some(picture));
        }
    }
    let _ = decoder.send_eof();
    Ok(decoder.receive_frame(&mut picture).ok().map(|()| picture))
}

/// Scales `picture` to the thumbnail's size, turns it `rotation` degrees
/// clockwise as a player shows it, and encodes it as a JPEG.
fn encode(picture: &frame::Video, rotation: u32) -> Result<Vec<u8>, TranscodeError> {
    let sideways = rotation % 180 == 90;
    let (width, height) = if sideways {
        size(picture.height(), picture.width())
    } else {
        size(picture.width(), picture.height())
    };
    // Scaled as coded, then turned: the scaler cannot turn.
    let (coded_width, coded_height) = if sideways {
        (height, width)
    } else {
        (width, height)
    };
    let mut scaler = scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        format::Pixel::YUVJ420P,
        coded_width,
        coded_height,
        scaling::Flags::BICUBIC,
    )
    .map_err(|err| encoder_error("the thumbnail could not be scaled", err))?;
    let mut scaled = frame::Video::empty();
    scaler
        .run(picture, &mut scaled)
        .map_err(|err| encoder_error("the thumbnail could not be scaled", err))?;
    let mut scaled = match rotation {
        90 | 180 | 270 => turn(&scaled, rotation, width, height),
        _ => scaled,
    };
    scaled.set_pts(Some(0));

    let codec = encoder::find(codec::Id::MJPEG).ok_or_else(|| {
        TranscodeError::new(
            ErrorCode::EncoderFailed,
            "the mjpeg encoder is not available",
        )
    })?;
    let mut context = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|err| encoder_error("the thumbnail encoder could not be created", err))?;
    context.set_width(width);
    context.set_height(height);
    context.set_format(format::Pixel::YUVJ420P);
    context.set_time_base(Rational::new(1, 25));
    // A fixed quantiser, as `-q:v` sets it: the encoder's default is a
    // bitrate, meaningless for one picture.
    context.set_flags(codec::Flags::QSCALE);
    context.set_global_quality(JPEG_QSCALE * ffi::FF_QP2LAMBDA);
    // SAFETY: plain field write on a frame this function owns.
    unsafe {
        (*scaled.as_mut_ptr()).quality = JPEG_QSCALE * ffi::FF_QP2LAMBDA;
    }
    let mut encoder = context
        .open_as(codec)
        .map_err(|err| encoder_error("the thumbnail encoder could not be opened", err))?;
    encoder
        .send_frame(&scaled)
        .map_err(|err| encoder_error("the thumbnail could not be encoded", err))?;
    let _ = encoder.send_eof();
    let mut packet = Packet::empty();
    encoder
        .receive_packet(&mut packet)
        .map_err(|err| encoder_error("the thumbnail could not be encoded", err))?;
    Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
}

/// Returns `picture` (`yuvj420p`) turned `rotation` degrees clockwise,
/// `width`×`height` once turned.
fn turn(picture: &frame::Video, rotation: u32, width: u32, height: u32) -> frame::Video {
    let mut turned = frame::Video::new(format::Pixel::YUVJ420P, width, height);
    for plane in 0..3 {
        let shift = u32::from(plane > 0);
        let (w, h) = (
            (picture.width() >> shift) as usize,
            (picture.height() >> shift) as usize,
        );
        let source = Plane {
            stride: picture.stride(plane),
            width: w,
            height: h,
        };
        let stride = turned.stride(plane);
        turn_plane(
            picture.data(plane),
            source,
            turned.data_mut(plane),
            stride,
            rotation,
        );
    }
    turned
}

/// The shape of one plane of a picture in memory.
#[derive(Clone, Copy)]
struct Plane {
    stride: usize,
    width: usize,
    height: usize,
}

/// Writes the `source` plane of `from` turned `rotation` (90, 180, 270)
/// degrees clockwise into `to`, whose rows are `to_stride` apart. Pixels
/// that fall outside either buffer are skipped, never indexed.
fn turn_plane(from: &[u8], source: Plane, to: &mut [u8], to_stride: usize, rotation: u32) {
    let Plane {
        stride,
        width,
        height,
    } = source;
    for y in 0..height {
        for x in 0..width {
            let (tx, ty) = match rotation {
                90 => (height - 1 - y, x),
                180 => (width - 1 - x, height - 1 - y),
                270 => (y, width - 1 - x),
                _ => (x, y),
            };
            if let (Some(&value), Some(slot)) =
                (from.get(y * stride + x), to.get_mut(ty * to_stride + tx))
            {
                *slot = value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_taken_past_the_start_of_longer_videos() {
        assert_eq!(timestamp(Some(40.0)), 6.0);
        assert_eq!(timestamp(Some(10.0)), 1.5);
        assert_eq!(timestamp(Some(5.0)), 1.0);
        assert_eq!(timestamp(Some(2.0)), 0.0);
        assert_eq!(timestamp(None), 0.0);
        assert_eq!(timestamp(Some(f64::NAN)), 0.0);
        assert_eq!(timestamp(Some(f64::INFINITY)), 0.0);
    }

    #[test]
    fn thumbnails_are_at_most_320_wide_with_the_aspect_kept_and_even() {
        assert_eq!(size(1280, 720), (320, 180));
        assert_eq!(size(1920, 1080), (320, 180));
        assert_eq!(size(640, 480), (320, 240));
        assert_eq!(size(320, 240), (320, 240));
        // Never upscaled, evened down.
        assert_eq!(size(161, 99), (160, 98));
        // Portrait: the width bounds it, not the height.
        assert_eq!(size(720, 1280), (320, 568));
        // Degenerate shapes still give an encodable picture.
        assert_eq!(size(8192, 2), (320, 2));
        assert_eq!(size(1, 1), (2, 2));
        assert_eq!(size(0, 0), (2, 2));
    }

    #[test]
    fn planes_turn_clockwise() {
        // 3 wide, 2 high, rows 4 bytes apart (a padded stride):
        // a b c
        // d e f
        let from = b"abc.def.";
        let source = Plane {
            stride: 4,
            width: 3,
            height: 2,
        };
        let turned = |rotation, width: usize, height: usize| {
            let mut to = vec![b'.'; width * height];
            turn_plane(from, source, &mut to, width, rotation);
            String::from_utf8(to).unwrap()
        };
        // d a / e b / f c
        assert_eq!(turned(90, 2, 3), "daebfc");
        assert_eq!(turned(180, 3, 2), "fedcba");
        // c f / b e / a d
        assert_eq!(turned(270, 2, 3), "cfbead");
    }
}
