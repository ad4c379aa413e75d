//! The `NodeServer`'s session events: keeping the session table and the
//! [`NodeDirectory`](crate::sessions::NodeDirectory) current, telling the
//! dials what became of them, sorting out why a session closed, and
//! reporting the peers refused (`refusals` judges them).

use std::time::Instant;

use tracing::{debug, info, warn};

use super::refusals::{Refusal, Verdict};
use super::MembershipState;
use crate::node_name::NodeName;
use crate::protocol::{PeerName, SessionEvent, SessionInfo};

/// Why a session closed, as far as this node can tell.
#[derive(Debug, PartialEq, Eq)]
enum Closed {
    /// An authenticated session whose node another session still reaches:
    /// ractor_cluster keeps one session per pair of nodes and stops the
    /// others, even authenticated ones.
    Duplicate,
    /// An authenticated session, the last to its node.
    Ended,
    /// This node stopped it before it authenticated (handshake timeout,
    /// member down): no news.
    Stopped,
    /// The peer named itself as this node: a seed that is this node under
    /// another spelling.
    ToSelf,
    /// It ended after the names were exchanged and before authentication:
    /// perhaps a refused cookie, perhaps a lost race; judged later.
    FailedHandshake,
    /// No name was exchanged, so no cookie was checked.
    BeforeNames,
}

/// Sorts out why a session closed, from what was known of it: whether it
/// had `authenticated`, whether this node `stopped` it, the `peer` it
/// claimed, this node's own name `me`, and whether another session still
/// `reaches` a node.
fn closed_as(
    authenticated: bool,
    stopped: bool,
    peer: Option<&PeerName>,
    me: &NodeName,
    reaches: impl Fn(&NodeName) -> bool,
) -> Closed {
    let claimed = peer.and_then(|p| p.node.as_ref());
    if authenticated {
        if claimed.is_some_and(reaches) {
            Closed::Duplicate
        } else {
            Closed::Ended
        }
    } else if stopped {
        Closed::Stopped
    } else if peer.is_none() {
        Closed::BeforeNames
    } else if claimed == Some(me) {
        Closed::ToSelf
    } else {
        Closed::FailedHandshake
    }
}

impl MembershipState {
    /// Applies a change to one of the `NodeServer`'s sessions.
    pub(super) fn on_session(&mut self, event: SessionEvent) {
        let now = Instant::now();
        match event {
            SessionEvent::Opened(info) => {
                debug!(peer = %info.peer_addr, incoming = info.is_server, node_id = info.node_id, "cluster session opened");
                self.sessions.opened(info);
                self.targets.claim(&mut self.sessions);
            }
            SessionEvent::Authenticated(info) => self.on_authenticated(info, now),
            SessionEvent::Closed(info) => self.on_closed(info, now),
        }
    }

    fn on_authenticated(&mut self, info: SessionInfo, now: Instant) {
        let node_id = info.node_id;
        let session = self.sessions.authenticated(info, now);
        let peer_addr = session.peer_addr.clone();
        let dialed = session.dialed.clone();
        let address = session.peer.as_ref().map(|p| p.address.clone());
        let Some(node) = session.node().cloned() else {
            warn!(
                peer = %peer_addr,
                name = ?session.peer.as_ref().map(|p| &p.full),
                "cluster peer authenticated under a name that is not a vidpress node name"
            );
            return;
        };
        info!(node = %node, peer = %peer_addr, address = ?address, "cluster session up");
        self.directory.set(node_id, Some(node.clone()));
        self.targets
            .reached(dialed.as_deref(), address.as_deref(), &node);
    }

