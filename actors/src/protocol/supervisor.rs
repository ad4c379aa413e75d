//! What a job supervisor is told: by the gateway, by `Jobs`, by itself.

use std::path::PathBuf;
use std::time::Duration;

use ractor::{ActorId, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;
use vidpress_cluster::NodeName;
use vidpress_transcode::{Output, SegmentPlan, TranscodeError};

use super::gateway::{SubmitError, Submitted};
use super::worker::{AttemptReport, WorkerMsg};
use crate::counters::{Attempt, Seq};
use crate::job::{JobEvent, JobSnapshot};
use crate::probe::Probe;

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
        /// The uploaded file, moved into the job's folder here.
        upload: PathBuf,
        /// Whether the standby holds the input already (streamed to it
        /// during the upload): only the record is copied then.
        input_copied: bool,
        reply: RpcReplyPort<Result<Submitted, SubmitError>>,
        estimate: Duration,
    },
    /// Replies with the job's current snapshot.
    GetSnapshot(RpcReplyPort<JobSnapshot>),
    /// Subscribes to events after `since` (or from a fresh snapshot).
    Subscribe {
        since: Option<Seq>,
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
    Report {
        attempt: Attempt,
        report: AttemptReport,
    },
    /// A node is down: if it ran the current attempt, run the job elsewhere.
    NodeLost(NodeName),
    /// A node is up again: if it is this job's standby, it may have missed
    /// copies while away, so send it the job's files and record again.
    Resync(NodeName),
    /// The result of attempt `attempt` is on the standby (or could not be
    /// copied, which is logged): the job is complete.
    ResultCopied { attempt: Attempt, result: Output },
    /// Sent to itself every few seconds while attempt `0` runs.
    Watch(Attempt),
    /// Version `0` of the record (counted from this supervisor's start) is
    /// durable on the standby.
    RecordCopied(u64),
    /// Another node holds the job now: stop the attempt and drop this
    /// node's copy; replies once done (the gateway then stops the actor).
    DropCopy(RpcReplyPort<()>),
    /// Sent to itself a while after a cancel ended the job: answers the
    /// cancels still waiting for the standby to hold the ended record.
    AnswerCancels,
    /// Sent to itself a few seconds after the job finished.
    LingerOver,
    /// Sent to itself by the probe started at acceptance: what the input
    /// is, and whether its thumbnail was written.
    Probed(Probe),
    /// A worker holding a slot of this job died: its attempt is lost.
    WorkerLost { worker: ActorId, reason: String },
    /// Sent to itself by the plan of a long video: where it is cut, or why
    /// it could not be (the job then runs in one pass).
    Planned(Result<SegmentPlan, TranscodeError>),
    /// Sent to itself by the join of a split job's pieces, attempt
    /// `attempt`: the output, or why there is none.
    Joined {
        attempt: Attempt,
        result: Result<Output, TranscodeError>,
    },
}
