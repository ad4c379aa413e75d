//! The Gateway actor: one per node, the front door behind the HTTP layer.
//!
//! It accepts jobs (spawning one `JobSupervisor` each), enforces idempotency
//! keys, holds the bounded queue of jobs waiting for a worker slot, hands
//! slots to supervisors as workers of the process group become free, and
//! keeps a small index of job statuses for listing. Job state itself stays in
//! the supervisors.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tracing::{error, info, warn};
use vidpress_cluster::NodeName;
use vidpress_transcode::driver::ChildCommand;
use vidpress_transcode::EncodeOptions;

use crate::job::{JobId, JobSnapshot, JobStatus};
use crate::supervisor::{JobSupervisor, SupervisorArgs, SupervisorMsg};
use crate::worker::{WorkerActor, WorkerArgs, WorkerMsg, WORKER_GROUP};

/// Until a job has been measured, assume one second per megabyte of input.
const INITIAL_SECONDS_PER_BYTE: f64 = 1e-6;
/// Weight of the newest measurement in the moving average of speed.
const SPEED_WEIGHT: f64 = 0.3;

/// An upload already on local disk, waiting to become a job.
#[derive(Debug)]
pub struct SubmitRequest {
    /// The uploaded file; the gateway moves it into the job's folder.
    pub upload: PathBuf,
    pub bytes: u64,
    /// SHA-256 of the upload, to tell a retried request from a different one.
    pub digest: [u8; 32],
    pub options: EncodeOptions,
    pub idempotency_key: Option<String>,
}

/// An accepted job.
#[derive(Debug)]
pub struct Submitted {
    pub job: JobSnapshot,
    /// Estimated time until the job is done.
    pub estimate: Duration,
    /// False when an idempotency key matched an earlier job.
    pub created: bool,
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the queue is full")]
    QueueFull { retry_after: Duration },
    #[error("the idempotency key was used with a different body")]
    IdempotencyConflict,
    #[error("the upload could not be stored: {0}")]
    Storage(String),
    #[error("the job could not be started: {0}")]
    Spawn(String),
}

/// Load figures of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStats {
    pub node: NodeName,
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
}

/// Messages the gateway handles.
pub enum GatewayMsg {
    /// Accepts a job, or says why not.
    Submit(
        Box<SubmitRequest>,
        RpcReplyPort<Result<Submitted, SubmitError>>,
    ),
    /// Replies with job IDs, newest first, optionally of one status and
    /// older than `before`.
    List {
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
        reply: RpcReplyPort<Vec<JobId>>,
    },
    /// Replies with this node's load.
    Stats(RpcReplyPort<NodeStats>),
    /// A worker is free again (from the worker, or a slot handed back).
    WorkerIdle(ActorRef<WorkerMsg>),
    /// A job's status changed; `ran` gives input bytes and run time of a
    /// completed job, to refine estimates.
    StatusChanged {
        id: JobId,
        status: JobStatus,
        ran: Option<(u64, Duration)>,
    },
    /// A queued job was canceled: drop it from the queue.
    Dequeue(JobId),
    /// A job's dispatch failed: put it back at the head of the queue.
    Requeue(JobId),
}

/// How a node's actors are set up.
#[derive(Clone, Debug)]
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
    /// Process-group scope shared by the nodes of one cluster.
    pub scope: String,
}

struct JobEntry {
    status: JobStatus,
    supervisor: ActorRef<SupervisorMsg>,
    bytes: u64,
}

pub struct GatewayState {
    args: GatewayArgs,
    jobs: BTreeMap<JobId, JobEntry>,
    queue: VecDeque<JobId>,
    busy: HashSet<ActorId>,
    idempotency: HashMap<String, ([u8; 32], JobId)>,
    seconds_per_byte: f64,
}

