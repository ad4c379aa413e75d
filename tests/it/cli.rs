//! The `vidpress` CLI against a node on port 0: over HTTP, over TLS with
//! `--ca`, and with `--token` against a server that wants one.

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};

use crate::support::{clip, eventually, ffprobe, stream, TestNode};
use crate::tls::https_node;

#[tokio::test]
async fn submit_wait_downloads_the_result_and_status_prints_it() {
    let node = TestNode::start().await.serve();
    let out = node.data_dir().join("cli-out.mp4");
    let base = node.base.clone();
    let input = clip(2);
    let out_path = out.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vidpress"))
            .args([
                "submit",
                "--wait",
                "--crf",
                "32",
                "--max-height",
                "120",
                "--server",
                &base,
                "-o",
            ])
            .arg(&out_path)
            .arg(&input)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let probe = ffprobe(&out);
    assert_eq!(stream(&probe, "video").unwrap()["height"], 120);

    let base = node.base.clone();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vidpress"))
            .args(["status", &id, "--server", &base])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["options"]["crf"], 32);
}

#[tokio::test]
async fn submit_reports_a_refused_upload_and_fails() {
    let node = TestNode::start().await.serve();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a video ".repeat(100)).unwrap();
    let base = node.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vidpress"))
            .args(["submit", "--server", &base])
            .arg(&text)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("415"), "{stderr}");
}

#[tokio::test]
async fn watch_follows_a_job_to_its_end_and_cancel_stops_one() {
    let node = TestNode::start_with(|c| c.workers = Some(0)).await.serve();
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_owned();
    let base = node.base.clone();
    let watch_id = id.clone();
    let watcher = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vidpress"))
            .args(["watch", &watch_id, "--server", &base])
            .output()
            .unwrap()
    });
    // The watch follows the job once the node counts its subscriber.
    let metrics = format!("{}/metrics", node.base);
    let awaited = "the watch to subscribe";
    eventually(awaited, std::time::Duration::from_secs(10), || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        let subscribers = text
            .lines()
            .find_map(|l| l.strip_prefix("vidpress_ws_subscribers "))
            .and_then(|v| v.parse::<f64>().ok());
        match subscribers {
            Some(n) if n >= 1.0 => Ok(()),
            _ => Err(text),
        }
    })
    .await;
    let base = node.base.clone();
    let cancel_id = id.clone();
    let canceled = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vidpress"))
            .args(["cancel", &cancel_id, "--server", &base])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(canceled.status.success());
    assert_eq!(String::from_utf8_lossy(&canceled.stdout).trim(), "canceled");
    let watched = watcher.await.unwrap();
    assert!(
        !watched.status.success(),
        "a canceled job ends the watch with an error"
    );
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert!(stderr.contains("canceled"), "{stderr}");
}

