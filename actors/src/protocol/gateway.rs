//! What the gateway is told: by the HTTP layer (through `Jobs`), by its
//! supervisors, by workers of any node.

use std::path::PathBuf;
use std::time::Duration;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{ActorId, RpcReplyPort};
use serde::{Deserialize, Serialize};
use vidpress_cluster::{wire, NodeLoad, NodeName};
use vidpress_transcode::EncodeOptions;

use super::worker::AttemptReport;
use crate::counters::{Attempt, Epoch};
use crate::job::{JobId, JobSnapshot, JobStatus};
use crate::tenant::Tenant;

/// An upload already on local disk, waiting to become a job.
#[derive(Debug)]
pub struct SubmitRequest {
    /// The uploaded file; the gateway moves it into the job's folder.
    pub upload: PathBuf,
    pub bytes: u64,
    /// SHA-256 of the upload, to tell a retried request from a different
    /// one; computed when there is an idempotency key.
    pub digest: Option<[u8; 32]>,
    pub options: EncodeOptions,
    /// Scoped to the tenant: another tenant's same key is another key.
    pub idempotency_key: Option<String>,
    /// Who submits it; `None` on a node without API keys.
    pub tenant: Option<Tenant>,
    /// The copy of the input its standby already holds, streamed there
    /// during the upload; `None` when it was not (the input is then copied
    /// after the upload, before the 202).
    pub copied: Option<CopiedInput>,
}

/// An input copied to a standby while it was uploaded: durable there,
/// under the job ID minted for it before the upload, whose standby tag
/// names that node.
#[derive(Clone, Debug)]
pub struct CopiedInput {
    pub id: JobId,
    pub standby: NodeName,
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
    #[error("the tenant has {limit} jobs queued or running, its most at once")]
    TenantBusy { limit: usize, retry_after: Duration },
    #[error("the idempotency key was used with a different body")]
    IdempotencyConflict,
    #[error("the upload could not be stored: {0}")]
    Storage(String),
    #[error("the job could not be started: {0}")]
    Spawn(String),
    #[error("the node is shutting down")]
    Draining,
    #[error("the node is cut off from the majority of its cluster")]
    CutOff,
    #[error("the job could not be copied to its standby: {0}")]
    Replication(String),
}

/// Load figures of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStats {
    pub node: NodeName,
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
    /// Spare workers free (held back for jobs whose attempt was lost).
    pub spare: usize,
    /// Spare workers running an attempt (not counted in `busy`).
    pub spare_busy: usize,
    /// Jobs owned here that are not terminal yet.
    pub active: usize,
    /// The node is shutting down and takes no new work.
    pub draining: bool,
    /// Jobs owned here whose standby is up but lacks their latest record.
    pub unsynced: usize,
    /// Jobs owned here by status, every status listed.
    pub jobs: Vec<(JobStatus, usize)>,
}

impl NodeStats {
    /// Returns the load figures as heartbeats carry them.
    pub fn load(&self) -> NodeLoad {
        node_load(self.workers, self.busy, self.queued, self.spare)
    }
}

