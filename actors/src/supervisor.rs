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
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tracing::{debug, error, info, warn};
use vidpress_cluster::NodeName;
use vidpress_transcode::{ErrorCode, MediaInfo, TranscodeError};

use crate::gateway::{GatewayMsg, SubmitError, Submitted};
use crate::job::{EventKind, InputInfo, JobEvent, JobSnapshot, JobState, JobStatus};
use crate::paths;
use crate::record::{self, JobRecord, Outcome};
use crate::transfer::{ReplicaFile, Transfer};
use crate::worker::{self, Assignment, WorkerMsg};

/// Progress events go out at most this often; status events always go out.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Events kept for subscribers that resume with `since`.
const HISTORY: usize = 128;
/// Events buffered per live subscriber before it is told it lagged.
const CHANNEL: usize = 64;

/// A job whose attempts were lost this many times fails instead of looping.
const MAX_LOST_ATTEMPTS: u32 = 3;
/// An attempt whose worker has not said it started by then is lost (the
/// worker died, or could not decode the assignment).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A started attempt silent for this long is lost: its reports cannot reach
/// this node any more, though its node may look alive. Workers report at
/// least every few seconds, transfers included.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a running attempt is checked against those deadlines.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What a worker reports about one attempt. Crosses nodes inside
/// `GatewayMsg::Report`; append only.
#[derive(Debug, Serialize, Deserialize)]
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
    /// The attempt could not run for reasons that are not the job's (its
    /// bytes could not be moved); another worker should try.
    Lost(String),
    /// The attempt is alive but has no progress to tell (moving bytes).
    Alive,
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
    /// The job was just accepted: store its record durably, then answer the
    /// submitter (a 202 is a promise, so nothing is answered before).
    Accept {
        reply: RpcReplyPort<Result<Submitted, SubmitError>>,
        estimate: Duration,
    },
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
    /// A node is down: if it ran the current attempt, run the job elsewhere.
    NodeLost(NodeName),
    /// A node is up again: if it is this job's standby, it may have missed
    /// copies while away, so send it the job's files and record again.
    Resync(NodeName),
    /// The result of attempt `attempt` is on the standby (or could not be
    /// copied, which is logged): the job is complete.
    ResultCopied { attempt: u32, bytes: u64 },
    /// Sent to itself every [`WATCH_EVERY`] while attempt `0` runs.
    Watch(u32),
}

/// How a supervisor is set up.
pub struct SupervisorArgs {
    /// The job as accepted, or as recovered from disk after a restart.
    pub record: JobRecord,
    /// This node's data directory, holding the job's input and output.
    pub data_dir: PathBuf,
    pub gateway: ActorRef<GatewayMsg>,
    /// This node, the job's owner.
    pub node: NodeName,
    /// Base URL of this node's HTTP API, where workers move the bytes.
    pub http: String,
    /// The process-group scope of the cluster.
    pub scope: String,
    /// Base URL of the standby's HTTP API, when the job has a standby.
    pub standby_http: Option<String>,
    /// Copies the job's files and record to the standby.
    pub transfer: Arc<dyn Transfer>,
}

