//! Supervision: the ends of the gateway's children, this node's workers
//! and its job supervisors.
//!
//! A child that stops when asked (a finished job's supervisor, a node
//! shutting down) is let go. A child that dies (it panics, its handler
//! returns an error, or it is killed) is dealt with: a worker is started
//! again, with the same arguments, and the attempt it held is reported lost
//! to its job's supervisor (which runs the job again, as after any lost
//! attempt); a job supervisor's job fails with code `internal`, on the
//! board, in the index and on disk, since the job's state died with it.

use std::time::{Instant, SystemTime};

use ractor::{ActorId, ActorRef, SupervisionEvent};
use tracing::{error, info};
use vidpress_transcode::{ErrorCode, TranscodeError};

use super::slots::take_slots;
use super::{spawn_worker, GatewayState, WorkerKind};
use crate::job::{JobId, JobSnapshot, JobState, JobStatus};
use crate::paths;
use crate::protocol::{GatewayMsg, SupervisorMsg, WorkerMsg};
use crate::record::{self, JobRecord, Outcome};

/// The exit reason ractor gives an actor that was killed.
const KILLED: &str = "killed";

/// Returns why a child died, or `None` if it stopped when asked: `failure`
/// is the error of a child that failed, `reason` the exit reason of one
/// that terminated.
pub(super) fn death(failure: Option<String>, reason: Option<&str>) -> Option<String> {
    failure.or_else(|| (reason == Some(KILLED)).then(|| KILLED.to_owned()))
}

/// Returns the snapshot of a job whose supervisor died: failed with code
/// `internal`, one event later.
pub(super) fn failed_snapshot(job: &JobSnapshot, error: TranscodeError) -> JobSnapshot {
    let mut failed = job.clone();
    failed.state = JobState::Failed(error);
    failed.updated_at = SystemTime::now();
    failed.seq = failed.seq.next();
    failed
}

/// The error of a job whose supervisor died.
fn supervisor_died_error() -> TranscodeError {
    TranscodeError::new(
        ErrorCode::Internal,
        "the job failed inside the service (its supervisor stopped unexpectedly); submit it again",
    )
}

impl GatewayState {
    /// Handles the end of a child.
    pub(super) async fn child_event(
        &mut self,
        myself: &ActorRef<GatewayMsg>,
        event: SupervisionEvent,
    ) {
        let (who, death) = match event {
            SupervisionEvent::ActorFailed(who, why) => (who, death(Some(why.to_string()), None)),
            SupervisionEvent::ActorTerminated(who, _, reason) => {
                (who, death(None, reason.as_deref()))
            }
            _ => return,
        };
        self.local_busy.remove(&who.get_id());
        let job = who.get_name().as_deref().and_then(JobId::from_actor_name);
        match (job, death) {
            // A job's supervisor that stopped (finished, or dropped): let
            // go of its reference.
            (Some(id), None) => {
                if let Some(entry) = self.jobs.get_mut(&id) {
                    entry.supervisor = None;
                }
            }
            (Some(id), Some(why)) => self.supervisor_died(id, &why),
            (None, Some(why)) => self.worker_died(myself, who.get_id(), &why).await,
            (None, None) => {}
        }
    }

    /// Starts a dead worker again and reports its attempt lost.
    async fn worker_died(&mut self, myself: &ActorRef<GatewayMsg>, id: ActorId, why: &str) {
        error!(node = %self.args.node, worker = %id, error = %why, "worker died");
        self.busy.remove(&id);
        self.cooldown.remove(&id);
        let mut lost = Vec::new();
        self.running.retain(|job, slots| {
            if !take_slots(slots, Some(id)).is_empty() {
                lost.push(*job);
            }
            !slots.is_empty()
        });
        for job in lost {
            // The supervisor retries the attempt that worker ran, as after
            // any lost attempt; one it has not handed to the worker yet
            // finds the worker gone.
            if let Some(supervisor) = self.supervisor(job) {
                let _ = supervisor.cast(SupervisorMsg::WorkerLost {
                    worker: id,
                    reason: format!("its worker on {} died", self.args.node),
                });
            }
        }
        if self.draining {
            // Shutting down: the slot is not needed any more.
            return;
        }
        let kind = if self.spares.remove(&id) {
            WorkerKind::Spare
        } else {
            WorkerKind::Regular
        };
        match spawn_worker(myself, &self.args, &self.inputs, kind).await {
            Ok(worker) => {
                if kind == WorkerKind::Spare {
                    self.spares.insert(worker.get_id());
                }
                info!(node = %self.args.node, worker = %worker.get_id(), ?kind, "worker started again")
            }
            Err(e) => error!(node = %self.args.node, error = %e, "cannot start a worker again"),
        }
        self.pump();
    }

