//! Runs a node: its cluster membership, its actors and its HTTP listener,
//! until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};
use vidpress_actors::{ClusterLink, GatewayArgs, Jobs, Node};
use vidpress_cluster::{Cluster, MemberEvent, NodeLoad};
use vidpress_transcode::driver::ChildCommand;

use crate::config::{ConfigError, ServeConfig};
use crate::http::auth::{ApiKeys, KeyFileError};
use crate::http::listen::{self, ConnLimits};
use crate::http::{self, App, AppState};
use crate::signing::Verifier;
use crate::tls::{self, ClusterIdentity, PeerTls, TlsError};
use crate::transfer::HttpTransfer;

/// How long a takeover takes once the owner is marked down, at most, as
/// measured on loopback and in the Docker fault suite (well under a second).
const TAKEOVER: Duration = Duration::from_secs(1);
/// The process-group scope shared by the nodes of a cluster.
const CLUSTER_SCOPE: &str = "vidpress";

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
    Cluster(#[from] vidpress_cluster::ClusterError),
    #[error(transparent)]
    Actors(#[from] vidpress_actors::StartError),
    #[error(transparent)]
    Keys(#[from] KeyFileError),
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot build the client of node-to-node requests: {0}")]
    PeerClient(reqwest::Error),
}

/// A node that is up: membership, actors and a bound listener, not yet serving.
pub struct Server {
    node: Node,
    cluster: Option<Cluster>,
    listener: TcpListener,
    state: AppState,
    drain_timeout: Duration,
    limits: ConnLimits,
    /// The HTTP API's TLS, when it has one.
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Validates the settings, binds the HTTP address, joins the cluster (if
    /// configured) and starts the actors.
    pub async fn start(config: &ServeConfig) -> Result<Self, ServeError> {
        config.validate()?;
        let keys = match &config.api_keys {
            Some(path) => {
                let keys = Arc::new(ApiKeys::load(path)?);
                tokio::spawn(reload_on_hangup(keys.clone()));
                Some(keys)
            }
            None => None,
        };
        // Installed before anything is counted: the facade drops what comes
        // before a recorder.
        crate::http::metrics::handle();
        owner_only(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let uploads_dir = config.data_dir.join("uploads");
        prepare_uploads(&uploads_dir).map_err(|source| ServeError::DataDir {
            path: uploads_dir.display().to_string(),
            source,
        })?;
        let open_files = listen::raise_open_files_limit();
        let configured = ConnLimits {
            header_timeout: config.header_timeout(),
            max_connections: config.max_connections,
        };
        let limits = configured.fitted(open_files);
        listen::log_cap(config.max_connections, limits, open_files);
        let listener =
            TcpListener::bind(config.http)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.http,
                    source,
                })?;
        let local = listener.local_addr().map_err(ServeError::Http)?;
        let http = config.http_url(local);
        let http_tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::http_server(cert, key)?)),
            _ => None,
        };
        let identity = match (
            &config.cluster_tls_cert,
            &config.cluster_tls_key,
            &config.cluster_ca,
        ) {
            (Some(cert), Some(key), Some(ca)) => Some(ClusterIdentity::load(cert, key, ca)?),
            _ => None,
        };
        let peer_tls = tls::peer_client(identity.as_ref())?;
        let cluster_tls = identity
            .as_ref()
            .map(ClusterIdentity::cluster_tls)
            .transpose()?;

        let cluster_config = config.cluster(local, cluster_tls);
        let cluster_address = cluster_config.as_ref().map(|c| c.advertise.clone());
        let http_url = http.clone();
        let (cluster, link, scope) = match cluster_config {
            Some(cluster_config) => {
                let (load_tx, load_rx) = watch::channel(NodeLoad::default());
                let cluster = Cluster::join(cluster_config, load_rx).await?;
                let link = ClusterLink {
                    view: cluster.view(),
                    load: Arc::new(load_tx),
                    rejoin_window: vidpress_cluster::REDIAL_MAX
                        + Duration::from_millis(config.failure_timeout_ms),
                };
                (Some(cluster), Some(link), CLUSTER_SCOPE.to_owned())
            }
            // A node on its own is a cluster of its own; a unique scope keeps
            // nodes started in one process (tests) apart.
            None => (None, None, format!("vidpress.{}", uuid::Uuid::now_v7())),
        };
        let cookie = config.cookie.clone().unwrap_or_default();
        let verifier = config.cookie.as_deref().map(|c| Arc::new(Verifier::new(c)));
        // Other nodes close a keep-alive connection idle for their header
        // timeout (the same as this node's, in one deployment): a client
        // here lets go of it well before.
        let pool_idle = config.header_timeout() / 2;
        let transfer = Arc::new(
            HttpTransfer::new(&cookie, peer_tls.clone(), pool_idle)
                .map_err(ServeError::PeerClient)?,
        );
        let node = vidpress_actors::start(GatewayArgs {
            node: config.node_name(),
            data_dir: config.data_dir.clone(),
            workers: config.workers(),
            spare_workers: config.spare_workers(),
            queue_capacity: config.queue_capacity,
            tenant_max_active: config.tenant_max_active,
            command: ChildCommand {
                program: config.transcoder()?,
                args: vec![vidpress_transcode::child::SUBCOMMAND.into()],
            },
            stall_timeout: config.stall_timeout(),
            limits: vidpress_transcode::Limits {
                max_pixels: config.max_pixels,
                max_duration_secs: config.max_duration_secs,
                max_memory_bytes: config.max_child_memory_bytes,
                ..Default::default()
            },
            scope,
            retention: Duration::from_secs(config.retention_secs),
            http,
            transfer: transfer.clone(),
            cluster: link.clone(),
            split: config.split(),
        })
        .await?;
        if let Some(cluster) = &cluster {
            tokio::spawn(forward_member_events(cluster.events(), node.jobs()));
        }
        let state = AppState::new(App {
            jobs: node.jobs(),
            node: config.node_name(),
            cluster_address: cluster_address.map(Into::into),
            http_url: http_url.into(),
            uploads_dir: Arc::new(uploads_dir),
            data_dir: Arc::new(config.data_dir.clone()),
            max_upload_bytes: config.max_upload_bytes,
            min_free_bytes: config.min_free_bytes,
            idle_timeout: config.idle_timeout(),
            keys,
            verifier,
            peer_tls: PeerTls(peer_tls.clone()),
            cluster: link.map(|l| l.view),
            lapses: cluster.as_ref().map(Cluster::lapses),
            // Joins are transitive and answered within a heartbeat or two;
            // by a failure timeout every live node has been heard of.
            view_settles_at: std::time::Instant::now()
                + 2 * Duration::from_millis(config.failure_timeout_ms),
            proxy: reqwest::Client::builder()
                .use_preconfigured_tls(Arc::unwrap_or_clone(peer_tls.clone()))
                .connect_timeout(Duration::from_secs(2))
                .pool_idle_timeout(pool_idle)
                .build()
                .map_err(ServeError::PeerClient)?,
            takeover_within: Duration::from_millis(config.failure_timeout_ms) + TAKEOVER,
            transfer,
        });
        Ok(Self {
            node,
            cluster,
            listener,
            state,
            drain_timeout: Duration::from_secs(config.drain_timeout),
            limits,
            tls: http_tls,
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

    /// Serves HTTP until `shutdown` completes, then drains: takes no new
    /// jobs, lets workers elsewhere take the queued ones and keeps answering
    /// until this node's jobs are done or the drain timeout passes; then
    /// stops the actors and leaves the cluster.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        info!(node = %self.state.node, http = %self.local_addr(), "node serving");
        let jobs = self.state.jobs.clone();
        let drain_timeout = self.drain_timeout;
        let drained = async move {
            shutdown.await;
            drain(&jobs, drain_timeout).await;
        };
        let app = http::router(self.state);
        listen::serve(self.listener, app, self.limits, self.tls, drained).await;
        self.node.stop().await;
        if let Some(cluster) = self.cluster {
            cluster.leave().await;
        }
        Ok(())
    }
}

/// Waits, up to `timeout`, until the node owns no unfinished job, its
/// workers (spares too) are idle and the standbys that are up hold the latest records of
/// its jobs (so no finished job is run again by a standby after the stop).
async fn drain(jobs: &Jobs, timeout: Duration) {
    jobs.drain();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match jobs.stats().await {
            Ok(stats)
                if stats.active == 0
                    && stats.busy + stats.spare_busy == 0
                    && stats.unsynced == 0 =>
            {
                info!("drained");
                return;
            }
            Ok(stats) if tokio::time::Instant::now() >= deadline => {
                warn!(
                    active = stats.active,
                    busy = stats.busy + stats.spare_busy,
                    unsynced = stats.unsynced,
                    "drain timeout: stopping with unfinished jobs"
                );
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells the gateway about nodes that went down (their attempts run
/// elsewhere, their jobs are taken over), came back (jobs taken over from
/// them are relinquished there) or restarted (both), and about this node's
/// own stalls (its jobs may have been taken over meanwhile).
async fn forward_member_events(mut events: broadcast::Receiver<MemberEvent>, jobs: Jobs) {
    loop {
        match events.recv().await {
            Ok(MemberEvent::Down(node)) => jobs.node_down(node),
            Ok(MemberEvent::Restarted(node)) => {
                jobs.node_down(node.clone());
                jobs.node_up(node);
            }
            Ok(MemberEvent::Up(node)) => jobs.node_up(node),
            Ok(MemberEvent::Stalled(_)) => jobs.stalled(),
            Ok(MemberEvent::Suspect(_)) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "membership events lagged");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads the API key file again on every SIGHUP; a file that cannot be
/// used is logged and the keys stay as they were.
async fn reload_on_hangup(keys: Arc<ApiKeys>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            warn!(error = %e, "cannot watch for SIGHUP: the API keys are read once");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match keys.reload() {
            Ok(count) => info!(keys = count, "API keys read again"),
            Err(e) => warn!(error = %e, "API keys not read again; the previous ones stay"),
        }
    }
}

/// Makes every file and folder the node creates from now on readable by
/// its user only (umask 077: files 0600, folders 0700; the transcoder
/// children inherit it), and closes the data directory to other users.
fn owner_only(data_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(data_dir)?;
    // A folder another user owns stays as it is: the node's files in it
    // are still its own only.
    if let Err(e) = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)) {
        warn!(path = %data_dir.display(), error = %e, "cannot make the data directory owner-only");
    }
    Ok(())
}

/// Creates the uploads folder and removes uploads a previous run left half-done.
fn prepare_uploads(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let _ = std::fs::remove_file(entry?.path());
    }
    Ok(())
}
