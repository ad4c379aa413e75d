//! The `NodeServer`'s sessions as the membership actor sees them: which
//! peer each session reaches, whether it authenticated, and which dial made
//! it. Fed by [`SessionEvents`], a `NodeEventSubscription` that turns the
//! `NodeServer`'s callbacks into actor messages.
//!
//! A remote actor's `ActorId` is `Remote { node_id, pid }` where `node_id`
//! is the number of the local session that carries it (counted from 0 per
//! process, never reused), so this table is also how an actor in a process
//! group is traced back to a [`NodeName`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use ractor::{ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeSessionMessage};

use crate::node_name::NodeName;
use crate::protocol::{MembershipMsg, PeerName, SessionEvent, SessionInfo};

/// Forwards the `NodeServer`'s session callbacks to the membership actor.
/// The callbacks run inside the `NodeServer`'s handler, so they only cast.
pub(crate) struct SessionEvents(pub ActorRef<MembershipMsg>);

impl SessionEvents {
    fn forward(&self, event: SessionEvent) {
        // The membership actor is gone only while the cluster is leaving.
        let _ = self.0.cast(MembershipMsg::Session(event));
    }
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.forward(SessionEvent::Opened(ses.into()));
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.forward(SessionEvent::Closed(ses.into()));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.forward(SessionEvent::Authenticated(ses.into()));
    }
}

/// One session of the table.
#[derive(Debug)]
pub(crate) struct Session {
    pub actor: ActorRef<NodeSessionMessage>,
    pub peer_addr: String,
    pub is_server: bool,
    pub peer: Option<PeerName>,
    /// When the session authenticated; `None` while in its handshake.
    pub authenticated_at: Option<Instant>,
    /// The reconnect target whose dial opened this session.
    pub dialed: Option<String>,
    /// We stopped it (handshake timeout, peer down): its end is no news.
    pub stopped_by_us: bool,
}

impl Session {
    pub fn authenticated(&self) -> bool {
        self.authenticated_at.is_some()
    }

    /// Returns the authenticated peer's node name.
    pub fn node(&self) -> Option<&NodeName> {
        if self.authenticated() {
            self.peer.as_ref()?.node.as_ref()
        } else {
            None
        }
    }
}

/// Every session the `NodeServer` reported, by node id.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_id: HashMap<u64, Session>,
}

impl Sessions {
    /// Records a new session.
    pub fn opened(&mut self, info: SessionInfo) {
        self.by_id.insert(
            info.node_id,
            Session {
                actor: info.actor,
                peer_addr: info.peer_addr,
                is_server: info.is_server,
                peer: info.peer,
                authenticated_at: None,
                dialed: None,
                stopped_by_us: false,
            },
        );
    }

    /// Marks a session authenticated; returns it.
    pub fn authenticated(&mut self, info: SessionInfo, now: Instant) -> &Session {
        let node_id = info.node_id;
        let peer = info.peer.clone();
        let session = self.by_id.entry(node_id).or_insert_with(|| Session {
            actor: info.actor,
            peer_addr: info.peer_addr,
            is_server: info.is_server,
            peer: None,
            authenticated_at: None,
            dialed: None,
            stopped_by_us: false,
        });
        session.authenticated_at.get_or_insert(now);
        if peer.is_some() {
            session.peer = peer;
        }
        session
    }

    /// Forgets a session; returns what was known of it.
    pub fn closed(&mut self, info: SessionInfo) -> Option<Session> {
        let mut session = self.by_id.remove(&info.node_id)?;
        if session.peer.is_none() {
            session.peer = info.peer;
        }
        Some(session)
    }

    pub fn get_mut(&mut self, node_id: u64) -> Option<&mut Session> {
        self.by_id.get_mut(&node_id)
    }

    /// Returns the node an authenticated session reaches.
    pub fn node_of(&self, node_id: u64) -> Option<&NodeName> {
        self.by_id.get(&node_id)?.node()
    }

    /// Returns whether an authenticated session reaches `node`.
    pub fn reaches(&self, node: &NodeName) -> bool {
        self.by_id.values().any(|s| s.node() == Some(node))
    }

    /// Returns whether an authenticated session reaches a node advertised
    /// at `address`.
    pub fn reaches_address(&self, address: &str) -> Option<&NodeName> {
        self.by_id.values().find_map(|s| {
            let node = s.node()?;
            (s.peer.as_ref()?.address == address).then_some(node)
        })
    }

    /// Returns the sessions (of any state) that reach or claim `node`.
    pub fn sessions_to<'a>(
        &'a mut self,
        node: &'a NodeName,
    ) -> impl Iterator<Item = &'a mut Session> {
        self.by_id
            .values_mut()
            .filter(move |s| s.peer.as_ref().and_then(|p| p.node.as_ref()) == Some(node))
    }

    /// Returns the outgoing session to `peer_addr`, still in its handshake,
    /// that no dial has claimed yet.
    pub fn unclaimed_outgoing(&mut self, peer_addr: &str) -> Option<(u64, &mut Session)> {
        self.by_id
            .iter_mut()
            .find(|(_, s)| {
                !s.is_server && !s.authenticated() && s.dialed.is_none() && s.peer_addr == peer_addr
            })
            .map(|(id, s)| (*id, s))
    }
}

/// Maps actors of other nodes, as they appear in process groups, to the
/// node they run on. Cheap to clone; always current.
#[derive(Clone, Debug)]
pub struct NodeDirectory {
    me: NodeName,
    routes: Arc<RwLock<HashMap<u64, NodeName>>>,
}

impl NodeDirectory {
    pub(crate) fn new(me: NodeName) -> Self {
        Self {
            me,
            routes: Arc::default(),
        }
    }

    /// Returns the node `actor` runs on: this node for a local actor, the
    /// peer of the session that carries it for a remote one, `None` once
    /// that session is gone.
    ///
    /// Do not test `ActorId::node() == 0` for "local": the first session a
    /// process opens has node id 0 too. Use `ActorId::is_local()`.
    pub fn node_of(&self, actor: ActorId) -> Option<NodeName> {
        match actor {
            ActorId::Local(_) => Some(self.me.clone()),
            ActorId::Remote { node_id, .. } => self
                .routes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&node_id)
                .cloned(),
        }
    }

    pub(crate) fn set(&self, node_id: u64, node: Option<NodeName>) {
        // A std lock: held for one map operation, never across an await.
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        match node {
            Some(node) => routes.insert(node_id, node),
            None => routes.remove(&node_id),
        };
    }
}
