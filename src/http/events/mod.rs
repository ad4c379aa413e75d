//! `GET /jobs/{id}/events`: a job's events over a WebSocket.
//!
//! The stream logic ([`stream_events`]) is generic over `Sink`/`Stream`, so it
//! is tested without a socket; the handler only upgrades and plugs it in.
//!
//! A subscriber costs the node little and not for ever: its socket is held
//! to the limits of [`super::ws`].

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;
use tracing::debug;
use vidpress_actors::{Seq, Subscription};

use super::auth::Caller;
use super::dto::ErrorBody;
use super::error::{ApiError, Unavailable, UnknownJob};
use super::extract::{Explained, JobPath, Params};
use super::jobs::{held, Held};
use super::ws::{bounded, ReadError};
use super::AppState;

mod stream;

use stream::close;
pub use stream::stream_events;

/// Close code when the job is moving to another node (its owner lost, the
/// takeover not done in time): RFC 6455's "service restart", which asks the
/// client to reconnect (with `since`).
pub const MOVING: u16 = 1012;
/// A subscriber to a job whose takeover is under way waits for it up to
/// this many times the expected takeover time.
const TAKEOVER_WAITS: u32 = 3;
/// How often a subscriber waiting for a takeover looks for it.
const TAKEOVER_POLL: Duration = Duration::from_millis(100);

/// Upgrades to a WebSocket after checking the job exists (404 otherwise)
/// and `since`; a request that is no WebSocket handshake is told so after
/// those checks, with the error document.
#[utoipa::path(
    get,
    path = "/jobs/{id}/events",
    tag = "jobs",
    summary = "Subscribe to a job's events (WebSocket)",
    description = "A WebSocket handshake (RFC 6455). After the upgrade the server sends text \
        frames, each an `EventDocument`: a `snapshot` first, then `progress` (at most every \
        250 ms) and `status` on every state change, the terminal one last, then a normal \
        close (1000). The key, the job and `since` are checked before the upgrade; a browser, \
        which cannot set `Authorization` on a WebSocket, gives the key as `access_token`.",
    security(("bearer" = [])),
    params(JobPath, EventsQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; frames are \
            `EventDocument`s"),
        (status = 400, description = "A bad `since`, or not a WebSocket handshake",
            body = ErrorBody),
        (status = 401, response = super::error::NoKey),
        (status = 404, response = UnknownJob),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn events(
    State(app): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    Params(EventsQuery { since, .. }): Params<EventsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let since = since.map(Seq::new);
    let subscription = match held(&app, &caller, id)? {
        Held::Here(_) => Some(app.jobs.subscribe(id, since).await?),
        // The owner is lost and this node is taking the job over: the stream
        // starts once it has, after `since` (see `taken_over`).
        Held::Copy(_) => None,
    };
    let upgrade = upgrade?;
    let jobs = app.jobs.clone();
    let takeover_within = app.takeover_within;
    let local = app.jobs.clone();
    let resubscribe = move |since| {
        let jobs = jobs.clone();
        async move {
            jobs.subscribe(id, since)
                .await
                .inspect_err(|e| debug!(job_id = %id, error = %e, "resubscribe failed"))
                .ok()
        }
    };
    let idle = app.idle_timeout;
    Ok(
        bounded(upgrade).on_upgrade(move |mut socket: WebSocket| async move {
            let subscription = match subscription {
                Some(subscription) => subscription,
                None => match taken_over(&local, id, since, TAKEOVER_WAITS * takeover_within).await
                {
                    Some(subscription) => subscription,
                    None => {
                        // Not taken over (its owner is back, or still to be
                        // marked down): the client asks again, with `since`.
                        close(&mut socket, MOVING).await;
                        return;
                    }
                },
            };
            let subscribers = metrics::gauge!("vidpress_ws_subscribers");
            subscribers.increment(1);
            let (sink, stream) = socket.split();
            let stream = stream.map(|message| message.map_err(ReadError::from_axum));
            stream_events(sink, stream, subscription, resubscribe, idle).await;
            subscribers.decrement(1);
        }),
    )
}

/// Waits (at most `limit`) for this node to take over a job it holds a copy
/// of, then subscribes to it after `since`.
async fn taken_over(
    jobs: &vidpress_actors::Jobs,
    id: vidpress_actors::JobId,
    since: Option<Seq>,
    limit: Duration,
) -> Option<Subscription> {
    let deadline = tokio::time::Instant::now() + limit;
    while !jobs.is_local(id) {
        if tokio::time::Instant::now() >= deadline {
            debug!(job_id = %id, "not taken over in time; the subscriber asks again");
            return None;
        }
        tokio::time::sleep(TAKEOVER_POLL).await;
    }
    jobs.subscribe(id, since)
        .await
        .inspect_err(|e| debug!(job_id = %id, error = %e, "subscribe after the takeover failed"))
        .ok()
}

/// The query of `GET /jobs/{id}/events`. Other parameters are ignored, not
/// refused: a browser's WebSocket may carry more than this handler reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this `seq` (of the last event received)
    #[param(minimum = 0)]
    since: Option<u64>,
    /// The API key's token, for a WebSocket handshake without
    /// `Authorization: Bearer` (a browser's)
    #[param(value_type = Option<String>, nullable = false)]
    #[expect(
        dead_code,
        reason = "the authentication reads it from the query string; here it is only \
            stated for the spec and discarded unread, so it cannot be logged"
    )]
    access_token: Option<serde::de::IgnoredAny>,
}

impl Explained for EventsQuery {
    fn explain(name: &str) -> String {
        format!("{name} must be a non-negative integer")
    }
}
