//! The job index: the status of every job owned here, for listings and
//! this node's figures, kept current by supervisors' status changes; and
//! the routing of workers' reports to the supervisors it holds.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use ractor::RpcReplyPort;
use vidpress_cluster::{MemberState, NodeName};

use super::{GatewayState, JobEntry};
use crate::counters::Attempt;
use crate::job::{JobId, JobSnapshot, JobStatus};
use crate::protocol::{AttemptReport, NodeStats, SupervisorMsg};
use crate::tenant::Tenant;

/// Returns up to `limit` job IDs, newest first, of the jobs to `keep`,
/// older than `before` if given.
pub(super) fn list<E>(
    jobs: &BTreeMap<JobId, E>,
    keep: impl Fn(&E) -> bool,
    before: Option<JobId>,
    limit: usize,
) -> Vec<JobId> {
    let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
    jobs.range((Bound::Unbounded, upper))
        .rev()
        .filter(|(_, e)| keep(e))
        .take(limit)
        .map(|(id, _)| *id)
        .collect()
}

/// Counts jobs by status, every status listed in `JobStatus::ALL` order.
pub(super) fn count_by_status(
    statuses: impl Iterator<Item = JobStatus>,
) -> Vec<(JobStatus, usize)> {
    // One pass over the jobs: the variants index `JobStatus::ALL`.
    let mut counts = [0; JobStatus::ALL.len()];
    for status in statuses {
        counts[status as usize] += 1;
    }
    JobStatus::ALL.into_iter().zip(counts).collect()
}

/// Returns the status a job's index entry takes on a change to `new`: a
/// terminal status stays (a change a supervisor sent before it died may
/// arrive after the gateway failed its job).
pub(super) fn next_status(current: JobStatus, new: JobStatus) -> JobStatus {
    if current.is_terminal() {
        current
    } else {
        new
    }
}

impl GatewayState {
    pub(super) fn on_list(
        &self,
        status: Option<JobStatus>,
        tenant: Option<Tenant>,
        before: Option<JobId>,
        limit: usize,
        reply: RpcReplyPort<Vec<JobId>>,
    ) {
        let keep = |e: &JobEntry| {
            status.is_none_or(|s| s == e.status)
                && tenant.as_ref().is_none_or(|t| e.tenant.as_ref() == Some(t))
        };
        let _ = reply.send(list(&self.jobs, keep, before, limit));
    }

    pub(super) fn on_stats(&self, reply: RpcReplyPort<NodeStats>) {
        let _ = reply.send(self.stats());
    }

    /// Passes a worker's report to the job's supervisor, if it runs.
    pub(super) fn route_report(&self, job: JobId, attempt: Attempt, report: AttemptReport) {
        if let Some(supervisor) = self.supervisor(job) {
            let _ = supervisor.cast(SupervisorMsg::Report { attempt, report });
        }
    }

    /// Notes a job's new status; a completed run refines the speed estimate.
    pub(super) fn status_changed(
        &mut self,
        id: JobId,
        status: JobStatus,
        ran: Option<(u64, Duration)>,
    ) {
        if let Some(entry) = self.jobs.get_mut(&id) {
            if !entry.status.is_terminal() && status.is_terminal() {
                entry.finished = Some(Instant::now());
                self.recovering.remove(&id);
            }
            entry.status = next_status(entry.status, status);
        }
        if let Some((bytes, took)) = ran {
            self.seconds_per_byte =
                super::estimate::speed_average(self.seconds_per_byte, bytes, took);
        }
    }

    /// Notes whether the standby of a job owned here holds its latest record.
    pub(super) fn synced(&mut self, job: JobId, standby: NodeName, synced: bool) {
        if synced {
            self.unsynced.remove(&job);
        } else if self.jobs.contains_key(&job) {
            self.unsynced.insert(job, standby);
        }
    }

    /// Drops every trace of a job from the gateway's state.
    pub(super) fn forget(&mut self, job: JobId) {
        self.board.remove(job);
        self.jobs.remove(&job);
        self.queue.remove(job);
        self.idempotency.retain(|_, (_, id)| *id != job);
        self.taken_over.remove(&job);
        self.unsynced.remove(&job);
        self.recovering.remove(&job);
    }

