//! A subscription to a job held by another node, bridged frame by frame to
//! the node that holds it (over wss, trusting the cluster's CA, when its URL
//! is https): its owner, or its standby while the owner is lost (see
//! [`super::stops::stops`]).
//!
//! The client sees one stream across a failover: when the node bridged to
//! goes away before the job ends (killed, frozen until suspected, shutting
//! down, or the job moving), the bridge dials whoever holds the job then and
//! resumes after the last `seq` the client was sent; it passes no event
//! twice, so `seq` never goes back (the new holder numbers on after it: see
//! the supervisor's `subscribe`). The client is held to the same limits as a
//! local subscriber meanwhile.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TungsteniteClose;
use tokio_tungstenite::tungstenite::Message as TungsteniteMessage;
use tracing::debug;
use vidpress_actors::JobId;

use super::error::ApiError;
use super::events::MOVING;
use super::ws::{self, Beat, Liveness, ReadError};
use super::AppState;

mod dial;

use dial::{since_of, with_since, without_since, Dial, Dialed, HolderSocket};

/// How long the bridge looks for the job's new holder once the old one went
/// away, before it tells the client the job's node went away.
const RESUME_WITHIN: Duration = Duration::from_secs(60);
/// Pause between two rounds of dials while nobody holds the job.
const REDIAL_PAUSE: Duration = Duration::from_millis(250);
/// Close code of the client when nobody took the job over in time.
const GOING_AWAY: u16 = 1001;

/// Connects to the node that holds the job first (so an unknown job is a
/// 404 before the upgrade), then upgrades the client and pipes frames.
/// `hops` is the forwarded count the dialed node is sent.
pub async fn bridge(
    app: AppState,
    id: JobId,
    request: Request,
    hops: u8,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let upgrade = ws::bounded(WebSocketUpgrade::from_request_parts(&mut parts, &app).await?);
    let query = parts.uri.query().unwrap_or_default();
    let dial = Dial {
        since: since_of(query),
        rest: without_since(query),
        path: parts.uri.path().to_owned(),
        // The node dialed judges the client's token as if asked directly,
        // as it does for a forwarded HTTP request (whose headers all pass on).
        token: parts.headers.get(header::AUTHORIZATION).cloned(),
        hops_in: hops - 1,
        hops,
        id,
        app: app.clone(),
    };
    // The first dial asks as the client did (a bad `since` is the holder's
    // 400 to give); later ones resume after what the client was sent.
    let holder = match dial.connect(&format!("?{query}")).await {
        Dialed::Socket(socket) => *socket,
        Dialed::Refused(response) => return Ok(response),
        Dialed::Nobody => return Err(ApiError::OwnerUnavailable),
    };
    let idle = app.idle_timeout;
    Ok(upgrade.on_upgrade(move |client: WebSocket| pipe(client, holder, dial, idle)))
}

/// The `seq` of an event document.
#[derive(Deserialize)]
struct Numbered {
    seq: u64,
}

/// How a stream from one holder ended.
enum Ended {
    /// The client left (or broke a limit, and was told).
    ClientGone,
    /// The holder closed for good (the job ended, or a refusal); the client
    /// was passed its close.
    Closed,
    /// The holder went away before the job ended: resume elsewhere.
    HolderLost,
}

type ClientTx = SplitSink<WebSocket, AxumMessage>;
type ClientRx = SplitStream<WebSocket>;

/// Copies the holder's frames to the client until the job ends or the
/// client leaves, following the job to its next holder when one goes away.
async fn pipe(client: WebSocket, holder: HolderSocket, dial: Dial, idle: Duration) {
    let (mut client_tx, mut client_rx) = client.split();
    let mut liveness = Liveness::new(idle);
    let mut last_seq = dial.since;
    let mut holder = holder;
    loop {
        let ended = relay(
            &mut client_tx,
            &mut client_rx,
            holder,
            &mut liveness,
            &mut last_seq,
            idle,
        )
        .await;
        if !matches!(ended, Ended::HolderLost) {
            return;
        }
        debug!(job_id = %dial.id, since = ?last_seq, "the job's node went away; resuming elsewhere");
        holder = match resume(
            &dial,
            last_seq,
            &mut client_tx,
            &mut client_rx,
            &mut liveness,
        )
        .await
        {
            Some(next) => next,
            None => return,
        };
    }
}

