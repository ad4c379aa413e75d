//! Any node answers for any job: requests about a job this node does not own
//! are forwarded to its owner, found from the tag in the job ID and the
//! membership view (no node is asked who owns what). HTTP requests are
//! streamed through; a WebSocket is bridged frame by frame, over TLS (wss,
//! trusting the cluster's CA) when the owner's URL is https.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as TungsteniteClose, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as TungsteniteMessage;
use tracing::debug;
use vidpress_actors::job::node_tag;
use vidpress_actors::JobId;
use vidpress_cluster::{ClusterView, Member, MemberState};

use super::error::ApiError;
use super::ws::{self, Beat, Liveness, ReadError};
use super::AppState;

/// Marks a forwarded request, which is never forwarded again: its value is
/// the number of hops so far.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-vidpress-forwarded");

/// Headers that belong to one connection and are not passed on.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Middleware on `/jobs/{id}…`: serves jobs held here, forwards the others
/// to the node that holds them.
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
    if app.jobs.is_local(id) || hops >= MAX_HOPS {
        return next.run(request).await;
    }
    let view = cluster.borrow().clone();
    let settled = std::time::Instant::now() >= app.view_settles_at;
    let http = match holder(&view, id, hops, settled) {
        Holder::Here => return next.run(request).await,
        Holder::Unreachable => {
            debug!(job_id = %id, "no reachable node holds the job");
            return ApiError::OwnerUnavailable.into_response();
        }
        Holder::At(http) => http,
    };
    let is_websocket = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let hops = hops + 1;
    let result = if is_websocket {
        bridge_websocket(app.clone(), &http, request, hops).await
    } else {
        forward_http(&app.proxy, &http, request, hops).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A request is forwarded at most this many times: a node to the owner,
/// the owner (which gave the job up) to the standby.
const MAX_HOPS: u8 = 2;

/// Where a request about a job should go.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// Answer here (the job is unknown, or this node is its last resort).
    Here,
    /// Forward to this HTTP base URL.
    At(String),
    /// The nodes that may hold it are down (a takeover is under way).
    Unreachable,
}

/// Returns the job ID in a `/jobs/{id}…` path.
fn job_id(path: &str) -> Option<JobId> {
    path.strip_prefix("/jobs/")?.split('/').next()?.parse().ok()
}

/// Finds who holds a job this node does not: its owner (tag in the ID),
/// or its standby (second tag) once the owner is down or has given it up.
/// An owner or standby missing from a view that has not `settled` yet (this
/// node just joined) may well exist: the job is then unreachable, not unknown.
fn holder(view: &ClusterView, id: JobId, hops: u8, settled: bool) -> Holder {
    let tagged = |tag: u16| view.members.values().find(|m| node_tag(&m.name) == tag);
    let Some(owner) = tagged(id.owner_tag()) else {
        return if settled {
            Holder::Here
        } else {
            Holder::Unreachable
        };
    };
    let reachable = |m: &Member| m.state != MemberState::Down;
    if owner.name != view.me && reachable(owner) && hops == 0 {
        return Holder::At(owner.http.clone());
    }
    let standby = match id.standby_tag() {
        None => None,
        Some(tag) => match tagged(tag) {
            Some(standby) => Some(standby),
            // Not heard of yet, but it may hold the job.
            None if !settled => return Holder::Unreachable,
            None => None,
        },
    };
    match standby {
        Some(s) if s.name == view.me => {
            if owner.name == view.me {
                Holder::Here
            } else {
                // The owner is down and this node is taking the job over.
                Holder::Unreachable
            }
        }
        Some(s) if reachable(s) => Holder::At(s.http.clone()),
        Some(_) => Holder::Unreachable,
        None if owner.name == view.me => Holder::Here,
        None => Holder::Unreachable,
    }
}