    /// Fails the job of a dead supervisor, or drops it if it was never
    /// accepted (its submitter was not answered: the reply went with it).
    fn supervisor_died(&mut self, id: JobId, why: &str) {
        error!(job_id = %id, node = %self.args.node, error = %why, "job supervisor died");
        let Some(entry) = self.jobs.get_mut(&id) else {
            return;
        };
        entry.supervisor = None;
        let Some(published) = self.board.get(id) else {
            self.forget(id);
            let _ = std::fs::remove_dir_all(paths::job_dir(&self.args.data_dir, id));
            return;
        };
        if published.status().is_terminal() {
            // Its end stands; only its actor is gone.
            return;
        }
        entry.status = JobStatus::Failed;
        entry.finished = Some(Instant::now());
        self.queue.remove(id);
        for slot in self.running.remove(&id).unwrap_or_default() {
            self.busy.remove(&slot.worker.get_id());
            let _ = slot.worker.cast(WorkerMsg::Cancel {
                job: id,
                attempt: published.attempt,
            });
        }
        let error = supervisor_died_error();
        self.board
            .publish(&failed_snapshot(&published, error.clone()));
        self.record_failed(id, error);
        self.publish_load();
    }

    /// Marks a job's record on disk failed, and sends it to its standby.
    fn record_failed(&self, id: JobId, error: TranscodeError) {
        let path = paths::record(&self.args.data_dir, id);
        let written = JobRecord::read(&path).and_then(|mut record| {
            record.outcome = Some(Outcome::Failed { error });
            record.finished_at_ms = Some(record::to_ms(SystemTime::now()));
            record.write(&path)?;
            Ok(record.standby)
        });
        match written {
            Ok(Some(standby)) => {
                self.resync_finished(&standby, vec![id], std::time::Duration::ZERO)
            }
            Ok(None) => {}
            Err(e) => {
                error!(job_id = %id, node = %self.args.node, error = %e, "cannot mark the job failed on disk")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vidpress_cluster::NodeName;
    use vidpress_transcode::EncodeOptions;

    use super::*;
    use crate::counters::{Attempt, Seq};
    use crate::job::InputInfo;

    #[test]
    fn a_failed_or_killed_child_died() {
        assert_eq!(death(Some("boom".into()), None).as_deref(), Some("boom"));
        assert_eq!(death(None, Some("killed")).as_deref(), Some("killed"));
    }

    #[test]
    fn a_child_stopped_when_asked_did_not_die() {
        assert_eq!(death(None, None), None);
        assert_eq!(death(None, Some("retention expired")), None);
        assert_eq!(death(None, Some("finished: answered from the board")), None);
    }

    #[test]
    fn the_job_of_a_dead_supervisor_fails_with_code_internal_one_event_later() {
        let node: NodeName = "node-a".parse().expect("a valid node name");
        let running = JobSnapshot {
            id: JobId::new(&node),
            state: JobState::Running {
                progress: 0.5,
                eta_seconds: Some(3.0),
                cancel_requested: false,
            },
            attempt: Attempt::new(2),
            node: Some(node),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            options: EncodeOptions::default(),
            input: InputInfo {
                bytes: 1,
                media: None,
            },
            seq: Seq::new(4),
            tenant: None,
            segments: Vec::new(),
        };
        let failed = failed_snapshot(&running, supervisor_died_error());
        let JobState::Failed(error) = &failed.state else {
            panic!("not failed: {:?}", failed.state);
        };
        assert_eq!(error.code.as_str(), "internal");
        assert_eq!((failed.seq, failed.attempt), (Seq::new(5), Attempt::new(2)));
        assert!(failed.updated_at > running.updated_at);
    }
}
