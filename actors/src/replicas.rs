//! The copies this node keeps, as their standby, of jobs other nodes own:
//! `<data>/replicas/<id>/`, holding the job's record (`job.json`, the
//! format of [`crate::record`]) and files (`input`, `output.mp4`, named by
//! [`ReplicaFile`]). The HTTP layer stores what an owner sends through
//! [`store_file`] and [`store_record`]; the gateway lists the copies
//! ([`list`]) to take jobs over ([`promote`]) and to sweep old ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::counters::Epoch;
use crate::job::JobId;
use crate::paths;
use crate::record::JobRecord;
use crate::transfer::{self, ReplicaFile};

/// The record's name in a copy's folder, as in a job's own folder.
const RECORD: &str = "job.json";

/// Why a copy could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("cannot create replica folder: {0}")]
    Folder(std::io::Error),
    #[error("cannot store {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot store the replica record: {0}")]
    Record(std::io::Error),
}

/// What became of a record sent to be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// It is durable here.
    Stored,
    /// It was older than what this node holds of the job, and refused.
    Stale,
    /// It is an unfinished job's, and its input is not here yet: refused
    /// until it is, so that a copy this node takes over can always run.
    WithoutInput,
}

/// Returns the folder of all the copies this node keeps: `<data>/replicas`.
pub fn root(data: &Path) -> PathBuf {
    data.join("replicas")
}

/// Returns the folder of this node's copy of `id`: `<data>/replicas/<id>`.
pub fn dir(data: &Path, id: JobId) -> PathBuf {
    root(data).join(id.to_string())
}

/// Returns where the copy of `id` keeps its record.
pub fn record_path(data: &Path, id: JobId) -> PathBuf {
    dir(data, id).join(RECORD)
}

/// Returns where the copy of `id` keeps `file`.
pub fn file_path(data: &Path, id: JobId, file: ReplicaFile) -> PathBuf {
    dir(data, id).join(&*file.name())
}

/// Stores `file` of `id`, streamed from `body`, durably (see
/// [`transfer::receive`]), making the copy's folder if it is the first.
pub async fn store_file<S, E>(
    data: &Path,
    id: JobId,
    file: ReplicaFile,
    body: S,
) -> Result<(), ReplicaError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::fs::create_dir_all(dir(data, id))
        .await
        .map_err(ReplicaError::Folder)?;
    let path = file_path(data, id, file);
    transfer::receive(body, &path)
        .await
        .map_err(|source| ReplicaError::File { path, source })
}

/// Drops the copy of `id` if it has no record: an input streamed here for
/// a job its owner did not accept after all. A copy with a record is a
/// promised job's and stays. Returns whether a copy was dropped.
pub async fn drop_unaccepted(data: &Path, id: JobId) -> std::io::Result<bool> {
    drop_if(data, id, |record| !record.exists()).await
}

/// Drops the copy of `id` if its record's epoch is at most `given_up` (or
/// it has no readable record): its owner, which held the job under that
/// epoch, gave it up to a node holding a copy of its own, so this one is
/// stale and must never be taken over. Returns whether a copy was dropped.
pub async fn drop_given_up(data: &Path, id: JobId, given_up: Epoch) -> std::io::Result<bool> {
    drop_if(data, id, move |record| {
        JobRecord::read(record).map_or(true, |r| r.epoch <= given_up)
    })
    .await
}