pub struct SupervisorState {
    job: JobSnapshot,
    /// The durable part, written to disk when `dirty`.
    record: JobRecord,
    dirty: bool,
    data_dir: PathBuf,
    gateway: ActorRef<GatewayMsg>,
    owner: NodeName,
    owner_http: String,
    /// Attempts lost to dead workers or failed transfers.
    lost_attempts: u32,
    /// Whether the worker of the current attempt said it started.
    started: bool,
    /// When the current attempt last reported.
    last_report: Instant,
    /// The process-group scope, to reach the workers of a node.
    scope: String,
    standby_http: Option<String>,
    transfer: Arc<dyn Transfer>,
    /// Feeds the task that copies each new record to the standby.
    replica: Option<watch::Sender<JobRecord>>,
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
        let record = args.record;
        let replica = args.standby_http.clone().map(|standby| {
            let (tx, rx) = watch::channel(record.clone());
            tokio::spawn(copy_records(args.transfer.clone(), standby, rx));
            tx
        });
        let state = match &record.outcome {
            None => JobState::Queued,
            Some(Outcome::Completed { bytes }) => JobState::Completed {
                output: paths::result(&args.data_dir, record.id),
                bytes: *bytes,
            },
            Some(Outcome::Failed { error }) => JobState::Failed(error.clone()),
            Some(Outcome::Canceled) => JobState::Canceled,
        };
        let created_at = record::from_ms(record.created_at_ms);
        let (events, _) = broadcast::channel(CHANNEL);
        Ok(SupervisorState {
            job: JobSnapshot {
                id: record.id,
                state,
                attempt: record.attempt,
                node: record.node.clone(),
                created_at,
                updated_at: record.finished_at_ms.map_or(created_at, record::from_ms),
                options: record.options,
                input: InputInfo {
                    bytes: record.input_bytes,
                    media: record.media.clone(),
                },
                seq: 0,
            },
            lost_attempts: record.lost_attempts,
            record,
            dirty: false,
            data_dir: args.data_dir,
            gateway: args.gateway,
            owner: args.node,
            owner_http: args.http,
            started: false,
            last_report: Instant::now(),
            scope: args.scope,
            replica,
            standby_http: args.standby_http,
            transfer: args.transfer,
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
            SupervisorMsg::Accept { reply, estimate } => {
                // Both copies exist before the 202: this node's, fsynced, and
                // the standby's, answered once durable there.
                state.replicate_file(ReplicaFile::Input).await;
                if let Some(standby) = &state.standby_http {
                    if let Err(e) = state
                        .transfer
                        .replicate_record(standby, &state.record)
                        .await
                    {
                        warn!(job_id = %state.job.id, standby = %standby, error = %e, "cannot copy the record to the standby");
                    }
                }
                if let Err(e) = state.persist().await {
                    error!(job_id = %state.job.id, error = %e, "cannot store the job record");
                    let _ = reply.send(Err(SubmitError::Storage(e.to_string())));
                    let _ = state.gateway.cast(GatewayMsg::Forget(state.job.id));
                    let _ = std::fs::remove_dir_all(paths::job_dir(&state.data_dir, state.job.id));
                    myself.stop(None);
                    return Ok(());
                }
                let _ = reply.send(Ok(Submitted {
                    job: state.job.clone(),
                    estimate,
                    created: true,
                }));
            }
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
            SupervisorMsg::Dispatch { worker, node } => {
                if state.dispatch(worker, node).await {
                    let attempt = state.job.attempt;
                    myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
                }
            }
            SupervisorMsg::Watch(attempt) => {
                if attempt != state.job.attempt
                    || !matches!(state.job.state, JobState::Running { .. })
                {
                    return Ok(());
                }
                let silent = state.last_report.elapsed();
                if !state.started && silent >= START_TIMEOUT {
                    state.retry("the worker never started the attempt".into());
                } else if silent >= REPORT_TIMEOUT {
                    state.retry(format!(
                        "no report from the worker for {}s",
                        silent.as_secs()
                    ));
                } else {
                    myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
                }
            }
            SupervisorMsg::ResultCopied { attempt, bytes } => {
                if attempt == state.job.attempt
                    && matches!(state.job.state, JobState::Running { .. })
                {
                    if state.cancel_requested() {
                        state.finish(JobState::Canceled);
                    } else {
                        let output = paths::result(&state.data_dir, state.job.id);
                        state.finish(JobState::Completed { output, bytes });
                    }
                }
            }
            SupervisorMsg::Resync(node) => state.resync(&node),
            SupervisorMsg::NodeLost(node) => {
                if matches!(state.job.state, JobState::Running { .. })
                    && state.job.node.as_ref() == Some(&node)
                {
                    state.retry(format!("node {node} was lost"));
                }
            }
            SupervisorMsg::Report { attempt, report } => {
                if attempt != state.job.attempt {
                    debug!(job_id = %state.job.id, attempt, current = state.job.attempt, "stale attempt report ignored");
                    return Ok(());
                }
                state.last_report = Instant::now();
                match report {
                    AttemptReport::Ended(Ok(bytes)) => state.complete(&myself, bytes),
                    report => state.report(report),
                }
            }
        }
        if state.dirty {
            if let Err(e) = state.save().await {
                error!(job_id = %state.job.id, error = %e, "cannot update the job record");
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    fn attempt_output(&self, attempt: u32) -> PathBuf {
        paths::attempt_output(&self.data_dir, self.job.id, attempt)
    }

    /// Tells the gateway the job's worker slot is free again.
    fn release_slot(&self) {
        self.release(false);
    }

    fn release(&self, rejected: bool) {
        let _ = self.gateway.cast(GatewayMsg::Release {
            job: self.job.id,
            rejected,
        });
    }

    /// Takes the output of the current attempt as the result: on this node,
    /// and on the standby before `completed` is said, so a download survives
    /// the loss of either. The copy runs in a task that reports back with
    /// [`SupervisorMsg::ResultCopied`], so the job answers polls meanwhile.
    fn complete(&mut self, myself: &ActorRef<SupervisorMsg>, bytes: u64) {
        self.release_slot();
        if self.cancel_requested() {
            self.finish(JobState::Canceled);
            return;
        }
        let output = paths::result(&self.data_dir, self.job.id);
        if let Err(e) = std::fs::rename(self.attempt_output(self.job.attempt), &output) {
            self.finish(JobState::Failed(TranscodeError::new(
                ErrorCode::Io,
                format!("the output could not be stored: {e}"),
            )));
            return;
        }
        let Some(standby) = self.standby_http.clone() else {
            self.finish(JobState::Completed { output, bytes });
            return;
        };
        let (transfer, id, attempt, myself) = (
            self.transfer.clone(),
            self.job.id,
            self.job.attempt,
            myself.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = transfer
                .replicate_file(&standby, id, ReplicaFile::Result, &output)
                .await
            {
                warn!(job_id = %id, standby = %standby, error = %e, "cannot copy the result to the standby");
            }
            let _ = myself.cast(SupervisorMsg::ResultCopied { attempt, bytes });
        });
    }

    /// Sends the standby `node` what it needs to take the job over: the
    /// result (or, unfinished, the input), then the record, in a task.
    fn resync(&self, node: &NodeName) {
        let (Some(standby), Some(http)) = (&self.record.standby, &self.standby_http) else {
            return;
        };
        if standby != node {
            return;
        }
        let file = if self.record.outcome.is_some() {
            ReplicaFile::Result
        } else {
            ReplicaFile::Input
        };
        let path = paths::job_dir(&self.data_dir, self.job.id).join(file.name());
        let (transfer, http, record) = (self.transfer.clone(), http.clone(), self.record.clone());
        tokio::spawn(async move {
            // A failed job has no file to send; its record is enough.
            if path.exists() {
                if let Err(e) = transfer.replicate_file(&http, record.id, file, &path).await {
                    warn!(job_id = %record.id, standby = %http, error = %e, "cannot resync the standby");
                    return;
                }
            }
            if let Err(e) = transfer.replicate_record(&http, &record).await {
                warn!(job_id = %record.id, standby = %http, error = %e, "cannot resync the standby");
            }
        });
    }

    /// Copies one of the job's files to the standby; a failure leaves the
    /// job with one copy, which is logged.
    async fn replicate_file(&self, file: ReplicaFile) {
        let Some(standby) = &self.standby_http else {
            return;
        };
        let path = paths::job_dir(&self.data_dir, self.job.id).join(file.name());
        if let Err(e) = self
            .transfer
            .replicate_file(standby, self.job.id, file, &path)
            .await
        {
            warn!(job_id = %self.job.id, file = file.name(), standby = %standby, error = %e, "cannot copy to the standby");
        }
    }

    /// Writes the record to disk and hands it to the task that keeps the
    /// standby's copy current (never waiting for a standby that may be frozen).
    async fn save(&mut self) -> std::io::Result<()> {
        self.persist().await?;
        if let Some(replica) = &self.replica {
            replica.send_replace(self.record.clone());
        }
        Ok(())
    }

    /// Writes the record to disk, off the runtime's threads.
    async fn persist(&mut self) -> std::io::Result<()> {
        let record = self.record.clone();
        let path = paths::record(&self.data_dir, self.job.id);
        tokio::task::spawn_blocking(move || record.write(&path))
            .await
            .map_err(std::io::Error::other)??;
        self.dirty = false;
        Ok(())
    }

    /// Sends the next attempt to `worker`; returns whether it was sent. The
    /// new attempt number is on disk before any worker sees it, so attempts
    /// stay fenced across a restart of this node.
    async fn dispatch(&mut self, worker: ActorRef<WorkerMsg>, node: NodeName) -> bool {
        if !matches!(self.job.state, JobState::Queued) {
            // Canceled while the slot was on its way: give it back.
            self.release_slot();
            return false;
        }
        self.job.attempt += 1;
        let attempt = self.job.attempt;
        self.record.attempt = attempt;
        self.record.node = Some(node.clone());
        if let Err(e) = self.save().await {
            warn!(job_id = %self.job.id, error = %e, "cannot store the attempt number; dispatch later");
            self.job.attempt -= 1;
            self.record.attempt = self.job.attempt;
            self.release_slot();
            let _ = self.gateway.cast(GatewayMsg::Requeue(self.job.id));
            return false;
        }
        let assignment = Assignment {
            job: self.job.id,
            attempt,
            options: self.job.options,
            owner: self.owner.clone(),
            owner_http: self.owner_http.clone(),
        };
        if worker.cast(WorkerMsg::Assign(assignment)).is_err() {
            // The worker is gone; wait for another slot.
            self.release_slot();
            let _ = self.gateway.cast(GatewayMsg::Requeue(self.job.id));
            return false;
        }
        self.started = false;
        self.last_report = Instant::now();
        self.attempt_started = Some(Instant::now());
        self.job.node = Some(node);
        self.job.state = JobState::Running {
            progress: 0.0,
            eta_seconds: None,
            cancel_requested: false,
        };
        info!(job_id = %self.job.id, node = %worker_node(&self.job.node), attempt, "job dispatched");
        self.status_changed(None);
        true
    }

    fn report(&mut self, report: AttemptReport) {
        match report {
            AttemptReport::Started { node } => {
                self.started = true;
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
            AttemptReport::Ended(Ok(_)) => {
                unreachable!("completions are handled by `complete`")
            }
            AttemptReport::Ended(Err(error)) => {
                self.release_slot();
                if self.cancel_requested() {
                    self.finish(JobState::Canceled);
                } else {
                    self.finish(JobState::Failed(error));
                }
            }
            AttemptReport::Canceled => {
                self.release_slot();
                self.finish(JobState::Canceled);
            }
            AttemptReport::Rejected => {
                // Not the job's fault and not a loss: wait for another slot.
                self.release(true);
                self.requeue();
            }
            AttemptReport::Lost(reason) => self.retry(reason),
            AttemptReport::Alive => {}
        }
    }

    /// Tells the workers of the current attempt's node to stop it. Workers are
    /// looked up afresh (a remote actor's reference changes when its session
    /// is re-established); only the one running the attempt acts on it.
    fn stop_attempt(&self) {
        let Some(node) = &self.job.node else { return };
        for cell in ractor::pg::get_scoped_members(&self.scope, &worker::group(node)) {
            let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Cancel {
                job: self.job.id,
                attempt: self.job.attempt,
            });
        }
    }

    /// Runs the job again elsewhere after its attempt was lost, or fails it
    /// once too many attempts were.
    fn retry(&mut self, reason: String) {
        self.release_slot();
        self.lost_attempts += 1;
        // If the attempt still runs somewhere (a frozen node), stop it; its
        // reports are fenced off by the attempt number anyway.
        self.stop_attempt();
        warn!(job_id = %self.job.id, attempt = self.job.attempt, lost = self.lost_attempts, reason = %reason, "attempt lost");
        if self.cancel_requested() {
            self.finish(JobState::Canceled);
        } else if self.lost_attempts >= MAX_LOST_ATTEMPTS {
            self.finish(JobState::Failed(TranscodeError::new(
                ErrorCode::WorkerLost,
                format!(
                    "the job was lost with its worker {} times; last: {reason}",
                    self.lost_attempts
                ),
            )));
        } else {
            self.requeue();
        }
    }

    fn requeue(&mut self) {
        self.job.state = JobState::Queued;
        self.job.node = None;
        let _ = self.gateway.cast(GatewayMsg::Requeue(self.job.id));
        self.status_changed(None);
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
                self.stop_attempt();
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
        self.record.outcome = match &state {
            JobState::Completed { bytes, .. } => Some(Outcome::Completed { bytes: *bytes }),
            JobState::Failed(error) => Some(Outcome::Failed {
                error: error.clone(),
            }),
            JobState::Canceled => Some(Outcome::Canceled),
            JobState::Queued | JobState::Running { .. } => None,
        };
        self.record.finished_at_ms = Some(record::to_ms(SystemTime::now()));
        self.record.media = self.job.input.media.clone();
        self.record.lost_attempts = self.lost_attempts;
        self.dirty = true;
        self.job.state = state;
        // The input is no longer needed, nor any partial output.
        let _ = std::fs::remove_file(paths::input(&self.data_dir, self.job.id));
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

/// Copies each new record of a job to its standby, the latest first: a
/// record skipped while the standby was slow is superseded by a newer one.
/// Ends with the job's supervisor.
async fn copy_records(
    transfer: Arc<dyn Transfer>,
    standby: String,
    mut records: watch::Receiver<JobRecord>,
) {
    while records.changed().await.is_ok() {
        let record = records.borrow_and_update().clone();
        if let Err(e) = transfer.replicate_record(&standby, &record).await {
            warn!(job_id = %record.id, standby = %standby, error = %e, "cannot copy the record to the standby");
        }
    }
}

fn worker_node(node: &Option<NodeName>) -> &str {
    node.as_ref().map_or("-", NodeName::as_str)
}
impl ractor::Message for SupervisorMsg {}
