//! [`Committer`]: group commit, one task per node that makes files,
//! renames and folder entries durable for many callers at once.
//!
//! A caller sends a [`Commit`] (files whose data must reach the disk,
//! renames to do once they have, folders whose entries must reach it after
//! the renames) and waits for its answer. The task takes whatever is
//! waiting as one batch: it fdatasyncs every file of the batch at once, does
//! the renames, then fsyncs each distinct folder once, and answers every
//! caller. The syncs of a phase run side by side on blocking threads, so
//! that the filesystem commits their metadata in one journal commit and the
//! disk flushes are merged: a batch costs about two rounds of the disk,
//! whatever its size, and the submissions arriving meanwhile share the next.
//!
//! Order within a commit is what makes it crash safe: a rename is done only
//! after every file of its commit is synced (so the name never points at
//! bytes that are not on disk), and the folders only after the renames. A
//! commit whose sync fails does no rename; each caller hears only of its
//! own commit's failures.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};

/// What one caller needs on disk, in this order.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// Files whose data (and size) must be on disk: fdatasynced.
    pub sync: Vec<PathBuf>,
    /// Renames (from, to) done once every file above is synced.
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// Folders whose entries must be on disk: fsynced after the renames.
    pub folders: Vec<PathBuf>,
}

/// A commit waiting for its batch.
struct Pending {
    commit: Commit,
    reply: oneshot::Sender<io::Result<()>>,
}

/// The handle on a node's commit task; clones share it. The task ends once
/// every handle is dropped.
#[derive(Clone, Debug)]
pub struct Committer {
    requests: mpsc::UnboundedSender<Pending>,
    /// Batches committed so far.
    batches: Arc<AtomicU64>,
}

