//! Node-to-node endpoints under `/internal`: a worker on another node fetches
//! a job's input and sends back its output, streamed; an owner stores its
//! copies here when this node is a job's standby (kept by
//! `vidpress_actors::replicas`, which knows their layout and rules). Every
//! request must be signed with the cluster cookie (`crate::signing`),
//! checked ([`authorize`]) before anything of the request is read; without
//! a cluster these routes do not exist.

use std::str::FromStr;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer};
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tracing::{debug, error, warn};
use vidpress_actors::record::JobRecord;
use vidpress_actors::replicas::{self, Stored};
use vidpress_actors::{paths, transfer, Attempt, Epoch, ReplicaFile};

use super::error::ApiError;
use super::extract::parse_id;
use super::AppState;
use crate::signing::{Refusal, SIGNATURE_HEADER};

/// Middleware on `/internal`: refuses requests that do not carry a valid
/// signature of this cluster's cookie (checked in constant time, within the
/// time window, nonce unseen), before any extractor parses them.
pub async fn authorize(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(verifier) = &app.verifier else {
        return Err(ApiError::Forbidden);
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let verdict = verifier.verify(
        request.method(),
        path,
        request.headers().get(SIGNATURE_HEADER),
    );
    if let Err(refusal) = verdict {
        log_refusal(&refusal, path);
        return Err(ApiError::Forbidden);
    }
    Ok(next.run(request).await)
}

/// Logs a refused request: loud when it was signed with the cookie (a
/// clock apart, a replay, a peer flooding), quiet when anyone could have
/// sent it.
fn log_refusal(refusal: &Refusal, path: &str) {
    match refusal {
        Refusal::TooManyNonces => error!(%path, reason = %refusal, "node-to-node request refused"),
        Refusal::OutOfWindow { .. } | Refusal::Replayed => {
            warn!(%path, reason = %refusal, "node-to-node request refused");
        }
        Refusal::Missing | Refusal::Malformed | Refusal::BadSignature => {
            debug!(%path, reason = %refusal, "node-to-node request refused");
        }
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
    transfer::receive(request.into_body().into_data_stream(), &path)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot store {}: {e}", path.display())))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /internal/replicas/{id}/{file}`: a copy of a job's input, result or
/// a split job's finished piece,
/// kept on this node as the job's standby.
pub async fn replica_file(
    State(app): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let file = ReplicaFile::from_name(&file).ok_or(ApiError::NotFound)?;
    replicas::store_file(
        &app.data_dir,
        id,
        file,
        request.into_body().into_data_stream(),
    )
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of a copy's drop: `?given-up=N`, if the owner gave the job
/// up, which it held under epoch N.
#[derive(Debug, Deserialize)]
pub struct DropQuery {
    #[serde(rename = "given-up")]
    given_up: Option<Parsed<u32>>,
}

impl DropQuery {
    /// Returns the epoch the owner gave the job up under, if it did.
    fn given_up(&self) -> Result<Option<Epoch>, ApiError> {
        match &self.given_up {
            None => Ok(None),
            Some(Parsed(Some(epoch))) => Ok(Some(Epoch::new(*epoch))),
            Some(Parsed(None)) => Err(ApiError::BadRequest("given-up must be a number".into())),
        }
    }
}

/// `DELETE /internal/replicas/{id}`: drops an input streamed here for a
/// job its owner did not accept (a copy without a record); a copy with a
/// record stays. With `?given-up=N`, the owner gave the job up to another
/// node, which holds its own copy: this one goes if its epoch is N or
/// older, so that it is never taken over.
pub async fn drop_copy(
    State(app): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<DropQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let dropped = match query.given_up()? {
        None => replicas::drop_unaccepted(&app.data_dir, id).await,
        Some(epoch) => replicas::drop_given_up(&app.data_dir, id, epoch).await,
    };
    dropped.map_err(|e| ApiError::Internal(format!("cannot drop the copy of {id}: {e}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /internal/replicas/{id}/record`: the job's record, durable on this
/// node before the answer. A record older than what is held is refused (409),
/// and so is an unfinished job's until its input is here.
pub async fn replica_record(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(record): Json<JobRecord>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if record.id != id {
        return Err(ApiError::BadRequest("the record is for another job".into()));
    }
    let stored = replicas::store_record(&app.data_dir, record)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(match stored {
        Stored::Stored => StatusCode::NO_CONTENT.into_response(),
        Stored::Stale => StatusCode::CONFLICT.into_response(),
        Stored::WithoutInput => {
            (StatusCode::CONFLICT, "the job's input is not here yet").into_response()
        }
    })
}

/// The query of a relinquish: `?epoch=N&finished=B`. Each value is kept as
/// whether it parsed, so that a bad one gets this endpoint's own message.
#[derive(Debug, Deserialize)]
pub struct RelinquishQuery {
    epoch: Option<Parsed<u32>>,
    finished: Option<Parsed<bool>>,
}

/// A query value: `Some` if it parsed as a `T` (`FromStr`), else `None`.
#[derive(Debug)]
struct Parsed<T>(Option<T>);

impl<'de, T: FromStr> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let given = String::deserialize(deserializer)?;
        Ok(Self(given.parse().ok()))
    }
}

impl RelinquishQuery {
    /// Returns the epoch the job was taken over under; it must be given.
    fn epoch(&self) -> Result<Epoch, ApiError> {
        self.epoch
            .as_ref()
            .and_then(|p| p.0)
            .map(Epoch::new)
            .ok_or_else(|| ApiError::BadRequest("epoch must be a number".into()))
    }

    /// Returns whether the taker's copy is finished; false unless given.
    fn finished(&self) -> Result<bool, ApiError> {
        match &self.finished {
            None => Ok(false),
            Some(Parsed(Some(finished))) => Ok(*finished),
            Some(Parsed(None)) => Err(ApiError::BadRequest(
                "finished must be true or false".into(),
            )),
        }
    }
}

/// `POST /internal/jobs/{id}/relinquish?epoch=N&finished=B`: another node
/// took the job over under epoch N, its copy finished or not. This node's
/// copy gives way (204), or is kept (409) when it is the one that finished.
pub async fn relinquish(
    State(app): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<RelinquishQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (epoch, finished) = (query.epoch()?, query.finished()?);
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
    use super::*;

    fn relinquish_query(query: &str) -> Result<(Epoch, bool), String> {
        let uri = format!("/internal/jobs/x/relinquish?{query}")
            .parse()
            .unwrap();
        let Query(query) = Query::<RelinquishQuery>::try_from_uri(&uri).unwrap();
        let message = |e: ApiError| match e {
            ApiError::BadRequest(message) => message,
            e => panic!("not a bad request: {e:?}"),
        };
        Ok((
            query.epoch().map_err(message)?,
            query.finished().map_err(message)?,
        ))
    }

    #[test]
    fn a_relinquish_names_its_epoch_and_maybe_a_finished_copy() {
        assert_eq!(relinquish_query("epoch=3"), Ok((Epoch::new(3), false)));
        assert_eq!(
            relinquish_query("finished=true&epoch=4"),
            Ok((Epoch::new(4), true))
        );
        assert_eq!(
            relinquish_query("epoch=4&finished=false&other=1"),
            Ok((Epoch::new(4), false))
        );
    }

    #[test]
    fn a_bad_relinquish_query_is_told_what_is_wrong() {
        let epoch = Err("epoch must be a number".to_owned());
        assert_eq!(relinquish_query(""), epoch);
        assert_eq!(relinquish_query("epoch=-1"), epoch);
        assert_eq!(relinquish_query("epoch=x&finished=maybe"), epoch);
        let finished = Err("finished must be true or false".to_owned());
        assert_eq!(relinquish_query("epoch=1&finished=yes"), finished);
        assert_eq!(relinquish_query("epoch=1&finished="), finished);
    }
}
