//! The bare axum handlers the service is measured against: what any HTTP
//! service of this kind would do at the least, with nothing of vidpress.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

struct Baseline {
    dir: PathBuf,
    /// Whether an upload is fsynced before the 202 (as vidpress does).
    durable: bool,
    next: AtomicU64,
    /// The job document `GET /jobs/{id}` answers, byte for byte.
    doc: Bytes,
    /// The events `POST /fanout` sends to every `GET /jobs/{id}/events`
    /// subscriber: a frame and whether it is the last.
    feed: broadcast::Sender<(Utf8Bytes, bool)>,
}

/// Serves `POST /jobs` (streams the body to a file in `dir`, fsynced first
/// if `durable`, answers 202), `GET /jobs/{id}` (answers `doc` with 202, as
/// vidpress does for a queued job) and a bare event broadcast (see
/// [`fanout`]) on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    dir: PathBuf,
    doc: Vec<u8>,
    durable: bool,
) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(&dir).await?;
    let state = Arc::new(Baseline {
        dir,
        durable,
        next: AtomicU64::new(0),
        doc: Bytes::from(doc),
        feed: broadcast::channel(64).0,
    });
    let app = Router::new()
        .route("/jobs", post(submit))
        .route("/jobs/{id}", get(poll))
        .route("/jobs/{id}/events", get(events))
        .route("/fanout", post(fanout))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn submit(State(state): State<Arc<Baseline>>, body: Body) -> Response {
    let n = state.next.fetch_add(1, Ordering::Relaxed);
    let path = state.dir.join(format!("{n}.upload"));
    let written = async {
        let mut file = tokio::fs::File::create(&path).await?;
        let mut body = body.into_data_stream();
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?)
                .await?;
        }
        file.flush().await?;
        if state.durable {
            file.sync_data().await?;
        }
        Ok::<_, std::io::Error>(())
    }
    .await;
    match written {
        Ok(()) => (
            StatusCode::ACCEPTED,
            [
                (header::LOCATION, format!("/jobs/{n}")),
                (header::CONTENT_TYPE, "application/json".to_owned()),
            ],
            format!("{{\"id\":\"{n}\",\"status\":\"queued\"}}"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn poll(State(state): State<Arc<Baseline>>) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        state.doc.clone(),
    )
        .into_response()
}

/// Subscribes a WebSocket to the feed: a first frame at once (as vidpress
/// sends the job's snapshot), then every event until the last, then a
/// normal close.
async fn events(State(state): State<Arc<Baseline>>, upgrade: WebSocketUpgrade) -> Response {
    let mut feed = state.feed.subscribe();
    upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        let first = event_frame(0, "queued", 0);
        if socket.send(Message::Text(first)).await.is_err() {
            return;
        }
        while let Ok((frame, last)) = feed.recv().await {
            if socket.send(Message::Text(frame)).await.is_err() {
                return;
            }
            if last {
                let close = CloseFrame {
                    code: 1000,
                    reason: "".into(),
                };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
        }
    })
}

/// `POST /fanout?events=N&every_ms=M&bytes=B`: sends N events of B bytes,
/// one every M ms, each rendered once for all subscribers and stamped with
/// the time it was sent; the last is terminal.
async fn fanout(
    State(state): State<Arc<Baseline>>,
    Query(query): Query<HashMap<String, u64>>,
) -> StatusCode {
    let arg = |name: &str| query.get(name).copied().unwrap_or(0);
    let (events, every, bytes) = (arg("events"), arg("every_ms"), arg("bytes"));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(every.max(1)));
        for seq in 1..=events {
            tick.tick().await;
            let last = seq == events;
            let status = if last { "completed" } else { "running" };
            let _ = state
                .feed
                .send((event_frame(seq, status, bytes as usize), last));
        }
    });
    StatusCode::ACCEPTED
}

/// An event frame of about `bytes` bytes with the fields the harness reads.
fn event_frame(seq: u64, status: &str, bytes: usize) -> Utf8Bytes {
    let head = format!(
        r#"{{"seq":{seq},"job":{{"status":"{status}","updated_at":"{}"}},"pad":""#,
        humantime::format_rfc3339_micros(SystemTime::now())
    );
    let pad = bytes.saturating_sub(head.len() + 2);
    Utf8Bytes::from(format!("{head}{}\"}}", "x".repeat(pad)))
}
