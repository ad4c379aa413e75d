//! The WorkerActor: runs one transcode at a time in a child process and
//! reports to the gateway of the node that owns the job.
//!
//! Workers join the process group `vidpress.workers.<node>`, so a gateway on
//! any node can find them and knows which node each runs on; a node's
//! spare workers, the same actor, join `vidpress.spares.<node>` instead,
//! and gateways hand them only to jobs whose attempt was lost. An attempt for
//! a job owned by another node first fetches the input from that node and
//! finally pushes the output back (through [`Transfer`]); a piece of a split
//! job (one segment, or the audio) runs the same way, its output the
//! piece's file; its reports travel
//! as cluster messages. The transcode itself runs in a tokio task that
//! drives the child process; the actor only starts, cancels and reaps that
//! task, so its handlers never block.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vidpress_cluster::NodeName;
use vidpress_transcode::driver::{self, ChildCommand};
use vidpress_transcode::{ChildEvent, Limits, Output, Task, TranscodeError, TranscodeJob};

use crate::counters::Attempt;
use crate::inputs::FetchedInputs;
use crate::job::JobId;
use crate::paths;
use crate::protocol::{gateway_of, Assignment, AttemptReport, GatewayMsg, PieceWork, WorkerMsg};
use crate::transfer::Transfer;

/// How often an attempt moving bytes tells its owner it is alive.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(5);

/// How a worker is set up.
pub struct WorkerArgs {
    pub node: NodeName,
    /// This node's data directory.
    pub data_dir: PathBuf,
    /// How to start the transcoder child process.
    pub command: ChildCommand,
    /// A child silent for this long is killed as hung.
    pub stall_timeout: Duration,
    /// What a transcode may cost here: this node's limits, not the owner's.
    pub limits: Limits,
    /// The process-group scope of the cluster this worker serves.
    pub scope: String,
    /// The process group it joins: its node's workers, or its node's
    /// spares (held back for jobs whose attempt was lost).
    pub group: String,
    /// Moves bytes for jobs owned by other nodes.
    pub transfer: Arc<dyn Transfer>,
    /// This node's gateway, told when this worker is busy or free.
    pub gateway: ActorRef<GatewayMsg>,
    /// The inputs of split jobs fetched for their pieces, shared by the
    /// node's workers.
    pub inputs: Arc<FetchedInputs>,
}

/// The attempt a worker is running.
struct Current {
    job: JobId,
    attempt: Attempt,
    task: JoinHandle<()>,
    owner: Owner,
}

