//! Where a request about a job this node does not hold may be answered, in
//! order ([`stops`]): its owner, found from the tag in the job ID and the
//! membership view (no node is asked who owns what), then its standby,
//! which answers from its copy while the owner is lost. Shared by the HTTP
//! forwarding (`route`) and the WebSocket bridge (`bridge`), which both
//! give up on a stop once its node is no longer up ([`until_lost`]).

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderName;
use tokio::sync::watch;
use vidpress_actors::job::node_tag;
use vidpress_actors::JobId;
use vidpress_cluster::{ClusterView, Member, MemberState, NodeName};

/// Marks a forwarded request, which is never forwarded again: its value is
/// the number of hops so far.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-vidpress-forwarded");

/// Marks a request answered only by a node that holds the job (it took it
/// over), else refused with 421 Misdirected Request: what an owner in doubt
/// asks its job's standby, and a node whose job moved on asks the others.
/// With the value [`Ask::HeldOrCopy`] names, a copy of the job answers too.
pub const IF_HELD: HeaderName = HeaderName::from_static("x-vidpress-if-held");

/// What a node asked with [`IF_HELD`] answers from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// The job, if this node holds it.
    Held,
    /// The job, or else this node's copy of it.
    HeldOrCopy,
}

impl Ask {
    /// The header's value.
    pub fn value(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::HeldOrCopy => "held-or-copy",
        }
    }

    /// Reads the header of a request forwarded here, if it has one.
    pub fn of(request: &Request) -> Option<Self> {
        let value = request.headers().get(&IF_HELD)?;
        Some(if value.as_bytes() == Self::HeldOrCopy.value().as_bytes() {
            Self::HeldOrCopy
        } else {
            Self::Held
        })
    }
}

/// A request is forwarded at most this many times: a node to the owner,
/// the owner (which gave the job up) to the standby.
pub const MAX_HOPS: u8 = 2;

/// A node a request can be forwarded to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub node: NodeName,
    /// Its HTTP base URL.
    pub http: String,
}

/// Where a request about a job not held here may be answered, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Here: the job is unknown, or this node is its last resort.
    Here,
    /// From this node's copy, if it has one: it is the standby and the
    /// owner does not answer.
    Copy,
    /// Forwarded to this node.
    At(Target),
}

/// Finds who may answer for a job this node does not hold, in order: its
/// owner (tag in the ID) while it is not down, then its standby (second
/// tag), which holds a copy and takes the job over once the owner is down
/// or gave it up. An owner or standby missing from a view that has not
/// `settled` yet (this node just joined) may well exist: the job is then
/// unreachable, not unknown. No stop at all: unreachable.
pub fn stops(view: &ClusterView, id: JobId, hops: u8, settled: bool) -> Vec<Stop> {
    let tagged = |tag: u16| tagged(view, tag);
    let at = |m: &Member| Stop::At(Target::of(m));
    let Some(owner) = tagged(id.owner_tag()) else {
        return if settled {
            vec![Stop::Here]
        } else {
            Vec::new()
        };
    };
    let reachable = |m: &Member| m.state != MemberState::Down;
    let standby = match id.standby_tag() {
        None => None,
        Some(tag) => match tagged(tag) {
            Some(standby) => Some(standby),
            // Not heard of yet, but it may hold the job.
            None if !settled => return Vec::new(),
            None => None,
        },
    };
    let mut stops = Vec::new();
    if owner.name != view.me && reachable(owner) && hops == 0 {
        stops.push(at(owner));
    }
    match standby {
        Some(s) if s.name == view.me => stops.push(if owner.name == view.me {
            Stop::Here
        } else {
            Stop::Copy
        }),
        Some(s) if reachable(s) => stops.push(at(s)),
        Some(_) => {}
        None if owner.name == view.me => stops.push(Stop::Here),
        None => {}
    }
    stops
}

/// Returns the standby of job `id` (the second tag in its ID) while it is
/// in the view and not down.
pub fn standby_of(view: &ClusterView, id: JobId) -> Option<Target> {
    tagged(view, id.standby_tag()?)
        .filter(|m| m.name != view.me && m.state != MemberState::Down)
        .map(Target::of)
}

/// Returns the other nodes that are up, the last resort for a job neither
/// node its ID names holds any more.
pub fn others_up(view: &ClusterView) -> Vec<Target> {
    view.up()
        .filter(|m| m.name != view.me)
        .map(Target::of)
        .collect()
}

/// Returns the member of `view` whose name carries `tag`.
fn tagged(view: &ClusterView, tag: u16) -> Option<&Member> {
    view.members.values().find(|m| node_tag(&m.name) == tag)
}

impl Target {
    /// Returns where `member` is reached.
    fn of(member: &Member) -> Self {
        Self {
            node: member.name.clone(),
            http: member.http.clone(),
        }
    }
}

