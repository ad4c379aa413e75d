//! The HTTP layer: the axum router and its handlers, in front of the node's
//! Gateway actor. Handlers only talk to actors through [`Jobs`]; none of them
//! waits for a transcode.
//!
//! # Layout
//! - [`auth`]: API keys, tenants and who may see which job.
//! - [`jobs`]: submit, poll, list, cancel.
//! - [`files`]: a job's result and thumbnail.
//! - [`events`]: the WebSocket event stream.
//! - [`ws`]: the limits of a client's WebSocket (message size, pings, idle).
//! - [`upload`]: streaming an upload to disk.
//! - [`multipart`]: the guard on multipart part headers.
//! - [`listen`]: the accept loop and its connection limits.
//! - [`route`]: forwarding requests about jobs owned by other nodes.
//! - [`stops`]: where a request about a job not held here may be answered.
//! - [`standby_copy`]: a new job's input streamed to its standby during
//!   the upload.
//! - [`internal`]: node-to-node byte transfers.
//! - [`dto`]: the JSON documents.
//! - [`web`]: the web page at `/`.
//! - [`error`]: [`ApiError`](error::ApiError), the error document.
//! - [`metrics`]: `GET /metrics`.
//! - [`openapi`]: `GET /openapi.json`, generated from the handlers' annotations.

pub mod auth;
pub mod bridge;
pub mod dto;
pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod internal;
pub mod jobs;
pub mod listen;
pub mod long_poll;
pub mod metrics;
pub mod multipart;
pub mod openapi;
pub mod route;
pub mod standby_copy;
pub mod stops;
pub mod upload;
pub mod web;
pub mod ws;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{middleware, Json, Router};
use tokio::sync::watch;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use vidpress_actors::Jobs;
use vidpress_cluster::{ClusterView, MemberState, NodeName};

use self::dto::{ClusterDocument, Health, HealthDocument, NodeDocument};
use self::error::{ApiError, Unavailable};

/// What every handler needs, shared: axum clones the state for every
/// request and middleware, so it is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// The node's parts the HTTP layer uses.
pub struct App {
    pub jobs: Jobs,
    pub node: NodeName,
    /// `HOST:PORT` other nodes reach this node's cluster listener at;
    /// `None` for a node on its own.
    pub cluster_address: Option<Arc<str>>,
    /// Base URL of this node's HTTP API, as other nodes reach it.
    pub http_url: Arc<str>,
    /// Where uploads are written while they arrive.
    pub uploads_dir: Arc<PathBuf>,
    /// The node's data directory.
    pub data_dir: Arc<PathBuf>,
    pub max_upload_bytes: u64,
    /// Free space a submission must leave on the data directory's disk.
    pub min_free_bytes: u64,
    /// How long an upload or a WebSocket may send nothing.
    pub idle_timeout: std::time::Duration,
    /// The API keys, or `None` for an open node.
    pub keys: Option<Arc<auth::ApiKeys>>,
    /// Checks the cookie's signature on `/internal` requests (and holds the
    /// nonces seen); `None` for a node alone, which has no such routes.
    pub verifier: Option<Arc<crate::signing::Verifier>>,
    /// The client TLS of node-to-node requests (the WebSocket bridge).
    pub peer_tls: crate::tls::PeerTls,
    /// The membership view, when the node is in a cluster.
    pub cluster: Option<watch::Receiver<Arc<ClusterView>>>,
    /// Until then the view may still lack nodes (the node just joined): a
    /// job whose owner is not in it is not known to be missing.
    pub view_settles_at: std::time::Instant,
    /// Whether this node may have been found down while it did not run
    /// (its answers about its own jobs then wait on their standbys).
    pub lapses: Option<vidpress_cluster::Lapses>,
    /// Client for requests forwarded to other nodes.
    pub proxy: reqwest::Client,
    /// Node-to-node transfers: a new job's input streamed to its standby.
    pub transfer: Arc<crate::transfer::HttpTransfer>,
    /// How long a lost node's jobs take to be taken over, at most: the
    /// failure detector's timeout and the takeover. A standby answering from
    /// its copy asks the client back after it.
    pub takeover_within: std::time::Duration,
}

