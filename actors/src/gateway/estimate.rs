//! Estimates: how long a job will take from now, from the queue ahead, the
//! workers and the speed measured on completed jobs (a moving average).

use std::time::Duration;

use super::GatewayState;
use crate::tenant::Tenant;

/// Until a job has been measured, assume one second per megabyte of input.
pub(super) const INITIAL_SECONDS_PER_BYTE: f64 = 1e-6;
/// Weight of the newest measurement in the moving average of speed.
const SPEED_WEIGHT: f64 = 0.3;

/// Estimates how long a job of `bytes` takes from now: the `queued` bytes
/// ahead spread over `workers`, then the job itself, at `seconds_per_byte`;
/// between a second and a day.
pub(super) fn estimate_for(
    seconds_per_byte: f64,
    queued: u64,
    workers: usize,
    bytes: u64,
) -> Duration {
    let workers = workers.max(1) as f64;
    let seconds = seconds_per_byte * (queued as f64 / workers + bytes as f64);
    Duration::from_secs_f64(seconds.clamp(1.0, 86_400.0))
}

/// Returns the moving average of speed after a job of `bytes` ran in
/// `took`; a job without bytes says nothing of speed.
pub(super) fn speed_average(seconds_per_byte: f64, bytes: u64, took: Duration) -> f64 {
    if bytes == 0 {
        return seconds_per_byte;
    }
    let measured = took.as_secs_f64() / bytes as f64;
    SPEED_WEIGHT * measured + (1.0 - SPEED_WEIGHT) * seconds_per_byte
}

impl GatewayState {
    /// Estimates how long a job of `bytes` takes from now.
    pub(super) fn estimate(&self, bytes: u64) -> Duration {
        let workers = self
            .free_slots()
            .iter()
            .map(|n| self.workers_of(&n.node).len())
            .sum::<usize>();
        estimate_for(self.seconds_per_byte, self.queue.bytes(), workers, bytes)
    }

    /// Estimates when a tenant at its quota may submit again: when the
    /// smallest of its unfinished jobs could be done.
    pub(super) fn tenant_wait(&self, tenant: Option<&Tenant>) -> Duration {
        let smallest = self
            .jobs
            .values()
            .filter(|e| e.tenant.as_ref() == tenant && !e.status.is_terminal())
            .map(|e| e.bytes)
            .min()
            .unwrap_or(0);
        estimate_for(self.seconds_per_byte, 0, 1, smallest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_spreads_the_queue_over_the_workers() {
        let spb = 1e-6;
        // 4 MB ahead over 2 workers, then 1 MB: 3 s.
        assert_eq!(
            estimate_for(spb, 4_000_000, 2, 1_000_000),
            Duration::from_secs(3)
        );
        // No worker known counts as one.
        assert_eq!(
            estimate_for(spb, 4_000_000, 0, 1_000_000),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn an_estimate_stays_between_a_second_and_a_day() {
        assert_eq!(estimate_for(1e-6, 0, 1, 0), Duration::from_secs(1));
        assert_eq!(
            estimate_for(1.0, 0, 1, 10_000_000),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn the_speed_moves_toward_each_measurement() {
        let after = speed_average(1e-6, 1_000_000, Duration::from_secs(3));
        // 0.3 × 3e-6 + 0.7 × 1e-6
        assert!((after - 1.6e-6).abs() < 1e-12, "{after}");
    }

    #[test]
    fn a_job_without_bytes_leaves_the_speed_alone() {
        assert_eq!(speed_average(2e-6, 0, Duration::from_secs(9)), 2e-6);
    }
}
