//! The parent side of the process boundary: runs one transcode in a child
//! process and turns its event lines back into a result. No libav here.
//!
//! **Invariant:** the child never outlives the transcode. Dropping the
//! future returned by [`run`] (a cancel) kills the child with SIGKILL at
//! once (`kill_on_drop`), and on Linux the child also gets SIGKILL if the
//! thread that spawned it dies (`PR_SET_PDEATHSIG`), so a crashed parent
//! does not leave an encoder running. Because that signal is tied to the
//! spawning *thread*, poll [`run`] on a runtime worker (e.g. inside
//! `tokio::spawn`), not on a short-lived blocking thread.
//!
//! **Invariant:** the child is a sandbox for the job's
//! [`Limits`](crate::protocol::Limits) (`sandbox`). On Linux,
//! before it execs, its address space is capped at `max_memory_bytes`
//! (`RLIMIT_AS`), its open files at `max_open_files` (`RLIMIT_NOFILE`), and
//! it cannot dump core (`RLIMIT_CORE` 0: a crash on a hostile file leaves
//! no copy of it on disk). A child that runs out of that memory (Rust's
//! "memory allocation of N bytes failed" abort, libav's "cannot allocate
//! memory") ends the job with [`ErrorCode::LimitsExceeded`], as soon as it
//! exits, not after the stall timeout.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

mod probes;
mod sandbox;

pub use self::probes::ProbeChildren;
use self::sandbox::sandbox;
use crate::protocol::{
    ChildEvent, ErrorCode, Limits, Output, SegmentPlan, Task, TranscodeError, TranscodeJob,
};

/// How much of the child's stderr is kept to explain a crash.
const STDERR_TAIL_BYTES: usize = 4096;

/// Longest accepted event line; anything longer is a broken child.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// glibc's malloc arenas the child may have. By default glibc gives threads
/// up to eight arenas per core, each reserving 64 MiB of address space, so
/// on a many-core machine the encoder's and decoder's threads alone would
/// reserve gigabytes of `RLIMIT_AS` they never use. Two keeps the
/// reservation small; libav and x264 allocate mostly large frame buffers
/// (served by mmap, not arenas), so contention costs little. Measured on two
/// cores (1080p, preset medium): 127 MB less peak address space (1135 →
/// 1008 MB), the same CPU time and resident memory.
const MALLOC_ARENA_MAX: &str = "2";

/// How to start the transcoding child: `program args… '<job JSON>'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCommand {
    /// The executable, normally the `vidpress` binary itself.
    pub program: PathBuf,
    /// Arguments before the job, normally `["__transcode"]`.
    pub args: Vec<OsString>,
}

impl ChildCommand {
    /// Returns the command that re-runs the current executable with the
    /// internal [`crate::child::SUBCOMMAND`].
    pub fn current_exe() -> io::Result<Self> {
        Ok(ChildCommand {
            program: std::env::current_exe()?,
            args: vec![crate::child::SUBCOMMAND.into()],
        })
    }
}

/// Runs `job` in a child process and returns the size of the output file.
///
/// `on_event` sees [`ChildEvent::Probed`] and every
/// [`ChildEvent::Progress`]; the terminal event becomes the return value.
/// If no line arrives for `stall_timeout` the child is killed and the
/// result is [`ErrorCode::TranscodeStalled`]; if the child runs out of the
/// memory `job.limits` allow it, [`ErrorCode::LimitsExceeded`]; if it dies
/// without reporting an outcome, or talks nonsense, it is
/// [`ErrorCode::TranscoderCrashed`].
///
/// Cancel by dropping the future: the child is killed immediately. Unless
/// the result is `Ok`, `job.output` is removed, so a partial file never
/// looks like a result.
pub async fn run(
    cmd: &ChildCommand,
    job: &TranscodeJob,
    stall_timeout: Duration,
    on_event: impl FnMut(ChildEvent) + Send,
) -> Result<Output, TranscodeError> {
    run_child(cmd, job, stall_timeout, on_event)
        .await
        .map(|(output, _)| output)
}

