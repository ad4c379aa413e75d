//! [`Lapses`]: whether this node may have been found down by the others
//! because it did not run (SIGSTOP, a frozen VM, a starved runtime). While
//! it did not, the others may have taken over what it owns; back, it still
//! holds its own copies, stale, until they give the jobs back or tell it
//! they keep them. Until then its answers about what it owns are in doubt.
//!
//! The membership's tick marks each run. A node is in doubt while its tick
//! is overdue (it was frozen and has not run its tick since: the first
//! request after a thaw can come before it), and for a while after a tick
//! found that it had not run for half a failure timeout or more: the time a
//! peer takes to hear it again (redialing it, at worst) and hand back or
//! keep what it took over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This node's lapses, shared by the membership (which marks its ticks) and
/// whoever answers for the node's jobs; clones share them.
#[derive(Clone, Debug)]
pub struct Lapses {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The zero of the two clocks below.
    origin: Instant,
    /// A tick later than this after the one before means the node stalled.
    overdue_after: Duration,
    /// A stall this long may have been taken for the node's death.
    suspicious: Duration,
    /// How long the doubt lasts after such a stall.
    doubt: Duration,
    /// When the last tick ran, in ms from `origin`.
    last_tick_ms: AtomicU64,
    /// Until when (ms from `origin`) the node is in doubt after a stall.
    doubt_until_ms: AtomicU64,
}

impl Lapses {
    /// Returns the lapses of a node that ticks every `interval` and whose
    /// peers find it down after `failure_timeout` of silence; a peer redials
    /// it within `redial_max`.
    pub(crate) fn new(interval: Duration, failure_timeout: Duration, redial_max: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                overdue_after: interval.saturating_mul(2),
                suspicious: failure_timeout / 2,
                doubt: failure_timeout + redial_max,
                last_tick_ms: AtomicU64::new(0),
                doubt_until_ms: AtomicU64::new(0),
            }),
        }
    }

    /// Marks a tick at `now`, which found that the node had not run for
    /// `paused` (if it had not); returns whether that stall was long enough
    /// to put the node in doubt.
    pub(crate) fn ticked(&self, now: Instant, paused: Option<Duration>) -> bool {
        let inner = &self.inner;
        let at = inner.ms(now);
        let stalled = paused.is_some_and(|p| p >= inner.suspicious);
        if stalled {
            let until = at.saturating_add(inner.doubt.as_millis() as u64);
            inner.doubt_until_ms.fetch_max(until, Ordering::Relaxed);
        }
        inner.last_tick_ms.store(at, Ordering::Relaxed);
        stalled
    }

    /// Returns whether the node's answers about what it owns are in doubt
    /// at `now`: its tick is overdue, or a stall that may have been taken
    /// for its death is recent.
    pub fn in_doubt_at(&self, now: Instant) -> bool {
        let inner = &self.inner;
        let at = inner.ms(now);
        let last = inner.last_tick_ms.load(Ordering::Relaxed);
        at.saturating_sub(last) > inner.overdue_after.as_millis() as u64
            || at < inner.doubt_until_ms.load(Ordering::Relaxed)
    }

    /// [`Self::in_doubt_at`] now.
    pub fn in_doubt(&self) -> bool {
        self.in_doubt_at(Instant::now())
    }
}

impl Inner {
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn lapses() -> (Lapses, Instant) {
        let lapses = Lapses::new(ms(200), ms(1500), ms(5000));
        let start = lapses.inner.origin;
        lapses.ticked(start, None);
        (lapses, start)
    }

    #[test]
    fn a_node_ticking_on_time_is_not_in_doubt() {
        let (lapses, start) = lapses();
        for n in 1..20 {
            let now = start + ms(200 * n);
            assert!(!lapses.in_doubt_at(now));
            lapses.ticked(now, None);
        }
    }

    #[test]
    fn an_overdue_tick_puts_the_node_in_doubt_before_it_runs() {
        let (lapses, start) = lapses();
        assert!(!lapses.in_doubt_at(start + ms(400)));
        assert!(lapses.in_doubt_at(start + ms(401)));
        assert!(lapses.in_doubt_at(start + ms(9000)));
    }

    #[test]
    fn a_long_stall_keeps_the_doubt_after_the_tick_for_a_timeout_and_a_redial() {
        let (lapses, start) = lapses();
        let thawed = start + ms(9000);
        assert!(lapses.ticked(thawed, Some(ms(8800))), "a stall to tell");
        // Ticking on time after the thaw does not end the doubt early.
        let mut now = thawed;
        while now < thawed + ms(6400) {
            now += ms(200);
            lapses.ticked(now, None);
            assert!(lapses.in_doubt_at(now), "{:?} after the thaw", now - thawed);
        }
        assert_eq!(now, thawed + ms(6400));
        assert!(lapses.in_doubt_at(now + ms(99)));
        assert!(!lapses.in_doubt_at(now + ms(100)));
    }

    #[test]
    fn a_short_stall_is_forgotten_at_the_next_tick() {
        let (lapses, start) = lapses();
        let late = start + ms(900);
        // 700 ms: under half the failure timeout, no peer found it down.
        assert!(!lapses.ticked(late, Some(ms(700))), "not a stall to tell");
        assert!(!lapses.in_doubt_at(late + ms(1)));
    }
}
