//! The job model: identities, the typed state machine, snapshots and events.
//!
//! A job's truth lives in its `JobSupervisor`; everything here is the shape of
//! that truth and of the read-only copies ([`JobSnapshot`], [`JobEvent`]) the
//! supervisor hands out. None of it is a wire format: the HTTP layer maps it
//! to its own documents.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};
use uuid::Uuid;
use vidpress_cluster::NodeName;
use vidpress_transcode::{EncodeOptions, MediaInfo, Output, TranscodeError};

use crate::counters::{Attempt, Seq};
use crate::tenant::Tenant;

/// The identity of a job: a UUIDv7, so that IDs sort by creation time, whose
/// last two bytes name the node that owns it ([`JobId::owner_tag`]), so any
/// node can route a request for it without asking the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

/// Prefix of a job supervisor's actor name.
const ACTOR_PREFIX: &str = "vidpress.job.";

impl JobId {
    /// Returns a new, time-ordered job ID owned by `owner`.
    pub fn new(owner: &NodeName) -> Self {
        Self::with_standby(owner, None)
    }

    /// Returns a new job ID owned by `owner` whose standby is `standby`.
    pub fn with_standby(owner: &NodeName, standby: Option<&NodeName>) -> Self {
        let mut bytes = *Uuid::now_v7().as_bytes();
        // The last four bytes are random in a UUIDv7 (the monotonic counter
        // sits before them), so the ID stays a valid, time-ordered v7.
        bytes[12..14].copy_from_slice(&standby.map_or(0, node_tag).to_be_bytes());
        bytes[14..].copy_from_slice(&node_tag(owner).to_be_bytes());
        Self(Uuid::from_bytes(bytes))
    }

    /// Returns the tag of the owning node, as [`node_tag`] computes it.
    pub fn owner_tag(&self) -> u16 {
        let bytes = self.0.as_bytes();
        u16::from_be_bytes([bytes[14], bytes[15]])
    }

    /// Returns the tag of the standby node, if the job has one.
    pub fn standby_tag(&self) -> Option<u16> {
        let bytes = self.0.as_bytes();
        Some(u16::from_be_bytes([bytes[12], bytes[13]])).filter(|t| *t != 0)
    }

    /// Returns the name the job's supervisor is registered under.
    pub(crate) fn actor_name(&self) -> String {
        format!("{ACTOR_PREFIX}{}", self.0)
    }

    /// Reads a job ID back from its supervisor's actor name.
    pub(crate) fn from_actor_name(name: &str) -> Option<Self> {
        name.strip_prefix(ACTOR_PREFIX)?.parse().ok()
    }
}

/// Returns the 16-bit tag a node stamps on the IDs of the jobs it owns
/// (FNV-1a of its name).
pub fn node_tag(node: &NodeName) -> u16 {
    let hash = node.as_str().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash ^ (hash >> 16)) as u16
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Why a string is not a job ID.
#[derive(Debug, thiserror::Error)]
#[error("not a job id")]
pub struct JobIdError;

impl FromStr for JobId {
    type Err = JobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| JobIdError)
    }
}

/// The coarse status of a job, as clients see it. Its name (serde's and
/// strum's, for `Display` and `FromStr`) is the variant's in snake_case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(IntoStaticStr, Display, EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobStatus {
    /// Every status, in the order a job goes through them.
    pub const ALL: [JobStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
    ];

    /// Returns the status as its lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Returns whether no further change can happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// The state machine of a job: `queued → running → completed | failed | canceled`.
#[derive(Clone, Debug)]
pub enum JobState {
    /// Accepted, waiting for a worker slot.
    Queued,
    /// An attempt is running on a worker.
    Running {
        /// Fraction done, 0–1, never decreasing within an attempt.
        progress: f64,
        /// Estimated seconds left, once progress has been measured.
        eta_seconds: Option<f64>,
        /// A cancel was asked for and the worker has been told.
        cancel_requested: bool,
    },
    /// The output is ready.
    Completed {
        /// Where the output lives on the node that owns the job.
        output: PathBuf,
        /// Its size, and what it is and how it looks.
        result: Output,
    },
    /// The job cannot complete.
    Failed(TranscodeError),
    /// A client canceled the job.
    Canceled,
}

impl JobState {
    /// Returns the coarse status of this state.
    pub fn status(&self) -> JobStatus {
        match self {
            Self::Queued => JobStatus::Queued,
            Self::Running { .. } => JobStatus::Running,
            Self::Completed { .. } => JobStatus::Completed,
            Self::Failed(_) => JobStatus::Failed,
            Self::Canceled => JobStatus::Canceled,
        }
    }
}

/// What is known of a job's input.
#[derive(Clone, Debug)]
pub struct InputInfo {
    /// Size of the upload in bytes.
    pub bytes: u64,
    /// What the transcoder found in it, once probed.
    pub media: Option<MediaInfo>,
}

/// One piece of work of a split job: a segment of its video, or its
/// audio (encoded once, whole). Each runs as an attempt of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Piece {
    Segment(u32),
    Audio,
}

impl Piece {
    /// Returns the name of the piece's file in a job's folder (and in the
    /// standby's copy, and in URLs): `segment-0003.media`, `audio.media`.
    pub fn file_name(self) -> String {
        match self {
            Self::Segment(index) => format!("segment-{index:04}.media"),
            Self::Audio => "audio.media".into(),
        }
    }

