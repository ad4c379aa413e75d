//! The `Membership` actor: heartbeats, failure detection and reconnection
//! for one node, on top of ractor_cluster (which has none of them).
//!
//! Every `heartbeat_interval` the actor ([`MembershipMsg::Tick`]):
//! 1. runs the failure detector (`detector`) over heartbeat arrival times;
//! 2. casts a [`Heartbeat`](crate::protocol::Heartbeat) to the membership
//!    actor of every other node, found in the process group [`GROUP`] (the
//!    only way ractor_cluster exposes remote actors); each answers with a
//!    [`HeartbeatAck`](crate::protocol::HeartbeatAck) that echoes
//!    `sent_at_ms`, which measures the round trip;
//! 3. tells every other node which members it sees up
//!    ([`Peers`](crate::protocol::Peers)), so that a node that joined
//!    through one seed learns the addresses of the rest;
//! 4. dials every seed, every known member's address and every address it
//!    was told of that has no live session, with a per-address backoff
//!    (`reconnect`), over mutual TLS when the cluster has it. This dialer
//!    is the only one: ractor_cluster's transitive connections are off.
//!
//! Every transition is logged, sent on the event broadcast and published
//! as a new [`ClusterView`]; the view is rebuilt only when something a
//! reader sees changes (state, load, address), and at most every
//! [`VIEW_REFRESH`](publish::VIEW_REFRESH) for round-trip times alone.
//!
//! Sessions are tracked through the `NodeServer`'s event subscription
//! (`sessions`): that is how a remote actor's `ActorId` is traced back to
//! the node it runs on, how a peer that fails authentication is logged, and
//! how a dial learns whether it succeeded.
//!
//! # Layout
//! This file holds the actor, its arguments and its state; each message is
//! handled in the module of its concern:
//!
//! | message | module |
//! |---|---|
//! | `Heartbeat`, `HeartbeatAck` | `heartbeats`: record, answer, measure the round trip |
//! | `Peers` | `discovery`: list the members up, dial those not known |
//! | `Tick` | `tick`: forgive this node's own pauses, detect, heartbeat, tell peers, redial |
//! | `Session` | `session_events`: the session table, and `refusals` for failed handshakes |
//! | `Dialed` | `dialing`: dial targets, their outcome, sessions to drop |
//!
//! `publish` logs, broadcasts and publishes what any of them changed. The
//! decisions are pure functions beside each handler, unit-tested there.

mod dialing;
mod discovery;
mod heartbeats;
mod publish;
mod refusals;
mod session_events;
mod tick;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::NodeServerMessage;
use tokio::sync::{broadcast, watch};
use tokio_rustls::TlsConnector;
use tracing::info;

use crate::config::ClusterConfig;
use crate::detector::{MemberTable, Timing};
use crate::lapses::Lapses;
use crate::node_name::NodeName;
use crate::protocol::{MembershipMsg, GROUP};
use crate::reconnect::Targets;
use crate::sessions::{NodeDirectory, SessionEvents, Sessions};
use crate::view::{ClusterView, Member, MemberEvent, MemberState, NodeLoad};

use self::refusals::Refusals;

/// The id of the membership actor's subscription to `NodeServer` events.
const SUBSCRIPTION: &str = "vidpress.membership";

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
    pub lapses: Lapses,
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
    /// Dials peers over mutual TLS; plain TCP when `None`.
    tls: Option<TlsConnector>,
    load: watch::Receiver<NodeLoad>,
    view: watch::Sender<Arc<ClusterView>>,
    events: broadcast::Sender<MemberEvent>,
    directory: NodeDirectory,
    table: MemberTable,
    sessions: Sessions,
    targets: Targets,
    /// When the actor started: the zero of the monotonic clock heartbeats
    /// carry in `sent_at_ms`.
    started: Instant,
    last_tick: Instant,
    /// Where each tick is marked, for those who answer for this node.
    lapses: Lapses,
    published_at: Instant,
    /// `rtt`/`last_seen` changed since the last published view.
    stale: bool,
    /// Failed handshakes waiting to be judged, and the warnings given.
    refusals: Refusals,
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
            lapses,
        } = args;
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: SUBSCRIPTION.to_owned(),
            subscription: Box::new(SessionEvents(myself.clone())),
        })?;
        ractor::pg::join(GROUP.to_owned(), vec![myself.get_cell()]);

        let seeds = config.other_seeds();
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
            tls: config.tls.map(|tls| TlsConnector::from(tls.client)),
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
            started: now,
            last_tick: now,
            lapses,
            published_at: now,
            stale: false,
            refusals: Refusals::default(),
        };
        info!(
            node = %state.me,
            address = %state.address,
            incarnation,
            seeds = ?state.seeds,
            tls = state.tls.is_some(),
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
            MembershipMsg::Peers(peers) => state.on_peers(peers),
            MembershipMsg::Tick => state.on_tick(&myself),
            MembershipMsg::Session(event) => state.on_session(event),
            MembershipMsg::Dialed { target, result } => state.on_dialed(target, result),
        }
        Ok(())
    }
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
