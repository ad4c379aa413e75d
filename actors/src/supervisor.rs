//! The JobSupervisor: one actor per job, the owner of its state machine.
//!
//! It holds the job's [`JobSnapshot`], takes a worker slot from the gateway,
//! fences worker reports by attempt number, keeps a short history of events
//! for resuming subscribers and fans every event out over a broadcast channel,
//! so that thousands of subscribers cost the actor one send per event.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;
use tracing::{debug, info};
use vidpress_cluster::NodeName;
use vidpress_transcode::{EncodeOptions, MediaInfo, TranscodeError, TranscodeJob};

use crate::gateway::GatewayMsg;
use crate::job::{EventKind, InputInfo, JobEvent, JobId, JobSnapshot, JobState, JobStatus};
use crate::worker::{Assignment, WorkerMsg};

/// Progress events go out at most this often; status events always go out.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Events kept for subscribers that resume with `since`.
const HISTORY: usize = 128;
/// Events buffered per live subscriber before it is told it lagged.
const CHANNEL: usize = 64;

/// What a worker reports about one attempt.
#[derive(Debug)]
pub enum AttemptReport {
    /// The worker on `node` has started the attempt.
    Started { node: NodeName },
    /// The input was probed.
    Probed(MediaInfo),
    /// Fraction done, 0–1.
    Progress(f64),
    /// The attempt finished: the output's size, or why it failed.
    Ended(Result<u64, TranscodeError>),
    /// The attempt was stopped on request.
    Canceled,
    /// The worker was busy and did not start the attempt.
    Rejected,
}

/// Events for one subscriber: what it missed (or a snapshot), then the live feed.
pub struct Subscription {
    /// Sent first, in order.
    pub backlog: Vec<JobEvent>,
    /// Later events; `None` once the job is terminal.
    pub live: Option<broadcast::Receiver<JobEvent>>,
}

/// Messages a job supervisor handles.
pub enum SupervisorMsg {
    /// Replies with the job's current snapshot.
    GetSnapshot(RpcReplyPort<JobSnapshot>),
    /// Subscribes to events after `since` (or from a fresh snapshot).
    Subscribe {
        since: Option<u64>,
        reply: RpcReplyPort<Subscription>,
    },
    /// Cancels the job and replies with the snapshot once the request is in effect.
    Cancel(RpcReplyPort<JobSnapshot>),
    /// The gateway reserved a worker slot for this job.
    Dispatch {
        worker: ActorRef<WorkerMsg>,
        node: NodeName,
    },
    /// A worker's report on attempt `attempt`; stale attempts are ignored.
    Report { attempt: u32, report: AttemptReport },
}

/// How a supervisor is set up.
pub struct SupervisorArgs {
    pub id: JobId,
    pub options: EncodeOptions,
    /// The job's own folder, holding its input and its output.
    pub dir: PathBuf,
    pub input_bytes: u64,
    pub gateway: ActorRef<GatewayMsg>,
}

pub struct SupervisorState {
    job: JobSnapshot,
    dir: PathBuf,
    gateway: ActorRef<GatewayMsg>,
    worker: Option<ActorRef<WorkerMsg>>,
    attempt_started: Option<Instant>,
    last_progress_event: Option<Instant>,
    events: broadcast::Sender<JobEvent>,
    history: VecDeque<JobEvent>,
}

/// Owns one job from acceptance to its terminal state and after.
pub struct JobSupervisor;

