//! [`JobQueue`]: the jobs waiting for a worker slot, fair between tenants:
//! each tenant has its own line, and the lines take turns (round robin):
//! the next job is the first of the line that has had the fewest turns,
//! the one served longest ago among those. A tenant that arrives joins the
//! current round, ahead of the tenants already served in it, so one
//! tenant's burst of a hundred jobs delays another tenant's one job by at
//! most the job already running, not by a hundred. The sum of the queued
//! input sizes is kept as jobs come and go (estimates read it at every
//! submission, so it must not cost a walk of the queue).
//!
//! Jobs whose attempt was lost (a node died, froze, was cut off or
//! restarted under them) wait in a line of their own, ahead of every
//! tenant's: they were running, and their clients see them resume first.

use std::collections::{HashMap, VecDeque};

use crate::job::JobId;
use crate::tenant::Tenant;

/// Whose line a job waits in; jobs of no tenant (a node without API keys)
/// share one line.
type Lane = Option<Tenant>;

/// One tenant's line and its place in the rotation.
struct Line {
    jobs: VecDeque<(JobId, u64)>,
    /// Turns taken since the line last was empty (or its entry level).
    turns: u64,
    /// When it was last served (a count of pops); 0: not in this round.
    served_at: u64,
    /// When it arrived, to order lines that are otherwise equal.
    arrived: u64,
}

/// Jobs in line, each with its input size, one line per tenant.
#[derive(Default)]
pub(crate) struct JobQueue {
    lines: HashMap<Lane, Line>,
    /// Jobs whose attempt was lost, served before any line, in order.
    recovering: VecDeque<(JobId, u64)>,
    /// Pops so far, and lines opened so far: the queue's clocks.
    pops: u64,
    arrivals: u64,
    len: usize,
    bytes: u64,
}

impl JobQueue {
    /// Puts a job at the end of its tenant's line.
    pub fn push_back(&mut self, id: JobId, bytes: u64, tenant: Option<Tenant>) {
        self.line(tenant).jobs.push_back((id, bytes));
        self.add(bytes);
    }

    /// Puts a job first in line: first of its tenant's, which gets back the
    /// turn it took for it (a job whose dispatch failed goes first again).
    pub fn push_front(&mut self, id: JobId, bytes: u64, tenant: Option<Tenant>) {
        let line = self.line(tenant);
        line.jobs.push_front((id, bytes));
        line.turns = line.turns.saturating_sub(1);
        line.served_at = 0;
        line.arrived = 0;
        self.add(bytes);
    }

    /// Puts a job whose attempt was lost at the end of the line of such
    /// jobs, which goes before every tenant's.
    pub fn push_recovering(&mut self, id: JobId, bytes: u64) {
        self.recovering.push_back((id, bytes));
        self.add(bytes);
    }

    /// Moves the next `count` jobs of the tenants' lines, in turn, to the
    /// end of the line of jobs whose attempt was lost; returns them.
    pub fn promote(&mut self, count: usize) -> Vec<JobId> {
        let mut promoted = Vec::new();
        while promoted.len() < count {
            let Some(lane) = self.next_lane().cloned() else {
                break;
            };
            let Some(id) = self
                .lines
                .get(&lane)
                .and_then(|l| l.jobs.front())
                .map(|j| j.0)
            else {
                break;
            };
            let bytes = self.take_from(&lane);
            self.recovering.push_back((id, bytes));
            promoted.push(id);
        }
        promoted
    }

    /// Returns the job whose turn is next.
    pub fn front(&self) -> Option<JobId> {
        if let Some((id, _)) = self.recovering.front() {
            return Some(*id);
        }
        let lane = self.next_lane()?;
        self.lines.get(lane)?.jobs.front().map(|(id, _)| *id)
    }

    /// Returns whether the job whose turn is next lost its attempt.
    pub fn front_is_recovering(&self) -> bool {
        !self.recovering.is_empty()
    }

    /// Takes the job whose turn is next out.
    pub fn pop_front(&mut self) -> Option<JobId> {
        if let Some((id, bytes)) = self.recovering.pop_front() {
            self.len -= 1;
            self.bytes -= bytes;
            return Some(id);
        }
        let lane = self.next_lane()?.clone();
        let id = self.lines.get(&lane)?.jobs.front()?.0;
        let bytes = self.take_from(&lane);
        self.len -= 1;
        self.bytes -= bytes;
        Some(id)
    }

