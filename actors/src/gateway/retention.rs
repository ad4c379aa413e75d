//! Retention: finished jobs, and the copies this node keeps for others,
//! are removed with their files once older than the retention; folders of
//! copies that never completed are removed after an hour.

use std::time::{Duration, Instant};

use tracing::info;

use super::scheduler::PUMP_EVERY;
use super::GatewayState;
use crate::job::JobId;
use crate::paths;
use crate::replicas;

/// A replica folder without a record this old is removed.
const DEBRIS_AGE: Duration = Duration::from_secs(3600);
/// How often finished jobs past their retention are looked for, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Returns how often to look for expired jobs: a tenth of the retention, so
/// a job outlives it by little, between a pump tick and `SWEEP_EVERY`.
pub(super) fn sweep_every(retention: Duration) -> Duration {
    (retention / 10).clamp(PUMP_EVERY, SWEEP_EVERY)
}

/// Returns whether a job that finished `finished_for` ago (or is not
/// finished: `None`) has outlived the retention.
pub(super) fn expired(finished_for: Option<Duration>, retention: Duration) -> bool {
    finished_for.is_some_and(|age| age >= retention)
}

/// What is known of a copy kept for another node.
pub(super) struct Replica {
    /// Age of its record, if it has one.
    pub record_age: Option<Duration>,
    /// Whether its record says the job is finished.
    pub finished: bool,
    /// Age of its folder.
    pub folder_age: Option<Duration>,
}

/// Returns whether a copy kept for another node goes: its job finished
/// longer ago than the retention (the record's last write is its finish),
/// or it is a folder that never got a record within the hour (debris of a
/// copy that did not complete: the input arrives first). Copies of
/// unfinished jobs stay.
pub(super) fn replica_expired(replica: &Replica, retention: Duration) -> bool {
    let finished_long_ago = replica.finished && expired(replica.record_age, retention);
    let debris = replica.record_age.is_none() && expired(replica.folder_age, DEBRIS_AGE);
    finished_long_ago || debris
}

impl GatewayState {
    /// Sweeps if it is time to.
    pub(super) fn sweep_if_due(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.next_sweep = now + sweep_every(self.args.retention);
            self.sweep();
        }
    }

    /// Removes finished jobs older than the retention, with their files.
    fn sweep(&mut self) {
        let retention = self.args.retention;
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, e)| expired(e.finished.map(|t| t.elapsed()), retention))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some(supervisor) = self.supervisor(*id) {
                supervisor.stop(Some("retention expired".into()));
            }
            self.forget(*id);
            let _ = std::fs::remove_dir_all(paths::job_dir(&self.args.data_dir, *id));
        }
        if !expired.is_empty() {
            info!(node = %self.args.node, removed = expired.len(), "finished jobs past retention removed");
        }
        // A job given up is removed by its holder a retention after it
        // finishes; most finish within another.
        self.board.forget_given_up(retention.saturating_mul(2));
        self.sweep_replicas();
    }

    /// Removes the copies this node keeps for others that [`replica_expired`].
    fn sweep_replicas(&self) {
        for copy in replicas::list(&self.args.data_dir) {
            let record_age = copy.record_age();
            let replica = Replica {
                record_age,
                // Read only when its age could matter.
                finished: expired(record_age, self.args.retention)
                    && copy.record().is_some_and(|r| r.outcome.is_some()),
                folder_age: copy.folder_age(),
            };
            if replica_expired(&replica, self.args.retention) {
                let _ = std::fs::remove_dir_all(&copy.dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_job_expires_once_finished_for_the_retention() {
        assert!(expired(Some(DAY), DAY));
        assert!(!expired(Some(DAY - Duration::from_secs(1)), DAY));
        assert!(!expired(None, Duration::ZERO));
    }

    #[test]
    fn sweeps_come_every_tenth_of_the_retention_within_bounds() {
        assert_eq!(
            sweep_every(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(sweep_every(DAY), SWEEP_EVERY);
        assert_eq!(sweep_every(Duration::ZERO), PUMP_EVERY);
    }

    #[test]
    fn a_copy_of_an_unfinished_job_stays_however_old() {
        let replica = Replica {
            record_age: Some(10 * DAY),
            finished: false,
            folder_age: Some(10 * DAY),
        };
        assert!(!replica_expired(&replica, DAY));
    }

    #[test]
    fn a_copy_of_a_job_finished_long_ago_goes() {
        let replica = Replica {
            record_age: Some(2 * DAY),
            finished: true,
            folder_age: Some(2 * DAY),
        };
        assert!(replica_expired(&replica, DAY));
        assert!(!replica_expired(&replica, 3 * DAY));
    }

    #[test]
    fn a_folder_without_a_record_goes_after_an_hour() {
        let young = Replica {
            record_age: None,
            finished: false,
            folder_age: Some(Duration::from_secs(60)),
        };
        let old = Replica {
            folder_age: Some(DEBRIS_AGE),
            ..young
        };
        assert!(!replica_expired(&young, DAY));
        assert!(replica_expired(&old, DAY));
    }
}
