//! [`Board`]: the latest snapshot of every job whose supervisor runs on this
//! node, published by the supervisor itself (see the supervisor for when).
//! Polls read it without a round trip through the supervisor's mailbox; it
//! is still the supervisor's state, only ever written by the supervisor.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::job::{JobId, JobSnapshot};

/// One published snapshot, with the rendering readers made of it: a job
/// polled a thousand times between two changes is rendered once.
pub struct Published {
    job: JobSnapshot,
    rendered: OnceLock<Bytes>,
}

impl Published {
    /// Returns `render(job)`, computed by the first reader of this snapshot.
    /// Every reader must pass the same rendering.
    pub fn rendered(&self, render: impl FnOnce(&JobSnapshot) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(&self.job)).clone()
    }
}

impl From<JobSnapshot> for Published {
    /// A snapshot not (yet) on the board, e.g. one an event carried.
    fn from(job: JobSnapshot) -> Self {
        Self {
            job,
            rendered: OnceLock::new(),
        }
    }
}

impl Deref for Published {
    type Target = JobSnapshot;

    fn deref(&self) -> &JobSnapshot {
        &self.job
    }
}

/// Published job snapshots, by job.
#[derive(Default)]
pub struct Board {
    jobs: RwLock<HashMap<JobId, Arc<Published>>>,
    /// Set by the gateway while this node is cut off from a possible
    /// majority, which may have taken its unfinished jobs over: their
    /// snapshots here may be stale.
    cut_off: AtomicBool,
    /// Jobs this node held and gave up to another node's copy, with when:
    /// they exist, held elsewhere, so this node never calls them unknown.
    given_up: RwLock<HashMap<JobId, Instant>>,
}

impl Board {
    /// Returns whether this node's unfinished snapshots may be stale.
    pub fn cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Relaxed)
    }

    pub(crate) fn set_cut_off(&self, cut_off: bool) {
        self.cut_off.store(cut_off, Ordering::Relaxed);
    }

    /// Returns the latest snapshot of a job owned here.
    pub fn get(&self, id: JobId) -> Option<Arc<Published>> {
        self.jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Publishes a job's snapshot, replacing the previous one.
    pub(crate) fn publish(&self, job: &JobSnapshot) {
        let published = Arc::new(Published::from(job.clone()));
        self.jobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.id, published);
    }

    /// Takes a job off the board (its supervisor stopped).
    pub(crate) fn remove(&self, id: JobId) {
        self.jobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Takes a job off the board that this node gave up to another node,
    /// which holds it now, and remembers that it did.
    pub(crate) fn give_up(&self, id: JobId) {
        self.remove(id);
        self.given_up
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Instant::now());
    }

    /// Returns whether this node gave the job up to another node (and has
    /// not forgotten it since: see [`Self::forget_given_up`]).
    pub fn gave_up(&self, id: JobId) -> bool {
        self.given_up
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    /// Forgets the jobs given up longer than `kept` ago: their holders have
    /// removed them after the retention since.
    pub(crate) fn forget_given_up(&self, kept: Duration) {
        self.given_up
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, at| at.elapsed() < kept);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_job_given_up_is_off_the_board_and_remembered_until_forgotten() {
        let board = Board::default();
        let id = JobId::new(&"node-a".parse().expect("a node name"));
        board.give_up(id);
        assert!(board.get(id).is_none());
        assert!(board.gave_up(id));
        board.forget_given_up(Duration::from_secs(3600));
        assert!(board.gave_up(id), "given up a moment ago");
        board.forget_given_up(Duration::ZERO);
        assert!(!board.gave_up(id));
    }
}
