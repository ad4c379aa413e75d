//! Node identity and cluster membership for vidpress.
//!
//! # Layout
//! - [`NodeName`]: the name a node is known by in the cluster and in every
//!   job's status document.
//! - [`Cluster`]: joins this node to the cluster (a ractor_cluster
//!   `NodeServer` plus the membership actor) and hands out the live
//!   [`ClusterView`] and [`MemberEvent`]s; configured by [`ClusterConfig`].
//! - `membership`: the actor that heartbeats, detects failures and
//!   reconnects, which ractor_cluster does not do; `detector` (member table
//!   and failure detector), `reconnect` (dial targets and backoff) and
//!   `sessions` (the `NodeServer`'s sessions, [`NodeDirectory`]) are its
//!   parts.
//! - [`view`]: the data a view is made of ([`Member`], [`MemberState`],
//!   [`NodeLoad`]).
//! - [`wire`]: how actor messages are encoded to cross nodes (bincode), and
//!   the rolling-upgrade rule for them.
//!
//! This crate is the only place that touches `ractor_cluster` networking.
//!
//! **Invariant:** the cluster listener binds exactly the configured address
//! (never `[::]`), and only peers that know the cookie get a session; a
//! refused peer is logged at warn level and never enters the view.

mod detector;
mod membership;
mod reconnect;
mod sessions;
pub mod view;
pub mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::membership::{Membership, MembershipArgs, MembershipMsg};
pub use crate::sessions::NodeDirectory;
pub use crate::view::{ClusterView, Member, MemberEvent, MemberState, NodeLoad};

/// The name of a node, unique within a cluster (`node-a`, `vidpress-2`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

/// Why a string cannot name a node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeNameError {
    #[error("a node name cannot be empty")]
    Empty,
    #[error("a node name is at most 64 characters")]
    TooLong,
    #[error("a node name holds only letters, digits, '-', '_' and '.'")]
    BadCharacter,
}

impl NodeName {
    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NodeNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if s.len() > 64 {
            return Err(NodeNameError::TooLong);
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(NodeNameError::BadCharacter);
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for NodeName {
    type Error = NodeNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> Self {
        name.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The default [`ClusterConfig::heartbeat_interval`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// The default [`ClusterConfig::failure_timeout`].
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a node waits before dialing a lost peer again: a node that
/// comes back from isolation may take this long, plus a failure timeout of
/// heartbeats, to see every live node up again.
pub const REDIAL_MAX: Duration = reconnect::BACKOFF_MAX;

/// How this node joins the cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    pub node: NodeName,
    /// The address the cluster listener binds, exactly (port required).
    pub listen: SocketAddr,
    /// `HOST:PORT` peers dial to reach this node's cluster listener.
    pub advertise: String,
    /// Base URL of this node's HTTP API (`http://127.0.0.1:8080`),
    /// published to peers.
    pub http: String,
    /// `HOST:PORT` of nodes to join through; this node's own address may be
    /// among them (it is skipped).
    pub seeds: Vec<String>,
    /// The shared secret a peer must prove it knows.
    pub cookie: String,
    /// How often heartbeats are sent (default 500 ms).
    pub heartbeat_interval: Duration,
    /// Silence after which a member is `Down` (default 3 s).
    pub failure_timeout: Duration,
}

impl ClusterConfig {
    /// Returns a configuration for a node advertised at `listen`, with no
    /// seeds, no HTTP URL and the default timings.
    pub fn new(node: NodeName, listen: SocketAddr, cookie: impl Into<String>) -> Self {
        Self {
            node,
            listen,
            advertise: listen.to_string(),
            http: String::new(),
            seeds: Vec::new(),
            cookie: cookie.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
        }
    }

    /// Checks the configuration; returns the advertised host and port.
    fn validate(&self) -> Result<(String, u16), ClusterError> {
        if self.cookie.is_empty() {
            return Err(ClusterError::EmptyCookie);
        }
        if self.listen.port() == 0 {
            return Err(ClusterError::NoListenPort(self.listen));
        }
        if self.heartbeat_interval.is_zero() || self.failure_timeout <= self.heartbeat_interval {
            return Err(ClusterError::BadTiming {
                heartbeat_interval: self.heartbeat_interval,
                failure_timeout: self.failure_timeout,
            });
        }
        for seed in &self.seeds {
            host_port(seed).ok_or_else(|| ClusterError::BadAddress {
                what: "seed",
                value: seed.clone(),
            })?;
        }
        host_port(&self.advertise).ok_or_else(|| ClusterError::BadAddress {
            what: "advertise address",
            value: self.advertise.clone(),
        })
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node", &self.node)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("http", &self.http)
            .field("seeds", &self.seeds)
            .field("cookie", &"<redacted>")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("failure_timeout", &self.failure_timeout)
            .finish()
    }
}

/// Splits `HOST:PORT` (`[::1]:7000` for IPv6) into a non-empty host and a
/// non-zero port.
fn host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}

/// Why this node cannot join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster cookie cannot be empty")]
    EmptyCookie,
    #[error(
        "the cluster listen address {0} needs an explicit port (peers dial the advertised one)"
    )]
    NoListenPort(SocketAddr),
    #[error("the {what} `{value}` is not HOST:PORT")]
    BadAddress { what: &'static str, value: String },
    #[error(
        "the heartbeat interval ({heartbeat_interval:?}) must be positive and shorter than \
         the failure timeout ({failure_timeout:?})"
    )]
    BadTiming {
        heartbeat_interval: Duration,
        failure_timeout: Duration,
    },
    #[error("cannot listen for cluster peers on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot start cluster membership: {0}")]
    Start(String),
}

