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
//!
//! This module holds the actor, its arguments and its state; `handle` is a
//! table that passes each message to the module owning its concern. Each
//! module keeps its decisions as pure functions over plain data, tested
//! beside them, and applies them to the state:
//!
//! | message | module |
//! | --- | --- |
//! | `Submit` | `admission` |
//! | `List`, `Stats`, `StatusChanged`, `Report`, `Synced`, `DropUnaccepted` | `index` |
//! | `SlotFreed`, `WorkerBusy`, `DispatchFailed`, `AttemptLost`, `CanceledWhileQueued`, `Drain`, `Tick` | `scheduler` (`Tick` also `retention`) |
//! | `NodeDown`, `NodeUp`, `TakeOverDown`, `KeepCancel` | `failover` |
//! | `CompareCopies`, `FormerOwnerKept`, `Stalled`, `TakenOverMeanwhile` | `copies` |
//! | children's ends (supervision events) | `supervision` |
//!
//! `slots` holds the scheduler's pure choice of the next worker;
//! `recovery` brings the jobs of a previous run back in `pre_start`;
//! `estimate` makes the time estimates that submissions answer with.

mod admission;
mod copies;
mod estimate;
mod failover;
mod index;
mod recovery;
mod retention;
mod scheduler;
mod slots;
mod supervision;

pub use admission::standby_among;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tracing::info;
use vidpress_cluster::{ClusterView, NodeLoad, NodeName};
use vidpress_transcode::driver::ChildCommand;

use crate::probe::Prober;
use vidpress_transcode::Limits;

use crate::board::Board;
use crate::commit::Committer;
use crate::counters::Epoch;
use crate::inputs::FetchedInputs;
use crate::job::{JobId, JobStatus};
use crate::paths;
use crate::protocol::{
    all_workers_of, gateway_group, spares_group, workers_group, GatewayMsg, SupervisorMsg,
    WorkerMsg,
};
use crate::queue::JobQueue;
use crate::supervisor::SplitPolicy;
use crate::tenant::Tenant;
use crate::transfer::Transfer;
use crate::worker::{WorkerActor, WorkerArgs};

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
    /// Spare workers to start on this node besides: they run only the jobs
    /// whose attempt was lost, when every other slot is busy, so such a job
    /// runs again at once, as it ran before its node failed.
    pub spare_workers: usize,
    /// Jobs that may wait for a slot before submissions get 503.
    pub queue_capacity: usize,
    /// Jobs one tenant may have queued or running here at once (0: no limit).
    pub tenant_max_active: usize,
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
    /// Which videos are cut into segments encoded on many workers at once.
    pub split: SplitPolicy,
}

/// A worker slot held by a job.
struct Slot {
    worker: ActorRef<WorkerMsg>,
    node: NodeName,
}

/// What the gateway knows of a job owned here.
struct JobEntry {
    status: JobStatus,
    /// `None` once a finished job's actor stopped (its snapshot is on the
    /// board): holding the reference would keep the actor's memory.
    supervisor: Option<ActorRef<SupervisorMsg>>,
    bytes: u64,
    /// When the job reached a terminal state.
    finished: Option<Instant>,
    /// Whose job it is: listings, quotas and the fair queue go by it.
    tenant: Option<Tenant>,
}

