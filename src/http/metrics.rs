//! `GET /metrics` in the Prometheus text format, through the `metrics`
//! facade and its Prometheus exporter. Counters and histograms are recorded
//! where things happen (requests here, job ends in the supervisor); gauges
//! (jobs by status, queue, worker slots, cluster) are read at each scrape
//! from the gateway and the membership view.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use vidpress_cluster::MemberState;

use super::auth::Caller;
use super::error::{ApiError, Unavailable};
use super::AppState;

/// Histogram buckets of every `*_seconds` metric: request latencies from a
/// millisecond, transcodes up to an hour.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// How often histogram samples are folded into their buckets between
/// scrapes (the exporter keeps raw samples until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use (a process
/// has one recorder, shared by every node it runs, as tests do), with its
/// upkeep task. Call it inside the runtime.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed: render an empty registry.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            let upkept = handle.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    every.tick().await;
                    upkept.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// Counts every request and times it, by method, route and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    // The route's pattern, not the path: job IDs would make a series each.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (count, latency) = request_series(method, route, response.status().as_u16());
    latency.record(started.elapsed().as_secs_f64());
    count.increment(1);
    response
}

/// The request counter and latency histogram of one method, route and
/// status, registered with the recorder once: looking them up by their
/// labels at every request cost a tenth of a poll's time.
fn request_series(method: &'static str, route: &str, status: u16) -> (Counter, Histogram) {
    type Series = HashMap<String, HashMap<(&'static str, u16), (Counter, Histogram)>>;
    static SERIES: OnceLock<RwLock<Series>> = OnceLock::new();
    let series = SERIES.get_or_init(RwLock::default);
    let known = series
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(|by_status| by_status.get(&(method, status)).cloned());
    known.unwrap_or_else(|| {
        let (route_label, status_label) = (route.to_owned(), status.to_string());
        let handles = (
            metrics::counter!("vidpress_http_requests_total", "method" => method, "route" => route_label.clone(), "status" => status_label),
            metrics::histogram!("vidpress_http_request_duration_seconds", "method" => method, "route" => route_label),
        );
        series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route.to_owned())
            .or_default()
            .insert((method, status), handles.clone());
        handles
    })
}

/// The counter of WebSocket events sent, registered once (it counts every
/// delivery of a fan-out).
pub fn events_sent() -> &'static Counter {
    static EVENTS_SENT: OnceLock<Counter> = OnceLock::new();
    EVENTS_SENT.get_or_init(|| metrics::counter!("vidpress_ws_events_sent_total"))
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    summary = "Prometheus metrics",
    description = "Needs an admin key on a node with keys.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4",
            content_type = "text/plain", body = String),
        (status = 401, response = super::error::NoKey),
        (status = 403, description = "The key is not an admin key",
            body = super::dto::ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn metrics(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let stats = app.jobs.stats().await?;
    for (status, count) in &stats.jobs {
        metrics::gauge!("vidpress_jobs", "status" => status.as_str()).set(*count as f64);
    }
    metrics::gauge!("vidpress_queue_depth").set(stats.queued as f64);
    let mut slots = vec![(
        stats.node.to_string(),
        stats.workers as f64,
        stats.busy as f64,
    )];
    if let Some(view) = &app.cluster {
        let view = view.borrow().clone();
        let others = || view.members.values().filter(|m| m.name != app.node);
        for state in [MemberState::Up, MemberState::Suspect, MemberState::Down] {
            // This node counts itself up.
            let count = others().filter(|m| m.state == state).count()
                + usize::from(state == MemberState::Up);
            metrics::gauge!("vidpress_cluster_nodes", "state" => state.as_str()).set(count as f64);
        }
        for member in others() {
            let node = member.name.to_string();
            if let Some(rtt) = member.rtt {
                metrics::gauge!("vidpress_heartbeat_rtt_seconds", "peer" => node.clone())
                    .set(rtt.as_secs_f64());
            }
            // A node marked down has no slot to offer, whatever it last said.
            let (workers, busy) = match member.state {
                MemberState::Down => (0.0, 0.0),
                _ => (member.load.workers.into(), member.load.busy.into()),
            };
            slots.push((node, workers, busy));
        }
    }
    for (node, workers, busy) in slots {
        let free = (workers - busy).max(0.0);
        metrics::gauge!("vidpress_worker_slots", "node" => node.clone(), "state" => "busy")
            .set(busy);
        metrics::gauge!("vidpress_worker_slots", "node" => node, "state" => "free").set(free);
    }
    let handle = handle();
    handle.run_upkeep();
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    Ok(([(header::CONTENT_TYPE, content_type)], handle.render()).into_response())
}
