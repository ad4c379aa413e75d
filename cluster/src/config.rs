//! How a node joins the cluster ([`ClusterConfig`], checked at start-up,
//! with its optional mutual TLS, [`ClusterTls`]) and why it may not
//! ([`ClusterError`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::node_name::NodeName;

/// The default [`ClusterConfig::heartbeat_interval`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// The default [`ClusterConfig::failure_timeout`].
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// Mutual TLS on the cluster protocol; plain TCP when `None`.
    pub tls: Option<ClusterTls>,
}

/// The two sides of the cluster protocol's mutual TLS, built by the caller
/// (which reads the certificates) so that this crate only applies them.
#[derive(Clone)]
pub struct ClusterTls {
    /// Accepts peers: presents this node's certificate and requires one
    /// from the peer, signed by the cluster's CA.
    pub server: Arc<rustls::ServerConfig>,
    /// Dials peers: trusts only the cluster's CA, checks the certificate
    /// names the host dialed, and presents this node's certificate.
    pub client: Arc<rustls::ClientConfig>,
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
            tls: None,
        }
    }

    /// Returns the seeds other than this node's own addresses (its
    /// advertise and listen addresses, as written).
    pub(crate) fn other_seeds(&self) -> Vec<String> {
        let own = [self.advertise.clone(), self.listen.to_string()];
        self.seeds
            .iter()
            .filter(|s| !own.contains(s))
            .cloned()
            .collect()
    }

    /// Checks the configuration; returns the advertised host and port.
    pub(crate) fn validate(&self) -> Result<(String, u16), ClusterError> {
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
            .field("tls", &self.tls.is_some())
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn this_nodes_own_addresses_are_not_seeds() {
        let mut c = config();
        c.listen = "0.0.0.0:7000".parse().unwrap();
        c.advertise = "node-a:7000".into();
        c.seeds = ["node-b:7000", "node-a:7000", "0.0.0.0:7000", "node-c:7000"]
            .map(String::from)
            .into();
        assert_eq!(c.other_seeds(), ["node-b:7000", "node-c:7000"]);
    }
}
