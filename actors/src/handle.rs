//! [`Jobs`]: the typed, timeout-bounded API over a node's actors that the
//! HTTP layer and tests use. Every call has a deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, MessagingErr, RpcReplyPort};
use vidpress_cluster::NodeName;

use crate::board::{Board, Published};
use crate::counters::{Epoch, Seq};
use crate::job::{EventKind, JobEvent, JobId, JobSnapshot, JobStatus};
use crate::protocol::{
    GatewayMsg, KeptCancel, NodeStats, SubmitError, SubmitRequest, Submitted, Subscription,
    SupervisorMsg,
};
use crate::record::JobRecord;
use crate::supervisor::transitions;
use crate::tenant::Tenant;
use crate::transfer::ReplicaFile;
use crate::{paths, replicas};

/// How long a call to an actor may take before the caller gives up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a submission may wait for its job to be stored here and copied
/// to the standby. Giving up earlier would answer 503 for a job that then
/// exists; the copy has deadlines of its own (see the HTTP transfer).
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a request to the node's actors failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no job with this id")]
    NotFound,
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("the node did not answer in time")]
    Timeout,
    #[error("the node is shutting down")]
    Unavailable,
}

impl<T> From<MessagingErr<T>> for ServiceError {
    fn from(_: MessagingErr<T>) -> Self {
        Self::Unavailable
    }
}

/// A cheap, cloneable handle on one node's jobs.
#[derive(Clone)]
pub struct Jobs {
    gateway: ActorRef<GatewayMsg>,
    board: Arc<Board>,
    data_dir: Arc<PathBuf>,
}

impl Jobs {
    pub(crate) fn new(
        gateway: ActorRef<GatewayMsg>,
        board: Arc<Board>,
        data_dir: Arc<PathBuf>,
    ) -> Self {
        Self {
            gateway,
            board,
            data_dir,
        }
    }

    /// Accepts an upload as a job.
    pub async fn submit(&self, request: SubmitRequest) -> Result<Submitted, ServiceError> {
        let request = Box::new(request);
        let submit = |reply| GatewayMsg::Submit(request, reply);
        Ok(call_within(&self.gateway, submit, SUBMIT_TIMEOUT).await??)
    }

    /// Returns the current state of a job, as its supervisor last published
    /// it (after the last message it handled).
    pub fn get(&self, id: JobId) -> Result<Arc<Published>, ServiceError> {
        let job = self.board.get(id).ok_or(ServiceError::NotFound)?;
        if self.board.cut_off() && !job.status().is_terminal() {
            // Its copy elsewhere may be ahead: the client asks again, maybe
            // another node.
            return Err(ServiceError::Unavailable);
        }
        Ok(job)
    }

    /// Refuses to act on an unfinished job while this node is cut off (see
    /// [`Jobs::get`]).
    fn check_current(&self, id: JobId) -> Result<(), ServiceError> {
        match self.get(id) {
            Err(ServiceError::Unavailable) => Err(ServiceError::Unavailable),
            _ => Ok(()),
        }
    }

    /// Cancels a job; returns its state once the request is in effect.
    pub async fn cancel(&self, id: JobId) -> Result<JobSnapshot, ServiceError> {
        self.check_current(id)?;
        match supervisor(id) {
            Ok(supervisor) => match call(&supervisor, SupervisorMsg::Cancel).await {
                Err(ServiceError::Unavailable) => self.finished(id),
                answered => answered,
            },
            // Finished: nothing to cancel.
            Err(_) => self.finished(id),
        }
    }

    /// Returns the snapshot of a finished job, whose actor has stopped.
    fn finished(&self, id: JobId) -> Result<JobSnapshot, ServiceError> {
        self.board
            .get(id)
            .filter(|job| job.status().is_terminal())
            .map(|job| JobSnapshot::clone(&job))
            .ok_or(ServiceError::NotFound)
    }

    /// Subscribes to a job's events after `since`, or from a snapshot.
    pub async fn subscribe(
        &self,
        id: JobId,
        since: Option<Seq>,
    ) -> Result<Subscription, ServiceError> {
        self.check_current(id)?;
        let subscribe = |reply| SupervisorMsg::Subscribe { since, reply };
        let answered = match supervisor(id) {
            Ok(supervisor) => call(&supervisor, subscribe).await,
            Err(e) => Err(e),
        };
        match answered {
            Err(ServiceError::NotFound | ServiceError::Unavailable) => {
                // Finished: its snapshot is all there is to tell.
                let job = self.finished(id)?;
                let snapshot = JobEvent::new(EventKind::Snapshot, job.seq, Arc::new(job));
                Ok(Subscription {
                    backlog: vec![snapshot],
                    live: None,
                })
            }
            answered => answered,
        }
    }

    /// Returns jobs newest first, of one status if given, of one tenant if
    /// given, older than `before`.
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        tenant: Option<Tenant>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobSnapshot>, ServiceError> {
        let ids = call(&self.gateway, |reply| GatewayMsg::List {
            status,
            tenant,
            before,
            limit,
            reply,
        })
        .await?;
        // A job removed between the listing and the lookup is simply left out.
        Ok(ids
            .into_iter()
            .filter_map(|id| self.board.get(id))
            .map(|job| JobSnapshot::clone(&job))
            .collect())
    }

