//! The job's state machine as pure functions: given the state and what
//! happened, what comes next. The actor applies these; nothing here sends,
//! writes or reads a clock.

use std::path::PathBuf;
use std::time::SystemTime;

use vidpress_cluster::NodeName;
use vidpress_transcode::{MediaInfo, Output};

use super::losses::{Loss, Losses};
use crate::counters::{Attempt, Seq};
use crate::job::{InputInfo, JobSnapshot, JobState};
use crate::protocol::AttemptReport;
use crate::record::{self, JobRecord, Outcome};

/// What a report of the current attempt leads to.
#[derive(Debug)]
pub(super) enum Step {
    /// The worker began; it runs on `node`.
    Started(NodeName),
    /// The input was probed.
    Probed(MediaInfo),
    /// The attempt moved on to this fraction.
    Progress(f64),
    /// The attempt's output becomes the result.
    Complete(Output),
    /// The slot is free and the job ends in this state.
    End(JobState),
    /// The worker refused the attempt (not the job's fault, not a loss):
    /// the slot goes back and the job waits for another.
    Requeue,
    /// The attempt was lost; whether the job runs again is
    /// [`super::losses::count_loss`]'s call.
    Lost(Loss, String),
    /// Nothing changes.
    Nothing,
}

/// Returns whether a report of `attempt` is stale: only the current attempt
/// may change the job, so an older one cannot overwrite a newer one's work.
pub(super) fn is_stale(attempt: Attempt, current: Attempt) -> bool {
    attempt != current
}

/// Returns the step a report of the current attempt leads to, for a job
/// whose client asked for a cancel or not.
pub(super) fn on_report(cancel_requested: bool, report: AttemptReport) -> Step {
    match report {
        AttemptReport::Started { node } => Step::Started(node),
        AttemptReport::Probed(media) => Step::Probed(media),
        AttemptReport::Progress(fraction) => Step::Progress(fraction),
        AttemptReport::Ended(_) | AttemptReport::Finished(_) | AttemptReport::Canceled
            if cancel_requested =>
        {
            Step::End(JobState::Canceled)
        }
        AttemptReport::Finished(output) => Step::Complete(output),
        // From a node that sends no report.
        AttemptReport::Ended(Ok(bytes)) => Step::Complete(Output {
            bytes,
            report: None,
        }),
        AttemptReport::Ended(Err(error)) => Step::End(JobState::Failed(error)),
        // Also the answer to the stop of an attempt already lost and
        // requeued: only a cancel the client asked for ends the job.
        AttemptReport::Canceled => Step::Nothing,
        AttemptReport::Rejected => Step::Requeue,
        AttemptReport::Lost(reason) => Step::Lost(Loss::Interrupted, reason),
        AttemptReport::Alive => Step::Nothing,
    }
}

/// What a client's cancel does.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CancelStep {
    /// Queued: the job leaves the queue and ends canceled now.
    EndNow,
    /// Running: the attempt is told to stop; the job ends when it says so.
    StopAttempt,
    /// Already asked, or already over: nothing more to do.
    Nothing,
}

/// Returns what a cancel does to a job in `state`.
pub(super) fn on_cancel(state: &JobState) -> CancelStep {
    match state {
        JobState::Queued => CancelStep::EndNow,
        JobState::Running {
            cancel_requested: false,
            ..
        } => CancelStep::StopAttempt,
        _ => CancelStep::Nothing,
    }
}

/// Returns whether the client asked to cancel the running job.
pub(super) fn cancel_requested(state: &JobState) -> bool {
    matches!(
        state,
        JobState::Running {
            cancel_requested: true,
            ..
        }
    )
}

/// Returns the outcome a terminal state is stored as; `None` for a job
/// still queued or running.
pub(super) fn outcome_of(state: &JobState) -> Option<Outcome> {
    match state {
        JobState::Completed { result, .. } => Some(Outcome::Completed {
            bytes: result.bytes,
            report: result.report.clone(),
        }),
        JobState::Failed(error) => Some(Outcome::Failed {
            error: error.clone(),
        }),
        JobState::Canceled => Some(Outcome::Canceled),
        JobState::Queued | JobState::Running { .. } => None,
    }
}

