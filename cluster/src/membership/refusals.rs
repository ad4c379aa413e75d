//! Failed handshakes: a peer that exchanged names and then lost its session
//! before authenticating most likely has the wrong cookie, but the loser of
//! two simultaneous connections and a refused duplicate look the same at
//! first. [`Refusals`] waits [`REFUSAL_GRACE`] for the others to settle,
//! then judges; a refusal is warned about at most every [`REFUSAL_REPEAT`]
//! per peer. Pure data: the `session_events` module feeds it and logs its
//! verdicts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::node_name::NodeName;
use crate::protocol::PeerName;

/// How long after a failed handshake a session to the peer must still be
/// missing for the failure to be reported as a refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// How often the same refused peer is warned about.
const REFUSAL_REPEAT: Duration = Duration::from_secs(60);

/// A handshake that failed after the peers exchanged names.
#[derive(Debug)]
pub(super) struct Refusal {
    pub peer_addr: String,
    pub peer: PeerName,
    /// `true` when the peer dialed us.
    pub incoming: bool,
    pub at: Instant,
}

/// What a failed handshake turned out to be, once judged.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The peer is reached by another session: this one was a duplicate.
    Duplicate,
    /// A refusal of a peer already warned about within [`REFUSAL_REPEAT`].
    Repeated,
    /// A refusal to warn about.
    Refused,
}

/// Failed handshakes waiting to be judged, and when each refused peer (by
/// claimed name) was last warned about.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    waiting: Vec<Refusal>,
    warned: HashMap<String, Instant>,
}

impl Refusals {
    /// Records a failed handshake, to be judged after [`REFUSAL_GRACE`].
    pub fn push(&mut self, refusal: Refusal) {
        self.waiting.push(refusal);
    }

    /// Judges the failed handshakes older than [`REFUSAL_GRACE`] at `now`,
    /// in the order they failed; `reached` tells whether a session now
    /// reaches a node. A `Refused` verdict counts as warned.
    pub fn judge(
        &mut self,
        now: Instant,
        reached: impl Fn(&NodeName) -> bool,
    ) -> Vec<(Refusal, Verdict)> {
        let (due, waiting): (Vec<Refusal>, _) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|r| now.saturating_duration_since(r.at) >= REFUSAL_GRACE);
        self.waiting = waiting;
        due.into_iter()
            .map(|refusal| {
                let verdict = self.verdict(&refusal.peer, now, &reached);
                (refusal, verdict)
            })
            .collect()
    }

    fn verdict(
        &mut self,
        peer: &PeerName,
        now: Instant,
        reached: impl Fn(&NodeName) -> bool,
    ) -> Verdict {
        if peer.node.as_ref().is_some_and(reached) {
            return Verdict::Duplicate;
        }
        let recently = self
            .warned
            .get(&peer.full)
            .is_some_and(|at| now.saturating_duration_since(*at) < REFUSAL_REPEAT);
        if recently {
            Verdict::Repeated
        } else {
            self.warned.insert(peer.full.clone(), now);
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn refusal(full: &str, at: Instant) -> Refusal {
        Refusal {
            peer_addr: "127.0.0.1:40000".into(),
            peer: PeerName::new(full.into(), "127.0.0.1:7001".into()),
            incoming: true,
            at,
        }
    }

    fn verdicts(judged: Vec<(Refusal, Verdict)>) -> Vec<Verdict> {
        judged.into_iter().map(|(_, v)| v).collect()
    }

    #[test]
    fn a_failed_handshake_waits_for_the_grace_period() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        r.push(refusal("b@127.0.0.1", t0));
        assert!(r.judge(t0 + REFUSAL_GRACE - ms(1), |_| false).is_empty());
        assert_eq!(
            verdicts(r.judge(t0 + REFUSAL_GRACE, |_| false)),
            [Verdict::Refused]
        );
        // Judged once only.
        assert!(r.judge(t0 + ms(60_000), |_| false).is_empty());
    }

    #[test]
    fn a_peer_reached_since_was_a_duplicate_not_a_refusal() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        r.push(refusal("b@127.0.0.1", t0));
        let b: NodeName = "b".parse().unwrap();
        assert_eq!(
            verdicts(r.judge(t0 + REFUSAL_GRACE, |n| *n == b)),
            [Verdict::Duplicate]
        );
        // A duplicate is no warning: the next refusal of b is warned about.
        r.push(refusal("b@127.0.0.1", t0 + ms(2000)));
        assert_eq!(
            verdicts(r.judge(t0 + ms(3000), |_| false)),
            [Verdict::Refused]
        );
    }

    #[test]
    fn a_refused_peer_is_warned_about_once_a_minute() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        // Two refusals of the same peer judged together: one warning.
        r.push(refusal("b@127.0.0.1", t0));
        r.push(refusal("b@127.0.0.1", t0));
        r.push(refusal("c@127.0.0.1", t0));
        let at = t0 + REFUSAL_GRACE;
        assert_eq!(
            verdicts(r.judge(at, |_| false)),
            [Verdict::Refused, Verdict::Repeated, Verdict::Refused]
        );

        r.push(refusal("b@127.0.0.1", at));
        assert_eq!(
            verdicts(r.judge(at + REFUSAL_REPEAT - ms(1), |_| false)),
            [Verdict::Repeated]
        );
        r.push(refusal("b@127.0.0.1", at));
        assert_eq!(
            verdicts(r.judge(at + REFUSAL_REPEAT, |_| false)),
            [Verdict::Refused]
        );
    }
}
