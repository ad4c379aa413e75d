//! Finding the node that holds a bridged job's stream: the stops its ID
//! names (see [`stops::stops`]), then, for a client's own subscription, the
//! other nodes up, asked whether they hold the job or a copy; and the query
//! a dial sends, resuming after the last `seq` the client was sent.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;
use vidpress_actors::JobId;

use crate::http::stops::{self, Ask, Stop, Target, FORWARDED, IF_HELD, MAX_HOPS};
use crate::http::ws;
use crate::http::AppState;

/// Largest message taken from the node bridged to: an event document is a
/// few hundred bytes.
const MAX_HOLDER_MESSAGE: usize = 64 * 1024;
/// How long a dial may take: a node that accepts the connection but does
/// not answer (frozen, and not suspected yet) is given up after it.
const DIAL_LIMIT: Duration = Duration::from_secs(10);
pub(super) type HolderSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a round of dials got.
pub(super) enum Dialed {
    Socket(Box<HolderSocket>),
    /// An answer that is not a 503: the job is unknown, the key refused...
    Refused(Response),
    /// No node that may hold the job answered.
    Nobody,
}

/// How to reach the job's event stream on whichever node holds it.
pub(super) struct Dial {
    pub(super) app: AppState,
    pub(super) id: JobId,
    /// The request's path, and its query without `since`.
    pub(super) path: String,
    pub(super) rest: String,
    /// The client's `since`: where a stream starts when nothing was sent.
    pub(super) since: Option<u64>,
    pub(super) token: Option<HeaderValue>,
    /// The forwarded count of the client's request, and of the dials.
    pub(super) hops_in: u8,
    pub(super) hops: u8,
}

impl Dial {
    /// Dials, in order, the nodes that may hold the job now (this node
    /// itself, over HTTP like any other, once it holds the job or as the
    /// standby answering from its copy), with `query` (`?…`).
    pub(super) async fn connect(&self, query: &str) -> Dialed {
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
pub(super) fn since_of(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("since="))
        .and_then(|n| n.parse().ok())
}

/// Returns a query string without its `since` parameters.
pub(super) fn without_since(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && *pair != "since" && !pair.starts_with("since="))
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns `?query` with `since` added when given (`""` when both are
/// empty).
pub(super) fn with_since(query: &str, since: Option<u64>) -> String {
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