/// Returns the snapshot of a job as its `record` tells it (see [`state_of`]),
/// before any event: what a supervisor starts from, and what a standby
/// answers from its copy until it takes the job over.
pub(crate) fn snapshot_of(record: &JobRecord, result: PathBuf) -> JobSnapshot {
    let created_at = record::from_ms(record.created_at_ms);
    JobSnapshot {
        id: record.id,
        state: state_of(record, result),
        attempt: record.attempt,
        node: record.node.clone(),
        created_at,
        updated_at: record.finished_at_ms.map_or(created_at, record::from_ms),
        options: record.options,
        input: InputInfo {
            bytes: record.input_bytes,
            media: record.media.clone(),
        },
        seq: Seq::default(),
        tenant: record.tenant.clone(),
        segments: Vec::new(),
    }
}

/// Returns the state a job starts in from its `record`: queued when it has
/// no outcome (an attempt that ran before a restart is run again), else its
/// outcome, a completed one with its result at `result`.
pub(super) fn state_of(record: &JobRecord, result: PathBuf) -> JobState {
    match &record.outcome {
        None => JobState::Queued,
        Some(Outcome::Completed { bytes, report }) => JobState::Completed {
            output: result,
            result: Output {
                bytes: *bytes,
                report: report.clone(),
            },
        },
        Some(Outcome::Failed { error }) => JobState::Failed(error.clone()),
        Some(Outcome::Canceled) => JobState::Canceled,
    }
}

/// Returns `record` as it reads once the job ended with `outcome` at `now`,
/// with what was learned while it ran: its media and its losses.
pub(super) fn ended_record(
    record: &JobRecord,
    outcome: Outcome,
    now: SystemTime,
    media: Option<MediaInfo>,
    losses: Losses,
) -> JobRecord {
    JobRecord {
        outcome: Some(outcome),
        finished_at_ms: Some(record::to_ms(now)),
        media,
        lost_attempts: losses.worker,
        interrupted: losses.interrupted,
        ..record.clone()
    }
}

#[cfg(test)]
mod tests {
    use vidpress_transcode::{ErrorCode, TranscodeError};

    use super::*;

    fn running(cancel_requested: bool) -> JobState {
        JobState::Running {
            progress: 0.5,
            eta_seconds: None,
            cancel_requested,
        }
    }

    fn new_record() -> JobRecord {
        record::sample(&"node-a".parse().unwrap())
    }

    fn failure() -> TranscodeError {
        TranscodeError::new(ErrorCode::InvalidMedia, "not a video")
    }

    #[test]
    fn only_the_current_attempt_is_heard() {
        assert!(!is_stale(Attempt::new(3), Attempt::new(3)));
        assert!(is_stale(Attempt::new(2), Attempt::new(3)));
        // A report from an attempt this node never dispatched (a former
        // owner's, across a takeover) is no more current.
        assert!(is_stale(Attempt::new(4), Attempt::new(3)));
    }

    #[test]
    fn a_successful_end_completes_the_job_unless_it_was_canceled() {
        assert!(matches!(
            on_report(false, AttemptReport::Ended(Ok(42))),
            Step::Complete(Output {
                bytes: 42,
                report: None
            })
        ));
        assert!(matches!(
            on_report(true, AttemptReport::Ended(Ok(42))),
            Step::End(JobState::Canceled)
        ));
    }

    #[test]
    fn a_failed_end_fails_the_job_unless_it_was_canceled() {
        assert!(matches!(
            on_report(false, AttemptReport::Ended(Err(failure()))),
            Step::End(JobState::Failed(e)) if e == failure()
        ));
        assert!(matches!(
            on_report(true, AttemptReport::Ended(Err(failure()))),
            Step::End(JobState::Canceled)
        ));
    }

