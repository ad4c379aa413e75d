//! Node-to-node endpoints under `/internal`: a worker on another node fetches
//! a job's input and sends back its output, streamed. Every request must
//! carry the cluster cookie; without a cluster these routes do not exist.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use vidpress_actors::paths;

use super::error::ApiError;
use super::jobs::parse_id;
use super::AppState;
use crate::transfer::COOKIE_HEADER;

/// Refuses requests that do not carry this cluster's cookie.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(COOKIE_HEADER).map(|v| v.as_bytes());
    match (&app.cookie, given) {
        (Some(cookie), Some(given)) if cookie.as_bytes() == given => Ok(()),
        _ => Err(ApiError::Forbidden),
    }
}

/// `GET /internal/jobs/{id}/input`: the job's input, for a worker elsewhere.
pub async fn input(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(&app, request.headers())?;
    let path = paths::input(&app.data_dir, parse_id(&id)?);
    let response = ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot serve input: {e}")))?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err(ApiError::NotFound);
    }
    Ok(response.map(Body::new))
}

/// `PUT /internal/jobs/{id}/attempts/{attempt}/output`: an attempt's output,
/// written beside the others of its job; the supervisor decides whether it
/// becomes the result.
pub async fn output(
    State(app): State<AppState>,
    Path((id, attempt)): Path<(String, u32)>,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(&app, request.headers())?;
    let id = parse_id(&id)?;
    if !paths::job_dir(&app.data_dir, id).is_dir() {
        return Err(ApiError::NotFound);
    }
    let path = paths::attempt_output(&app.data_dir, id, attempt);
    let partial = path.with_extension("part");
    let written = async {
        let mut file = tokio::fs::File::create(&partial).await?;
        let mut body = request.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?)
                .await?;
        }
        file.flush().await?;
        tokio::fs::rename(&partial, &path).await
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(ApiError::Internal(format!(
            "cannot store attempt output: {e}"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
