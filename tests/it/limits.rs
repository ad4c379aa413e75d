//! The limits every node enforces on its clients (DESIGN.md, "Safe to
//! expose"), each seen as a client sees it: timeouts, the connection cap,
//! WebSocket and multipart bounds, disk admission, owner-only files. The
//! same attacks at scale, with the node's memory measured, are in
//! `tests/attack`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{clip, eventually, Served, TestNode};

/// Returns the host:port of a served node.
fn addr(node: &Served) -> String {
    node.base.trim_start_matches("http://").to_owned()
}

/// Reads what the node answers on `stream` until it closes it, or panics
/// after `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut answer))
        .await
        .expect("the node closes the connection in time")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Returns the files left in the node's uploads folder.
fn uploads_left(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("uploads")).unwrap().count()
}

/// The error code of a JSON error document.
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_request_whose_headers_never_end_is_dropped_after_the_header_timeout() {
    let node = TestNode::start_with(|c| c.header_timeout = 1).await.serve();
    let mut slow = TcpStream::connect(addr(&node)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .unwrap();
    let started = Instant::now();
    read_to_close(&mut slow, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&waited),
        "dropped after {waited:?}"
    );
    // A keep-alive connection that stays quiet goes the same way.
    let mut idle = TcpStream::connect(addr(&node)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_upload_that_goes_quiet_gets_408_and_leaves_no_file() {
    let node = TestNode::start_with(|c| c.idle_timeout = 1).await.serve();
    let mut stream = TcpStream::connect(addr(&node)).await.unwrap();
    let head = "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let video = std::fs::read(clip(1)).unwrap();
    // Enough to reach the disk (the upload spools 256 KiB at a time).
    let mut sent = 0;
    while sent < 600_000 {
        stream.write_all(&video).await.unwrap();
        sent += video.len();
    }
    let answer = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert_eq!(
        uploads_left(node.data_dir()),
        0,
        "the partial upload is removed"
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once_with_503() {
    let node = TestNode::start_with(|c| c.max_connections = 2)
        .await
        .serve();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr(&node)).await.unwrap();
        // A complete exchange proves the node counts the connection.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    let started = Instant::now();
    let mut third = TcpStream::connect(addr(&node)).await.unwrap();
    let answer = read_to_close(&mut third, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"unavailable\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A place freed is a place taken again.
    drop(held.pop());
    let healthz = format!("{}/healthz", node.base);
    eventually(
        "the freed place taken again",
        Duration::from_secs(5),
        || async {
            match reqwest::get(&healthz).await.map(|r| r.status()) {
                Ok(status) if status == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_websocket_message_over_4_kib_closes_the_socket_with_1009() {
    let node = TestNode::start().await.serve();
    let (status, job) = node.submit(&clip(30), "?preset=veryslow").await;
    assert_eq!(status, 202, "{job}");
    let ws = node.base.replacen("http://", "ws://", 1);
    let url = format!("{ws}/jobs/{}/events", job["id"].as_str().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    socket
        .send(Message::Text("x".repeat(4096).into()))
        .await
        .unwrap();
    // Within the limit: still subscribed.
    assert!(matches!(socket.next().await, Some(Ok(Message::Text(_)))));
    socket
        .send(Message::Binary(vec![0u8; 5000].into()))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, Some(CloseCode::Size));
    let _ = reqwest::Client::new()
        .delete(format!(
            "{}/jobs/{}",
            node.base,
            job["id"].as_str().unwrap()
        ))
        .send()
        .await;
}

/// A multipart body whose `file` part has `header_bytes` of extra header.
fn multipart(header_bytes: usize, content: &[u8]) -> Vec<u8> {
    let mut body = b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\nX-Pad: ".to_vec();
    body.extend(std::iter::repeat_n(b'p', header_bytes));
    body.extend_from_slice(b"\r\nContent-Type: video/mp4\r\n\r\n");
    body.extend_from_slice(content);
    body.extend_from_slice(b"\r\n--b0undary--\r\n");
    body
}

async fn post_multipart(node: &Served, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/jobs", node.base))
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn multipart_part_headers_over_16_kib_get_431_and_the_body_counts_against_the_limit() {
    let video = std::fs::read(clip(1)).unwrap();
    let node = TestNode::start_with(|c| c.max_upload_bytes = video.len() as u64 + 32 * 1024)
        .await
        .serve();
    let (status, body) = post_multipart(&node, multipart(100, &video)).await;
    assert_eq!(status, 202, "small headers are fine: {body}");

    let (status, body) = post_multipart(&node, multipart(17 * 1024, &video)).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(code(&body), "header_fields_too_large");

    // The file part fits the limit, the body with its padding does not.
    let mut padded = b"--b0undary\r\nContent-Disposition: form-data; name=\"pad\"\r\n\r\n".to_vec();
    padded.extend(std::iter::repeat_n(b'z', 40 * 1024));
    padded.extend_from_slice(b"\r\n");
    padded.extend(multipart(0, &video));
    let (status, body) = post_multipart(&node, padded).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(uploads_left(node.data_dir()), 0);
}

#[tokio::test]
async fn an_upload_that_would_fill_the_disk_gets_507_and_leaves_no_file() {
    let node = TestNode::start_with(|c| c.min_free_bytes = u64::MAX / 4)
        .await
        .serve();
    let (status, body) = node.submit(&clip(1), "").await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(code(&body), "insufficient_storage");

    // Without a Content-Length, found while streaming.
    let video = std::fs::read(clip(1)).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|_| Ok(video.clone())).collect();
    let response = reqwest::Client::new()
        .post(format!("{}/jobs", node.base))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 507);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(uploads_left(node.data_dir()), 0);
}

#[tokio::test]
async fn every_file_and_folder_of_a_job_is_its_owners_only() {
    let node = TestNode::start().await.serve();
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202, "{job}");
    let (status, done) = node
        .wait_for_terminal(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(status, 200, "{done}");
    let mut seen = 0;
    let mut stack = vec![node.data_dir().to_owned()];
    while let Some(path) = stack.pop() {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 2, "the job's record and result: {seen} files");
}

#[tokio::test]
async fn a_websocket_client_that_answers_no_ping_is_dropped_after_the_idle_timeout() {
    let node = TestNode::start_with(|c| c.idle_timeout = 1).await.serve();
    let (status, job) = node.submit(&clip(30), "?preset=veryslow").await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let ws = node.base.replacen("http://", "ws://", 1);
    let url = format!("{ws}/jobs/{id}/events");

    // A client that reads answers pings (tungstenite does it while reading):
    // it stays past the idle timeout.
    let (mut reading, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), reading.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => panic!("a live client was closed: {frame:?}"),
            Ok(None | Some(Err(_))) => panic!("a live client was dropped"),
            _ => {}
        }
    }

    // A client that reads nothing answers nothing: the node closes (1001)
    // and hangs up. Reading then may first fail to send the pongs owed.
    let (mut silent, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // The idle timeout (1 s) elapsing is what this test is about: nothing
    // but the clock marks it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(2), silent.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break format!("{:?}", frame.map(|f| f.code)),
            Ok(Some(Ok(_))) => {
                assert!(
                    Instant::now() < deadline,
                    "the silent client is still connected"
                );
            }
            Ok(Some(Err(e))) => break e.to_string(),
            Ok(None) => break "end of stream".into(),
            Err(_) => panic!("the silent client is still connected"),
        }
    };
    assert!(
        ended == format!("{:?}", Some(CloseCode::Away))
            || ended.contains("Broken pipe")
            || ended.contains("reset"),
        "{ended}"
    );
    let _ = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", node.base))
        .send()
        .await;
}