/// Runs a [`Task::Plan`] job in a child process, as [`run`] runs any, and
/// returns the plan it made.
///
/// `on_event` sees [`ChildEvent::Probed`] and every
/// [`ChildEvent::Progress`]. A job of another task, or a child that ends
/// without a plan, fails with [`ErrorCode::Internal`].
pub async fn plan(
    cmd: &ChildCommand,
    job: &TranscodeJob,
    stall_timeout: Duration,
    on_event: impl FnMut(ChildEvent) + Send,
) -> Result<SegmentPlan, TranscodeError> {
    if !matches!(job.task, Task::Plan { .. }) {
        return Err(TranscodeError::new(
            ErrorCode::Internal,
            "only a plan job makes a plan",
        ));
    }
    match run_child(cmd, job, stall_timeout, on_event).await? {
        (_, Some(plan)) => Ok(plan),
        (_, None) => Err(TranscodeError::new(
            ErrorCode::Internal,
            "the transcoder finished without a plan",
        )),
    }
}

/// Runs `job` in a child process: [`run`], and a plan if the child made
/// one.
async fn run_child(
    cmd: &ChildCommand,
    job: &TranscodeJob,
    stall_timeout: Duration,
    mut on_event: impl FnMut(ChildEvent) + Send,
) -> Result<(Output, Option<SegmentPlan>), TranscodeError> {
    let job_json = serde_json::to_string(job).map_err(|err| {
        TranscodeError::new(
            ErrorCode::Io,
            format!("the transcode job could not be encoded: {err}"),
        )
    })?;
    // Declared before the child so that, on drop, the child is killed first
    // and its file removed after.
    let mut output_guard = RemoveOnDrop(Some(job.output.clone()));
    let mut command = child_command(cmd, &job_json, &job.limits);
    command.stdin(Stdio::null());
    let mut child = command.spawn().map_err(not_started)?;
    let pid = child.id();
    tracing::debug!(pid, input = %job.input.display(), "transcoder started");

    let stderr_tail = child.stderr.take().map(|stderr| tokio::spawn(tail(stderr)));
    let Some(stdout) = child.stdout.take() else {
        return Err(unreadable());
    };
    let mut stdout = BufReader::new(stdout);
    let (ending, _) = read_events(&mut stdout, stall_timeout, &mut on_event).await;

    let status = match ending {
        Ending::Done(..) | Ending::Failed(_) | Ending::Vanished => {
            // It is about to exit on its own; give it a moment, no more.
            wait_or_kill(&mut child, stall_timeout.min(Duration::from_secs(5))).await
        }
        Ending::Stalled | Ending::Malformed => wait_or_kill(&mut child, Duration::ZERO).await,
    };
    let stderr = match stderr_tail {
        Some(task) => tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => String::new(),
    };

    if matches!(ending, Ending::Done(..)) {
        output_guard.0 = None;
        if !status.as_ref().is_some_and(ExitStatus::success) {
            tracing::warn!(
                pid,
                ?status,
                "transcoder reported done but exited uncleanly"
            );
        }
    }
    conclude(ending, pid, status, &stderr, &job.limits, stall_timeout)
}

/// Returns the command that starts a child of `cmd` with `last` as its
/// last argument, in its sandbox under `limits`: stdout and stderr piped,
/// killed when dropped. Its stdin is the caller's to set.
fn child_command(cmd: &ChildCommand, last: &str, limits: &Limits) -> Command {
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .arg(last)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // An operator's own setting wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        command.env("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX);
    }
    // SVT-AV1 prints a banner of a dozen lines to stderr at its default
    // level; errors only, so the stderr tail kept for a failure is libav's.
    if std::env::var_os("SVT_LOG").is_none() {
        command.env("SVT_LOG", "1");
    }
    sandbox(&mut command, limits);
    command
}