impl App {
    /// Returns the bounds on one upload.
    pub fn upload_limits(&self) -> upload::UploadLimits {
        upload::UploadLimits {
            max_bytes: self.max_upload_bytes,
            min_free_bytes: self.min_free_bytes,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Builds the router of the whole HTTP API.
pub fn router(state: AppState) -> Router {
    let mut job_routes = Router::new()
        .route("/jobs/{id}", get(jobs::status).delete(jobs::cancel))
        .route("/jobs/{id}/result", get(files::result))
        .route("/jobs/{id}/thumbnail", get(files::thumbnail))
        .route("/jobs/{id}/events", get(events::events));
    if state.cluster.is_some() {
        // Alone, a node holds every job it knows: nothing to forward.
        job_routes = job_routes.route_layer(middleware::from_fn_with_state(
            state.clone(),
            route::to_owner,
        ));
    }
    // With keys, these need one; the key is checked before a request is
    // forwarded to another node (which checks it again).
    let keyed_routes = Router::new()
        .route(
            "/jobs",
            get(jobs::list)
                .post(jobs::submit)
                // Uploads are bounded while streaming, by `max_upload_bytes`.
                .layer(DefaultBodyLimit::disable()),
        )
        .merge(job_routes)
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let mut router = Router::new()
        .merge(keyed_routes)
        .route("/", get(web::page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::openapi));
    if state.verifier.is_some() {
        let internal_routes = Router::new()
            .route("/internal/jobs/{id}/input", get(internal::input))
            .route(
                "/internal/jobs/{id}/attempts/{attempt}/output",
                put(internal::output).layer(DefaultBodyLimit::disable()),
            )
            .route("/internal/jobs/{id}/relinquish", post(internal::relinquish))
            .route("/internal/replicas/{id}", delete(internal::drop_copy))
            .route(
                "/internal/replicas/{id}/record",
                put(internal::replica_record),
            )
            .route(
                "/internal/replicas/{id}/{file}",
                put(internal::replica_file).layer(DefaultBodyLimit::disable()),
            )
            // Before any extractor reads the request.
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                internal::authorize,
            ));
        router = router.merge(internal_routes);
    }
    let idle_timeout = state.idle_timeout;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(metrics::track))
        // A body that sends nothing for this long ends in an error, which
        // the upload answers with 408 and its partial file removed.
        .layer(RequestBodyTimeoutLayer::new(idle_timeout))
        // A span per request (method, path), which the handlers' lines are
        // logged in; the requests themselves are logged at debug.
        // Its path only: a query may hold a WebSocket's access token.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        }))
        .with_state(state)
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "node",
    summary = "Liveness",
    responses((status = 200, description = "Alive", body = HealthDocument)),
)]
pub async fn healthz() -> Json<HealthDocument> {
    Json(HealthDocument { status: Health::Ok })
}

/// Ready when the node's gateway answers and the node is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "node",
    summary = "Readiness",
    description = "Ready when the node's gateway answers and the node is not shutting down.",
    responses(
        (status = 200, description = "The node takes work", body = HealthDocument),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.jobs.stats().await {
        Ok(stats) if !stats.draining => Json(HealthDocument {
            status: Health::Ready,
        })
        .into_response(),
        _ => ApiError::Unavailable.into_response(),
    }
}

/// `GET /cluster`: every known node, itself included, with its state and load.
#[utoipa::path(
    get,
    path = "/cluster",
    tag = "node",
    summary = "The cluster's nodes",
    description = "Every node this node knows, itself included, with its state and load. \
        Needs an admin key on a node with keys.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The nodes this node knows", body = ClusterDocument),
        (status = 401, response = error::NoKey),
        (status = 403, description = "The key is not an admin key", body = dto::ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn cluster(
    State(app): State<AppState>,
    caller: auth::Caller,
) -> Result<Json<ClusterDocument>, ApiError> {
    caller.require_admin()?;
    let stats = app.jobs.stats().await?;
    let mut nodes = vec![NodeDocument::new(
        &stats.node,
        app.cluster_address.as_deref(),
        &app.http_url,
        MemberState::Up,
        stats.load(),
    )];
    if let Some(view) = &app.cluster {
        let view = view.borrow().clone();
        for member in view.members.values().filter(|m| m.name != app.node) {
            nodes.push(NodeDocument::new(
                &member.name,
                Some(&member.address),
                &member.http,
                member.state,
                member.load,
            ));
        }
    }
    Ok(Json(ClusterDocument {
        this: app.node.to_string(),
        nodes,
    }))
}

async fn not_found() -> ApiError {
    ApiError::NoSuchEndpoint
}

/// Answers a method a route does not take (axum adds the `Allow` header).
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
