//! The `Membership` actor: heartbeats, failure detection and reconnection
//! for one node, on top of ractor_cluster (which has none of them).
//!
//! Every `heartbeat_interval` the actor ([`MembershipMsg::Tick`]):
//! 1. runs the failure detector (`detector`) over heartbeat arrival times;
//! 2. casts a [`Heartbeat`] to the membership actor of every other node,
//!    found in the process group [`GROUP`] (the only way ractor_cluster
//!    exposes remote actors); each answers with a [`HeartbeatAck`] that
//!    echoes `sent_at_ms`, which measures the round trip;
//! 3. dials every seed and every known member's address that has no live
//!    session, with a per-address backoff (`reconnect`).
//!
//! Every transition is logged, sent on the event broadcast and published
//! as a new [`ClusterView`]; the view is rebuilt only when something a
//! reader sees changes (state, load, address), and at most every
//! [`VIEW_REFRESH`] for round-trip times alone.
//!
//! Sessions are tracked through the `NodeServer`'s event subscription
//! (`sessions`): that is how a remote actor's `ActorId` is traced back to
//! the node it runs on, how a peer that fails authentication is logged, and
//! how a dial learns whether it succeeded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::NodeServerMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::detector::{Change, Heard, MemberTable, Timing};
use crate::reconnect::{Targets, HANDSHAKE_TIMEOUT};
use crate::sessions::{
    NodeDirectory, PeerName, SessionEvent, SessionEvents, SessionInfo, Sessions,
};
use crate::view::{ClusterView, Member, MemberEvent, MemberState, NodeLoad};
use crate::{wire, ClusterConfig, NodeName};

/// The process group every node's membership actor joins.
pub const GROUP: &str = "vidpress.membership";

/// The id of the membership actor's subscription to `NodeServer` events.
const SUBSCRIPTION: &str = "vidpress.membership";

/// The longest a published view's `rtt` and `last_seen` may lag.
pub const VIEW_REFRESH: Duration = Duration::from_secs(5);

/// How long a dial may take to resolve and connect TCP.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long after a failed handshake a session to the peer must still be
/// missing for the failure to be reported as a refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// How often the same refused peer is warned about.
const REFUSAL_REPEAT: Duration = Duration::from_secs(60);

/// A handshake that failed after the peers exchanged names.
struct Refusal {
    peer_addr: String,
    peer: PeerName,
    incoming: bool,
    at: Instant,
}

/// A node's periodic "I am alive", sent to every other node's membership
/// actor. Small: a few dozen bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: NodeName,
    /// Its advertise address, `HOST:PORT`.
    pub address: String,
    /// Base URL of its HTTP API.
    pub http: String,
    /// Its start time in ms since the Unix epoch.
    pub incarnation: u64,
    pub load: NodeLoad,
    /// The sender's monotonic clock in ms, echoed back by the ack; opaque
    /// to the receiver.
    pub sent_at_ms: u64,
}

/// The answer to a [`Heartbeat`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub from: NodeName,
    pub incarnation: u64,
    /// The `sent_at_ms` of the heartbeat answered.
    pub sent_at_ms: u64,
}

/// Messages of the membership actor.
#[derive(Debug)]
pub enum MembershipMsg {
    /// Another node's heartbeat (remote): record it, answer with an ack.
    Heartbeat(Heartbeat),
    /// The answer to one of our heartbeats (remote): record the round trip.
    HeartbeatAck(HeartbeatAck),
    /// Time to detect failures, heartbeat and redial (local, self-sent).
    Tick,
    /// A `NodeServer` session opened, authenticated or closed (local).
    Session(SessionEvent),
    /// A dial task finished connecting TCP, or failed to (local).
    Dialed {
        /// The address dialed, as configured or advertised.
        target: String,
        /// The socket reached, or why not.
        result: Result<SocketAddr, String>,
    },
}

/// The variants other nodes send. Append only (see [`crate::wire`]).
#[derive(Serialize, Deserialize)]
enum MembershipWire {
    Heartbeat(Heartbeat),
    HeartbeatAck(HeartbeatAck),
}

