//! Copies of a job on its standby, sent from the owner: the record each
//! time it changes, and everything at once when the standby comes back.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;
use tracing::warn;
use vidpress_cluster::NodeName;

use crate::paths;
use crate::protocol::SupervisorMsg;
use crate::record::JobRecord;
use crate::transfer::{ReplicaFile, Transfer};

/// A failed copy of the record to the standby is tried again after this long
/// at first, doubling up to [`RECOPY_MAX`] (sooner when a newer record comes).
pub(crate) const RECOPY_FIRST: Duration = Duration::from_millis(500);
pub(crate) const RECOPY_MAX: Duration = Duration::from_secs(30);

/// Sends a job's standby at `http` what it needs to take the job over: the
/// result (or, unfinished, the input), then the record. Returns whether the
/// record landed.
pub(crate) async fn resync(
    transfer: &dyn Transfer,
    http: &str,
    record: &JobRecord,
    data_dir: &std::path::Path,
) -> bool {
    let file = if record.outcome.is_some() {
        ReplicaFile::Result
    } else {
        ReplicaFile::Input
    };
    let path = paths::job_dir(data_dir, record.id).join(file.name());
    // A failed job has no file to send; its record is enough.
    if path.exists() {
        if let Err(e) = transfer.replicate_file(http, record.id, file, &path).await {
            warn!(job_id = %record.id, node = record.node.as_ref().map(NodeName::as_str), attempt = record.attempt.get(), standby = %http, error = %e, "cannot resync the standby");
            return false;
        }
    }
    match transfer.replicate_record(http, record).await {
        Ok(()) => true,
        Err(e) => {
            warn!(job_id = %record.id, node = record.node.as_ref().map(NodeName::as_str), attempt = record.attempt.get(), standby = %http, error = %e, "cannot resync the standby");
            false
        }
    }
}

/// Copies each new record of a job to its standby, the latest first: a
/// record skipped while the standby was slow is superseded by a newer one.
/// A failed copy is tried again, backing off, until it lands or a newer
/// record replaces it; each copy that lands is reported to the supervisor.
/// Ends with the job's supervisor.
pub(crate) async fn copy_records(
    transfer: Arc<dyn Transfer>,
    standby: String,
    mut records: watch::Receiver<(u64, JobRecord)>,
    supervisor: ActorRef<SupervisorMsg>,
) {
    while records.changed().await.is_ok() {
        let mut backoff = RECOPY_FIRST;
        loop {
            let (version, record) = records.borrow_and_update().clone();
            match transfer.replicate_record(&standby, &record).await {
                Ok(()) => {
                    let _ = supervisor.cast(SupervisorMsg::RecordCopied(version));
                    break;
                }
                Err(e) => {
                    warn!(job_id = %record.id, standby = %standby, error = %e, retry_in = ?backoff, "cannot copy the record to the standby");
                }
            }
            tokio::select! {
                changed = records.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECOPY_MAX);
        }
    }
}
