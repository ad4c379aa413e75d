//! The long poll of `GET /jobs/{id}` (`Prefer: wait=N`, RFC 7240): how
//! long a client asks to wait, and the wait for the job's end.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::sync::broadcast::error::RecvError;
use vidpress_actors::board::Published;
use vidpress_actors::{JobEvent, JobId, Subscription};

use super::error::ApiError;
use super::AppState;

/// The longest `Prefer: wait` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Reads `wait=N` from the `Prefer` headers, capped at [`MAX_WAIT`]; other
/// preferences and malformed values are ignored, as RFC 7240 asks.
pub fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .filter_map(|preference| {
            let (name, value) = preference.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("wait")).then_some(value)?;
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .next()
        .map(|secs| Duration::from_secs(secs).min(MAX_WAIT))
}

/// Waits until the job's terminal event or `limit`; returns its snapshot
/// then (the terminal one from the event, or the latest on the board).
pub async fn wait_for_end(
    app: &AppState,
    id: JobId,
    limit: Duration,
) -> Result<Arc<Published>, ApiError> {
    if let Ok(Subscription {
        backlog,
        live: Some(mut live),
    }) = app.jobs.subscribe(id, None).await
    {
        let ended = tokio::time::timeout(limit, async {
            // The job may have ended between the poll and the subscription.
            if let Some(event) = backlog.into_iter().find(JobEvent::is_terminal) {
                return Some(event);
            }
            loop {
                match live.recv().await {
                    Ok(event) if event.is_terminal() => return Some(event),
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
        })
        .await;
        if let Ok(Some(event)) = ended {
            return Ok(Arc::new(Published::from((*event.job).clone())));
        }
    }
    Ok(app.jobs.get(id)?)
}