    /// Takes the first job of `lane`'s line out as a turn of that line, and
    /// returns its size (the totals are the caller's to keep).
    fn take_from(&mut self, lane: &Lane) -> u64 {
        self.pops += 1;
        let pops = self.pops;
        let Some(line) = self.lines.get_mut(lane) else {
            return 0;
        };
        let bytes = line.jobs.pop_front().map_or(0, |(_, bytes)| bytes);
        line.turns += 1;
        line.served_at = pops;
        if line.jobs.is_empty() {
            self.lines.remove(lane);
        }
        bytes
    }

    /// Takes a job out wherever it is in line.
    pub fn remove(&mut self, id: JobId) {
        if let Some(at) = self.recovering.iter().position(|(queued, _)| *queued == id) {
            if let Some((_, bytes)) = self.recovering.remove(at) {
                self.len -= 1;
                self.bytes -= bytes;
            }
            return;
        }
        let Some((lane, at)) = self.lines.iter().find_map(|(lane, line)| {
            let at = line.jobs.iter().position(|(queued, _)| *queued == id)?;
            Some((lane.clone(), at))
        }) else {
            return;
        };
        let Some(line) = self.lines.get_mut(&lane) else {
            return;
        };
        if let Some((_, bytes)) = line.jobs.remove(at) {
            self.len -= 1;
            self.bytes -= bytes;
        }
        if line.jobs.is_empty() {
            self.lines.remove(&lane);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The input bytes of every job in line.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The line whose turn is next: fewest turns, then served longest ago
    /// (not yet this round first), then first arrived.
    fn next_lane(&self) -> Option<&Lane> {
        self.lines
            .iter()
            .min_by_key(|(_, line)| (line.turns, line.served_at, line.arrived))
            .map(|(lane, _)| lane)
    }

    /// Returns a tenant's line, opened at the current round if it had none.
    fn line(&mut self, tenant: Lane) -> &mut Line {
        let round = self.lines.values().map(|l| l.turns).min().unwrap_or(0);
        self.arrivals += 1;
        let arrived = self.arrivals;
        self.lines.entry(tenant).or_insert_with(|| Line {
            jobs: VecDeque::new(),
            turns: round,
            served_at: 0,
            arrived,
        })
    }

    fn add(&mut self, bytes: u64) {
        self.len += 1;
        self.bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use vidpress_cluster::NodeName;

    use super::*;

    fn node() -> NodeName {
        "node-a".parse().expect("a valid name")
    }

    fn tenant(name: &str) -> Option<Tenant> {
        Some(name.parse().expect("a valid tenant"))
    }

    #[test]
    fn the_sum_of_sizes_follows_every_change() {
        let node = node();
        let (a, b, c) = (JobId::new(&node), JobId::new(&node), JobId::new(&node));
        let mut queue = JobQueue::default();
        queue.push_back(a, 10, None);
        queue.push_back(b, 20, None);
        queue.push_front(c, 5, None);
        assert_eq!((queue.len(), queue.bytes()), (3, 35));
        assert_eq!(queue.pop_front(), Some(c));
        queue.remove(b);
        assert_eq!((queue.front(), queue.bytes()), (Some(a), 10));
        queue.remove(b);
        assert_eq!(queue.bytes(), 10);
        assert_eq!(queue.pop_front(), Some(a));
        assert!(queue.is_empty());
        assert_eq!((queue.pop_front(), queue.bytes()), (None, 0));
    }

    #[test]
    fn a_job_whose_attempt_was_lost_goes_before_every_tenants_line() {
        let node = node();
        let mut queue = JobQueue::default();
        let (a, b) = (JobId::new(&node), JobId::new(&node));
        let (lost, lost_later) = (JobId::new(&node), JobId::new(&node));
        queue.push_back(a, 1, tenant("acme"));
        queue.push_front(b, 1, tenant("globex"));
        queue.push_recovering(lost, 7);
        queue.push_recovering(lost_later, 3);
        assert!(queue.front_is_recovering());
        assert_eq!((queue.len(), queue.bytes()), (4, 12));
        assert_eq!(queue.pop_front(), Some(lost));
        queue.remove(lost_later);
        assert!(!queue.front_is_recovering());
        assert_eq!((queue.len(), queue.bytes()), (2, 2));
        let rest = [queue.pop_front(), queue.pop_front()];
        assert!(rest.contains(&Some(a)) && rest.contains(&Some(b)));
        assert!(queue.is_empty());
    }

    #[test]
    fn promoted_jobs_join_the_line_of_lost_ones_in_turn() {
        let node = node();
        let mut queue = JobQueue::default();
        let (a1, a2, b1) = (JobId::new(&node), JobId::new(&node), JobId::new(&node));
        let lost = JobId::new(&node);
        queue.push_back(a1, 1, tenant("acme"));
        queue.push_back(a2, 1, tenant("acme"));
        queue.push_back(b1, 1, tenant("globex"));
        queue.push_recovering(lost, 1);
        assert_eq!(queue.promote(2), vec![a1, b1]);
        assert_eq!((queue.len(), queue.bytes()), (4, 4));
        let order: Vec<_> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(order, vec![lost, a1, b1, a2]);
        assert!(queue.promote(3).is_empty());
    }

    #[test]
    fn one_tenants_burst_does_not_hold_back_anothers_job() {
        let node = node();
        let mut queue = JobQueue::default();
        let burst: Vec<JobId> = (0..100).map(|_| JobId::new(&node)).collect();
        for id in &burst {
            queue.push_back(*id, 1, tenant("big"));
        }
        let small = JobId::new(&node);
        queue.push_back(small, 1, tenant("small"));
        assert_eq!(queue.pop_front(), Some(burst[0]));
        assert_eq!(
            queue.pop_front(),
            Some(small),
            "the second turn is the other tenant's"
        );
        assert_eq!(queue.pop_front(), Some(burst[1]));
        assert_eq!(queue.len(), 98);
    }

    #[test]
    fn tenants_take_turns_in_order_of_arrival() {
        let node = node();
        let mut queue = JobQueue::default();
        let ids: Vec<JobId> = (0..6).map(|_| JobId::new(&node)).collect();
        for (id, who) in ids.iter().zip(["a", "a", "a", "b", "c", "b"]) {
            queue.push_back(*id, 1, tenant(who));
        }
        let order: Vec<JobId> = std::iter::from_fn(|| queue.pop_front()).collect();
        let expected = [ids[0], ids[3], ids[4], ids[1], ids[5], ids[2]];
        assert_eq!(order, expected);
    }

    #[test]
    fn a_job_put_back_in_front_gets_its_turn_back() {
        let node = node();
        let mut queue = JobQueue::default();
        let (a1, a2, b1) = (JobId::new(&node), JobId::new(&node), JobId::new(&node));
        queue.push_back(a1, 1, tenant("a"));
        queue.push_back(a2, 1, tenant("a"));
        queue.push_back(b1, 1, tenant("b"));
        assert_eq!(queue.pop_front(), Some(a1));
        // Its dispatch failed: it goes back before b's turn.
        queue.push_front(a1, 1, tenant("a"));
        assert_eq!(queue.front(), Some(a1));
        assert_eq!(queue.pop_front(), Some(a1));
        assert_eq!(queue.pop_front(), Some(b1));
        assert_eq!(queue.pop_front(), Some(a2));
    }

    #[test]
    fn a_tenant_arriving_during_a_burst_is_served_next() {
        let node = node();
        let mut queue = JobQueue::default();
        let burst: Vec<JobId> = (0..10).map(|_| JobId::new(&node)).collect();
        for id in &burst {
            queue.push_back(*id, 1, tenant("big"));
        }
        assert_eq!(queue.pop_front(), Some(burst[0]));
        assert_eq!(queue.pop_front(), Some(burst[1]));
        // Arrives while big's jobs run: next, not after big's next turn.
        let small = JobId::new(&node);
        queue.push_back(small, 1, tenant("small"));
        assert_eq!(queue.front(), Some(small));
        assert_eq!(queue.pop_front(), Some(small));
        assert_eq!(queue.pop_front(), Some(burst[2]));
    }

    #[test]
    fn a_tenant_arriving_waits_behind_those_not_yet_served_this_round() {
        let node = node();
        let mut queue = JobQueue::default();
        let (a1, a2, b1, c1) = (
            JobId::new(&node),
            JobId::new(&node),
            JobId::new(&node),
            JobId::new(&node),
        );
        queue.push_back(a1, 1, tenant("a"));
        queue.push_back(a2, 1, tenant("a"));
        queue.push_back(b1, 1, tenant("b"));
        assert_eq!(queue.pop_front(), Some(a1));
        queue.push_back(c1, 1, tenant("c"));
        let order: Vec<JobId> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(order, [b1, c1, a2]);
    }

    #[test]
    fn removing_a_tenants_last_job_ends_its_turns() {
        let node = node();
        let mut queue = JobQueue::default();
        let (a, b) = (JobId::new(&node), JobId::new(&node));
        queue.push_back(a, 3, tenant("a"));
        queue.push_back(b, 4, tenant("b"));
        queue.remove(a);
        assert_eq!((queue.front(), queue.len(), queue.bytes()), (Some(b), 1, 4));
        assert_eq!(queue.pop_front(), Some(b));
        assert_eq!(queue.pop_front(), None);
    }
}
