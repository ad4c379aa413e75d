//! The child side of the process boundary: the body of the binary's internal
//! `__transcode` subcommand.
//!
//! It runs one job through [`crate::engine`] (a transcode, a probe with its
//! thumbnail, or a part of a split job, by the job's [`Task`]) and reports
//! on stdout, one JSON [`ChildEvent`] per line, flushed as written, ending
//! with `done` or `failed`. If it dies before that, the parent knows it
//! crashed.
//!
//! Given [`PROBES`] instead of a job, it serves probes ([`Task::Probe`])
//! one after another: one job a line on stdin, each answered on stdout as
//! a one-job child answers (`probed`, then `done` or `failed`), until stdin
//! closes or it has waited [`PROBES_IDLE`] for a job. Starting the binary
//! (mapping and linking the libav* libraries and the codecs they pull in)
//! costs several times what probing a small clip does, so the node's
//! prober keeps such a child rather than starting one a job
//! (`driver::probes`). Anything but a probe is refused.
//!
//! # Fault injection
//!
//! For tests of the parent side, the environment variable
//! `VIDPRESS_TRANSCODE_FAULT` makes a child misbehave right after it
//! reports `probed`:
//!
//! - `crash`: aborts (SIGABRT), as a libav crash would, in an encode or a
//!   plan (not a probe);
//! - `hang`: sleeps forever, as a stuck decoder would, in an encode or a
//!   plan;
//! - `crash-probe`, `hang-probe`: the same, in a probe only.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
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

/// The argument, in place of a job, that makes the child serve probes
/// read from stdin, one job a line.
pub const PROBES: &str = "probes";

/// How long a child serving probes waits for the next one before it
/// exits; the parent reuses a child only well within it.
pub const PROBES_IDLE: Duration = Duration::from_secs(30);

/// Longest job line a child serving probes reads; a longer one ends it.
const MAX_JOB_LINE_BYTES: u64 = 1 << 20;

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
    /// Returns the faults asked for encodes and plans, and for probes.
    fn from_env() -> (Self, Self) {
        match std::env::var(FAULT_ENV).as_deref() {
            Ok("crash") => (Fault::Crash, Fault::None),
            Ok("hang") => (Fault::Hang, Fault::None),
            Ok("crash-probe") => (Fault::None, Fault::Crash),
            Ok("hang-probe") => (Fault::None, Fault::Hang),
            Ok("") | Err(_) => (Fault::None, Fault::None),
            Ok(other) => {
                eprintln!("ignoring unknown {FAULT_ENV} value {other:?}");
                (Fault::None, Fault::None)
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
/// exit status (success only after `done`). Given [`PROBES`], serves
/// probes read from stdin instead ([`serve_probes`]).
pub fn main(job_json: &str) -> ExitCode {
    if job_json == PROBES {
        return serve_probes();
    }
    let (fault, probe_fault) = Fault::from_env();
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
            Task::Probe => probe(&job, probe_fault),
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
        Err(panicked(panic.as_ref()))
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

/// Probes `job.input` and writes its thumbnail, reporting as it goes;
/// `fault` strikes once the probe has reported `probed`.
fn probe(
    job: &TranscodeJob,
    fault: Fault,
) -> Result<(Output, Option<SegmentPlan>), TranscodeError> {
    let mut on_event = |event: ChildEvent| {
        let probed = matches!(event, ChildEvent::Probed(_));
        emit(&event);
        if probed {
            fault.trigger();
        }
    };
    engine::probe_and_thumbnail(job, &mut on_event).map(|output| (output, None))
}

/// Serves probes: reads one [`TranscodeJob`] a line from stdin and answers
/// each on stdout as [`main`] answers one, until stdin closes (success) or
/// nothing comes for [`PROBES_IDLE`]. A line that is not a probe job is
/// answered `failed` and the next one read. A panic is answered `failed`
/// and ends the child, since libav's state may be broken; so does a line
/// cut off or longer than [`MAX_JOB_LINE_BYTES`].
fn serve_probes() -> ExitCode {
    let (_, fault) = Fault::from_env();
    ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);
    // Read through a buffer of our own, not std's, so that a job already
    // read into it is seen before waiting on the pipe.
    let mut stdin = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => BufReader::new(std::fs::File::from(fd)),
        Err(err) => {
            eprintln!("stdin could not be read: {err}");
            return ExitCode::from(EXIT_BAD_JOB);
        }
    };
    loop {
        if stdin.buffer().is_empty() && !job_waiting(PROBES_IDLE) {
            return ExitCode::SUCCESS;
        }
        let mut line = Vec::new();
        match (&mut stdin)
            .take(MAX_JOB_LINE_BYTES)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) if line.last() == Some(&b'\n') => {}
            Ok(_) | Err(_) => {
                emit(&ChildEvent::Failed(TranscodeError::new(
                    ErrorCode::Internal,
                    "the probe job was cut off or too long",
                )));
                return ExitCode::from(EXIT_BAD_JOB);
            }
        }
        let job = match serde_json::from_slice::<TranscodeJob>(&line) {
            Ok(job) if job.task == Task::Probe => job,
            Ok(_) => {
                emit(&ChildEvent::Failed(TranscodeError::new(
                    ErrorCode::Internal,
                    "a child serving probes runs probes only",
                )));
                continue;
            }
            Err(err) => {
                emit(&ChildEvent::Failed(TranscodeError::new(
                    ErrorCode::Io,
                    format!("the probe job could not be read: {err}"),
                )));
                continue;
            }
        };
        match panic::catch_unwind(AssertUnwindSafe(|| probe(&job, fault))) {
            Ok(Ok((output, _))) => emit(&ChildEvent::Done {
                output_bytes: output.bytes,
                report: output.report,
                plan: None,
            }),
            Ok(Err(err)) => emit(&ChildEvent::Failed(err)),
            Err(panic) => {
                let _ = std::fs::remove_file(&job.output);
                emit(&ChildEvent::Failed(panicked(panic.as_ref())));
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
}

/// Waits up to `idle` for stdin to have something to read (a job or its
/// end); returns whether it has.
fn job_waiting(idle: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = libc::c_int::try_from(idle.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `fd` is one valid pollfd, and its count is 1.
        match unsafe { libc::poll(&mut fd, 1, timeout) } {
            0 => return false,
            n if n > 0 => return true,
            // Interrupted by a signal: wait again.
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            // poll itself failed: let the read find out.
            _ => return true,
        }
    }
}

/// The error a panic in the engine is reported as.
fn panicked(panic: &(dyn std::any::Any + Send)) -> TranscodeError {
    let reason = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_owned());
    TranscodeError::new(
        ErrorCode::TranscoderCrashed,
        format!("the transcoder failed unexpectedly: {reason}"),
    )
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
