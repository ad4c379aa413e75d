//! What a worker is told, and what it reports back about an attempt.

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};
use vidpress_cluster::{wire, NodeName};
use vidpress_transcode::{EncodeOptions, MediaInfo, Output, SegmentWork, TranscodeError};

use crate::counters::Attempt;
use crate::job::JobId;

/// One attempt of a job, handed to a worker on any node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assignment {
    pub job: JobId,
    /// The attempt number, which fences reports of older attempts.
    pub attempt: Attempt,
    pub options: EncodeOptions,
    /// The node that owns the job and receives the reports.
    pub owner: NodeName,
    /// Base URL of the owner's HTTP API, for moving the job's bytes.
    pub owner_http: String,
}

/// What an attempt of a split job encodes: one segment of its video, or
/// its whole audio.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PieceWork {
    Segment(SegmentWork),
    Audio,
}

/// Messages a worker handles.
pub enum WorkerMsg {
    /// Runs an attempt; refused with [`AttemptReport::Rejected`] when busy.
    Assign(Assignment),
    /// Runs an attempt that encodes one piece of a split job, as `Assign`
    /// runs a whole one; its output is that piece's file.
    AssignPiece {
        assignment: Assignment,
        work: PieceWork,
    },
    /// Stops the given attempt at once if it is the one running.
    Cancel { job: JobId, attempt: Attempt },
    /// Leaves the worker group and refuses new attempts; the running one
    /// finishes (sent by the local gateway when the node shuts down).
    Drain,
    /// Stops the running attempt, if its job's owner is `owner` (any owner
    /// with `None`), and reports it lost with `reason`: the cluster
    /// interrupted it, and its job runs again where its owner decides (sent
    /// by the local gateway when the owner is down, or when this node is cut
    /// off from a majority that may take its jobs over).
    Interrupt {
        owner: Option<NodeName>,
        reason: String,
    },
    /// The running attempt's task finished (sent by the worker to itself).
    AttemptEnded {
        job: JobId,
        attempt: Attempt,
        report: AttemptReport,
    },
}

/// The variants other nodes may send, in their wire form. Append only: a
/// node that cannot decode a newer variant drops that message.
#[derive(Serialize, Deserialize)]
enum WorkerWire {
    Assign(Assignment),
    Cancel {
        job: JobId,
        attempt: Attempt,
    },
    AssignPiece {
        assignment: Assignment,
        work: PieceWork,
    },
}

impl ractor::Message for WorkerMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let wire = match self {
            Self::Assign(a) => WorkerWire::Assign(a),
            Self::Cancel { job, attempt } => WorkerWire::Cancel { job, attempt },
            Self::AssignPiece { assignment, work } => WorkerWire::AssignPiece { assignment, work },
            Self::AttemptEnded { .. } | Self::Drain | Self::Interrupt { .. } => {
                return Err(BoxedDowncastErr)
            }
        };
        wire::encode_cast("worker.v1", &wire)
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match wire::decode::<WorkerWire>(message)? {
            WorkerWire::Assign(a) => Self::Assign(a),
            WorkerWire::Cancel { job, attempt } => Self::Cancel { job, attempt },
            WorkerWire::AssignPiece { assignment, work } => Self::AssignPiece { assignment, work },
        })
    }
}

/// What a worker reports about one attempt. Crosses nodes inside
/// `GatewayMsg::Report`; append only.
#[derive(Debug, Serialize, Deserialize)]
pub enum AttemptReport {
    /// The worker on `node` has started the attempt.
    Started { node: NodeName },
    /// The input was probed.
    Probed(MediaInfo),
    /// Fraction done, 0–1.
    Progress(f64),
    /// The attempt failed, and why (`Ok`, the output's size, comes only
    /// from older nodes: they send no `Finished`).
    Ended(Result<u64, TranscodeError>),
    /// The attempt was stopped on request.
    Canceled,
    /// The worker was busy and did not start the attempt.
    Rejected,
    /// The attempt could not run for reasons that are not the job's (its
    /// bytes could not be moved); another worker should try.
    Lost(String),
    /// The attempt is alive but has no progress to tell (moving bytes).
    Alive,
    /// The attempt finished: the output's size and its report.
    Finished(Output),
}

#[cfg(test)]
mod tests {
    use ractor::Message;

    use super::*;

    fn assignment() -> Assignment {
        let owner: NodeName = "node-a".parse().unwrap();
        Assignment {
            job: JobId::new(&owner),
            attempt: Attempt::new(2),
            options: EncodeOptions::default(),
            owner,
            owner_http: "http://127.0.0.1:8080".into(),
        }
    }

    /// The wire form of a previous version, which knew only assignments.
    #[derive(Serialize)]
    enum PreviousWire {
        Assign(Assignment),
    }

    /// The wire form of a later version, with a variant this one lacks.
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum NextWire {
        Assign(Assignment),
        Cancel { job: JobId, attempt: Attempt },
        Pause { job: JobId },
    }

    #[test]
    fn messages_of_a_previous_version_decode_and_unknown_later_variants_are_refused() {
        let old = wire::encode_cast("worker.v1", &PreviousWire::Assign(assignment())).unwrap();
        match WorkerMsg::deserialize(old) {
            Ok(WorkerMsg::Assign(a)) => assert_eq!(a.attempt, Attempt::new(2)),
            _ => panic!("a previous version's assignment must decode"),
        }
        let job = assignment().job;
        let newer = wire::encode_cast("worker.v2", &NextWire::Pause { job }).unwrap();
        assert!(WorkerMsg::deserialize(newer).is_err());
        let cancel = WorkerMsg::Cancel {
            job,
            attempt: Attempt::new(1),
        }
        .serialize()
        .unwrap();
        assert!(matches!(
            WorkerMsg::deserialize(cancel),
            Ok(WorkerMsg::Cancel { attempt, .. }) if attempt == Attempt::new(1)
        ));
    }
}