fn not_started(err: io::Error) -> TranscodeError {
    TranscodeError::new(
        ErrorCode::Io,
        format!(
            "the transcoder could not be started: {}",
            err.to_string().to_lowercase()
        ),
    )
}

fn unreadable() -> TranscodeError {
    TranscodeError::new(ErrorCode::Io, "the transcoder's output could not be read")
}

/// Reads event lines from a child's `stdout`, giving `on_event` the ones
/// before the outcome, until the outcome, the end of the stream, a line
/// that is not an event, or no line for `stall_timeout`. Returns how it
/// ended and whether any line came.
async fn read_events(
    stdout: &mut (impl AsyncBufReadExt + Unpin),
    stall_timeout: Duration,
    on_event: &mut (impl FnMut(ChildEvent) + Send),
) -> (Ending, bool) {
    let mut answered = false;
    let ending = loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            stall_timeout,
            (&mut *stdout)
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Err(_elapsed) => break Ending::Stalled,
            Ok(Err(_)) | Ok(Ok(0)) => break Ending::Vanished,
            Ok(Ok(_)) => answered = true,
        }
        if line.last() != Some(&b'\n') {
            if line.len() as u64 >= MAX_LINE_BYTES {
                break Ending::Malformed;
            }
            // Cut off at end of stream: the child died mid-line.
            break Ending::Vanished;
        }
        match serde_json::from_slice::<ChildEvent>(&line) {
            Ok(ChildEvent::Done {
                output_bytes,
                report,
                plan,
            }) => {
                let output = Output {
                    bytes: output_bytes,
                    report,
                };
                break Ending::Done(output, plan);
            }
            Ok(ChildEvent::Failed(err)) => break Ending::Failed(err),
            Ok(event) => on_event(event),
            Err(_) => break Ending::Malformed,
        }
    };
    (ending, answered)
}

/// Turns how a child's events ended, with its exit `status` (if it
/// exited) and the tail of its `stderr`, into the job's outcome.
fn conclude(
    ending: Ending,
    pid: Option<u32>,
    status: Option<ExitStatus>,
    stderr: &str,
    limits: &Limits,
    stall_timeout: Duration,
) -> Result<(Output, Option<SegmentPlan>), TranscodeError> {
    match ending {
        Ending::Done(output, plan) => Ok((output, plan)),
        Ending::Failed(err)
            if err.code != ErrorCode::LimitsExceeded
                && (out_of_memory(&err.message) || out_of_memory(stderr)) =>
        {
            tracing::warn!(pid, error = %err, "transcoder ran out of memory");
            Err(limits.memory_exceeded())
        }
        Ending::Failed(err) => Err(err),
        Ending::Vanished if out_of_memory(stderr) => {
            tracing::warn!(pid, ?status, stderr = %stderr, "transcoder ran out of memory");
            Err(limits.memory_exceeded())
        }
        Ending::Stalled => {
            tracing::warn!(pid, stderr = %stderr, "transcoder stalled and was killed");
            Err(TranscodeError::new(
                ErrorCode::TranscodeStalled,
                format!(
                    "the transcoder made no progress for {} and was stopped",
                    describe_duration(stall_timeout)
                ),
            ))
        }
        Ending::Vanished | Ending::Malformed => {
            tracing::warn!(pid, ?status, stderr = %stderr, "transcoder crashed");
            let mut message = match ending {
                Ending::Malformed => "the transcoder sent a malformed message".to_owned(),
                _ => describe_exit(status),
            };
            if let Some(last) = stderr
                .lines()
                .rev()
                .map(str::trim)
                .find(|line| !line.is_empty())
            {
                message.push_str(": ");
                message.push_str(last);
            }
            Err(TranscodeError::new(ErrorCode::TranscoderCrashed, message))
        }
    }
}