impl Actor for JobSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = SystemTime::now();
        let (events, _) = broadcast::channel(CHANNEL);
        Ok(SupervisorState {
            job: JobSnapshot {
                id: args.id,
                state: JobState::Queued,
                attempt: 0,
                node: None,
                created_at: now,
                updated_at: now,
                options: args.options,
                input: InputInfo {
                    bytes: args.input_bytes,
                    media: None,
                },
                seq: 0,
            },
            dir: args.dir,
            gateway: args.gateway,
            worker: None,
            attempt_started: None,
            last_progress_event: None,
            events,
            history: VecDeque::with_capacity(HISTORY),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::GetSnapshot(reply) => {
                let _ = reply.send(state.job.clone());
            }
            SupervisorMsg::Subscribe { since, reply } => {
                let _ = reply.send(state.subscribe(since));
            }
            SupervisorMsg::Cancel(reply) => {
                state.cancel();
                let _ = reply.send(state.job.clone());
            }
            SupervisorMsg::Dispatch { worker, node } => state.dispatch(myself, worker, node),
            SupervisorMsg::Report { attempt, report } => {
                if attempt != state.job.attempt {
                    debug!(job_id = %state.job.id, attempt, current = state.job.attempt, "stale attempt report ignored");
                    return Ok(());
                }
                state.report(report);
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    fn input_path(&self) -> PathBuf {
        self.dir.join("input")
    }

    fn attempt_output(&self, attempt: u32) -> PathBuf {
        self.dir.join(format!("output.attempt-{attempt}.mp4"))
    }

    fn dispatch(
        &mut self,
        myself: ActorRef<SupervisorMsg>,
        worker: ActorRef<WorkerMsg>,
        node: NodeName,
    ) {
        if !matches!(self.job.state, JobState::Queued) {
            // Canceled while the slot was on its way: give it back.
            let _ = self.gateway.cast(GatewayMsg::WorkerIdle(worker));
            return;
        }
        self.job.attempt += 1;
        let attempt = self.job.attempt;
        let assignment = Assignment {
            job: self.job.id,
            attempt,
            transcode: TranscodeJob {
                input: self.input_path(),
                output: self.attempt_output(attempt),
                options: self.job.options,
            },
            supervisor: myself,
        };
        if worker
            .cast(WorkerMsg::Assign(Box::new(assignment)))
            .is_err()
        {
            // The worker is gone; wait for another slot.
            let _ = self.gateway.cast(GatewayMsg::Requeue(self.job.id));
            return;
        }
        self.worker = Some(worker);
        self.attempt_started = Some(Instant::now());
        self.job.node = Some(node);
        self.job.state = JobState::Running {
            progress: 0.0,
            eta_seconds: None,
            cancel_requested: false,
        };
        info!(job_id = %self.job.id, node = %worker_node(&self.job.node), attempt, "job dispatched");
        self.status_changed(None);
    }

    fn report(&mut self, report: AttemptReport) {
        match report {
            AttemptReport::Started { node } => {
                if self.job.node.as_ref() != Some(&node) {
                    self.job.node = Some(node);
                    self.publish(EventKind::Progress);
                }
            }
            AttemptReport::Probed(media) => {
                self.job.input.media = Some(media);
                self.publish(EventKind::Progress);
            }
            AttemptReport::Progress(fraction) => self.progress(fraction),
            AttemptReport::Ended(Ok(bytes)) => {
                if self.cancel_requested() {
                    self.finish(JobState::Canceled);
                    return;
                }
                let output = self.dir.join("output.mp4");
                match std::fs::rename(self.attempt_output(self.job.attempt), &output) {
                    Ok(()) => self.finish(JobState::Completed { output, bytes }),
                    Err(e) => self.finish(JobState::Failed(TranscodeError {
                        code: vidpress_transcode::ErrorCode::Io,
                        message: format!("the output could not be stored: {e}"),
                    })),
                }
            }
            AttemptReport::Ended(Err(error)) => {
                if self.cancel_requested() {
                    self.finish(JobState::Canceled);
                } else {
                    self.finish(JobState::Failed(error));
                }
            }
            AttemptReport::Canceled => self.finish(JobState::Canceled),
            AttemptReport::Rejected => {
                self.worker = None;
                self.job.state = JobState::Queued;
                self.job.node = None;
                let _ = self.gateway.cast(GatewayMsg::Requeue(self.job.id));
                self.status_changed(None);
            }
        }
    }

    fn progress(&mut self, fraction: f64) {
        let elapsed = self.attempt_started.map(|t| t.elapsed().as_secs_f64());
        let JobState::Running {
            progress,
            eta_seconds,
            ..
        } = &mut self.job.state
        else {
            return;
        };
        let fraction = fraction.clamp(0.0, 1.0);
        if fraction <= *progress {
            return;
        }
        *progress = fraction;
        if let (Some(elapsed), true) = (elapsed, fraction >= 0.01) {
            *eta_seconds = Some(elapsed * (1.0 - fraction) / fraction);
        }
        let due = self
            .last_progress_event
            .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        if due {
            self.last_progress_event = Some(Instant::now());
            self.publish(EventKind::Progress);
        } else {
            self.job.updated_at = SystemTime::now();
        }
    }

    fn cancel_requested(&self) -> bool {
        matches!(
            self.job.state,
            JobState::Running {
                cancel_requested: true,
                ..
            }
        )
    }

    fn cancel(&mut self) {
        match &mut self.job.state {
            JobState::Queued => {
                let _ = self.gateway.cast(GatewayMsg::Dequeue(self.job.id));
                self.finish(JobState::Canceled);
            }
            JobState::Running {
                cancel_requested, ..
            } if !*cancel_requested => {
                *cancel_requested = true;
                if let Some(worker) = &self.worker {
                    let _ = worker.cast(WorkerMsg::Cancel {
                        job: self.job.id,
                        attempt: self.job.attempt,
                    });
                }
                info!(job_id = %self.job.id, attempt = self.job.attempt, "cancel requested");
            }
            _ => {}
        }
    }

    /// Moves to a terminal state, cleans up and tells everyone.
    fn finish(&mut self, state: JobState) {
        let ran_for = self.attempt_started.map(|t| t.elapsed());
        let status = state.status();
        if let JobState::Failed(e) = &state {
            info!(job_id = %self.job.id, attempt = self.job.attempt, code = e.code.as_str(), error = %e, "job failed");
        } else {
            info!(job_id = %self.job.id, attempt = self.job.attempt, status = %status, "job finished");
        }
        self.job.state = state;
        self.worker = None;
        // The input is no longer needed, nor any partial output.
        let _ = std::fs::remove_file(self.input_path());
        for attempt in 1..=self.job.attempt {
            let _ = std::fs::remove_file(self.attempt_output(attempt));
        }
        self.status_changed(
            ran_for
                .filter(|_| status == JobStatus::Completed)
                .map(|d| (self.job.input.bytes, d)),
        );
    }

    /// Publishes a status event and tells the gateway, which keeps the job index.
    fn status_changed(&mut self, ran: Option<(u64, Duration)>) {
        let _ = self.gateway.cast(GatewayMsg::StatusChanged {
            id: self.job.id,
            status: self.job.status(),
            ran,
        });
        self.publish(EventKind::Status);
    }

    fn publish(&mut self, kind: EventKind) {
        self.job.seq += 1;
        self.job.updated_at = SystemTime::now();
        let event = JobEvent {
            kind,
            seq: self.job.seq,
            job: Arc::new(self.job.clone()),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    fn subscribe(&self, since: Option<u64>) -> Subscription {
        let live = (!self.job.status().is_terminal()).then(|| self.events.subscribe());
        let oldest = self.history.front().map_or(self.job.seq + 1, |e| e.seq);
        let backlog: Vec<JobEvent> = match since {
            // Everything after `since` is still held: replay it.
            Some(since) if since + 1 >= oldest && since <= self.job.seq => self
                .history
                .iter()
                .filter(|e| e.seq > since)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let backlog = if backlog.is_empty() {
            vec![JobEvent {
                kind: EventKind::Snapshot,
                seq: self.job.seq,
                job: Arc::new(self.job.clone()),
            }]
        } else {
            backlog
        };
        Subscription { backlog, live }
    }
}

fn worker_node(node: &Option<NodeName>) -> &str {
    node.as_ref().map_or("-", NodeName::as_str)
}
impl ractor::Message for SupervisorMsg {}
