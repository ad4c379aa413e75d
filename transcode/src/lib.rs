//! Video transcoding for vidpress: any video libav* can read becomes an
//! H.264 + AAC MP4 with `+faststart` (or another of the codec/format
//! pairs), encoded in a child process so that a crash or hang inside libav*
//! only takes that child down, and a cancel is a SIGKILL. A long video can
//! also be encoded in segments on many nodes and joined
//! ([`Task::Plan`], [`Task::Segment`], [`Task::Audio`], [`Task::Join`]).
//!
//! # Layout
//!
//! - [`protocol`]: the serde types both sides share: [`TranscodeJob`],
//!   [`EncodeOptions`], [`Limits`], [`ChildEvent`], [`TranscodeError`]. No
//!   libav types.
//! - [`engine`]: the in-process transcoder on ffmpeg-next (probe, decode,
//!   filter, encode, mux). Only ever run inside the child.
//! - [`child`]: the child's `main`: runs one job through the engine and
//!   writes one JSON event per line to stdout; hosts the fault-injection
//!   hook used by tests.
//! - [`driver`]: the parent side (tokio): spawns the child in its sandbox,
//!   reads its events, enforces the stall timeout, kills it on cancel.
//!
//! # Limits
//!
//! Every job carries the [`Limits`] of the node that runs it, and a video
//! over one fails with [`ErrorCode::LimitsExceeded`] and a sentence naming
//! the limit, its `vidpress serve` flag and the value seen, at no more cost
//! than the limit:
//!
//! - `max_pixels` and `max_duration_secs` are checked by the engine on the
//!   container's header, before libav decodes anything to probe the
//!   streams, and again on what probing found; libav's decoders get
//!   `max_pixels` too, and decoding stops at a picture over it or a
//!   timestamp past `max_duration_secs`, so a lying header gains nothing.
//! - `max_memory_bytes` and `max_open_files` are the child's `RLIMIT_AS`
//!   and `RLIMIT_NOFILE`, set by the driver before exec, with `RLIMIT_CORE`
//!   0. A child that runs out of memory fails the job as soon as it exits.
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
    ChildEvent, Codec, EncodeOptions, ErrorCode, Format, JoinWork, Limits, MediaInfo, OptionsError,
    Output, OutputReport, Parallel, Preset, Quality, RateMode, Segment, SegmentPlan, SegmentWork,
    Task, TimeBase, Timings, TranscodeError, TranscodeJob, VideoRate, THUMBNAIL_MAX_WIDTH,
};
