//! Copies of a job that meet: when a former owner returns, or a node that
//! stalled asks, the two copies are compared ([`mine_is_kept`]) and one
//! gives way, its own standby told to drop the copy it held; a node that
//! gave a job up remembers it.

use std::time::Duration;

use ractor::ActorRef;
use tracing::{info, warn};
use vidpress_cluster::NodeName;

use super::GatewayState;
use crate::counters::Epoch;
use crate::job::{node_tag, JobId};
use crate::paths;
use crate::protocol::{GatewayMsg, SupervisorMsg};
use crate::record::JobRecord;
use crate::replication;
use crate::transfer::Relinquished;

/// After a former owner kept its finished copy, its standby (the node that
/// had taken the job over) is sent the copy again this much later, once it
/// has dropped its own.
const RESYNC_AFTER_YIELD: Duration = Duration::from_secs(2);
/// How long a job supervisor that gives its job up is waited for.
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// One of the two copies of a job after a partition.
#[derive(Clone, Copy, Debug)]
pub(super) struct Copy {
    pub finished: bool,
    pub epoch: Epoch,
}

/// Returns whether `mine` is kept over `theirs`: a finished copy wins over
/// an unfinished one (running a finished job again would duplicate it),
/// else the later epoch wins, and on a tie the copy asked keeps its own.
pub(super) fn mine_is_kept(mine: Copy, theirs: Copy) -> bool {
    (mine.finished, mine.epoch) >= (theirs.finished, theirs.epoch)
}

impl GatewayState {
    /// Tells a node that came back which of its jobs this node now owns:
    /// those taken over from it, and those it accepted (the tag in their ID)
    /// and this node took over from another after it (the node they went to
    /// is lost too, and cannot tell it). Where the former owner keeps its
    /// copy (it finished the job while this node's copy did not), this
    /// node's copy gives way instead.
    pub(super) fn relinquish_to(&self, myself: &ActorRef<GatewayMsg>, node: &NodeName) {
        let Some(http) = self.http_of(node) else {
            return;
        };
        for (job, (owner, epoch)) in &self.taken_over {
            if owner != node && job.owner_tag() != node_tag(node) {
                continue;
            }
            let finished = self.jobs.get(job).is_some_and(|e| e.status.is_terminal());
            let attempt = self.published_attempt(*job);
            let (transfer, http, job, epoch, myself, node) = (
                self.args.transfer.clone(),
                http.clone(),
                *job,
                *epoch,
                myself.clone(),
                self.args.node.clone(),
            );
            tokio::spawn(async move {
                match transfer.relinquish(&http, job, epoch, finished).await {
                    Ok(Relinquished::GaveWay) => {}
                    Ok(Relinquished::Kept) => {
                        let _ = myself.cast(GatewayMsg::FormerOwnerKept(job));
                    }
                    Err(e) => {
                        warn!(job_id = %job, node = %node, attempt = attempt.get(), error = %e, "cannot tell the former owner")
                    }
                }
            });
        }
    }

    /// Compares this node's copy of a job with the copy another node took
    /// over under `epoch` (see [`mine_is_kept`]). Drops this node's copy if
    /// it loses; returns `true` when this node keeps its copy.
    pub(super) async fn keeps_own_copy(
        &mut self,
        job: JobId,
        epoch: Epoch,
        other_finished: bool,
    ) -> bool {
        if !self.jobs.contains_key(&job) {
            return false;
        }
        let Ok(record) = JobRecord::read(&paths::record(&self.args.data_dir, job)) else {
            return false;
        };
        let mine = Copy {
            finished: record.outcome.is_some(),
            epoch: record.epoch,
        };
        let theirs = Copy {
            finished: other_finished,
            epoch,
        };
        if mine_is_kept(mine, theirs) {
            if mine.finished && !theirs.finished {
                info!(job_id = %job, node = %self.args.node, attempt = record.attempt.get(), epoch = record.epoch.get(), "job finished here: the copy taken over gives way");
                // The other node held the standby's copy: send it again
                // once that node has dropped its own.
                if let Some(standby) = record.standby.filter(|s| *s != self.args.node) {
                    self.resync_finished(&standby, vec![job], RESYNC_AFTER_YIELD);
                }
            }
            return true;
        }
        self.abandon(job).await;
        warn!(job_id = %job, node = %self.args.node, attempt = record.attempt.get(), epoch = epoch.get(), "job given up to the node that took it over");
        false
    }