/// This node's membership of the cluster.
///
/// The node stays in the cluster until [`Cluster::leave`] or the end of the
/// process; dropping the handle does not stop it.
#[derive(Debug)]
pub struct Cluster {
    me: NodeName,
    node_server: ActorRef<NodeServerMessage>,
    node_server_task: JoinHandle<()>,
    membership: ActorRef<MembershipMsg>,
    membership_task: JoinHandle<()>,
    view: watch::Receiver<Arc<ClusterView>>,
    events: broadcast::Sender<MemberEvent>,
    directory: NodeDirectory,
}

/// How many member events a slow subscriber may fall behind by before it
/// sees `RecvError::Lagged`.
const EVENT_CAPACITY: usize = 256;

/// How long [`Cluster::leave`] waits for each actor to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

impl Cluster {
    /// Starts the cluster listener on `config.listen` and the membership
    /// actor, which dials the seeds. Returns at once, without waiting for
    /// any peer; `load` is this node's load, published in its heartbeats.
    pub async fn join(
        config: ClusterConfig,
        load: watch::Receiver<NodeLoad>,
    ) -> Result<Cluster, ClusterError> {
        let (host, advertised_port) = config.validate()?;
        let incarnation = membership::unix_ms();
        let me = config.node.clone();

        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            me.to_string(),
            host,
            None,
            Some(NodeConnectionMode::Transitive),
        )
        .with_listen_addr(config.listen.ip());
        let (node_server, node_server_task) =
            Actor::spawn(None, server, ())
                .await
                .map_err(|e| ClusterError::Bind {
                    addr: config.listen,
                    reason: e.to_string(),
                })?;
        if advertised_port != config.listen.port() {
            // ractor_cluster announces `host:listen_port` to peers, which
            // transitive connections dial; announce the advertised port
            // instead (behind NAT or a container port mapping).
            let _ = node_server.cast(NodeServerMessage::PortChanged {
                port: advertised_port,
            });
        }

