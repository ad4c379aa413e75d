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

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{broadcast, watch};
use tracing::{debug, error, info, info_span, warn, Instrument};
use vidpress_cluster::{ClusterView, MemberState, NodeName};
use vidpress_transcode::{ErrorCode, TranscodeError};

use crate::board::Board;
use crate::counters::{Attempt, Seq};
use crate::job::{EventKind, InputInfo, JobEvent, JobSnapshot, JobState, JobStatus};
use crate::paths;
use crate::protocol::{
    workers_group, Assignment, AttemptReport, GatewayMsg, SubmitError, Submitted, Subscription,
    SupervisorMsg, WorkerMsg,
};
use crate::record::{self, JobRecord, Outcome};
use crate::replication::{self, RECOPY_FIRST, RECOPY_MAX};
use crate::transfer::{ReplicaFile, Transfer, TransferError};

/// Progress events go out at most this often; status events always go out.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Events kept for subscribers that resume with `since`.
const HISTORY: usize = 128;
/// Events buffered per live subscriber before it is told it lagged.
const CHANNEL: usize = 64;

/// A job whose workers went silent this many times fails instead of looping
/// (a worker that never starts or stops reporting while its node stays up).
const MAX_LOST_ATTEMPTS: u32 = 3;
/// A job whose attempts were interrupted by the cluster this many times (a
/// node lost, restarted or cut off, bytes that could not be moved) fails.
/// Not the job's fault, so the bound is looser; it only stops endless loops.
const MAX_INTERRUPTED_ATTEMPTS: u32 = 10;
/// How long a result copy is tried again while the standby is not down,
/// before the job completes with one copy anyway (a standby that is up but
/// cannot store it).
const RESULT_COPY_PATIENCE: Duration = Duration::from_secs(60);
/// An attempt whose worker has not said it started by then is lost (the
/// worker died, or could not decode the assignment).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A started attempt silent for this long is lost: its reports cannot reach
/// this node any more, though its node may look alive. Workers report at
/// least every few seconds, transfers included.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// A finished job keeps its actor (and so its event history, for a
/// subscriber that reconnects at once with `since`) this long, then only its
/// snapshot, which is all a later subscriber needs. Short, because a burst of
/// short jobs would otherwise hold a burst of actors, whose freed memory the
/// allocator keeps after them.
const HIBERNATE_AFTER: Duration = Duration::from_secs(5);
/// How often a running attempt is checked against those deadlines.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How an attempt was lost, which decides how many losses a job bears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// The worker went silent while its node looked alive.
    Worker,
    /// The cluster interrupted it: node lost, bytes not moved.
    Interrupted,
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
    /// The membership view, to tell a standby that is down from a slow one.
    pub view: Option<watch::Receiver<Arc<ClusterView>>>,
    /// Where the supervisor publishes the job's snapshot for polls.
    pub board: Arc<Board>,
    /// A job being accepted: not published until it is acknowledged.
    pub fresh: bool,
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
    /// Attempts lost to silent workers, and interrupted by the cluster.
    lost_attempts: u32,
    interrupted: u32,
    /// Whether the worker of the current attempt said it started.
    started: bool,
    /// When the current attempt last reported.
    last_report: Instant,
    /// The process-group scope, to reach the workers of a node.
    scope: String,
    standby_http: Option<String>,
    transfer: Arc<dyn Transfer>,
    view: Option<watch::Receiver<Arc<ClusterView>>>,
    board: Arc<Board>,
    /// Feeds the task that copies each new record to the standby, with the
    /// record's version.
    replica: Option<watch::Sender<(u64, JobRecord)>>,
    /// Versions of the record: the latest, and the latest on the standby
    /// (version 0 is the record this supervisor started with).
    version: u64,
    copied: u64,
    /// Whether the gateway was last told the standby is up to date.
    reported_synced: bool,
    /// Stopping because the job is finished: its snapshot stays on the board.
    hibernating: bool,
    /// The job finished [`HIBERNATE_AFTER`] ago, or before this start.
    linger_over: bool,
    attempt_started: Option<Instant>,
    last_progress_event: Option<Instant>,
    /// The live feed, made when the first subscriber comes (most jobs are
    /// only ever polled, and a feed holds a buffer of [`CHANNEL`] events).
    events: Option<broadcast::Sender<JobEvent>>,
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
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let record = args.record;
        let replica = args.standby_http.clone().map(|standby| {
            let (tx, rx) = watch::channel((0, record.clone()));
            tokio::spawn(
                replication::copy_records(args.transfer.clone(), standby, rx, myself)
                    .in_current_span(),
            );
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
        let state = SupervisorState {
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
                seq: Seq::default(),
            },
            lost_attempts: record.lost_attempts,
            interrupted: record.interrupted,
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
            version: 0,
            copied: 0,
            reported_synced: true,
            hibernating: false,
            linger_over: true,
            standby_http: args.standby_http,
            transfer: args.transfer,
            view: args.view,
            board: args.board,
            attempt_started: None,
            last_progress_event: None,
            events: None,
            // Grows with the events, up to HISTORY.
            history: VecDeque::new(),
        };
        if !args.fresh {
            state.board.publish(&state.job);
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A finished job recovered from disk needs no actor.
        state.hibernate(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !state.hibernating {
            state.board.remove(state.job.id);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Every line logged while handling carries the job, node and attempt.
        let span = info_span!("job", job_id = %state.job.id, node = %state.owner, attempt = state.job.attempt.get());
        handle_message(myself, message, state)
            .instrument(span)
            .await
    }
}

/// Handles one message: the body of the supervisor's `handle`.
async fn handle_message(
    myself: ActorRef<SupervisorMsg>,
    message: SupervisorMsg,
    state: &mut SupervisorState,
) -> Result<(), ActorProcessingErr> {
    let was_terminal = state.job.status().is_terminal();
    match message {
        SupervisorMsg::Accept {
            upload,
            reply,
            estimate,
        } => {
            // Both copies exist before the 202: the standby's, answered
            // once durable there, and this node's, fsynced. Without both
            // there is no promise to make: the client is told to retry.
            // The record goes last: a record on disk is a promised job.
            let id = state.job.id;
            let storage = |e: std::io::Error| {
                error!(job_id = %id, error = %e, "cannot store the job");
                SubmitError::Storage(e.to_string())
            };
            let refused = match state.place_input(upload).await {
                Err(e) => Some(storage(e)),
                Ok(()) => match state.replicate_input_and_record().await {
                    Err(e) => Some(SubmitError::Replication(e.to_string())),
                    Ok(()) => state.persist_new().await.err().map(storage),
                },
            };
            if let Some(refused) = refused {
                let _ = reply.send(Err(refused));
                let _ = state.gateway.cast(GatewayMsg::DropUnaccepted(state.job.id));
                let _ = std::fs::remove_dir_all(paths::job_dir(&state.data_dir, state.job.id));
                myself.stop(None);
                return Ok(());
            }
            state.board.publish(&state.job);
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
            // Published before the answer: a poll after it sees it.
            state.board.publish(&state.job);
            let _ = reply.send(state.job.clone());
        }
        SupervisorMsg::Dispatch { worker, node } => {
            if state.dispatch(worker, node).await {
                let attempt = state.job.attempt;
                myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
            }
        }
        SupervisorMsg::Watch(attempt) => {
            if attempt != state.job.attempt || !matches!(state.job.state, JobState::Running { .. })
            {
                return Ok(());
            }
            let silent = state.last_report.elapsed();
            if !state.started && silent >= START_TIMEOUT {
                state.retry(Loss::Worker, "the worker never started the attempt".into());
            } else if silent >= REPORT_TIMEOUT {
                state.retry(
                    Loss::Worker,
                    format!("no report from the worker for {}s", silent.as_secs()),
                );
            } else {
                myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
            }
        }
        SupervisorMsg::ResultCopied { attempt, bytes } => {
            if attempt == state.job.attempt && matches!(state.job.state, JobState::Running { .. }) {
                if state.cancel_requested() {
                    state.finish(JobState::Canceled);
                } else {
                    let output = paths::result(&state.data_dir, state.job.id);
                    state.finish(JobState::Completed { output, bytes });
                }
            }
        }
        SupervisorMsg::Resync(node) => state.resync(&myself, &node),
        SupervisorMsg::LingerOver => state.linger_over = true,
        SupervisorMsg::RecordCopied(version) => {
            state.copied = state.copied.max(version);
        }
        SupervisorMsg::DropCopy(reply) => {
            if matches!(state.job.state, JobState::Running { .. }) {
                state.stop_attempt();
                state.release_slot();
            }
            // Nothing of the job is written here again.
            state.replica = None;
            let _ = std::fs::remove_dir_all(paths::job_dir(&state.data_dir, state.job.id));
            let _ = reply.send(());
            return Ok(());
        }
        SupervisorMsg::NodeLost(node) => {
            if matches!(state.job.state, JobState::Running { .. })
                && state.job.node.as_ref() == Some(&node)
            {
                state.retry(Loss::Interrupted, format!("node {node} was lost"));
            }
        }
        SupervisorMsg::Report { attempt, report } => {
            if attempt != state.job.attempt {
                debug!(job_id = %state.job.id, attempt = attempt.get(), current = state.job.attempt.get(), "stale attempt report ignored");
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
    state.report_sync();
    state.board.publish(&state.job);
    if !was_terminal && state.job.status().is_terminal() {
        state.linger_over = false;
        myself.send_after(HIBERNATE_AFTER, || SupervisorMsg::LingerOver);
    }
    state.hibernate(&myself);
    Ok(())
}

impl SupervisorState {
    fn attempt_output(&self, attempt: Attempt) -> PathBuf {
        paths::attempt_output(&self.data_dir, self.job.id, attempt)
    }

    /// Tells the gateway the job's worker slot is free again.
    fn release_slot(&self) {
        self.release(false);
    }

    fn release(&self, rejected: bool) {
        let _ = self.gateway.cast(GatewayMsg::SlotFreed {
            job: self.job.id,
            rejected,
        });
    }

    /// Takes the output of the current attempt as the result: on this node,
    /// and on the standby before `completed` is said, the result and then the
    /// completed record, so that a download survives the loss of either and
    /// a standby taking over never runs a job again that a client saw end.
    /// The copy runs in a task that reports back with
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
        let standby_down = self.standby_down_check();
        let ended = self.ended_record(Outcome::Completed { bytes });
        tokio::spawn(async move {
            let mut backoff = RECOPY_FIRST;
            let give_up = Instant::now() + RESULT_COPY_PATIENCE;
            loop {
                let copied = match transfer
                    .replicate_file(&standby, id, ReplicaFile::Result, &output)
                    .await
                {
                    Ok(()) => transfer.replicate_record(&standby, &ended).await,
                    Err(e) => Err(e),
                };
                let Err(e) = copied else {
                    break;
                };
                // Tried again while the standby is up (a slow or briefly
                // unreachable one); once it is down, the job completes with
                // one copy and the standby is resynced when it returns.
                if standby_down() || Instant::now() >= give_up {
                    warn!(job_id = %id, standby = %standby, error = %e, "cannot copy the result to the standby: completing with one copy");
                    break;
                }
                warn!(job_id = %id, standby = %standby, error = %e, retry_in = ?backoff, "cannot copy the result to the standby");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECOPY_MAX);
            }
            let _ = myself.cast(SupervisorMsg::ResultCopied { attempt, bytes });
        }
        .in_current_span());
    }

    /// Returns a check of whether the job's standby is down (or unknown) in
    /// the membership view; always false for a node on its own.
    fn standby_down_check(&self) -> impl Fn() -> bool + Send + 'static {
        let (view, standby) = (self.view.clone(), self.record.standby.clone());
        move || {
            let (Some(view), Some(standby)) = (&view, &standby) else {
                return false;
            };
            view.borrow()
                .get(standby)
                .is_none_or(|m| m.state == MemberState::Down)
        }
    }

    /// Sends the standby `node` what it needs to take the job over: the
    /// result (or, unfinished, the input), then the record, in a task.
    fn resync(&self, myself: &ActorRef<SupervisorMsg>, node: &NodeName) {
        let (Some(standby), Some(http)) = (&self.record.standby, &self.standby_http) else {
            return;
        };
        if standby != node {
            return;
        }
        let (transfer, http, record) = (self.transfer.clone(), http.clone(), self.record.clone());
        let (data_dir, version, myself) = (self.data_dir.clone(), self.version, myself.clone());
        tokio::spawn(
            async move {
                if replication::resync(&*transfer, &http, &record, &data_dir).await {
                    let _ = myself.cast(SupervisorMsg::RecordCopied(version));
                }
            }
            .in_current_span(),
        );
    }

    /// Stops the actor once the job is done with it (see `may_hibernate`):
    /// a finished job costs its snapshot, not an actor.
    fn hibernate(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.may_hibernate() {
            self.hibernating = true;
            myself.stop(Some("finished: answered from the board".into()));
        }
    }

    /// Whether the job is done with its actor: finished, and its final
    /// record on the standby. Its snapshot stays on the board, its files
    /// and record on disk; the gateway answers for it from there.
    fn may_hibernate(&self) -> bool {
        self.job.status().is_terminal()
            && self.linger_over
            && self.copied >= self.version
            && !self.hibernating
    }

    /// Tells the gateway whether the standby holds the latest record, when
    /// that changed: a draining node waits for its standbys to be current.
    fn report_sync(&mut self) {
        let Some(standby) = &self.record.standby else {
            return;
        };
        let synced = self.copied >= self.version;
        if synced != self.reported_synced {
            self.reported_synced = synced;
            let _ = self.gateway.cast(GatewayMsg::Synced {
                job: self.job.id,
                standby: standby.clone(),
                synced,
            });
        }
    }

    /// Copies the new job's input, then its record, to the standby.
    async fn replicate_input_and_record(&self) -> Result<(), TransferError> {
        let Some(standby) = &self.standby_http else {
            return Ok(());
        };
        let input = paths::input(&self.data_dir, self.job.id);
        let copied = match self
            .transfer
            .replicate_file(standby, self.job.id, ReplicaFile::Input, &input)
            .await
        {
            Ok(()) => self.transfer.replicate_record(standby, &self.record).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &copied {
            warn!(job_id = %self.job.id, standby = %standby, error = %e, "cannot copy the new job to its standby: refused");
        }
        copied
    }

    /// Writes the record to disk and hands it to the task that keeps the
    /// standby's copy current (never waiting for a standby that may be frozen).
    async fn save(&mut self) -> std::io::Result<()> {
        self.persist().await?;
        if let Some(replica) = &self.replica {
            self.version += 1;
            replica.send_replace((self.version, self.record.clone()));
        }
        Ok(())
    }

    /// Moves a new job's upload into its folder (made durable with the
    /// record, by [`Self::persist_new`]).
    async fn place_input(&self, upload: PathBuf) -> std::io::Result<()> {
        let (dir, input) = (
            paths::job_dir(&self.data_dir, self.job.id),
            paths::input(&self.data_dir, self.job.id),
        );
        tokio::task::spawn_blocking(move || {
            let placed =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::rename(&upload, input));
            if placed.is_err() {
                let _ = std::fs::remove_file(&upload);
            }
            placed
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Writes a new job's record, which also makes its folder's entries
    /// durable, and the jobs folder's entry for its folder.
    async fn persist_new(&mut self) -> std::io::Result<()> {
        self.write_record(None).await
    }

    /// Writes the record to disk, off the runtime's threads.
    async fn persist(&mut self) -> std::io::Result<()> {
        self.write_record(None).await
    }

    /// Writes the record, then fsyncs `parent` (a folder whose entries
    /// changed) if given, in one trip to a blocking thread.
    async fn write_record(&mut self, parent: Option<PathBuf>) -> std::io::Result<()> {
        let record = self.record.clone();
        let path = paths::record(&self.data_dir, self.job.id);
        tokio::task::spawn_blocking(move || {
            record.write(&path)?;
            match parent {
                Some(parent) => std::fs::File::open(parent)?.sync_all(),
                None => Ok(()),
            }
        })
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
        let previous = self.job.attempt;
        self.job.attempt = previous.next();
        let attempt = self.job.attempt;
        self.record.attempt = attempt;
        self.record.node = Some(node.clone());
        if let Err(e) = self.save().await {
            warn!(job_id = %self.job.id, error = %e, "cannot store the attempt number; dispatch later");
            self.job.attempt = previous;
            self.record.attempt = self.job.attempt;
            self.release_slot();
            let _ = self.gateway.cast(GatewayMsg::DispatchFailed(self.job.id));
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
            let _ = self.gateway.cast(GatewayMsg::DispatchFailed(self.job.id));
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
        info!(job_id = %self.job.id, node = %worker_node(&self.job.node), attempt = attempt.get(), "job dispatched");
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
            // Also the answer to the stop of an attempt already lost and
            // requeued (`retry`): only a cancel the client asked for ends
            // the job.
            AttemptReport::Canceled if self.cancel_requested() => {
                self.release_slot();
                self.finish(JobState::Canceled);
            }
            AttemptReport::Canceled => {}
            AttemptReport::Rejected => {
                // Not the job's fault and not a loss: wait for another slot.
                self.release(true);
                self.requeue();
            }
            AttemptReport::Lost(reason) => self.retry(Loss::Interrupted, reason),
            AttemptReport::Alive => {}
        }
    }

    /// Tells the workers of the current attempt's node to stop it. Workers are
    /// looked up afresh (a remote actor's reference changes when its session
    /// is re-established); only the one running the attempt acts on it.
    fn stop_attempt(&self) {
        let Some(node) = &self.job.node else { return };
        for cell in ractor::pg::get_scoped_members(&self.scope, &workers_group(node)) {
            let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Cancel {
                job: self.job.id,
                attempt: self.job.attempt,
            });
        }
    }

    /// Runs the job again elsewhere after its attempt was lost, or fails it
    /// once too many attempts were.
    fn retry(&mut self, loss: Loss, reason: String) {
        self.release_slot();
        let (count, limit) = match loss {
            Loss::Worker => (&mut self.lost_attempts, MAX_LOST_ATTEMPTS),
            Loss::Interrupted => (&mut self.interrupted, MAX_INTERRUPTED_ATTEMPTS),
        };
        *count += 1;
        let (count, given_up) = (*count, *count >= limit);
        // If the attempt still runs somewhere (a frozen node), stop it; its
        // reports are fenced off by the attempt number anyway.
        self.stop_attempt();
        warn!(job_id = %self.job.id, attempt = self.job.attempt.get(), ?loss, count, reason = %reason, "attempt lost");
        if self.cancel_requested() {
            self.finish(JobState::Canceled);
        } else if given_up {
            let how = match loss {
                Loss::Worker => "lost with its worker",
                Loss::Interrupted => "interrupted",
            };
            self.finish(JobState::Failed(TranscodeError::new(
                ErrorCode::WorkerLost,
                format!("the job was {how} {count} times; last: {reason}"),
            )));
        } else {
            // The count is durable, so a restart does not reset the bound.
            self.record.lost_attempts = self.lost_attempts;
            self.record.interrupted = self.interrupted;
            self.dirty = true;
            self.requeue();
        }
    }

    fn requeue(&mut self) {
        self.job.state = JobState::Queued;
        self.job.node = None;
        let _ = self.gateway.cast(GatewayMsg::DispatchFailed(self.job.id));
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
                let _ = self
                    .gateway
                    .cast(GatewayMsg::CanceledWhileQueued(self.job.id));
                self.finish(JobState::Canceled);
            }
            JobState::Running {
                cancel_requested, ..
            } if !*cancel_requested => {
                *cancel_requested = true;
                self.stop_attempt();
                info!(job_id = %self.job.id, attempt = self.job.attempt.get(), "cancel requested");
            }
            _ => {}
        }
    }

    /// Moves to a terminal state, cleans up and tells everyone.
    fn finish(&mut self, state: JobState) {
        let ran_for = self.attempt_started.map(|t| t.elapsed());
        let status = state.status();
        if let JobState::Failed(e) = &state {
            info!(job_id = %self.job.id, attempt = self.job.attempt.get(), code = e.code.as_str(), error = %e, "job failed");
        } else {
            info!(job_id = %self.job.id, attempt = self.job.attempt.get(), status = %status, "job finished");
        }
        let outcome = match &state {
            JobState::Completed { bytes, .. } => Some(Outcome::Completed { bytes: *bytes }),
            JobState::Failed(error) => Some(Outcome::Failed {
                error: error.clone(),
            }),
            JobState::Canceled => Some(Outcome::Canceled),
            JobState::Queued | JobState::Running { .. } => None,
        };
        metrics::counter!("vidpress_jobs_finished_total", "status" => status.as_str()).increment(1);
        if let (JobState::Completed { bytes, .. }, Some(ran_for)) = (&state, ran_for) {
            metrics::histogram!("vidpress_transcode_seconds").record(ran_for.as_secs_f64());
            metrics::counter!("vidpress_transcode_input_bytes_total")
                .increment(self.job.input.bytes);
            metrics::counter!("vidpress_transcode_output_bytes_total").increment(*bytes);
        }
        if let Some(outcome) = outcome {
            self.record = self.ended_record(outcome);
        }
        self.dirty = true;
        self.job.state = state;
        // The input is no longer needed, nor any partial output.
        let _ = std::fs::remove_file(paths::input(&self.data_dir, self.job.id));
        for attempt in (1..=self.job.attempt.get()).map(Attempt::new) {
            let _ = std::fs::remove_file(self.attempt_output(attempt));
        }
        self.status_changed(
            ran_for
                .filter(|_| status == JobStatus::Completed)
                .map(|d| (self.job.input.bytes, d)),
        );
    }

    /// The record as it reads once the job ended with `outcome`.
    fn ended_record(&self, outcome: Outcome) -> JobRecord {
        let mut record = self.record.clone();
        record.outcome = Some(outcome);
        record.finished_at_ms = Some(record::to_ms(SystemTime::now()));
        record.media = self.job.input.media.clone();
        record.lost_attempts = self.lost_attempts;
        record.interrupted = self.interrupted;
        record
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
        self.job.seq = self.job.seq.next();
        self.job.updated_at = SystemTime::now();
        let event = JobEvent::new(kind, self.job.seq, Arc::new(self.job.clone()));
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        // Polls see what subscribers are told, from the same moment.
        self.board.publish(&self.job);
        // No receivers is fine: nobody is watching.
        let terminal = event.is_terminal();
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
        if terminal {
            // Subscribers still read what the feed holds, the terminal event
            // last; nothing comes after it.
            self.events = None;
            self.history.shrink_to_fit();
        }
    }

    fn subscribe(&mut self, since: Option<Seq>) -> Subscription {
        let live = (!self.job.status().is_terminal()).then(|| {
            self.events
                .get_or_insert_with(|| broadcast::channel(CHANNEL).0)
                .subscribe()
        });
        let oldest = self.history.front().map_or(self.job.seq.next(), |e| e.seq);
        let backlog: Vec<JobEvent> = match since {
            // Everything after `since` is still held: replay it.
            Some(since) if since.next() >= oldest && since <= self.job.seq => self
                .history
                .iter()
                .filter(|e| e.seq > since)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let backlog = if backlog.is_empty() {
            vec![JobEvent::new(
                EventKind::Snapshot,
                self.job.seq,
                Arc::new(self.job.clone()),
            )]
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