impl Committer {
    /// Starts the commit task on the current runtime.
    pub fn start() -> Self {
        let (requests, waiting) = mpsc::unbounded_channel();
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(waiting, batches.clone()));
        Self { requests, batches }
    }

    /// Returns how many batches were committed so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Makes `commit` durable with whatever else is waiting; returns once
    /// it is, or with the first error met by this commit.
    pub async fn commit(&self, commit: Commit) -> io::Result<()> {
        let gone = || io::Error::other("the commit task is gone");
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Pending { commit, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The commit task: one batch at a time, each of whatever was waiting when
/// the one before ended.
async fn run(mut waiting: mpsc::UnboundedReceiver<Pending>, batches: Arc<AtomicU64>) {
    let mut batch = Vec::new();
    while waiting.recv_many(&mut batch, usize::MAX).await > 0 {
        metrics::histogram!("vidpress_commit_batch_size").record(batch.len() as f64);
        let commits: Vec<&Commit> = batch.iter().map(|p| &p.commit).collect();
        let outcomes = commit_batch(&commits).await;
        batches.fetch_add(1, Ordering::Relaxed);
        for (pending, outcome) in batch.drain(..).zip(outcomes) {
            let _ = pending.reply.send(outcome);
        }
    }
}

/// How much of a file [`sync_path`] flushes.
#[derive(Clone, Copy)]
enum Flush {
    /// Its data (fdatasync): an upload or a record.
    Data,
    /// Everything (fsync): a folder's entries.
    All,
}

/// Flushes the file or folder at `path` to the disk, off the runtime's
/// threads; an error names the path.
async fn sync_path(path: PathBuf, flush: Flush) -> io::Result<()> {
    blocking(move || {
        let file = File::open(&path).map_err(|e| named(e, &path))?;
        match flush {
            Flush::Data => file.sync_data(),
            Flush::All => file.sync_all(),
        }
        .map_err(|e| named(e, &path))
    })
    .await
    .and_then(|synced| synced)
}

/// Makes a batch of commits durable; returns each one's outcome, in order.
async fn commit_batch(commits: &[&Commit]) -> Vec<io::Result<()>> {
    let mut outcomes: Vec<io::Result<()>> = commits.iter().map(|_| Ok(())).collect();
    // The data, every file at once.
    let syncs = commits.iter().enumerate().flat_map(|(i, commit)| {
        commit.sync.iter().map(move |path| {
            let path = path.clone();
            async move { (i, sync_path(path, Flush::Data).await) }
        })
    });
    for (i, synced) in join_all(syncs).await {
        if let Err(e) = synced {
            fail(&mut outcomes[i], e);
        }
    }
    // The renames of the commits whose data is all on disk, in one trip.
    let renames: Vec<(usize, Vec<(PathBuf, PathBuf)>)> = commits
        .iter()
        .enumerate()
        .filter(|(i, commit)| outcomes[*i].is_ok() && !commit.renames.is_empty())
        .map(|(i, commit)| (i, commit.renames.clone()))
        .collect();
    let renamed = blocking(move || {
        renames
            .into_iter()
            .map(|(i, renames)| {
                let done = renames.iter().try_for_each(|(from, to)| {
                    std::fs::rename(from, to).map_err(|e| named(e, from))
                });
                (i, done)
            })
            .collect::<Vec<_>>()
    })
    .await;
    match renamed {
        Ok(renamed) => {
            for (i, done) in renamed {
                if let Err(e) = done {
                    fail(&mut outcomes[i], e);
                }
            }
        }
        Err(e) => {
            for outcome in &mut outcomes {
                fail(outcome, io::Error::new(e.kind(), e.to_string()));
            }
        }
    }
    // The folders, each once for every commit that names it, all at once.
    let mut folders: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, commit) in commits.iter().enumerate() {
        if outcomes[i].is_ok() {
            for folder in &commit.folders {
                folders.entry(folder.as_path()).or_default().push(i);
            }
        }
    }
    let syncs = folders.into_iter().map(|(folder, waiters)| {
        let folder = folder.to_path_buf();
        async move { (waiters, sync_path(folder, Flush::All).await) }
    });
    for (waiters, synced) in join_all(syncs).await {
        if let Err(e) = synced {
            for i in waiters {
                fail(&mut outcomes[i], io::Error::new(e.kind(), e.to_string()));
            }
        }
    }
    outcomes
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
}

/// Returns `e` naming the path it concerns.
fn named(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Keeps the first error of a commit.
fn fail(outcome: &mut io::Result<()>, e: io::Error) {
    if outcome.is_ok() {
        *outcome = Err(e);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn commit_of(dir: &Path, name: &str) -> Commit {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, name).unwrap();
        Commit {
            sync: vec![tmp.clone()],
            renames: vec![(tmp, dir.join(name))],
            folders: vec![dir.to_path_buf()],
        }
    }

    #[tokio::test]
    async fn a_commit_renames_its_synced_files() {
        let dir = tempfile::tempdir().unwrap();
        let committer = Committer::start();
        committer
            .commit(commit_of(dir.path(), "job.json"))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("job.json")).unwrap(),
            "job.json"
        );
        assert!(!dir.path().join("job.json.tmp").exists());
    }

    #[tokio::test]
    async fn concurrent_commits_share_batches() {
        let dir = tempfile::tempdir().unwrap();
        let committer = Committer::start();
        // The thread is busy with a slow first commit (a large file to
        // sync) while fifty others arrive: they go together after it.
        let big = dir.path().join("big");
        std::fs::write(&big, vec![7u8; 32 << 20]).unwrap();
        let first = committer.commit(Commit {
            sync: vec![big],
            ..Commit::default()
        });
        let rest = async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let commits = (0..50).map(|i| committer.commit(commit_of(dir.path(), &i.to_string())));
            futures::future::join_all(commits).await
        };
        let (first, rest) = tokio::join!(first, rest);
        first.unwrap();
        assert!(rest.iter().all(Result::is_ok));
        for i in 0..50 {
            assert!(dir.path().join(i.to_string()).exists());
        }
        let batches = committer.batches();
        assert!(batches <= 3, "51 commits took {batches} batches");
    }

    #[tokio::test]
    async fn a_batch_answers_each_commit_with_its_own_failure() {
        let dir = tempfile::tempdir().unwrap();
        let good = commit_of(dir.path(), "good");
        let missing = Commit {
            sync: vec![dir.path().join("missing.tmp")],
            renames: vec![(dir.path().join("missing.tmp"), dir.path().join("missing"))],
            folders: vec![dir.path().to_path_buf()],
        };
        let no_folder = Commit {
            folders: vec![dir.path().join("no-such-folder")],
            ..commit_of(dir.path(), "renamed")
        };
        let outcomes = commit_batch(&[&good, &missing, &no_folder]).await;
        assert!(outcomes[0].is_ok());
        let e = outcomes[1].as_ref().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing.tmp"));
        assert!(!dir.path().join("missing").exists());
        assert_eq!(
            outcomes[2].as_ref().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // Its rename was done before its folder failed: the failure is
        // about durability, not about the name.
        assert!(dir.path().join("renamed").exists());
        assert!(dir.path().join("good").exists());
    }

    #[tokio::test]
    async fn a_failed_sync_leaves_the_names_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut commit = commit_of(dir.path(), "job.json");
        // Its second file cannot be synced: no rename of the first either.
        commit.sync.push(dir.path().join("gone"));
        let outcomes = commit_batch(&[&commit]).await;
        assert!(outcomes[0].is_err());
        assert!(dir.path().join("job.json.tmp").exists());
        assert!(!dir.path().join("job.json").exists());
    }
}
