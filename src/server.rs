//! Runs a node: its actors and its HTTP listener, until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;
use vidpress_actors::{GatewayArgs, Jobs, Node};
use vidpress_transcode::driver::ChildCommand;

use crate::config::{ConfigError, ServeConfig};
use crate::http::{self, AppState};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Actors(#[from] vidpress_actors::StartError),
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// A node that is up: its actors and a bound listener, not yet serving.
pub struct Server {
    node: Node,
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Validates the settings, starts the actors and binds the HTTP address.
    pub async fn start(config: &ServeConfig) -> Result<Self, ServeError> {
        config.validate()?;
        let uploads_dir = config.data_dir.join("uploads");
        prepare_uploads(&uploads_dir).map_err(|source| ServeError::DataDir {
            path: uploads_dir.display().to_string(),
            source,
        })?;
        let node = vidpress_actors::start(GatewayArgs {
            node: config.node_name(),
            data_dir: config.data_dir.clone(),
            workers: config.workers(),
            queue_capacity: config.queue_capacity,
            command: ChildCommand {
                program: config.transcoder()?,
                args: vec![vidpress_transcode::child::SUBCOMMAND.into()],
            },
            stall_timeout: config.stall_timeout(),
            // Until nodes form clusters, each node is a cluster of its own; a
            // unique scope keeps nodes started in one process (tests) apart.
            scope: format!("vidpress.{}", uuid::Uuid::now_v7()),
        })
        .await?;
        let listener =
            TcpListener::bind(config.http)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.http,
                    source,
                })?;
        let local = listener.local_addr().map_err(ServeError::Http)?;
        let state = AppState {
            jobs: node.jobs(),
            node: config.node_name(),
            address: config
                .advertise
                .clone()
                .unwrap_or_else(|| local.to_string())
                .into(),
            uploads_dir: Arc::new(uploads_dir),
            max_upload_bytes: config.max_upload_bytes,
        };
        Ok(Self {
            node,
            listener,
            state,
        })
    }

    /// Returns the address the HTTP API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Returns the node's HTTP API, for tests that drive it without a socket.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Returns the handle on this node's jobs.
    pub fn jobs(&self) -> Jobs {
        self.state.jobs.clone()
    }

    /// Serves HTTP until `shutdown` completes, then stops the actors.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        info!(node = %self.state.node, http = %self.local_addr(), "node serving");
        let app = http::router(self.state);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.node.stop().await;
        served.map_err(ServeError::Http)
    }
}

/// Creates the uploads folder and removes uploads a previous run left half-done.
fn prepare_uploads(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let _ = std::fs::remove_file(entry?.path());
    }
    Ok(())
}