    /// Returns a job's snapshot: from the board, or, for a job still being
    /// accepted (not on the board yet), from its supervisor once accepted.
    pub(super) async fn snapshot(&self, id: JobId) -> Option<JobSnapshot> {
        if let Some(job) = self.board.get(id) {
            return Some(JobSnapshot::clone(&job));
        }
        // The supervisor never calls the gateway, so this cannot deadlock.
        ractor::call_t!(self.supervisor(id)?, SupervisorMsg::GetSnapshot, 5_000).ok()
    }

    /// Returns the attempt a job's supervisor last published, for logs.
    pub(super) fn published_attempt(&self, id: JobId) -> Attempt {
        self.board
            .get(id)
            .map_or(Attempt::default(), |published| published.attempt)
    }

    fn stats(&self) -> NodeStats {
        let jobs = count_by_status(self.jobs.values().map(|e: &JobEntry| e.status));
        let load = self.load();
        NodeStats {
            node: self.args.node.clone(),
            workers: load.workers,
            busy: load.busy,
            queued: load.queued,
            spare: load.spare,
            spare_busy: load.spare_busy,
            active: jobs
                .iter()
                .filter(|(status, _)| !status.is_terminal())
                .map(|(_, n)| n)
                .sum(),
            draining: self.draining,
            unsynced: self.unsynced_standbys_up(),
            jobs,
        }
    }

    /// Counts the jobs whose standby is up and lacks their latest record.
    fn unsynced_standbys_up(&self) -> usize {
        let Some(cluster) = &self.args.cluster else {
            return 0;
        };
        let view = cluster.view.borrow();
        self.unsynced
            .values()
            .filter(|standby| {
                view.get(standby)
                    .is_some_and(|m| m.state != MemberState::Down)
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<JobId> {
        let node = "node-a".parse().expect("a valid node name");
        let mut ids: Vec<JobId> = (0..n).map(|_| JobId::new(&node)).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_listing_is_newest_first_and_bounded() {
        let ids = ids(4);
        let jobs: BTreeMap<JobId, JobStatus> =
            ids.iter().map(|id| (*id, JobStatus::Queued)).collect();
        let listed = list(&jobs, |_| true, None, 3);
        assert_eq!(listed, vec![ids[3], ids[2], ids[1]]);
    }

    #[test]
    fn a_listing_pages_on_from_before() {
        let ids = ids(4);
        let jobs: BTreeMap<JobId, JobStatus> =
            ids.iter().map(|id| (*id, JobStatus::Queued)).collect();
        let listed = list(&jobs, |_| true, Some(ids[2]), 10);
        assert_eq!(listed, vec![ids[1], ids[0]]);
    }

    #[test]
    fn a_listing_keeps_only_the_status_asked() {
        let ids = ids(3);
        let jobs: BTreeMap<JobId, JobStatus> = [
            (ids[0], JobStatus::Completed),
            (ids[1], JobStatus::Queued),
            (ids[2], JobStatus::Completed),
        ]
        .into();
        let listed = list(&jobs, |s| *s == JobStatus::Completed, None, 10);
        assert_eq!(listed, vec![ids[2], ids[0]]);
    }

    #[test]
    fn a_terminal_status_stays() {
        assert_eq!(
            next_status(JobStatus::Queued, JobStatus::Running),
            JobStatus::Running
        );
        assert_eq!(
            next_status(JobStatus::Running, JobStatus::Failed),
            JobStatus::Failed
        );
        assert_eq!(
            next_status(JobStatus::Failed, JobStatus::Running),
            JobStatus::Failed
        );
        assert_eq!(
            next_status(JobStatus::Completed, JobStatus::Queued),
            JobStatus::Completed
        );
    }

    #[test]
    fn counts_list_every_status_even_absent_ones() {
        let counts =
            count_by_status([JobStatus::Queued, JobStatus::Failed, JobStatus::Queued].into_iter());
        assert_eq!(counts.len(), JobStatus::ALL.len());
        let of = |s| counts.iter().find(|(c, _)| *c == s).map(|(_, n)| *n);
        assert_eq!(of(JobStatus::Queued), Some(2));
        assert_eq!(of(JobStatus::Failed), Some(1));
        assert_eq!(of(JobStatus::Running), Some(0));
    }
}
