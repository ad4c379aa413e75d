//! The periodic tick: forgive silences this node caused by not running,
//! run the failure detector, then heartbeat, tell peers who is up, redial
//! and judge refusals.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use tracing::debug;

use super::MembershipState;
use crate::detector::Change;
use crate::protocol::MembershipMsg;
use crate::view::MemberEvent;

impl MembershipState {
    /// Runs one round of detection, heartbeats, discovery and redials, and schedules
    /// the next.
    pub(super) fn on_tick(&mut self, myself: &ActorRef<MembershipMsg>) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        let paused = paused(gap, self.interval);
        if let Some(paused) = paused {
            debug!(node = %self.me, paused_ms = paused.as_millis() as u64, "membership tick late; forgiving silences");
            self.table.forgive(paused, now);
        }
        let stalled = self.lapses.ticked(now, paused);

        let mut change = Change::default();
        if self.load.has_changed().unwrap_or(false) {
            let load = *self.load.borrow_and_update();
            change.visible |= self.table.set_own_load(load);
        }
        change.events = self.table.check(now);
        if stalled {
            change.events.push(MemberEvent::Stalled(self.me.clone()));
        }
        self.apply(change);

        self.drop_sessions_to_down_members(now);
        self.send_heartbeats();
        self.send_peers();
        self.redial(myself, now);
        self.report_refusals(now);
        self.refresh(now);

        myself.send_after(self.interval, || MembershipMsg::Tick);
    }
}

/// Returns how long this node did not run, given the `gap` since the last
/// tick, or `None` when the tick came about on time.
///
/// A gap over two intervals means this node itself stalled (SIGSTOP, a
/// starved runtime): it heard nothing, which says nothing about the
/// others, so all but one interval of the gap is forgiven.
fn paused(gap: Duration, interval: Duration) -> Option<Duration> {
    (gap > interval.saturating_mul(2)).then(|| gap - interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_tick_up_to_two_intervals_late_forgives_nothing() {
        assert_eq!(paused(ms(500), ms(500)), None);
        assert_eq!(paused(ms(1000), ms(500)), None);
    }

    #[test]
    fn a_stalled_node_forgives_all_but_one_interval_of_the_gap() {
        assert_eq!(paused(ms(1001), ms(500)), Some(ms(501)));
        assert_eq!(paused(ms(10_500), ms(500)), Some(ms(10_000)));
    }
}