    /// Returns whether this node gave the job up to another node, which
    /// holds it: it exists, even if no node reachable holds it now.
    pub fn gave_up(&self, id: JobId) -> bool {
        self.board.gave_up(id)
    }

    /// Returns whether this node owns the job (its supervisor runs here).
    pub fn is_local(&self, id: JobId) -> bool {
        self.board.get(id).is_some()
    }

    /// Returns the job as this node's copy of it tells it, when this node is
    /// its standby and has not taken it over (see DESIGN.md, invariant 7):
    /// what the owner last copied here, before any event of this node. `None`
    /// for a job this node holds no copy of, and while this node is cut off
    /// (a majority elsewhere may have taken the job over).
    pub fn standby_copy(&self, id: JobId) -> Option<Arc<Published>> {
        if self.board.cut_off() {
            return None;
        }
        let data = self.data_dir.as_path();
        // The copy, or, while the takeover moves it to this node's jobs and
        // before its supervisor publishes it, the job's record there.
        let places = [
            (
                replicas::record_path(data, id),
                replicas::file_path(data, id, ReplicaFile::Result),
            ),
            (paths::record(data, id), paths::result(data, id)),
        ];
        places.into_iter().find_map(|(record, result)| {
            let record = JobRecord::read(&record).ok()?;
            // A record names the job it is of; one that does not is not this job's.
            (record.id == id)
                .then(|| Arc::new(Published::from(transitions::snapshot_of(&record, result))))
        })
    }

    /// Cancels a job this node holds a copy of and has not taken over: the
    /// request is written (durably) beside the copy, and the job is canceled
    /// as soon as this node takes it over. Returns the copy's state; a copy
    /// that is already terminal stays as it is.
    pub async fn cancel_copy(&self, id: JobId) -> Result<JobSnapshot, ServiceError> {
        let copy = self.standby_copy(id).ok_or(ServiceError::NotFound)?;
        if copy.status().is_terminal() {
            return Ok(JobSnapshot::clone(&copy));
        }
        // In turn with the gateway's takeovers: a cancel never falls
        // between a copy's promotion and its supervisor's start.
        let keep = |reply| GatewayMsg::KeepCancel(id, reply);
        match call_within(&self.gateway, keep, CALL_TIMEOUT).await? {
            KeptCancel::Kept => {}
            KeptCancel::TakenOver => return self.cancel(id).await,
            KeptCancel::NoCopy => return Err(ServiceError::NotFound),
            KeptCancel::Failed(e) => {
                tracing::error!(job_id = %id, error = %e, "cannot keep a cancel for after the takeover");
                return Err(ServiceError::Unavailable);
            }
        }
        tracing::info!(job_id = %id, "cancel requested during a failover: kept for after the takeover");
        Ok(JobSnapshot::clone(&copy))
    }

    /// Tells the gateway a node is down, so attempts running there move.
    pub fn node_down(&self, node: NodeName) {
        let _ = self.gateway.cast(GatewayMsg::NodeDown(node));
    }

    /// Tells the gateway this node stalled: its jobs' standbys may have
    /// taken them over meanwhile.
    pub fn stalled(&self) {
        let _ = self.gateway.cast(GatewayMsg::Stalled);
    }

    /// Tells the gateway a node is up again.
    pub fn node_up(&self, node: NodeName) {
        let _ = self.gateway.cast(GatewayMsg::NodeUp(node));
    }

    /// Another node took `job` over under `epoch`, its copy `finished` or
    /// not: this node's copy gives way, unless it is the one to keep (see
    /// [`GatewayMsg::CompareCopies`]). Returns whether it was kept.
    pub async fn relinquish(
        &self,
        job: JobId,
        epoch: Epoch,
        finished: bool,
    ) -> Result<bool, ServiceError> {
        call(&self.gateway, |reply| GatewayMsg::CompareCopies {
            job,
            epoch,
            finished,
            reply,
        })
        .await
    }

    /// Starts draining the node for shutdown: no new jobs, no new attempts.
    pub fn drain(&self) {
        let _ = self.gateway.cast(GatewayMsg::Drain);
    }

    /// Returns this node's load.
    pub async fn stats(&self) -> Result<NodeStats, ServiceError> {
        call(&self.gateway, GatewayMsg::Stats).await
    }
}

fn supervisor(id: JobId) -> Result<ActorRef<SupervisorMsg>, ServiceError> {
    ractor::registry::where_is(id.actor_name())
        .map(ActorRef::from)
        .ok_or(ServiceError::NotFound)
}

async fn call<M, T>(
    actor: &ActorRef<M>,
    message: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, ServiceError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    call_within(actor, message, CALL_TIMEOUT).await
}

async fn call_within<M, T>(
    actor: &ActorRef<M>,
    message: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, ServiceError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(message, Some(timeout)).await? {
        ractor::rpc::CallResult::Success(value) => Ok(value),
        ractor::rpc::CallResult::Timeout => Err(ServiceError::Timeout),
        ractor::rpc::CallResult::SenderError => Err(ServiceError::Unavailable),
    }
}
