//! Fuzzing vidpress's probe path: the code that opens an untrusted upload
//! ([`vidpress_transcode::engine::probe`]) runs on mutated media, in
//! process, under libFuzzer (built by `libfuzzer-sys`, on stable Rust).
//!
//! # Layout
//!
//! - [`mutate`]: structure-aware mutations of MP4, Matroska, AVI and
//!   MPEG-TS files, also used by the malformed-media corpus test.
//! - [`probe_bytes`]: the target body: writes the input to a file, probes
//!   it, checks what a caller relies on, and reports what libav did as
//!   coverage.
//!
//! # Coverage without instrumented libav
//!
//! The decoding happens in the system's libav* libraries, which are not
//! built with coverage instrumentation; instrumenting only the Rust side
//! would give libFuzzer almost nothing to steer by. Instead every libav log
//! call (at any level, trace included) is counted by its call site — the
//! address of its format string — and the probe's outcome class is counted
//! too, in libFuzzer's "extra counters" section. An input that makes libav
//! say something new, or say it more often, is kept in the corpus.
//!
//! That callback replaces the engine's own, so a refusal here carries
//! libav's bare error string instead of its last log line, and a decoder's
//! "exceeds max pixel count" notice is not turned into `limits_exceeded`:
//! the code or wording of a refusal may differ from the service's, never
//! whether the probe crashes, hangs or accepts a video.

pub mod mutate;

use std::ffi::{c_char, c_int, c_void};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Once, OnceLock};

use ffmpeg_next::ffi;
use vidpress_transcode::{engine, ErrorCode};

/// Number of extra coverage counters: features are hashed into them.
const COUNTERS: usize = 1 << 14;

/// libFuzzer's extra counters: it finds them through the linker's
/// `__start_`/`__stop_` symbols of this section, clears them before each
/// input and reads them after.
#[repr(C, align(64))]
struct Counters([AtomicU8; COUNTERS]);

#[used]
#[link_section = "__libfuzzer_extra_counters"]
static EXTRA_COUNTERS: Counters = Counters([const { AtomicU8::new(0) }; COUNTERS]);

/// Counts one occurrence of a feature, saturating.
fn hit(feature: impl Hash) {
    let mut hasher = DefaultHasher::new();
    feature.hash(&mut hasher);
    let counter = &EXTRA_COUNTERS.0[(hasher.finish() % COUNTERS as u64) as usize];
    let value = counter.load(Ordering::Relaxed);
    counter.store(value.saturating_add(1), Ordering::Relaxed);
}

/// libav's log callback while fuzzing: counts the call site, prints nothing.
unsafe extern "C" fn on_log(
    _class: *mut c_void,
    level: c_int,
    format: *const c_char,
    _args: *mut ffi::__va_list_tag,
) {
    hit(("log", format as usize, level));
}

/// The file each input is written to: one per process.
fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("vidpress-fuzz-{}.bin", std::process::id()))
    })
}

/// Probes `data` as an uploaded file would be, and panics (a finding) when
/// the result breaks what the service relies on: a video it accepts has
/// sane dimensions, a codec name and a finite, non-negative duration; a
/// refusal has a message.
pub fn probe_bytes(data: &[u8]) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        engine::init();
        // SAFETY: a plain function pointer with libav's callback signature;
        // set before any other libav call of this process's fuzz loop.
        unsafe { ffi::av_log_set_callback(Some(on_log)) };
    });
    let path = input_path();
    if let Err(err) = std::fs::write(path, data) {
        panic!("cannot write the fuzz input to {}: {err}", path.display());
    }
    match engine::probe(path) {
        Ok(info) => {
            hit((
                "ok",
                info.video_codec.as_str(),
                info.has_audio,
                info.width.ilog2(),
                info.height.ilog2(),
                info.duration_seconds.map(|d| d.max(1.0).log2() as i32),
            ));
            assert!(
                (1..=8192).contains(&info.width) && (1..=8192).contains(&info.height),
                "probe accepted a {}x{} video",
                info.width,
                info.height
            );
            assert!(
                !info.video_codec.is_empty(),
                "probe accepted a video without a codec name"
            );
            if let Some(duration) = info.duration_seconds {
                assert!(
                    duration.is_finite() && duration >= 0.0,
                    "probe accepted a video of duration {duration}"
                );
            }
        }
        Err(err) => {
            let message = &err.message;
            // The message without its numbers: one feature per kind of refusal.
            let shape: String = message
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .take(80)
                .collect();
            hit(("error", err.code.as_str(), shape));
            assert!(
                !message.trim().is_empty(),
                "a refusal without a message: {:?}",
                err.code
            );
            assert!(
                err.code != ErrorCode::TranscoderCrashed,
                "the in-process probe cannot report a crashed child"
            );
        }
    }
}
