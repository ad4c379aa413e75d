//! The member table and its failure detector: who is known, in which state,
//! and the transitions heartbeat arrivals and silences cause. Pure logic
//! over explicit instants, so every transition is unit-tested without a
//! network; the membership actor feeds it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::node_name::NodeName;
use crate::view::{ClusterView, Member, MemberEvent, MemberState, NodeLoad};

/// How long silences may last.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Silence after which an `Up` member becomes `Suspect`.
    pub suspect_after: Duration,
    /// Silence after which a member is `Down`.
    pub failure_timeout: Duration,
}

impl Timing {
    /// Suspects after three missed heartbeats, or half the failure timeout
    /// when three intervals would not come before it.
    pub fn new(heartbeat_interval: Duration, failure_timeout: Duration) -> Self {
        let three = heartbeat_interval.saturating_mul(3);
        let suspect_after = if three < failure_timeout {
            three
        } else {
            failure_timeout / 2
        };
        Self {
            suspect_after,
            failure_timeout,
        }
    }
}

/// What a heartbeat says about its sender.
#[derive(Clone, Debug)]
pub(crate) struct Heard {
    pub name: NodeName,
    pub address: String,
    pub http: String,
    pub incarnation: u64,
    pub load: NodeLoad,
}

/// The outcome of recording a heartbeat.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// State transitions, in order.
    pub events: Vec<MemberEvent>,
    /// Something a reader of the view would notice changed (load, address,
    /// incarnation, state); `rtt` and `last_seen` alone do not count.
    pub visible: bool,
}

/// Every member this node knows of, itself apart.
#[derive(Debug)]
pub(crate) struct MemberTable {
    me: Member,
    others: BTreeMap<NodeName, Member>,
    timing: Timing,
}

impl MemberTable {
    pub fn new(me: Member, timing: Timing) -> Self {
        Self {
            me,
            others: BTreeMap::new(),
            timing,
        }
    }

    /// Records a heartbeat from `heard.name` at `now`.
    ///
    /// A first heartbeat adds the member (`Up`); one from a silent member
    /// readmits it (`Up`); a higher incarnation means a restart
    /// (`Restarted`, then `Up`); a lower one is a stale message from a
    /// previous life and is ignored.
    pub fn heard(&mut self, heard: Heard, now: Instant) -> Change {
        if heard.name == self.me.name {
            return Change::default();
        }
        let mut change = Change::default();
        let Some(member) = self.others.get_mut(&heard.name) else {
            change.events.push(MemberEvent::Up(heard.name.clone()));
            change.visible = true;
            self.others.insert(
                heard.name.clone(),
                Member {
                    name: heard.name,
                    address: heard.address,
                    http: heard.http,
                    state: MemberState::Up,
                    load: heard.load,
                    incarnation: heard.incarnation,
                    rtt: None,
                    last_seen: Some(now),
                },
            );
            return change;
        };
        if heard.incarnation < member.incarnation {
            return change;
        }
        if heard.incarnation > member.incarnation {
            change
                .events
                .push(MemberEvent::Restarted(heard.name.clone()));
            change.events.push(MemberEvent::Up(heard.name.clone()));
            member.incarnation = heard.incarnation;
            member.rtt = None;
            member.state = MemberState::Up;
            change.visible = true;
        } else if member.state != MemberState::Up {
            change.events.push(MemberEvent::Up(heard.name.clone()));
            member.state = MemberState::Up;
            change.visible = true;
        }
        if member.address != heard.address || member.http != heard.http || member.load != heard.load
        {
            member.address = heard.address;
            member.http = heard.http;
            member.load = heard.load;
            change.visible = true;
        }
        member.last_seen = Some(now);
        change
    }

