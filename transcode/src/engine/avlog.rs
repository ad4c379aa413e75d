//! The libav* log callback: prints what the configured log level allows to
//! stderr, and remembers the last error-level line logged on the current
//! thread so a failure can tell the user *why* ("moov atom not found")
//! rather than only the bare error code.

use std::cell::RefCell;
use std::ffi::CStr;
use std::io::Write;
use std::sync::Once;

use ffmpeg_next::ffi;
use libc::{c_char, c_int, c_void};

thread_local! {
    /// Last error-level libav message logged on this thread. Thread-local
    /// because demuxers log on the thread that calls them, and tests run
    /// several transcodes in one process.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
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
    use super::strip_prefix;

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
