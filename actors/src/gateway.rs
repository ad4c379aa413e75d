//! The Gateway actor: one per node, the front door behind the HTTP layer.
//!
//! It accepts jobs (spawning one `JobSupervisor` each), enforces idempotency
//! keys, holds the bounded queue of jobs waiting for a worker slot, hands
//! slots on the least-loaded node of the cluster to supervisors, routes
//! workers' reports (from any node) to the supervisors, and keeps a small
//! index of job statuses for listing. Job state itself stays in the
//! supervisors.
//!
//! Gateways join the process group `vidpress.gateway.<node>`, which is how a
//! worker on another node finds the gateway of the job's owner.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::watch;
use tracing::{error, info, warn};
use vidpress_cluster::{ClusterView, MemberState, NodeLoad, NodeName};
use vidpress_transcode::driver::ChildCommand;
use vidpress_transcode::Limits;

use crate::board::Board;
use crate::counters::{Attempt, Epoch};
use crate::job::{JobId, JobSnapshot, JobStatus};
use crate::paths;
use crate::protocol::{
    gateway_group, workers_group, GatewayMsg, NodeStats, SubmitError, SubmitRequest, Submitted,
    SupervisorMsg, WorkerMsg,
};
use crate::queue::JobQueue;
use crate::record::{self, JobRecord, Outcome};
use crate::replication;
use crate::supervisor::{JobSupervisor, SupervisorArgs};
use crate::transfer::{Relinquished, ReplicaFile, Transfer};
use crate::worker::{WorkerActor, WorkerArgs};

/// How often queued jobs look again for free workers on other nodes, whose
/// load arrives with heartbeats.
const PUMP_EVERY: Duration = Duration::from_millis(250);
/// A worker that refused an assignment is skipped for this long.
const REJECT_COOLDOWN: Duration = Duration::from_secs(1);
/// A replica folder without a record this old is removed.
const DEBRIS_AGE: Duration = Duration::from_secs(3600);
/// How often finished jobs past their retention are looked for, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// After a former owner kept its finished copy, its standby (the node that
/// had taken the job over) is sent the copy again this much later, once it
/// has dropped its own.
const RESYNC_AFTER_YIELD: Duration = Duration::from_secs(2);
/// How long a job supervisor that gives its job up is waited for.
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// Until a job has been measured, assume one second per megabyte of input.
const INITIAL_SECONDS_PER_BYTE: f64 = 1e-6;
/// Weight of the newest measurement in the moving average of speed.
const SPEED_WEIGHT: f64 = 0.3;

/// Where the answer to a submission goes.
type SubmitReply = RpcReplyPort<Result<Submitted, SubmitError>>;

/// Parses lowercase hex into a digest.
fn unhex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The cluster this node belongs to, when it is not alone.
#[derive(Clone)]
pub struct ClusterLink {
    /// The latest membership view, with every node's load.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// Where this node publishes its own load for heartbeats.
    pub load: Arc<watch::Sender<NodeLoad>>,
    /// How long after a node comes back into sight the view may still show
    /// live nodes as down (they are redialed with backoff).
    pub rejoin_window: Duration,
}

/// How a node's actors are set up.
#[derive(Clone)]
pub struct GatewayArgs {
    pub node: NodeName,
    /// Where job folders live (`<data_dir>/jobs/<id>`).
    pub data_dir: PathBuf,
    /// Worker actors to start on this node.
    pub workers: usize,
    /// Jobs that may wait for a slot before submissions get 503.
    pub queue_capacity: usize,
    pub command: ChildCommand,
    pub stall_timeout: Duration,
    /// What a transcode on this node may cost; every attempt run here gets
    /// these, whichever node owns its job.
    pub limits: Limits,
    /// Process-group scope shared by the nodes of one cluster.
    pub scope: String,
    /// How long finished jobs and their results are kept.
    pub retention: Duration,
    /// Base URL of this node's HTTP API, where workers elsewhere move bytes.
    pub http: String,
    /// Moves bytes for attempts of jobs owned by other nodes.
    pub transfer: Arc<dyn Transfer>,
    /// The cluster, or `None` for a node on its own.
    pub cluster: Option<ClusterLink>,
}

/// A worker slot held by a job.
struct Slot {
    worker: ActorRef<WorkerMsg>,
    node: NodeName,
}

struct JobEntry {
    status: JobStatus,
    /// `None` once a finished job's actor stopped (its snapshot is on the
    /// board): holding the reference would keep the actor's memory.
    supervisor: Option<ActorRef<SupervisorMsg>>,
    bytes: u64,
    /// When the job reached a terminal state.
    finished: Option<Instant>,
}

