//! Node identity and cluster membership for vidpress.
//!
//! # Layout
//! - [`NodeName`] (`node_name`): the name a node is known by in the cluster
//!   and in every job's status document.
//! - [`Cluster`] (here): joins this node to the cluster (a ractor_cluster
//!   `NodeServer` plus the membership actor) and hands out the live
//!   [`ClusterView`] and [`MemberEvent`]s; configured by [`ClusterConfig`]
//!   (`config`, with [`ClusterTls`] and [`ClusterError`]).
//! - `membership`: the actor that heartbeats, detects failures and
//!   reconnects, which ractor_cluster does not do; a folder with one module
//!   per concern. Beside it, and importing nothing of it: `protocol` (the
//!   messages it receives: heartbeats, peer lists, session events, dial
//!   outcomes),
//!   `detector` (member table and failure detector), `reconnect` (dial
//!   targets and backoff) and `sessions` (the `NodeServer`'s sessions,
//!   [`NodeDirectory`]).
//! - [`view`]: the data a view is made of ([`Member`], [`MemberState`],
//!   [`NodeLoad`]).
//! - [`wire`]: how actor messages are encoded to cross nodes (bincode), and
//!   the rolling-upgrade rule for them.
//!
//! Modules import one another one way only: `node_name`, `view`, `wire`
//! and `config` at the bottom, then `detector` and `protocol`, then
//! `sessions`, `reconnect`, `membership`, and this root, which imports
//! them all and is imported by none.
//!
//! This crate is the only place that touches `ractor_cluster` networking.
//!
//! **Invariant:** the cluster listener binds exactly the configured address
//! (never `[::]`), and only peers that know the cookie get a session; a
//! refused peer is logged at warn level and never enters the view. With
//! [`ClusterTls`], a session is mutual TLS first: a peer without a
//! certificate from the cluster's CA is refused before the cookie
//! handshake, and this node dials only hosts whose certificate names them.

mod config;
mod detector;
mod lapses;
mod membership;
mod node_name;
mod protocol;
mod reconnect;
mod sessions;
pub mod view;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use crate::config::{
    ClusterConfig, ClusterError, ClusterTls, DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
};
pub use crate::lapses::Lapses;
use crate::membership::{Membership, MembershipArgs};
pub use crate::node_name::{NodeName, NodeNameError};
use crate::protocol::MembershipMsg;
pub use crate::sessions::NodeDirectory;
pub use crate::view::{ClusterView, Member, MemberEvent, MemberState, NodeLoad};

/// The longest a node waits before dialing a lost peer again: a node that
/// comes back from isolation may take this long, plus a failure timeout of
/// heartbeats, to see every live node up again.
pub const REDIAL_MAX: Duration = reconnect::BACKOFF_MAX;

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
    lapses: Lapses,
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

        let encryption = config
            .tls
            .as_ref()
            .map(|tls| IncomingEncryptionMode::Tls(tls.server.clone().into()));
        // Isolated: the membership actor dials every node it hears of (over
        // TLS when configured); ractor_cluster's transitive dials would be
        // plain TCP, which a TLS listener refuses.
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            me.to_string(),
            host,
            encryption,
            Some(NodeConnectionMode::Isolated),
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
            // ractor_cluster announces `host:listen_port` to peers as this
            // node's address; announce the advertised port instead (behind
            // NAT or a container port mapping).
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
        let lapses = Lapses::new(
            config.heartbeat_interval,
            config.failure_timeout,
            REDIAL_MAX,
        );
        let args = MembershipArgs {
            config,
            incarnation,
            node_server: node_server.clone(),
            load,
            view: view_tx,
            events: events.clone(),
            directory: directory.clone(),
            lapses: lapses.clone(),
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
            lapses,
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

    /// Returns whether this node's answers about what it owns are in
    /// doubt: it may have been found down while it did not run.
    pub fn lapses(&self) -> Lapses {
        self.lapses.clone()
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
    use std::net::SocketAddr;

    use super::*;

    /// Returns a configuration for node `a` listening on, and advertising,
    /// `listen`.
    fn config_at(listen: SocketAddr) -> ClusterConfig {
        ClusterConfig::new("a".parse().unwrap(), listen, "secret")
    }

    #[tokio::test]
    async fn join_reports_an_address_in_use() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = config_at(taken.local_addr().unwrap());
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
        let mut c = config_at(SocketAddr::from(([127, 0, 0, 1], port)));
        c.http = "http://127.0.0.1:8080".into();
        c.seeds = vec![c.advertise.clone()];
        let (_tx, load) = watch::channel(NodeLoad {
            workers: 2,
            busy: 0,
            queued: 0,
            spare: 0,
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
