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