pub struct GatewayState {
    args: GatewayArgs,
    /// Probes the inputs of new jobs, a few at a time.
    prober: Prober,
    /// Makes new jobs durable, many at once (shared by the supervisors).
    committer: Committer,
    /// Inputs of other nodes' split jobs, fetched for their pieces.
    inputs: Arc<FetchedInputs>,
    /// Where supervisors publish their snapshots.
    board: Arc<Board>,
    jobs: BTreeMap<JobId, JobEntry>,
    queue: JobQueue,
    /// Slots this gateway handed out, by job (a split job holds one a
    /// piece it runs).
    running: HashMap<JobId, Vec<Slot>>,
    /// Workers (anywhere) holding a slot this gateway handed out.
    busy: HashSet<ActorId>,
    /// This node's workers running an attempt for any node.
    local_busy: HashSet<ActorId>,
    /// This node's spare workers.
    spares: HashSet<ActorId>,
    /// Jobs owned here whose attempt was lost, until an attempt of theirs
    /// ends or is lost again: when queued, they wait in the line before
    /// every tenant's, and may take a spare worker.
    recovering: HashSet<JobId>,
    /// Workers that refused an assignment, until when they are skipped.
    cooldown: HashMap<ActorId, Instant>,
    /// Shutting down: no new jobs, no new attempts here.
    draining: bool,
    /// Jobs this node took over, with their former owner and the new epoch.
    taken_over: HashMap<JobId, (NodeName, Epoch)>,
    /// Jobs owned here whose standby lacks the latest record, with the standby.
    unsynced: HashMap<JobId, NodeName>,
    next_sweep: Instant,
    /// Idempotency keys by tenant and key, with their body's digest and job.
    idempotency: HashMap<(Option<Tenant>, String), ([u8; 32], JobId)>,
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
        let inputs = Arc::new(FetchedInputs::new(paths::fetched_inputs_dir(
            &args.data_dir,
        )));
        for _ in 0..args.workers {
            spawn_worker(&myself, &args, &inputs, WorkerKind::Regular).await?;
        }
        let mut spares = HashSet::new();
        for _ in 0..args.spare_workers {
            let spare = spawn_worker(&myself, &args, &inputs, WorkerKind::Spare).await?;
            spares.insert(spare.get_id());
        }
        myself.send_interval(scheduler::PUMP_EVERY, || GatewayMsg::Tick);
        info!(node = %args.node, workers = args.workers, spare_workers = args.spare_workers, "gateway started");
        let mut state = GatewayState {
            prober: Prober::new(args.command.clone(), args.limits, args.stall_timeout),
            committer: Committer::start(),
            inputs,
            args,
            board,
            jobs: BTreeMap::new(),
            queue: JobQueue::default(),
            running: HashMap::new(),
            busy: HashSet::new(),
            local_busy: HashSet::new(),
            spares,
            recovering: HashSet::new(),
            cooldown: HashMap::new(),
            draining: false,
            taken_over: HashMap::new(),
            unsynced: HashMap::new(),
            next_sweep: Instant::now(),
            idempotency: HashMap::new(),
            seconds_per_byte: estimate::INITIAL_SECONDS_PER_BYTE,
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
            GatewayMsg::Submit(request, reply) => state.on_submit(&myself, *request, reply).await,
            GatewayMsg::DropUnaccepted(id) => state.forget(id),
            GatewayMsg::KeepCancel(id, reply) => {
                let _ = reply.send(state.keep_cancel(id).await);
            }
            GatewayMsg::List {
                status,
                tenant,
                before,
                limit,
                reply,
            } => state.on_list(status, tenant, before, limit, reply),
            GatewayMsg::Stats(reply) => state.on_stats(reply),
            GatewayMsg::Report {
                job,
                attempt,
                report,
            } => state.route_report(job, attempt, report),
            GatewayMsg::StatusChanged { id, status, ran } => state.status_changed(id, status, ran),
            GatewayMsg::SlotFreed {
                job,
                worker,
                rejected,
            } => state.slot_freed(job, worker, rejected),
            GatewayMsg::WorkerBusy { worker, busy } => state.worker_busy(worker, busy),
            GatewayMsg::DispatchFailed(id) => state.dispatch_failed(id),
            GatewayMsg::AttemptLost(id) => state.attempt_lost(id),
            GatewayMsg::CanceledWhileQueued(id) => state.canceled_while_queued(id),
            GatewayMsg::Drain => state.drain(),
            GatewayMsg::Tick => state.tick(),
            GatewayMsg::NodeDown(node) => state.node_down(&myself, &node).await,
            GatewayMsg::NodeUp(node) => state.node_up(&myself, &node),
            GatewayMsg::TakeOverDown => state.take_over_down(&myself).await,
            GatewayMsg::CompareCopies {
                job,
                epoch,
                finished,
                reply,
            } => {
                let _ = reply.send(state.keeps_own_copy(job, epoch, finished).await);
            }
            GatewayMsg::FormerOwnerKept(job) => {
                state
                    .give_way(
                        job,
                        "job given back to its former owner, which had finished it",
                    )
                    .await
            }
            GatewayMsg::Stalled => state.ask_standbys(&myself),
            GatewayMsg::TakenOverMeanwhile(job) => {
                state
                    .give_way(
                        job,
                        "job given up to its standby, which took it over while this node stalled",
                    )
                    .await
            }
            GatewayMsg::Synced {
                job,
                standby,
                synced,
            } => state.synced(job, standby, synced),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A child's end must not stop the gateway (ractor's default would).
        state.child_event(&myself, event).await;
        Ok(())
    }
}

/// Which of a node's workers one is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorkerKind {
    /// One of the node's slots, for any job.
    Regular,
    /// Held back for jobs whose attempt was lost.
    Spare,
}

/// Starts one of this node's workers, linked to the gateway.
async fn spawn_worker(
    myself: &ActorRef<GatewayMsg>,
    args: &GatewayArgs,
    inputs: &Arc<FetchedInputs>,
    kind: WorkerKind,
) -> Result<ActorRef<WorkerMsg>, ractor::SpawnErr> {
    let group = match kind {
        WorkerKind::Regular => workers_group(&args.node),
        WorkerKind::Spare => spares_group(&args.node),
    };
    let worker_args = WorkerArgs {
        node: args.node.clone(),
        data_dir: args.data_dir.clone(),
        command: args.command.clone(),
        stall_timeout: args.stall_timeout,
        limits: args.limits,
        scope: args.scope.clone(),
        group,
        transfer: args.transfer.clone(),
        gateway: myself.clone(),
        inputs: inputs.clone(),
    };
    let (worker, _) =
        Actor::spawn_linked(None, WorkerActor, worker_args, myself.get_cell()).await?;
    Ok(worker)
}

impl GatewayState {
    /// Returns the live supervisor of a job.
    fn supervisor(&self, id: JobId) -> Option<ActorRef<SupervisorMsg>> {
        self.jobs.get(&id)?.supervisor.clone()
    }

    /// Returns the workers of `node`, as its process group has them now
    /// (spares aside).
    fn workers_of(&self, node: &NodeName) -> Vec<ActorCell> {
        ractor::pg::get_scoped_members(&self.args.scope, &workers_group(node))
    }

    /// Returns every worker of this node, spares too.
    fn local_workers(&self) -> Vec<ActorCell> {
        all_workers_of(&self.args.scope, &self.args.node)
    }

    /// Returns the spare workers of `node`, as their process group has
    /// them now.
    fn spares_of(&self, node: &NodeName) -> Vec<ActorCell> {
        ractor::pg::get_scoped_members(&self.args.scope, &spares_group(node))
    }

    /// Returns the base URL of a member's HTTP API, if it is known.
    fn http_of(&self, node: &NodeName) -> Option<String> {
        let cluster = self.args.cluster.as_ref()?;
        let view = cluster.view.borrow();
        view.get(node).map(|m| m.http.clone())
    }
}
