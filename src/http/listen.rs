//! Serves the router on a TCP listener, holding every connection to the
//! node's limits: a request's headers must be complete within the header
//! timeout (hyper's `header_read_timeout`, which also ends keep-alive
//! connections idle that long), a connection's read buffer is bounded, and
//! at most a fixed number of connections are open at once. One more is
//! answered `503` and closed at once, never queued: a flood of connections
//! costs a few bytes each, not a task, a buffer and a file descriptor.
//!
//! The connection cap travels with the socket ([`Counted`]), so a
//! connection upgraded to a WebSocket still counts until it closes.
//!
//! With TLS, the handshake runs in the connection's own task, never in the
//! accept loop, within the header timeout, and the connection counts
//! against the cap from its accept; a client that does not speak TLS is
//! closed when its handshake fails, with no HTTP answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Largest read buffer of a connection: bounds the request head a client
/// can make the node hold (hyper answers 431 beyond it) and the body bytes
/// read ahead of the handler.
const MAX_READ_BUFFER: usize = 32 * 1024;

/// File descriptors kept for everything but client connections: the
/// listeners, cluster sessions, the runtime, job records, transcoder pipes.
const RESERVED_FDS: u64 = 64;

/// File descriptors one connection may hold: its socket, plus an upload's
/// file or a bridged WebSocket's socket to another node.
const FDS_PER_CONNECTION: u64 = 2;

/// What a connection over the cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 103\r\n\
\r\n\
{\"error\":{\"code\":\"unavailable\",\"message\":\"the node serves as many connections as it can; retry later\"}}";

/// Limits on the connections of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Connections open at once; more are refused.
    pub max_connections: usize,
}

impl ConnLimits {
    /// Returns the cap that fits in `open_files` file descriptors: the
    /// configured one, or less when the process may not open that many.
    pub fn fitted(self, open_files: u64) -> Self {
        let fit = open_files.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION;
        let fit = usize::try_from(fit).unwrap_or(usize::MAX).max(1);
        Self {
            max_connections: self.max_connections.min(fit),
            ..self
        }
    }
}

/// Raises the soft limit on open files to the hard one and returns it.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!(error = %e, "cannot raise the open files limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Serves `router` on `listener`, over TLS when given an acceptor, until
/// `shutdown` completes; then stops accepting, lets each connection finish
/// its request in flight, and returns once they are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_READ_BUFFER);
    let service = TowerToHyperService::new(router);
    let connections = metrics::gauge!("vidpress_http_connections");
    let refused = metrics::counter!("vidpress_http_connections_refused_total");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.increment(1);
            refuse(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let io = Counted {
            stream,
            _permit: permit,
            _open: OpenConnection::new(connections.clone()),
        };
        let (builder, service, stopping) = (builder.clone(), service.clone(), stopping.clone());
        let tls = tls.clone();
        let handshake_timeout = limits.header_timeout;
        tracker.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(&builder, io, service, &stopping).await;
            };
            let handshake = tokio::time::timeout(handshake_timeout, tls.accept(io));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return debug!("TLS handshake timed out"),
                },
                () = stopping.cancelled() => return,
            };
            serve_connection(&builder, stream, service, &stopping).await;
        });
    }
    drop(listener);
    stopping.cancel();
    tracker.close();
    tracker.wait().await;
}

/// Serves HTTP/1 on one connection, upgrades included, until it ends or
/// the node stops (then after the request in flight).
async fn serve_connection<I>(
    builder: &http1::Builder,
    io: I,
    service: TowerToHyperService<Router>,
    stopping: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Answers a connection over the cap without reading from it, and closes it.
fn refuse(stream: TcpStream) {
    // A fresh socket's send buffer takes these few bytes at once; if it
    // cannot, the client gets the close alone.
    let _ = stream.try_write(BUSY);
}

/// Waits after a failed accept. Running out of file descriptors (EMFILE,
/// ENFILE) lasts until connections close: retrying at once would spin.
async fn accept_failed(e: io::Error) {
    let pause = match e.raw_os_error() {
        Some(libc_code) if is_fd_exhaustion(libc_code) => {
            error!(error = %e, "cannot accept: out of file descriptors");
            Duration::from_millis(100)
        }
        _ => {
            debug!(error = %e, "accept failed");
            Duration::from_millis(1)
        }
    };
    tokio::time::sleep(pause).await;
}

fn is_fd_exhaustion(code: i32) -> bool {
    code == rustix::io::Errno::MFILE.raw_os_error()
        || code == rustix::io::Errno::NFILE.raw_os_error()
}

/// Counts an open connection in the gauge for as long as it lives.
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1);
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

/// A client's socket holding its place under the connection cap until it
/// is dropped, upgraded or not.
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Logs the connection cap at start-up, saying when the open-file limit
/// lowered it.
pub fn log_cap(configured: usize, fitted: ConnLimits, open_files: u64) {
    if fitted.max_connections < configured {
        warn!(
            configured,
            max_connections = fitted.max_connections,
            open_files,
            "the open files limit lowers the connection cap"
        );
    } else {
        info!(max_connections = fitted.max_connections, "connection cap");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        let limits = ConnLimits {
            header_timeout: Duration::from_secs(30),
            max_connections: 4096,
        };
        assert_eq!(limits.fitted(1 << 20).max_connections, 4096);
        assert_eq!(limits.fitted(256).max_connections, 96);
        assert_eq!(limits.fitted(10).max_connections, 1);
    }

    #[test]
    fn the_busy_answer_is_a_complete_response() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "unavailable");
    }
}
