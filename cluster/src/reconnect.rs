//! Reconnection, which ractor_cluster does not do: the addresses this node
//! should hold a session with (its seeds and every known member), and for
//! each the state of its dial and an exponential backoff.
//!
//! A dial is one spawned task (resolve, TCP connect, hand the stream to the
//! `NodeServer`) that reports back by message; the session it opens is then
//! claimed by matching the peer's socket address, so that a handshake that
//! never finishes (a frozen peer accepts TCP in its kernel and never
//! answers) is stopped after [`HANDSHAKE_TIMEOUT`] and counted as a failure.
//! At most one dial per address is in flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::node_name::NodeName;
use crate::sessions::Sessions;

/// The first retry delay after a failure.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest retry delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a dial may take from TCP connect to an authenticated session.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The delays between dials of one address: 500 ms, doubling, capped at
/// 5 s, never giving up, without jitter.
const DELAYS: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(BACKOFF_MIN)
    .with_factor(2.0)
    .with_max_delay(BACKOFF_MAX)
    .without_max_times();

/// Exponential backoff for one address: 500 ms, 1 s, 2 s, 4 s, then 5 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    failures: u32,
    delays: ExponentialBackoff,
    next_attempt: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            failures: 0,
            delays: DELAYS.build(),
            next_attempt: None,
        }
    }
}

impl Backoff {
    /// Returns whether a dial may start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.next_attempt.is_none_or(|at| now >= at)
    }

    /// Records a failure; returns the delay before the next attempt.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // `DELAYS` has no limit on attempts, so the iterator never ends.
        let delay = self.delays.next().unwrap_or(BACKOFF_MAX);
        self.next_attempt = Some(now + delay);
        delay
    }

    /// Records a success: the next failure starts over at the minimum.
    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Where the dial of one address stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dial {
    /// No dial in flight.
    Idle,
    /// The task resolves and connects.
    Connecting { since: Instant },
    /// Connected to `socket`; the `NodeServer` has yet to report the session.
    AwaitingSession { socket: String, since: Instant },
    /// The session `node_id` is in its handshake.
    Handshake { node_id: u64, since: Instant },
}

/// An address this node should hold a session with.
#[derive(Debug)]
pub(crate) struct Target {
    pub address: String,
    /// The node last reached at this address.
    pub peer: Option<NodeName>,
    pub backoff: Backoff,
    pub dial: Dial,
    /// A seed that turned out to be this node under another spelling.
    pub is_self: bool,
    /// A configured seed (logged louder when unreachable).
    pub seed: bool,
}

/// Every address to keep a session with.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    by_address: BTreeMap<String, Target>,
}

impl Targets {
    /// Adds `address` if new; names the node expected there when known.
    pub fn ensure(&mut self, address: &str, peer: Option<&NodeName>, seed: bool) {
        let target = self
            .by_address
            .entry(address.to_owned())
            .or_insert_with(|| Target {
                address: address.to_owned(),
                peer: None,
                backoff: Backoff::default(),
                dial: Dial::Idle,
                is_self: false,
                seed,
            });
        if let Some(peer) = peer {
            if target.peer.as_ref() != Some(peer) {
                target.peer = Some(peer.clone());
            }
        }
    }

    #[cfg(test)]
    pub fn get(&self, address: &str) -> Option<&Target> {
        self.by_address.get(address)
    }

    /// Returns the addresses to dial now: idle, ready by backoff, not this
    /// node, and with no live session (`connected`).
    pub fn due(&self, now: Instant, connected: impl Fn(&Target) -> bool) -> Vec<String> {
        self.by_address
            .values()
            .filter(|t| t.dial == Dial::Idle && !t.is_self && t.backoff.ready(now) && !connected(t))
            .map(|t| t.address.clone())
            .collect()
    }

    /// Records that the dial of `address` started.
    pub fn start(&mut self, address: &str, now: Instant) {
        if let Some(t) = self.by_address.get_mut(address) {
            t.dial = Dial::Connecting { since: now };
        }
    }

