//! [`JobQueue`]: the jobs waiting for a worker slot, in order, with the sum
//! of their input sizes kept as they come and go (estimates read it at every
//! submission, so it must not cost a walk of the queue).

use std::collections::VecDeque;

use crate::job::JobId;

/// Jobs in line, each with its input size.
#[derive(Default)]
pub(crate) struct JobQueue {
    jobs: VecDeque<(JobId, u64)>,
    bytes: u64,
}

impl JobQueue {
    /// Puts a job at the end of the line.
    pub fn push_back(&mut self, id: JobId, bytes: u64) {
        self.bytes += bytes;
        self.jobs.push_back((id, bytes));
    }

    /// Puts a job first in line.
    pub fn push_front(&mut self, id: JobId, bytes: u64) {
        self.bytes += bytes;
        self.jobs.push_front((id, bytes));
    }

    /// Returns the job first in line.
    pub fn front(&self) -> Option<JobId> {
        self.jobs.front().map(|(id, _)| *id)
    }

    /// Takes the job first in line out.
    pub fn pop_front(&mut self) -> Option<JobId> {
        let (id, bytes) = self.jobs.pop_front()?;
        self.bytes -= bytes;
        Some(id)
    }

    /// Takes a job out wherever it is in line.
    pub fn remove(&mut self, id: JobId) {
        let bytes = &mut self.bytes;
        self.jobs.retain(|(queued, size)| {
            let keep = *queued != id;
            if !keep {
                *bytes -= size;
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The input bytes of every job in line.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use vidpress_cluster::NodeName;

    use super::*;

    #[test]
    fn the_sum_of_sizes_follows_every_change() {
        let node: NodeName = "node-a".parse().expect("a valid name");
        let (a, b, c) = (JobId::new(&node), JobId::new(&node), JobId::new(&node));
        let mut queue = JobQueue::default();
        queue.push_back(a, 10);
        queue.push_back(b, 20);
        queue.push_front(c, 5);
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
}
