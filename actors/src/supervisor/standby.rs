//! The standby's copies, as the supervisor drives them: the new job's input
//! and record before the 202, the result and the completed record before
//! `completed` is said, a resync when the standby comes back, and telling
//! the gateway whether the standby is current. The copies themselves are
//! the crate's `replication`.

use std::path::PathBuf;

use ractor::ActorRef;
use tracing::{warn, Instrument};
use vidpress_cluster::{MemberState, NodeName};
use vidpress_transcode::Output;

use super::{After, SupervisorState};
use crate::counters::Attempt;
use crate::job::JobState;
use crate::paths;
use crate::protocol::{GatewayMsg, SupervisorMsg};
use crate::record::Outcome;
use crate::replication;
use crate::transfer::{ReplicaFile, TransferError};

impl SupervisorState {
    /// Completes the job with the result at `output`, once the result and
    /// then the completed record are on the standby, so that a download
    /// survives the loss of either node and a standby taking over never
    /// runs again a job a client saw end. The copy runs in a task that
    /// reports back with `ResultCopied`, so the job answers polls meanwhile.
    pub(super) fn copy_result(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        output: PathBuf,
        result: Output,
    ) {
        let Some(standby) = self.standby_http.clone() else {
            self.finish(JobState::Completed { output, result });
            return;
        };
        let (transfer, attempt, myself) = (self.transfer.clone(), self.job.attempt, myself.clone());
        let standby_down = self.standby_down_check();
        let ended = self.ended_record(Outcome::Completed {
            bytes: result.bytes,
            report: result.report.clone(),
        });
        tokio::spawn(
            async move {
                replication::copy_result(&*transfer, &standby, &output, &ended, standby_down).await;
                let _ = myself.cast(SupervisorMsg::ResultCopied { attempt, result });
            }
            .in_current_span(),
        );
    }

    /// `ResultCopied`: the result of `attempt` is on the standby (or could
    /// not be put there): the job is complete, or canceled if the client
    /// asked meanwhile.
    pub(super) fn on_result_copied(&mut self, attempt: Attempt, result: Output) -> After {
        if attempt == self.job.attempt && matches!(self.job.state, JobState::Running { .. }) {
            if self.cancel_requested() {
                self.finish(JobState::Canceled);
            } else {
                let output = paths::result(&self.data_dir, self.job.id);
                self.finish(JobState::Completed { output, result });
            }
        }
        After::Settle
    }

    /// Returns a check of whether the job's standby is down (or unknown) in
    /// the membership view; always false for a node on its own.
    pub(super) fn standby_down_check(&self) -> impl Fn() -> bool + Send + 'static {
        let (view, standby) = (self.view.clone(), self.record.standby.clone());
        move || {
            let (Some(view), Some(standby)) = (&view, &standby) else {
                return false;
            };
            view.borrow()
                .get(standby)
                .is_none_or(|m| m.state == MemberState::Down)
        }
    }

    /// `Resync`: sends the standby `node` what it needs to take the job
    /// over: the result (or, unfinished, the input), then the record, in a
    /// task.
    pub(super) fn resync(&self, myself: &ActorRef<SupervisorMsg>, node: &NodeName) -> After {
        let (Some(standby), Some(http)) = (&self.record.standby, &self.standby_http) else {
            return After::Settle;
        };
        if standby != node {
            return After::Settle;
        }
        let (transfer, http, record) = (self.transfer.clone(), http.clone(), self.record.clone());
        let (data_dir, version, myself) = (self.data_dir.clone(), self.version, myself.clone());
        tokio::spawn(
            async move {
                if replication::resync(&*transfer, &http, &record, &data_dir).await {
                    let _ = myself.cast(SupervisorMsg::RecordCopied(version));
                }
            }
            .in_current_span(),
        );
        After::Settle
    }

    /// `RecordCopied`: version `version` of the record is on the standby.
    pub(super) fn on_record_copied(&mut self, version: u64) -> After {
        self.copied = self.copied.max(version);
        After::Settle
    }

    /// Tells the gateway whether the standby holds the latest record, when
    /// that changed: a draining node waits for its standbys to be current.
    pub(super) fn report_sync(&mut self) {
        let Some(standby) = &self.record.standby else {
            return;
        };
        let synced = self.copied >= self.version;
        if synced != self.reported_synced {
            self.reported_synced = synced;
            let _ = self.gateway.cast(GatewayMsg::Synced {
                job: self.job.id,
                standby: standby.clone(),
                synced,
            });
        }
    }

    /// Copies the new job's input (unless `input_copied`: the standby has
    /// it already), then its record, to the standby.
    pub(super) async fn replicate_new(&self, input_copied: bool) -> Result<(), TransferError> {
        let Some(standby) = &self.standby_http else {
            return Ok(());
        };
        let copied = if input_copied {
            self.transfer.replicate_record(standby, &self.record).await
        } else {
            let input = paths::input(&self.data_dir, self.job.id);
            replication::copy_file_and_record(
                &*self.transfer,
                standby,
                ReplicaFile::Input,
                &input,
                &self.record,
            )
            .await
        };
        if let Err(e) = &copied {
            warn!(job_id = %self.job.id, standby = %standby, error = %e, "cannot copy the new job to its standby: refused");
        }
        copied
    }
}
