//! The actors of vidpress, free of HTTP and sockets.
//!
//! # Layout
//! - [`job`]: job identities, the typed state machine, snapshots and events.
//! - [`gateway`]: the Gateway actor, one per node: accepts jobs, queues them,
//!   hands out worker slots, takes jobs over from lost nodes and supervises
//!   the node's workers and job supervisors; a folder, one module a concern
//!   (its `mod.rs` has the table of message → module).
//! - [`supervisor`]: the JobSupervisor actor, one per job: owns its state,
//!   fences attempts, fans events out.
//! - [`worker`]: the WorkerActor, N per node in a process group: runs one
//!   transcode at a time in a child process.
//! - [`protocol`]: the messages that cross actors, so that no actor module
//!   imports another.
//! - `queue`: the gateway's line of jobs waiting for a worker slot.
//! - [`handle`]: [`Jobs`], the typed API with deadlines that callers use.
//! - [`board`]: the snapshots supervisors publish, which polls read.
//! - [`commit`]: [`commit::Committer`], group commit: one thread a node
//!   that makes the files and folder entries of many callers durable at once.
//! - [`paths`]: where a job's files live in the data directory.
//! - [`probe`]: [`probe::Prober`], the probe and thumbnail of an input at
//!   acceptance, in a bounded number of child processes.
//! - [`record`]: the job record kept on disk, from which a restarted node
//!   recovers its jobs.
//! - [`replicas`]: the copies a node keeps, as standby, of other nodes' jobs.
//! - [`tenant`]: [`Tenant`], who a job belongs to.
//! - [`transfer`]: [`Transfer`], how workers move bytes between nodes.
//! - [`writeback`]: the disk asked to write a file's bytes as they come,
//!   so that its sync before an answer has little left to do.
//!
//! [`start`] brings a node's actors up.

pub mod board;
pub mod commit;
pub mod counters;
pub mod gateway;
pub mod handle;
pub mod inputs;
pub mod job;
pub mod paths;
pub mod probe;
pub mod protocol;
mod queue;
pub mod record;
pub mod replicas;
mod replication;
pub mod supervisor;
pub mod tenant;
pub mod transfer;
pub mod worker;
pub mod writeback;

pub use counters::{Attempt, Epoch, Seq};
pub use gateway::{standby_among, ClusterLink, GatewayArgs};
pub use handle::{Jobs, ServiceError};
pub use job::{
    EventKind, InputInfo, JobEvent, JobId, JobSnapshot, JobState, JobStatus, SegmentStatus,
    SegmentView,
};
pub use protocol::{CopiedInput, NodeStats, SubmitError, SubmitRequest, Submitted, Subscription};
pub use supervisor::SplitPolicy;
pub use tenant::Tenant;
pub use transfer::{Relinquished, ReplicaFile, Transfer, TransferError, TransferFuture};

use std::path::PathBuf;
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::board::Board;
use crate::gateway::Gateway;
use crate::protocol::GatewayMsg;

/// A running node's actors.
pub struct Node {
    gateway: ActorRef<GatewayMsg>,
    board: Arc<Board>,
    /// The data directory, where a standby's copies are read.
    data_dir: Arc<PathBuf>,
    task: JoinHandle<()>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[error("the node's actors could not start: {0}")]
pub struct StartError(String);

/// Starts a node's gateway and workers.
pub async fn start(args: GatewayArgs) -> Result<Node, StartError> {
    let board = Arc::new(Board::default());
    let data_dir = Arc::new(args.data_dir.clone());
    let (gateway, task) = Actor::spawn(None, Gateway, (args, board.clone()))
        .await
        .map_err(|e| StartError(e.to_string()))?;
    Ok(Node {
        gateway,
        board,
        data_dir,
        task,
    })
}

impl Node {
    /// Returns the handle callers use.
    pub fn jobs(&self) -> Jobs {
        Jobs::new(
            self.gateway.clone(),
            self.board.clone(),
            self.data_dir.clone(),
        )
    }

    /// Stops the gateway and everything it started, and waits for it.
    pub async fn stop(self) {
        self.gateway.stop_children(None);
        self.gateway.stop(None);
        let _ = self.task.await;
    }
}
