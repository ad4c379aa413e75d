//! The WebSocket event stream end to end, with tokio-tungstenite against a
//! node on port 0.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{clip, eventually, fixture, TestNode};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscribes to `url`. The node takes the subscription before it answers
/// the upgrade, so the snapshot is fixed once this returns.
async fn subscribe(url: &str) -> Socket {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    ws
}

/// Subscribes to `url` and reads to the close: [`read_to_close`].
async fn collect(url: &str) -> (Vec<Value>, Option<CloseCode>) {
    read_to_close(subscribe(url).await).await
}

/// Reads every frame until the close; returns the events and the close code.
async fn read_to_close(mut ws: Socket) -> (Vec<Value>, Option<CloseCode>) {
    let mut events = Vec::new();
    let read = async {
        while let Some(message) = ws.next().await {
            match message.expect("frame") {
                Message::Text(text) => {
                    events.push(serde_json::from_str(&text).expect("json event"))
                }
                Message::Close(frame) => return frame.map(|f| f.code),
                _ => {}
            }
        }
        None
    };
    let code = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("stream ends");
    (events, code)
}

#[tokio::test]
async fn events_are_snapshot_then_progress_then_terminal_status_then_close_1000() {
    let node = TestNode::start().await.serve();
    let input = fixture(
        "ws-640x360-6s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ],
    );
    let (status, job) = node.submit(&input, "?preset=medium").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap();
    let ws_base = node.base.replace("http://", "ws://");
    let (events, code) = collect(&format!("{ws_base}/jobs/{id}/events")).await;

    assert_eq!(code, Some(CloseCode::Normal));
    assert!(
        events.len() >= 3,
        "snapshot, progress, terminal: {events:?}"
    );
    assert_eq!(events[0]["event"], "snapshot");
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64().unwrap(),
            pair[0]["seq"].as_u64().unwrap() + 1,
            "seq rises by one"
        );
        let (a, b) = (
            pair[0]["job"]["progress"].as_f64().unwrap(),
            pair[1]["job"]["progress"].as_f64().unwrap(),
        );
        if pair[1]["job"]["status"] == "running" || pair[1]["job"]["status"] == "completed" {
            assert!(b >= a, "progress never goes back: {a} then {b}");
        }
    }
    assert!(
        events.iter().any(|e| e["event"] == "progress"),
        "progress events were pushed"
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "status");
    assert_eq!(last["job"]["status"], "completed");
    assert_eq!(last["job"]["progress"], 1.0);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["job"]["status"] == "completed")
            .count(),
        1,
        "terminal is last"
    );

    // Resuming after a reconnect replays what came after `since`.
    let since = events[1]["seq"].as_u64().unwrap();
    let (resumed, code) = collect(&format!("{ws_base}/jobs/{id}/events?since={since}")).await;
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(resumed.first().unwrap()["seq"].as_u64().unwrap(), since + 1);
    assert_eq!(resumed.last().unwrap()["job"]["status"], "completed");

    // A finished job: one snapshot that is terminal, then the close.
    let (after, code) = collect(&format!("{ws_base}/jobs/{id}/events")).await;
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["event"], "snapshot");
    assert_eq!(after[0]["job"]["status"], "completed");
}

#[tokio::test]
async fn unknown_jobs_get_404_before_the_upgrade() {
    let node = TestNode::start().await.serve();
    let ws_base = node.base.replace("http://", "ws://");
    let unknown = uuid::Uuid::now_v7();
    match tokio_tungstenite::connect_async(format!("{ws_base}/jobs/{unknown}/events")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected a 404, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let bad = format!(
        "{ws_base}/jobs/{}/events?since=minus-one",
        job["id"].as_str().unwrap()
    );
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected a 400, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test]
async fn a_canceled_job_ends_its_stream_with_the_canceled_status() {
    let node = TestNode::start_with(|c| c.workers = Some(0)).await.serve();
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_owned();
    let ws_base = node.base.replace("http://", "ws://");
    let url = format!("{ws_base}/jobs/{id}/events");
    let subscribed = subscribe(&url).await;
    let response = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (events, code) = read_to_close(subscribed).await;
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(events.first().unwrap()["job"]["status"], "queued");
    assert_eq!(events.last().unwrap()["job"]["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_answered_the_same_after_its_supervisor_stops() {
    let node = TestNode::start().await.serve();
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_owned();
    let (status, done) = node.wait_for_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(status, 200, "{done}");
    let ws_url = format!("{}/jobs/{id}/events", node.base.replace("http://", "ws://"));
    let (live, _) = collect(&ws_url).await;
    let last_seq = live.last().unwrap()["seq"].as_u64().unwrap();

    // The supervisor stops a few seconds after the end (its record has no
    // standby to reach); from then on the board and the disk answer.
    let awaited = "the finished job's supervisor to stop";
    eventually(awaited, Duration::from_secs(20), || {
        let running = ractor::registry::registered()
            .into_iter()
            .find(|name| name.contains(&id));
        std::future::ready(running.map_or(Ok(()), |name| Err(format!("{name:?} runs"))))
    })
    .await;

    let (status, polled) = node.wait_for_terminal(&id, Duration::from_secs(1)).await;
    assert_eq!((status, &polled), (200, &done));
    let (events, code) = collect(&ws_url).await;
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(events.len(), 1, "the terminal snapshot alone: {events:?}");
    assert_eq!(events[0]["job"]["status"], "completed");
    assert_eq!(events[0]["seq"].as_u64(), Some(last_seq));
    // Resuming at the last event: its snapshot again, as a live actor does.
    let resumed = collect(&format!("{ws_url}?since={last_seq}")).await;
    assert_eq!(resumed, (events, Some(CloseCode::Normal)));
    let client = reqwest::Client::new();
    let canceled = client
        .delete(format!("{}/jobs/{id}", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        canceled.status(),
        200,
        "cancel of a finished job is a no-op"
    );
    let result = client
        .get(format!("{}/jobs/{id}/result", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    assert_eq!(
        result.bytes().await.unwrap().len() as u64,
        done["result"]["bytes"].as_u64().unwrap()
    );
}
