//! Attempts: dispatching the job to a worker slot, hearing the worker's
//! reports, watching the start and report deadlines, and running the job
//! again after a lost attempt (or failing it after too many).

use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};
use tracing::{debug, info, warn};
use vidpress_cluster::NodeName;
use vidpress_transcode::{ErrorCode, Output, TranscodeError};

use super::losses::{count_loss, Loss};
use super::transitions::{self, Step};
use super::{After, SupervisorState};
use crate::counters::Attempt;
use crate::job::{EventKind, JobState};
use crate::paths;
use crate::protocol::{
    all_workers_of, Assignment, AttemptReport, GatewayMsg, SupervisorMsg, WorkerMsg,
};

/// An attempt whose worker has not said it started by then is lost (the
/// worker died, or could not decode the assignment).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A started attempt silent for this long is lost: its reports cannot reach
/// this node any more, though its node may look alive. Workers report at
/// least every few seconds, transfers included.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a running attempt is checked against those deadlines.
pub(super) const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Returns why a running attempt is lost, if it is: its worker has not said
/// it `started` within [`START_TIMEOUT`], or has been `silent` (since the
/// dispatch or its last report) for [`REPORT_TIMEOUT`].
pub(super) fn overdue(started: bool, silent: Duration) -> Option<String> {
    if !started && silent >= START_TIMEOUT {
        Some("the worker never started the attempt".into())
    } else if silent >= REPORT_TIMEOUT {
        Some(format!(
            "no report from the worker for {}s",
            silent.as_secs()
        ))
    } else {
        None
    }
}