impl ractor::Message for MembershipMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let wire = match self {
            Self::Heartbeat(h) => MembershipWire::Heartbeat(h),
            Self::HeartbeatAck(a) => MembershipWire::HeartbeatAck(a),
            Self::Tick | Self::Session(_) | Self::Dialed { .. } => return Err(BoxedDowncastErr),
        };
        wire::encode_cast("membership.v1", &wire)
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match wire::decode::<MembershipWire>(message)? {
            MembershipWire::Heartbeat(h) => Self::Heartbeat(h),
            MembershipWire::HeartbeatAck(a) => Self::HeartbeatAck(a),
        })
    }
}

/// The membership actor; its state is [`MembershipState`].
pub struct Membership;

/// What the membership actor starts from.
pub struct MembershipArgs {
    pub config: ClusterConfig,
    /// This run's incarnation, ms since the Unix epoch at start.
    pub incarnation: u64,
    pub node_server: ActorRef<NodeServerMessage>,
    pub load: watch::Receiver<NodeLoad>,
    pub view: watch::Sender<Arc<ClusterView>>,
    pub events: broadcast::Sender<MemberEvent>,
    pub directory: NodeDirectory,
}

/// The membership actor's state.
pub struct MembershipState {
    me: NodeName,
    incarnation: u64,
    address: String,
    http: String,
    /// Seeds other than this node's own addresses.
    seeds: Vec<String>,
    interval: Duration,
    failure_timeout: Duration,
    node_server: ActorRef<NodeServerMessage>,
    load: watch::Receiver<NodeLoad>,
    view: watch::Sender<Arc<ClusterView>>,
    events: broadcast::Sender<MemberEvent>,
    directory: NodeDirectory,
    table: MemberTable,
    sessions: Sessions,
    targets: Targets,
    /// Zero of the monotonic clock heartbeats carry.
    epoch: Instant,
    last_tick: Instant,
    published_at: Instant,
    /// `rtt`/`last_seen` changed since the last published view.
    stale: bool,
    /// Failed handshakes waiting for [`REFUSAL_GRACE`] to be judged.
    refusals: Vec<Refusal>,
    /// When each refused peer (by claimed name) was last warned about.
    refused_warned: HashMap<String, Instant>,
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let MembershipArgs {
            config,
            incarnation,
            node_server,
            load,
            view,
            events,
            directory,
        } = args;
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: SUBSCRIPTION.to_owned(),
            subscription: Box::new(SessionEvents(myself.clone())),
        })?;
        ractor::pg::join(GROUP.to_owned(), vec![myself.get_cell()]);

        let own = [config.advertise.clone(), config.listen.to_string()];
        let seeds = config
            .seeds
            .iter()
            .filter(|s| !own.contains(s))
            .cloned()
            .collect();
        let me = own_member(&config, incarnation, *load.borrow());
        let now = Instant::now();
        let state = MembershipState {
            me: config.node.clone(),
            incarnation,
            address: config.advertise,
            http: config.http,
            seeds,
            interval: config.heartbeat_interval,
            failure_timeout: config.failure_timeout,
            node_server,
            load,
            view,
            events,
            directory,
            table: MemberTable::new(
                me,
                Timing::new(config.heartbeat_interval, config.failure_timeout),
            ),
            sessions: Sessions::default(),
            targets: Targets::default(),
            epoch: now,
            last_tick: now,
            published_at: now,
            stale: false,
            refusals: Vec::new(),
            refused_warned: HashMap::new(),
        };
        info!(
            node = %state.me,
            address = %state.address,
            incarnation,
            seeds = ?state.seeds,
            "cluster membership started"
        );
        myself.cast(MembershipMsg::Tick)?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state
            .node_server
            .cast(NodeServerMessage::UnsubscribeToEvents(
                SUBSCRIPTION.to_owned(),
            ));
        info!(node = %state.me, "cluster membership stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMsg::Heartbeat(heartbeat) => state.on_heartbeat(heartbeat),
            MembershipMsg::HeartbeatAck(ack) => state.on_ack(ack),
            MembershipMsg::Tick => {
                state.on_tick(&myself);
                myself.send_after(state.interval, || MembershipMsg::Tick);
            }
            MembershipMsg::Session(event) => state.on_session(event),
            MembershipMsg::Dialed { target, result } => state.on_dialed(target, result),
        }
        Ok(())
    }
}

