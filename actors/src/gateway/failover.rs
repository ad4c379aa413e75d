//! Failover: what the gateway does when nodes go down and come back. The
//! standby takes over the jobs of a lost owner (only with a majority in
//! sight), and gives each a new standby; a node cut off from a possible
//! majority fences itself; standbys that come back are resynced. Which of
//! two copies of a job stays, once they meet, is `copies`'.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::ActorRef;
use tracing::{error, info, warn};
use vidpress_cluster::{MemberState, NodeName};

use super::GatewayState;
use crate::job::JobId;
use crate::paths;
use crate::protocol::{GatewayMsg, KeptCancel, SupervisorMsg, WorkerMsg};
use crate::record::Outcome;
use crate::replicas;
use crate::transfer::ReplicaFile;

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
