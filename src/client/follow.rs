//! Following a job: its WebSocket event stream shown as a progress bar
//! until the job's terminal status, reconnecting with `since` when the
//! stream drops.

use std::time::Duration;

use futures::StreamExt;
use indicatif::ProgressBar;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::connection::Server;
use super::{bar_style, ClientError};

/// Reconnects a watch may make after its WebSocket drops.
const RECONNECTS: u32 = 30;

/// Follows the events of job `id` until its terminal status, reconnecting
/// with `since` when the stream drops. Returns the last status document;
/// a job that did not complete is an error.
pub(super) async fn follow(
    server: &Server,
    id: &str,
    show_bar: bool,
) -> Result<Value, ClientError> {
    let bar = if show_bar {
        ProgressBar::new(1000).with_style(bar_style("compressing"))
    } else {
        ProgressBar::hidden()
    };
    let mut since: Option<u64> = None;
    let mut failures = 0;
    loop {
        let path = match since {
            Some(n) => format!("/jobs/{id}/events?since={n}"),
            None => format!("/jobs/{id}/events"),
        };
        let mut stream = match server.websocket(&path).await {
            Ok(stream) => stream,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == StatusCode::UNAUTHORIZED =>
            {
                return Err(server.refusal(StatusCode::UNAUTHORIZED, &Value::Null));
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(ClientError::Server {
                    status: response.status().as_u16(),
                    message: "the job cannot be followed (unknown id?)".into(),
                })
            }
            Err(e) if failures < RECONNECTS => {
                failures += 1;
                bar.set_message(format!("reconnecting: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(message) = stream.next().await {
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(_) => break,
            };
            let event: Value = serde_json::from_str(&text)
                .map_err(|e| ClientError::Protocol(format!("bad event: {e}")))?;
            since = event["seq"].as_u64().or(since);
            let job = &event["job"];
            let status = job["status"].as_str().unwrap_or("unknown").to_owned();
            let progress = job["progress"].as_f64().unwrap_or(0.0);
            bar.set_position((progress * 1000.0).round() as u64);
            bar.set_message(status.clone());
            match status.as_str() {
                "completed" => {
                    bar.finish_and_clear();
                    return Ok(job.clone());
                }
                "failed" | "canceled" => {
                    bar.abandon();
                    return Err(ClientError::JobEnded {
                        status,
                        message: job["error"]["message"].as_str().map(str::to_owned),
                    });
                }
                _ => {}
            }
        }
        failures += 1;
        if failures > RECONNECTS {
            return Err(ClientError::Protocol(
                "the event stream kept closing before the job ended".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