impl Drop for Current {
    /// Stops the attempt's task, which kills the child, however the worker
    /// ends: a worker that dies (panics, or is killed) skips `post_stop`,
    /// and its state is dropped instead; its encoder must not outlive it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where an attempt's reports go: the gateway of the job's owner, looked up
/// in its process group at every send, because ractor_cluster replaces a
/// remote actor's reference whenever its session is re-established.
#[derive(Clone)]
struct Owner {
    scope: String,
    node: NodeName,
}

impl Owner {
    /// Sends a report; an owner that cannot be reached cannot be told, and
    /// its supervisor's report timeout takes over.
    fn report(&self, job: JobId, attempt: Attempt, report: AttemptReport) {
        let Some(gateway) = gateway_of(&self.scope, &self.node) else {
            debug!(job_id = %job, owner = %self.node, attempt = attempt.get(), "owner unreachable; report dropped");
            return;
        };
        let _ = gateway.cast(GatewayMsg::Report {
            job,
            attempt,
            report,
        });
    }
}

pub struct WorkerState {
    args: WorkerArgs,
    current: Option<Current>,
    draining: bool,
}

/// Runs one transcode at a time.
pub struct WorkerActor;

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join_scoped(
            args.scope.clone(),
            args.group.clone(),
            vec![myself.get_cell()],
        );
        Ok(WorkerState {
            args,
            current: None,
            draining: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Dropping the task's future kills the child: no encoder outlives its worker.
        if let Some(current) = state.current.take() {
            current.task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Assign(assignment) => state.start(myself, assignment, Task::Transcode),
            WorkerMsg::AssignPiece { assignment, work } => {
                let task = match work {
                    PieceWork::Segment(segment) => Task::Segment(segment),
                    PieceWork::Audio => Task::Audio,
                };
                state.start(myself, assignment, task);
            }
            WorkerMsg::Drain => {
                state.draining = true;
                ractor::pg::leave_scoped(
                    state.args.scope.clone(),
                    state.args.group.clone(),
                    vec![myself.get_cell()],
                );
            }
            WorkerMsg::Cancel { job, attempt } => {
                let Some(current) = state.take(job, attempt, &myself) else {
                    return Ok(());
                };
                current.task.abort();
                info!(job_id = %job, node = %state.args.node, attempt = attempt.get(), "attempt canceled");
                current.owner.report(job, attempt, AttemptReport::Canceled);
            }
            WorkerMsg::Interrupt { owner, reason } => {
                let Some(current) = state
                    .current
                    .take_if(|c| owner.as_ref().is_none_or(|o| *o == c.owner.node))
                else {
                    return Ok(());
                };
                state.tell_busy(&myself, false);
                current.task.abort();
                let (job, attempt) = (current.job, current.attempt);
                warn!(job_id = %job, node = %state.args.node, attempt = attempt.get(), owner = %current.owner.node, reason = %reason, "attempt interrupted");
                current
                    .owner
                    .report(job, attempt, AttemptReport::Lost(reason));
            }
            WorkerMsg::AttemptEnded {
                job,
                attempt,
                report: outcome,
            } => {
                let Some(current) = state.take(job, attempt, &myself) else {
                    return Ok(());
                };
                match &outcome {
                    AttemptReport::Finished(output) => {
                        info!(job_id = %job, node = %state.args.node, attempt = attempt.get(), bytes = output.bytes, "attempt finished")
                    }
                    AttemptReport::Ended(Err(e)) => {
                        warn!(job_id = %job, node = %state.args.node, attempt = attempt.get(), code = e.code.as_str(), error = %e, "attempt failed")
                    }
                    other => {
                        warn!(job_id = %job, node = %state.args.node, attempt = attempt.get(), outcome = ?other, "attempt lost")
                    }
                }
                current.owner.report(job, attempt, outcome);
            }
        }
        Ok(())
    }
}

impl WorkerState {
    /// Takes the current attempt if it is this one; the worker is then free.
    fn take(
        &mut self,
        job: JobId,
        attempt: Attempt,
        myself: &ActorRef<WorkerMsg>,
    ) -> Option<Current> {
        let current = self
            .current
            .take_if(|c| c.job == job && c.attempt == attempt)?;
        self.tell_busy(myself, false);
        Some(current)
    }

    fn tell_busy(&self, myself: &ActorRef<WorkerMsg>, busy: bool) {
        let _ = self.args.gateway.cast(GatewayMsg::WorkerBusy {
            worker: myself.get_id(),
            busy,
        });
    }

    /// Starts attempt `a`, whose child runs `task` (a whole transcode, or
    /// one piece of a split job).
    fn start(&mut self, myself: ActorRef<WorkerMsg>, a: Assignment, task: Task) {
        let owner = Owner {
            scope: self.args.scope.clone(),
            node: a.owner.clone(),
        };
        if self.current.is_some() || self.draining {
            owner.report(a.job, a.attempt, AttemptReport::Rejected);
            return;
        }
        info!(job_id = %a.job, node = %self.args.node, attempt = a.attempt.get(), owner = %a.owner, "attempt started");
        owner.report(
            a.job,
            a.attempt,
            AttemptReport::Started {
                node: self.args.node.clone(),
            },
        );
        self.tell_busy(&myself, true);
        let (job, attempt) = (a.job, a.attempt);
        let run = AttemptRun {
            node: self.args.node.clone(),
            local: a.owner == self.args.node,
            data_dir: self.args.data_dir.clone(),
            command: self.args.command.clone(),
            stall_timeout: self.args.stall_timeout,
            limits: self.args.limits,
            transfer: self.args.transfer.clone(),
            owner: owner.clone(),
            inputs: self.args.inputs.clone(),
            assignment: a,
            task,
        };
        let task = tokio::spawn(async move {
            let report = run.run().await;
            let _ = myself.cast(WorkerMsg::AttemptEnded {
                job,
                attempt,
                report,
            });
        });
        self.current = Some(Current {
            job,
            attempt,
            task,
            owner,
        });
    }
}

/// Everything one attempt needs, moved into its task.
struct AttemptRun {
    /// The node this worker runs on, for its logs.
    node: NodeName,
    local: bool,
    data_dir: PathBuf,
    command: ChildCommand,
    stall_timeout: Duration,
    limits: Limits,
    transfer: Arc<dyn Transfer>,
    owner: Owner,
    inputs: Arc<FetchedInputs>,
    assignment: Assignment,
    /// What the child does with the input.
    task: Task,
}

impl AttemptRun {
    /// Runs the attempt to its outcome: `Ended` for a transcode that ran,
    /// `Lost` when the bytes could not be moved (not the job's fault).
    async fn run(self) -> AttemptReport {
        let a = &self.assignment;
        if self.local {
            let job = TranscodeJob {
                input: paths::input(&self.data_dir, a.job),
                output: paths::attempt_output(&self.data_dir, a.job, a.attempt),
                options: a.options,
                limits: self.limits,
                task: self.task.clone(),
            };
            return match self.transcode(&job).await {
                Ok(output) => AttemptReport::Finished(output),
                Err(e) => AttemptReport::Ended(Err(e)),
            };
        }
        let work = paths::work_dir(&self.data_dir, a.job, a.attempt);
        let report = self.remote(&work).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        report
    }

