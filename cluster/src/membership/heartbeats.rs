//! Heartbeats: recording another node's [`Heartbeat`] and answering it,
//! measuring the round trip from a [`HeartbeatAck`], and sending this
//! node's own heartbeat to every other node's membership actor.

use std::time::{Duration, Instant};

use ractor::ActorRef;

use super::MembershipState;
use crate::detector::Heard;
use crate::node_name::NodeName;
use crate::protocol::{Heartbeat, HeartbeatAck, MembershipMsg, GROUP};

impl MembershipState {
    /// Records another node's heartbeat and answers it with an ack.
    pub(super) fn on_heartbeat(&mut self, hb: Heartbeat) {
        let now = Instant::now();
        let from = hb.from.clone();
        let change = self.table.heard(
            Heard {
                name: hb.from,
                address: hb.address,
                http: hb.http,
                incarnation: hb.incarnation,
                load: hb.load,
            },
            now,
        );
        self.apply(change);

        let ack = HeartbeatAck {
            from: self.me.clone(),
            incarnation: self.incarnation,
            sent_at_ms: hb.sent_at_ms,
        };
        if let Some(peer) = self.remote_membership(&from) {
            // A failed cast means the session just dropped: nothing to answer.
            let _ = peer.cast(MembershipMsg::HeartbeatAck(ack));
        }
    }

    /// Records the answer to one of this node's heartbeats.
    pub(super) fn on_ack(&mut self, ack: HeartbeatAck) {
        let rtt = round_trip(self.clock_ms(), ack.sent_at_ms);
        let change = self
            .table
            .acked(&ack.from, ack.incarnation, rtt, Instant::now());
        self.apply(change);
    }

    /// Casts this node's heartbeat to every other node's membership actor.
    pub(super) fn send_heartbeats(&self) {
        let heartbeat = Heartbeat {
            from: self.me.clone(),
            address: self.address.clone(),
            http: self.http.clone(),
            incarnation: self.incarnation,
            load: self.table.me().load,
            sent_at_ms: self.clock_ms(),
        };
        for peer in remote_memberships() {
            // A failed cast means that session just dropped; the failure
            // detector, not this send, decides what that means.
            let _ = peer.cast(MembershipMsg::Heartbeat(heartbeat.clone()));
        }
    }

    /// Returns the membership actor of `node`, through the process group.
    fn remote_membership(&self, node: &NodeName) -> Option<ActorRef<MembershipMsg>> {
        ractor::pg::get_members(&GROUP.to_owned())
            .into_iter()
            .find(|cell| {
                let id = cell.get_id();
                !id.is_local() && self.sessions.node_of(id.node()) == Some(node)
            })
            .map(ActorRef::from)
    }

    /// Returns ms on the monotonic clock heartbeats carry.
    fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Returns the membership actors of the other nodes this node has a
/// session with, through the process group.
pub(super) fn remote_memberships() -> impl Iterator<Item = ActorRef<MembershipMsg>> {
    ractor::pg::get_members(&GROUP.to_owned())
        .into_iter()
        .filter(|cell| !cell.get_id().is_local())
        .map(ActorRef::from)
}

/// Returns the round trip of a heartbeat sent at `sent_at_ms` and answered
/// at `now_ms`, both on this node's heartbeat clock. The echoed time comes
/// from the network: one from the future counts as no time, not a panic.
fn round_trip(now_ms: u64, sent_at_ms: u64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(sent_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_trip_is_the_time_since_the_echoed_send() {
        assert_eq!(round_trip(1_250, 1_000), Duration::from_millis(250));
        assert_eq!(round_trip(1_000, 1_000), Duration::ZERO);
    }

    #[test]
    fn an_echo_from_the_future_is_no_time_not_a_panic() {
        // A peer echoing garbage, or an ack meant for an earlier run of
        // this node, whose clock had gone further.
        assert_eq!(round_trip(10, u64::MAX), Duration::ZERO);
    }
}
