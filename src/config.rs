//! [`ServeConfig`]: every setting of `vidpress serve`, from flags or
//! `VIDPRESS_*` environment variables, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vidpress_actors::SplitPolicy;
use vidpress_cluster::{ClusterConfig, ClusterTls, NodeName};

/// Settings of one node.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeConfig {
    /// Address the HTTP API listens on.
    #[arg(long, env = "VIDPRESS_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Folder for uploads, job inputs and results.
    #[arg(long, env = "VIDPRESS_DATA_DIR", default_value = "./vidpress-data")]
    pub data_dir: PathBuf,
    /// Name of this node in the cluster [default: node-1].
    #[arg(long, env = "VIDPRESS_NODE_NAME")]
    pub node_name: Option<NodeName>,
    /// Address the cluster protocol listens on (multi-node clusters).
    #[arg(long, env = "VIDPRESS_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// HOST:PORT other nodes reach this node's cluster listener at.
    #[arg(long, env = "VIDPRESS_ADVERTISE")]
    pub advertise: Option<String>,
    /// HOST:PORT of nodes to join through, comma-separated.
    #[arg(long, env = "VIDPRESS_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Shared secret nodes must know to join.
    #[arg(long, env = "VIDPRESS_COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
    /// Transcodes this node runs at once [default: half the CPU cores, at least 1].
    #[arg(long, env = "VIDPRESS_WORKERS")]
    pub workers: Option<usize>,
    /// Spare workers held back for jobs whose attempt was lost (their node
    /// died, froze, was cut off or restarted): such a job runs again on one
    /// at once when every other worker is busy, instead of behind the queue
    /// [default: 1, none on a node with no workers].
    #[arg(long, env = "VIDPRESS_SPARE_WORKERS")]
    pub spare_workers: Option<usize>,
    /// Largest upload accepted, in bytes.
    #[arg(long, env = "VIDPRESS_MAX_UPLOAD_BYTES", default_value_t = 4 << 30)]
    pub max_upload_bytes: u64,
    /// Jobs that may wait for a worker before submissions get 503.
    #[arg(long, env = "VIDPRESS_QUEUE_CAPACITY", default_value_t = 1000)]
    pub queue_capacity: usize,
    /// Seconds a video's segments aim at, when it is long enough to be split
    /// over many workers (see --segment-min-secs); shortened so that their
    /// count is a multiple of the cluster's workers.
    #[arg(long, env = "VIDPRESS_SEGMENT_SECS", default_value_t = 30)]
    pub segment_secs: u64,
    /// Videos longer than this many seconds are cut into segments encoded
    /// on many workers at once and joined (unless a job asks parallel=off).
    #[arg(long, env = "VIDPRESS_SEGMENT_MIN_SECS", default_value_t = 120)]
    pub segment_min_secs: u64,
    /// Seconds a transcoder may stay silent before it is killed as hung.
    #[arg(long, env = "VIDPRESS_STALL_TIMEOUT", default_value_t = 120)]
    pub stall_timeout: u64,
    /// Base URL other nodes reach this node's HTTP API at [default: http:// (https:// with --tls-cert) + the --advertise host + the --http port].
    #[arg(long, env = "VIDPRESS_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// Milliseconds between heartbeats to every other node.
    #[arg(long, env = "VIDPRESS_HEARTBEAT_MS", default_value_t = 500)]
    pub heartbeat_ms: u64,
    /// Milliseconds of silence after which a node is marked down.
    #[arg(long, env = "VIDPRESS_FAILURE_TIMEOUT_MS", default_value_t = 3000)]
    pub failure_timeout_ms: u64,
    /// Seconds finished jobs and their results are kept, then removed.
    #[arg(long, env = "VIDPRESS_RETENTION_SECS", default_value_t = 86_400)]
    pub retention_secs: u64,
    /// Seconds a shutdown (SIGTERM) waits for this node's jobs to finish.
    #[arg(long, env = "VIDPRESS_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Seconds a client has to send a request's headers before the connection is dropped.
    #[arg(long, env = "VIDPRESS_HEADER_TIMEOUT", default_value_t = 30)]
    pub header_timeout: u64,
    /// Seconds an upload or an open connection may send nothing before it is dropped.
    #[arg(long, env = "VIDPRESS_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Connections served at once; more are refused at once.
    #[arg(long, env = "VIDPRESS_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Largest video frame transcoded, in pixels (width x height).
    #[arg(long, env = "VIDPRESS_MAX_PIXELS", default_value_t = 4096 * 2304)]
    pub max_pixels: u64,
    /// Longest video transcoded, in seconds.
    #[arg(long, env = "VIDPRESS_MAX_DURATION_SECS", default_value_t = 14_400)]
    pub max_duration_secs: u64,
    /// Address space a transcoder child may use, in bytes.
    #[arg(long, env = "VIDPRESS_MAX_CHILD_MEMORY_BYTES", default_value_t = 2 << 30)]
    pub max_child_memory_bytes: u64,
    /// Free disk space a submission must leave in the data directory, in bytes.
    #[arg(long, env = "VIDPRESS_MIN_FREE_BYTES", default_value_t = 1 << 30)]
    pub min_free_bytes: u64,
    /// File of API keys: one `tenant:token` or `tenant:token:admin` a line
    /// (`#` comments; a token may be given as `sha256:<hex>`). With it every
    /// route but `/`, `/healthz`, `/readyz` and `/openapi.json` needs
    /// `Authorization: Bearer <token>`. SIGHUP re-reads it.
    #[arg(long, env = "VIDPRESS_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// Serve without API keys on an address other machines can reach.
    #[arg(long, env = "VIDPRESS_OPEN")]
    pub open: bool,
    /// Jobs one tenant may have queued or running on this node at once; more get 429 (0: no limit).
    #[arg(long, env = "VIDPRESS_TENANT_MAX_ACTIVE", default_value_t = 0)]
    pub tenant_max_active: usize,
    /// PEM certificate chain: the HTTP API and WebSocket are served over TLS.
    #[arg(long, env = "VIDPRESS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "VIDPRESS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate this node presents to other nodes (cluster protocol, mutual TLS).
    #[arg(long, env = "VIDPRESS_CLUSTER_TLS_CERT", requires_all = ["cluster_tls_key", "cluster_ca"])]
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "VIDPRESS_CLUSTER_TLS_KEY", requires_all = ["cluster_tls_cert", "cluster_ca"])]
    pub cluster_tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signs every node's certificates: peers
    /// must present one it signed, and node-to-node HTTPS is verified against it.
    #[arg(long, env = "VIDPRESS_CLUSTER_CA", requires_all = ["cluster_tls_cert", "cluster_tls_key"])]
    pub cluster_ca: Option<PathBuf>,
    /// Program run as the transcoder child [default: this executable].
    #[arg(long, env = "VIDPRESS_TRANSCODER", hide = true)]
    pub transcoder: Option<PathBuf>,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--queue-capacity must be at least 1")]
    QueueCapacity,
    #[error("--stall-timeout must be at least 1 second")]
    StallTimeout,
    #[error("--max-upload-bytes must be at least 1")]
    MaxUpload,
    #[error("--seeds, --cookie and --advertise need --cluster-listen")]
    ClusterListenMissing,
    #[error("a cluster needs a --cookie that its nodes share")]
    CookieMissing,
    #[error("a cluster needs each node to have its own --node-name")]
    NodeNameMissing,
    #[error("--failure-timeout-ms must be at least twice --heartbeat-ms")]
    FailureTimeout,
    #[error("--{0} must be at least 1")]
    AtLeastOne(&'static str),
    #[error("--http {0} is reachable from other machines: give --api-keys, or --open to serve it without keys")]
    OpenWithoutKeys(SocketAddr),
    #[error("--cluster-tls-cert, --cluster-tls-key and --cluster-ca need --cluster-listen")]
    ClusterTlsWithoutCluster,
    #[error("cannot find this executable to run the transcoder: {0}")]
    Executable(std::io::Error),
}

