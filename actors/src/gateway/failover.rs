//! Failover: what the gateway does when nodes go down and come back. The
//! standby takes over the jobs of a lost owner (only with a majority in
//! sight); a node cut off from a possible majority fences itself; when a
//! former owner returns the two copies of a job are compared and one gives
//! way; standbys that come back are resynced.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::ActorRef;
use tracing::{error, info, warn};
use vidpress_cluster::{MemberState, NodeName};

use super::GatewayState;
use crate::counters::Epoch;
use crate::job::{node_tag, JobId};
use crate::paths;
use crate::protocol::{GatewayMsg, KeptCancel, SupervisorMsg, WorkerMsg};
use crate::record::{JobRecord, Outcome};
use crate::replicas;
use crate::replication;
use crate::transfer::{Relinquished, ReplicaFile};

/// After a former owner kept its finished copy, its standby (the node that
/// had taken the job over) is sent the copy again this much later, once it
/// has dropped its own.
const RESYNC_AFTER_YIELD: Duration = Duration::from_secs(2);
/// How long a job supervisor that gives its job up is waited for.
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// Returns whether a node seeing `up` of the `known` nodes (itself
/// included) sees a majority: more than half.
pub(super) fn sees_majority(up: usize, known: usize) -> bool {
    up * 2 > known
}

