//! [`Board`]: the latest snapshot of every job whose supervisor runs on this
//! node, published by the supervisor itself after each message it handles.
//! Polls read it without a round trip through the supervisor's mailbox; it
//! is still the supervisor's state, only ever written by the supervisor.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::job::{JobId, JobSnapshot};

/// Published job snapshots, by job.
#[derive(Default)]
pub struct Board {
    jobs: RwLock<HashMap<JobId, Arc<JobSnapshot>>>,
}

impl Board {
    /// Returns the latest snapshot of a job owned here.
    pub fn get(&self, id: JobId) -> Option<Arc<JobSnapshot>> {
        self.jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Publishes a job's snapshot, replacing the previous one.
    pub(crate) fn publish(&self, job: &JobSnapshot) {
        let job = Arc::new(job.clone());
        self.jobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.id, job);
    }

    /// Takes a job off the board (its supervisor stopped).
    pub(crate) fn remove(&self, id: JobId) {
        self.jobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}