    /// Records that the dial of `address` connected TCP to `socket`.
    pub fn connected(&mut self, address: &str, socket: String, now: Instant) {
        if let Some(t) = self.by_address.get_mut(address) {
            if matches!(t.dial, Dial::Connecting { .. }) {
                t.dial = Dial::AwaitingSession { socket, since: now };
            }
        }
    }

    /// Records a failed dial of `address`; returns the target and its retry
    /// delay. A failure reported after the address was reached another way
    /// is no failure.
    pub fn failed(&mut self, address: &str, now: Instant) -> Option<(&Target, Duration)> {
        let t = self.by_address.get_mut(address)?;
        if !matches!(t.dial, Dial::Connecting { .. }) {
            return None;
        }
        t.dial = Dial::Idle;
        let delay = t.backoff.failed(now);
        Some((t, delay))
    }

    /// Claims, for each dial waiting for its session, the outgoing session
    /// the `NodeServer` opened to the same socket.
    pub fn claim(&mut self, sessions: &mut Sessions) {
        for t in self.by_address.values_mut() {
            let Dial::AwaitingSession { socket, since } = &t.dial else {
                continue;
            };
            if let Some((node_id, session)) = sessions.unclaimed_outgoing(socket) {
                session.dialed = Some(t.address.clone());
                t.dial = Dial::Handshake {
                    node_id,
                    since: *since,
                };
            }
        }
    }

    /// Records that `node` is reached, by the dial of `dialed` or by any
    /// session from or to its advertise `address`: the dials of every
    /// address of that node are done, whatever they were waiting for.
    pub fn reached(&mut self, dialed: Option<&str>, address: Option<&str>, node: &NodeName) {
        for t in self.by_address.values_mut() {
            let here = dialed == Some(t.address.as_str()) || address == Some(t.address.as_str());
            if here || t.peer.as_ref() == Some(node) {
                if here {
                    t.peer = Some(node.clone());
                }
                t.backoff.succeeded();
                t.dial = Dial::Idle;
            }
        }
    }

    /// Records that the session a dial of `address` opened ended before it
    /// authenticated; returns the retry delay.
    pub fn handshake_failed(
        &mut self,
        address: &str,
        node_id: u64,
        now: Instant,
    ) -> Option<Duration> {
        let t = self.by_address.get_mut(address)?;
        match t.dial {
            Dial::Handshake { node_id: id, .. } if id == node_id => {}
            _ => return None,
        }
        t.dial = Dial::Idle;
        Some(t.backoff.failed(now))
    }

    /// Marks `address` as this node itself: never dialed again.
    pub fn mark_self(&mut self, address: &str) {
        if let Some(t) = self.by_address.get_mut(address) {
            t.is_self = true;
            t.dial = Dial::Idle;
        }
    }

    /// Ends the dials in flight for longer than `timeout` as failures;
    /// returns their addresses and the sessions to stop.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<(String, Option<u64>)> {
        let mut expired = Vec::new();
        for t in self.by_address.values_mut() {
            let Some(since) = dial_since(&t.dial) else {
                continue;
            };
            if now.saturating_duration_since(since) < timeout {
                continue;
            }
            let node_id = match t.dial {
                Dial::Handshake { node_id, .. } => Some(node_id),
                _ => None,
            };
            t.dial = Dial::Idle;
            t.backoff.failed(now);
            expired.push((t.address.clone(), node_id));
        }
        expired
    }
}

