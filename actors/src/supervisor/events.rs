//! Events: each change of the job is published as an event with the next
//! `seq`, kept in a short history, sent on the live feed and to the board;
//! progress events are throttled; a subscriber resuming with `since` gets
//! what it missed from the history, else a snapshot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::RpcReplyPort;
use tokio::sync::broadcast;

use super::{After, SupervisorState};
use crate::counters::Seq;
use crate::job::{EventKind, JobEvent, JobState};
use crate::protocol::{GatewayMsg, Subscription};

/// Progress events go out at most this often; status events always go out.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Events kept for subscribers that resume with `since`.
const HISTORY: usize = 128;
/// Events buffered per live subscriber before it is told it lagged.
pub(super) const CHANNEL: usize = 64;

/// Returns the events after `since` when `history` still holds all of them
/// and there is at least one (`last` is the job's latest seq); `None` when
/// the subscriber needs a snapshot instead: no `since`, one older than the
/// history, one in the future, or nothing missed.
pub(super) fn replay(
    history: &VecDeque<JobEvent>,
    last: Seq,
    since: Option<Seq>,
) -> Option<Vec<JobEvent>> {
    let since = since?;
    let oldest = history.front().map_or(last.next(), |e| e.seq);
    if since.next() < oldest || since > last {
        return None;
    }
    let missed: Vec<JobEvent> = history.iter().filter(|e| e.seq > since).cloned().collect();
    (!missed.is_empty()).then_some(missed)
}

/// How far ahead of a job's numbering a subscriber's `since` may be and
/// still be taken as numbered by an earlier holder of the job: more events
/// than a job publishes in weeks (progress at most every 250 ms), so that a
/// bogus `since` cannot push a job's numbering to its end.
const AHEAD_AT_MOST: u64 = 1 << 24;

/// Returns whether a subscriber's `since` is ahead of this supervisor's
/// numbering (`last`) by a plausible number of events, numbered elsewhere.
pub(super) fn numbered_elsewhere(last: Seq, since: Seq) -> bool {
    since > last && since.get() - last.get() <= AHEAD_AT_MOST
}

/// Moves `progress` on to `fraction` (clamped to 0–1) if that is ahead,
/// and, once past 1 % and with the attempt's `elapsed` seconds known,
/// estimates the seconds left into `eta_seconds`. Returns whether progress
/// moved (a report that goes backwards, a retry's, changes nothing).
pub(super) fn advance(
    progress: &mut f64,
    eta_seconds: &mut Option<f64>,
    fraction: f64,
    elapsed: Option<f64>,
) -> bool {
    let fraction = fraction.clamp(0.0, 1.0);
    if fraction <= *progress {
        return false;
    }
    *progress = fraction;
    if let (Some(elapsed), true) = (elapsed, fraction >= 0.01) {
        *eta_seconds = Some(elapsed * (1.0 - fraction) / fraction);
    }
    true
}

/// Returns whether a progress event is due, the last one having gone out
/// `since_last` ago (or never).
pub(super) fn progress_due(since_last: Option<Duration>) -> bool {
    since_last.is_none_or(|d| d >= PROGRESS_EVERY)
}

impl SupervisorState {
    /// `Subscribe`: answers with the subscriber's backlog and live feed.
    pub(super) fn on_subscribe(
        &mut self,
        since: Option<Seq>,
        reply: RpcReplyPort<Subscription>,
    ) -> After {
        let _ = reply.send(self.subscribe(since));
        After::Settle
    }

    fn subscribe(&mut self, since: Option<Seq>) -> Subscription {
        if let Some(since) = since.filter(|&since| numbered_elsewhere(self.job.seq, since)) {
            // The subscriber was told of events this supervisor did not
            // number: its job's former owner's, before a takeover, or this
            // node's before a restart. Numbering goes on after the last it
            // saw, with the whole job, so that its `seq` never goes back and
            // nothing is missed.
            self.job.seq = since;
            if self.job.status().is_terminal() {
                self.job.seq = since.next();
            } else {
                self.publish(EventKind::Snapshot);
            }
        }
        let live = (!self.job.status().is_terminal()).then(|| {
            self.events
                .get_or_insert_with(|| broadcast::channel(CHANNEL).0)
                .subscribe()
        });
        let backlog = replay(&self.history, self.job.seq, since).unwrap_or_else(|| {
            vec![JobEvent::new(
                EventKind::Snapshot,
                self.job.seq,
                Arc::new(self.job.clone()),
            )]
        });
        Subscription { backlog, live }
    }

    /// Takes a progress report: a progress event when one is due, else only
    /// the snapshot's time moves.
    pub(super) fn progress(&mut self, fraction: f64) {
        let elapsed = self.attempt_started.map(|t| t.elapsed().as_secs_f64());
        let JobState::Running {
            progress,
            eta_seconds,
            ..
        } = &mut self.job.state
        else {
            return;
        };
        if !advance(progress, eta_seconds, fraction, elapsed) {
            return;
        }
        if progress_due(self.last_progress_event.map(|t| t.elapsed())) {
            self.last_progress_event = Some(Instant::now());
            self.publish(EventKind::Progress);
        } else {
            self.job.updated_at = SystemTime::now();
        }
    }

    /// Publishes a status event and tells the gateway, which keeps the job
    /// index; `ran` is a completed attempt's input bytes and time, for the
    /// gateway's estimates.
    ///
    /// A terminal status waits for the record that holds it to be on disk
    /// (the end of the message being handled): a client that saw a job end
    /// never sees it run again after this node restarts, and a comparison
    /// of copies, which reads the record, finds it finished.
    pub(super) fn status_changed(&mut self, ran: Option<(u64, Duration)>) {
        if self.job.status().is_terminal() && self.dirty {
            self.unsaid_end = Some(ran);
            return;
        }
        self.say_status(ran);
    }