impl SupervisorState {
    /// `Dispatch`: sends the next attempt to the slot's worker and, if it
    /// went, starts watching it.
    ///
    /// A split job's slot takes a piece.
    pub(super) async fn on_dispatch(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        worker: ActorRef<WorkerMsg>,
        node: NodeName,
    ) -> After {
        self.asking = false;
        if self.split.is_some() {
            return self.dispatch_piece(myself, worker, node).await;
        }
        if self.dispatch(worker, node).await {
            let attempt = self.job.attempt;
            myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
        }
        After::Settle
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
        self.worker = Some(worker.get_id());
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

    /// `Report`: a worker's report on `attempt`, ignored unless it is the
    /// current one.
    pub(super) fn on_report(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        attempt: Attempt,
        report: AttemptReport,
    ) -> After {
        if self.split.is_some() {
            return self.on_piece_report(myself, attempt, report);
        }
        if transitions::is_stale(attempt, self.job.attempt) {
            debug!(job_id = %self.job.id, attempt = attempt.get(), current = self.job.attempt.get(), "stale attempt report ignored");
            return After::Nothing;
        }
        self.last_report = Instant::now();
        match transitions::on_report(self.cancel_requested(), report) {
            Step::Started(node) => {
                self.started = true;
                if self.job.node.as_ref() != Some(&node) {
                    self.job.node = Some(node);
                    self.publish(EventKind::Progress);
                }
            }
            Step::Probed(media) => {
                self.job.input.media = Some(media);
                self.publish(EventKind::Progress);
            }
            Step::Progress(fraction) => self.progress(fraction),
            Step::Complete(result) => {
                self.release_slot();
                self.complete(myself, result);
            }
            Step::End(state) => {
                self.release_slot();
                self.finish(state);
            }
            Step::Requeue => {
                self.release(true);
                self.requeue(GatewayMsg::DispatchFailed(self.job.id));
            }
            Step::Lost(loss, reason) => self.retry(loss, reason),
            Step::Nothing => {}
        }
        After::Settle
    }

    /// Takes the output of the current attempt as the result; the job is
    /// completed once the result is on the standby too
    /// ([`Self::copy_result`]).
    pub(super) fn complete(&mut self, myself: &ActorRef<SupervisorMsg>, result: Output) {
        let output = paths::result(&self.data_dir, self.job.id);
        let attempt_output = paths::attempt_output(&self.data_dir, self.job.id, self.job.attempt);
        if let Err(e) = std::fs::rename(attempt_output, &output) {
            self.finish(JobState::Failed(TranscodeError::new(
                ErrorCode::Io,
                format!("the output could not be stored: {e}"),
            )));
            return;
        }
        self.copy_result(myself, output, result);
    }

    /// `Watch`: checks the current attempt against its deadlines; watches
    /// again later while it keeps them.
    pub(super) fn on_watch(&mut self, myself: &ActorRef<SupervisorMsg>, attempt: Attempt) -> After {
        if self.split.is_some() {
            return self.on_piece_watch(myself, attempt);
        }
        if attempt != self.job.attempt || !matches!(self.job.state, JobState::Running { .. }) {
            return After::Nothing;
        }
        match overdue(self.started, self.last_report.elapsed()) {
            Some(reason) => self.retry(Loss::Worker, reason),
            None => {
                myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
            }
        }
        After::Settle
    }

    /// `NodeLost`: if the lost node ran the current attempt, the job runs
    /// again elsewhere.
    pub(super) fn on_node_lost(&mut self, node: &NodeName) -> After {
        if self.split.is_some() {
            self.pieces_lost_with(Some(node), None, &format!("node {node} was lost"));
            return After::Settle;
        }
        if matches!(self.job.state, JobState::Running { .. })
            && self.job.node.as_ref() == Some(node)
        {
            self.retry(Loss::Interrupted, format!("node {node} was lost"));
        }
        After::Settle
    }

    /// `WorkerLost`: a worker holding a slot of this job died; the attempt
    /// it ran is lost.
    pub(super) fn on_worker_lost(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        worker: ActorId,
        reason: String,
    ) -> After {
        if self.split.is_some() {
            self.pieces_lost_with(None, Some(worker), &reason);
            return After::Settle;
        }
        if self.worker != Some(worker) || !matches!(self.job.state, JobState::Running { .. }) {
            return After::Nothing;
        }
        self.on_report(myself, self.job.attempt, AttemptReport::Lost(reason))
    }

    /// Runs the job again elsewhere after its attempt was lost, or fails it
    /// once too many attempts were.
    fn retry(&mut self, loss: Loss, reason: String) {
        self.release_slot();
        let given_up = count_loss(&mut self.losses, loss, &reason);
        let count = match loss {
            Loss::Worker => self.losses.worker,
            Loss::Interrupted => self.losses.interrupted,
        };
        // If the attempt still runs somewhere (a frozen node), stop it; its
        // reports are fenced off by the attempt number anyway.
        self.stop_attempt();
        warn!(job_id = %self.job.id, attempt = self.job.attempt.get(), ?loss, count, reason = %reason, "attempt lost");
        if self.cancel_requested() {
            self.finish(JobState::Canceled);
        } else if let Some(error) = given_up {
            self.finish(JobState::Failed(error));
        } else {
            // The count is durable, so a restart does not reset the bound.
            self.record.lost_attempts = self.losses.worker;
            self.record.interrupted = self.losses.interrupted;
            self.dirty = true;
            self.requeue(GatewayMsg::AttemptLost(self.job.id));
        }
    }

    /// Puts the job back in the gateway's queue, as `requeue` says: after a
    /// refused dispatch, or an attempt lost.
    fn requeue(&mut self, requeue: GatewayMsg) {
        self.job.state = JobState::Queued;
        self.job.node = None;
        let _ = self.gateway.cast(requeue);
        self.status_changed(None);
    }

    /// Tells the workers of the current attempt's node to stop it. Workers are
    /// looked up afresh (a remote actor's reference changes when its session
    /// is re-established); only the one running the attempt acts on it.
    pub(super) fn stop_attempt(&self) {
        let Some(node) = &self.job.node else { return };
        for cell in all_workers_of(&self.scope, node) {
            let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Cancel {
                job: self.job.id,
                attempt: self.job.attempt,
            });
        }
    }

    /// Tells the gateway the job's worker slot is free again.
    pub(super) fn release_slot(&self) {
        self.release(false);
    }

    fn release(&self, rejected: bool) {
        let _ = self.gateway.cast(GatewayMsg::SlotFreed {
            job: self.job.id,
            worker: None,
            rejected,
        });
    }

    pub(super) fn cancel_requested(&self) -> bool {
        transitions::cancel_requested(&self.job.state)
    }
}

fn worker_node(node: &Option<NodeName>) -> &str {
    node.as_ref().map_or("-", NodeName::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_worker_that_never_starts_is_lost_after_ten_seconds() {
        assert_eq!(overdue(false, seconds(9)), None);
        assert_eq!(
            overdue(false, seconds(10)).as_deref(),
            Some("the worker never started the attempt")
        );
        // Silent past both deadlines, it still never started.
        assert_eq!(
            overdue(false, seconds(45)).as_deref(),
            Some("the worker never started the attempt")
        );
    }

    #[test]
    fn a_started_attempt_is_lost_after_thirty_silent_seconds() {
        assert_eq!(overdue(true, seconds(10)), None);
        assert_eq!(overdue(true, Duration::from_millis(29_999)), None);
        assert_eq!(
            overdue(true, seconds(31)).as_deref(),
            Some("no report from the worker for 31s")
        );
    }
}
