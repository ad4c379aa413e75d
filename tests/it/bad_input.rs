//! Bad input gets a clear error and costs nothing else: a 4xx at submit, or a
//! job that ends `failed` with a code, and the node keeps working.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::{clip, eventually, fixture, TestNode};

#[tokio::test]
async fn not_a_video_empty_and_oversized_uploads_are_refused_at_submit() {
    let node = TestNode::start_with(|c| c.max_upload_bytes = 64 * 1024)
        .await
        .serve();
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| client.post(format!("{}/jobs", node.base)).body(body).send();

    let text = post(b"this is a plain text file, not a video at all. ".repeat(20))
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let body: serde_json::Value = text.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    let wav = fixture("tone.wav", &["-f", "lavfi", "-i", "sine=duration=0.2"]);
    let refused = post(std::fs::read(wav).unwrap()).await.unwrap();
    assert_eq!(
        refused.status(),
        415,
        "a WAV file is audio, not a video container"
    );

    let empty = post(Vec::new()).await.unwrap();
    assert_eq!(empty.status(), 422);
    let body: serde_json::Value = empty.json().await.unwrap();
    assert_eq!(body["error"]["code"], "empty_upload");

    let big = post(vec![0u8; 100 * 1024]).await.unwrap();
    assert_eq!(big.status(), 413);
    let body: serde_json::Value = big.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // Over the limit without a Content-Length: refused while streaming.
    let mut video = std::fs::read(clip(1)).unwrap();
    video.resize(100 * 1024, 0);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        video.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = client
        .post(format!("{}/jobs", node.base))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);

    let list: serde_json::Value = reqwest::get(format!("{}/jobs", node.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        0,
        "no job was created"
    );
    let uploads = node.data_dir().join("uploads");
    assert_eq!(
        std::fs::read_dir(uploads).unwrap().count(),
        0,
        "no upload file is left"
    );
}

/// Submits `path` and returns the terminal (status code, document).
async fn run_to_end(
    node: &crate::support::Served,
    path: &std::path::Path,
) -> (u16, serde_json::Value) {
    let (status, job) = node.submit(path, "").await;
    assert_eq!(status, 202, "{job}");
    node.wait_for_terminal(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await
}

#[tokio::test]
async fn unreadable_media_fails_the_job_with_a_code_and_a_message() {
    let node = TestNode::start().await.serve();
    let dir = tempfile::tempdir().unwrap();

    // An mp4 cut in half, its index (moov, at the end) gone.
    let whole = fixture(
        "moov-at-end.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let bytes = std::fs::read(whole).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    // Garbage after a valid-looking container signature.
    let garbage = dir.path().join("garbage.mp4");
    let mut f = std::fs::File::create(&garbage).unwrap();
    f.write_all(b"\0\0\0\x18ftypisom\0\0\0\0isomiso2").unwrap();
    f.write_all(&[0x5a; 4096]).unwrap();
    drop(f);

    let audio_only = fixture(
        "audio-only.m4a",
        &["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"],
    );
    let absurd = fixture(
        "absurd-10000x16.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=10000x16:d=0.2",
            "-c:v",
            "ffv1",
        ],
    );

    for (path, code) in [
        (truncated.as_path(), "invalid_media"),
        (garbage.as_path(), "invalid_media"),
        (audio_only.as_path(), "no_video_stream"),
        (absurd.as_path(), "unsupported_dimensions"),
    ] {
        let (status, doc) = run_to_end(&node, path).await;
        assert_eq!(status, 400, "{}: {doc}", path.display());
        assert_eq!(doc["status"], "failed");
        assert_eq!(doc["error"]["code"], code, "{}: {doc}", path.display());
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.len() > 10, "a human message: {message}");
    }

    // The node still compresses a good file afterwards: no stuck worker.
    let (status, doc) = run_to_end(&node, &clip(1)).await;
    assert_eq!(status, 200, "{doc}");
}