/// Drops the copy of `id`, if there is one and `drop` says so of the path
/// of its record, off the runtime's threads.
async fn drop_if(
    data: &Path,
    id: JobId,
    drop: impl FnOnce(&Path) -> bool + Send + 'static,
) -> std::io::Result<bool> {
    let data = data.to_owned();
    tokio::task::spawn_blocking(move || {
        let folder = dir(&data, id);
        if !folder.exists() || !drop(&record_path(&data, id)) {
            return Ok(false);
        }
        std::fs::remove_dir_all(&folder).map(|()| true)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Returns whether a record of `incoming` epoch may replace the copy held
/// (of epoch `held`, if any), when this node owns the job itself under
/// epoch `owned`, if it does: not if either is newer (a copy from a former
/// owner, sent after this node took the job over, is stale).
fn accepts(held: Option<Epoch>, owned: Option<Epoch>, incoming: Epoch) -> bool {
    held.is_none_or(|held| held <= incoming) && owned.is_none_or(|owned| owned <= incoming)
}

/// Stores `record` as this node's copy of its job, durable before it
/// returns; refuses it ([`Stored::Stale`]) if the copy held, or the job as
/// this node owns it, has a newer epoch, and an unfinished job's before its
/// input ([`Stored::WithoutInput`]): a new standby is sent the input first,
/// but the owner's copies of each new record may come before it.
pub async fn store_record(data: &Path, record: JobRecord) -> Result<Stored, ReplicaError> {
    let data = data.to_owned();
    tokio::task::spawn_blocking(move || {
        let id = record.id;
        let epoch_of = |path: PathBuf| JobRecord::read(&path).ok().map(|r| r.epoch);
        let held = epoch_of(record_path(&data, id));
        let owned = epoch_of(paths::record(&data, id));
        if !accepts(held, owned, record.epoch) {
            return Ok(Stored::Stale);
        }
        if record.outcome.is_none() && !file_path(&data, id, ReplicaFile::Input).exists() {
            return Ok(Stored::WithoutInput);
        }
        std::fs::create_dir_all(dir(&data, id))?;
        record.write(&record_path(&data, id))?;
        Ok(Stored::Stored)
    })
    .await
    .map_err(|e| ReplicaError::Record(std::io::Error::other(e)))?
    .map_err(ReplicaError::Record)
}

/// One folder under [`root`]: a copy, whole or still arriving.
#[derive(Debug)]
pub struct Replica {
    pub dir: PathBuf,
}

impl Replica {
    /// Reads its record: `None` before one landed (the input comes first)
    /// or if it does not read.
    pub fn record(&self) -> Option<JobRecord> {
        JobRecord::read(&self.dir.join(RECORD)).ok()
    }

    /// Returns whether the copy holds `file`.
    pub fn has(&self, file: ReplicaFile) -> bool {
        self.dir.join(&*file.name()).exists()
    }

    /// Returns how long ago its record was last written (for a finished
    /// job, since it finished); `None` without a record.
    pub fn record_age(&self) -> Option<Duration> {
        age(&self.dir.join(RECORD))
    }

    /// Returns how long ago its folder last changed.
    pub fn folder_age(&self) -> Option<Duration> {
        age(&self.dir)
    }
}

fn age(path: &Path) -> Option<Duration> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
}

/// Returns the copies this node keeps (none if it keeps no folder for
/// them); their records are read on demand.
pub fn list(data: &Path) -> Vec<Replica> {
    let Ok(dirs) = std::fs::read_dir(root(data)) else {
        return Vec::new();
    };
    dirs.flatten()
        .map(|entry| Replica { dir: entry.path() })
        .collect()
}

/// Makes `replica` one of this node's jobs, as `record` (the job taken
/// over: its new epoch and owner): its folder moves to
/// `<data>/jobs/<id>` and the record is written there, durably.
pub fn promote(data: &Path, replica: &Replica, record: &JobRecord) -> std::io::Result<()> {
    std::fs::create_dir_all(paths::jobs_dir(data))?;
    std::fs::rename(&replica.dir, paths::job_dir(data, record.id))?;
    record.write(&paths::record(data, record.id))
}

#[cfg(test)]
mod tests {
    use vidpress_cluster::NodeName;

    use super::*;
    use crate::record;

    fn node() -> NodeName {
        "node-a".parse().unwrap()
    }

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        let parts: Vec<_> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        futures::stream::iter(parts)
    }

    #[test]
    fn a_record_is_refused_only_when_something_newer_is_here() {
        let (one, two) = (Epoch::new(1), Epoch::new(2));
        assert!(accepts(None, None, one));
        assert!(accepts(Some(one), None, one), "the same epoch updates");
        assert!(accepts(Some(one), None, two));
        assert!(!accepts(Some(two), None, one));
        assert!(!accepts(None, Some(two), one), "taken over here since");
        assert!(accepts(None, Some(one), one));
    }

    #[tokio::test]
    async fn a_file_is_streamed_into_the_copy_folder() {
        let data = tempfile::tempdir().unwrap();
        let id = JobId::new(&node());
        store_file(data.path(), id, ReplicaFile::Input, chunks(&["vid", "eo"]))
            .await
            .unwrap();
        let path = file_path(data.path(), id, ReplicaFile::Input);
        assert_eq!(path, data.path().join(format!("replicas/{id}/input")));
        assert_eq!(std::fs::read(&path).unwrap(), b"video");
    }

    #[tokio::test]
    async fn a_broken_upload_leaves_no_file() {
        let data = tempfile::tempdir().unwrap();
        let id = JobId::new(&node());
        let broken = futures::stream::iter([
            Ok(Bytes::from_static(b"vid")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let e = store_file(data.path(), id, ReplicaFile::Result, broken)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("cannot store "), "{e}");
        let folder: Vec<_> = std::fs::read_dir(dir(data.path(), id)).unwrap().collect();
        assert!(folder.is_empty(), "{folder:?}");
    }

    #[tokio::test]
    async fn records_are_stored_unless_older_than_what_is_held() {
        let data = tempfile::tempdir().unwrap();
        let newer = JobRecord {
            epoch: Epoch::new(2),
            ..record::sample(&node())
        };
        let id = newer.id;
        store_file(data.path(), id, ReplicaFile::Input, chunks(&["x"]))
            .await
            .unwrap();
        let stored = store_record(data.path(), newer.clone()).await.unwrap();
        assert_eq!(stored, Stored::Stored);
        let older = JobRecord {
            epoch: Epoch::new(1),
            attempt: crate::Attempt::new(9),
            ..newer.clone()
        };
        let stored = store_record(data.path(), older).await.unwrap();
        assert_eq!(stored, Stored::Stale);
        let held = JobRecord::read(&record_path(data.path(), id)).unwrap();
        assert_eq!((held.epoch, held.attempt), (newer.epoch, newer.attempt));
    }

    #[tokio::test]
    async fn an_unfinished_jobs_record_waits_for_its_input() {
        let data = tempfile::tempdir().unwrap();
        let unfinished = record::sample(&node());
        let id = unfinished.id;
        let stored = store_record(data.path(), unfinished.clone()).await.unwrap();
        assert_eq!(stored, Stored::WithoutInput);
        assert!(!record_path(data.path(), id).exists());
        // An ended job's record needs no input (a canceled job's copy
        // has none to keep).
        let canceled = JobRecord {
            outcome: Some(record::Outcome::Canceled),
            ..unfinished.clone()
        };
        assert_eq!(
            store_record(data.path(), canceled).await.unwrap(),
            Stored::Stored
        );
        store_file(data.path(), id, ReplicaFile::Input, chunks(&["x"]))
            .await
            .unwrap();
        assert_eq!(
            store_record(data.path(), unfinished).await.unwrap(),
            Stored::Stored
        );
    }

    #[tokio::test]
    async fn a_copy_given_up_by_its_owner_is_dropped_up_to_its_epoch() {
        let data = tempfile::tempdir().unwrap();
        let copy = JobRecord {
            epoch: Epoch::new(2),
            ..record::sample(&node())
        };
        let id = copy.id;
        store_file(data.path(), id, ReplicaFile::Input, chunks(&["x"]))
            .await
            .unwrap();
        store_record(data.path(), copy).await.unwrap();
        // Given up under an older epoch: this copy is a later owner's.
        assert!(!drop_given_up(data.path(), id, Epoch::new(1)).await.unwrap());
        // Its records stay against a drop of an unaccepted upload too.
        assert!(!drop_unaccepted(data.path(), id).await.unwrap());
        assert!(dir(data.path(), id).exists());
        assert!(drop_given_up(data.path(), id, Epoch::new(2)).await.unwrap());
        assert!(!dir(data.path(), id).exists());
        // Nothing left to drop.
        assert!(!drop_given_up(data.path(), id, Epoch::new(2)).await.unwrap());
    }

    #[tokio::test]
    async fn a_record_for_a_job_this_node_took_over_since_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let mine = JobRecord {
            epoch: Epoch::new(3),
            ..record::sample(&node())
        };
        std::fs::create_dir_all(paths::job_dir(data.path(), mine.id)).unwrap();
        mine.write(&paths::record(data.path(), mine.id)).unwrap();
        let former = JobRecord {
            epoch: Epoch::new(2),
            ..mine.clone()
        };
        let stored = store_record(data.path(), former).await.unwrap();
        assert_eq!(stored, Stored::Stale);
        assert!(!dir(data.path(), mine.id).exists());
    }

    #[tokio::test]
    async fn copies_are_listed_and_promoted_to_jobs() {
        let data = tempfile::tempdir().unwrap();
        assert!(list(data.path()).is_empty(), "no replicas folder yet");
        let whole = record::sample(&node());
        store_file(data.path(), whole.id, ReplicaFile::Input, chunks(&["x"]))
            .await
            .unwrap();
        store_record(data.path(), whole.clone()).await.unwrap();
        // A copy whose record never came: debris for the gateway's sweep.
        let partial = JobId::new(&node());
        store_file(data.path(), partial, ReplicaFile::Input, chunks(&["y"]))
            .await
            .unwrap();

        let copies = list(data.path());
        assert_eq!(copies.len(), 2);
        let copy = copies.iter().find(|r| r.record().is_some()).unwrap();
        let debris = copies.iter().find(|r| r.record().is_none()).unwrap();
        assert!(copy.has(ReplicaFile::Input) && !copy.has(ReplicaFile::Result));
        assert!(copy.record_age().is_some() && debris.record_age().is_none());
        assert!(debris.folder_age().is_some());

        let taken = JobRecord {
            epoch: whole.epoch.next(),
            owner: Some("node-b".parse().unwrap()),
            standby: None,
            ..whole.clone()
        };
        promote(data.path(), copy, &taken).unwrap();
        assert!(!dir(data.path(), whole.id).exists());
        assert!(paths::input(data.path(), whole.id).exists());
        let now = JobRecord::read(&paths::record(data.path(), whole.id)).unwrap();
        assert_eq!(now.epoch, taken.epoch);
        assert_eq!(list(data.path()).len(), 1);
    }
}