impl ServeConfig {
    /// Returns a configuration with every default, as `vidpress serve` alone.
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        Wrapper::parse_from(["vidpress"]).config
    }

    /// Checks settings that clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue_capacity == 0 {
            return Err(ConfigError::QueueCapacity);
        }
        if self.stall_timeout == 0 {
            return Err(ConfigError::StallTimeout);
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::MaxUpload);
        }
        for (flag, value) in [
            ("header-timeout", self.header_timeout),
            ("idle-timeout", self.idle_timeout),
            ("max-connections", self.max_connections as u64),
            ("max-pixels", self.max_pixels),
            ("max-duration-secs", self.max_duration_secs),
            ("max-child-memory-bytes", self.max_child_memory_bytes),
            ("segment-secs", self.segment_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::AtLeastOne(flag));
            }
        }
        if self.api_keys.is_none() && !self.open && !self.http.ip().is_loopback() {
            return Err(ConfigError::OpenWithoutKeys(self.http));
        }
        if self.cluster_listen.is_none() {
            if self.cluster_tls_cert.is_some() {
                return Err(ConfigError::ClusterTlsWithoutCluster);
            }
            if !self.seeds.is_empty() || self.cookie.is_some() || self.advertise.is_some() {
                return Err(ConfigError::ClusterListenMissing);
            }
            return Ok(());
        }
        if self.cookie.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::CookieMissing);
        }
        if self.node_name.is_none() {
            return Err(ConfigError::NodeNameMissing);
        }
        if self.heartbeat_ms == 0 || self.failure_timeout_ms < 2 * self.heartbeat_ms {
            return Err(ConfigError::FailureTimeout);
        }
        Ok(())
    }

    /// Returns the cluster settings, when this node is to join a cluster;
    /// `http` is the address the HTTP API is bound to, `tls` the cluster
    /// protocol's mutual TLS built from `--cluster-tls-*` and `--cluster-ca`.
    pub fn cluster(&self, http: SocketAddr, tls: Option<ClusterTls>) -> Option<ClusterConfig> {
        let listen = self.cluster_listen?;
        let advertise = self.advertise.clone().unwrap_or_else(|| listen.to_string());
        Some(ClusterConfig {
            node: self.node_name(),
            listen,
            http: self.http_url(http),
            advertise,
            seeds: self.seeds.clone(),
            cookie: self.cookie.clone().unwrap_or_default(),
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            failure_timeout: Duration::from_millis(self.failure_timeout_ms),
            tls,
        })
    }

    /// Returns the base URL other nodes reach this node's HTTP API at:
    /// `https://` when it is served over TLS.
    pub fn http_url(&self, http: SocketAddr) -> String {
        if let Some(url) = &self.advertise_http {
            return url.trim_end_matches('/').to_owned();
        }
        let host = match &self.advertise {
            Some(advertise) => advertise
                .rsplit_once(':')
                .map_or(advertise.as_str(), |(host, _)| host)
                .to_owned(),
            None => http.ip().to_string(),
        };
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}:{}", http.port())
    }

    /// Returns the node name, `node-1` unless set.
    pub fn node_name(&self) -> NodeName {
        self.node_name
            .clone()
            .unwrap_or_else(|| "node-1".parse().expect("a valid constant name"))
    }

    /// Returns the number of workers to start.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1)
        })
    }

    /// Returns the number of spare workers to start: one unless set, none
    /// on a node that runs no transcodes.
    pub fn spare_workers(&self) -> usize {
        self.spare_workers
            .unwrap_or(if self.workers() == 0 { 0 } else { 1 })
    }

    /// Returns how long videos are split, and from what length.
    pub fn split(&self) -> SplitPolicy {
        SplitPolicy {
            segment: Duration::from_secs(self.segment_secs),
            min_duration: Duration::from_secs(self.segment_min_secs),
        }
    }

    /// Returns the stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.stall_timeout)
    }

    /// Returns how long a client may take to send a request's headers.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout)
    }

    /// Returns how long an upload or a connection may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }

    /// Returns the program to run as the transcoder child.
    pub fn transcoder(&self) -> Result<PathBuf, ConfigError> {
        match &self.transcoder {
            Some(path) => Ok(path.clone()),
            None => std::env::current_exe().map_err(ConfigError::Executable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_nodes_reach_a_tls_api_over_https() {
        let bound: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let mut config = ServeConfig::defaults();
        config.advertise = Some("node-2:7000".into());
        assert_eq!(config.http_url(bound), "http://node-2:8443");
        config.tls_cert = Some("cert.pem".into());
        config.tls_key = Some("key.pem".into());
        assert_eq!(config.http_url(bound), "https://node-2:8443");
        config.advertise_http = Some("https://vidpress.example/".into());
        assert_eq!(config.http_url(bound), "https://vidpress.example");
    }

    #[test]
    fn a_node_without_workers_has_no_spare_unless_asked() {
        let mut config = ServeConfig::defaults();
        config.workers = Some(2);
        assert_eq!(config.spare_workers(), 1);
        config.workers = Some(0);
        assert_eq!(config.spare_workers(), 0);
        config.spare_workers = Some(3);
        assert_eq!(config.spare_workers(), 3);
    }
}
