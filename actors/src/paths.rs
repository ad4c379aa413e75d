//! Where a node keeps a job's files under its data directory. Every part of
//! the node (actors and the HTTP layer) goes through these; the copies it
//! keeps of other nodes' jobs are [`crate::replicas`]'s.

use std::path::{Path, PathBuf};

use crate::counters::Attempt;
use crate::job::{JobId, Piece};

/// The folder of the jobs this node owns.
pub fn jobs_dir(data: &Path) -> PathBuf {
    data.join("jobs")
}

/// The folder of a job owned by this node: `<data>/jobs/<id>`.
pub fn job_dir(data: &Path, id: JobId) -> PathBuf {
    jobs_dir(data).join(id.to_string())
}

/// The durable record of a job owned by this node.
pub fn record(data: &Path, id: JobId) -> PathBuf {
    job_dir(data, id).join("job.json")
}

/// The uploaded input of a job owned by this node.
pub fn input(data: &Path, id: JobId) -> PathBuf {
    job_dir(data, id).join("input")
}

/// Where attempt `attempt` of a job owned by this node puts its output.
/// Each attempt has its own file, so a stale attempt cannot overwrite a
/// newer one's.
pub fn attempt_output(data: &Path, id: JobId, attempt: Attempt) -> PathBuf {
    job_dir(data, id).join(format!("output.attempt-{attempt}.mp4"))
}

/// A finished piece of a split job owned by this node, kept until the join.
pub fn piece(data: &Path, id: JobId, piece: Piece) -> PathBuf {
    job_dir(data, id).join(piece.file_name())
}

/// The accepted result of a completed job.
pub fn result(data: &Path, id: JobId) -> PathBuf {
    job_dir(data, id).join("output.mp4")
}

/// The JPEG thumbnail of a job's input, made when the job is accepted.
pub fn thumbnail(data: &Path, id: JobId) -> PathBuf {
    job_dir(data, id).join("thumbnail.jpg")
}

/// The mark of a cancel asked of a job's standby before it took the job
/// over, in the job's folder (`job_dir`) or its copy's folder, which a
/// takeover moves to `job_dir` with it.
pub fn cancel_requested(job_folder: &Path) -> PathBuf {
    job_folder.join("cancel-requested")
}

/// Where inputs of jobs owned elsewhere are kept for their pieces
/// ([`crate::inputs`]); scratch space, like the attempts'.
pub fn fetched_inputs_dir(data: &Path) -> PathBuf {
    data.join("work").join("inputs")
}

/// Scratch space for an attempt this node runs for a job owned elsewhere.
pub fn work_dir(data: &Path, id: JobId, attempt: Attempt) -> PathBuf {
    data.join("work").join(format!("{id}.{attempt}"))
}