/// Runs `work` until it is done, or until `node` is no longer up in the
/// cluster's view (suspected or down: a frozen node answers nothing), which
/// gives `None`.
pub async fn until_lost<T>(
    view: &watch::Receiver<Arc<ClusterView>>,
    node: &NodeName,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut view = view.clone();
    let lost = async move {
        let up = |v: &Arc<ClusterView>| {
            v.members
                .get(node)
                .is_some_and(|m| m.state == MemberState::Up)
        };
        if view.wait_for(|v| !up(v)).await.is_err() {
            // No view any more: the node is stopping; let the work finish.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        done = work => Some(done),
        () = lost => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vidpress_cluster::{NodeLoad, NodeName};

    use super::*;

    fn node(name: &str) -> NodeName {
        name.parse().expect("a valid node name")
    }

    /// A view from `me` of nodes a, b, c in the given states.
    fn view(me: &str, states: [MemberState; 3]) -> ClusterView {
        let members = ["a", "b", "c"]
            .into_iter()
            .zip(states)
            .map(|(name, state)| {
                let member = Member {
                    name: node(name),
                    address: format!("{name}:7000"),
                    http: format!("http://{name}"),
                    state,
                    load: NodeLoad::default(),
                    incarnation: 1,
                    rtt: None,
                    last_seen: None,
                };
                (node(name), member)
            })
            .collect::<BTreeMap<_, _>>();
        ClusterView {
            me: node(me),
            members,
        }
    }

    const ALL_UP: [MemberState; 3] = [MemberState::Up; 3];

    fn at(name: &str) -> Stop {
        Stop::At(Target {
            node: node(name),
            http: format!("http://{name}"),
        })
    }

    #[test]
    fn a_job_goes_to_its_owner_then_to_its_standby() {
        let id = JobId::with_standby(&node("a"), Some(&node("b")));
        // The owner first; its standby if it does not answer.
        assert_eq!(stops(&view("c", ALL_UP), id, 0, true), [at("a"), at("b")]);
        // On the standby: its copy if the owner does not answer.
        assert_eq!(
            stops(&view("b", ALL_UP), id, 0, true),
            [at("a"), Stop::Copy]
        );
        // The owner gave the job up (it forwards with one hop): the standby.
        assert_eq!(stops(&view("a", ALL_UP), id, 1, true), [at("b")]);
        let owner_down = [MemberState::Down, MemberState::Up, MemberState::Up];
        assert_eq!(stops(&view("c", owner_down), id, 0, true), [at("b")]);
        // On the standby, the owner down: the takeover is under way, and
        // the copy answers meanwhile.
        assert_eq!(stops(&view("b", owner_down), id, 0, true), [Stop::Copy]);
        // Asked by a node whose owner did not answer: the copy.
        assert_eq!(stops(&view("b", ALL_UP), id, 1, true), [Stop::Copy]);
        let both_down = [MemberState::Down, MemberState::Down, MemberState::Up];
        assert_eq!(stops(&view("c", both_down), id, 0, true), []);
        // A suspect owner is not down yet: it stays first (`until_lost`
        // gives up waiting for it at once, so the standby answers).
        let owner_suspect = [MemberState::Suspect, MemberState::Up, MemberState::Up];
        assert_eq!(
            stops(&view("c", owner_suspect), id, 0, true),
            [at("a"), at("b")]
        );
    }

    #[test]
    fn an_owner_missing_from_the_view_is_unknown_only_once_the_view_settled() {
        let id = JobId::with_standby(&node("z"), Some(&node("y")));
        assert_eq!(stops(&view("a", ALL_UP), id, 0, false), []);
        assert_eq!(stops(&view("a", ALL_UP), id, 0, true), [Stop::Here]);
    }

    #[test]
    fn a_standby_missing_from_the_view_may_hold_the_job_until_the_view_settled() {
        // node-a owned the job and gave it to node-c, which it has not heard
        // of again since it restarted.
        let id = JobId::with_standby(&node("a"), Some(&node("c")));
        let mut restarted = view("a", ALL_UP);
        restarted.members.remove(&node("c"));
        assert_eq!(stops(&restarted, id, 0, false), []);
        assert_eq!(stops(&restarted, id, 1, false), []);
        assert_eq!(stops(&restarted, id, 0, true), [Stop::Here]);
    }

    #[test]
    fn a_job_without_a_standby_has_only_its_owner() {
        let id = JobId::with_standby(&node("a"), None);
        assert_eq!(stops(&view("c", ALL_UP), id, 0, true), [at("a")]);
        assert_eq!(stops(&view("a", ALL_UP), id, 0, true), [Stop::Here]);
        let owner_down = [MemberState::Down, MemberState::Up, MemberState::Up];
        assert_eq!(stops(&view("c", owner_down), id, 0, true), []);
    }
}