    async fn remote(&self, work: &std::path::Path) -> AttemptReport {
        let a = &self.assignment;
        if let Err(e) = tokio::fs::create_dir_all(work).await {
            return AttemptReport::Lost(format!("cannot create a work folder: {e}"));
        }
        let mut job = TranscodeJob {
            input: work.join("input"),
            output: work.join("output.mp4"),
            options: a.options,
            limits: self.limits,
            task: self.task.clone(),
        };
        // A piece of a split job shares its input with the job's other
        // pieces here; a whole job fetches its own.
        let piece = matches!(self.task, Task::Segment(_) | Task::Audio);
        let (transfer, owner_http, id) = (self.transfer.clone(), a.owner_http.clone(), a.job);
        let fetch = |to: PathBuf| async move { transfer.fetch_input(&owner_http, id, &to).await };
        let fetched = if piece {
            self.keep_alive(self.inputs.lease(a.job, fetch))
                .await
                .map(Some)
        } else {
            fetch(job.input.clone()).await.map(|()| None)
        };
        let _lease = match fetched {
            Ok(lease) => lease,
            Err(e) => {
                return AttemptReport::Lost(format!("cannot fetch the input from {}: {e}", a.owner))
            }
        };
        if let Some(lease) = &_lease {
            job.input = lease.path().to_owned();
        }
        // The fault suite's breakdown of a recovery reads this line (input fetch).
        info!(job_id = %a.job, node = %self.node, attempt = a.attempt.get(), owner = %a.owner, "attempt input fetched");
        let output = match self.transcode(&job).await {
            Ok(output) => output,
            Err(e) => return AttemptReport::Ended(Err(e)),
        };
        let pushed = self
            .keep_alive(
                self.transfer
                    .push_output(&a.owner_http, a.job, a.attempt, &job.output),
            )
            .await;
        match pushed {
            Ok(()) => AttemptReport::Finished(output),
            Err(e) => AttemptReport::Lost(format!("cannot send the output to {}: {e}", a.owner)),
        }
    }

    /// Runs `work`, telling the owner every few seconds that the attempt is
    /// alive, since moving a large file reports no progress.
    async fn keep_alive<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let (job, attempt) = (self.assignment.job, self.assignment.attempt);
        let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
        tick.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => self.owner.report(job, attempt, AttemptReport::Alive),
            }
        }
    }

    async fn transcode(&self, job: &TranscodeJob) -> Result<Output, TranscodeError> {
        let (id, attempt) = (self.assignment.job, self.assignment.attempt);
        let owner = self.owner.clone();
        driver::run(&self.command, job, self.stall_timeout, move |event| {
            let progress = match event {
                ChildEvent::Probed(info) => AttemptReport::Probed(info),
                ChildEvent::Progress { fraction, .. } => AttemptReport::Progress(fraction),
                ChildEvent::Done { .. } | ChildEvent::Failed(_) => return,
            };
            owner.report(id, attempt, progress);
        })
        .await
    }
}