/// Returns whether the child's message or stderr says it ran out of memory:
/// Rust's allocation-failure abort, libav's ENOMEM and its log lines,
/// x264's failed malloc.
fn out_of_memory(text: &str) -> bool {
    const SIGNS: [&str; 5] = [
        "memory allocation of",
        "cannot allocate memory",
        "could not allocate memory",
        "malloc of size",
        "out of memory",
    ];
    let text = text.to_ascii_lowercase();
    SIGNS.iter().any(|sign| text.contains(sign))
}

/// Removes a file when dropped, unless disarmed by taking the path.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How the event stream ended.
enum Ending {
    Done(Output, Option<SegmentPlan>),
    Failed(TranscodeError),
    /// No line for the stall timeout.
    Stalled,
    /// stdout closed without an outcome.
    Vanished,
    /// A line that is not an event.
    Malformed,
}

/// Waits up to `grace` for the child to exit, then kills it and reaps it.
/// Returns `None` if its status could not be obtained.
async fn wait_or_kill(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if !grace.is_zero() {
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return status.ok();
        }
    }
    let _ = child.start_kill();
    child.wait().await.ok()
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => match (status.signal(), status.code()) {
            (Some(signal), _) => format!("the transcoder crashed (signal {signal})"),
            (None, Some(code)) => {
                format!("the transcoder exited unexpectedly (exit code {code})")
            }
            (None, None) => "the transcoder exited unexpectedly".to_owned(),
        },
        None => "the transcoder stopped unexpectedly".to_owned(),
    }
}

fn describe_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// Reads a pipe to its end, keeping only the last [`STDERR_TAIL_BYTES`].
async fn tail(pipe: impl AsyncRead + Unpin) -> String {
    let kept = Arc::new(Mutex::new(Vec::new()));
    keep_tail(pipe, kept.clone()).await;
    let kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&kept).into_owned()
}

/// Reads a pipe to its end, keeping its last [`STDERR_TAIL_BYTES`] in
/// `kept` as they come (a kept probe child's is read between probes).
async fn keep_tail(mut pipe: impl AsyncRead + Unpin, kept: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > STDERR_TAIL_BYTES {
                    let excess = kept.len() - STDERR_TAIL_BYTES;
                    kept.drain(..excess);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_future_can_be_spawned() {
        fn assert_send<T: Send>(_: T) {}
        let cmd = ChildCommand {
            program: PathBuf::from("/bin/true"),
            args: Vec::new(),
        };
        let job = TranscodeJob {
            input: PathBuf::from("in.mp4"),
            output: PathBuf::from("out.mp4"),
            options: Default::default(),
            limits: Default::default(),
            task: Default::default(),
        };
        assert_send(run(&cmd, &job, Duration::from_secs(1), |_| {}));
    }

    #[tokio::test]
    async fn tail_keeps_the_end() {
        let data: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let kept = tail(&data[..]).await;
        assert_eq!(kept.len(), STDERR_TAIL_BYTES);
        assert_eq!(kept.as_bytes(), &data[data.len() - STDERR_TAIL_BYTES..]);
    }

    #[test]
    fn memory_failures_are_recognised() {
        assert!(out_of_memory(
            "memory allocation of 33554432 bytes failed\n"
        ));
        assert!(out_of_memory(
            "the video could not be decoded: cannot allocate memory"
        ));
        assert!(out_of_memory("[h264 @ 0x55] Could not allocate memory"));
        assert!(out_of_memory("x264 [error]: malloc of size 2097152 failed"));
        assert!(!out_of_memory(
            "the file is not a readable video: moov atom not found"
        ));
        assert!(!out_of_memory(""));
    }

    #[test]
    fn exits_are_described_for_people() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(Some(ExitStatus::from_raw(6))),
            "the transcoder crashed (signal 6)"
        );
        assert_eq!(
            describe_exit(Some(ExitStatus::from_raw(101 << 8))),
            "the transcoder exited unexpectedly (exit code 101)"
        );
        assert_eq!(describe_duration(Duration::from_secs(30)), "30 s");
        assert_eq!(describe_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1.5 s");
    }
}
