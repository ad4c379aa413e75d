//! A split job's life on its supervisor: the plan after the probe, each
//! piece (a segment, or the audio) dispatched as a fenced attempt of its
//! own to whichever worker the gateway hands over, the pieces' reports,
//! deadlines and losses (a lost piece alone runs again), each finished
//! piece kept and copied to the standby; then `join`. The pieces' state is
//! `split`'s.

use std::time::Instant;

use ractor::{ActorId, ActorRef};
use tracing::{debug, info, warn, Instrument};
use vidpress_cluster::NodeName;
use vidpress_transcode::{ErrorCode, Output, SegmentPlan, TranscodeError};

use super::attempts::{overdue, WATCH_EVERY};
use super::losses::{count_loss, Loss};
use super::split::{PieceState, Run, Split};
use super::{After, SupervisorState};
use crate::counters::Attempt;
use crate::job::{EventKind, JobState, Piece};
use crate::paths;
use crate::protocol::{
    all_workers_of, Assignment, AttemptReport, GatewayMsg, SupervisorMsg, WorkerMsg,
};
use crate::record::{DonePiece, SplitRecord};
use crate::replication;

impl SupervisorState {
    /// Returns whether the job is to be cut: long enough, not cut yet nor
    /// being cut, and queued or in its one pass (which gives way to the
    /// pieces; the plan is made as soon as the probe answers, so little of
    /// it is lost) unless that pass has finished.
    pub(super) fn wants_plan(&self) -> bool {
        let open = match self.job.state {
            JobState::Queued => true,
            JobState::Running {
                cancel_requested, ..
            } => !cancel_requested && !paths::result(&self.data_dir, self.job.id).exists(),
            _ => false,
        };
        open && self.split.is_none()
            && !self.planning
            && self
                .split_policy
                .splits(&self.job.options, self.job.input.media.as_ref())
    }

    /// Cuts the input in a child (the node's prober), which reports back
    /// with `Planned`.
    pub(super) fn start_plan(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.planning = true;
        let prober = self.prober.clone();
        let input = paths::input(&self.data_dir, self.job.id);
        let duration = self
            .job
            .input
            .media
            .as_ref()
            .and_then(|m| m.duration_seconds)
            .unwrap_or(0.0);
        let segment = self
            .split_policy
            .segment_for(duration, self.cluster_workers());
        let myself = myself.clone();
        tokio::spawn(
            async move {
                let plan = prober.plan(input, segment).await;
                let _ = myself.cast(SupervisorMsg::Planned(plan));
            }
            .in_current_span(),
        );
    }

    /// Returns the worker slots of the cluster as far as this node sees:
    /// its own, and those the other nodes that are up report.
    fn cluster_workers(&self) -> usize {
        let others = self.view.as_ref().map_or(0, |view| {
            let view = view.borrow();
            view.up()
                .filter(|m| m.name != self.owner)
                .map(|m| m.load.workers as usize)
                .sum()
        });
        self.local_workers + others
    }