/// Relays one holder's stream; passes no event at or before `last_seq`.
async fn relay(
    client_tx: &mut ClientTx,
    client_rx: &mut ClientRx,
    holder: HolderSocket,
    liveness: &mut Liveness,
    last_seq: &mut Option<u64>,
    idle: Duration,
) -> Ended {
    let (mut holder_tx, mut holder_rx) = holder.split();
    let client_gone = loop {
        tokio::select! {
            from_holder = holder_rx.next() => match from_holder {
                Some(Ok(TungsteniteMessage::Text(text))) => {
                    let seq = serde_json::from_str::<Numbered>(text.as_str()).ok().map(|n| n.seq);
                    if seq.is_some_and(|seq| last_seq.is_some_and(|last| seq <= last)) {
                        continue;
                    }
                    let sent = client_tx.send(AxumMessage::Text(text.as_str().into()));
                    if !matches!(tokio::time::timeout(idle, sent).await, Ok(Ok(()))) {
                        break true;
                    }
                    *last_seq = seq.or(*last_seq);
                }
                Some(Ok(TungsteniteMessage::Close(frame))) => {
                    let code = frame.as_ref().map(|f| u16::from(f.code));
                    if matches!(code, Some(GOING_AWAY | MOVING)) {
                        // Shutting down, or the job is moving: resume.
                        return Ended::HolderLost;
                    }
                    let frame = frame.map(|f| CloseFrame { code: f.code.into(), reason: f.reason.as_str().into() });
                    let _ = client_tx.send(AxumMessage::Close(frame)).await;
                    return Ended::Closed;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return Ended::HolderLost,
            },
            from_client = client_rx.next() => match watch_client(client_tx, from_client).await {
                Some(()) => liveness.heard(),
                None => break true,
            },
            beat = liveness.beat() => if !keep_alive(client_tx, beat, idle).await {
                break true;
            },
        }
    };
    if client_gone {
        let _ = holder_tx
            .send(TungsteniteMessage::Close(Some(TungsteniteClose {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }
    Ended::ClientGone
}

/// Dials the job's holders until one answers (within [`RESUME_WITHIN`]),
/// keeping the client alive meanwhile. `None` when the client left, or
/// nobody took the job (the client is then told, 1001).
async fn resume(
    dial: &Dial,
    since: Option<u64>,
    client_tx: &mut ClientTx,
    client_rx: &mut ClientRx,
    liveness: &mut Liveness,
) -> Option<HolderSocket> {
    let deadline = Instant::now() + RESUME_WITHIN;
    let idle = dial.app.idle_timeout;
    let query = with_since(&dial.rest, since);
    loop {
        let round = async {
            match dial.connect(&query).await {
                Dialed::Socket(socket) => Some(*socket),
                Dialed::Refused(_) | Dialed::Nobody => {
                    tokio::time::sleep(REDIAL_PAUSE).await;
                    None
                }
            }
        };
        tokio::pin!(round);
        let dialed = loop {
            tokio::select! {
                dialed = &mut round => break dialed,
                from_client = client_rx.next() => match watch_client(client_tx, from_client).await {
                    Some(()) => liveness.heard(),
                    None => return None,
                },
                beat = liveness.beat() => if !keep_alive(client_tx, beat, idle).await {
                    return None;
                },
            }
        };
        if let Some(socket) = dialed {
            return Some(socket);
        }
        if Instant::now() >= deadline {
            debug!(job_id = %dial.id, "nobody took the job over in time");
            let _ = client_tx
                .send(close_frame(GOING_AWAY, "the job's node went away"))
                .await;
            return None;
        }
    }
}

/// Takes a message from the client: `Some` while it is there, `None` once
/// it left or broke the message bound (it is told, 1009).
async fn watch_client(
    client_tx: &mut ClientTx,
    from_client: Option<Result<AxumMessage, axum::Error>>,
) -> Option<()> {
    match from_client {
        None | Some(Ok(AxumMessage::Close(_))) => None,
        Some(Err(e)) => {
            if ReadError::from_axum(e) == ReadError::TooBig {
                let _ = client_tx
                    .send(close_frame(ws::TOO_BIG, "message too big"))
                    .await;
            }
            None
        }
        Some(Ok(_)) => Some(()),
    }
}

/// Pings the client or gives it up; returns whether it is kept.
async fn keep_alive(client_tx: &mut ClientTx, beat: Beat, idle: Duration) -> bool {
    match beat {
        Beat::Ping => {
            let ping = client_tx.send(AxumMessage::Ping(Bytes::new()));
            matches!(tokio::time::timeout(idle, ping).await, Ok(Ok(())))
        }
        Beat::Expired => {
            let _ = client_tx.send(close_frame(GOING_AWAY, "idle")).await;
            false
        }
    }
}

fn close_frame(code: u16, reason: &'static str) -> AxumMessage {
    AxumMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
