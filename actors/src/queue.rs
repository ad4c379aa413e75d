//! [`JobQueue`]: the jobs waiting for a worker slot, fair between tenants:
//! each tenant has its own line, and the lines take turns (round robin), so
//! one tenant's burst of a hundred jobs delays another tenant's one job by
//! at most one job per slot, not a hundred. The sum of the queued input
//! sizes is kept as jobs come and go (estimates read it at every
//! submission, so it must not cost a walk of the queue).

use std::collections::{HashMap, VecDeque};

use crate::job::JobId;
use crate::tenant::Tenant;

/// Whose line a job waits in; jobs of no tenant (a node without API keys)
/// share one line.
type Lane = Option<Tenant>;

/// Jobs in line, each with its input size, one line per tenant.
#[derive(Default)]
pub(crate) struct JobQueue {
    lines: HashMap<Lane, VecDeque<(JobId, u64)>>,
    /// The tenants with jobs in line, whose turn comes first at the front.
    turns: VecDeque<Lane>,
    len: usize,
    bytes: u64,
}

impl JobQueue {
    /// Puts a job at the end of its tenant's line.
    pub fn push_back(&mut self, id: JobId, bytes: u64, tenant: Option<Tenant>) {
        self.add(bytes);
        match self.lines.get_mut(&tenant) {
            Some(line) => line.push_back((id, bytes)),
            None => {
                self.lines
                    .insert(tenant.clone(), VecDeque::from([(id, bytes)]));
                self.turns.push_back(tenant);
            }
        }
    }

    /// Puts a job first in line: first of its tenant's, whose turn is next
    /// (a job whose dispatch failed gets back the turn it had).
    pub fn push_front(&mut self, id: JobId, bytes: u64, tenant: Option<Tenant>) {
        self.add(bytes);
        self.lines
            .entry(tenant.clone())
            .or_default()
            .push_front((id, bytes));
        self.turns.retain(|t| *t != tenant);
        self.turns.push_front(tenant);
    }

    /// Returns the job whose turn is next.
    pub fn front(&self) -> Option<JobId> {
        let tenant = self.turns.front()?;
        self.lines.get(tenant)?.front().map(|(id, _)| *id)
    }

    /// Takes the job whose turn is next out; its tenant's turn comes again
    /// after every other tenant's.
    pub fn pop_front(&mut self) -> Option<JobId> {
        let tenant = self.turns.pop_front()?;
        let line = self.lines.get_mut(&tenant)?;
        let (id, bytes) = line.pop_front()?;
        if line.is_empty() {
            self.lines.remove(&tenant);
        } else {
            self.turns.push_back(tenant);
        }
        self.len -= 1;
        self.bytes -= bytes;
        Some(id)
    }

    /// Takes a job out wherever it is in line.
    pub fn remove(&mut self, id: JobId) {
        let Some((tenant, at)) = self.lines.iter().find_map(|(tenant, line)| {
            let at = line.iter().position(|(queued, _)| *queued == id)?;
            Some((tenant.clone(), at))
        }) else {
            return;
        };
        let Some(line) = self.lines.get_mut(&tenant) else {
            return;
        };
        if let Some((_, bytes)) = line.remove(at) {
            self.len -= 1;
            self.bytes -= bytes;
        }
        if line.is_empty() {
            self.lines.remove(&tenant);
            self.turns.retain(|t| *t != tenant);
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