/// The node's front door.
pub struct Gateway;

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: GatewayArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        std::fs::create_dir_all(args.data_dir.join("jobs"))?;
        for _ in 0..args.workers {
            let worker_args = WorkerArgs {
                node: args.node.clone(),
                gateway: myself.clone(),
                command: args.command.clone(),
                stall_timeout: args.stall_timeout,
                scope: args.scope.clone(),
            };
            Actor::spawn_linked(None, WorkerActor, worker_args, myself.get_cell()).await?;
        }
        info!(node = %args.node, workers = args.workers, "gateway started");
        Ok(GatewayState {
            args,
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            busy: HashSet::new(),
            idempotency: HashMap::new(),
            seconds_per_byte: INITIAL_SECONDS_PER_BYTE,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMsg::Submit(request, reply) => {
                let result = state.submit(&myself, *request).await;
                let _ = reply.send(result);
                state.pump();
            }
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
            GatewayMsg::WorkerIdle(worker) => {
                state.busy.remove(&worker.get_id());
                state.pump();
            }
            GatewayMsg::StatusChanged { id, status, ran } => {
                if let Some(entry) = state.jobs.get_mut(&id) {
                    entry.status = status;
                }
                if let Some((bytes, took)) = ran.filter(|(b, _)| *b > 0) {
                    let measured = took.as_secs_f64() / bytes as f64;
                    state.seconds_per_byte =
                        SPEED_WEIGHT * measured + (1.0 - SPEED_WEIGHT) * state.seconds_per_byte;
                }
            }
            GatewayMsg::Dequeue(id) => state.queue.retain(|q| *q != id),
            GatewayMsg::Requeue(id) => {
                state.queue.push_front(id);
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
                state.busy.remove(&who.get_id());
            }
            SupervisionEvent::ActorTerminated(who, _, _) => {
                state.busy.remove(&who.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl GatewayState {
    async fn submit(
        &mut self,
        myself: &ActorRef<GatewayMsg>,
        request: SubmitRequest,
    ) -> Result<Submitted, SubmitError> {
        if let Some(key) = &request.idempotency_key {
            if let Some((digest, id)) = self.idempotency.get(key) {
                let _ = std::fs::remove_file(&request.upload);
                if *digest != request.digest {
                    return Err(SubmitError::IdempotencyConflict);
                }
                let (id, entry_bytes) = (*id, self.jobs.get(id).map_or(0, |e| e.bytes));
                if let Some(job) = self.snapshot(id).await {
                    return Ok(Submitted {
                        estimate: self.estimate(entry_bytes),
                        job,
                        created: false,
                    });
                }
            }
        }
        if self.queue.len() >= self.args.queue_capacity {
            let _ = std::fs::remove_file(&request.upload);
            return Err(SubmitError::QueueFull {
                retry_after: self.estimate(0),
            });
        }

        let id = JobId::new();
        let dir = self.args.data_dir.join("jobs").join(id.to_string());
        let stored = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::rename(&request.upload, dir.join("input")));
        if let Err(e) = stored {
            let _ = std::fs::remove_file(&request.upload);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(SubmitError::Storage(e.to_string()));
        }
        let args = SupervisorArgs {
            id,
            options: request.options,
            dir,
            input_bytes: request.bytes,
            gateway: myself.clone(),
        };
        let (supervisor, _) = Actor::spawn_linked(
            Some(id.actor_name()),
            JobSupervisor,
            args,
            myself.get_cell(),
        )
        .await
        .map_err(|e| SubmitError::Spawn(e.to_string()))?;
        let estimate = self.estimate(request.bytes);
        self.jobs.insert(
            id,
            JobEntry {
                status: JobStatus::Queued,
                supervisor: supervisor.clone(),
                bytes: request.bytes,
            },
        );
        if let Some(key) = request.idempotency_key {
            self.idempotency.insert(key, (request.digest, id));
        }
        self.queue.push_back(id);
        info!(job_id = %id, node = %self.args.node, bytes = request.bytes, "job accepted");
        let job = self
            .snapshot(id)
            .await
            .ok_or_else(|| SubmitError::Spawn("the job supervisor did not answer".into()))?;
        Ok(Submitted {
            job,
            estimate,
            created: true,
        })
    }

    async fn snapshot(&self, id: JobId) -> Option<JobSnapshot> {
        let entry = self.jobs.get(&id)?;
        // The supervisor never calls the gateway, so this cannot deadlock.
        ractor::call_t!(entry.supervisor, SupervisorMsg::GetSnapshot, 5_000).ok()
    }

    /// Estimates how long a job of `bytes` takes from now: the queue ahead
    /// spread over the workers, then the job itself.
    fn estimate(&self, bytes: u64) -> Duration {
        let queued: u64 = self
            .queue
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|e| e.bytes)
            .sum();
        let workers = self.workers().len().max(1) as f64;
        let seconds = self.seconds_per_byte * (queued as f64 / workers + bytes as f64);
        Duration::from_secs_f64(seconds.clamp(1.0, 86_400.0))
    }

    fn workers(&self) -> Vec<ActorCell> {
        ractor::pg::get_scoped_members(&self.args.scope, &WORKER_GROUP.to_owned())
    }

    fn stats(&self) -> NodeStats {
        NodeStats {
            node: self.args.node.clone(),
            workers: self.workers().len(),
            busy: self.busy.len(),
            queued: self.queue.len(),
        }
    }

    /// Hands free worker slots to the jobs at the head of the queue.
    fn pump(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let free: Vec<ActorCell> = self
            .workers()
            .into_iter()
            .filter(|w| !self.busy.contains(&w.get_id()))
            .collect();
        let mut free = free.into_iter();
        while let Some(id) = self.queue.front().copied() {
            let Some(entry) = self.jobs.get(&id) else {
                self.queue.pop_front();
                continue;
            };
            let Some(worker) = free.next() else { break };
            self.queue.pop_front();
            let worker: ActorRef<WorkerMsg> = worker.into();
            self.busy.insert(worker.get_id());
            let dispatch = SupervisorMsg::Dispatch {
                worker: worker.clone(),
                node: self.args.node.clone(),
            };
            if entry.supervisor.cast(dispatch).is_err() {
                warn!(job_id = %id, "job supervisor gone before dispatch");
                self.busy.remove(&worker.get_id());
            }
        }
    }
}
impl ractor::Message for GatewayMsg {}
