//! What a node knows of the cluster: its members, their state and load, and
//! the events that change them. Plain data; the `membership` actor owns
//! the only writer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node_name::NodeName;

/// How busy a node is, as it reports itself in every heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Worker slots on the node.
    pub workers: u32,
    /// Workers running an attempt.
    pub busy: u32,
    /// Jobs waiting for a worker on the node.
    pub queued: u32,
    /// Spare workers free: held back for jobs whose attempt was lost, not
    /// counted in `workers`.
    pub spare: u32,
}

/// A member's state as seen by this node's failure detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Heard from within the last few heartbeat intervals.
    Up,
    /// Silent for a few intervals, not yet for the failure timeout.
    Suspect,
    /// Silent for the failure timeout: crashed, frozen or cut off.
    Down,
}

impl MemberState {
    /// Returns the state as in the HTTP API: `up`, `suspect` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Down => "down",
        }
    }
}

/// One node of the cluster.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: NodeName,
    /// `HOST:PORT` its cluster listener is reached at (its advertise address).
    pub address: String,
    /// Base URL of its HTTP API.
    pub http: String,
    pub state: MemberState,
    /// Its load as of its last heartbeat.
    pub load: NodeLoad,
    /// Its start time in ms since the Unix epoch; a restart under the same
    /// name has a higher one.
    pub incarnation: u64,
    /// Heartbeat round-trip time, once measured. Refreshed with the view,
    /// so it may lag by a few seconds.
    pub rtt: Option<Duration>,
    /// When it was last heard from (`None` for this node itself). Refreshed
    /// with the view, like `rtt`.
    pub last_seen: Option<Instant>,
}

/// Every node this node knows of, itself included (always `Up`).
#[derive(Clone, Debug)]
pub struct ClusterView {
    pub me: NodeName,
    pub members: BTreeMap<NodeName, Member>,
}

impl ClusterView {
    /// Returns the members that are up, this node included, in name order.
    pub fn up(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.state == MemberState::Up)
    }

    /// Returns the member named `name`, if known.
    pub fn get(&self, name: &NodeName) -> Option<&Member> {
        self.members.get(name)
    }
}

/// A change of a member's state, in the order this node saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// First heard from, or heard from again after `Suspect` or `Down`.
    Up(NodeName),
    /// Silent for a few heartbeat intervals.
    Suspect(NodeName),
    /// Silent for the failure timeout.
    Down(NodeName),
    /// Heard from under the same name with a higher incarnation: the node
    /// restarted and lost whatever it held. An `Up` follows.
    Restarted(NodeName),
    /// This node (named) did not run for half a failure timeout or more (it
    /// was frozen, or starved): the others may have found it down and taken
    /// its jobs over meanwhile.
    Stalled(NodeName),
}

impl MemberEvent {
    /// Returns the node the event is about.
    pub fn node(&self) -> &NodeName {
        match self {
            Self::Up(n)
            | Self::Suspect(n)
            | Self::Down(n)
            | Self::Restarted(n)
            | Self::Stalled(n) => n,
        }
    }
}