/// Returns whether a node seeing `up` of the `known` nodes is cut off: the
/// nodes out of its sight are more than half, so they could form a
/// majority without it and take its jobs over.
pub(super) fn is_cut_off(up: usize, known: usize) -> bool {
    known.saturating_sub(up) * 2 > known
}

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
    /// A node is down: attempts here for its jobs stop (it, or whoever takes
    /// its jobs over, runs them again), its jobs this node stands by for are
    /// taken over, and supervisors whose attempt ran there are told.
    pub(super) async fn node_down(&mut self, myself: &ActorRef<GatewayMsg>, node: &NodeName) {
        self.interrupt_local(Some(node), format!("its owner {node} is down"));
        self.fence();
        self.take_over(myself, node).await;
        for (job, slots) in &self.running {
            if slots.iter().any(|slot| slot.node == *node) {
                if let Some(supervisor) = self.supervisor(*job) {
                    let _ = supervisor.cast(SupervisorMsg::NodeLost(node.clone()));
                }
            }
        }
    }

    /// A node is up again: jobs taken over from it are relinquished there,
    /// and it is sent the copies it may have missed.
    pub(super) fn node_up(&mut self, myself: &ActorRef<GatewayMsg>, node: &NodeName) {
        self.relinquish_to(myself, node);
        // It may have missed copies of the jobs it stands by for.
        let mut finished = Vec::new();
        for (id, entry) in &self.jobs {
            let resync = |s: &ActorRef<SupervisorMsg>| s.cast(SupervisorMsg::Resync(node.clone()));
            if entry.supervisor.as_ref().is_none_or(|s| resync(s).is_err()) {
                finished.push(*id);
            }
        }
        self.resync_finished(node, finished, Duration::ZERO);
        // A majority may be in sight again: take over what is still
        // owned by nodes that are down, once this node had the time
        // to see them again if they are alive (coming back from
        // isolation, the view fills one node at a time).
        if let Some(cluster) = &self.args.cluster {
            myself.send_after(cluster.rejoin_window, || GatewayMsg::TakeOverDown);
        }
    }

    /// A rejoin window after a node came back: takes over the jobs of nodes
    /// still down, then fences or resumes.
    pub(super) async fn take_over_down(&mut self, myself: &ActorRef<GatewayMsg>) {
        for down in self.down_members() {
            self.take_over(myself, &down).await;
        }
        // Once the nodes that took this node's jobs over in its
        // absence had the rejoin window to give them back.
        self.fence();
    }

    /// Keeps a cancel asked of this node's copy of `id` beside it, durably:
    /// handled in turn with takeovers, so the copy is either still a copy
    /// (the marker moves with it into the job's folder, where the
    /// supervisor that takes it over finds it) or taken over already (then
    /// the caller cancels the job as this node's).
    pub(super) async fn keep_cancel(&mut self, id: JobId) -> KeptCancel {
        if self.jobs.contains_key(&id) {
            return KeptCancel::TakenOver;
        }
        let folder = replicas::dir(&self.args.data_dir, id);
        if !folder.is_dir() {
            return KeptCancel::NoCopy;
        }
        let marker = paths::cancel_requested(&folder);
        let written = tokio::task::spawn_blocking(move || {
            std::fs::File::create(&marker)?.sync_all()?;
            std::fs::File::open(&folder)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written);
        match written {
            Ok(()) => KeptCancel::Kept,
            Err(e) => KeptCancel::Failed(e.to_string()),
        }
    }

    /// Takes over the jobs `owner` held and this node stands by for: their
    /// copies become this node's jobs under a new epoch, unfinished ones are
    /// queued for a new attempt.
    async fn take_over(&mut self, myself: &ActorRef<GatewayMsg>, owner: &NodeName) {
        if !self.sees_majority() {
            // Cut off from most of the cluster, this node cannot tell a dead
            // owner from its own isolation: taking over could run a job twice.
            warn!(node = %self.args.node, owner = %owner, "owner lost but no majority in sight: no takeover");
            return;
        }
        // Finished jobs' copies for their new standbys, sent one after the
        // other: a lost node may leave many behind.
        let mut finished: BTreeMap<NodeName, Vec<JobId>> = BTreeMap::new();
        for replica in replicas::list(&self.args.data_dir) {
            let Some(mut record) = replica.record() else {
                continue;
            };
            if record.owner.as_ref() != Some(owner) || self.jobs.contains_key(&record.id) {
                continue;
            }
            let id = record.id;
            if matches!(record.outcome, Some(Outcome::Completed { .. }))
                && !replica.has(ReplicaFile::Result)
            {
                // The owner finished but could not copy the result here: the
                // job must run again to have one.
                warn!(job_id = %id, node = %self.args.node, attempt = record.attempt.get(), owner = %owner, "taken-over copy is completed without its result: running it again");
                record.outcome = None;
                record.finished_at_ms = None;
            }
            record.epoch = record.epoch.next();
            record.owner = Some(self.args.node.clone());
            // The owner's copy is lost with it: a new standby among the
            // nodes up keeps the job on two nodes, so that it also
            // survives the loss of this one.
            record.standby = self.pick_standby();
            if let Err(e) = replicas::promote(&self.args.data_dir, &replica, &record) {
                error!(job_id = %id, node = %self.args.node, attempt = record.attempt.get(), owner = %owner, error = %e, "cannot take the job over");
                continue;
            }
            let (epoch, unfinished, bytes, attempt, standby) = (
                record.epoch,
                record.outcome.is_none(),
                record.input_bytes,
                record.attempt,
                record.standby.clone(),
            );
            let supervisor = match self.spawn_supervisor(myself, record, false).await {
                Ok(supervisor) => supervisor,
                Err(e) => {
                    error!(job_id = %id, node = %self.args.node, attempt = attempt.get(), error = %e, "cannot start the taken-over job");
                    continue;
                }
            };
            if let Some(standby) = &standby {
                // Its new standby is sent the whole copy: the input (or the
                // result), then the record. A finished job's supervisor
                // may stop at once, so its copy is sent from disk.
                let resync = SupervisorMsg::Resync(standby.clone());
                if !unfinished || supervisor.cast(resync).is_err() {
                    finished.entry(standby.clone()).or_default().push(id);
                }
            }
            self.taken_over.insert(id, (owner.clone(), epoch));
            if unfinished {
                // Its owner is lost, and it was accepted before anything
                // queued here since: first in line, with the spares.
                self.recovering.insert(id);
                self.queue.push_recovering(id, bytes);
            }
            let standby = standby.as_ref().map_or("none", NodeName::as_str);
            warn!(job_id = %id, owner = %owner, node = %self.args.node, attempt = attempt.get(), epoch = epoch.get(), standby, "job taken over from a lost owner");
        }
        for (standby, jobs) in finished {
            self.resync_finished(&standby, jobs, Duration::ZERO);
        }
        // Dispatches the jobs taken over now rather than at the next tick.
        self.pump();
    }

    /// Stops this node's attempts and its dispatching when it is cut off
    /// from nodes that could form a majority without it: they may take its
    /// jobs over, each with an attempt of its own (ractor_cluster has no
    /// fencing, so two live attempts of a job would run until the cut
    /// heals). Resumes dispatching once such a majority is in sight again.
    fn fence(&mut self) {
        let cut_off = self.args.cluster.as_ref().is_some_and(|cluster| {
            let view = cluster.view.borrow();
            is_cut_off(view.up().count(), view.members.len())
        });
        // The board holds the flag: polls read it there, and so does `pump`.
        if cut_off == self.board.cut_off() {
            return;
        }
        self.board.set_cut_off(cut_off);
        if cut_off {
            warn!(node = %self.args.node, "cut off from a possible majority: stopping this node's attempts");
            self.interrupt_local(None, "this node was cut off from the majority".into());
        } else {
            info!(node = %self.args.node, "a majority is in sight again: dispatching");
            self.pump();
        }
    }

    /// Tells this node's workers to stop their attempts for jobs of `owner`
    /// (of any owner with `None`).
    fn interrupt_local(&self, owner: Option<&NodeName>, reason: String) {
        for cell in self.local_workers() {
            let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Interrupt {
                owner: owner.cloned(),
                reason: reason.clone(),
            });
        }
    }

    /// Returns whether this node sees a majority of the known nodes up (a
    /// node on its own always does).
    fn sees_majority(&self) -> bool {
        self.args.cluster.as_ref().is_none_or(|cluster| {
            let view = cluster.view.borrow();
            sees_majority(view.up().count(), view.members.len())
        })
    }

    /// Returns the known nodes that are down.
    fn down_members(&self) -> Vec<NodeName> {
        self.args.cluster.as_ref().map_or_else(Vec::new, |cluster| {
            let view = cluster.view.borrow();
            view.members
                .values()
                .filter(|m| m.state == MemberState::Down)
                .map(|m| m.name.clone())
                .collect()
        })
    }

    /// Tells a node that came back which of its jobs this node now owns:
    /// those taken over from it, and those it accepted (the tag in their ID)
    /// and this node took over from another after it (the node they went to
    /// is lost too, and cannot tell it). Where the former owner keeps its
    /// copy (it finished the job while this node's copy did not), this
    /// node's copy gives way instead.
    fn relinquish_to(&self, myself: &ActorRef<GatewayMsg>, node: &NodeName) {
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
    fn a_majority_is_more_than_half() {
        assert!(sees_majority(2, 3));
        assert!(!sees_majority(1, 2));
        assert!(!sees_majority(2, 4));
        assert!(sees_majority(1, 1));
    }

    #[test]
    fn a_node_is_cut_off_when_more_than_half_are_out_of_sight() {
        assert!(is_cut_off(1, 3));
        assert!(!is_cut_off(2, 3));
        assert!(!is_cut_off(1, 1));
    }

    #[test]
    fn half_out_of_sight_is_not_cut_off() {
        // Neither half can form a majority without the other: nobody takes
        // this node's jobs over, so it keeps running them.
        assert!(!is_cut_off(2, 4));
        assert!(!is_cut_off(1, 2));
        // Yet neither half may take the other's jobs over.
        assert!(!sees_majority(2, 4));
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
