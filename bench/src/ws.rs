//! WebSocket subscribers for the event benchmarks: each reads one job's
//! events until the close and keeps, per event, its `seq` and how long after
//! the supervisor published it (the event's `updated_at`, set then) it
//! arrived. Sender and receiver share this machine's clock.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures::StreamExt;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// `seq` of the first frame (the snapshot or the first replayed event).
    pub first_seq: u64,
    /// `seq` of every event after the first frame, in arrival order.
    pub seqs: Vec<u64>,
    /// Latency of every event after the first frame, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// The close code, if the server closed.
    pub close: Option<u16>,
    /// Whether the last event was a terminal status.
    pub terminal: bool,
    /// Size of the largest text frame.
    pub frame_bytes: usize,
}

impl Seen {
    /// Whether the events after the first frame came one by one, none lost,
    /// to the terminal one, then a normal close.
    pub fn complete(&self) -> bool {
        let contiguous = self
            .seqs
            .iter()
            .enumerate()
            .all(|(i, seq)| *seq == self.first_seq + 1 + i as u64);
        contiguous && self.terminal && self.close == Some(1000)
    }
}

/// The parts of an event frame the harness reads (the rest is skipped).
#[derive(Deserialize)]
struct Frame<'a> {
    seq: u64,
    #[serde(borrow)]
    job: FrameJob<'a>,
}

#[derive(Deserialize)]
struct FrameJob<'a> {
    status: &'a str,
    updated_at: &'a str,
}

/// A connected subscriber, not yet reading.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `GET /jobs/{id}/events` on `base` (an `http://` URL).
pub async fn connect(base: &str, id: &str) -> anyhow::Result<Socket> {
    let url = format!("{}/jobs/{id}/events", base.replacen("http://", "ws://", 1));
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("WebSocket connect")?;
    Ok(socket)
}

/// Frames as they arrived on one socket, not yet read.
pub struct Received {
    frames: Vec<(SystemTime, Utf8Bytes)>,
    close: Option<u16>,
    /// Kept open until the frames are read, so that closing thousands of
    /// sockets does not delay the others' last frames either.
    _socket: Socket,
}

/// Reads events until the close (or `limit`).
pub async fn read(socket: Socket, limit: Duration) -> Seen {
    receive(socket, limit).await.seen()
}

/// Receives frames until the close (or `limit`), timing each as it arrives.
/// Nothing more is done meanwhile: with thousands of subscribers in this
/// process, parsing on arrival would delay the arrival of the others.
pub async fn receive(mut socket: Socket, limit: Duration) -> Received {
    let (mut frames, mut close) = (Vec::new(), None);
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, socket.next()).await {
        let arrived = SystemTime::now();
        match frame {
            Ok(Message::Text(text)) => frames.push((arrived, text)),
            Ok(Message::Close(frame)) => {
                close = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Received {
        frames,
        close,
        _socket: socket,
    }
}

impl Received {
    /// Reads the frames.
    pub fn seen(self) -> Seen {
        let mut seen = Seen {
            close: self.close,
            ..Seen::default()
        };
        let mut first = true;
        for (arrived, text) in self.frames {
            seen.frame_bytes = seen.frame_bytes.max(text.len());
            let Ok(event) = serde_json::from_str::<Frame<'_>>(&text) else {
                continue;
            };
            let seq = event.seq;
            seen.terminal = matches!(event.job.status, "completed" | "failed" | "canceled");
            if first {
                seen.first_seq = seq;
                first = false;
                continue;
            }
            seen.seqs.push(seq);
            let sent = humantime::parse_rfc3339(event.job.updated_at).ok();
            if let Some(latency) = sent.and_then(|sent| arrived.duration_since(sent).ok()) {
                seen.latencies_ms.push(latency.as_secs_f64() * 1000.0);
            } else if sent.is_some() {
                // Arrived "before" it was sent: within the clock's grain.
                seen.latencies_ms.push(0.0);
            }
        }
        seen
    }
}

/// The `q` quantile (0–1) of `values` in milliseconds, to the microsecond
/// (an HDR histogram of three significant digits); NaN when there are none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut histogram = match hdrhistogram::Histogram::<u64>::new(3) {
        Ok(h) => h,
        Err(_) => return f64::NAN,
    };
    for v in values {
        // Latencies are never negative; a NaN counts as zero.
        histogram.saturating_record((v.max(0.0) * 1000.0).round() as u64);
    }
    if histogram.is_empty() {
        return f64::NAN;
    }
    histogram.value_at_quantile(q) as f64 / 1000.0
}