impl MembershipState {
    fn on_heartbeat(&mut self, hb: Heartbeat) {
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

    fn on_ack(&mut self, ack: HeartbeatAck) {
        let rtt = Duration::from_millis(self.clock_ms().saturating_sub(ack.sent_at_ms));
        let change = self
            .table
            .acked(&ack.from, ack.incarnation, rtt, Instant::now());
        self.apply(change);
    }

    fn on_tick(&mut self, myself: &ActorRef<MembershipMsg>) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        if gap > self.interval.saturating_mul(2) {
            // This node did not run (SIGSTOP, a starved runtime): it heard
            // nothing, which says nothing about the others.
            let paused = gap - self.interval;
            debug!(node = %self.me, paused_ms = paused.as_millis() as u64, "membership tick late; forgiving silences");
            self.table.forgive(paused, now);
        }

        let mut change = Change::default();
        if self.load.has_changed().unwrap_or(false) {
            let load = *self.load.borrow_and_update();
            change.visible |= self.table.set_own_load(load);
        }
        change.events = self.table.check(now);
        self.apply(change);

        self.drop_sessions_to_down_members(now);
        self.send_heartbeats();
        self.redial(myself, now);
        self.report_refusals(now);

        if self.stale && now.saturating_duration_since(self.published_at) >= VIEW_REFRESH {
            self.publish();
        }
    }

    fn on_session(&mut self, event: SessionEvent) {
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
        let claimed = session.peer.as_ref().and_then(|p| p.node.clone());
        if let (Some(dialed), false) = (&session.dialed, session.authenticated()) {
            if let Some(delay) = self.targets.handshake_failed(dialed, node_id, now) {
                debug!(target = %dialed, retry_in_ms = delay.as_millis() as u64, "cluster dial ended before authentication");
            }
        }

        if session.authenticated() {
            if claimed.as_ref().is_some_and(|n| self.sessions.reaches(n)) {
                // ractor_cluster keeps one session per pair of nodes and
                // stops the others, even authenticated ones.
                debug!(peer = %session.peer_addr, "duplicate cluster session closed");
            } else {
                info!(
                    node = ?claimed.as_ref().map(|n| n.as_str()),
                    peer = %session.peer_addr,
                    "cluster session closed"
                );
            }
        } else if session.stopped_by_us {
            debug!(peer = %session.peer_addr, "cluster session stopped before authentication");
        } else if let Some(peer) = session.peer {
            if peer.node.as_ref() == Some(&self.me) {
                // A seed that is this node under another spelling.
                debug!(peer = %session.peer_addr, "cluster session to self closed");
                if let Some(dialed) = &session.dialed {
                    info!(seed = %dialed, "seed is this node itself; not dialing it again");
                    self.targets.mark_self(dialed);
                }
            } else {
                // The names were exchanged, so the cookie challenge may be
                // what failed; or this was the loser of two simultaneous
                // connections, or a duplicate refused while a stale session
                // lingered. Only the first leaves no session behind: judge
                // once the others have had time to settle.
                self.refusals.push(Refusal {
                    peer_addr: session.peer_addr,
                    peer,
                    incoming: session.is_server,
                    at: now,
                });
            }
        } else {
            // No name was exchanged, so no cookie was checked: the peer went
            // away (a dial we gave up on, still in a frozen node's backlog)
            // or refused a duplicate before its challenge.
            debug!(peer = %session.peer_addr, "cluster connection closed before the handshake");
        }
    }

