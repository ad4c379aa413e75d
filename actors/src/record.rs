//! [`JobRecord`]: what a node keeps of a job on disk (`<data>/jobs/<id>/job.json`)
//! so that a restarted node recovers its jobs. It is written atomically and
//! fsynced before a job is acknowledged, at each dispatch (so attempt numbers
//! keep rising across restarts and stale attempts stay fenced) and at the end.
//! It is a storage format, separate from the supervisor's state.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vidpress_cluster::NodeName;
use vidpress_transcode::{
    EncodeOptions, MediaInfo, Output, OutputReport, SegmentPlan, TranscodeError,
};

use crate::counters::{Attempt, Epoch};
use crate::job::{JobId, Piece};
use crate::tenant::Tenant;

/// How a job ended, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Completed {
        bytes: u64,
        /// What the output is and how it looks (absent from records
        /// written before reports existed).
        #[serde(default)]
        report: Option<OutputReport>,
    },
    Failed {
        error: TranscodeError,
    },
    Canceled,
}

/// A split job's durable part: where its video is cut, and the pieces
/// finished so far (kept in the job's folder and copied to the standby), so
/// that a restart or a takeover goes on from there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitRecord {
    pub plan: SegmentPlan,
    pub done: Vec<DonePiece>,
}

/// A piece of a split job that is encoded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DonePiece {
    pub piece: Piece,
    /// The attempt that encoded it.
    pub attempt: Attempt,
    /// The node that encoded it.
    pub node: NodeName,
    /// Its size and report (its quality counts towards the whole's).
    pub output: Output,
}

/// The durable part of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub options: EncodeOptions,
    pub input_bytes: u64,
    pub created_at_ms: u64,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the input, hex.
    pub digest: String,
    /// The last attempt dispatched.
    pub attempt: Attempt,
    /// Attempts lost to silent workers.
    pub lost_attempts: u32,
    /// Attempts interrupted by the cluster (a node lost, bytes not moved).
    #[serde(default)]
    pub interrupted: u32,
    /// The node of the last attempt.
    pub node: Option<NodeName>,
    pub media: Option<MediaInfo>,
    /// When the job reached its outcome.
    pub finished_at_ms: Option<u64>,
    pub outcome: Option<Outcome>,
    /// The node that holds the job's supervisor.
    #[serde(default)]
    pub owner: Option<NodeName>,
    /// The node holding a copy, which takes over if the owner is lost.
    #[serde(default)]
    pub standby: Option<NodeName>,
    /// Rises by one each time another node takes the job over; a copy of a
    /// lower epoch gives way to a higher one.
    #[serde(default)]
    pub epoch: Epoch,
    /// The tenant that submitted the job; `None` on a node without API keys.
    #[serde(default)]
    pub tenant: Option<Tenant>,
    /// Where a long video is cut and which pieces are done; `None` for a
    /// job encoded in one pass.
    #[serde(default)]
    pub split: Option<SplitRecord>,
}

/// Returns where a record at `path` is written before it is renamed there.
pub fn temporary(path: &Path) -> PathBuf {
    path.with_extension("json.tmp")
}

/// Returns milliseconds since the Unix epoch.
pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Returns the instant `ms` milliseconds after the Unix epoch.
pub fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl JobRecord {
    /// Writes the record to `path` atomically and durably: a temporary file,
    /// fsynced, renamed over the old one, and the folder fsynced.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = self.write_temporary(path)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Writes the record to the temporary file beside `path`, unsynced, and
    /// returns its path: the caller syncs it and renames it over `path`
    /// (a group commit does both for many records at once).
    pub fn write_temporary(&self, path: &Path) -> std::io::Result<PathBuf> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = temporary(path);
        std::fs::File::create(&tmp)?.write_all(&json)?;
        Ok(tmp)
    }

    /// Reads a record written by [`JobRecord::write`].
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

/// Returns the record of a new job owned by `node`, for tests to adjust.
#[cfg(test)]
pub(crate) fn sample(node: &NodeName) -> JobRecord {
    JobRecord {
        id: JobId::new(node),
        options: EncodeOptions::default(),
        input_bytes: 10,
        created_at_ms: 1_000,
        idempotency_key: Some("key".into()),
        digest: "ab".into(),
        attempt: Attempt::new(2),
        lost_attempts: 0,
        interrupted: 0,
        node: Some(node.clone()),
        media: None,
        finished_at_ms: None,
        outcome: None,
        owner: Some(node.clone()),
        standby: Some("node-b".parse().expect("a node name")),
        epoch: Epoch::new(1),
        tenant: None,
        split: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let node: NodeName = "node-a".parse().unwrap();
        let record = JobRecord {
            digest: hex::encode([0xab, 0x01]),
            attempt: Attempt::new(3),
            finished_at_ms: Some(9),
            outcome: Some(Outcome::Completed {
                bytes: 7,
                report: None,
            }),
            epoch: Epoch::new(2),
            ..sample(&node)
        };
        let path = dir.path().join("job.json");
        record.write(&path).unwrap();
        let back = JobRecord::read(&path).unwrap();
        assert_eq!(back.id, record.id);
        assert_eq!(back.digest, "ab01");
        assert_eq!(back.attempt, Attempt::new(3));
        assert!(matches!(
            back.outcome,
            Some(Outcome::Completed {
                bytes: 7,
                report: None
            })
        ));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(JobRecord::read(&path).is_err());
    }
}