    /// Sends the standby `node` its copies of finished jobs (whose actors
    /// have stopped) from disk, after `delay`, in a task.
    pub(super) fn resync_finished(&self, node: &NodeName, jobs: Vec<JobId>, delay: Duration) {
        let Some(http) = self.http_of(node) else {
            return;
        };
        let records: Vec<JobRecord> = jobs
            .into_iter()
            .filter_map(|id| JobRecord::read(&paths::record(&self.args.data_dir, id)).ok())
            .filter(|r| r.standby.as_ref() == Some(node))
            .collect();
        if records.is_empty() {
            return;
        }
        let (transfer, data_dir) = (self.args.transfer.clone(), self.args.data_dir.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for record in records {
                replication::resync(&*transfer, &http, &record, &data_dir).await;
            }
        });
    }

    /// Drops this node's unfinished copy of a job another node kept its own
    /// copy of (see [`mine_is_kept`]), logging `why`: a former owner that
    /// had finished it, or a standby that took it over while this node
    /// stalled.
    pub(super) async fn give_way(&mut self, job: JobId, why: &str) {
        let Some(entry) = self.jobs.get(&job) else {
            return;
        };
        if entry.status.is_terminal() {
            // Finished here too meanwhile: both copies stand, the same result.
            return;
        }
        let attempt = self.published_attempt(job);
        self.abandon(job).await;
        warn!(job_id = %job, node = %self.args.node, attempt = attempt.get(), "{why}");
    }

    /// This node stalled for long enough that the others may have found it
    /// down: the standby of each of its unfinished jobs is asked at once
    /// whether it took the job over (as a taker tells a former owner it sees
    /// again, with the copies compared there), rather than when the standby
    /// next sees this node up, which may take a redial. Meanwhile the HTTP
    /// layer asks the standby before answering (see `Lapses`).
    pub(super) fn ask_standbys(&self, myself: &ActorRef<GatewayMsg>) {
        for (id, entry) in &self.jobs {
            if entry.status.is_terminal() {
                continue;
            }
            let Ok(record) = JobRecord::read(&paths::record(&self.args.data_dir, *id)) else {
                continue;
            };
            let Some(standby) = record.standby.filter(|s| *s != self.args.node) else {
                continue;
            };
            let Some(http) = self.http_of(&standby) else {
                continue;
            };
            let (transfer, myself, job, epoch) = (
                self.args.transfer.clone(),
                myself.clone(),
                *id,
                record.epoch,
            );
            tokio::spawn(async move {
                match transfer.relinquish(&http, job, epoch, false).await {
                    Ok(Relinquished::Kept) => {
                        let _ = myself.cast(GatewayMsg::TakenOverMeanwhile(job));
                    }
                    Ok(Relinquished::GaveWay) => {}
                    Err(e) => {
                        warn!(job_id = %job, standby = %standby, error = %e, "cannot ask the standby whether it took the job over")
                    }
                }
            });
        }
    }

    /// Drops this node's copy of a job held elsewhere: its attempt stops, its
    /// files go, its supervisor stops, all before this returns, so a request
    /// answered after it is routed to the other copy.
    async fn abandon(&mut self, job: JobId) {
        let given_up = JobRecord::read(&paths::record(&self.args.data_dir, job)).ok();
        if let Some(supervisor) = self.supervisor(job) {
            // The supervisor never calls the gateway, so this cannot deadlock.
            let _ = ractor::call_t!(supervisor, SupervisorMsg::DropCopy, 5_000);
            let reason = Some("the job is held by another node".to_owned());
            let _ = supervisor.stop_and_wait(reason, Some(ABANDON_WAIT)).await;
        }
        // A finished job's actor had stopped already: its files go here.
        let _ = std::fs::remove_dir_all(paths::job_dir(&self.args.data_dir, job));
        self.forget(job);
        self.board.give_up(job);
        if let Some(record) = given_up {
            self.drop_standby_copy(&record);
        }
    }

    /// Tells the standby of a job this node gave up to drop its copy: the
    /// node that holds the job now keeps its own standby, and this copy,
    /// stale, must never be taken over (if this node is lost later, its
    /// standby would run the job a second time).
    fn drop_standby_copy(&self, given_up: &JobRecord) {
        let Some(standby) = given_up.standby.as_ref().filter(|s| **s != self.args.node) else {
            return;
        };
        let Some(http) = self.http_of(standby) else {
            return;
        };
        let (transfer, job, epoch) = (self.args.transfer.clone(), given_up.id, given_up.epoch);
        let standby = standby.clone();
        tokio::spawn(async move {
            if let Err(e) = transfer.drop_given_up(&http, job, epoch).await {
                warn!(job_id = %job, standby = %standby, error = %e, "cannot tell the standby to drop its copy of a job given up");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(finished: bool, epoch: u32) -> Copy {
        Copy {
            finished,
            epoch: Epoch::new(epoch),
        }
    }

    #[test]
    fn a_finished_copy_is_kept_over_an_unfinished_one() {
        assert!(mine_is_kept(copy(true, 0), copy(false, 1)));
        assert!(!mine_is_kept(copy(false, 1), copy(true, 0)));
    }

    #[test]
    fn between_alike_copies_the_later_epoch_is_kept() {
        assert!(!mine_is_kept(copy(false, 0), copy(false, 1)));
        assert!(mine_is_kept(copy(false, 2), copy(false, 1)));
        assert!(!mine_is_kept(copy(true, 0), copy(true, 1)));
    }

    #[test]
    fn on_a_tie_the_copy_asked_is_kept() {
        assert!(mine_is_kept(copy(false, 1), copy(false, 1)));
        assert!(mine_is_kept(copy(true, 1), copy(true, 1)));
    }
}