    /// Warns of the peers that failed the handshake and, a grace period
    /// later, still have no session: a wrong cookie, most likely.
    fn report_refusals(&mut self, now: Instant) {
        let (due, waiting) = std::mem::take(&mut self.refusals)
            .into_iter()
            .partition(|r| now.saturating_duration_since(r.at) >= REFUSAL_GRACE);
        self.refusals = waiting;
        for refusal in due {
            let Refusal {
                peer_addr,
                peer,
                incoming,
                ..
            } = refusal;
            if peer.node.as_ref().is_some_and(|n| self.sessions.reaches(n)) {
                debug!(peer = %peer_addr, claimed_name = %peer.full, "duplicate cluster session closed");
                continue;
            }
            let recently = self
                .refused_warned
                .get(&peer.full)
                .is_some_and(|at| now.saturating_duration_since(*at) < REFUSAL_REPEAT);
            if recently {
                debug!(peer = %peer_addr, claimed_name = %peer.full, incoming, "cluster peer refused again");
            } else {
                warn!(
                    peer = %peer_addr,
                    claimed_name = %peer.full,
                    incoming,
                    "cluster peer refused: authentication failed (wrong cookie?)"
                );
                self.refused_warned.insert(peer.full, now);
            }
        }
    }

    fn on_dialed(&mut self, target: String, result: Result<SocketAddr, String>) {
        let now = Instant::now();
        match result {
            Ok(socket) => {
                self.targets.connected(&target, socket.to_string(), now);
                self.targets.claim(&mut self.sessions);
            }
            Err(error) => {
                if let Some((t, delay)) = self.targets.failed(&target, now) {
                    let retry_in_ms = delay.as_millis() as u64;
                    if t.seed && t.backoff.failures() == 1 {
                        warn!(seed = %target, %error, retry_in_ms, "cannot reach cluster seed");
                    } else {
                        debug!(%target, %error, retry_in_ms, "cannot reach cluster peer");
                    }
                }
            }
        }
    }

    /// Logs, broadcasts and publishes what a table update changed.
    fn apply(&mut self, change: Change) {
        let publish = change.visible || !change.events.is_empty();
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
                warn!(node = %node, silent_ms = self.silence_ms(member), "cluster member suspect")
            }
            MemberEvent::Down(node) => {
                warn!(node = %node, silent_ms = self.silence_ms(member), "cluster member down")
            }
        }
    }

    fn silence_ms(&self, member: Option<&Member>) -> u64 {
        member
            .and_then(|m| m.last_seen)
            .map_or(0, |seen| seen.elapsed().as_millis() as u64)
    }

    fn publish(&mut self) {
        self.view.send_replace(Arc::new(self.table.view()));
        self.published_at = Instant::now();
        self.stale = false;
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

    fn send_heartbeats(&self) {
        let heartbeat = Heartbeat {
            from: self.me.clone(),
            address: self.address.clone(),
            http: self.http.clone(),
            incarnation: self.incarnation,
            load: self.table.me().load,
            sent_at_ms: self.clock_ms(),
        };
        for cell in ractor::pg::get_members(&GROUP.to_owned()) {
            if cell.get_id().is_local() {
                continue;
            }
            // A failed cast means that session just dropped; the failure
            // detector, not this send, decides what that means.
            let _ = ActorRef::<MembershipMsg>::from(cell)
                .cast(MembershipMsg::Heartbeat(heartbeat.clone()));
        }
    }

    /// Stops the sessions to members that are down, once they have been
    /// authenticated for a whole failure timeout without carrying a
    /// heartbeat: over a cut link TCP can take minutes to notice, and a
    /// fresh dial is what brings the member back when the link returns.
    fn drop_sessions_to_down_members(&mut self, now: Instant) {
        let down: Vec<NodeName> = self
            .table
            .others()
            .filter(|m| m.state == MemberState::Down)
            .map(|m| m.name.clone())
            .collect();
        for node in &down {
            for session in self.sessions.sessions_to(node) {
                let stale = session
                    .authenticated_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= self.failure_timeout);
                if stale && !session.stopped_by_us {
                    info!(node = %node, peer = %session.peer_addr, "dropping the session to a down member");
                    session.stopped_by_us = true;
                    session.actor.stop(Some("vidpress: member down".to_owned()));
                }
            }
        }
    }

    /// Dials every seed and member address without a live session.
    fn redial(&mut self, myself: &ActorRef<MembershipMsg>, now: Instant) {
        for seed in &self.seeds {
            self.targets.ensure(seed, None, true);
        }
        for member in self.table.others() {
            if member.address != self.address {
                self.targets
                    .ensure(&member.address, Some(&member.name), false);
            }
        }
        for (target, node_id) in self.targets.expire(now, HANDSHAKE_TIMEOUT) {
            debug!(%target, "cluster handshake timed out");
            let session = node_id.and_then(|id| self.sessions.get_mut(id));
            if let Some(session) = session.filter(|s| !s.authenticated()) {
                session.stopped_by_us = true;
                session
                    .actor
                    .stop(Some("vidpress: handshake timeout".to_owned()));
            }
        }
        let sessions = &self.sessions;
        let due = self.targets.due(now, |t| {
            sessions.reaches_address(&t.address).is_some()
                || t.peer.as_ref().is_some_and(|p| sessions.reaches(p))
        });
        for target in due {
            self.targets.start(&target, now);
            let node_server = self.node_server.clone();
            let myself = myself.clone();
            tokio::spawn(async move {
                let result = dial(&node_server, &target).await;
                // The actor is gone only while the cluster is leaving.
                let _ = myself.cast(MembershipMsg::Dialed { target, result });
            });
        }
    }

    /// Returns ms on the monotonic clock heartbeats carry.
    fn clock_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Resolves `target` and hands a TCP connection to it to the `NodeServer`,
