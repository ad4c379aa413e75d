//! What readers see: every member transition is logged and broadcast, and
//! the view is republished when something a reader would notice changed,
//! or at least every [`VIEW_REFRESH`] for round-trip times alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::MembershipState;
use crate::detector::Change;
use crate::view::{Member, MemberEvent};

/// The longest a published view's `rtt` and `last_seen` may lag.
pub(super) const VIEW_REFRESH: Duration = Duration::from_secs(5);

impl MembershipState {
    /// Logs, broadcasts and publishes what a table update changed.
    pub(super) fn apply(&mut self, change: Change) {
        let publish = publishes_at_once(&change);
        for event in change.events {
            self.log(&event);
            // No receiver is not an error: nobody is listening yet.
            let _ = self.events.send(event);
        }
        if publish {
            self.publish();
        } else {
            self.stale = true;
        }
    }

    /// Publishes the view if only round-trip times changed since the last
    /// one and that was [`VIEW_REFRESH`] ago.
    pub(super) fn refresh(&mut self, now: Instant) {
        if refresh_due(self.stale, now.saturating_duration_since(self.published_at)) {
            self.publish();
        }
    }

    fn log(&self, event: &MemberEvent) {
        let member = self.table.get(event.node());
        let incarnation = member.map_or(0, |m| m.incarnation);
        let address = member.map_or("", |m| m.address.as_str());
        match event {
            MemberEvent::Up(node) => {
                info!(node = %node, incarnation, address, "cluster member up")
            }
            MemberEvent::Restarted(node) => {
                info!(node = %node, incarnation, address, "cluster member restarted")
            }
            MemberEvent::Suspect(node) => {
                warn!(node = %node, silent_ms = silence_ms(member), "cluster member suspect")
            }
            MemberEvent::Down(node) => {
                warn!(node = %node, silent_ms = silence_ms(member), "cluster member down")
            }
            MemberEvent::Stalled(node) => {
                warn!(node = %node, "this node stalled: the others may have found it down")
            }
        }
    }

    fn publish(&mut self) {
        self.view.send_replace(Arc::new(self.table.view()));
        self.published_at = Instant::now();
        self.stale = false;
    }
}

/// Returns how long `member` has been silent, in ms (0 when unknown).
fn silence_ms(member: Option<&Member>) -> u64 {
    member
        .and_then(|m| m.last_seen)
        .map_or(0, |seen| seen.elapsed().as_millis() as u64)
}

/// Returns whether `change` is published at once: a transition, or a
/// change a reader would notice. `rtt` and `last_seen` alone wait for the
/// next refresh, so that every ack does not wake every reader.
fn publishes_at_once(change: &Change) -> bool {
    change.visible || !change.events.is_empty()
}

/// Returns whether a view holding unpublished round-trip times (`stale`)
/// and published `since` ago is due again.
fn refresh_due(stale: bool, since: Duration) -> bool {
    stale && since >= VIEW_REFRESH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_and_visible_changes_publish_at_once_round_trips_wait() {
        let node = "b".parse().unwrap();
        let transition = Change {
            events: vec![MemberEvent::Down(node)],
            visible: false,
        };
        assert!(publishes_at_once(&transition));
        let load = Change {
            events: Vec::new(),
            visible: true,
        };
        assert!(publishes_at_once(&load));
        // An ack or a heartbeat that only moved `rtt`/`last_seen`.
        assert!(!publishes_at_once(&Change::default()));
    }

    #[test]
    fn round_trips_are_republished_after_the_refresh_period_only() {
        assert!(!refresh_due(true, VIEW_REFRESH - Duration::from_millis(1)));
        assert!(refresh_due(true, VIEW_REFRESH));
        // Nothing unpublished: no new view, however long ago the last.
        assert!(!refresh_due(false, VIEW_REFRESH * 10));
    }
}
