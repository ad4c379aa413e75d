//! The JobSupervisor: one actor per job, the owner of its state machine.
//!
//! It holds the job's [`JobSnapshot`], takes a worker slot from the gateway,
//! fences worker reports by attempt number, keeps a short history of events
//! for resuming subscribers and fans every event out over a broadcast channel,
//! so that thousands of subscribers cost the actor one send per event.
//!
//! This module holds the actor, its arguments and its state; `handle` is a
//! table that gives each message to the module owning its concern, then
//! settles what changed (saved, copied, published, maybe hibernated):
//!
//! | message | module |
//! | --- | --- |
//! | `Accept`, `Probed`, `Cancel`, `LingerOver`, `DropCopy` | `lifecycle`: accept (and the probe after it), finish, linger, hibernate |
//! | `Dispatch`, `Report`, `Watch`, `NodeLost`, `WorkerLost` | `attempts`: dispatch, reports, deadlines, lost attempts; a split job's (`Planned`, `Joined` too) in `pieces`, the join in `join` |
//! | `Subscribe` (and every event) | `events`: publish, history, subscribe with `since` |
//! | `ResultCopied`, `Resync`, `RecordCopied` | `standby`: copies to the standby |
//! | `GetSnapshot` | here |
//!
//! The decisions are pure functions with unit tests beside them:
//! `transitions` (the next state on a report or a cancel, the records of
//! a state), `losses` (how many lost attempts a job bears), and the
//! deadlines, progress throttling and subscription backlog in their
//! modules. `durability` writes the record.

mod attempts;
mod durability;
mod events;
mod join;
mod lifecycle;
mod losses;
mod pieces;
mod split;
mod standby;
pub(crate) mod transitions;

pub use split::SplitPolicy;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{broadcast, watch};
use tracing::{error, info, info_span, Instrument};
use vidpress_cluster::{ClusterView, NodeName};

use crate::board::Board;
use crate::commit::Committer;
use crate::job::{JobEvent, JobSnapshot};
use crate::paths;
use crate::probe::Prober;
use crate::protocol::{GatewayMsg, SupervisorMsg};
use crate::record::JobRecord;
use crate::replication;
use crate::transfer::Transfer;

use losses::Losses;

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
    /// Probes the input once the job is accepted; cuts and joins a long one.
    pub prober: Prober,
    /// This node's group commit, which makes a new job durable.
    pub committer: Committer,
    /// Which videos are split over many workers.
    pub split: SplitPolicy,
    /// This node's worker slots (a split job's segments come in rounds of
    /// the cluster's).
    pub local_workers: usize,
}

pub struct SupervisorState {
    job: JobSnapshot,
    /// The durable part, written to disk when `dirty`.
    record: JobRecord,
    dirty: bool,
    /// A terminal status not yet said: it is said once the record holding
    /// it is on disk (see [`Self::settle`]), with the completed attempt's
    /// input bytes and time for the gateway's estimates.
    unsaid_end: Option<Option<(u64, Duration)>>,
    /// Cancels waiting for the job to end and the standby to hold the
    /// ended record (at most [`lifecycle::CANCEL_COPY_WAIT`]).
    cancel_replies: Vec<RpcReplyPort<JobSnapshot>>,
    data_dir: PathBuf,
    gateway: ActorRef<GatewayMsg>,
    owner: NodeName,
    owner_http: String,
    /// Attempts lost to silent workers, and interrupted by the cluster.
    losses: Losses,
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
    prober: Prober,
    committer: Committer,
    split_policy: SplitPolicy,
    local_workers: usize,
    /// A long video's pieces, once it is cut.
    split: Option<split::Split>,
    /// The input is being cut (a plan child runs).
    planning: bool,
    /// One more slot is asked for (the job is in the gateway's queue).
    asking: bool,
    /// The worker holding the slot of a one-pass job's attempt.
    worker: Option<ractor::ActorId>,
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
    /// The job finished [`lifecycle::HIBERNATE_AFTER`] ago, or before this start.
    linger_over: bool,
    attempt_started: Option<Instant>,
    last_progress_event: Option<Instant>,
    /// The live feed, made when the first subscriber comes (most jobs are
    /// only ever polled, and a feed holds a buffer of [`events::CHANNEL`] events).
    events: Option<broadcast::Sender<JobEvent>>,
    history: VecDeque<JobEvent>,
}

