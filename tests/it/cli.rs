//! The `vidpress` CLI against a node on port 0.

use std::process::Command;

use crate::support::{clip, ffprobe, stream, TestNode};

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
