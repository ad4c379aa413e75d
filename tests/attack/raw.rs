//! HTTP/1.1 and WebSocket spoken by hand over a `TcpStream`: the unfinished,
//! oversized and malformed traffic no client library sends, and the reads
//! that tell what the node did about it (an answer, a close, or nothing).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Largest response head read.
const MAX_HEAD: usize = 64 * 1024;

/// An HTTP response as read off the wire.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Returns a header's value (the name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Returns the `code` of an error document, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let body = String::from_utf8_lossy(&self.body);
        let start = body.find("\"code\"")?;
        let rest = &body[start + 6..];
        let rest = &rest[rest.find('"')? + 1..];
        Some(rest[..rest.find('"')?].to_owned())
    }

    /// Returns "status code" for messages, e.g. `431 header_fields_too_large`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            self.status,
            self.error_code().unwrap_or_else(|| "-".into())
        )
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.describe())
    }
}

/// What came back on a connection.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An answer.
    Response(Response),
    /// The node closed (or reset) the connection without an answer.
    Closed,
    /// Nothing within the time given.
    Silent,
}

/// Reads one response head from `reader` into `buf`, leaving any bytes
/// after it in `buf`.
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Reply {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            return Reply::Response(Response {
                status,
                headers,
                body: Vec::new(),
            });
        }
        if buf.len() > MAX_HEAD {
            return Reply::Closed;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Err(_) => return Reply::Silent,
            Ok(Ok(0)) | Ok(Err(_)) => return Reply::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one response (head and body) within `limit`.
pub async fn read_response<R: AsyncRead + Unpin>(reader: &mut R, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut response = match read_head(reader, &mut buf, deadline).await {
        Reply::Response(response) => response,
        other => return other,
    };
    let length: Option<usize> = response
        .header("content-length")
        .and_then(|l| l.parse().ok());
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    // The body is small (an error document); wait for it a little at most.
    let body_deadline = deadline.min(Instant::now() + Duration::from_secs(1));
    let mut chunk = [0u8; 8192];
    loop {
        let complete = match (length, chunked) {
            (Some(length), _) => buf.len() >= length,
            (None, true) => buf.ends_with(b"0\r\n\r\n"),
            (None, false) => response.status == 101 || buf.len() > MAX_HEAD,
        };
        if complete {
            break;
        }
        let left = body_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    response.body = buf;
    Reply::Response(response)
}

/// Reads and drops whatever comes until the node closes the connection;
/// returns whether it did within `limit`.
pub async fn wait_closed<R: AsyncRead + Unpin>(reader: &mut R, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects to `addr`, within a few seconds.
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect: no answer in 5 s".into()),
    }
}

/// A frame received from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    /// A close frame and its code, if it carried one.
    Close(Option<u16>),
    /// Any other frame, by opcode.
    Other(u8),
}

/// The receiving side of a WebSocket opened by [`ws_connect`].
pub struct FrameReader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
}

impl FrameReader {
    /// Returns the next frame from the node, or `None` once the connection
    /// is closed, broken, or sends a frame too big for a test to hold.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if self.buf.len() > 1 << 20 {
                return None;
            }
            let mut chunk = [0u8; 8192];
            match self.half.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until a close frame (returning its code) or the end of
    /// the connection (`None`), within `limit` (`None` too).
    pub async fn until_close(&mut self, limit: Duration) -> (Option<u16>, Vec<Frame>) {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(limit, async {
            while let Some(frame) = self.next().await {
                if let Frame::Close(code) = frame {
                    return code;
                }
                seen.push(frame);
            }
            None
        })
        .await;
        (found.ok().flatten(), seen)
    }
}

/// Parses one unmasked frame (server to client) at the start of `buf`;
/// returns it and the bytes it took.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize,
            10,
        ),
        126 | 127 => return None,
        len => (len as usize, 2),
    };
    if buf[1] & 0x80 != 0 {
        at += 4;
    }
    if buf.len() < at + len {
        return None;
    }
    let payload = &buf[at..at + len];
    let frame = match opcode {
        0x1 => Frame::Text(String::from_utf8_lossy(payload).into_owned()),
        0x8 => Frame::Close((len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
        other => Frame::Other(other),
    };
    Some((frame, at + len))
}

/// Opens a WebSocket to `path` by hand; returns the reading and writing
/// halves, or the answer that refused the upgrade.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
) -> Result<(FrameReader, OwnedWriteHalf), String> {
    let mut stream = connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("handshake write: {e}"))?;
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    match read_head(&mut stream, &mut buf, deadline).await {
        Reply::Response(r) if r.status == 101 => {
            let (half, writer) = stream.into_split();
            Ok((FrameReader { half, buf }, writer))
        }
        Reply::Response(r) => Err(format!("upgrade refused: {}", r.status)),
        other => Err(format!("no upgrade: {other:?}")),
    }
}

/// The head of a masked client frame announcing `len` payload bytes, the
/// last of its message if `fin`. The mask key is zero, so the payload goes
/// as is.
pub fn client_frame_head(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut head = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => head.push(0x80 | len as u8),
        126..=0xffff => {
            head.push(0x80 | 126);
            head.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            head.push(0x80 | 127);
            head.extend_from_slice(&len.to_be_bytes());
        }
    }
    head.extend_from_slice(&[0, 0, 0, 0]);
    head
}