/// What follows a message: most change the job, whose changes are then
/// settled ([`SupervisorState::settle`]); a refused submission, an ignored
/// report or watch, or a dropped copy leave nothing to settle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Settle,
    Nothing,
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
                replication::copy_records(args.transfer.clone(), standby, rx, myself.clone())
                    .in_current_span(),
            );
            tx
        });
        let mut state = SupervisorState {
            job: transitions::snapshot_of(&record, paths::result(&args.data_dir, record.id)),
            losses: Losses {
                worker: record.lost_attempts,
                interrupted: record.interrupted,
            },
            record,
            dirty: false,
            unsaid_end: None,
            cancel_replies: Vec::new(),
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
            prober: args.prober,
            committer: args.committer,
            split_policy: args.split,
            local_workers: args.local_workers,
            split: None,
            planning: false,
            asking: false,
            worker: None,
            attempt_started: None,
            last_progress_event: None,
            events: None,
            // Grows with the events, up to HISTORY.
            history: VecDeque::new(),
        };
        if let Some(split) = &state.record.split {
            // An ended job's pieces are gone with their files, but polls
            // still show where each was encoded.
            let ended = state.job.status().is_terminal();
            let (data, id) = (&state.data_dir, state.job.id);
            let kept = |piece| ended || paths::piece(data, id, piece).exists();
            state.split = Some(split::Split::new(split.plan.clone(), &split.done, kept));
            state.show_segments();
        }
        if !args.fresh {
            state.board.publish(&state.job);
            // Back from disk or taken over before its probe was done (or
            // from a standby, which has no thumbnail): probe it again.
            let thumbnail = paths::thumbnail(&state.data_dir, state.job.id);
            if !state.job.status().is_terminal()
                && (state.job.input.media.is_none() || !thumbnail.exists())
            {
                state.start_probe(&myself);
            } else if state.wants_plan() {
                state.start_plan(&myself);
            }
            let job_folder = paths::job_dir(&state.data_dir, state.job.id);
            if !state.job.status().is_terminal() && paths::cancel_requested(&job_folder).exists() {
                // Asked of this node while it was the standby: carried out
                // now that it holds the job (the answer goes nowhere).
                info!(job_id = %state.job.id, "canceling as asked during the failover");
                let (reply, _) = ractor::concurrency::oneshot();
                myself.send_message(SupervisorMsg::Cancel(reply.into()))?;
            }
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
            .await;
        Ok(())
    }
}

/// Handles one message: the body of the supervisor's `handle`.
async fn handle_message(
    myself: ActorRef<SupervisorMsg>,
    message: SupervisorMsg,
    state: &mut SupervisorState,
) {
    let was_terminal = state.job.status().is_terminal();
    let after = match message {
        SupervisorMsg::Accept {
            upload,
            input_copied,
            reply,
            estimate,
        } => {
            state
                .accept(&myself, upload, input_copied, reply, estimate)
                .await
        }
        SupervisorMsg::GetSnapshot(reply) => {
            let _ = reply.send(state.job.clone());
            After::Settle
        }
        SupervisorMsg::Subscribe { since, reply } => state.on_subscribe(since, reply),
        SupervisorMsg::Cancel(reply) => state.on_cancel(&myself, reply).await,
        SupervisorMsg::AnswerCancels => state.answer_cancels(),
        SupervisorMsg::Dispatch { worker, node } => state.on_dispatch(&myself, worker, node).await,
        SupervisorMsg::Report { attempt, report } => state.on_report(&myself, attempt, report),
        SupervisorMsg::Watch(attempt) => state.on_watch(&myself, attempt),
        SupervisorMsg::NodeLost(node) => state.on_node_lost(&node),
        SupervisorMsg::ResultCopied { attempt, result } => state.on_result_copied(attempt, result),
        SupervisorMsg::Resync(node) => state.resync(&myself, &node),
        SupervisorMsg::RecordCopied(version) => state.on_record_copied(version),
        SupervisorMsg::DropCopy(reply) => state.drop_copy(reply),
        SupervisorMsg::LingerOver => state.on_linger_over(),
        SupervisorMsg::Probed(probe) => state.on_probed(&myself, probe),
        SupervisorMsg::WorkerLost { worker, reason } => {
            state.on_worker_lost(&myself, worker, reason)
        }
        SupervisorMsg::Planned(plan) => state.on_planned(plan),
        SupervisorMsg::Joined { attempt, result } => state.on_joined(&myself, attempt, result),
    };
    if after == After::Settle {
        state.settle(&myself, was_terminal).await;
    }
}

impl SupervisorState {
    /// Writes the record if dirty, then says a terminal status that waited
    /// for it.
    async fn make_durable(&mut self) {
        if self.dirty {
            if let Err(e) = self.save().await {
                error!(job_id = %self.job.id, error = %e, "cannot update the job record");
            }
        }
        if let Some(ran) = self.unsaid_end.take() {
            self.say_status(ran);
        }
    }

    /// Settles what a message changed: the record saved (and handed to the
    /// standby's copier) if dirty, the waiting cancels answered if the job
    /// is settled, the gateway told whether the standby is current, the
    /// snapshot published, the linger started if the job just finished,
    /// and the actor stopped once the job is done with it.
    async fn settle(&mut self, myself: &ActorRef<SupervisorMsg>, was_terminal: bool) {
        self.make_durable().await;
        self.answer_settled_cancels();
        self.report_sync();
        self.board.publish(&self.job);
        if !was_terminal && self.job.status().is_terminal() {
            self.start_linger(myself);
        }
        self.hibernate(myself);
    }
}

impl ractor::Message for SupervisorMsg {}