/// Returns a node's load in its wire form (counts saturate at `u32::MAX`).
pub(crate) fn node_load(workers: usize, busy: usize, queued: usize, spare: usize) -> NodeLoad {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    NodeLoad {
        workers: count(workers),
        busy: count(busy),
        queued: count(queued),
        spare: count(spare),
    }
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
        /// Only this tenant's jobs; every job when `None`.
        tenant: Option<Tenant>,
        before: Option<JobId>,
        limit: usize,
        reply: RpcReplyPort<Vec<JobId>>,
    },
    /// Replies with this node's load.
    Stats(RpcReplyPort<NodeStats>),
    /// A worker's report on an attempt of a job this node owns, from any node.
    Report {
        job: JobId,
        attempt: Attempt,
        report: AttemptReport,
    },
    /// A worker slot of the job is free again: the one of `worker`, or
    /// (`None`) every slot the job holds; `rejected` when the worker
    /// refused the assignment (it is then skipped for a while).
    SlotFreed {
        job: JobId,
        worker: Option<ActorId>,
        rejected: bool,
    },
    /// A worker of this node started (`true`) or ended (`false`) an attempt.
    WorkerBusy { worker: ActorId, busy: bool },
    /// A node is down: its attempts must run elsewhere, and the jobs it owned
    /// that this node stands by for are taken over.
    NodeDown(NodeName),
    /// A node is up again: jobs taken over from it are relinquished there.
    NodeUp(NodeName),
    /// Another node took this job over under `epoch`, and its copy is
    /// `finished` or not. This node's copy is kept if it is finished and the
    /// other is not, or if both are alike and its epoch is the same or later;
    /// else it gives way. Replies whether it was kept.
    CompareCopies {
        job: JobId,
        epoch: Epoch,
        finished: bool,
        reply: RpcReplyPort<bool>,
    },
    /// The former owner of a job this node took over kept its copy (it had
    /// finished the job): this node's unfinished copy gives way.
    FormerOwnerKept(JobId),
    /// This node stalled: the standbys of its unfinished jobs are asked
    /// whether they took them over meanwhile.
    Stalled,
    /// The standby of a job owned here took it over while this node was
    /// stalled, and kept its copy: this node's gives way.
    TakenOverMeanwhile(JobId),
    /// Whether the standby of a job owned here holds its latest record.
    Synced {
        job: JobId,
        standby: NodeName,
        synced: bool,
    },
    /// Periodic: look for free workers across the cluster.
    Tick,
    /// Sent a rejoin window after a node came back: takes over the jobs of
    /// nodes still down and dispatches again, if a majority is in sight.
    TakeOverDown,
    /// Stops taking new jobs and stops this node's workers from taking new
    /// attempts; queued jobs go to workers on other nodes.
    Drain,
    /// A job's status changed; `ran` gives input bytes and run time of a
    /// completed job, to refine estimates.
    StatusChanged {
        id: JobId,
        status: JobStatus,
        ran: Option<(u64, Duration)>,
    },
    /// A queued job was canceled: drop it from the queue.
    CanceledWhileQueued(JobId),
    /// A job could not be stored and was never accepted: drop every trace.
    DropUnaccepted(JobId),
    /// A cancel asked of this node's copy of a job (its owner lost, the
    /// takeover not done): kept beside the copy, in turn with takeovers,
    /// so that the takeover carries it out. Replies how it went.
    KeepCancel(JobId, RpcReplyPort<KeptCancel>),
    /// A job's dispatch failed, or a split job has more pieces to run than
    /// slots: put it back at the head of the queue (for one more slot).
    DispatchFailed(JobId),
    /// A job's attempt was lost (its worker's node died, froze, was cut off
    /// or shut down): it goes first in line, and may run on a spare worker
    /// when every other slot is busy.
    AttemptLost(JobId),
}

/// What became of a cancel asked of a job's copy ([`GatewayMsg::KeepCancel`]).
#[derive(Debug)]
pub enum KeptCancel {
    /// Kept durably beside the copy: the supervisor that takes the job
    /// over cancels it.
    Kept,
    /// The job was taken over already: it is canceled as this node's own.
    TakenOver,
    /// No copy of the job is here any more.
    NoCopy,
    /// It could not be written.
    Failed(String),
}

/// The variants other nodes may send, in their wire form. Append only: a
/// node that cannot decode a newer variant drops that message.
#[derive(Serialize, Deserialize)]
enum GatewayWire {
    Report {
        job: JobId,
        attempt: Attempt,
        report: AttemptReport,
    },
}

impl ractor::Message for GatewayMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Self::Report {
                job,
                attempt,
                report,
            } => wire::encode_cast(
                "gateway.v1",
                &GatewayWire::Report {
                    job,
                    attempt,
                    report,
                },
            ),
            _ => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match wire::decode::<GatewayWire>(message)? {
            GatewayWire::Report {
                job,
                attempt,
                report,
            } => Self::Report {
                job,
                attempt,
                report,
            },
        })
    }
}
