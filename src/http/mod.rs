//! The HTTP layer: the axum router and its handlers, in front of the node's
//! Gateway actor. Handlers only talk to actors through [`Jobs`]; none of them
//! waits for a transcode.
//!
//! # Layout
//! - [`jobs`]: submit, poll, list, cancel, download.
//! - [`events`]: the WebSocket event stream.
//! - [`upload`]: streaming an upload to disk.
//! - [`route`]: forwarding requests about jobs owned by other nodes.
//! - [`internal`]: node-to-node byte transfers.
//! - [`dto`]: the JSON documents.
//! - [`web`]: the web page at `/`.
//! - [`error`]: [`ApiError`](error::ApiError), the error document.

pub mod dto;
pub mod error;
pub mod events;
pub mod internal;
pub mod jobs;
pub mod metrics;
pub mod route;
pub mod upload;
pub mod web;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{middleware, Json, Router};
use serde_json::json;
use tokio::sync::watch;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};
use tracing::Level;
use vidpress_actors::Jobs;
use vidpress_cluster::ClusterView;
use vidpress_cluster::NodeName;

use self::error::ApiError;

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
    /// The address other nodes and clients know this node by.
    pub address: Arc<str>,
    /// Where uploads are written while they arrive.
    pub uploads_dir: Arc<PathBuf>,
    /// The node's data directory.
    pub data_dir: Arc<PathBuf>,
    pub max_upload_bytes: u64,
    /// The cluster cookie, required on `/internal` requests.
    pub cookie: Option<Arc<str>>,
    /// The membership view, when the node is in a cluster.
    pub cluster: Option<watch::Receiver<Arc<ClusterView>>>,
    /// Until then the view may still lack nodes (the node just joined): a
    /// job whose owner is not in it is not known to be missing.
    pub view_settles_at: std::time::Instant,
    /// Client for requests forwarded to other nodes.
    pub proxy: reqwest::Client,
}

/// Builds the router of the whole HTTP API.
pub fn router(state: AppState) -> Router {
    let mut job_routes = Router::new()
        .route("/jobs/{id}", get(jobs::status).delete(jobs::cancel))
        .route("/jobs/{id}/result", get(jobs::result))
        .route("/jobs/{id}/events", get(events::events));
    if state.cluster.is_some() {
        // Alone, a node holds every job it knows: nothing to forward.
        job_routes = job_routes.route_layer(middleware::from_fn_with_state(
            state.clone(),
            route::to_owner,
        ));
    }
    let mut router = Router::new()
        .route(
            "/jobs",
            get(jobs::list)
                .post(jobs::submit)
                // Uploads are bounded while streaming, by `max_upload_bytes`.
                .layer(DefaultBodyLimit::disable()),
        )
        .merge(job_routes)
        .route("/", get(web::page))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.cookie.is_some() {
        router = router
            .route("/internal/jobs/{id}/input", get(internal::input))
            .route(
                "/internal/jobs/{id}/attempts/{attempt}/output",
                put(internal::output).layer(DefaultBodyLimit::disable()),
            )
            .route("/internal/jobs/{id}/relinquish", post(internal::relinquish))
            .route(
                "/internal/replicas/{id}/record",
                put(internal::replica_record),
            )
            .route(
                "/internal/replicas/{id}/{file}",
                put(internal::replica_file).layer(DefaultBodyLimit::disable()),
            );
    }
    router
        .fallback(not_found)
        .route_layer(middleware::from_fn(metrics::track))
        // A span per request (method, path), which the handlers' lines are
        // logged in; the requests themselves are logged at debug.
        .layer(TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().level(Level::INFO)))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the node's gateway answers and the node is not shutting down.
async fn readyz(State(app): State<AppState>) -> Response {
    match app.jobs.stats().await {
        Ok(stats) if !stats.draining => Json(json!({"status": "ready"})).into_response(),
        _ => ApiError::Unavailable.into_response(),
    }
}

/// `GET /cluster`: every known node, itself included, with its state and load.
async fn cluster(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let stats = app.jobs.stats().await?;
    let mut nodes = vec![json!({
        "name": stats.node.as_str(),
        "address": &*app.address,
        "state": "up",
        "workers": stats.workers,
        "busy": stats.busy,
        "queued": stats.queued,
    })];
    if let Some(view) = &app.cluster {
        let view = view.borrow().clone();
        for member in view.members.values().filter(|m| m.name != app.node) {
            nodes.push(json!({
                "name": member.name.as_str(),
                "address": member.address,
                "state": member.state.as_str(),
                "workers": member.load.workers,
                "busy": member.load.busy,
                "queued": member.load.queued,
            }));
        }
    }
    Ok(Json(json!({"self": app.node.as_str(), "nodes": nodes})))
}

async fn not_found() -> Response {
    let body = json!({"error": {"code": "not_found", "message": "no such endpoint"}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
