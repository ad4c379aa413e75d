//! A subscription to a job held by another node, bridged frame by frame to
//! the node that holds it (over wss, trusting the cluster's CA, when its URL
//! is https): its owner, or its standby while the owner is lost (see
//! [`stops::stops`]).
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
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as TungsteniteClose, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as TungsteniteMessage;
use tracing::debug;
use vidpress_actors::JobId;

use super::error::ApiError;
use super::events::MOVING;
use super::stops::{self, Ask, Stop, Target, FORWARDED, IF_HELD, MAX_HOPS};
use super::ws::{self, Beat, Liveness, ReadError};
use super::AppState;

/// Largest message taken from the node bridged to: an event document is a
/// few hundred bytes.
const MAX_HOLDER_MESSAGE: usize = 64 * 1024;
/// How long a dial may take: a node that accepts the connection but does
/// not answer (frozen, and not suspected yet) is given up after it.
const DIAL_LIMIT: Duration = Duration::from_secs(10);
/// How long the bridge looks for the job's new holder once the old one went
/// away, before it tells the client the job's node went away.
const RESUME_WITHIN: Duration = Duration::from_secs(60);
/// Pause between two rounds of dials while nobody holds the job.
const REDIAL_PAUSE: Duration = Duration::from_millis(250);
/// Close code of the client when nobody took the job over in time.
const GOING_AWAY: u16 = 1001;

type HolderSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

/// What a round of dials got.
enum Dialed {
    Socket(Box<HolderSocket>),
    /// An answer that is not a 503: the job is unknown, the key refused...
    Refused(Response),
    /// No node that may hold the job answered.
    Nobody,
}

/// How to reach the job's event stream on whichever node holds it.
struct Dial {
    app: AppState,
    id: JobId,
    /// The request's path, and its query without `since`.
    path: String,
    rest: String,
    /// The client's `since`: where a stream starts when nothing was sent.
    since: Option<u64>,
    token: Option<HeaderValue>,
    /// The forwarded count of the client's request, and of the dials.
    hops_in: u8,
    hops: u8,
}

impl Dial {
    /// Dials, in order, the nodes that may hold the job now (this node
    /// itself, over HTTP like any other, once it holds the job or as the
    /// standby answering from its copy), with `query` (`?…`).
    async fn connect(&self, query: &str) -> Dialed {
        let Some(cluster) = &self.app.cluster else {
            return Dialed::Nobody;
        };
        let view = cluster.borrow().clone();
        let Some(me) = view.members.get(&view.me) else {
            return Dialed::Nobody;
        };
        let here = Target {
            node: me.name.clone(),
            http: me.http.clone(),
        };
        let stops = if self.app.jobs.is_local(self.id) {
            vec![Stop::Here]
        } else {
            let settled = std::time::Instant::now() >= self.app.view_settles_at;
            stops::stops(&view, self.id, self.hops_in, settled)
        };
        let mut refused = None;
        for stop in stops {
            let (target, hops) = match stop {
                Stop::At(target) => (target, self.hops),
                // No copy here (yet, or any more): nothing to answer from.
                Stop::Copy if self.app.jobs.standby_copy(self.id).is_none() => continue,
                // Asked locally: the job's own handler answers (and, for a
                // copy, waits for the takeover).
                Stop::Here | Stop::Copy => (here.clone(), MAX_HOPS),
            };
            let dialed = self.dial(&target, hops, query, None);
            match stops::until_lost(cluster, &target.node, dialed).await {
                Some(Ok(socket)) => return Dialed::Socket(Box::new(socket)),
                Some(Err(Some(response)))
                    if response.status() != StatusCode::SERVICE_UNAVAILABLE =>
                {
                    return Dialed::Refused(response)
                }
                Some(Err(response)) => refused = response.or(refused),
                None => debug!(job_id = %self.id, node = %target.node, "suspected while dialed"),
            }
        }
        if self.hops_in == 0 {
            // Neither node its ID names holds it: the others are asked, as
            // a poll asks them (see `route`).
            let others = stops::others_up(&view);
            for ask in [Ask::Held, Ask::HeldOrCopy] {
                for target in &others {
                    let dialed = self.dial(target, MAX_HOPS, query, Some(ask));
                    match stops::until_lost(cluster, &target.node, dialed).await {
                        Some(Ok(socket)) => return Dialed::Socket(Box::new(socket)),
                        Some(Err(Some(response)))
                            if response.status() != StatusCode::MISDIRECTED_REQUEST
                                && !response.status().is_server_error() =>
                        {
                            return Dialed::Refused(response)
                        }
                        _ => {}
                    }
                }
            }
        }
        refused.map_or(Dialed::Nobody, Dialed::Refused)
    }

