//! Which containers an input may be: the demuxers allowed, a path as a
//! `file:` URL only, and the detection of an input's container before any
//! demuxer runs (see the invariants in [`super::input`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use ffmpeg_next::{ffi, Dictionary};

use super::{av_error, avlog};
use crate::protocol::{ErrorCode, TranscodeError};

/// Demuxers accepted for input: real single-file containers and elementary
/// streams. libav names some demuxers with a comma-separated list
/// (`"mov,mp4,m4a,3gp,3g2,mj2"`, `"matroska,webm"`); a demuxer is accepted
/// when any of its names is here.
///
/// Audio-only containers are accepted so that audio files are reported as
/// having no video stream rather than as an unknown format.
pub(super) const ALLOWED_DEMUXERS: &[&str] = &[
    // Video containers.
    "mov",
    "mp4",
    "matroska",
    "webm",
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "ogg",
    "asf",
    "nut",
    "mxf",
    "dv",
    "ivf",
    "yuv4mpegpipe",
    "gif",
    // Elementary video streams.
    "m4v",
    "h264",
    "hevc",
    "mpegvideo",
    "mjpeg",
    "obu",
    // Audio-only containers, so audio files get a precise error.
    "mp3",
    "aac",
    "flac",
    "wav",
];

/// libav's AVPROBE_SCORE_RETRY: below this a detection is a guess.
const PROBE_SCORE_RETRY: i32 = ffi::AVPROBE_SCORE_MAX / 4;

/// Returns the path as a `file:` URL, so that a name like `http:x.mp4` can
/// never be taken for another protocol.
pub(super) fn file_url(path: &Path) -> Result<CString, TranscodeError> {
    let mut url = b"file:".to_vec();
    url.extend_from_slice(path.as_os_str().as_bytes());
    CString::new(url)
        .map_err(|_| TranscodeError::new(ErrorCode::Io, "the file path contains a NUL byte"))
}

/// The dictionary that restricts what libav may open while reading `url`.
pub(super) fn whitelist_options() -> Dictionary<'static> {
    let mut options = Dictionary::new();
    options.set("protocol_whitelist", "file");
    options.set("format_whitelist", &ALLOWED_DEMUXERS.join(","));
    options
}

/// Returns whether a libav demuxer name (possibly a comma-separated list)
/// is on the allow list.
pub(super) fn is_allowed_demuxer(name: &str) -> bool {
    name.split(',')
        .any(|part| ALLOWED_DEMUXERS.contains(&part.trim()))
}

/// Detects the container the way `avformat_open_input` would, without
/// letting any demuxer run yet.
pub(super) fn detect_format(url: &CString) -> Result<*const ffi::AVInputFormat, TranscodeError> {
    let mut pb: *mut ffi::AVIOContext = ptr::null_mut();
    let mut options = Dictionary::new();
    options.set("protocol_whitelist", "file");
    // SAFETY: `url` is a valid C string; `options` is handed over and taken
    // back; `pb` is closed on every path below.
    let opened = unsafe {
        let mut raw = options.disown();
        let ret = ffi::avio_open2(
            &mut pb,
            url.as_ptr(),
            ffi::AVIO_FLAG_READ,
            ptr::null(),
            &mut raw,
        );
        drop(Dictionary::own(raw));
        ret
    };
    if opened < 0 {
        return Err(TranscodeError::new(
            ErrorCode::Io,
            format!("the input file could not be opened: {}", av_error(opened)),
        ));
    }

    let mut demuxer: *const ffi::AVInputFormat = ptr::null();
    avlog::clear();
    // SAFETY: `pb` is open; libav writes the detected format into `demuxer`.
    let score = unsafe {
        let score =
            ffi::av_probe_input_buffer2(pb, &mut demuxer, url.as_ptr(), ptr::null_mut(), 0, 0);
        ffi::avio_closep(&mut pb);
        score
    };
    if score < 0 || demuxer.is_null() {
        return Err(TranscodeError::new(
            ErrorCode::InvalidMedia,
            "the file is not in a recognized video format",
        ));
    }

    // SAFETY: a detected AVInputFormat is a static with a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr((*demuxer).name) }
        .to_string_lossy()
        .into_owned();
    if !is_allowed_demuxer(&name) {
        if score < PROBE_SCORE_RETRY {
            // A weak guess at a format we refuse anyway is most likely noise.
            return Err(TranscodeError::new(
                ErrorCode::InvalidMedia,
                "the file is not in a recognized video format",
            ));
        }
        let label = name.split(',').next().unwrap_or(&name).to_owned();
        return Err(TranscodeError::new(
            ErrorCode::UnsupportedFormat,
            format!("the {label} format is not supported; upload a single video file such as mp4, mov, mkv, webm or avi"),
        ));
    }
    Ok(demuxer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_separated_demuxer_names_match_any_part() {
        assert!(is_allowed_demuxer("mov,mp4,m4a,3gp,3g2,mj2"));
        assert!(is_allowed_demuxer("matroska,webm"));
        assert!(!is_allowed_demuxer("hls"));
        assert!(!is_allowed_demuxer("concat"));
        assert!(!is_allowed_demuxer("image2"));
        assert!(!is_allowed_demuxer("webm_dash_manifest"));
    }

    #[test]
    fn paths_become_file_urls() {
        let url = file_url(Path::new("http://example.com/x.mp4")).unwrap();
        assert_eq!(url.to_bytes(), b"file:http://example.com/x.mp4");
    }
}
