//! Discovery: on every tick a node tells the others which members it sees
//! up ([`Peers`]), and a node told of a member it does not know adds its
//! address to the dial targets. That is how a node that joined through one
//! seed meets the rest: ractor_cluster's transitive connections are off,
//! since they dial plain TCP, which a cluster on mutual TLS refuses.

use super::heartbeats::remote_memberships;
use super::MembershipState;
use crate::node_name::NodeName;
use crate::protocol::{MembershipMsg, PeerAddress, Peers};
use crate::view::{Member, MemberState};

impl MembershipState {
    /// Casts the members this node sees up to every other node.
    pub(super) fn send_peers(&self) {
        let peers = Peers {
            from: self.me.clone(),
            members: listed(self.table.others()),
        };
        if peers.members.is_empty() {
            return;
        }
        for peer in remote_memberships() {
            // A failed cast means that session just dropped: the next tick
            // tells the others again.
            let _ = peer.cast(MembershipMsg::Peers(peers.clone()));
        }
    }

    /// Adds the members another node listed, and this one does not know,
    /// to the addresses to dial.
    pub(super) fn on_peers(&mut self, peers: Peers) {
        let table = &self.table;
        for peer in unknown(&peers, &self.me, |name| table.get(name).is_some()) {
            self.targets.ensure(&peer.address, Some(&peer.name), false);
        }
    }
}

/// Returns the members worth telling others about: those up.
fn listed<'a>(members: impl Iterator<Item = &'a Member>) -> Vec<PeerAddress> {
    members
        .filter(|m| m.state == MemberState::Up)
        .map(|m| PeerAddress {
            name: m.name.clone(),
            address: m.address.clone(),
        })
        .collect()
}

/// Returns the members of `peers` to dial: neither this node nor one it
/// already knows (those are redialed from the member table).
fn unknown<'a>(
    peers: &'a Peers,
    me: &'a NodeName,
    known: impl Fn(&NodeName) -> bool + 'a,
) -> impl Iterator<Item = &'a PeerAddress> + 'a {
    peers
        .members
        .iter()
        .filter(move |p| p.name != *me && !known(&p.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::NodeLoad;

    fn name(n: &str) -> NodeName {
        n.parse().unwrap()
    }

    fn member(n: &str, state: MemberState) -> Member {
        Member {
            name: name(n),
            address: format!("{n}:7000"),
            http: format!("http://{n}:8080"),
            state,
            load: NodeLoad::default(),
            incarnation: 1,
            rtt: None,
            last_seen: None,
        }
    }

    #[test]
    fn only_members_up_are_listed() {
        let members = [
            member("b", MemberState::Up),
            member("c", MemberState::Suspect),
            member("d", MemberState::Down),
        ];
        let listed = listed(members.iter());
        assert_eq!(
            listed,
            [PeerAddress {
                name: name("b"),
                address: "b:7000".into()
            }]
        );
    }

    #[test]
    fn a_node_dials_the_listed_members_it_does_not_know() {
        let peers = Peers {
            from: name("a"),
            members: ["b", "c", "me"]
                .map(|n| PeerAddress {
                    name: name(n),
                    address: format!("{n}:7000"),
                })
                .into(),
        };
        let me = name("me");
        let dial: Vec<&str> = unknown(&peers, &me, |n| n.as_str() == "b")
            .map(|p| p.address.as_str())
            .collect();
        assert_eq!(dial, ["c:7000"]);
    }
}
