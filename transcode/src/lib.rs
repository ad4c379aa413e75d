//! Video transcoding for vidpress: any video libav* can read becomes an
//! H.264 + AAC MP4 with `+faststart`, encoded in a child process so that a
//! crash or hang inside libav* only takes that child down, and a cancel is
//! a SIGKILL.
//!
//! # Layout
//!
//! - [`protocol`]: the serde types both sides share: [`TranscodeJob`],
//!   [`EncodeOptions`], [`ChildEvent`], [`TranscodeError`]. No libav types.
//! - [`engine`]: the in-process transcoder on ffmpeg-next (probe, decode,
//!   filter, encode, mux). Only ever run inside the child.
//! - [`child`]: the child's `main`: runs one job through the engine and
//!   writes one JSON event per line to stdout; hosts the fault-injection
//!   hook used by tests.
//! - [`driver`]: the parent side (tokio): spawns the child, reads its
//!   events, enforces the stall timeout, kills it on cancel.
//!
//! A host binary wires the child in with an internal subcommand:
//!
//! ```no_run
//! # fn main() -> std::process::ExitCode {
//! let mut args = std::env::args().skip(1);
//! if args.next().as_deref() == Some(vidpress_transcode::child::SUBCOMMAND) {
//!     return vidpress_transcode::child::main(&args.next().unwrap_or_default());
//! }
//! # std::process::ExitCode::SUCCESS
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod child;
pub mod driver;
pub mod engine;
pub mod protocol;

pub use driver::ChildCommand;
pub use protocol::{
    ChildEvent, EncodeOptions, ErrorCode, Limits, MediaInfo, OptionsError, Preset, TranscodeError,
    TranscodeJob,
};
