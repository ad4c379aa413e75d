//! Probes run by children that serve many ([`crate::child::PROBES`]), so
//! that a burst of uploads does not pay a child's start-up (exec, linking
//! the libav* libraries and every codec library they pull in) for each
//! one. Measured on the two-core machine the benchmarks run on, on a
//! 227 KB 320x240 clip: 60 ms of CPU for a probe in a child of its own,
//! 49 ms of it the start-up; 3 ms for each probe of a kept child (2 ms
//! once the thumbnail's decoder ran on one thread).
//!
//! **Invariant:** a served probe costs the node what a probe in a child of
//! its own does, save the start-up. Each child is started in the same
//! sandbox (`sandbox`: killed with its parent, niced, `RLIMIT_AS` at the
//! node's `max_memory_bytes`, `RLIMIT_NOFILE`, no core dumps) and runs one
//! probe at a time, each under the job's [`Limits`]; a child that crashes,
//! stalls, talks nonsense or runs out of memory fails the probe it was on
//! as [`run`](super::run) would and is not used again (killed, reaped);
//! the next probe starts a new one. A child serves at most
//! [`MAX_SERVED`] probes (what leaks or fragments in one stays bounded),
//! and one idle for half of [`PROBES_IDLE`] is not reused (it exits on
//! its own at [`PROBES_IDLE`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::{
    child_command, conclude, keep_tail, not_started, read_events, unreadable, wait_or_kill,
    ChildCommand, Ending, RemoveOnDrop,
};
use crate::child::{PROBES, PROBES_IDLE};
use crate::protocol::{
    ChildEvent, EncodeOptions, ErrorCode, Limits, Output, Task, TranscodeError, TranscodeJob,
};

/// Probes one child serves before it is replaced.
pub const MAX_SERVED: u32 = 256;

/// The children serving probes of a node, started as probes need them
/// and kept between probes. Any number of probes may run at once, each
/// in a child of its own; the caller bounds how many (the node's prober
/// runs two at most).
pub struct ProbeChildren {
    command: ChildCommand,
    limits: Limits,
    stall_timeout: Duration,
    idle: Mutex<Vec<ProbeChild>>,
}

