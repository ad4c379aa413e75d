//! The job's life around its attempts: accepted (stored here and on the
//! standby before the 202), canceled, finished, lingering a few seconds for
//! resuming subscribers, then hibernated (the actor stops, the snapshot
//! stays on the board); or dropped when another node holds the job now.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ractor::{ActorRef, RpcReplyPort};
use tracing::{error, info, Instrument};

use super::transitions::{self, CancelStep};
use super::{After, SupervisorState};
use crate::counters::Attempt;
use crate::job::{EventKind, JobSnapshot, JobState, JobStatus};
use crate::paths;
use crate::probe::Probe;
use crate::protocol::{GatewayMsg, SubmitError, Submitted, SupervisorMsg};
use crate::record::{JobRecord, Outcome};

/// A finished job keeps its actor (and so its event history, for a
/// subscriber that reconnects at once with `since`) this long, then only its
/// snapshot, which is all a later subscriber needs. Short, because a burst of
/// short jobs would otherwise hold a burst of actors, whose freed memory the
/// allocator keeps after them.
const HIBERNATE_AFTER: Duration = Duration::from_secs(5);

/// The longest a cancel waits for the job to end and the standby to hold
/// the ended record before it is answered: under the handle's deadline for
/// a cancel (5 s), and long after an attempt stops (within a second) and a
/// standby that is up has answered.
pub(super) const CANCEL_COPY_WAIT: Duration = Duration::from_secs(2);

/// Where a job stands on its way out of memory.
#[derive(Clone, Copy, Debug)]
pub(super) struct Exit {
    /// The job is in a terminal state.
    pub(super) terminal: bool,
    /// It finished [`HIBERNATE_AFTER`] ago, or before this start.
    pub(super) linger_over: bool,
    /// The standby holds its latest record.
    pub(super) synced: bool,
    /// The actor is stopping already.
    pub(super) hibernating: bool,
}

/// Returns whether the job is done with its actor: finished, lingered, and
/// its final record on the standby (a node on its own counts as synced).
/// Its snapshot stays on the board, its files and record on disk; the
/// gateway answers for it from there.
pub(super) fn may_hibernate(exit: Exit) -> bool {
    exit.terminal && exit.linger_over && exit.synced && !exit.hibernating
}

impl SupervisorState {
    /// `Accept`: makes the new job durable, here and on the standby, then
    /// answers the submitter. Both copies exist before the 202: the
    /// standby's, answered once durable there (its input streamed during
    /// the upload when `input_copied`), and this node's, fsynced.
    /// Without both there is no promise to make: the client is told to
    /// retry. The record goes last: a record on disk is a promised job.
    pub(super) async fn accept(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        upload: PathBuf,
        input_copied: bool,
        reply: RpcReplyPort<Result<Submitted, SubmitError>>,
        estimate: Duration,
    ) -> After {
        let id = self.job.id;
        let storage = |e: std::io::Error| {
            error!(job_id = %id, error = %e, "cannot store the job");
            SubmitError::Storage(e.to_string())
        };
        let refused = match self.place_input(upload).await {
            Err(e) => Some(storage(e)),
            Ok(()) => match self.replicate_new(input_copied).await {
                Err(e) => Some(SubmitError::Replication(e.to_string())),
                Ok(()) => self.persist_new().await.err().map(storage),
            },
        };
        if let Some(refused) = refused {
            // Removed before the answer: a client told 503 finds nothing
            // of its upload left.
            let _ = std::fs::remove_dir_all(paths::job_dir(&self.data_dir, id));
            let _ = reply.send(Err(refused));
            let _ = self.gateway.cast(GatewayMsg::DropUnaccepted(id));
            myself.stop(None);
            return After::Nothing;
        }
        self.board.publish(&self.job);
        let _ = reply.send(Ok(Submitted {
            job: self.job.clone(),
            estimate,
            created: true,
        }));
        self.start_probe(myself);
        After::Settle
    }