        let me_member = membership::own_member(&config, incarnation, *load.borrow());
        let (view_tx, view) = watch::channel(Arc::new(ClusterView {
            me: me.clone(),
            members: [(me.clone(), me_member)].into(),
        }));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let directory = NodeDirectory::new(me.clone());
        let args = MembershipArgs {
            config,
            incarnation,
            node_server: node_server.clone(),
            load,
            view: view_tx,
            events: events.clone(),
            directory: directory.clone(),
        };
        let (membership, membership_task) = match Actor::spawn(None, Membership, args).await {
            Ok(spawned) => spawned,
            Err(e) => {
                node_server.stop(None);
                let _ = node_server_task.await;
                return Err(ClusterError::Start(e.to_string()));
            }
        };
        Ok(Cluster {
            me,
            node_server,
            node_server_task,
            membership,
            membership_task,
            view,
            events,
            directory,
        })
    }

    /// Returns the live view; it changes only when a member's state, load
    /// or address does (and at least every few seconds for `rtt`).
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// Returns a subscription to member events from now on.
    pub fn events(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    /// Returns this node's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// Returns the map from actors seen in process groups to their node.
    pub fn directory(&self) -> NodeDirectory {
        self.directory.clone()
    }

    /// Leaves the cluster: stops the membership actor, then the cluster
    /// listener and every session. Peers see this node go silent and mark
    /// it down after their failure timeout.
    pub async fn leave(self) {
        self.membership.stop(Some("leaving the cluster".to_owned()));
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.membership_task).await;
        self.node_server
            .stop(Some("leaving the cluster".to_owned()));
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.node_server_task).await;
        tracing::info!(node = %self.me, "left the cluster");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_names_and_refuses_others() {
        assert_eq!("node-a".parse::<NodeName>().unwrap().as_str(), "node-a");
        assert_eq!("".parse::<NodeName>(), Err(NodeNameError::Empty));
        assert_eq!("a b".parse::<NodeName>(), Err(NodeNameError::BadCharacter));
        assert_eq!(
            "x".repeat(65).parse::<NodeName>(),
            Err(NodeNameError::TooLong)
        );
    }

    fn config() -> ClusterConfig {
        ClusterConfig::new(
            "a".parse().unwrap(),
            "127.0.0.1:7000".parse().unwrap(),
            "secret",
        )
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(config().validate().unwrap(), ("127.0.0.1".to_owned(), 7000));

        let mut c = config();
        c.cookie.clear();
        assert!(matches!(c.validate(), Err(ClusterError::EmptyCookie)));

        let mut c = config();
        c.listen.set_port(0);
        assert!(matches!(c.validate(), Err(ClusterError::NoListenPort(_))));

        let mut c = config();
        c.failure_timeout = c.heartbeat_interval;
        assert!(matches!(c.validate(), Err(ClusterError::BadTiming { .. })));

        for bad in [
            "",
            "host",
            "host:",
            ":7000",
            "host:0",
            "host:99999",
            "a b:1",
        ] {
            let mut c = config();
            c.seeds = vec![bad.to_owned()];
            assert!(
                matches!(
                    c.validate(),
                    Err(ClusterError::BadAddress { what: "seed", .. })
                ),
                "{bad:?}"
            );
        }
        let mut c = config();
        c.advertise = "[::1]:7001".into();
        assert_eq!(c.validate().unwrap(), ("[::1]".to_owned(), 7001));
    }

    #[test]
    fn config_debug_hides_the_cookie() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[tokio::test]
    async fn join_reports_an_address_in_use() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = config();
        c.listen = taken.local_addr().unwrap();
        c.advertise = c.listen.to_string();
        let (_tx, load) = watch::channel(NodeLoad::default());
        match Cluster::join(c, load).await {
            Err(ClusterError::Bind { addr, .. }) => assert_eq!(addr, taken.local_addr().unwrap()),
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lone_node_sees_itself_up_and_leaves() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = config();
        c.listen.set_port(port);
        c.advertise = c.listen.to_string();
        c.http = "http://127.0.0.1:8080".into();
        c.seeds = vec![c.advertise.clone()];
        let (_tx, load) = watch::channel(NodeLoad {
            workers: 2,
            busy: 0,
            queued: 0,
        });
        let cluster = Cluster::join(c, load).await.unwrap();
        let view = cluster.view().borrow().clone();
        assert_eq!(view.me.as_str(), "a");
        let me = view.get(cluster.me()).unwrap();
        assert_eq!((me.state, me.load.workers), (MemberState::Up, 2));
        assert_eq!(me.http, "http://127.0.0.1:8080");
        assert_eq!(view.up().count(), 1);
        assert_eq!(
            cluster.directory().node_of(ractor::ActorId::Local(1)),
            Some(cluster.me().clone())
        );
        // The listener is bound to exactly the address given: not to a
        // wildcard, which would hold the port on 127.0.0.2 as well.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        assert!(std::net::TcpListener::bind(("127.0.0.2", port)).is_ok());
        cluster.leave().await;
        // And released when the node leaves.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