/// which runs the handshake; returns the socket reached.
async fn dial(
    node_server: &ActorRef<NodeServerMessage>,
    target: &str,
) -> Result<SocketAddr, String> {
    let connect = async {
        let socket = tokio::net::lookup_host(target)
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| "resolves to no address".to_owned())?;
        ractor_cluster::client_connect(node_server, socket)
            .await
            .map_err(|e| e.to_string())?;
        Ok(socket)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err("connect timed out".to_owned()))
}

/// Returns this node as a member of its own view.
pub(crate) fn own_member(config: &ClusterConfig, incarnation: u64, load: NodeLoad) -> Member {
    Member {
        name: config.node.clone(),
        address: config.advertise.clone(),
        http: config.http.clone(),
        state: MemberState::Up,
        load,
        incarnation,
        rtt: None,
        last_seen: None,
    }
}

/// Returns the current time in ms since the Unix epoch: an incarnation.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use ractor::Message;

    use super::*;

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            from: "node-b".parse().unwrap(),
            address: "127.0.0.1:7001".into(),
            http: "http://127.0.0.1:8001".into(),
            incarnation: 1_700_000_000_000,
            load: NodeLoad {
                workers: 4,
                busy: 1,
                queued: 2,
            },
            sent_at_ms: 12_345,
        }
    }

    #[test]
    fn heartbeats_cross_the_wire_and_stay_small() {
        let message = MembershipMsg::Heartbeat(heartbeat()).serialize().unwrap();
        let SerializedMessage::Cast { args, .. } = &message else {
            panic!("a heartbeat is a cast");
        };
        assert!(args.len() < 100, "heartbeat is {} bytes", args.len());
        match MembershipMsg::deserialize(message).unwrap() {
            MembershipMsg::Heartbeat(h) => assert_eq!(h, heartbeat()),
            other => panic!("decoded {other:?}"),
        }

        let ack = HeartbeatAck {
            from: "node-a".parse().unwrap(),
            incarnation: 3,
            sent_at_ms: 12_345,
        };
        let message = MembershipMsg::HeartbeatAck(ack.clone())
            .serialize()
            .unwrap();
        match MembershipMsg::deserialize(message).unwrap() {
            MembershipMsg::HeartbeatAck(a) => assert_eq!(a, ack),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn local_variants_never_leave_the_node() {
        assert!(MembershipMsg::Tick.serialize().is_err());
        let dialed = MembershipMsg::Dialed {
            target: "x:1".into(),
            result: Err("no".into()),
        };
        assert!(dialed.serialize().is_err());
    }

    #[test]
    fn a_newer_variant_is_refused_not_misread() {
        #[derive(Serialize)]
        enum Newer {
            _Heartbeat(Heartbeat),
            _HeartbeatAck(HeartbeatAck),
            Leave { from: NodeName },
        }
        let message = wire::encode_cast(
            "membership.v2",
            &Newer::Leave {
                from: "node-b".parse().unwrap(),
            },
        )
        .unwrap();
        assert!(MembershipMsg::deserialize(message).is_err());
    }
}
