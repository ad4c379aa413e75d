//! Dialing: which addresses to dial on each tick (`reconnect` keeps their
//! state and backoff), the dial itself (TCP, then TLS when the cluster has
//! it, naming the host dialed), what became of it, and the sessions to stop
//! so that a fresh dial can replace them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use ractor_cluster::{ClientConnectErr, NodeServerMessage};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use super::MembershipState;
use crate::node_name::NodeName;
use crate::protocol::{DialError, MembershipMsg};
use crate::reconnect::HANDSHAKE_TIMEOUT;
use crate::view::MemberState;

/// How long a dial may take to resolve, connect TCP and finish TLS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl MembershipState {
    /// Records what became of a dial task.
    pub(super) fn on_dialed(&mut self, target: String, result: Result<SocketAddr, DialError>) {
        let now = Instant::now();
        match result {
            Ok(socket) => {
                self.targets.connected(&target, socket.to_string(), now);
                self.targets.claim(&mut self.sessions);
            }
            Err(error) => {
                if let Some((t, delay)) = self.targets.failed(&target, now) {
                    let retry_in_ms = delay.as_millis() as u64;
                    let failures = t.backoff.failures();
                    if matches!(error, DialError::Tls(_)) && warns_refused(failures) {
                        warn!(%target, %error, retry_in_ms, "cluster peer refused: its certificate or ours is not from the cluster's CA");
                    } else if warns_unreachable(t.seed, failures) {
                        warn!(seed = %target, %error, retry_in_ms, "cannot reach cluster seed");
                    } else {
                        debug!(%target, %error, retry_in_ms, "cannot reach cluster peer");
                    }
                }
            }
        }
    }

    /// Stops the sessions to members that are down, once they have been
    /// authenticated for a whole failure timeout without carrying a
    /// heartbeat: over a cut link TCP can take minutes to notice, and a
    /// fresh dial is what brings the member back when the link returns.
    pub(super) fn drop_sessions_to_down_members(&mut self, now: Instant) {
        let down: Vec<NodeName> = self
            .table
            .others()
            .filter(|m| m.state == MemberState::Down)
            .map(|m| m.name.clone())
            .collect();
        for node in &down {
            for session in self.sessions.sessions_to(node) {
                if outlived_silence(
                    session.authenticated_at,
                    session.stopped_by_us,
                    now,
                    self.failure_timeout,
                ) {
                    info!(node = %node, peer = %session.peer_addr, "dropping the session to a down member");
                    session.stopped_by_us = true;
                    session.actor.stop(Some("vidpress: member down".to_owned()));
                }
            }
        }
    }

    /// Dials every seed and member address without a live session.
    pub(super) fn redial(&mut self, myself: &ActorRef<MembershipMsg>, now: Instant) {
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
            let tls = self.tls.clone();
            let myself = myself.clone();
            tokio::spawn(async move {
                let result = dial(&node_server, tls, &target).await;
                // The actor is gone only while the cluster is leaving.
                let _ = myself.cast(MembershipMsg::Dialed { target, result });
            });
        }
    }
}

/// Resolves `target` and hands a connection to it to the `NodeServer`,
/// which runs the cookie handshake; returns the socket reached. With `tls`
/// the connection is TLS first, and the peer's certificate must name the
/// host of `target`.
async fn dial(
    node_server: &ActorRef<NodeServerMessage>,
    tls: Option<TlsConnector>,
    target: &str,
) -> Result<SocketAddr, DialError> {
    let connect = async {
        let socket = tokio::net::lookup_host(target)
            .await
            .map_err(|e| DialError::Unreachable(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| DialError::Unreachable("resolves to no address".to_owned()))?;
        let connected = match tls {
            None => ractor_cluster::client_connect(node_server, socket).await,
            Some(tls) => {
                let name = server_name(target).ok_or_else(|| {
                    DialError::Tls(format!("`{target}` names no host a certificate can"))
                })?;
                ractor_cluster::client_connect_enc(node_server, socket, tls, name).await
            }
        };
        connected.map_err(|e| match e {
            ClientConnectErr::Encryption(e) => DialError::Tls(e.to_string()),
            e => DialError::Unreachable(e.to_string()),
        })?;
        Ok(socket)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err(DialError::Unreachable("connect timed out".to_owned())))
}

/// Returns the name the certificate of the node at `target` (`HOST:PORT`,
/// `[::1]:7000` for IPv6) must carry: its host, a DNS name or an IP.
fn server_name(target: &str) -> Option<ServerName<'static>> {
    let (host, _) = target.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).ok()
}

/// Returns whether a failed dial is warned about: the first failure in a
/// row of a configured seed. Later ones, and lost peers, are routine.
fn warns_unreachable(seed: bool, failures: u32) -> bool {
    seed && failures == 1
}

/// Returns whether a TLS refusal is warned about: the first in a row and
/// every twelfth after (a minute apart once the backoff reaches 5 s), seed
/// or not, since it is a misconfiguration, not a node that is down.
fn warns_refused(failures: u32) -> bool {
    failures % 12 == 1
}

/// Returns whether a session to a down member is to be stopped at `now`:
/// it authenticated at least `failure_timeout` ago (so it has carried no
/// heartbeat for that long) and was not stopped already. A session still
/// in its handshake is left to the handshake timeout.
fn outlived_silence(
    authenticated_at: Option<Instant>,
    stopped_by_us: bool,
    now: Instant,
    failure_timeout: Duration,
) -> bool {
    let stale =
        authenticated_at.is_some_and(|at| now.saturating_duration_since(at) >= failure_timeout);
    stale && !stopped_by_us
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn only_the_first_failure_to_reach_a_seed_is_warned_about() {
        assert!(warns_unreachable(true, 1));
        assert!(!warns_unreachable(true, 2));
        assert!(!warns_unreachable(false, 1));
    }

    #[test]
    fn a_tls_refusal_is_warned_about_now_and_then() {
        let warned: Vec<u32> = (1..=30).filter(|&n| warns_refused(n)).collect();
        assert_eq!(warned, [1, 13, 25]);
    }

    #[test]
    fn a_certificate_names_the_host_dialed() {
        let name = |t: &str| server_name(t).map(|n| n.to_str().into_owned());
        assert_eq!(name("node-2:7000").as_deref(), Some("node-2"));
        assert_eq!(name("127.0.0.1:7000").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:7000").as_deref(), Some("::1"));
        assert_eq!(name("bad host:7000"), None);
        assert_eq!(name("no-port"), None);
    }

    #[test]
    fn a_session_to_a_down_member_is_dropped_once_silent_a_failure_timeout() {
        let t0 = Instant::now();
        let timeout = ms(1500);
        assert!(!outlived_silence(Some(t0), false, t0 + ms(1499), timeout));
        assert!(outlived_silence(Some(t0), false, t0 + timeout, timeout));
        // Not twice.
        assert!(!outlived_silence(Some(t0), true, t0 + timeout, timeout));
        // Nor in its handshake, however long.
        assert!(!outlived_silence(None, false, t0 + ms(60_000), timeout));
    }
}