    /// Tells the gateway and the subscribers the job's status.
    pub(super) fn say_status(&mut self, ran: Option<(u64, Duration)>) {
        let _ = self.gateway.cast(GatewayMsg::StatusChanged {
            id: self.job.id,
            status: self.job.status(),
            ran,
        });
        self.publish(EventKind::Status);
    }

    pub(super) fn publish(&mut self, kind: EventKind) {
        self.job.seq = self.job.seq.next();
        self.job.updated_at = SystemTime::now();
        let event = JobEvent::new(kind, self.job.seq, Arc::new(self.job.clone()));
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        // Polls see what subscribers are told, from the same moment.
        self.board.publish(&self.job);
        // No receivers is fine: nobody is watching.
        let terminal = event.is_terminal();
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
        if terminal {
            // Subscribers still read what the feed holds, the terminal event
            // last; nothing comes after it.
            self.events = None;
            self.history.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use vidpress_cluster::NodeName;
    use vidpress_transcode::EncodeOptions;

    use super::*;
    use crate::counters::Attempt;
    use crate::job::{InputInfo, JobId, JobSnapshot};

    /// A history holding the events numbered `seqs`.
    fn history(seqs: std::ops::RangeInclusive<u64>) -> VecDeque<JobEvent> {
        let node: NodeName = "node-a".parse().unwrap();
        let job = Arc::new(JobSnapshot {
            id: JobId::new(&node),
            state: JobState::Queued,
            attempt: Attempt::default(),
            node: None,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            options: EncodeOptions::default(),
            input: InputInfo {
                bytes: 1,
                media: None,
            },
            seq: Seq::default(),
            tenant: None,
            segments: Vec::new(),
        });
        seqs.map(|seq| JobEvent::new(EventKind::Status, Seq::new(seq), job.clone()))
            .collect()
    }

    fn seqs(events: Option<Vec<JobEvent>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(|e| e.seq.get()).collect())
    }

    #[test]
    fn a_subscriber_resuming_within_the_history_gets_what_it_missed() {
        let held = history(3..=7);
        assert_eq!(
            seqs(replay(&held, Seq::new(7), Some(Seq::new(4)))),
            Some(vec![5, 6, 7])
        );
        // The oldest held event is the first it missed: still a replay.
        assert_eq!(
            seqs(replay(&held, Seq::new(7), Some(Seq::new(2)))),
            Some(vec![3, 4, 5, 6, 7])
        );
    }

    #[test]
    fn a_subscriber_that_missed_nothing_gets_a_snapshot() {
        assert!(replay(&history(3..=7), Seq::new(7), Some(Seq::new(7))).is_none());
        assert!(replay(&history(3..=7), Seq::new(7), None).is_none());
    }

    #[test]
    fn a_subscriber_older_than_the_history_or_from_the_future_gets_a_snapshot() {
        let held = history(3..=7);
        // Event 2 is gone: a replay would have a hole.
        assert!(replay(&held, Seq::new(7), Some(Seq::new(1))).is_none());
        // A seq this job never reached (another node's, before a takeover).
        assert!(replay(&held, Seq::new(7), Some(Seq::new(8))).is_none());
        // A job recovered from disk holds no history at all.
        assert!(replay(&VecDeque::new(), Seq::new(0), Some(Seq::new(0))).is_none());
    }

    #[test]
    fn a_since_ahead_of_the_numbering_is_taken_only_within_reason() {
        // A takeover: the former owner numbered up to 40, this node to 3.
        assert!(numbered_elsewhere(Seq::new(3), Seq::new(40)));
        // Not ahead: a plain resume.
        assert!(!numbered_elsewhere(Seq::new(40), Seq::new(40)));
        assert!(!numbered_elsewhere(Seq::new(40), Seq::new(3)));
        // Ahead by more than a job publishes: a bogus since.
        assert!(numbered_elsewhere(Seq::new(0), Seq::new(AHEAD_AT_MOST)));
        assert!(!numbered_elsewhere(
            Seq::new(0),
            Seq::new(AHEAD_AT_MOST + 1)
        ));
        assert!(!numbered_elsewhere(Seq::new(5), Seq::new(u64::MAX)));
    }

    #[test]
    fn progress_moves_only_forward_with_an_eta_past_one_percent() {
        let (mut progress, mut eta) = (0.0, None);
        assert!(!advance(&mut progress, &mut eta, 0.005 - 0.01, Some(1.0)));
        assert!(advance(&mut progress, &mut eta, 0.005, Some(1.0)));
        assert_eq!((progress, eta), (0.005, None), "no ETA below 1 %");
        assert!(advance(&mut progress, &mut eta, 0.25, Some(10.0)));
        assert_eq!((progress, eta), (0.25, Some(30.0)));
        // A late report of an earlier point, or the same one, changes nothing.
        assert!(!advance(&mut progress, &mut eta, 0.2, Some(12.0)));
        assert!(!advance(&mut progress, &mut eta, 0.25, Some(12.0)));
        assert_eq!((progress, eta), (0.25, Some(30.0)));
        // Beyond 1 is 1; without a start time the ETA stays as it was.
        assert!(advance(&mut progress, &mut eta, 7.0, None));
        assert_eq!((progress, eta), (1.0, Some(30.0)));
    }

    #[test]
    fn progress_events_go_out_at_most_every_quarter_second() {
        assert!(progress_due(None));
        assert!(!progress_due(Some(Duration::from_millis(249))));
        assert!(progress_due(Some(Duration::from_millis(250))));
    }
}