pub struct GatewayState {
    args: GatewayArgs,
    /// Where supervisors publish their snapshots.
    board: Arc<Board>,
    jobs: BTreeMap<JobId, JobEntry>,
    queue: JobQueue,
    /// Slots this gateway handed out, by job.
    running: HashMap<JobId, Slot>,
    /// Workers (anywhere) holding a slot this gateway handed out.
    busy: HashSet<ActorId>,
    /// This node's workers running an attempt for any node.
    local_busy: HashSet<ActorId>,
    /// Workers that refused an assignment, until when they are skipped.
    cooldown: HashMap<ActorId, Instant>,
    /// Shutting down: no new jobs, no new attempts here.
    draining: bool,
    /// Jobs this node took over, with their former owner and the new epoch.
    taken_over: HashMap<JobId, (NodeName, Epoch)>,
    /// Jobs owned here whose standby lacks the latest record, with the standby.
    unsynced: HashMap<JobId, NodeName>,
    next_sweep: Instant,
    idempotency: HashMap<String, ([u8; 32], JobId)>,
    seconds_per_byte: f64,
}

/// The node's front door.
pub struct Gateway;

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = (GatewayArgs, Arc<Board>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (args, board): (GatewayArgs, Arc<Board>),
    ) -> Result<Self::State, ActorProcessingErr> {
        std::fs::create_dir_all(paths::jobs_dir(&args.data_dir))?;
        // Scratch space of attempts for other nodes does not survive a restart.
        let _ = std::fs::remove_dir_all(args.data_dir.join("work"));
        ractor::pg::join_scoped(
            args.scope.clone(),
            gateway_group(&args.node),
            vec![myself.get_cell()],
        );
        for _ in 0..args.workers {
            let worker_args = WorkerArgs {
                node: args.node.clone(),
                data_dir: args.data_dir.clone(),
                command: args.command.clone(),
                stall_timeout: args.stall_timeout,
                limits: args.limits,
                scope: args.scope.clone(),
                transfer: args.transfer.clone(),
                gateway: myself.clone(),
            };
            Actor::spawn_linked(None, WorkerActor, worker_args, myself.get_cell()).await?;
        }
        myself.send_interval(PUMP_EVERY, || GatewayMsg::Tick);
        info!(node = %args.node, workers = args.workers, "gateway started");
        let mut state = GatewayState {
            args,
            board,
            jobs: BTreeMap::new(),
            queue: JobQueue::default(),
            running: HashMap::new(),
            busy: HashSet::new(),
            local_busy: HashSet::new(),
            cooldown: HashMap::new(),
            draining: false,
            taken_over: HashMap::new(),
            unsynced: HashMap::new(),
            next_sweep: Instant::now(),
            idempotency: HashMap::new(),
            seconds_per_byte: INITIAL_SECONDS_PER_BYTE,
        };
        state.recover(&myself).await;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMsg::Submit(request, reply) => {
                // On success the new supervisor answers, once the job is on disk.
                if let Err((e, reply)) = state.submit(&myself, *request, reply).await {
                    let _ = reply.send(Err(e));
                }
                state.pump();
            }
            GatewayMsg::DropUnaccepted(id) => state.forget(id),
            GatewayMsg::List {
                status,
                before,
                limit,
                reply,
            } => {
                let upper = before.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                let ids = state
                    .jobs
                    .range((std::ops::Bound::Unbounded, upper))
                    .rev()
                    .filter(|(_, e)| status.is_none_or(|s| s == e.status))
                    .take(limit)
                    .map(|(id, _)| *id)
                    .collect();
                let _ = reply.send(ids);
            }
            GatewayMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            GatewayMsg::Report {
                job,
                attempt,
                report,
            } => {
                if let Some(supervisor) = state.supervisor(job) {
                    let _ = supervisor.cast(SupervisorMsg::Report { attempt, report });
                }
            }
            GatewayMsg::SlotFreed { job, rejected } => {
                if let Some(slot) = state.running.remove(&job) {
                    let id = slot.worker.get_id();
                    state.busy.remove(&id);
                    if rejected {
                        state.cooldown.insert(id, Instant::now() + REJECT_COOLDOWN);
                    }
                }
                state.pump();
            }
            GatewayMsg::WorkerBusy { worker, busy } => {
                if busy {
                    state.local_busy.insert(worker);
                } else {
                    state.local_busy.remove(&worker);
                }
                state.pump();
            }
            GatewayMsg::NodeUp(node) => {
                state.relinquish_to(&myself, &node);
                // It may have missed copies of the jobs it stands by for.
                let mut finished = Vec::new();
                for (id, entry) in &state.jobs {
                    let resync =
                        |s: &ActorRef<SupervisorMsg>| s.cast(SupervisorMsg::Resync(node.clone()));
                    if entry.supervisor.as_ref().is_none_or(|s| resync(s).is_err()) {
                        finished.push(*id);
                    }
                }
                state.resync_finished(&node, finished, Duration::ZERO);
                // A majority may be in sight again: take over what is still
                // owned by nodes that are down, once this node had the time
                // to see them again if they are alive (coming back from
                // isolation, the view fills one node at a time).
                if let Some(cluster) = &state.args.cluster {
                    myself.send_after(cluster.rejoin_window, || GatewayMsg::TakeOverDown);
                }
            }
            GatewayMsg::TakeOverDown => {
                for down in state.down_members() {
                    state.take_over(&myself, &down).await;
                }
                // Once the nodes that took this node's jobs over in its
                // absence had the rejoin window to give them back.
                state.fence();
            }
            GatewayMsg::CompareCopies {
                job,
                epoch,
                finished,
                reply,
            } => {
                let _ = reply.send(state.give_way(job, epoch, finished).await);
            }
            GatewayMsg::FormerOwnerKept(job) => state.yield_to_owner(job).await,
            GatewayMsg::Synced {
                job,
                standby,
                synced,
            } => {
                if synced {
                    state.unsynced.remove(&job);
                } else if state.jobs.contains_key(&job) {
                    state.unsynced.insert(job, standby);
                }
            }
            GatewayMsg::NodeDown(node) => {
                // Attempts here for the lost node's jobs: it (or whoever
                // takes its jobs over) runs them again.
                state.interrupt_local(Some(&node), format!("its owner {node} is down"));
                state.fence();
                state.take_over(&myself, &node).await;
                for (job, slot) in &state.running {
                    if slot.node == node {
                        if let Some(supervisor) = state.supervisor(*job) {
                            let _ = supervisor.cast(SupervisorMsg::NodeLost(node.clone()));
                        }
                    }
                }
            }
            GatewayMsg::Drain => {
                info!(node = %state.args.node, "draining: no new jobs, no new attempts here");
                state.draining = true;
                for cell in state.workers_of(&state.args.node) {
                    let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Drain);
                }
                state.pump();
            }
            GatewayMsg::Tick => {
                let now = Instant::now();
                state.cooldown.retain(|_, until| *until > now);
                if now >= state.next_sweep {
                    // A tenth of the retention, so a job outlives it by little.
                    let every = (state.args.retention / 10).clamp(PUMP_EVERY, SWEEP_EVERY);
                    state.next_sweep = now + every;
                    state.sweep();
                }
                state.pump();
            }
            GatewayMsg::StatusChanged { id, status, ran } => {
                if let Some(entry) = state.jobs.get_mut(&id) {
                    entry.status = status;
                    if status.is_terminal() {
                        entry.finished = Some(Instant::now());
                    }
                }
                if let Some((bytes, took)) = ran.filter(|(b, _)| *b > 0) {
                    let measured = took.as_secs_f64() / bytes as f64;
                    state.seconds_per_byte =
                        SPEED_WEIGHT * measured + (1.0 - SPEED_WEIGHT) * state.seconds_per_byte;
                }
            }
            GatewayMsg::CanceledWhileQueued(id) => {
                state.queue.remove(id);
                state.publish_load();
            }
            GatewayMsg::DispatchFailed(id) => {
                let bytes = state.jobs.get(&id).map_or(0, |e| e.bytes);
                state.queue.push_front(id, bytes);
                state.pump();
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A child's end must not stop the gateway (ractor's default would).
        match event {
            SupervisionEvent::ActorFailed(who, why) => {
                error!(node = %state.args.node, actor = %who.get_id(), error = %why, "actor failed");
                state.local_busy.remove(&who.get_id());
            }
            SupervisionEvent::ActorTerminated(who, _, _) => {
                state.local_busy.remove(&who.get_id());
                // A job's supervisor that stopped (finished, or dropped):
                // let go of its reference.
                if let Some(id) = who.get_name().as_deref().and_then(JobId::from_actor_name) {
                    if let Some(entry) = state.jobs.get_mut(&id) {
                        entry.supervisor = None;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl GatewayState {
    /// Accepts a job: its supervisor starts, moves the input into the job's
    /// folder and answers `reply` once the record is on disk (off this
    /// actor, which every request goes through). On refusal,
    /// gives the reply port back with the reason.
    async fn submit(
        &mut self,
        myself: &ActorRef<GatewayMsg>,
        request: SubmitRequest,
        reply: SubmitReply,
    ) -> Result<(), (SubmitError, SubmitReply)> {
        if let Some(key) = &request.idempotency_key {
            if let Some((digest, id)) = self.idempotency.get(key) {
                let _ = std::fs::remove_file(&request.upload);
                if Some(*digest) != request.digest {
                    return Err((SubmitError::IdempotencyConflict, reply));
                }
                let (id, entry_bytes) = (*id, self.jobs.get(id).map_or(0, |e| e.bytes));
                if let Some(job) = self.snapshot(id).await {
                    let _ = reply.send(Ok(Submitted {
                        estimate: self.estimate(entry_bytes),
                        job,
                        created: false,
                    }));
                    return Ok(());
                }
            }
        }
        if self.draining {
            let _ = std::fs::remove_file(&request.upload);
            return Err((SubmitError::Draining, reply));
        }
        if self.board.cut_off() {
            // It could not run here before the cut heals; elsewhere it can.
            let _ = std::fs::remove_file(&request.upload);
            return Err((SubmitError::CutOff, reply));
        }
        if self.queue.len() >= self.args.queue_capacity {
            let _ = std::fs::remove_file(&request.upload);
            let retry_after = self.estimate(0);
            return Err((SubmitError::QueueFull { retry_after }, reply));
        }

        let standby = self.pick_standby();
        let id = JobId::with_standby(&self.args.node, standby.as_ref());
        let record = JobRecord {
            id,
            options: request.options,
            input_bytes: request.bytes,
            created_at_ms: record::to_ms(SystemTime::now()),
            idempotency_key: request.idempotency_key.clone(),
            digest: request
                .digest
                .as_ref()
                .map(|d| record::hex(d))
                .unwrap_or_default(),
            attempt: Attempt::default(),
            lost_attempts: 0,
            interrupted: 0,
            node: None,
            media: None,
            finished_at_ms: None,
            outcome: None,
            owner: Some(self.args.node.clone()),
            standby,
            epoch: Epoch::default(),
        };
        let supervisor = match self.spawn_supervisor(myself, record, true).await {
            Ok(supervisor) => supervisor,
            Err(e) => {
                let _ = std::fs::remove_file(&request.upload);
                return Err((e, reply));
            }
        };
        let estimate = self.estimate(request.bytes);
        if let (Some(key), Some(digest)) = (request.idempotency_key, request.digest) {
            self.idempotency.insert(key, (digest, id));
        }
        self.queue.push_back(id, request.bytes);
        info!(job_id = %id, node = %self.args.node, attempt = 0, bytes = request.bytes, "job accepted");
        let _ = supervisor.cast(SupervisorMsg::Accept {
            upload: request.upload,
            reply,
            estimate,
        });
        Ok(())
    }

    /// Starts the supervisor of a job and indexes it.
    async fn spawn_supervisor(
        &mut self,
        myself: &ActorRef<GatewayMsg>,
        record: JobRecord,
        fresh: bool,
    ) -> Result<ActorRef<SupervisorMsg>, SubmitError> {
        let id = record.id;
        let bytes = record.input_bytes;
        let status = match &record.outcome {
            None => JobStatus::Queued,
            Some(Outcome::Completed { .. }) => JobStatus::Completed,
            Some(Outcome::Failed { .. }) => JobStatus::Failed,
            Some(Outcome::Canceled) => JobStatus::Canceled,
        };
        let finished = record.finished_at_ms.map(|ms| {
            let age = SystemTime::now()
                .duration_since(record::from_ms(ms))
                .unwrap_or_default();
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
        });
        let standby_http = record
            .standby
            .as_ref()
            .and_then(|standby| self.http_of(standby));
        let args = SupervisorArgs {
            record,
            standby_http,
            view: self.args.cluster.as_ref().map(|c| c.view.clone()),
            board: self.board.clone(),
            fresh,
            transfer: self.args.transfer.clone(),
            data_dir: self.args.data_dir.clone(),
            gateway: myself.clone(),
            node: self.args.node.clone(),
            http: self.args.http.clone(),
            scope: self.args.scope.clone(),
        };
        let (supervisor, _) = Actor::spawn_linked(
            Some(id.actor_name()),
            JobSupervisor,
            args,
            myself.get_cell(),
        )
        .await
        .map_err(|e| SubmitError::Spawn(e.to_string()))?;
        self.jobs.insert(
            id,
            JobEntry {
                status,
                supervisor: Some(supervisor.clone()),
                bytes,
                finished: finished.filter(|_| status.is_terminal()),
            },
        );
        Ok(supervisor)
    }

    /// Brings back the jobs of a previous run from the data directory:
    /// finished ones to answer for, unfinished ones queued for a new attempt.
    async fn recover(&mut self, myself: &ActorRef<GatewayMsg>) {
        let Ok(dirs) = std::fs::read_dir(paths::jobs_dir(&self.args.data_dir)) else {
            return;
        };
        let mut records = Vec::new();
        for dir in dirs.flatten() {
            let path = dir.path().join("job.json");
            match JobRecord::read(&path) {
                Ok(record) => records.push(record),
                Err(e) => {
                    // Never acknowledged (no record): not a job.
                    warn!(path = %dir.path().display(), error = %e, "removing a job folder without a readable record");
                    let _ = std::fs::remove_dir_all(dir.path());
                }
            }
        }
        records.sort_by_key(|r| r.id);
        let (mut finished, mut resumed) = (0, 0);
        for record in records {
            let (id, key, digest) = (
                record.id,
                record.idempotency_key.clone(),
                record.digest.clone(),
            );
            let (unfinished, bytes, attempt) =
                (record.outcome.is_none(), record.input_bytes, record.attempt);
            if let Err(e) = self.spawn_supervisor(myself, record, false).await {
                error!(job_id = %id, node = %self.args.node, attempt = attempt.get(), error = %e, "cannot recover job");
                continue;
            }
            if let Some(key) = key {
                if let Some(digest) = unhex(&digest) {
                    self.idempotency.insert(key, (digest, id));
                }
            }
            if unfinished {
                self.queue.push_back(id, bytes);
                resumed += 1;
            } else {
                finished += 1;
            }
        }
        if finished + resumed > 0 {
            info!(node = %self.args.node, finished, resumed, "jobs recovered from disk");
        }
    }

    /// Returns the base URL of a member's HTTP API, if it is known.
    fn http_of(&self, node: &NodeName) -> Option<String> {
        let cluster = self.args.cluster.as_ref()?;
        let view = cluster.view.borrow();
        view.get(node).map(|m| m.http.clone())
    }

    /// Picks the standby of a new job: the next node after this one, by
    /// name, among those up; none when this node is alone.
    fn pick_standby(&self) -> Option<NodeName> {
        let cluster = self.args.cluster.as_ref()?;
        let view = cluster.view.borrow();
        let others: Vec<&NodeName> = view
            .up()
            .map(|m| &m.name)
            .filter(|n| **n != self.args.node)
            .collect();
        others
            .iter()
            .find(|n| ***n > self.args.node)
            .or(others.first())
            .map(|n| (*n).clone())
    }

    /// Takes over the jobs `owner` held and this node stands by for: their
    /// copies become this node's jobs under a new epoch, unfinished ones are
    /// queued for a new attempt.
    async fn take_over(&mut self, myself: &ActorRef<GatewayMsg>, owner: &NodeName) {
        if !self.sees_majority() {
            // Cut off from most of the cluster, this node cannot tell a dead
            // owner from its own isolation: taking over could run a job twice.
            warn!(node = %self.args.node, owner = %owner, "owner lost but no majority in sight: no takeover");
            return;
        }
        let Ok(dirs) = std::fs::read_dir(self.args.data_dir.join("replicas")) else {
            return;
        };
        for dir in dirs.flatten() {
            let Ok(mut record) = JobRecord::read(&dir.path().join("job.json")) else {
                continue;
            };
            if record.owner.as_ref() != Some(owner) || self.jobs.contains_key(&record.id) {
                continue;
            }
            let id = record.id;
            if matches!(record.outcome, Some(Outcome::Completed { .. }))
                && !dir.path().join(ReplicaFile::Result.name()).exists()
            {
                // The owner finished but could not copy the result here: the
                // job must run again to have one.
                warn!(job_id = %id, node = %self.args.node, attempt = record.attempt.get(), owner = %owner, "taken-over copy is completed without its result: running it again");
                record.outcome = None;
                record.finished_at_ms = None;
            }
            record.epoch = record.epoch.next();
            record.owner = Some(self.args.node.clone());
            record.standby = None;
            let target = paths::job_dir(&self.args.data_dir, id);
            let moved = std::fs::create_dir_all(paths::jobs_dir(&self.args.data_dir))
                .and_then(|()| std::fs::rename(dir.path(), &target))
                .and_then(|()| record.write(&paths::record(&self.args.data_dir, id)));
            if let Err(e) = moved {
                error!(job_id = %id, node = %self.args.node, attempt = record.attempt.get(), owner = %owner, error = %e, "cannot take the job over");
                continue;
            }
            let (epoch, unfinished, bytes, attempt) = (
                record.epoch,
                record.outcome.is_none(),
                record.input_bytes,
                record.attempt,
            );
            if let Err(e) = self.spawn_supervisor(myself, record, false).await {
                error!(job_id = %id, node = %self.args.node, attempt = attempt.get(), error = %e, "cannot start the taken-over job");
                continue;
            }
            self.taken_over.insert(id, (owner.clone(), epoch));
            if unfinished {
                // Accepted before anything queued here since: first in line.
                self.queue.push_front(id, bytes);
            }
            warn!(job_id = %id, owner = %owner, node = %self.args.node, attempt = attempt.get(), epoch = epoch.get(), "job taken over from a lost owner");
        }
    }

    /// Stops this node's attempts and its dispatching when it is cut off
    /// from nodes that could form a majority without it: they may take its
    /// jobs over, each with an attempt of its own (ractor_cluster has no
    /// fencing, so two live attempts of a job would run until the cut
    /// heals). Resumes dispatching once such a majority is in sight again.
    fn fence(&mut self) {
        let cut_off = self.args.cluster.as_ref().is_some_and(|cluster| {
            let view = cluster.view.borrow();
            let out_of_sight = view.members.len() - view.up().count();
            out_of_sight * 2 > view.members.len()
        });
        // The board holds the flag: polls read it there, and so does `pump`.
        if cut_off == self.board.cut_off() {
            return;
        }
        self.board.set_cut_off(cut_off);
        if cut_off {
            warn!(node = %self.args.node, "cut off from a possible majority: stopping this node's attempts");
            self.interrupt_local(None, "this node was cut off from the majority".into());
        } else {
            info!(node = %self.args.node, "a majority is in sight again: dispatching");
            self.pump();
        }
    }

    /// Tells this node's workers to stop their attempts for jobs of `owner`
    /// (of any owner with `None`).
    fn interrupt_local(&self, owner: Option<&NodeName>, reason: String) {
        for cell in self.workers_of(&self.args.node) {
            let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Interrupt {
                owner: owner.cloned(),
                reason: reason.clone(),
            });
        }
    }

    /// Returns whether this node sees more than half of the known nodes up
    /// (itself included).
    fn sees_majority(&self) -> bool {
        self.args.cluster.as_ref().is_none_or(|cluster| {
            let view = cluster.view.borrow();
            view.up().count() * 2 > view.members.len()
        })
    }

    /// Returns the known nodes that are down.
    fn down_members(&self) -> Vec<NodeName> {
        self.args.cluster.as_ref().map_or_else(Vec::new, |cluster| {
            let view = cluster.view.borrow();
            view.members
                .values()
                .filter(|m| m.state == MemberState::Down)
                .map(|m| m.name.clone())
                .collect()
        })
    }

    /// Tells a node that came back which of its jobs this node now owns.
    /// Where the former owner keeps its copy (it finished the job while this
    /// node's copy did not), this node's copy gives way instead.
    fn relinquish_to(&self, myself: &ActorRef<GatewayMsg>, node: &NodeName) {
        let Some(http) = self.http_of(node) else {
            return;
        };
        for (job, (owner, epoch)) in &self.taken_over {
            if owner != node {
                continue;
            }
            let finished = self.jobs.get(job).is_some_and(|e| e.status.is_terminal());
            let attempt = self
                .board
                .get(*job)
                .map_or(Attempt::default(), |published| published.attempt);
            let (transfer, http, job, epoch, myself, node) = (
                self.args.transfer.clone(),
                http.clone(),
                *job,
                *epoch,
                myself.clone(),
                self.args.node.clone(),
            );
            tokio::spawn(async move {
                match transfer.relinquish(&http, job, epoch, finished).await {
                    Ok(Relinquished::GaveWay) => {}
                    Ok(Relinquished::Kept) => {
                        let _ = myself.cast(GatewayMsg::FormerOwnerKept(job));
                    }
                    Err(e) => {
                        warn!(job_id = %job, node = %node, attempt = attempt.get(), error = %e, "cannot tell the former owner")
                    }
                }
            });
        }
    }

    /// Decides between this node's copy of a job and the copy another node
    /// took over under `epoch`: a finished copy wins over an unfinished one
    /// (running a finished job again would duplicate it), else the later
    /// epoch wins. Drops this node's copy if it loses; returns whether it
    /// was kept.
    async fn give_way(&mut self, job: JobId, epoch: Epoch, other_finished: bool) -> bool {
        if !self.jobs.contains_key(&job) {
            return false;
        }
        let Ok(record) = JobRecord::read(&paths::record(&self.args.data_dir, job)) else {
            return false;
        };
        let finished = record.outcome.is_some();
        if (finished, record.epoch) >= (other_finished, epoch) {
            if finished && !other_finished {
                info!(job_id = %job, node = %self.args.node, attempt = record.attempt.get(), epoch = record.epoch.get(), "job finished here: the copy taken over gives way");
                // The other node held the standby's copy: send it again
                // once that node has dropped its own.
                if let Some(standby) = record.standby.filter(|s| *s != self.args.node) {
                    self.resync_finished(&standby, vec![job], RESYNC_AFTER_YIELD);
                }
            }
            return true;
        }
        self.abandon(job).await;
        warn!(job_id = %job, node = %self.args.node, attempt = record.attempt.get(), epoch = epoch.get(), "job given up to the node that took it over");
        false
    }

    /// Returns the live supervisor of a job.
    fn supervisor(&self, id: JobId) -> Option<ActorRef<SupervisorMsg>> {
        self.jobs.get(&id)?.supervisor.clone()
    }

    /// Sends the standby `node` its copies of finished jobs (whose actors
    /// have stopped) from disk, after `delay`, in a task.
    fn resync_finished(&self, node: &NodeName, jobs: Vec<JobId>, delay: Duration) {
        let Some(http) = self.http_of(node) else {
            return;
        };
        let records: Vec<JobRecord> = jobs
            .into_iter()
            .filter_map(|id| JobRecord::read(&paths::record(&self.args.data_dir, id)).ok())
            .filter(|r| r.standby.as_ref() == Some(node))
            .collect();
        if records.is_empty() {
            return;
        }
        let (transfer, data_dir) = (self.args.transfer.clone(), self.args.data_dir.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for record in records {
                replication::resync(&*transfer, &http, &record, &data_dir).await;
            }
        });
    }

    /// Drops this node's unfinished copy of a job taken over from a former
    /// owner that kept its own, finished copy.
    async fn yield_to_owner(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get(&job) else {
            return;
        };
        if entry.status.is_terminal() {
            // Finished here too meanwhile: both copies stand, the same result.
            return;
        }
        let attempt = self
            .board
            .get(job)
            .map_or(Attempt::default(), |published| published.attempt);
        self.abandon(job).await;
        warn!(job_id = %job, node = %self.args.node, attempt = attempt.get(), "job given back to its former owner, which had finished it");
    }

    /// Drops this node's copy of a job held elsewhere: its attempt stops, its
    /// files go, its supervisor stops, all before this returns, so a request
    /// answered after it is routed to the other copy.
    async fn abandon(&mut self, job: JobId) {
        if let Some(supervisor) = self.supervisor(job) {
            // The supervisor never calls the gateway, so this cannot deadlock.
            let _ = ractor::call_t!(supervisor, SupervisorMsg::DropCopy, 5_000);
            let reason = Some("the job is held by another node".to_owned());
            let _ = supervisor.stop_and_wait(reason, Some(ABANDON_WAIT)).await;
        }
        // A finished job's actor had stopped already: its files go here.
        let _ = std::fs::remove_dir_all(paths::job_dir(&self.args.data_dir, job));
        self.forget(job);
    }

    /// Drops every trace of a job from the gateway's state.
    fn forget(&mut self, job: JobId) {
        self.board.remove(job);
        self.jobs.remove(&job);
        self.queue.remove(job);
        self.idempotency.retain(|_, (_, id)| *id != job);
        self.taken_over.remove(&job);
        self.unsynced.remove(&job);
    }

    /// Removes finished jobs older than the retention, with their files.
    fn sweep(&mut self) {
        let retention = self.args.retention;
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.finished.is_some_and(|t| t.elapsed() >= retention))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some(supervisor) = self.supervisor(*id) {
                supervisor.stop(Some("retention expired".into()));
            }
            self.forget(*id);
            let _ = std::fs::remove_dir_all(paths::job_dir(&self.args.data_dir, *id));
        }
        if !expired.is_empty() {
            info!(node = %self.args.node, removed = expired.len(), "finished jobs past retention removed");
        }
        self.sweep_replicas();
    }

    /// Removes the copies this node keeps for others once their job has been
    /// finished for longer than the retention (the record's last write is
    /// its finish); copies of unfinished jobs stay.
    fn sweep_replicas(&self) {
        let Ok(dirs) = std::fs::read_dir(self.args.data_dir.join("replicas")) else {
            return;
        };
        for dir in dirs.flatten() {
            let record = dir.path().join("job.json");
            let age = std::fs::metadata(&record)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            let expired = age.is_some_and(|age| age >= self.args.retention)
                && JobRecord::read(&record).is_ok_and(|r| r.outcome.is_some());
            // A folder that never got a record within the hour is debris of
            // a copy that did not complete (the input arrives first).
            let debris = age.is_none()
                && std::fs::metadata(dir.path())
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= DEBRIS_AGE);
            if expired || debris {
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
    }

    /// Returns a job's snapshot: from the board, or, for a job still being
    /// accepted (not on the board yet), from its supervisor once accepted.
    async fn snapshot(&self, id: JobId) -> Option<JobSnapshot> {
        if let Some(job) = self.board.get(id) {
            return Some(JobSnapshot::clone(&job));
        }
        // The supervisor never calls the gateway, so this cannot deadlock.
        ractor::call_t!(self.supervisor(id)?, SupervisorMsg::GetSnapshot, 5_000).ok()
    }

    /// Estimates how long a job of `bytes` takes from now: the queue ahead
    /// spread over the workers, then the job itself.
    fn estimate(&self, bytes: u64) -> Duration {
        let queued = self.queue.bytes();
        let workers = self
            .free_slots()
            .iter()
            .map(|(node, _, _)| self.workers_of(node).len())
            .sum::<usize>()
            .max(1) as f64;
        let seconds = self.seconds_per_byte * (queued as f64 / workers + bytes as f64);
        Duration::from_secs_f64(seconds.clamp(1.0, 86_400.0))
    }

    fn workers_of(&self, node: &NodeName) -> Vec<ActorCell> {
        ractor::pg::get_scoped_members(&self.args.scope, &workers_group(node))
    }

    fn stats(&self) -> NodeStats {
        // One pass over the jobs: the variants index `JobStatus::ALL`.
        let mut counts = [0; JobStatus::ALL.len()];
        for entry in self.jobs.values() {
            counts[entry.status as usize] += 1;
        }
        let jobs: Vec<(JobStatus, usize)> = JobStatus::ALL.into_iter().zip(counts).collect();
        let (workers, busy, queued) = self.load();
        NodeStats {
            node: self.args.node.clone(),
            workers,
            busy,
            queued,
            active: jobs
                .iter()
                .filter(|(status, _)| !status.is_terminal())
                .map(|(_, n)| n)
                .sum(),
            draining: self.draining,
            unsynced: self.unsynced_standbys_up(),
            jobs,
        }
    }

    /// Counts the jobs whose standby is up and lacks their latest record.
    fn unsynced_standbys_up(&self) -> usize {
        let Some(cluster) = &self.args.cluster else {
            return 0;
        };
        let view = cluster.view.borrow();
        self.unsynced
            .values()
            .filter(|standby| {
                view.get(standby)
                    .is_some_and(|m| m.state != MemberState::Down)
            })
            .count()
    }

    /// Returns this node's worker slots, the busy ones and the queue length.
    fn load(&self) -> (usize, usize, usize) {
        (
            self.workers_of(&self.args.node).len(),
            self.local_busy.len(),
            self.queue.len(),
        )
    }

    /// Publishes this node's load for the heartbeats, when it changed.
    fn publish_load(&self) {
        let Some(cluster) = &self.args.cluster else {
            return;
        };
        // Not `stats()`, which goes over every job: this runs at every
        // dispatch and dequeue.
        let (workers, busy, queued) = self.load();
        let load = crate::protocol::gateway::node_load(workers, busy, queued);
        cluster.load.send_if_modified(|current| {
            let changed = *current != load;
            *current = load;
            changed
        });
    }

    /// Returns, per node, the workers this gateway may hand out now and how
    /// many slots the node has free: this node first, then the others that
    /// are up, each judged by the load its heartbeats report.
    fn free_slots(&self) -> Vec<(NodeName, usize, Vec<ActorCell>)> {
        let usable = |cells: Vec<ActorCell>| -> Vec<ActorCell> {
            cells
                .into_iter()
                .filter(|w| {
                    let id = w.get_id();
                    !self.busy.contains(&id)
                        && !self.local_busy.contains(&id)
                        && !self.cooldown.contains_key(&id)
                })
                .collect()
        };
        let me = &self.args.node;
        let local = usable(self.workers_of(me));
        let mut nodes = vec![(me.clone(), local.len(), local)];
        if let Some(cluster) = &self.args.cluster {
            let view = cluster.view.borrow().clone();
            for member in view.up().filter(|m| &m.name != me) {
                let workers = usable(self.workers_of(&member.name));
                let reported = member.load.workers.saturating_sub(member.load.busy) as usize;
                nodes.push((member.name.clone(), workers.len().min(reported), workers));
            }
        }
        nodes
    }

    /// Hands free worker slots to the jobs at the head of the queue, each to
    /// the node with the most free slots (this node on a tie).
    fn pump(&mut self) {
        // Cut off, an attempt started here could run beside the one the
        // majority starts after taking the job over.
        if !self.queue.is_empty() && !self.board.cut_off() {
            let mut nodes = self.free_slots();
            while let Some(id) = self.queue.front() {
                let Some(entry) = self.jobs.get(&id) else {
                    self.queue.pop_front();
                    continue;
                };
                let best = nodes
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, (_, free, workers))| *free > 0 && !workers.is_empty())
                    .max_by_key(|(i, (_, free, _))| (*free, std::cmp::Reverse(*i)))
                    .map(|(_, node)| node);
                let Some((node, free, workers)) = best else {
                    break;
                };
                let Some(cell) = workers.pop() else { break };
                *free -= 1;
                self.queue.pop_front();
                let worker: ActorRef<WorkerMsg> = cell.into();
                let dispatch = SupervisorMsg::Dispatch {
                    worker: worker.clone(),
                    node: node.clone(),
                };
                let Some(supervisor) = &entry.supervisor else {
                    self.queue.pop_front();
                    continue;
                };
                if supervisor.cast(dispatch).is_err() {
                    let attempt = self
                        .board
                        .get(id)
                        .map_or(Attempt::default(), |published| published.attempt);
                    warn!(job_id = %id, node = %self.args.node, attempt = attempt.get(), "job supervisor gone before dispatch");
                    continue;
                }
                self.busy.insert(worker.get_id());
                self.running.insert(
                    id,
                    Slot {
                        worker,
                        node: node.clone(),
                    },
                );
            }
        }
        self.publish_load();
    }
}