/// Runs the `vidpress` CLI with `args` off the runtime's threads.
async fn vidpress(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vidpress"))
            .args(&args)
            .env_remove("VIDPRESS_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_cli_trusts_a_private_ca_with_ca() {
    let dir = tempfile::tempdir().unwrap();
    // Held to the end: the node stops when dropped.
    let (ca, _node, base) = https_node(dir.path()).await;
    let out = dir.path().join("out.mp4");
    let ca_pem = ca.pem.display().to_string();
    // Upload, events over wss, download: all over TLS.
    let submitted = vidpress(
        [
            "submit",
            "--wait",
            "--server",
            &base,
            "--ca",
            &ca_pem,
            "-o",
            &out.display().to_string(),
            &clip(1).display().to_string(),
        ]
        .map(String::from)
        .into(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&submitted.stderr);
    assert!(submitted.status.success(), "{stderr}");
    assert_eq!(
        stream(&ffprobe(&out), "video").unwrap()["codec_name"],
        "h264"
    );
    let id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();

    // Without --ca the node's certificate is from no CA the system trusts.
    let untrusted = vidpress(["status", &id, "--server", &base].map(String::from).into()).await;
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
}

/// A stand-in server that refuses every request with 401, as a node with
/// API keys does, and records the `Authorization` headers it was sent.
async fn refusing_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let seen = recorded.clone();
        async move {
            let given = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            seen.lock().unwrap().push(given);
            (
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, "Bearer")],
                r#"{"error":{"code":"unauthorized","message":"a token is needed"}}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

#[tokio::test]
async fn the_cli_sends_its_token_and_says_what_a_401_means() {
    let (base, seen) = refusing_server().await;
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("in.mp4");
    std::fs::write(&video, b"not looked at").unwrap();
    let video = video.display().to_string();
    let id = "01936a6e-7f1c-7000-8000-000000000000";
    let token = "tenant-token-0123456789abcdef";
    let commands: [&[&str]; 4] = [
        &["submit", &video],
        &["status", id],
        &["watch", id],
        &["cancel", id],
    ];
    for command in commands {
        let mut args: Vec<String> = command.iter().map(|a| a.to_string()).collect();
        args.extend(["--server", &base].map(String::from));
        let without = vidpress(args.clone()).await;
        let stderr = String::from_utf8_lossy(&without.stderr);
        assert!(!without.status.success(), "{command:?}");
        assert!(
            stderr.contains("the server needs a token: give --token or VIDPRESS_TOKEN"),
            "{command:?}: {stderr}"
        );

        args.extend(["--token", token].map(String::from));
        let with = vidpress(args).await;
        let stderr = String::from_utf8_lossy(&with.stderr);
        assert!(!with.status.success(), "{command:?}");
        assert!(
            stderr.contains("the server refused the token"),
            "{command:?}: {stderr}"
        );
    }
    // Each command asked twice: without a token, then with it (the watch
    // on its WebSocket's upgrade request).
    let seen = seen.lock().unwrap().clone();
    let bearer = format!("Bearer {token}");
    assert_eq!(
        seen,
        ["none", bearer.as_str()].repeat(commands.len()),
        "the Authorization headers sent"
    );
}

#[tokio::test]
async fn submit_takes_a_codec_and_a_target_size_with_a_unit() {
    let node = TestNode::start().await.serve();
    let input = clip(2).display().to_string();
    let submitted = vidpress(
        [
            "submit",
            "--codec",
            "vp9",
            "--target-size",
            "0.2MB",
            "--preset",
            "ultrafast",
            "--server",
            &node.base,
            &input,
        ]
        .map(String::from)
        .into(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&submitted.stderr);
    assert!(submitted.status.success(), "{stderr}");
    let id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    // The node got the options as query parameters, the format being vp9's.
    let (status, doc) = node
        .wait_for_terminal(&id, std::time::Duration::from_secs(120))
        .await;
    assert_eq!(status, 200, "{doc}");
    let options = &doc["options"];
    assert_eq!(options["codec"], "vp9");
    assert_eq!(options["format"], "webm");
    assert_eq!(options["target_size_bytes"], 200_000);
    assert_eq!(options["crf"], serde_json::Value::Null);
    assert_eq!(options["min_ssim"], serde_json::Value::Null);
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["result"]["content_type"], "video/webm");
}

#[tokio::test]
async fn submit_takes_a_min_ssim_and_writes_the_result_with_its_format() {
    let node = TestNode::start().await.serve();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("talk.mp4");
    std::fs::copy(clip(1), &input).unwrap();
    let submitted = vidpress(
        [
            "submit",
            "--wait",
            "--codec",
            "av1",
            "--format",
            "webm",
            "--min-ssim",
            "0.95",
            "--server",
            &node.base,
            &input.display().to_string(),
        ]
        .map(String::from)
        .into(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&submitted.stderr);
    assert!(submitted.status.success(), "{stderr}");
    // Without -o the file is named after the input, with the format's extension.
    let out = dir.path().join("talk.compressed.webm");
    let probe = ffprobe(&out);
    assert_eq!(stream(&probe, "video").unwrap()["codec_name"], "av1");
    assert!(
        stderr.contains("SSIM 0."),
        "the quality is reported: {stderr}"
    );
    assert!(
        stderr.contains("CRF "),
        "the CRF found is reported: {stderr}"
    );
    let id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    let (_, doc) = crate::support::get_json(&format!("{}/jobs/{id}", node.base))
        .await
        .expect("the status document");
    assert_eq!(doc["options"]["min_ssim"], 0.95);
    assert_eq!(doc["options"]["format"], "webm");
}

#[tokio::test]
async fn submit_refuses_a_bad_target_size_before_uploading() {
    // No server listens there: the value is refused before any request.
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("in.mp4");
    std::fs::write(&video, b"not looked at").unwrap();
    let video = video.display().to_string();
    for (size, says) in [
        ("25XB", "unknown unit \"XB\""),
        ("lots", "is not a size"),
        ("0MB", "above zero"),
    ] {
        let output = vidpress(
            [
                "submit",
                "--target-size",
                size,
                "--server",
                "http://127.0.0.1:9",
                &video,
            ]
            .map(String::from)
            .into(),
        )
        .await;
        assert!(!output.status.success(), "{size} is refused");
        assert_eq!(output.status.code(), Some(2), "a usage error: {size}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--target-size") && stderr.contains(says),
            "{size}: {stderr}"
        );
        assert!(!stderr.contains("cannot reach"), "{size}: {stderr}");
    }
    // Two rate modes at once are refused too.
    let output = vidpress(
        [
            "submit",
            "--crf",
            "30",
            "--target-size",
            "25MB",
            "--server",
            "http://127.0.0.1:9",
            &video,
        ]
        .map(String::from)
        .into(),
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
