//! Any node answers for any job: requests about a job this node does not own
//! are forwarded to its owner, found from the tag in the job ID and the
//! membership view (no node is asked who owns what), or to its standby
//! while the owner is lost. HTTP requests are streamed through; a WebSocket
//! is bridged frame by frame (`bridge`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tracing::debug;
use vidpress_actors::JobId;
use vidpress_cluster::{ClusterView, Lapses};

use super::bridge;
use super::error::ApiError;
use super::stops::{
    others_up, standby_of, stops, until_lost, Ask, Stop, Target, FORWARDED, IF_HELD, MAX_HOPS,
};
use super::AppState;

/// Headers that belong to one connection and are not passed on.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Middleware on `/jobs/{id}…`: serves jobs held here, forwards the others
/// to the node that holds them. When their owner does not answer (it is
/// lost, or cut off) the request goes on to their standby, which answers
/// from its copy until it has taken the job over (DESIGN.md, invariant 7).
pub async fn to_owner(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = &app.cluster else {
        return next.run(request).await;
    };
    let Some(id) = job_id(request.uri().path()) else {
        return next.run(request).await;
    };
    let hops = request
        .headers()
        .get(&FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(0);
    let held = app.jobs.is_local(id);
    let ask = Ask::of(&request).filter(|_| hops > 0);
    let asked_if_held = ask.is_some();
    if let (Some(ask), false) = (ask, held) {
        // Asked by an owner in doubt (it answers itself, as this node did
        // not take the job over), or by a node the job moved on from.
        if ask == Ask::HeldOrCopy && app.jobs.standby_copy(id).is_some() {
            return next.run(request).await;
        }
        return StatusCode::MISDIRECTED_REQUEST.into_response();
    }
    let is_websocket = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    // Forwarded here or not (another node may see this one up again
    // before this one learns its job was taken over); never when asked by
    // an owner in doubt itself, which would ask back.
    if held
        && !asked_if_held
        && !is_websocket
        && !has_body(request.method())
        && app.lapses.as_ref().is_some_and(Lapses::in_doubt)
    {
        let (parts, body) = request.into_parts();
        if let Some(answer) = ask_taker(&app, cluster, id, &parts).await {
            return answer;
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    if held || hops >= MAX_HOPS {
        return next.run(request).await;
    }
    let view = cluster.borrow().clone();
    let settled = std::time::Instant::now() >= app.view_settles_at;
    let stops = stops(&view, id, hops, settled);
    // A WebSocket is bridged to a node its ID names, or, when none is up
    // and this node could only refuse it (it is not the last resort, or
    // gave the job up, and holds no copy), to whichever node holds it.
    let bridged = || {
        let last_resort = stops.contains(&Stop::Here) && !app.jobs.gave_up(id);
        stops.iter().any(|s| matches!(s, Stop::At(_)))
            || (hops == 0 && !last_resort && app.jobs.standby_copy(id).is_none())
    };
    if is_websocket && bridged() {
        return bridge::bridge(app.clone(), id, request, hops + 1)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    let mut refused = None;
    for stop in stops {
        match stop {
            // Given up here to a node that holds it now: the others are
            // asked below, not this node's handler, which can only say so.
            Stop::Here if app.jobs.gave_up(id) => {}
            Stop::Here => {
                let body = body.take().unwrap_or_else(Body::empty);
                return next.run(Request::from_parts(parts, body)).await;
            }
            Stop::Copy if app.jobs.standby_copy(id).is_some() => {
                let body = body.take().unwrap_or_else(Body::empty);
                return next.run(Request::from_parts(parts, body)).await;
            }
            Stop::Copy => {}
            Stop::At(target) => {
                let forwarded = forward_http(&app, &target, &parts, body.take(), hops + 1, None);
                match until_lost(cluster, &target.node, forwarded).await {
                    // The job moved on from a node its ID names, which
                    // forgot it; this node, with a copy or having held
                    // the job, knows better.
                    Some(Ok(response))
                        if response.status() == StatusCode::NOT_FOUND
                            && (app.jobs.gave_up(id) || app.jobs.standby_copy(id).is_some()) => {}
                    Some(Ok(response)) if response.status() != StatusCode::SERVICE_UNAVAILABLE => {
                        return response
                    }
                    // Cut off, or draining: the next stop may answer.
                    Some(Ok(response)) => refused = Some(response),
                    Some(Err(_)) => {}
                    None => {
                        debug!(job_id = %id, node = %target.node, "no answer before it was suspected")
                    }
                }
            }
        }
    }
    if hops == 0 && !is_websocket && !has_body(&parts.method) {
        // Neither node its ID names holds it: it may have moved on, taken
        // over by a node its ID does not name (a taker's own standby), or
        // be about to be, by a node that holds a copy.
        let others = others_up(&cluster.borrow());
        for ask in [Ask::Held, Ask::HeldOrCopy] {
            for node in &others {
                if let Some(answer) = ask_if(&app, cluster, id, &parts, node, ask).await {
                    return answer;
                }
            }
        }
    }
    if app.jobs.standby_copy(id).is_some() {
        // This node stands by for a node its ID does not name, which is
        // lost: it answers from its copy until it takes the job over.
        let body = body.take().unwrap_or_else(Body::empty);
        return next.run(Request::from_parts(parts, body)).await;
    }
    debug!(job_id = %id, "no reachable node holds the job");
    refused.unwrap_or_else(|| ApiError::OwnerUnavailable.into_response())
}

/// Asks the standby of a job this node owns, while this node is in doubt
/// (it did not run for a while: see [`Lapses`]), whether it took the job
/// over meanwhile; returns its answer if it did. Until the two copies are
/// compared, this node's own is stale, and answering from it would show a
/// client an attempt older than the one it saw running there.
async fn ask_taker(
    app: &AppState,
    cluster: &watch::Receiver<Arc<ClusterView>>,
    id: JobId,
    parts: &Parts,
) -> Option<Response> {
    let standby = standby_of(&cluster.borrow(), id)?;
    ask_if(app, cluster, id, parts, &standby, Ask::Held).await
}

/// Sends `node` the request, to be answered only from what `ask` says;
/// returns its answer if it has that.
async fn ask_if(
    app: &AppState,
    cluster: &watch::Receiver<Arc<ClusterView>>,
    id: JobId,
    parts: &Parts,
    node: &Target,
    ask: Ask,
) -> Option<Response> {
    let asked = forward_http(app, node, parts, None, MAX_HOPS, Some(ask));
    match until_lost(cluster, &node.node, asked).await {
        Some(Ok(answer))
            if answer.status() != StatusCode::MISDIRECTED_REQUEST
                && !answer.status().is_server_error() =>
        {
            debug!(job_id = %id, node = %node.node, "asked: it holds the job");
            Some(answer)
        }
        _ => None,
    }
}

/// Returns whether requests of `method` carry a body (none of those about a
/// job does: polls, downloads, cancels).
fn has_body(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::DELETE)
}

/// Returns the job ID in a `/jobs/{id}…` path.
fn job_id(path: &str) -> Option<JobId> {
    path.strip_prefix("/jobs/")?.split('/').next()?.parse().ok()
}

async fn forward_http(
    app: &AppState,
    target: &Target,
    parts: &Parts,
    body: Option<Body>,
    hops: u8,
    ask: Option<Ask>,
) -> Result<Response, ApiError> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = body.unwrap_or_else(Body::empty);
    let mut outgoing = app
        .proxy
        .request(parts.method.clone(), format!("{}{path}", target.http))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(name) && *name != FORWARDED && *name != IF_HELD {
            outgoing = outgoing.header(name, value);
        }
    }
    if let Some(ask) = ask {
        outgoing = outgoing.header(&IF_HELD, ask.value());
    }
    let response = outgoing
        .header(&FORWARDED, hops.to_string())
        .send()
        .await
        .map_err(|e| {
            // Without the URL: its query may hold a token.
            debug!(node = %target.node, error = %e.without_url(), "forward failed");
            ApiError::OwnerUnavailable
        })?;
    let mut builder = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if !HOP_BY_HOP.contains(name) {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(Body::from_stream(response.bytes_stream()))
        .map_err(|e| ApiError::Internal(format!("cannot build forwarded response: {e}")))
}