    #[test]
    fn a_worker_cancel_ends_the_job_only_when_the_client_asked() {
        assert!(matches!(
            on_report(true, AttemptReport::Canceled),
            Step::End(JobState::Canceled)
        ));
        // The stop of a lost attempt, or of a node fencing itself off.
        assert!(matches!(
            on_report(false, AttemptReport::Canceled),
            Step::Nothing
        ));
    }

    #[test]
    fn a_rejection_requeues_and_a_loss_counts_as_an_interruption() {
        assert!(matches!(
            on_report(false, AttemptReport::Rejected),
            Step::Requeue
        ));
        assert!(matches!(
            on_report(true, AttemptReport::Lost("no bytes".into())),
            Step::Lost(Loss::Interrupted, reason) if reason == "no bytes"
        ));
        assert!(matches!(
            on_report(false, AttemptReport::Alive),
            Step::Nothing
        ));
    }

    #[test]
    fn start_and_progress_reports_carry_their_news() {
        let node: NodeName = "node-c".parse().unwrap();
        assert!(matches!(
            on_report(false, AttemptReport::Started { node: node.clone() }),
            Step::Started(n) if n == node
        ));
        assert!(matches!(
            on_report(true, AttemptReport::Progress(0.25)),
            Step::Progress(f) if f == 0.25
        ));
    }

    #[test]
    fn a_cancel_ends_a_queued_job_at_once_and_stops_a_running_one_once() {
        assert_eq!(on_cancel(&JobState::Queued), CancelStep::EndNow);
        assert_eq!(on_cancel(&running(false)), CancelStep::StopAttempt);
        assert_eq!(on_cancel(&running(true)), CancelStep::Nothing);
        assert_eq!(on_cancel(&JobState::Canceled), CancelStep::Nothing);
        assert_eq!(on_cancel(&JobState::Failed(failure())), CancelStep::Nothing);
        assert!(cancel_requested(&running(true)));
        assert!(!cancel_requested(&running(false)));
        assert!(!cancel_requested(&JobState::Queued));
    }

    #[test]
    fn terminal_states_are_stored_as_outcomes_and_read_back() {
        let result = PathBuf::from("/data/jobs/x/output.mp4");
        let read_back = |state: &JobState| {
            let record = JobRecord {
                outcome: outcome_of(state),
                ..new_record()
            };
            state_of(&record, result.clone())
        };
        let completed = JobState::Completed {
            output: result.clone(),
            result: Output {
                bytes: 7,
                report: None,
            },
        };
        assert!(matches!(
            read_back(&completed),
            JobState::Completed { output, result: Output { bytes: 7, .. } } if output == result
        ));
        assert!(matches!(
            read_back(&JobState::Failed(failure())),
            JobState::Failed(e) if e == failure()
        ));
        assert!(matches!(read_back(&JobState::Canceled), JobState::Canceled));
        assert!(outcome_of(&JobState::Queued).is_none());
        assert!(outcome_of(&running(false)).is_none());
        // An attempt that ran before a restart is run again.
        assert!(matches!(
            state_of(&new_record(), result.clone()),
            JobState::Queued
        ));
    }

    #[test]
    fn the_ended_record_keeps_the_job_and_adds_what_the_run_learned() {
        let record = new_record();
        let now = record::from_ms(5_000);
        let losses = Losses {
            worker: 1,
            interrupted: 2,
        };
        let ended = ended_record(&record, Outcome::Canceled, now, None, losses);
        assert!(matches!(ended.outcome, Some(Outcome::Canceled)));
        assert_eq!(ended.finished_at_ms, Some(5_000));
        assert_eq!((ended.lost_attempts, ended.interrupted), (1, 2));
        assert_eq!(ended.id, record.id);
        assert_eq!(ended.attempt, record.attempt);
        assert_eq!(ended.epoch, record.epoch);
        assert_eq!(ended.standby, record.standby);
        assert_eq!(ended.idempotency_key, record.idempotency_key);
    }
}