    /// Records an answer to our heartbeat: `name` is alive, and the round
    /// trip took `rtt`. An answer from another incarnation only waits for
    /// that incarnation's own heartbeat.
    pub fn acked(
        &mut self,
        name: &NodeName,
        incarnation: u64,
        rtt: Duration,
        now: Instant,
    ) -> Change {
        let mut change = Change::default();
        let Some(member) = self.others.get_mut(name) else {
            return change;
        };
        if member.incarnation != incarnation {
            return change;
        }
        if member.state != MemberState::Up {
            change.events.push(MemberEvent::Up(name.clone()));
            member.state = MemberState::Up;
            change.visible = true;
        }
        member.rtt = Some(rtt);
        member.last_seen = Some(now);
        change
    }

    /// Runs the failure detector at `now`; returns the transitions, in name
    /// order. A member silent past the failure timeout goes straight to
    /// `Down`, even if it was never seen `Suspect`.
    pub fn check(&mut self, now: Instant) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        for member in self.others.values_mut() {
            let silence = member
                .last_seen
                .map_or(Duration::MAX, |seen| now.saturating_duration_since(seen));
            let next = if silence >= self.timing.failure_timeout {
                MemberState::Down
            } else if silence >= self.timing.suspect_after && member.state == MemberState::Up {
                MemberState::Suspect
            } else {
                member.state
            };
            if next != member.state {
                member.state = next;
                events.push(match next {
                    MemberState::Up => MemberEvent::Up(member.name.clone()),
                    MemberState::Suspect => MemberEvent::Suspect(member.name.clone()),
                    MemberState::Down => MemberEvent::Down(member.name.clone()),
                });
            }
        }
        events
    }

    /// Forgives `paused` of every member's silence: this node itself did
    /// not run for that long (SIGSTOP, a starved runtime), so it heard
    /// nothing through no fault of the others.
    pub fn forgive(&mut self, paused: Duration, now: Instant) {
        for member in self.others.values_mut() {
            if let Some(seen) = member.last_seen.as_mut() {
                *seen = (*seen + paused).min(now);
            }
        }
    }

    /// Updates this node's own load; returns whether it changed.
    pub fn set_own_load(&mut self, load: NodeLoad) -> bool {
        let changed = self.me.load != load;
        self.me.load = load;
        changed
    }

    /// Returns the member named `name`, other than this node.
    pub fn get(&self, name: &NodeName) -> Option<&Member> {
        self.others.get(name)
    }

    /// Returns the other members.
    pub fn others(&self) -> impl Iterator<Item = &Member> {
        self.others.values()
    }

    /// Returns this node.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// Returns the view: every member, this node included.
    pub fn view(&self) -> ClusterView {
        let mut members = self.others.clone();
        members.insert(self.me.name.clone(), self.me.clone());
        ClusterView {
            me: self.me.name.clone(),
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(200);
    const TIMEOUT: Duration = Duration::from_millis(1500);

    fn name(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn table() -> MemberTable {
        let me = Member {
            name: name("a"),
            address: "127.0.0.1:7000".into(),
            http: "http://127.0.0.1:8000".into(),
            state: MemberState::Up,
            load: NodeLoad::default(),
            incarnation: 1,
            rtt: None,
            last_seen: None,
        };
        MemberTable::new(me, Timing::new(INTERVAL, TIMEOUT))
    }

    fn from(node: &str, incarnation: u64) -> Heard {
        Heard {
            name: name(node),
            address: format!("{node}:7000"),
            http: format!("http://{node}:8000"),
            incarnation,
            load: NodeLoad::default(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timing_suspects_before_the_timeout() {
        let t = Timing::new(ms(500), ms(3000));
        assert_eq!(t.suspect_after, ms(1500));
        let t = Timing::new(ms(1000), ms(2000));
        assert_eq!(t.suspect_after, ms(1000));
    }

    #[test]
    fn a_first_heartbeat_adds_an_up_member() {
        let mut t = table();
        let t0 = Instant::now();
        let change = t.heard(from("b", 5), t0);
        assert_eq!(change.events, vec![MemberEvent::Up(name("b"))]);
        assert!(change.visible);
        let view = t.view();
        assert_eq!(view.members.len(), 2);
        assert_eq!(view.up().count(), 2);
        assert_eq!(view.get(&name("a")).unwrap().state, MemberState::Up);

        // The same heartbeat again changes nothing visible.
        let change = t.heard(from("b", 5), t0 + INTERVAL);
        assert_eq!(change, Change::default());
    }

    #[test]
    fn silence_makes_suspect_then_down_and_a_heartbeat_readmits() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(from("b", 5), t0);
        assert!(t.check(t0 + ms(599)).is_empty());
        assert_eq!(t.check(t0 + ms(600)), vec![MemberEvent::Suspect(name("b"))]);
        assert!(t.check(t0 + ms(1499)).is_empty());
        assert_eq!(t.check(t0 + ms(1500)), vec![MemberEvent::Down(name("b"))]);
        assert!(t.check(t0 + ms(60_000)).is_empty());
        assert_eq!(t.view().up().count(), 1);

        let change = t.heard(from("b", 5), t0 + ms(61_000));
        assert_eq!(change.events, vec![MemberEvent::Up(name("b"))]);
        assert_eq!(t.get(&name("b")).unwrap().state, MemberState::Up);
    }

    #[test]
    fn a_long_silence_goes_straight_to_down() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(from("b", 5), t0);
        assert_eq!(t.check(t0 + ms(5000)), vec![MemberEvent::Down(name("b"))]);
    }

    #[test]
    fn a_higher_incarnation_is_a_restart_and_a_lower_one_is_ignored() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(from("b", 5), t0);
        let change = t.heard(from("b", 9), t0 + ms(100));
        assert_eq!(
            change.events,
            vec![
                MemberEvent::Restarted(name("b")),
                MemberEvent::Up(name("b"))
            ]
        );
        assert_eq!(t.get(&name("b")).unwrap().incarnation, 9);

        // A late heartbeat of the previous life neither counts as life nor
        // rolls the incarnation back.
        t.check(t0 + ms(2000));
        let change = t.heard(from("b", 5), t0 + ms(2100));
        assert_eq!(change, Change::default());
        let b = t.get(&name("b")).unwrap();
        assert_eq!((b.state, b.incarnation), (MemberState::Down, 9));
    }

    #[test]
    fn load_and_address_changes_are_visible() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(from("b", 5), t0);
        let mut busy = from("b", 5);
        busy.load.busy = 2;
        let change = t.heard(busy, t0 + ms(1));
        assert!(change.visible && change.events.is_empty());
        assert_eq!(t.get(&name("b")).unwrap().load.busy, 2);
    }

    #[test]
    fn acks_measure_rtt_and_count_as_life() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(from("b", 5), t0);
        t.check(t0 + ms(700));
        let change = t.acked(&name("b"), 5, ms(3), t0 + ms(700));
        assert_eq!(change.events, vec![MemberEvent::Up(name("b"))]);
        assert_eq!(t.get(&name("b")).unwrap().rtt, Some(ms(3)));
        // An ack from another incarnation is not this member's.
        assert_eq!(
            t.acked(&name("b"), 4, ms(3), t0 + ms(800)),
            Change::default()
        );
        assert_eq!(
            t.acked(&name("zz"), 4, ms(3), t0 + ms(800)),
            Change::default()
        );
    }

    #[test]
    fn a_pause_of_this_node_is_forgiven() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(from("b", 5), t0);
        // This node froze for 10 s right after the heartbeat.
        let now = t0 + ms(10_100);
        t.forgive(ms(10_000), now);
        assert!(t.check(now).is_empty());
        assert_eq!(t.get(&name("b")).unwrap().state, MemberState::Up);
    }

    #[test]
    fn own_heartbeats_and_load_do_not_make_a_member() {
        let mut t = table();
        assert_eq!(t.heard(from("a", 7), Instant::now()), Change::default());
        assert_eq!(t.view().members.len(), 1);
        assert!(t.set_own_load(NodeLoad {
            workers: 2,
            busy: 1,
            queued: 0,
            spare: 0,
        }));
        assert!(!t.set_own_load(NodeLoad {
            workers: 2,
            busy: 1,
            queued: 0,
            spare: 0,
        }));
        assert_eq!(t.view().get(&name("a")).unwrap().load.workers, 2);
    }
}