    /// Opens the job's event stream on `target`; an HTTP answer instead of
    /// the upgrade is returned as the error, `None` when there was none.
    async fn dial(
        &self,
        target: &Target,
        hops: u8,
        query: &str,
        ask: Option<Ask>,
    ) -> Result<HolderSocket, Option<Response>> {
        let url = format!("{}{}{query}", websocket_base(&target.http), self.path);
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .map_err(|e| {
                    debug!(error = %e, "bad holder url");
                    None
                })?;
        request
            .headers_mut()
            .insert(FORWARDED, HeaderValue::from(u16::from(hops)));
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, token.clone());
        }
        if let Some(ask) = ask {
            request
                .headers_mut()
                .insert(IF_HELD, HeaderValue::from_static(ask.value()));
        }
        // The holder sends only event documents; a bound keeps a peer from
        // making this node buffer more.
        let config = WebSocketConfig::default()
            .read_buffer_size(ws::SUBSCRIBER_READ_BUFFER)
            .max_message_size(Some(MAX_HOLDER_MESSAGE))
            .max_frame_size(Some(MAX_HOLDER_MESSAGE));
        let connector = tokio_tungstenite::Connector::Rustls(self.app.peer_tls.0.clone());
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(connector),
        );
        match tokio::time::timeout(DIAL_LIMIT, connect).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let body = response.into_body().unwrap_or_default();
                let json = [(header::CONTENT_TYPE, "application/json")];
                Err(Some((status, json, body).into_response()))
            }
            Ok(Err(e)) => {
                debug!(node = %target.node, error = %e, "websocket dial failed");
                Err(None)
            }
            Err(_) => {
                debug!(node = %target.node, "websocket dial timed out");
                Err(None)
            }
        }
    }
}

/// Returns the `since` of a query string, if it has a valid one.
fn since_of(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("since="))
        .and_then(|n| n.parse().ok())
}

/// Returns a query string without its `since` parameters.
fn without_since(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && *pair != "since" && !pair.starts_with("since="))
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns `?query` with `since` added when given (`""` when both are
/// empty).
fn with_since(query: &str, since: Option<u64>) -> String {
    let since = since.map(|n| format!("since={n}"));
    let parts: Vec<&str> = [Some(query), since.as_deref()]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Returns the WebSocket base URL of a node's HTTP base URL: `wss://` for
/// `https://`, `ws://` for `http://`.
fn websocket_base(http: &str) -> String {
    if let Some(rest) = http.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = http.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        http.to_owned()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_to_an_https_node_is_wss() {
        assert_eq!(websocket_base("https://node-a:8443"), "wss://node-a:8443");
        assert_eq!(
            websocket_base("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080"
        );
    }

    #[test]
    fn a_resumed_stream_asks_for_what_follows_the_last_event_sent() {
        let query = "access_token=t0k&since=3";
        assert_eq!(since_of(query), Some(3));
        assert_eq!(without_since(query), "access_token=t0k");
        assert_eq!(
            with_since("access_token=t0k", Some(41)),
            "?access_token=t0k&since=41"
        );
        assert_eq!(with_since("", Some(41)), "?since=41");
        assert_eq!(with_since("", None), "");
        assert_eq!(with_since("a=1", None), "?a=1");
        // A bad since is not passed on (the first dial's answer was the
        // client's own 400, from the holder).
        assert_eq!(since_of("since=x"), None);
        assert_eq!(without_since("since=x&since&b=2"), "b=2");
    }
}