    /// Probes the input in a task of its own (after the 202, without a
    /// worker slot), which reports back as `Probed`: once accepted, and
    /// again when an unfinished job comes back from disk or is taken over
    /// without its probe's findings or thumbnail.
    pub(super) fn start_probe(&self, myself: &ActorRef<SupervisorMsg>) {
        let prober = self.prober.clone();
        let input = paths::input(&self.data_dir, self.job.id);
        let thumbnail = paths::thumbnail(&self.data_dir, self.job.id);
        let myself = myself.clone();
        tokio::spawn(
            async move {
                let probe = prober.probe(input, thumbnail).await;
                let _ = myself.cast(SupervisorMsg::Probed(probe));
            }
            .in_current_span(),
        );
    }

    /// `Probed`: the probe at acceptance found the input's media (or
    /// nothing: a file that is not a readable video is left to the
    /// transcode, which fails with its own clear error). Kept in the
    /// record, so restarts and the standby's copy keep it; a worker that
    /// probed first, or a job already over, leaves nothing to do. A video
    /// long enough to split is cut next.
    pub(super) fn on_probed(&mut self, myself: &ActorRef<SupervisorMsg>, probe: Probe) -> After {
        info!(job_id = %self.job.id, media = probe.media.is_some(), thumbnail = probe.thumbnail, "input probed");
        let mut after = After::Nothing;
        if let Some(media) = probe.media {
            if self.job.input.media.is_none() && !self.job.status().is_terminal() {
                self.job.input.media = Some(media.clone());
                self.record.media = Some(media);
                self.dirty = true;
                self.publish(EventKind::Progress);
                after = After::Settle;
            }
        }
        if self.wants_plan() {
            self.start_plan(myself);
        }
        after
    }

    /// `Cancel`: cancels the job and answers with its snapshot, published
    /// first so that a poll after the answer sees it. The answer waits (at
    /// most [`CANCEL_COPY_WAIT`]) for the job to end, its attempt stopped,
    /// and for the standby to hold the ended record: an owner lost right
    /// after its answer would otherwise leave a copy that runs the job
    /// again, after the client was told it was canceled or canceling.
    pub(super) async fn on_cancel(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        reply: RpcReplyPort<JobSnapshot>,
    ) -> After {
        let running = matches!(self.job.state, JobState::Running { .. });
        match transitions::on_cancel(&self.job.state) {
            // A split job's pieces are told to stop, and it ends now.
            CancelStep::StopAttempt if running && self.split.is_some() => {
                info!(job_id = %self.job.id, attempt = self.job.attempt.get(), "cancel requested: every piece stops");
                self.end_split(JobState::Canceled);
            }
            CancelStep::EndNow => {
                let _ = self
                    .gateway
                    .cast(GatewayMsg::CanceledWhileQueued(self.job.id));
                self.finish(JobState::Canceled);
            }
            CancelStep::StopAttempt => {
                if let JobState::Running {
                    cancel_requested, ..
                } = &mut self.job.state
                {
                    *cancel_requested = true;
                }
                self.stop_attempt();
                info!(job_id = %self.job.id, attempt = self.job.attempt.get(), "cancel requested");
            }
            CancelStep::Nothing => {}
        }
        // A job canceled here is canceled on disk before the client hears it.
        self.make_durable().await;
        self.board.publish(&self.job);
        if self.cancel_replies.is_empty() {
            myself.send_after(CANCEL_COPY_WAIT, || SupervisorMsg::AnswerCancels);
        }
        // Answered by `settle`, which follows, once the job is settled.
        self.cancel_replies.push(reply);
        After::Settle
    }

    /// Answers the waiting cancels once the job has ended and the standby
    /// holds the ended record (or there is none, or it is down).
    pub(super) fn answer_settled_cancels(&mut self) {
        // Called by every `settle`; a cancel waiting is rare.
        if self.cancel_replies.is_empty() {
            return;
        }
        let standby_down = self.standby_down_check();
        if self.job.status().is_terminal() && (self.copied >= self.version || standby_down()) {
            self.answer_cancels();
        }
    }

    /// Answers the waiting cancels with the job as it is: once settled, or
    /// once they waited [`CANCEL_COPY_WAIT`] (202 if the attempt has not
    /// stopped yet; a standby that does not answer is not waited for
    /// longer).
    pub(super) fn answer_cancels(&mut self) -> After {
        for reply in self.cancel_replies.drain(..) {
            let _ = reply.send(self.job.clone());
        }
        After::Nothing
    }

