//! The libav* log callback: prints what the configured log level allows to
//! stderr, and remembers the last error-level line logged on the current
//! thread so a failure can tell the user *why* ("moov atom not found")
//! rather than only the bare error code. It also notices, on any thread,
//! a decoder refusing a picture over its `max_pixels` option, which libav
//! reports only as EINVAL (see [`oversized_since`]).

use std::cell::RefCell;
use std::ffi::CStr;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use ffmpeg_next::ffi;
use libc::{c_char, c_int, c_void};

thread_local! {
    /// Last error-level libav message logged on this thread. Thread-local
    /// because demuxers log on the thread that calls them, and tests run
    /// several transcodes in one process.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Pictures refused for exceeding a decoder's `max_pixels`, in this process.
/// Process-wide, not per thread: frame-threaded decoders refuse on their
/// worker threads. The transcoding child runs one job, so there it counts
/// that job's refusals.
static OVERSIZED_COUNT: AtomicU64 = AtomicU64::new(0);

/// The size of the last refused picture, width in the high 32 bits.
static OVERSIZED_SIZE: AtomicU64 = AtomicU64::new(0);

/// What libav says when a picture is over `max_pixels`:
/// "Picture size 8192x8192 exceeds specified max pixel count 9437184, …".
const OVERSIZED_SIGN: &str = "exceeds specified max pixel count";

/// Returns how many pictures were refused for their size so far, a mark to
/// pass to [`oversized_since`].
pub(super) fn oversized_mark() -> u64 {
    OVERSIZED_COUNT.load(Ordering::Acquire)
}

/// Returns the size of the last picture refused for exceeding `max_pixels`
/// since `mark`, or `None` if none was.
pub(super) fn oversized_since(mark: u64) -> Option<(u32, u32)> {
    if OVERSIZED_COUNT.load(Ordering::Acquire) == mark {
        return None;
    }
    let size = OVERSIZED_SIZE.load(Ordering::Relaxed);
    Some(((size >> 32) as u32, size as u32))
}

/// Parses "Picture size WxH exceeds…" into (W, H).
fn picture_size(message: &str) -> Option<(u32, u32)> {
    let rest = &message[message.find("Picture size ")? + "Picture size ".len()..];
    let size = rest.split_whitespace().next()?;
    let (width, height) = size.split_once('x')?;
    Some((width.parse().ok()?, height.parse().ok()?))
}

/// Installs the callback once per process.
pub(super) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `callback` has the signature libav expects and never unwinds.
        unsafe { ffi::av_log_set_callback(Some(callback)) };
    });
}

/// Forgets the last captured message, before an operation whose failure we
/// want to explain.
pub(super) fn clear() {
    let _ = LAST_ERROR.try_with(|last| last.borrow_mut().take());
}

/// Takes the last error-level message logged on this thread since [`clear`].
pub(super) fn take() -> Option<String> {
    LAST_ERROR
        .try_with(|last| last.borrow_mut().take())
        .ok()
        .flatten()
}

unsafe extern "C" fn callback(
    avcl: *mut c_void,
    level: c_int,
    fmt: *const c_char,
    args: *mut ffi::__va_list_tag,
) {
    // av_vlog hands every message to a custom callback regardless of the
    // level, so filtering is ours to do. Errors are always captured.
    let print = level <= unsafe { ffi::av_log_get_level() };
    let capture = level <= ffi::AV_LOG_ERROR;
    if !print && !capture {
        return;
    }
    let mut line = [0 as c_char; 1024];
    let mut print_prefix: c_int = 1;
    // SAFETY: `line` is writable for its whole length; `args` is consumed
    // exactly once, here.
    unsafe {
        ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            args,
            line.as_mut_ptr(),
            line.len() as c_int,
            &mut print_prefix,
        );
    }
    // SAFETY: av_log_format_line2 always NUL-terminates within `line`.
    let text = unsafe { CStr::from_ptr(line.as_ptr()) }.to_string_lossy();
    if print {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    if capture && text.contains(OVERSIZED_SIGN) {
        let (width, height) = picture_size(&text).unwrap_or((0, 0));
        OVERSIZED_SIZE.store(
            (u64::from(width) << 32) | u64::from(height),
            Ordering::Relaxed,
        );
        OVERSIZED_COUNT.fetch_add(1, Ordering::Release);
    }
    if capture {
        let message = strip_prefix(text.trim());
        if !message.is_empty() {
            let message = message.to_owned();
            let _ = LAST_ERROR.try_with(|last| {
                if let Ok(mut last) = last.try_borrow_mut() {
                    *last = Some(message);
                }
            });
        }
    }
}

/// Drops the `[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c3e2a6c0] ` context prefix.
fn strip_prefix(line: &str) -> &str {
    let mut rest = line;
    while rest.starts_with('[') {
        match rest.find("] ") {
            Some(end) => rest = rest[end + 2..].trim_start(),
            None => break,
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::{picture_size, strip_prefix};

    #[test]
    fn reads_the_size_of_a_refused_picture() {
        assert_eq!(
            picture_size(
                "[h264 @ 0x1] Picture size 8192x8192 exceeds specified max pixel count 9437184, see the documentation if you wish to increase it"
            ),
            Some((8192, 8192))
        );
        assert_eq!(picture_size("Picture size is invalid"), None);
    }

    #[test]
    fn strips_context_prefixes() {
        assert_eq!(
            strip_prefix("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0] moov atom not found"),
            "moov atom not found"
        );
        assert_eq!(strip_prefix("plain message"), "plain message");
        assert_eq!(strip_prefix("[a @ 1] [b @ 2] nested"), "nested");
    }
}