    /// `Planned`: the job is split along `plan` (kept in the record), or,
    /// with one segment or no plan, runs in one pass. A one pass already
    /// running is stopped, its slot freed, and the pieces ask for slots.
    pub(super) fn on_planned(&mut self, plan: Result<SegmentPlan, TranscodeError>) -> After {
        self.planning = false;
        match plan {
            Ok(plan) if plan.segments.len() > 1 && self.wants_plan() => {
                let one_pass = matches!(self.job.state, JobState::Running { .. });
                info!(job_id = %self.job.id, segments = plan.segments.len(), has_audio = plan.has_audio, one_pass, "job split");
                if one_pass {
                    self.stop_attempt();
                    self.release_slot();
                }
                self.record.split = Some(SplitRecord {
                    plan: plan.clone(),
                    done: Vec::new(),
                });
                self.dirty = true;
                self.split = Some(Split::new(plan, &[], |_| false));
                self.show_segments();
                self.publish(EventKind::Progress);
                if one_pass {
                    self.ask_slot();
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(job_id = %self.job.id, error = %e, "cannot cut the video: it runs in one pass")
            }
        }
        After::Settle
    }

    /// Dispatch of a split job: the next pending piece goes to `worker` as
    /// an attempt of its own (its number on disk first), and another slot
    /// is asked for while pieces are pending. With every piece done (a job
    /// taken over or restarted after its last piece), the join starts.
    pub(super) async fn dispatch_piece(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        worker: ActorRef<WorkerMsg>,
        node: NodeName,
    ) -> After {
        let Some(split) = &self.split else {
            return After::Nothing;
        };
        let next = split.next_pending();
        let ready_to_join = split.all_done() && split.joining.is_none();
        if self.job.status().is_terminal() || self.cancel_requested() || next.is_none() {
            self.release_worker(worker.get_id(), false);
            if ready_to_join && !self.job.status().is_terminal() {
                self.start_running();
                self.start_join(myself);
            }
            return After::Settle;
        }
        let Some((piece, work)) = next.and_then(|p| split.work(p).map(|w| (p, w))) else {
            // A piece the plan does not describe: nothing to hand out.
            self.release_worker(worker.get_id(), false);
            return After::Settle;
        };
        let previous = self.job.attempt;
        let attempt = previous.next();
        self.record.attempt = attempt;
        self.record.node = Some(node.clone());
        if let Err(e) = self.save().await {
            warn!(job_id = %self.job.id, error = %e, "cannot store the attempt number; dispatch later");
            self.record.attempt = previous;
            self.release_worker(worker.get_id(), false);
            self.ask_slot();
            return After::Settle;
        }
        self.job.attempt = attempt;
        let assignment = Assignment {
            job: self.job.id,
            attempt,
            options: self.job.options,
            owner: self.owner.clone(),
            owner_http: self.owner_http.clone(),
        };
        let worker_id = worker.get_id();
        if worker
            .cast(WorkerMsg::AssignPiece { assignment, work })
            .is_err()
        {
            self.release_worker(worker_id, false);
            self.ask_slot();
            return After::Settle;
        }
        info!(job_id = %self.job.id, node = %node, attempt = attempt.get(), ?piece, "piece dispatched");
        let run = Run {
            attempt,
            node: node.clone(),
            worker: worker_id,
            started: false,
            last_report: Instant::now(),
            progress: 0.0,
        };
        if let Some(split) = &mut self.split {
            split.pieces.insert(piece, PieceState::Running(run));
        }
        self.job.node = Some(node);
        self.start_running();
        self.show_segments();
        self.publish(EventKind::Progress);
        myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
        if self
            .split
            .as_ref()
            .is_some_and(|s| s.next_pending().is_some())
        {
            self.ask_slot();
        }
        After::Settle
    }

    /// A queued split job is running from its first piece on.
    fn start_running(&mut self) {
        if matches!(self.job.state, JobState::Queued) {
            self.attempt_started = Some(Instant::now());
            self.job.state = JobState::Running {
                progress: 0.0,
                eta_seconds: None,
                cancel_requested: false,
            };
            self.status_changed(None);
        }
    }

    /// A report on a piece's attempt; one about no running piece is stale.
    pub(super) fn on_piece_report(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        attempt: Attempt,
        report: AttemptReport,
    ) -> After {
        let Some(split) = &mut self.split else {
            return After::Nothing;
        };
        let Some(piece) = split.running_of(attempt) else {
            debug!(job_id = %self.job.id, attempt = attempt.get(), "stale piece report ignored");
            return After::Nothing;
        };
        let Some(run) = split.run_mut(piece) else {
            return After::Nothing;
        };
        run.last_report = Instant::now();
        match report {
            AttemptReport::Started { node } => {
                run.started = true;
                run.node = node;
            }
            AttemptReport::Progress(fraction) => {
                run.progress = run.progress.max(fraction.clamp(0.0, 1.0));
                self.show_progress();
            }
            AttemptReport::Probed(_) | AttemptReport::Alive => {}
            AttemptReport::Finished(output) => self.piece_done(myself, piece, output),
            // From a node that sends no report.
            AttemptReport::Ended(Ok(bytes)) => self.piece_done(
                myself,
                piece,
                Output {
                    bytes,
                    report: None,
                },
            ),
            AttemptReport::Ended(Err(error)) => self.end_split(JobState::Failed(error)),
            // Only a cancel the client asked for ends the job, and that one
            // ended it already.
            AttemptReport::Canceled => {
                self.piece_lost(piece, Loss::Interrupted, "its worker stopped it".into())
            }
            AttemptReport::Rejected => {
                let worker = run.worker;
                if let Some(split) = &mut self.split {
                    split.pieces.insert(piece, PieceState::Pending);
                }
                self.release_worker(worker, true);
                self.show_segments();
                self.ask_slot();
            }
            AttemptReport::Lost(reason) => self.piece_lost(piece, Loss::Interrupted, reason),
        }
        After::Settle
    }

    /// A piece is encoded: its file is kept under the job (and copied to
    /// the standby), the record says so, its slot is free; the last one
    /// starts the join.
    fn piece_done(&mut self, myself: &ActorRef<SupervisorMsg>, piece: Piece, output: Output) {
        let Some(run) = self.split.as_mut().and_then(|s| s.run_mut(piece)).cloned() else {
            return;
        };
        self.release_worker(run.worker, false);
        let from = paths::attempt_output(&self.data_dir, self.job.id, run.attempt);
        let kept = paths::piece(&self.data_dir, self.job.id, piece);
        if let Err(e) = std::fs::rename(&from, &kept) {
            self.end_split(JobState::Failed(TranscodeError::new(
                ErrorCode::Io,
                format!("a segment could not be stored: {e}"),
            )));
            return;
        }
        info!(job_id = %self.job.id, node = %run.node, attempt = run.attempt.get(), ?piece, bytes = output.bytes, "piece done");
        let done = DonePiece {
            piece,
            attempt: run.attempt,
            node: run.node,
            output,
        };
        if let Some(record) = &mut self.record.split {
            record.done.retain(|d| d.piece != piece);
            record.done.push(done.clone());
        }
        self.dirty = true;
        if let Some(split) = &mut self.split {
            split.pieces.insert(piece, PieceState::Done(done));
        }
        self.copy_piece(piece, kept);
        self.show_segments();
        self.show_progress();
        if self.split.as_ref().is_some_and(Split::all_done) {
            self.start_join(myself);
        }
    }

    /// Copies a finished piece to the standby, in a task.
    fn copy_piece(&self, piece: Piece, path: std::path::PathBuf) {
        let Some(standby) = self.standby_http.clone() else {
            return;
        };
        let (transfer, job) = (self.transfer.clone(), self.job.id);
        let standby_down = self.standby_down_check();
        tokio::spawn(
            async move {
                replication::copy_piece(&*transfer, &standby, job, piece, &path, standby_down)
                    .await;
            }
            .in_current_span(),
        );
    }

    /// A piece's attempt is lost: the piece alone runs again (its slot
    /// freed, its attempt told to stop wherever it still runs), or the job
    /// fails once too many were lost.
    fn piece_lost(&mut self, piece: Piece, loss: Loss, reason: String) {
        if self.requeue_piece(piece, &reason) {
            self.count_piece_loss(loss, reason);
        }
    }

    /// Puts a running piece back in line (its slot freed, its attempt told
    /// to stop wherever it still runs); returns whether it was running.
    fn requeue_piece(&mut self, piece: Piece, reason: &str) -> bool {
        let Some(run) = self.split.as_mut().and_then(|s| s.run_mut(piece)).cloned() else {
            return false;
        };
        if let Some(split) = &mut self.split {
            split.pieces.insert(piece, PieceState::Pending);
        }
        self.release_worker(run.worker, false);
        self.stop_piece(&run);
        warn!(job_id = %self.job.id, node = %run.node, attempt = run.attempt.get(), ?piece, reason = %reason, "piece lost");
        true
    }

    /// Counts one loss of the job (however many pieces it cost): the job
    /// fails once too many were lost, else its pending pieces ask for slots.
    fn count_piece_loss(&mut self, loss: Loss, reason: String) {
        if let Some(error) = count_loss(&mut self.losses, loss, &reason) {
            self.end_split(JobState::Failed(error));
            return;
        }
        self.record.lost_attempts = self.losses.worker;
        self.record.interrupted = self.losses.interrupted;
        self.dirty = true;
        self.show_segments();
        self.publish(EventKind::Progress);
        self.ask_slot();
    }

    /// `Watch` of a piece's attempt: lost past its deadlines, else watched
    /// again.
    pub(super) fn on_piece_watch(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        attempt: Attempt,
    ) -> After {
        let Some(split) = &self.split else {
            return After::Nothing;
        };
        let Some((piece, run)) = split.running().find(|(_, run)| run.attempt == attempt) else {
            return After::Nothing;
        };
        match overdue(run.started, run.last_report.elapsed()) {
            Some(reason) => self.piece_lost(piece, Loss::Worker, reason),
            None => {
                myself.send_after(WATCH_EVERY, move || SupervisorMsg::Watch(attempt));
            }
        }
        After::Settle
    }

    /// The pieces running on `node` (lost), or by `worker` (dead), run
    /// again elsewhere, counted as one loss; the others go on.
    pub(super) fn pieces_lost_with(
        &mut self,
        node: Option<&NodeName>,
        worker: Option<ActorId>,
        reason: &str,
    ) {
        let lost: Vec<Piece> = self
            .split
            .iter()
            .flat_map(Split::running)
            .filter(|(_, run)| node == Some(&run.node) || worker == Some(run.worker))
            .map(|(piece, _)| piece)
            .collect();
        // One node lost, or one worker dead, is one interruption of the
        // job, however many of its pieces ran there.
        let mut requeued = false;
        for piece in lost {
            requeued |= self.requeue_piece(piece, reason);
        }
        if requeued {
            self.count_piece_loss(Loss::Interrupted, reason.to_owned());
        }
    }

    /// Ends a split job now (failed, or canceled by its client): every
    /// running piece is told to stop, every slot freed, the job leaves the
    /// queue.
    pub(super) fn end_split(&mut self, state: JobState) {
        self.stop_pieces();
        self.show_segments();
        self.release_slot();
        let _ = self
            .gateway
            .cast(GatewayMsg::CanceledWhileQueued(self.job.id));
        self.finish(state);
    }

    /// Tells the workers of every running piece to stop it.
    pub(super) fn stop_pieces(&mut self) {
        let runs: Vec<Run> = self
            .split
            .iter()
            .flat_map(Split::running)
            .map(|(_, run)| run.clone())
            .collect();
        for run in &runs {
            self.stop_piece(run);
        }
        if let Some(split) = &mut self.split {
            for state in split.pieces.values_mut() {
                if matches!(state, PieceState::Running(_)) {
                    *state = PieceState::Pending;
                }
            }
        }
    }

    fn stop_piece(&self, run: &Run) {
        for cell in all_workers_of(&self.scope, &run.node) {
            let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Cancel {
                job: self.job.id,
                attempt: run.attempt,
            });
        }
    }

    /// Asks the gateway for one more slot, once at a time.
    pub(super) fn ask_slot(&mut self) {
        if !self.asking {
            self.asking = true;
            let _ = self.gateway.cast(GatewayMsg::DispatchFailed(self.job.id));
        }
    }

    /// Frees the slot of `worker`.
    fn release_worker(&self, worker: ActorId, rejected: bool) {
        let _ = self.gateway.cast(GatewayMsg::SlotFreed {
            job: self.job.id,
            worker: Some(worker),
            rejected,
        });
    }

    /// Puts the segments' state in the snapshot.
    pub(super) fn show_segments(&mut self) {
        self.job.segments = self.split.as_ref().map(Split::views).unwrap_or_default();
    }

    /// Moves the job's progress to the pieces' (never back).
    pub(super) fn show_progress(&mut self) {
        if let Some(fraction) = self.split.as_ref().map(Split::fraction) {
            self.show_segments();
            self.progress(fraction);
        }
    }

    /// Removes the pieces' files (the job ended).
    pub(super) fn remove_pieces(&self) {
        if let Some(split) = &self.split {
            for piece in split.pieces.keys() {
                let _ = std::fs::remove_file(paths::piece(&self.data_dir, self.job.id, *piece));
            }
        }
    }
}
