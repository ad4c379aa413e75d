//! The `vidpress` CLI against a node on port 0.

use std::process::Command;

use crate::support::{clip, eventually, ffprobe, stream, TestNode};

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