    fn on_closed(&mut self, info: SessionInfo, now: Instant) {
        let node_id = info.node_id;
        self.directory.set(node_id, None);
        let Some(session) = self.sessions.closed(info) else {
            return;
        };
        if let (Some(dialed), false) = (&session.dialed, session.authenticated()) {
            if let Some(delay) = self.targets.handshake_failed(dialed, node_id, now) {
                debug!(target = %dialed, retry_in_ms = delay.as_millis() as u64, "cluster dial ended before authentication");
            }
        }

        let sessions = &self.sessions;
        let closed = closed_as(
            session.authenticated(),
            session.stopped_by_us,
            session.peer.as_ref(),
            &self.me,
            |n| sessions.reaches(n),
        );
        let peer_addr = session.peer_addr;
        match closed {
            Closed::Duplicate => debug!(peer = %peer_addr, "duplicate cluster session closed"),
            Closed::Ended => info!(
                node = ?session.peer.as_ref().and_then(|p| p.node.as_ref()).map(|n| n.as_str()),
                peer = %peer_addr,
                "cluster session closed"
            ),
            Closed::Stopped => {
                debug!(peer = %peer_addr, "cluster session stopped before authentication")
            }
            Closed::ToSelf => {
                debug!(peer = %peer_addr, "cluster session to self closed");
                if let Some(dialed) = &session.dialed {
                    info!(seed = %dialed, "seed is this node itself; not dialing it again");
                    self.targets.mark_self(dialed);
                }
            }
            Closed::FailedHandshake => {
                // The names were exchanged, so the cookie challenge may be
                // what failed; or this was the loser of two simultaneous
                // connections, or a duplicate refused while a stale session
                // lingered. Only the first leaves no session behind: judge
                // once the others have had time to settle.
                if let Some(peer) = session.peer {
                    self.refusals.push(Refusal {
                        peer_addr,
                        peer,
                        incoming: session.is_server,
                        at: now,
                    });
                }
            }
            Closed::BeforeNames => {
                // No name was exchanged, so no cookie was checked: the peer
                // went away (a dial we gave up on, still in a frozen node's
                // backlog) or refused a duplicate before its challenge.
                debug!(peer = %peer_addr, "cluster connection closed before the handshake")
            }
        }
    }

    /// Warns of the peers that failed the handshake and, a grace period
    /// later, still have no session: a wrong cookie, most likely.
    pub(super) fn report_refusals(&mut self, now: Instant) {
        let sessions = &self.sessions;
        for (refusal, verdict) in self.refusals.judge(now, |n| sessions.reaches(n)) {
            let Refusal {
                peer_addr,
                peer,
                incoming,
                ..
            } = refusal;
            match verdict {
                Verdict::Duplicate => {
                    debug!(peer = %peer_addr, claimed_name = %peer.full, "duplicate cluster session closed")
                }
                Verdict::Repeated => {
                    debug!(peer = %peer_addr, claimed_name = %peer.full, incoming, "cluster peer refused again")
                }
                Verdict::Refused => warn!(
                    peer = %peer_addr,
                    claimed_name = %peer.full,
                    incoming,
                    "cluster peer refused: authentication failed (wrong cookie?)"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn peer(full: &str) -> PeerName {
        PeerName::new(full.into(), "127.0.0.1:7001".into())
    }

    #[test]
    fn an_authenticated_session_is_a_duplicate_while_its_node_is_still_reached() {
        let b = peer("b@127.0.0.1");
        let me = name("a");
        assert_eq!(
            closed_as(true, false, Some(&b), &me, |n| *n == name("b")),
            Closed::Duplicate
        );
        assert_eq!(
            closed_as(true, false, Some(&b), &me, |_| false),
            Closed::Ended
        );
        // Another node being reached says nothing about this one.
        assert_eq!(
            closed_as(true, false, Some(&b), &me, |n| *n == name("c")),
            Closed::Ended
        );
    }

    #[test]
    fn a_session_this_node_stopped_is_no_refusal() {
        let b = peer("b@127.0.0.1");
        assert_eq!(
            closed_as(false, true, Some(&b), &name("a"), |_| false),
            Closed::Stopped
        );
        assert_eq!(
            closed_as(false, true, None, &name("a"), |_| false),
            Closed::Stopped
        );
    }

    #[test]
    fn a_handshake_that_ends_is_sorted_by_the_name_exchanged() {
        let me = name("a");
        assert_eq!(
            closed_as(false, false, Some(&peer("a@localhost")), &me, |_| false),
            Closed::ToSelf
        );
        assert_eq!(
            closed_as(false, false, Some(&peer("b@127.0.0.1")), &me, |_| false),
            Closed::FailedHandshake
        );
        // A name that is no vidpress node name may still be a wrong cookie.
        assert_eq!(
            closed_as(false, false, Some(&peer("not a name@x")), &me, |_| false),
            Closed::FailedHandshake
        );
        assert_eq!(
            closed_as(false, false, None, &me, |_| false),
            Closed::BeforeNames
        );
    }
}