    /// Moves to a terminal state, cleans up and tells everyone.
    pub(super) fn finish(&mut self, state: JobState) {
        let ran_for = self.attempt_started.map(|t| t.elapsed());
        let status = state.status();
        if let JobState::Failed(e) = &state {
            info!(job_id = %self.job.id, attempt = self.job.attempt.get(), code = e.code.as_str(), error = %e, "job failed");
        } else {
            info!(job_id = %self.job.id, attempt = self.job.attempt.get(), status = %status, "job finished");
        }
        metrics::counter!("vidpress_jobs_finished_total", "status" => status.as_str()).increment(1);
        if let (JobState::Completed { result, .. }, Some(ran_for)) = (&state, ran_for) {
            metrics::histogram!("vidpress_transcode_seconds").record(ran_for.as_secs_f64());
            metrics::counter!("vidpress_transcode_input_bytes_total")
                .increment(self.job.input.bytes);
            metrics::counter!("vidpress_transcode_output_bytes_total").increment(result.bytes);
        }
        if let Some(outcome) = transitions::outcome_of(&state) {
            self.record = self.ended_record(outcome);
        }
        self.dirty = true;
        self.job.state = state;
        // The input is no longer needed, nor any partial output or piece.
        self.remove_pieces();
        let _ = std::fs::remove_file(paths::input(&self.data_dir, self.job.id));
        for attempt in (1..=self.job.attempt.get()).map(Attempt::new) {
            let _ =
                std::fs::remove_file(paths::attempt_output(&self.data_dir, self.job.id, attempt));
        }
        self.status_changed(
            ran_for
                .filter(|_| status == JobStatus::Completed)
                .map(|d| (self.job.input.bytes, d)),
        );
    }

    /// The record as it reads once the job ended with `outcome` now.
    pub(super) fn ended_record(&self, outcome: Outcome) -> JobRecord {
        transitions::ended_record(
            &self.record,
            outcome,
            SystemTime::now(),
            self.job.input.media.clone(),
            self.losses,
        )
    }

    /// `DropCopy`: another node holds the job now. Stops the attempt, frees
    /// its slot, removes this node's copy and writes nothing of the job
    /// again; the gateway then stops the actor.
    pub(super) fn drop_copy(&mut self, reply: RpcReplyPort<()>) -> After {
        if matches!(self.job.state, JobState::Running { .. }) {
            self.stop_attempt();
            self.stop_pieces();
            self.release_slot();
        }
        self.replica = None;
        let _ = std::fs::remove_dir_all(paths::job_dir(&self.data_dir, self.job.id));
        let _ = reply.send(());
        After::Nothing
    }

    /// Starts the linger of a job that just finished: [`HIBERNATE_AFTER`]
    /// from now, `LingerOver` lets the actor go.
    pub(super) fn start_linger(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.linger_over = false;
        myself.send_after(HIBERNATE_AFTER, || SupervisorMsg::LingerOver);
    }

    /// `LingerOver`: the job finished a while ago.
    pub(super) fn on_linger_over(&mut self) -> After {
        self.linger_over = true;
        After::Settle
    }

    /// Stops the actor once the job is done with it ([`may_hibernate`]): a
    /// finished job costs its snapshot, not an actor.
    pub(super) fn hibernate(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let exit = Exit {
            terminal: self.job.status().is_terminal(),
            linger_over: self.linger_over,
            synced: self.copied >= self.version,
            hibernating: self.hibernating,
        };
        if may_hibernate(exit) {
            self.hibernating = true;
            myself.stop(Some("finished: answered from the board".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Exit {
        Exit {
            terminal: true,
            linger_over: true,
            synced: true,
            hibernating: false,
        }
    }

    #[test]
    fn a_finished_job_hibernates_once_lingered_and_copied() {
        assert!(may_hibernate(done()));
        for not_yet in [
            Exit {
                terminal: false,
                ..done()
            },
            Exit {
                linger_over: false,
                ..done()
            },
            Exit {
                synced: false,
                ..done()
            },
            // Stopping already: not twice.
            Exit {
                hibernating: true,
                ..done()
            },
        ] {
            assert!(!may_hibernate(not_yet), "{not_yet:?}");
        }
    }
}
