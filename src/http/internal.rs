//! Node-to-node endpoints under `/internal`: a worker on another node fetches
//! a job's input and sends back its output, streamed. Every request must
//! carry the cluster cookie, checked ([`authorize`]) before anything of the
//! request is read; without a cluster these routes do not exist.

use axum::body::Body;
use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use vidpress_actors::record::JobRecord;
use vidpress_actors::{paths, Attempt, Epoch, JobId, ReplicaFile};

use super::error::ApiError;
use super::jobs::parse_id;
use super::AppState;
use crate::transfer::COOKIE_HEADER;

/// Middleware on `/internal`: refuses requests that do not carry this
/// cluster's cookie, before any extractor parses them. The comparison takes
/// the same time wherever the given cookie differs.
pub async fn authorize(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !cookie_matches(app.cookie.as_deref(), request.headers()) {
        return Err(ApiError::Forbidden);
    }
    Ok(next.run(request).await)
}

fn cookie_matches(cookie: Option<&str>, headers: &HeaderMap) -> bool {
    match (cookie, headers.get(COOKIE_HEADER)) {
        (Some(cookie), Some(given)) => cookie.as_bytes().ct_eq(given.as_bytes()).into(),
        _ => false,
    }
}

/// `GET /internal/jobs/{id}/input`: the job's input, for a worker elsewhere.
pub async fn input(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
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
    Path((id, attempt)): Path<(String, Attempt)>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if !paths::job_dir(&app.data_dir, id).is_dir() {
        return Err(ApiError::NotFound);
    }
    let path = paths::attempt_output(&app.data_dir, id, attempt);
    store(request.into_body(), &path).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Streams `body` to `path` durably: a `.part` file, fsynced, renamed.
async fn store(body: Body, path: &std::path::Path) -> Result<(), ApiError> {
    let partial = path.with_extension("part");
    let written = async {
        let mut file = tokio::fs::File::create(&partial).await?;
        let mut body = body.into_data_stream();
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?)
                .await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        tokio::fs::rename(&partial, path).await
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(ApiError::Internal(format!(
            "cannot store {}: {e}",
            path.display()
        )));
    }
    Ok(())
}

/// Returns whether this node already owns `id` under an epoch at least
/// `epoch` (it took the job over): copies from the former owner are stale.
fn owns_newer(app: &AppState, id: JobId, epoch: Epoch) -> bool {
    JobRecord::read(&paths::record(&app.data_dir, id)).is_ok_and(|r| r.epoch > epoch)
}

/// `PUT /internal/replicas/{id}/{file}`: a copy of a job's input or result,
/// kept on this node as the job's standby.
pub async fn replica_file(
    State(app): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let file = [ReplicaFile::Input, ReplicaFile::Result]
        .into_iter()
        .find(|f| f.name() == file)
        .ok_or(ApiError::NotFound)?;
    let dir = paths::replica_dir(&app.data_dir, id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot create replica folder: {e}")))?;
    store(request.into_body(), &dir.join(file.name())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /internal/replicas/{id}/record`: the job's record, durable on this
/// node before the answer. A record older than what is held is refused.
pub async fn replica_record(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(record): Json<JobRecord>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if record.id != id {
        return Err(ApiError::BadRequest("the record is for another job".into()));
    }
    let dir = paths::replica_dir(&app.data_dir, id);
    let path = dir.join("job.json");
    let held = JobRecord::read(&path).map_or(Epoch::default(), |r| r.epoch);
    if held > record.epoch || owns_newer(&app, id, record.epoch) {
        return Ok(StatusCode::CONFLICT.into_response());
    }
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        record.write(&path)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("cannot store the replica record: {e}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /internal/jobs/{id}/relinquish?epoch=N&finished=B`: another node
/// took the job over under epoch N, its copy finished or not. This node's
/// copy gives way (204), or is kept (409) when it is the one that finished.
pub async fn relinquish(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let epoch = query
        .get("epoch")
        .and_then(|e| e.parse::<u32>().ok())
        .map(Epoch::new)
        .ok_or_else(|| ApiError::BadRequest("epoch must be a number".into()))?;
    let finished = match query.get("finished").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "finished must be true or false".into(),
            ))
        }
    };
    let kept = app.jobs.relinquish(id, epoch, finished).await?;
    Ok(if kept {
        StatusCode::CONFLICT
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE_HEADER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_exact_cookie_is_accepted() {
        let cookie = Some("s3cret");
        assert!(cookie_matches(cookie, &with_cookie("s3cret")));
        assert!(!cookie_matches(cookie, &with_cookie("s3cre")));
        assert!(!cookie_matches(cookie, &with_cookie("s3cret!")));
        assert!(!cookie_matches(cookie, &with_cookie("S3cret")));
        assert!(!cookie_matches(cookie, &HeaderMap::new()));
        assert!(!cookie_matches(None, &with_cookie("s3cret")));
    }
}