    /// Reads a piece back from its [`Self::file_name`].
    pub fn from_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".media")?;
        if stem == "audio" {
            return Some(Self::Audio);
        }
        let digits = stem.strip_prefix("segment-")?;
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Self::Segment)
    }
}

/// Where one segment of a split job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum SegmentStatus {
    /// Waiting for a worker (again, after a lost attempt).
    Pending,
    /// Encoding on a worker.
    Running,
    /// Encoded, and kept on the owner.
    Done,
}

impl SegmentStatus {
    /// Every status, in the order a segment goes through them.
    pub const ALL: [SegmentStatus; 3] = [Self::Pending, Self::Running, Self::Done];

    /// Returns the status as its lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One segment of a split job, as polls show it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentView {
    /// Its place in the video, from 0.
    pub index: u32,
    /// Where it starts and ends in the input, in seconds from its start.
    pub start_seconds: f64,
    pub end_seconds: f64,
    pub status: SegmentStatus,
    /// The node encoding it, or that encoded it; `None` while pending.
    pub node: Option<NodeName>,
    /// Fraction of it encoded, 0–1.
    pub progress: f64,
}

/// A read-only copy of a job's state at one instant.
#[derive(Clone, Debug)]
pub struct JobSnapshot {
    pub id: JobId,
    pub state: JobState,
    /// Dispatches so far, counted from 1; 0 while never dispatched.
    pub attempt: Attempt,
    /// The node running (or that ran) the current attempt.
    pub node: Option<NodeName>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub options: EncodeOptions,
    pub input: InputInfo,
    /// The sequence number of the last event of this job.
    pub seq: Seq,
    /// The tenant the job belongs to; `None` on a node without API keys.
    pub tenant: Option<Tenant>,
    /// The segments of a job split over many workers, in order; empty for
    /// a job encoded in one pass (or not cut yet).
    pub segments: Vec<SegmentView>,
}

impl JobSnapshot {
    /// Returns the coarse status.
    pub fn status(&self) -> JobStatus {
        self.state.status()
    }

    /// Returns the fraction done, 0–1.
    pub fn progress(&self) -> f64 {
        match &self.state {
            JobState::Queued => 0.0,
            JobState::Running { progress, .. } => *progress,
            JobState::Completed { .. } => 1.0,
            JobState::Failed(_) | JobState::Canceled => 0.0,
        }
    }

    /// Returns the estimated time left, when there is one.
    pub fn eta(&self) -> Option<Duration> {
        match &self.state {
            JobState::Running {
                eta_seconds: Some(s),
                ..
            } => Some(Duration::from_secs_f64(s.max(0.0))),
            _ => None,
        }
    }
}

/// The kind of a job event, named in lowercase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum EventKind {
    /// The state as of `seq`, sent first to every subscriber.
    Snapshot,
    /// Progress moved.
    Progress,
    /// The state changed; a terminal status is the last event.
    Status,
}

impl EventKind {
    /// Returns the lowercase name of the kind.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One event of a job, as pushed to subscribers.
#[derive(Clone, Debug)]
pub struct JobEvent {
    pub kind: EventKind,
    /// Rises by one per event of the job; a snapshot carries the seq of the
    /// last event it includes.
    pub seq: Seq,
    pub job: Arc<JobSnapshot>,
    /// The rendering subscribers send, made once for all of them.
    rendered: Arc<OnceLock<Bytes>>,
}

impl JobEvent {
    pub fn new(kind: EventKind, seq: Seq, job: Arc<JobSnapshot>) -> Self {
        Self {
            kind,
            seq,
            job,
            rendered: Arc::default(),
        }
    }

    /// Returns `render(self)`, computed by the first subscriber to send this
    /// event: one job's event to ten thousand subscribers is rendered once.
    /// Every subscriber must pass the same rendering.
    pub fn rendered(&self, render: impl FnOnce(&JobEvent) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(self)).clone()
    }

    /// Returns whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        self.job.status().is_terminal() && self.kind != EventKind::Progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_id_is_read_back_from_its_actor_name() {
        let id = JobId::new(&"node-a".parse().unwrap());
        assert_eq!(JobId::from_actor_name(&id.actor_name()), Some(id));
        assert_eq!(JobId::from_actor_name("vidpress.gateway.node-a"), None);
    }

    #[test]
    fn job_ids_round_trip_sort_by_creation_and_name_their_owner() {
        let node: NodeName = "node-a".parse().unwrap();
        let other: NodeName = "node-b".parse().unwrap();
        let a = JobId::new(&node);
        let b = JobId::new(&node);
        assert!(a < b);
        assert_eq!(a.owner_tag(), node_tag(&node));
        assert_eq!(a.standby_tag(), None);
        let c = JobId::with_standby(&node, Some(&other));
        assert_eq!(
            (c.owner_tag(), c.standby_tag()),
            (node_tag(&node), Some(node_tag(&other)))
        );
        assert!(b < c);
        assert_ne!(node_tag(&node), node_tag(&other));
        assert_eq!(a.0.get_version_num(), 7);
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        assert!("not-a-uuid".parse::<JobId>().is_err());
    }

    #[test]
    fn statuses_parse_and_know_terminality() {
        for s in ["queued", "running", "completed", "failed", "canceled"] {
            let status: JobStatus = s.parse().unwrap();
            assert_eq!(status.as_str(), s);
            assert_eq!(status.is_terminal(), !matches!(s, "queued" | "running"));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}
