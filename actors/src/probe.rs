//! The children an owner runs itself, without a worker slot: the probe at
//! acceptance (right after a job is accepted, its input is probed, and a
//! thumbnail made, by the transcoder's [`Task::Probe`], so a queued job
//! already shows its input's details), and a split job's plan (where a
//! long video is cut, [`Task::Plan`]) and join ([`Task::Join`]), which read
//! packets and encode nothing.
//!
//! A [`Prober`] is the node's: it holds the child command, the node's
//! [`Limits`] and a semaphore of [`MAX_PROBES`] permits, so a burst of
//! uploads queues for a few children rather than forking one each. Probes
//! run in children that serve one after another ([`ProbeChildren`]), since
//! starting the binary costs several times what probing a small clip
//! does; a plan or a join gets a child of its own. It runs in a task of
//! its own, never in an actor's handler, and holds no worker slot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use vidpress_transcode::driver::{self, ChildCommand, ProbeChildren};
use vidpress_transcode::{
    ChildEvent, EncodeOptions, ErrorCode, JoinWork, Limits, MediaInfo, Output, SegmentPlan, Task,
    TranscodeError, TranscodeJob,
};

/// Probe children a node runs at once.
pub const MAX_PROBES: usize = 2;

/// The longest a probe may take, waiting for its permit aside: a probe
/// reads a header and decodes one group of pictures.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a probe found: the media, if the input is a readable video, and
/// whether the thumbnail was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub media: Option<MediaInfo>,
    pub thumbnail: bool,
}

/// Runs the probes of a node, a bounded number at a time.
#[derive(Clone)]
pub struct Prober {
    command: ChildCommand,
    limits: Limits,
    stall_timeout: Duration,
    permits: Arc<Semaphore>,
    probes: Arc<ProbeChildren>,
}

impl Prober {
    /// Returns a prober running `command` under `limits`, at most
    /// [`MAX_PROBES`] at once.
    pub fn new(command: ChildCommand, limits: Limits, stall_timeout: Duration) -> Self {
        let stall_timeout = stall_timeout.min(PROBE_TIMEOUT);
        Prober {
            probes: Arc::new(ProbeChildren::new(command.clone(), limits, stall_timeout)),
            command,
            limits,
            stall_timeout,
            permits: Arc::new(Semaphore::new(MAX_PROBES)),
        }
    }

    /// Probes `input` and writes its thumbnail to `thumbnail`, once a
    /// permit is free. A failed probe (not a video, over a limit, a crash,
    /// a timeout) finds nothing: the transcode reports the input's problem
    /// itself, with its own error.
    pub async fn probe(&self, input: PathBuf, thumbnail: PathBuf) -> Probe {
        let Ok(_permit) = self.permits.acquire().await else {
            return Probe {
                media: None,
                thumbnail: false,
            };
        };
        let mut media = None;
        let run = self.probes.probe(input.clone(), thumbnail, |event| {
            if let ChildEvent::Probed(found) = event {
                media = Some(found);
            }
        });
        // Dropping the probe at the timeout kills its child.
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, run).await;
        let thumbnail = match outcome {
            Ok(Ok(_bytes)) => true,
            Ok(Err(e)) => {
                tracing::debug!(input = %input.display(), error = %e, "probe failed");
                false
            }
            Err(_elapsed) => {
                tracing::warn!(input = %input.display(), "probe timed out");
                false
            }
        };
        Probe { media, thumbnail }
    }

    /// Cuts `input` into segments of about `segment` (a child reading its
    /// packets, no decoding), once a permit is free.
    pub async fn plan(
        &self,
        input: PathBuf,
        segment: Duration,
    ) -> Result<SegmentPlan, TranscodeError> {
        let _permit = self.permit().await?;
        let segment_ms = u64::try_from(segment.as_millis()).unwrap_or(u64::MAX);
        let job = TranscodeJob {
            // Nothing is written; a failed run removes this name, not a file.
            output: input.with_extension("plan"),
            input,
            options: EncodeOptions::default(),
            limits: self.limits,
            task: Task::Plan {
                segment_ms: segment_ms.max(Task::MIN_SEGMENT_MS),
            },
        };
        driver::plan(&self.command, &job, self.stall_timeout, |_| {}).await
    }

    /// Joins a split job's pieces into `output` without encoding again,
    /// once a permit is free.
    pub async fn join(
        &self,
        work: JoinWork,
        options: EncodeOptions,
        output: PathBuf,
    ) -> Result<Output, TranscodeError> {
        let _permit = self.permit().await?;
        let job = TranscodeJob {
            // Not read by a join.
            input: output.with_extension("join-input"),
            output,
            options,
            limits: self.limits,
            task: Task::Join(work),
        };
        driver::run(&self.command, &job, self.stall_timeout, |_| {}).await
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, TranscodeError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| TranscodeError::new(ErrorCode::Internal, "the node is stopping"))
    }
}
