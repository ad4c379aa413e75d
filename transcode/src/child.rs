//! The child side of the process boundary: the body of the binary's internal
//! `__transcode` subcommand.
//!
//! It runs one job through [`crate::engine`] (a transcode, a probe with its
//! thumbnail, or a part of a split job, by the job's [`Task`]) and reports
//! on stdout, one JSON [`ChildEvent`] per line, flushed as written, ending
//! with `done` or `failed`. If it dies before that, the parent knows it
//! crashed.
//!
//! # Fault injection
//!
//! For tests of the parent side, the environment variable
//! `VIDPRESS_TRANSCODE_FAULT` makes a child that encodes or plans (not a
//! probe) misbehave right after it reports `probed`:
//!
//! - `crash`: aborts (SIGABRT), as a libav crash would;
//! - `hang`: sleeps forever, as a stuck decoder would.

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Duration;

use crate::engine;
use crate::protocol::{
    ChildEvent, ErrorCode, Output, SegmentPlan, Task, TranscodeError, TranscodeJob,
};

/// Name of the binary's internal subcommand that runs [`main`].
pub const SUBCOMMAND: &str = "__transcode";

/// Environment variable read by the fault-injection hook.
pub const FAULT_ENV: &str = "VIDPRESS_TRANSCODE_FAULT";

/// Exit status after a `failed` report.
const EXIT_FAILED: u8 = 1;
/// Exit status when the job argument cannot be parsed.
const EXIT_BAD_JOB: u8 = 2;
/// Exit status when stdout is gone (the parent stopped listening).
const EXIT_NO_STDOUT: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Crash,
    Hang,
}

impl Fault {
    fn from_env() -> Self {
        match std::env::var(FAULT_ENV).as_deref() {
            Ok("crash") => Fault::Crash,
            Ok("hang") => Fault::Hang,
            Ok("") | Err(_) => Fault::None,
            Ok(other) => {
                eprintln!("ignoring unknown {FAULT_ENV} value {other:?}");
                Fault::None
            }
        }
    }

    fn trigger(self) {
        match self {
            Fault::None => {}
            Fault::Crash => std::process::abort(),
            Fault::Hang => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
        }
    }
}

/// Runs the job given as JSON and reports on stdout; returns the process
/// exit status (success only after `done`).
pub fn main(job_json: &str) -> ExitCode {
    let fault = Fault::from_env();
    ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);

    let job: TranscodeJob = match serde_json::from_str(job_json) {
        Ok(job) => job,
        Err(err) => {
            emit(&ChildEvent::Failed(TranscodeError::new(
                ErrorCode::Io,
                format!("the transcode job could not be read: {err}"),
            )));
            return ExitCode::from(EXIT_BAD_JOB);
        }
    };

    let mut on_event = |event: ChildEvent| {
        let probed = matches!(event, ChildEvent::Probed(_));
        emit(&event);
        if probed {
            fault.trigger();
        }
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let made = |output: Output| (output, None);
        match &job.task {
            Task::Transcode => engine::transcode(&job, &mut on_event).map(made),
            // Faults are for encodes: a probe reports as it goes.
            Task::Probe => engine::probe_and_thumbnail(&job, &mut |event| emit(&event)).map(made),
            Task::Plan { segment_ms } => {
                engine::plan(&job, *segment_ms, &mut on_event).map(|plan| {
                    let nothing = Output {
                        bytes: 0,
                        report: None,
                    };
                    (nothing, Some(plan))
                })
            }
            Task::Segment(work) => engine::encode_segment(&job, work, &mut on_event).map(made),
            Task::Audio => engine::encode_audio(&job, &mut on_event).map(made),
            Task::Join(work) => engine::join(&job, work, &mut on_event).map(made),
        }
    }));
    let result: Result<(Output, Option<SegmentPlan>), _> = outcome.unwrap_or_else(|panic| {
        let _ = std::fs::remove_file(&job.output);
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        Err(TranscodeError::new(
            ErrorCode::TranscoderCrashed,
            format!("the transcoder failed unexpectedly: {reason}"),
        ))
    });

    match result {
        Ok((output, plan)) => {
            emit(&ChildEvent::Done {
                output_bytes: output.bytes,
                report: output.report,
                plan,
            });
            ExitCode::SUCCESS
        }
        Err(err) => {
            emit(&ChildEvent::Failed(err));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Writes one event as one line and flushes it. If stdout is gone the parent
/// is not listening any more, and there is nobody left to work for.
fn emit(event: &ChildEvent) {
    let mut line = match serde_json::to_vec(event) {
        Ok(line) => line,
        Err(err) => {
            eprintln!("could not encode an event: {err}");
            std::process::exit(EXIT_NO_STDOUT);
        }
    };
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&line)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(EXIT_NO_STDOUT);
    }
}
