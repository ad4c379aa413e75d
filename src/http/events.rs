//! `GET /jobs/{id}/events`: a job's events over a WebSocket.
//!
//! The stream logic ([`stream_events`]) is generic over `Sink`/`Stream`, so it
//! is tested without a socket; the handler only upgrades and plugs it in.

use std::collections::HashMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;
use vidpress_actors::{JobEvent, JobId, Jobs, Subscription};

use super::dto::EventDocument;
use super::error::ApiError;
use super::jobs::parse_id;
use super::AppState;

/// Close code of a stream that ended with the job (RFC 6455 normal closure).
const NORMAL: u16 = 1000;
/// Close code when the node goes away before the job ends.
const GOING_AWAY: u16 = 1001;

/// Upgrades to a WebSocket after checking the job exists (404 otherwise).
pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let since = query
        .get("since")
        .map(|s| {
            s.parse::<u64>().map_err(|_| ApiError::BadOption {
                message: "since must be a non-negative integer".into(),
            })
        })
        .transpose()?;
    let subscription = app.jobs.subscribe(id, since).await?;
    let jobs = app.jobs.clone();
    Ok(upgrade.on_upgrade(move |socket: WebSocket| async move {
        let (sink, stream) = socket.split();
        stream_events(sink, stream, subscription, jobs, id).await;
    }))
}

/// Sends a subscription's events as text frames until the job is terminal,
/// then closes with 1000. Returns early if the client goes away.
pub async fn stream_events<S, R, E>(
    mut sink: S,
    mut incoming: R,
    subscription: Subscription,
    jobs: Jobs,
    id: JobId,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let mut last_seq = None;
    let mut subscription = subscription;
    loop {
        if forward(&mut sink, &subscription.backlog, &mut last_seq).await == Flow::Stop {
            return;
        }
        let Some(mut rx) = subscription.live.take() else {
            close(&mut sink, NORMAL).await;
            return;
        };
        // Live events until the job ends, the client leaves or the feed lags.
        let lagged = loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(event) => {
                        if forward(&mut sink, std::slice::from_ref(&event), &mut last_seq).await == Flow::Stop {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => break missed,
                    Err(RecvError::Closed) => {
                        close(&mut sink, GOING_AWAY).await;
                        return;
                    }
                },
                message = incoming.next() => match message {
                    // The client closed or the connection broke.
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    // Pings are answered by the protocol layer; text is ignored.
                    Some(Ok(_)) => {}
                },
            }
        };
        // Too slow for the live feed: catch up from the supervisor's history.
        debug!(job_id = %id, missed = lagged, "subscriber lagged; resubscribing");
        match jobs.subscribe(id, last_seq).await {
            Ok(next) => subscription = next,
            Err(_) => {
                close(&mut sink, GOING_AWAY).await;
                return;
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Sends the events not yet sent; closes normally after a terminal one.
async fn forward<S: Sink<Message> + Unpin>(
    sink: &mut S,
    events: &[JobEvent],
    last_seq: &mut Option<u64>,
) -> Flow {
    for event in events {
        if last_seq.is_some_and(|last| event.seq <= last) {
            continue;
        }
        if send(sink, event).await.is_err() {
            return Flow::Stop;
        }
        *last_seq = Some(event.seq);
        if event.is_terminal() {
            close(sink, NORMAL).await;
            return Flow::Stop;
        }
    }
    Flow::Continue
}

async fn send<S: Sink<Message> + Unpin>(sink: &mut S, event: &JobEvent) -> Result<(), ()> {
    let text = serde_json::to_string(&EventDocument::from(event)).map_err(|_| ())?;
    sink.send(Message::Text(text.into())).await.map_err(|_| ())
}

async fn close<S: Sink<Message> + Unpin>(sink: &mut S, code: u16) {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
