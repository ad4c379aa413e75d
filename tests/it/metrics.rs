//! `GET /metrics`: Prometheus text that moves with a job.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;

use crate::support::{clip, Served, TestNode};

/// Scrapes `/metrics` into sample → value (sample = name with its labels).
async fn scrape(node: &Served) -> HashMap<String, f64> {
    let response = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (sample, value) = line.rsplit_once(' ').expect("sample and value");
            (sample.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, sample: &str) -> f64 {
    samples.get(sample).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_gauges_move_with_a_job() {
    let node = TestNode::start_with(|c| c.workers = Some(1)).await.serve();
    let before = scrape(&node).await;
    assert_eq!(value(&before, r#"vidpress_jobs{status="completed"}"#), 0.0);
    assert_eq!(
        value(
            &before,
            r#"vidpress_worker_slots{node="node-1",state="free"}"#
        ) + value(
            &before,
            r#"vidpress_worker_slots{node="node-1",state="busy"}"#
        ),
        1.0,
        "{before:?}"
    );

    let input = clip(1);
    let (status, job) = node.submit(&input, "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap();
    let (status, done) = node.wait_for_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(status, 200);
    let after = scrape(&node).await;

    let submits = r#"vidpress_http_requests_total{method="POST",route="/jobs",status="202"}"#;
    assert_eq!(value(&after, submits) - value(&before, submits), 1.0);
    let polls = r#"vidpress_http_requests_total{method="GET",route="/jobs/{id}",status="200"}"#;
    assert!(value(&after, polls) >= 1.0, "{after:?}");
    assert!(
        value(
            &after,
            r#"vidpress_http_request_duration_seconds_count{method="POST",route="/jobs"}"#
        ) >= 1.0
    );
    assert_eq!(value(&after, r#"vidpress_jobs{status="completed"}"#), 1.0);
    assert_eq!(value(&after, r#"vidpress_jobs{status="queued"}"#), 0.0);
    assert_eq!(
        value(
            &after,
            r#"vidpress_jobs_finished_total{status="completed"}"#
        ),
        1.0
    );
    assert_eq!(value(&after, "vidpress_transcode_seconds_count"), 1.0);
    assert!(value(&after, "vidpress_transcode_seconds_sum") > 0.0);
    assert_eq!(
        value(&after, "vidpress_transcode_input_bytes_total"),
        std::fs::metadata(&input).unwrap().len() as f64
    );
    assert_eq!(
        value(&after, "vidpress_transcode_output_bytes_total"),
        done["result"]["bytes"].as_f64().unwrap()
    );
    assert_eq!(value(&after, "vidpress_queue_depth"), 0.0);

    // A subscriber to the finished job gets one frame (its snapshot).
    let url = format!("{}/jobs/{id}/events", node.base.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    while let Some(Ok(frame)) = socket.next().await {
        if frame.is_close() {
            break;
        }
    }
    let sent = "vidpress_ws_events_sent_total";
    assert_eq!(value(&scrape(&node).await, sent) - value(&after, sent), 1.0);
}