fn dial_since(dial: &Dial) -> Option<Instant> {
    match dial {
        Dial::Idle => None,
        Dial::Connecting { since }
        | Dial::AwaitingSession { since, .. }
        | Dial::Handshake { since, .. } => Some(*since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_from_500ms_to_a_5s_cap_and_resets() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert!(b.ready(now));
        let delays: Vec<_> = (0..7).map(|_| b.failed(now)).collect();
        assert_eq!(
            delays,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(5000),
                ms(5000),
                ms(5000)
            ]
        );
        assert!(!b.ready(now + ms(4999)));
        assert!(b.ready(now + ms(5000)));
        for _ in 0..100 {
            b.failed(now);
        }
        b.succeeded();
        assert!(b.ready(now));
        assert_eq!(b.failed(now), ms(500));
    }

    #[test]
    fn one_dial_at_a_time_and_only_when_unconnected() {
        let now = Instant::now();
        let mut t = Targets::default();
        t.ensure("b:7000", None, true);
        t.ensure("c:7000", None, false);
        assert_eq!(t.due(now, |_| false), vec!["b:7000", "c:7000"]);
        assert_eq!(t.due(now, |t| t.address == "c:7000"), vec!["b:7000"]);

        t.start("b:7000", now);
        assert_eq!(t.due(now, |_| false), vec!["c:7000"]);

        // A refused connection backs off.
        let (_, delay) = t.failed("b:7000", now).unwrap();
        assert_eq!(delay, ms(500));
        assert_eq!(t.due(now + ms(499), |_| false), vec!["c:7000"]);
        assert_eq!(t.due(now + ms(500), |_| false), vec!["b:7000", "c:7000"]);
    }

    #[test]
    fn a_stuck_handshake_expires_and_names_its_session() {
        let now = Instant::now();
        let mut t = Targets::default();
        t.ensure("b:7000", None, true);
        t.start("b:7000", now);
        t.connected("b:7000", "10.0.0.2:7000".into(), now);
        let mut sessions = Sessions::default();
        t.claim(&mut sessions);
        assert!(matches!(
            t.get("b:7000").unwrap().dial,
            Dial::AwaitingSession { .. }
        ));

        assert!(t.expire(now + ms(4999), HANDSHAKE_TIMEOUT).is_empty());
        assert_eq!(
            t.expire(now + HANDSHAKE_TIMEOUT, HANDSHAKE_TIMEOUT),
            vec![("b:7000".to_owned(), None)]
        );
        assert_eq!(t.get("b:7000").unwrap().dial, Dial::Idle);
        assert_eq!(t.get("b:7000").unwrap().backoff.failures(), 1);
    }

    #[test]
    fn reaching_the_node_resets_the_backoff() {
        let now = Instant::now();
        let b: NodeName = "b".parse().unwrap();
        let mut t = Targets::default();
        t.ensure("localhost:7000", None, true);
        t.start("localhost:7000", now);
        t.failed("localhost:7000", now);
        t.start("localhost:7000", now + ms(600));
        t.reached(Some("localhost:7000"), Some("127.0.0.1:7000"), &b);
        let target = t.get("localhost:7000").unwrap();
        assert_eq!(target.peer.as_ref(), Some(&b));
        assert_eq!(target.dial, Dial::Idle);
        assert_eq!(target.backoff.failures(), 0);
    }

    #[test]
    fn a_session_that_authenticated_before_its_dial_reported_is_not_claimed() {
        let now = Instant::now();
        let a: NodeName = "a".parse().unwrap();
        let mut t = Targets::default();
        t.ensure("127.0.0.1:7000", None, true);
        t.start("127.0.0.1:7000", now);
        // The session opened and authenticated before the dial task's report.
        t.reached(None, Some("127.0.0.1:7000"), &a);
        t.connected("127.0.0.1:7000", "127.0.0.1:7000".into(), now);
        assert_eq!(t.get("127.0.0.1:7000").unwrap().dial, Dial::Idle);
        assert!(t
            .expire(now + HANDSHAKE_TIMEOUT, HANDSHAKE_TIMEOUT)
            .is_empty());
        // Nor is a late failure report of that dial a failure.
        assert!(t.failed("127.0.0.1:7000", now).is_none());
        assert_eq!(t.get("127.0.0.1:7000").unwrap().backoff.failures(), 0);
    }

    #[test]
    fn self_is_never_dialed() {
        let now = Instant::now();
        let mut t = Targets::default();
        t.ensure("localhost:7000", None, true);
        t.mark_self("localhost:7000");
        assert!(t.due(now, |_| false).is_empty());
    }
}
