//! [`ServeConfig`]: every setting of `vidpress serve`, from flags or
//! `VIDPRESS_*` environment variables, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vidpress_cluster::NodeName;

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
    /// Largest upload accepted, in bytes.
    #[arg(long, env = "VIDPRESS_MAX_UPLOAD_BYTES", default_value_t = 4 << 30)]
    pub max_upload_bytes: u64,
    /// Jobs that may wait for a worker before submissions get 503.
    #[arg(long, env = "VIDPRESS_QUEUE_CAPACITY", default_value_t = 1000)]
    pub queue_capacity: usize,
    /// Seconds a transcoder may stay silent before it is killed as hung.
    #[arg(long, env = "VIDPRESS_STALL_TIMEOUT", default_value_t = 120)]
    pub stall_timeout: u64,
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
    #[error("multi-node clusters (--cluster-listen, --advertise, --seeds, --cookie) are not supported by this build yet")]
    ClusterUnsupported,
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
        if self.cluster_listen.is_some() || !self.seeds.is_empty() || self.cookie.is_some() {
            return Err(ConfigError::ClusterUnsupported);
        }
        Ok(())
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

    /// Returns the stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.stall_timeout)
    }

    /// Returns the program to run as the transcoder child.
    pub fn transcoder(&self) -> Result<PathBuf, ConfigError> {
        match &self.transcoder {
            Some(path) => Ok(path.clone()),
            None => std::env::current_exe().map_err(ConfigError::Executable),
        }
    }
}