impl ProbeChildren {
    /// Returns children of `command` that probe under `limits`, each
    /// stopped when it reports nothing for `stall_timeout`.
    pub fn new(command: ChildCommand, limits: Limits, stall_timeout: Duration) -> Self {
        ProbeChildren {
            command,
            limits,
            stall_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Probes `input` and writes its thumbnail to `thumbnail` in an idle
    /// child, or a new one; returns the thumbnail's size.
    ///
    /// `on_event` sees [`ChildEvent::Probed`]. Fails as [`super::run`]
    /// fails a [`Task::Probe`]: the input's own error, or
    /// [`ErrorCode::TranscoderCrashed`], [`ErrorCode::TranscodeStalled`],
    /// [`ErrorCode::LimitsExceeded`] for a child that crashed, stalled or
    /// ran out of memory on it. A kept child that dies before it answers
    /// anything (it ended while idle) gets the probe run again in a new
    /// one, once. Unless the result is `Ok`, no file is left at
    /// `thumbnail`. Dropping the future kills the child it was using.
    pub async fn probe(
        &self,
        input: PathBuf,
        thumbnail: PathBuf,
        mut on_event: impl FnMut(ChildEvent) + Send,
    ) -> Result<Output, TranscodeError> {
        let job = TranscodeJob {
            input,
            output: thumbnail,
            options: EncodeOptions::default(),
            limits: self.limits,
            task: Task::Probe,
        };
        let mut job_line = serde_json::to_vec(&job).map_err(|err| {
            TranscodeError::new(
                ErrorCode::Io,
                format!("the probe job could not be encoded: {err}"),
            )
        })?;
        job_line.push(b'\n');
        let mut kept = self.take_idle();
        loop {
            let reused = kept.is_some();
            let child = match kept.take() {
                Some(child) => child,
                None => ProbeChild::start(&self.command, &self.limits)?,
            };
            let served = child
                .probe(&job, &job_line, self.stall_timeout, &mut on_event)
                .await;
            if let Some(child) = served.child {
                if child.served < MAX_SERVED {
                    self.lock().push(child);
                }
            }
            if reused && !served.answered {
                tracing::debug!(input = %job.input.display(), "a kept probe child was gone, probing in a new one");
                continue;
            }
            return served.result;
        }
    }

    /// Takes an idle child that may still be used, dropping (killing) the
    /// ones idle too long.
    fn take_idle(&self) -> Option<ProbeChild> {
        let mut idle = self.lock();
        idle.retain(|child| child.idle_since.elapsed() < PROBES_IDLE / 2);
        idle.pop()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ProbeChild>> {
        // A panic while the list was held cannot leave it half changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one probe in a child came to.
struct Served {
    result: Result<Output, TranscodeError>,
    /// The child, if it may serve another probe.
    child: Option<ProbeChild>,
    /// Whether the child answered anything for this probe.
    answered: bool,
}

/// One child serving probes, with the ends of its pipes.
struct ProbeChild {
    child: Child,
    pid: Option<u32>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The tail of its stderr, kept by a task of its own.
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    limits: Limits,
    served: u32,
    idle_since: Instant,
}

impl ProbeChild {
    fn start(cmd: &ChildCommand, limits: &Limits) -> Result<Self, TranscodeError> {
        let mut command = child_command(cmd, PROBES, limits);
        command.stdin(std::process::Stdio::piped());
        let mut child = command.spawn().map_err(not_started)?;
        let pid = child.id();
        tracing::debug!(pid, "probe child started");
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(unreadable());
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_task = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(keep_tail(pipe, stderr.clone())));
        Ok(ProbeChild {
            child,
            pid,
            stdin,
            stdout: BufReader::new(stdout),
            stderr,
            stderr_task,
            limits: *limits,
            served: 0,
            idle_since: Instant::now(),
        })
    }

    /// Sends `job` (`job_line`, its JSON and a newline) and reads the
    /// answer.
    async fn probe(
        self,
        job: &TranscodeJob,
        job_line: &[u8],
        stall_timeout: Duration,
        on_event: &mut (impl FnMut(ChildEvent) + Send),
    ) -> Served {
        // Declared before the child so that, on drop, the child is killed
        // first and the thumbnail removed after.
        let mut output_guard = RemoveOnDrop(Some(job.output.clone()));
        let mut this = self;
        this.stderr_tail_clear();
        let sent = tokio::time::timeout(stall_timeout, async {
            this.stdin.write_all(job_line).await?;
            this.stdin.flush().await
        })
        .await;
        let (ending, answered) = match sent {
            Ok(Ok(())) => read_events(&mut this.stdout, stall_timeout, on_event).await,
            // The child is gone (a broken pipe) or not reading.
            Ok(Err(_)) => (Ending::Vanished, false),
            Err(_elapsed) => (Ending::Stalled, false),
        };
        this.served += 1;
        this.idle_since = Instant::now();
        let (pid, limits) = (this.pid, this.limits);
        match ending {
            Ending::Done(output, _) => {
                output_guard.0 = None;
                Served {
                    result: Ok(output),
                    child: Some(this),
                    answered,
                }
            }
            // The input's own failure: the child is fine, unless memory
            // ran out (what is left of its heap is not to be trusted).
            Ending::Failed(err) => {
                let stderr = this.stderr_tail();
                let result = conclude(
                    Ending::Failed(err),
                    pid,
                    None,
                    &stderr,
                    &limits,
                    stall_timeout,
                )
                .map(|(output, _)| output);
                let spent = matches!(&result, Err(e) if e.code == ErrorCode::LimitsExceeded
                    && out_of_memory_error(e, &limits));
                Served {
                    result,
                    child: (!spent).then_some(this),
                    answered,
                }
            }
            Ending::Stalled | Ending::Malformed | Ending::Vanished => {
                let grace = match ending {
                    // It is about to exit on its own; give it a moment.
                    Ending::Vanished => stall_timeout.min(Duration::from_secs(5)),
                    _ => Duration::ZERO,
                };
                let status = wait_or_kill(&mut this.child, grace).await;
                let stderr = match this.stderr_task.take() {
                    Some(task) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
                        this.stderr_tail()
                    }
                    None => String::new(),
                };
                let result = conclude(ending, pid, status, &stderr, &limits, stall_timeout)
                    .map(|(output, _)| output);
                Served {
                    result,
                    child: None,
                    answered,
                }
            }
        }
    }

    fn stderr_tail(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&kept).into_owned()
    }

    fn stderr_tail_clear(&self) {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Returns whether `err` is the memory limit's error.
fn out_of_memory_error(err: &TranscodeError, limits: &Limits) -> bool {
    err.message == limits.memory_exceeded().message
}
