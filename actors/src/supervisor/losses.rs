//! How many lost attempts a job bears before it fails, as pure functions.

use vidpress_transcode::{ErrorCode, TranscodeError};

/// A job whose workers went silent this many times fails instead of looping
/// (a worker that never starts or stops reporting while its node stays up).
pub(super) const MAX_LOST_ATTEMPTS: u32 = 3;
/// A job whose attempts were interrupted by the cluster this many times (a
/// node lost, restarted or cut off, bytes that could not be moved) fails.
/// Not the job's fault, so the bound is looser; it only stops endless loops.
pub(super) const MAX_INTERRUPTED_ATTEMPTS: u32 = 10;
/// How an attempt was lost, which decides how many losses a job bears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Loss {
    /// The worker went silent while its node looked alive.
    Worker,
    /// The cluster interrupted it: node lost, bytes not moved.
    Interrupted,
}

/// The attempts a job lost so far, of each kind; durable in its record, so
/// that a restart does not reset the bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Losses {
    pub(super) worker: u32,
    pub(super) interrupted: u32,
}

/// Counts a `loss` in `losses`; returns the error that fails the job when
/// that loss is one too many, `None` when the job may run again.
pub(super) fn count_loss(losses: &mut Losses, loss: Loss, reason: &str) -> Option<TranscodeError> {
    let (count, limit, how) = match loss {
        Loss::Worker => (
            &mut losses.worker,
            MAX_LOST_ATTEMPTS,
            "lost with its worker",
        ),
        Loss::Interrupted => (
            &mut losses.interrupted,
            MAX_INTERRUPTED_ATTEMPTS,
            "interrupted",
        ),
    };
    *count += 1;
    (*count >= limit).then(|| {
        TranscodeError::new(
            ErrorCode::WorkerLost,
            format!("the job was {how} {count} times; last: {reason}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_third_silent_worker_fails_the_job() {
        let mut losses = Losses::default();
        assert!(count_loss(&mut losses, Loss::Worker, "silent").is_none());
        assert!(count_loss(&mut losses, Loss::Worker, "silent").is_none());
        let error = count_loss(&mut losses, Loss::Worker, "silent again").unwrap();
        assert_eq!(error.code, ErrorCode::WorkerLost);
        assert_eq!(
            error.message,
            "the job was lost with its worker 3 times; last: silent again"
        );
        assert_eq!(
            losses,
            Losses {
                worker: 3,
                interrupted: 0
            }
        );
    }

    #[test]
    fn the_tenth_interruption_fails_the_job_and_kinds_count_apart() {
        let mut losses = Losses {
            worker: MAX_LOST_ATTEMPTS - 1,
            interrupted: 0,
        };
        for _ in 1..MAX_INTERRUPTED_ATTEMPTS {
            assert!(count_loss(&mut losses, Loss::Interrupted, "node lost").is_none());
        }
        let error = count_loss(&mut losses, Loss::Interrupted, "node b was lost").unwrap();
        assert_eq!(
            error.message,
            "the job was interrupted 10 times; last: node b was lost"
        );
        assert_eq!(losses.worker, MAX_LOST_ATTEMPTS - 1);
    }

    #[test]
    fn losses_recovered_from_a_record_count_on() {
        // After a restart the counts come from the record: one more loss
        // than the bound allows fails the job at once.
        let mut losses = Losses {
            worker: MAX_LOST_ATTEMPTS - 1,
            interrupted: 0,
        };
        assert!(count_loss(&mut losses, Loss::Worker, "silent").is_some());
    }
}
