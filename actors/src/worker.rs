//! The WorkerActor: runs one transcode at a time in a child process and
//! reports its progress to the job's supervisor.
//!
//! Workers join the `vidpress.workers` process group so that any gateway can
//! find them. The transcode itself runs in a tokio task that drives the child
//! process; the actor only starts, cancels and reaps that task, so its
//! handlers never block.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use vidpress_cluster::NodeName;
use vidpress_transcode::driver::{self, ChildCommand};
use vidpress_transcode::{ChildEvent, TranscodeError, TranscodeJob};

use crate::gateway::GatewayMsg;
use crate::job::JobId;
use crate::supervisor::{AttemptReport, SupervisorMsg};

/// The process group every worker joins.
pub const WORKER_GROUP: &str = "vidpress.workers";

/// One attempt of a job, handed to a worker.
pub struct Assignment {
    pub job: JobId,
    /// The attempt number, which fences reports of older attempts.
    pub attempt: u32,
    pub transcode: TranscodeJob,
    /// Where progress and the outcome go.
    pub supervisor: ActorRef<SupervisorMsg>,
}

/// Messages a worker handles.
pub enum WorkerMsg {
    /// Runs an attempt; refused with [`AttemptReport::Rejected`] when busy.
    Assign(Box<Assignment>),
    /// Stops the given attempt at once if it is the one running.
    Cancel { job: JobId, attempt: u32 },
    /// The running attempt's task finished (sent by the worker to itself).
    AttemptEnded {
        job: JobId,
        attempt: u32,
        result: Result<u64, TranscodeError>,
    },
}

/// How a worker is set up.
pub struct WorkerArgs {
    pub node: NodeName,
    /// Told each time this worker becomes free.
    pub gateway: ActorRef<GatewayMsg>,
    /// How to start the transcoder child process.
    pub command: ChildCommand,
    /// A child silent for this long is killed as hung.
    pub stall_timeout: Duration,
    /// The process-group scope of the cluster this worker serves.
    pub scope: String,
}

/// The attempt a worker is running.
struct Current {
    job: JobId,
    attempt: u32,
    task: JoinHandle<()>,
    supervisor: ActorRef<SupervisorMsg>,
}

pub struct WorkerState {
    args: WorkerArgs,
    current: Option<Current>,
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
            WORKER_GROUP.to_owned(),
            vec![myself.get_cell()],
        );
        Ok(WorkerState {
            args,
            current: None,
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
            WorkerMsg::Assign(assignment) => state.start(myself, *assignment),
            WorkerMsg::Cancel { job, attempt } => {
                let Some(current) = state
                    .current
                    .take_if(|c| c.job == job && c.attempt == attempt)
                else {
                    return Ok(());
                };
                current.task.abort();
                info!(job_id = %job, node = %state.args.node, attempt, "attempt canceled");
                let _ = current.supervisor.cast(SupervisorMsg::Report {
                    attempt,
                    report: AttemptReport::Canceled,
                });
                state.free(&myself);
            }
            WorkerMsg::AttemptEnded {
                job,
                attempt,
                result,
            } => {
                let Some(current) = state
                    .current
                    .take_if(|c| c.job == job && c.attempt == attempt)
                else {
                    return Ok(());
                };
                match &result {
                    Ok(bytes) => {
                        info!(job_id = %job, node = %state.args.node, attempt, bytes, "attempt finished")
                    }
                    Err(e) => {
                        warn!(job_id = %job, node = %state.args.node, attempt, code = e.code.as_str(), error = %e, "attempt failed")
                    }
                }
                let _ = current.supervisor.cast(SupervisorMsg::Report {
                    attempt,
                    report: AttemptReport::Ended(result),
                });
                state.free(&myself);
            }
        }
        Ok(())
    }
}

impl WorkerState {
    fn start(&mut self, myself: ActorRef<WorkerMsg>, a: Assignment) {
        if self.current.is_some() {
            let _ = a.supervisor.cast(SupervisorMsg::Report {
                attempt: a.attempt,
                report: AttemptReport::Rejected,
            });
            return;
        }
        info!(job_id = %a.job, node = %self.args.node, attempt = a.attempt, "attempt started");
        let _ = a.supervisor.cast(SupervisorMsg::Report {
            attempt: a.attempt,
            report: AttemptReport::Started {
                node: self.args.node.clone(),
            },
        });
        let (job, attempt) = (a.job, a.attempt);
        let supervisor = a.supervisor.clone();
        let command = self.args.command.clone();
        let stall_timeout = self.args.stall_timeout;
        let task = tokio::spawn(async move {
            let reports = supervisor.clone();
            let result = driver::run(&command, &a.transcode, stall_timeout, move |event| {
                let report = match event {
                    ChildEvent::Probed(info) => AttemptReport::Probed(info),
                    ChildEvent::Progress { fraction, .. } => AttemptReport::Progress(fraction),
                    ChildEvent::Done { .. } | ChildEvent::Failed(_) => return,
                };
                let _ = reports.cast(SupervisorMsg::Report { attempt, report });
            })
            .await;
            let _ = myself.cast(WorkerMsg::AttemptEnded {
                job,
                attempt,
                result,
            });
        });
        self.current = Some(Current {
            job,
            attempt,
            task,
            supervisor: a.supervisor,
        });
    }

    fn free(&self, myself: &ActorRef<WorkerMsg>) {
        let _ = self
            .args
            .gateway
            .cast(GatewayMsg::WorkerIdle(myself.clone()));
    }
}
impl ractor::Message for WorkerMsg {}