/// A decompression bomb: 4 black frames of 8192x8192 H.264 (96 MiB each
/// decoded) in about 200 KB, as in issue 12.
fn bomb() -> std::path::PathBuf {
    fixture(
        "bomb-8192x8192-4-frames.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=8192x8192:r=2",
            "-frames:v",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// Submits `path` with `query`, waits for its end and returns the terminal
/// (status code, document) and how long the job took from submission.
async fn submit_and_wait(
    node: &crate::support::Served,
    path: &std::path::Path,
    query: &str,
) -> ((u16, serde_json::Value), Duration) {
    let started = Instant::now();
    let (status, job) = node.submit(path, query).await;
    assert_eq!(status, 202, "{job}");
    let end = node
        .wait_for_terminal(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    (end, started.elapsed())
}

/// Asserts a terminal document is a failure with `limits_exceeded` whose
/// message names `flag`, and returns the message.
fn assert_limits_exceeded((status, doc): &(u16, serde_json::Value), flag: &str) -> String {
    assert_eq!(*status, 400, "{doc}");
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "limits_exceeded", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.ends_with(&format!("({flag})")), "{message}");
    message
}

#[tokio::test]
async fn a_decompression_bomb_fails_at_once_and_frees_its_worker() {
    let bomb = bomb();
    // One worker: the clip after the bomb needs the very slot it held.
    let node = TestNode::start_with(|c| c.workers = Some(1)).await.serve();

    let (end, took) = submit_and_wait(&node, &bomb, "?preset=veryslow&crf=0").await;
    let message = assert_limits_exceeded(&end, "--max-pixels");
    assert_eq!(
        message,
        "the video is 8192x8192 (67108864 pixels), over the limit of 9437184 pixels (--max-pixels)"
    );
    assert!(took < Duration::from_secs(5), "failed after {took:?}");

    let ((status, doc), took) = submit_and_wait(&node, &clip(1), "").await;
    assert_eq!(status, 200, "{doc}");
    assert!(took < Duration::from_secs(30), "completed after {took:?}");
}

#[tokio::test]
async fn the_nodes_memory_and_duration_limits_hold_for_its_transcodes() {
    let bomb = bomb();
    let node = TestNode::start_with(|c| {
        c.workers = Some(1);
        // The bomb's pictures are allowed; the memory to decode them is not
        // (the child maps about 270 MiB of code, a picture is 96 MiB more,
        // and its decoder and encoder hold several). A small clip's
        // transcode fits: at 400 MiB, x264's threads sometimes could not
        // open the encoder.
        c.max_pixels = 8192 * 8192;
        c.max_child_memory_bytes = 640 << 20;
        c.max_duration_secs = 2;
    })
    .await
    .serve();

    let (end, took) = submit_and_wait(&node, &bomb, "?preset=veryslow&crf=0").await;
    let message = assert_limits_exceeded(&end, "--max-child-memory-bytes");
    assert_eq!(
        message,
        "the transcode needed more memory than the limit of 640 MiB (--max-child-memory-bytes)"
    );
    assert!(took < Duration::from_secs(10), "failed after {took:?}");

    let (end, _) = submit_and_wait(&node, &clip(3), "").await;
    let message = assert_limits_exceeded(&end, "--max-duration-secs");
    assert!(
        message.starts_with("the video lasts 3") && message.contains("over the limit of 2 s"),
        "{message}"
    );

    let ((status, doc), _) = submit_and_wait(&node, &clip(1), "").await;
    assert_eq!(status, 200, "the slot is free again: {doc}");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_no_job_and_no_file() {
    let node = TestNode::start().await.serve();
    let addr = node.base.trim_start_matches("http://").to_owned();
    // More than the node keeps in memory before writing (256 KiB), so part
    // of it is on disk when the client goes.
    let clip = std::fs::read(clip(2)).unwrap();
    let video = clip.repeat((1024 * 1024) / clip.len() + 1);
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        video.len() * 4
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&video).await.unwrap();
    socket.flush().await.unwrap();
    let uploads = node.data_dir().join("uploads");
    let files = || std::fs::read_dir(&uploads).unwrap().count();
    let is = |count: usize| {
        let files = files();
        std::future::ready(if files == count { Ok(()) } else { Err(files) })
    };
    eventually("the upload being written", Duration::from_secs(5), || is(1)).await;
    drop(socket);
    eventually("the partial upload removed", Duration::from_secs(5), || {
        is(0)
    })
    .await;
    let list: serde_json::Value = reqwest::get(format!("{}/jobs", node.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
}
