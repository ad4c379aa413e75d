//! The limits of a client's WebSocket, shared by the local event stream
//! ([`super::events`]) and the bridge to another node ([`super::route`]): a
//! client message over [`MAX_CLIENT_MESSAGE`] closes the socket with
//! [`TOO_BIG`] before more of it is buffered, and a client is pinged
//! ([`Liveness`]) and dropped once it has sent nothing, not even a pong,
//! for the idle timeout.

use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;

/// Close code of a socket whose client sent a message over the limit.
pub const TOO_BIG: u16 = 1009;
/// Read buffer of a subscriber's socket, in bytes.
pub const SUBSCRIBER_READ_BUFFER: usize = 4 * 1024;
/// Largest message or frame a client may send: clients send nothing but
/// pongs, pings and the close.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// Bounds what a client's socket buffers: clients send nothing but pongs,
/// pings and the close, so a small read buffer (tungstenite allocates 128
/// KiB by default) keeps an idle subscriber cheap, and a message over
/// [`MAX_CLIENT_MESSAGE`] is refused before it is held (tungstenite's
/// default is 64 MiB).
pub fn bounded(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(SUBSCRIBER_READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
}

/// Why reading a client's socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The client sent a message over [`MAX_CLIENT_MESSAGE`].
    TooBig,
    /// The connection broke.
    Broken,
}

impl ReadError {
    /// Classifies an error of an axum WebSocket.
    pub fn from_axum(error: axum::Error) -> Self {
        match error
            .into_inner()
            .downcast::<tokio_tungstenite::tungstenite::Error>()
        {
            Ok(e) if matches!(*e, tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
                Self::TooBig
            }
            _ => Self::Broken,
        }
    }
}

/// Keeps a client proven alive: a ping every third of the idle timeout
/// (browsers and WebSocket libraries answer them by themselves), and the
/// client given up once nothing came from it for the idle timeout.
pub struct Liveness {
    idle: Duration,
    last_heard: tokio::time::Instant,
    ticks: tokio::time::Interval,
}

/// What [`Liveness::beat`] asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping.
    Ping,
    /// The client sent nothing for the idle timeout: close.
    Expired,
}

impl Liveness {
    pub fn new(idle: Duration) -> Self {
        let period = (idle / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            idle,
            last_heard: tokio::time::Instant::now(),
            ticks,
        }
    }

    /// Notes that the client sent something.
    pub fn heard(&mut self) {
        self.last_heard = tokio::time::Instant::now();
    }

    /// Waits for the next beat.
    pub async fn beat(&mut self) -> Beat {
        self.ticks.tick().await;
        if self.last_heard.elapsed() >= self.idle {
            Beat::Expired
        } else {
            Beat::Ping
        }
    }
}