async fn forward_http(
    client: &reqwest::Client,
    http: &str,
    request: Request,
    hops: u8,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = client
        .request(parts.method.clone(), format!("{http}{path}"))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(name) && *name != FORWARDED {
            outgoing = outgoing.header(name, value);
        }
    }
    let response = outgoing
        .header(&FORWARDED, hops.to_string())
        .send()
        .await
        .map_err(|e| {
            // Without the URL: its query may hold a token.
            debug!(error = %e.without_url(), "forward to owner failed");
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

/// Connects to the owner's event stream first (so an unknown job is a 404
/// before the upgrade), then upgrades the client and pipes frames.
async fn bridge_websocket(
    app: AppState,
    http: &str,
    request: Request,
    hops: u8,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let upgrade = ws::bounded(WebSocketUpgrade::from_request_parts(&mut parts, &app).await?);
    let ws_url = format!("{}{path}", websocket_base(http));
    let connector = Some(tokio_tungstenite::Connector::Rustls(app.peer_tls.0.clone()));
    let mut owner_request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)
            .map_err(|e| ApiError::Internal(format!("bad owner url: {e}")))?;
    owner_request
        .headers_mut()
        .insert(FORWARDED, HeaderValue::from(u16::from(hops)));
    // The owner judges the client's token as if asked directly, as it does
    // for a forwarded HTTP request (whose headers all pass on).
    if let Some(token) = parts.headers.get(header::AUTHORIZATION) {
        owner_request
            .headers_mut()
            .insert(header::AUTHORIZATION, token.clone());
    }
    // The owner sends only event documents; a bound keeps a peer from
    // making this node buffer more.
    let config = WebSocketConfig::default()
        .read_buffer_size(ws::SUBSCRIBER_READ_BUFFER)
        .max_message_size(Some(MAX_OWNER_MESSAGE))
        .max_frame_size(Some(MAX_OWNER_MESSAGE));
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        owner_request,
        Some(config),
        true,
        connector,
    )
    .await;
    let (owner, _) = match connected {
        Ok(connected) => connected,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = response.into_body().unwrap_or_default();
            return Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
        Err(e) => {
            debug!(error = %e, "websocket to owner failed");
            return Err(ApiError::OwnerUnavailable);
        }
    };
    let idle = app.idle_timeout;
    Ok(upgrade.on_upgrade(move |client: WebSocket| pipe(client, owner, idle)))
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

/// Largest message taken from the owner of a bridged subscription: an event
/// document is a few hundred bytes.
const MAX_OWNER_MESSAGE: usize = 64 * 1024;

type OwnerSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Copies the owner's frames to the client, keeping the close code, until
/// either side ends. The client is held to the same limits as a local
/// subscriber: 1009 for a message over the limit, pinged, and dropped after
/// `idle` without a word (the owner pings this node in turn, answered by
/// tungstenite while the owner's side is read).
async fn pipe(client: WebSocket, owner: OwnerSocket, idle: Duration) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut owner_tx, mut owner_rx) = owner.split();
    let mut liveness = Liveness::new(idle);
    let close_client = |code: u16, reason: &'static str| {
        AxumMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let client_gone = loop {
        tokio::select! {
            from_owner = owner_rx.next() => match from_owner {
                Some(Ok(TungsteniteMessage::Text(text))) => {
                    let sent = client_tx.send(AxumMessage::Text(text.as_str().into()));
                    if !matches!(tokio::time::timeout(idle, sent).await, Ok(Ok(()))) {
                        break true;
                    }
                }
                Some(Ok(TungsteniteMessage::Close(frame))) => {
                    let frame = frame.map(|f| CloseFrame { code: f.code.into(), reason: f.reason.as_str().into() });
                    let _ = client_tx.send(AxumMessage::Close(frame)).await;
                    return;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    let _ = client_tx.send(close_client(1001, "the job's owner went away")).await;
                    return;
                }
            },
            from_client = client_rx.next() => match from_client {
                None | Some(Ok(AxumMessage::Close(_))) => break true,
                Some(Err(e)) => {
                    if ReadError::from_axum(e) == ReadError::TooBig {
                        let _ = client_tx.send(close_client(ws::TOO_BIG, "message too big")).await;
                    }
                    break true;
                }
                Some(Ok(_)) => liveness.heard(),
            },
            beat = liveness.beat() => match beat {
                Beat::Ping => {
                    let ping = client_tx.send(AxumMessage::Ping(Bytes::new()));
                    if !matches!(tokio::time::timeout(idle, ping).await, Ok(Ok(()))) {
                        break true;
                    }
                }
                Beat::Expired => {
                    let _ = client_tx.send(close_client(1001, "idle")).await;
                    break true;
                }
            },
        }
    };
    if client_gone {
        let _ = owner_tx
            .send(TungsteniteMessage::Close(Some(TungsteniteClose {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vidpress_cluster::{NodeLoad, NodeName};

    use super::*;

    fn node(name: &str) -> NodeName {
        name.parse().expect("a valid node name")
    }

    /// A view from `me` of nodes a, b, c in the given states.
    fn view(me: &str, states: [MemberState; 3]) -> ClusterView {
        let members = ["a", "b", "c"]
            .into_iter()
            .zip(states)
            .map(|(name, state)| {
                let member = Member {
                    name: node(name),
                    address: format!("{name}:7000"),
                    http: format!("http://{name}"),
                    state,
                    load: NodeLoad::default(),
                    incarnation: 1,
                    rtt: None,
                    last_seen: None,
                };
                (node(name), member)
            })
            .collect::<BTreeMap<_, _>>();
        ClusterView {
            me: node(me),
            members,
        }
    }

    const ALL_UP: [MemberState; 3] = [MemberState::Up; 3];

    #[test]
    fn a_websocket_to_an_https_owner_is_wss() {
        assert_eq!(websocket_base("https://node-a:8443"), "wss://node-a:8443");
        assert_eq!(
            websocket_base("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080"
        );
    }

    #[test]
    fn a_job_goes_to_its_owner_then_to_its_standby() {
        let id = JobId::with_standby(&node("a"), Some(&node("b")));
        assert_eq!(
            holder(&view("c", ALL_UP), id, 0, true),
            Holder::At("http://a".into())
        );
        // The owner gave the job up (it forwards with one hop): the standby.
        assert_eq!(
            holder(&view("a", ALL_UP), id, 1, true),
            Holder::At("http://b".into())
        );
        let owner_down = [MemberState::Down, MemberState::Up, MemberState::Up];
        assert_eq!(
            holder(&view("c", owner_down), id, 0, true),
            Holder::At("http://b".into())
        );
        // On the standby, the owner down: the takeover is under way.
        assert_eq!(
            holder(&view("b", owner_down), id, 0, true),
            Holder::Unreachable
        );
        let both_down = [MemberState::Down, MemberState::Down, MemberState::Up];
        assert_eq!(
            holder(&view("c", both_down), id, 0, true),
            Holder::Unreachable
        );
    }

    #[test]
    fn an_owner_missing_from_the_view_is_unknown_only_once_the_view_settled() {
        let id = JobId::with_standby(&node("z"), Some(&node("y")));
        assert_eq!(
            holder(&view("a", ALL_UP), id, 0, false),
            Holder::Unreachable
        );
        assert_eq!(holder(&view("a", ALL_UP), id, 0, true), Holder::Here);
    }

    #[test]
    fn a_standby_missing_from_the_view_may_hold_the_job_until_the_view_settled() {
        // node-a owned the job and gave it to node-c, which it has not heard
        // of again since it restarted.
        let id = JobId::with_standby(&node("a"), Some(&node("c")));
        let mut restarted = view("a", ALL_UP);
        restarted.members.remove(&node("c"));
        assert_eq!(holder(&restarted, id, 0, false), Holder::Unreachable);
        assert_eq!(holder(&restarted, id, 1, false), Holder::Unreachable);
        assert_eq!(holder(&restarted, id, 0, true), Holder::Here);
    }
}
