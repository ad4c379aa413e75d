//! The messages that cross the cluster crate's modules: what the membership
//! actor hears from other nodes ([`Heartbeat`], [`HeartbeatAck`],
//! [`Peers`]), from the `NodeServer`'s sessions ([`SessionEvent`]) and from
//! its own dial tasks ([`DialError`]), all as one [`MembershipMsg`]. The actor (`membership`) and the session
//! table with its subscription (`sessions`) import these; this module
//! imports neither.

use std::net::SocketAddr;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::ActorRef;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::NodeSessionMessage;
use serde::{Deserialize, Serialize};

use crate::node_name::NodeName;
use crate::view::NodeLoad;
use crate::wire;

/// The process group every node's membership actor joins.
pub const GROUP: &str = "vidpress.membership";

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

/// The members a node sees up, sent to every other node so that a node
/// that joined through one seed comes to dial all of them: ractor_cluster's
/// own transitive connections dial plain TCP, which a cluster on mutual TLS
/// refuses, so this node's dialer is the only one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    pub from: NodeName,
    pub members: Vec<PeerAddress>,
}

/// A member as [`Peers`] lists it: its name and advertise address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddress {
    pub name: NodeName,
    /// `HOST:PORT`, as the member advertises it.
    pub address: String,
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// The address did not resolve, or nothing answered there in time.
    #[error("{0}")]
    Unreachable(String),
    /// TCP connected but the TLS handshake failed: one side's certificate
    /// is not from the cluster's CA, or does not name the host dialed.
    #[error("TLS handshake refused: {0}")]
    Tls(String),
}

/// Messages of the membership actor.
#[derive(Debug)]
pub enum MembershipMsg {
    /// Another node's heartbeat (remote): record it, answer with an ack.
    Heartbeat(Heartbeat),
    /// The answer to one of our heartbeats (remote): record the round trip.
    HeartbeatAck(HeartbeatAck),
    /// The members another node sees up (remote): dial those not known.
    Peers(Peers),
    /// Time to detect failures, heartbeat and redial (local, self-sent).
    Tick,
    /// A `NodeServer` session opened, authenticated or closed (local).
    Session(SessionEvent),
    /// A dial task finished connecting TCP, or failed to (local).
    Dialed {
        /// The address dialed, as configured or advertised.
        target: String,
        /// The socket reached, or why not.
        result: Result<SocketAddr, DialError>,
    },
}

/// The variants other nodes send. Append only (see [`crate::wire`]).
#[derive(Serialize, Deserialize)]
enum MembershipWire {
    Heartbeat(Heartbeat),
    HeartbeatAck(HeartbeatAck),
    Peers(Peers),
}

impl ractor::Message for MembershipMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let wire = match self {
            Self::Heartbeat(h) => MembershipWire::Heartbeat(h),
            Self::HeartbeatAck(a) => MembershipWire::HeartbeatAck(a),
            Self::Peers(p) => MembershipWire::Peers(p),
            Self::Tick | Self::Session(_) | Self::Dialed { .. } => return Err(BoxedDowncastErr),
        };
        wire::encode_cast("membership.v1", &wire)
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match wire::decode::<MembershipWire>(message)? {
            MembershipWire::Heartbeat(h) => Self::Heartbeat(h),
            MembershipWire::HeartbeatAck(a) => Self::HeartbeatAck(a),
            MembershipWire::Peers(p) => Self::Peers(p),
        })
    }
}

/// A change to one of the `NodeServer`'s sessions.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// A TCP connection was accepted or dialed; the handshake starts.
    Opened(SessionInfo),
    /// The peer proved it knows the cookie and won the duplicate-session
    /// election: messages and process groups now flow.
    Authenticated(SessionInfo),
    /// The session ended, authenticated or not.
    Closed(SessionInfo),
}

/// The part of `NodeServerSessionInformation` membership uses.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub node_id: u64,
    pub actor: ActorRef<NodeSessionMessage>,
    /// The socket address of the other end, as `IP:PORT`.
    pub peer_addr: String,
    /// `true` when the peer dialed us.
    pub is_server: bool,
    /// What the peer claims to be (verified only once authenticated).
    pub peer: Option<PeerName>,
}

/// A peer's identity as ractor_cluster carries it: `name@host` and the
/// `host:port` it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerName {
    /// The full ractor_cluster name, `node@host`.
    pub full: String,
    /// The vidpress node name, when `full` holds a valid one.
    pub node: Option<NodeName>,
    /// The peer's connection string, its advertise address.
    pub address: String,
}

impl PeerName {
    /// Returns the identity of a peer named `full` (`node@host`) that
    /// advertises `address`.
    pub fn new(full: String, address: String) -> Self {
        let node = full.split('@').next().and_then(|n| n.parse().ok());
        Self {
            full,
            node,
            address,
        }
    }
}

impl From<NodeServerSessionInformation> for SessionInfo {
    fn from(ses: NodeServerSessionInformation) -> Self {
        Self {
            node_id: ses.node_id,
            actor: ses.actor,
            peer_addr: ses.peer_addr,
            is_server: ses.is_server,
            peer: ses
                .peer_name
                .map(|p| PeerName::new(p.name, p.connection_string)),
        }
    }
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
                spare: 0,
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
    fn peers_cross_the_wire() {
        let peers = Peers {
            from: "node-a".parse().unwrap(),
            members: vec![PeerAddress {
                name: "node-c".parse().unwrap(),
                address: "node-c:7000".into(),
            }],
        };
        let message = MembershipMsg::Peers(peers.clone()).serialize().unwrap();
        match MembershipMsg::deserialize(message).unwrap() {
            MembershipMsg::Peers(p) => assert_eq!(p, peers),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn local_variants_never_leave_the_node() {
        assert!(MembershipMsg::Tick.serialize().is_err());
        let dialed = MembershipMsg::Dialed {
            target: "x:1".into(),
            result: Err(DialError::Unreachable("no".into())),
        };
        assert!(dialed.serialize().is_err());
    }

    #[test]
    fn a_newer_variant_is_refused_not_misread() {
        #[derive(Serialize)]
        enum Newer {
            _Heartbeat(Heartbeat),
            _HeartbeatAck(HeartbeatAck),
            _Peers(Peers),
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
