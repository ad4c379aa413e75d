//! Copies of a job on its standby, sent from the owner: the record each
//! time it changes, the result with the completed record before the job is
//! said to be completed, and everything at once when the standby comes back.
//! Failed copies are tried again with `backon`'s exponential backoff.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use ractor::ActorRef;
use tokio::sync::watch;
use tracing::warn;
use vidpress_cluster::NodeName;

use crate::job::{JobId, Piece};
use crate::paths;
use crate::protocol::SupervisorMsg;
use crate::record::JobRecord;
use crate::transfer::{ReplicaFile, Transfer, TransferError};

/// The delays between tries of a failed copy: 500 ms, doubling, capped at
/// 30 s, without jitter; never giving up by itself (each caller has its own
/// rule for that).
const RECOPY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(500))
    .with_factor(2.0)
    .with_max_delay(Duration::from_secs(30))
    .without_max_times();

/// How long a result copy is tried again while the standby is not down,
/// before the job completes with one copy anyway (a standby that is up but
/// cannot store it).
const RESULT_COPY_PATIENCE: Duration = Duration::from_secs(60);

/// Sends a job's standby at `http` what it needs to take the job over: the
/// result (or, unfinished, the input), then the record. Returns whether the
/// record landed.
pub(crate) async fn resync(
    transfer: &dyn Transfer,
    http: &str,
    record: &JobRecord,
    data_dir: &Path,
) -> bool {
    let file = if record.outcome.is_some() {
        ReplicaFile::Result
    } else {
        ReplicaFile::Input
    };
    // An unfinished split job's finished pieces go too, so a takeover
    // does not encode them again.
    let pieces: Vec<ReplicaFile> = record
        .split
        .as_ref()
        .filter(|_| record.outcome.is_none())
        .map(|split| {
            split
                .done
                .iter()
                .map(|d| ReplicaFile::Piece(d.piece))
                .collect()
        })
        .unwrap_or_default();
    for file in std::iter::once(file).chain(pieces) {
        let path = paths::job_dir(data_dir, record.id).join(&*file.name());
        // A failed job has no file to send; its record is enough.
        if !path.exists() {
            continue;
        }
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

/// Copies a job's `file` at `path`, then its `record`, to the standby at
/// `http`: a new job's input with its first record, or a result with the
/// completed record.
pub(crate) async fn copy_file_and_record(
    transfer: &dyn Transfer,
    http: &str,
    file: ReplicaFile,
    path: &Path,
    record: &JobRecord,
) -> Result<(), TransferError> {
    transfer.replicate_file(http, record.id, file, path).await?;
    transfer.replicate_record(http, record).await
}

/// Copies a job's result at `output`, then its completed record `ended`, to
/// the standby at `http`, so that a download survives the loss of either
/// node and a standby taking over never runs again a job a client saw end.
/// Tried again, backing off, while the standby is up (a slow or briefly
/// unreachable one); given up once `standby_down` says it is down, or after
/// [`RESULT_COPY_PATIENCE`]: the job then completes with one copy, and the
/// standby is resynced when it returns.
pub(crate) async fn copy_result(
    transfer: &dyn Transfer,
    http: &str,
    output: &Path,
    ended: &JobRecord,
    standby_down: impl Fn() -> bool,
) {
    let give_up = Instant::now() + RESULT_COPY_PATIENCE;
    let copied = (|| copy_file_and_record(transfer, http, ReplicaFile::Result, output, ended))
        .retry(RECOPY)
        .when(|_| !standby_down() && Instant::now() < give_up)
        .notify(|e, retry_in| {
            warn!(job_id = %ended.id, standby = %http, error = %e, ?retry_in, "cannot copy the result to the standby");
        })
        .await;
    if let Err(e) = copied {
        warn!(job_id = %ended.id, standby = %http, error = %e, "cannot copy the result to the standby: completing with one copy");
    }
}

/// Copies a split job's finished `piece` at `path` to the standby at
/// `http`, so that a standby taking the job over does not encode it again.
/// Tried again like a result ([`copy_result`]); a piece that does not land
/// costs a takeover its encode, nothing more.
pub(crate) async fn copy_piece(
    transfer: &dyn Transfer,
    http: &str,
    job: JobId,
    piece: Piece,
    path: &Path,
    standby_down: impl Fn() -> bool,
) {
    let give_up = Instant::now() + RESULT_COPY_PATIENCE;
    let copied = (|| transfer.replicate_file(http, job, ReplicaFile::Piece(piece), path))
        .retry(RECOPY)
        .when(|_| !standby_down() && Instant::now() < give_up)
        .notify(|e, retry_in| {
            warn!(job_id = %job, standby = %http, ?piece, error = %e, ?retry_in, "cannot copy a piece to the standby");
        })
        .await;
    if let Err(e) = copied {
        warn!(job_id = %job, standby = %http, ?piece, error = %e, "cannot copy a piece to the standby: a takeover encodes it again");
    }
}

/// Copies each new record of a job to its standby, the latest first: a
/// record skipped while the standby was slow is superseded by a newer one.
/// A failed copy is tried again, backing off, until it lands or a newer
/// record replaces it (the backoff goes on from where it was); each copy
/// that lands is reported to the supervisor. Ends with the job's supervisor.
pub(crate) async fn copy_records(
    transfer: Arc<dyn Transfer>,
    standby: String,
    mut records: watch::Receiver<(u64, JobRecord)>,
    supervisor: ActorRef<SupervisorMsg>,
) {
    while records.changed().await.is_ok() {
        let mut delays = RECOPY.build();
        loop {
            let (version, record) = records.borrow_and_update().clone();
            let Err(e) = transfer.replicate_record(&standby, &record).await else {
                let _ = supervisor.cast(SupervisorMsg::RecordCopied(version));
                break;
            };
            // Never empty: the delays have no end.
            let retry_in = delays.next().unwrap_or(Duration::from_secs(30));
            warn!(job_id = %record.id, standby = %standby, error = %e, ?retry_in, "cannot copy the record to the standby");
            tokio::select! {
                changed = records.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(retry_in) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::counters::{Attempt, Epoch};
    use crate::job::JobId;
    use crate::record::{self, Outcome};
    use crate::transfer::{Relinquished, TransferFuture};

    /// A standby that fails its first `failures` copies and logs the rest.
    #[derive(Default)]
    struct FakeStandby {
        failures: Mutex<u32>,
        copied: Mutex<Vec<String>>,
    }

    impl FakeStandby {
        fn failing(failures: u32) -> Self {
            Self {
                failures: Mutex::new(failures),
                ..Self::default()
            }
        }

        fn copy(&self, what: String) -> TransferFuture<'_> {
            let mut failures = self.failures.lock().unwrap();
            let result = if *failures > 0 {
                *failures -= 1;
                Err(TransferError("refused".into()))
            } else {
                self.copied.lock().unwrap().push(what);
                Ok(())
            };
            Box::pin(async move { result })
        }

        fn copied(&self) -> Vec<String> {
            self.copied.lock().unwrap().clone()
        }
    }

    /// What the fake answers to a call a standby never gets.
    fn not_a_standbys_part<'a, T: Send + 'a>() -> TransferFuture<'a, T> {
        Box::pin(async { Err(TransferError("not a standby's part".into())) })
    }

    impl Transfer for FakeStandby {
        fn fetch_input<'a>(&'a self, _: &'a str, _: JobId, _: &'a Path) -> TransferFuture<'a> {
            not_a_standbys_part()
        }

        fn replicate_file<'a>(
            &'a self,
            _: &'a str,
            _: JobId,
            file: ReplicaFile,
            _: &'a Path,
        ) -> TransferFuture<'a> {
            self.copy(file.name().into_owned())
        }

        fn replicate_record<'a>(&'a self, _: &'a str, record: &'a JobRecord) -> TransferFuture<'a> {
            let status = if record.outcome.is_some() {
                "ended record"
            } else {
                "record"
            };
            self.copy(status.to_owned())
        }

        fn relinquish<'a>(
            &'a self,
            _: &'a str,
            _: JobId,
            _: Epoch,
            _: bool,
        ) -> TransferFuture<'a, Relinquished> {
            not_a_standbys_part()
        }

        fn drop_given_up<'a>(&'a self, _: &'a str, _: JobId, _: Epoch) -> TransferFuture<'a> {
            not_a_standbys_part()
        }

        fn push_output<'a>(
            &'a self,
            _: &'a str,
            _: JobId,
            _: Attempt,
            _: &'a Path,
        ) -> TransferFuture<'a> {
            not_a_standbys_part()
        }
    }

    /// Copies a completed job's result to `standby`, which is down or not.
    async fn copy_to(standby: &FakeStandby, down: bool) {
        let node: NodeName = "node-a".parse().unwrap();
        let ended = JobRecord {
            outcome: Some(Outcome::Completed {
                bytes: 1,
                report: None,
            }),
            ..record::sample(&node)
        };
        copy_result(standby, "http://b", Path::new("out"), &ended, || down).await;
    }

    #[test]
    fn copies_are_retried_after_half_a_second_doubling_to_thirty() {
        let delays: Vec<f32> = RECOPY.build().take(9).map(|d| d.as_secs_f32()).collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
    }

    #[tokio::test]
    async fn a_result_goes_to_the_standby_before_its_completed_record() {
        let standby = FakeStandby::default();
        copy_to(&standby, false).await;
        assert_eq!(standby.copied(), ["output.mp4", "ended record"]);
    }

    #[tokio::test]
    async fn a_result_copy_is_tried_again_while_the_standby_is_up() {
        // The first try is refused; without a second, nothing would land.
        let standby = FakeStandby::failing(1);
        copy_to(&standby, false).await;
        assert_eq!(standby.copied(), ["output.mp4", "ended record"]);
    }

    #[tokio::test]
    async fn a_result_copy_is_given_up_once_the_standby_is_down() {
        let standby = FakeStandby::failing(u32::MAX);
        let started = Instant::now();
        copy_to(&standby, true).await;
        assert!(standby.copied().is_empty());
        assert_eq!(
            *standby.failures.lock().unwrap(),
            u32::MAX - 1,
            "one try only"
        );
        assert!(started.elapsed() < Duration::from_millis(400), "no wait");
    }
}
