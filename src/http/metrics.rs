//! `GET /metrics` in the Prometheus text format, through the `metrics`
//! facade and its Prometheus exporter. Counters and histograms are recorded
//! where things happen (requests here, job ends in the supervisor); gauges
//! (jobs by status, queue, worker slots, cluster) are read at each scrape
//! from the gateway and the membership view.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use vidpress_cluster::MemberState;

use super::error::ApiError;
use super::AppState;

/// Histogram buckets of every `*_seconds` metric: request latencies from a
/// millisecond, transcodes up to an hour.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// The process's Prometheus recorder, installed on first use (a process
/// has one recorder, shared by every node it runs, as tests do).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed: render an empty registry.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Counts every request and times it, by method, route and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    // The route's pattern, not the path: job IDs would make a series each.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!("vidpress_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(seconds);
    metrics::counter!("vidpress_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
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
            slots.push((node, member.load.workers.into(), member.load.busy.into()));
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
