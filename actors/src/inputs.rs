//! [`FetchedInputs`]: the inputs this node fetched from other nodes for the
//! pieces of their split jobs. A split job sends several pieces to the same
//! node, each reading its own stretch of the same input: the input crosses
//! once per node, not once per piece. Each is fetched by the first piece
//! that needs it (the others of its job wait for that fetch), shared while
//! pieces use it, and removed once no piece has used it for [`KEEP`] (looked
//! at whenever a piece starts here; the node removes them all when it
//! starts).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::job::JobId;
use crate::transfer::TransferError;

/// How long an input no piece uses is kept for the next piece of its job.
pub const KEEP: Duration = Duration::from_secs(120);

/// Who uses one fetched input.
#[derive(Debug)]
struct Use {
    users: usize,
    last_used: Instant,
}

/// One fetched input: the lock its fetch holds, and who uses it.
#[derive(Debug)]
struct Entry {
    /// Whether the file is whole; held while it is fetched.
    fetched: tokio::sync::Mutex<bool>,
    usage: Mutex<Use>,
}

/// The inputs of other nodes' jobs held here, shared by this node's workers.
#[derive(Debug)]
pub struct FetchedInputs {
    dir: PathBuf,
    entries: Mutex<HashMap<JobId, Arc<Entry>>>,
}

/// A piece's use of a fetched input; the input may go once none is left.
#[derive(Debug)]
pub struct Lease {
    entry: Arc<Entry>,
    path: PathBuf,
}

impl Lease {
    /// Returns where the input is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut usage = lock(&self.entry.usage);
        usage.users = usage.users.saturating_sub(1);
        usage.last_used = Instant::now();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FetchedInputs {
    /// Returns an empty set kept in `dir` (`<data>/work/inputs`).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Returns a lease on the input of `job`, fetched by `fetch` into the
    /// path it is given unless it is here already. A failed fetch leaves
    /// nothing behind, and the next piece tries again.
    pub async fn lease<F, Fut>(&self, job: JobId, fetch: F) -> Result<Lease, TransferError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<(), TransferError>>,
    {
        self.sweep(KEEP);
        let path = self.dir.join(job.to_string());
        let entry = lock(&self.entries)
            .entry(job)
            .or_insert_with(|| {
                Arc::new(Entry {
                    fetched: tokio::sync::Mutex::new(false),
                    usage: Mutex::new(Use {
                        users: 0,
                        last_used: Instant::now(),
                    }),
                })
            })
            .clone();
        // Counted as a user before the fetch, so a sweep meanwhile keeps it.
        lock(&entry.usage).users += 1;
        let lease = Lease {
            entry: entry.clone(),
            path: path.clone(),
        };
        let mut fetched = entry.fetched.lock().await;
        if !*fetched {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| TransferError(format!("cannot make {}: {e}", self.dir.display())))?;
            fetch(path.clone()).await?;
            *fetched = true;
        }
        Ok(lease)
    }

    /// Removes the inputs no piece has used for `idle`.
    pub fn sweep(&self, idle: Duration) {
        let mut entries = lock(&self.entries);
        entries.retain(|job, entry| {
            let usage = lock(&entry.usage);
            let keep = usage.users > 0 || usage.last_used.elapsed() < idle;
            if !keep {
                let _ = std::fs::remove_file(self.dir.join(job.to_string()));
            }
            keep
        });
    }

    /// Returns how many inputs are held.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Returns whether no input is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use vidpress_cluster::NodeName;

    fn job() -> JobId {
        let owner: NodeName = "node-a".parse().expect("a node name");
        JobId::new(&owner)
    }

    #[tokio::test]
    async fn an_input_is_fetched_once_for_every_piece_of_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = FetchedInputs::new(dir.path().join("inputs"));
        let fetches = AtomicUsize::new(0);
        let id = job();
        let fetch = |path: PathBuf| {
            fetches.fetch_add(1, Ordering::SeqCst);
            async move { std::fs::write(path, b"video").map_err(|e| TransferError(e.to_string())) }
        };
        let first = inputs.lease(id, fetch).await.unwrap();
        let second = inputs.lease(id, fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(first.path(), second.path());
        assert_eq!(std::fs::read(first.path()).unwrap(), b"video");
        let path = first.path().to_owned();
        drop((first, second));
        // Idle, but not for long: kept for the next piece.
        inputs.sweep(KEEP);
        assert!(path.exists());
        inputs.sweep(Duration::ZERO);
        assert!(!path.exists() && inputs.is_empty());
    }

    #[tokio::test]
    async fn an_input_in_use_is_kept_and_a_failed_fetch_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = FetchedInputs::new(dir.path().join("inputs"));
        let id = job();
        let failed = inputs
            .lease(id, |_| async { Err(TransferError("owner gone".into())) })
            .await;
        assert!(failed.is_err());
        let lease = inputs
            .lease(id, |path| async move {
                std::fs::write(path, b"v").map_err(|e| TransferError(e.to_string()))
            })
            .await
            .unwrap();
        inputs.sweep(Duration::ZERO);
        assert!(lease.path().exists(), "a leased input stays");
    }
}
