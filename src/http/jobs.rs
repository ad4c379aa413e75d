//! The job endpoints: submit, poll, list, cancel; the files of a job
//! (result, thumbnail) are served by `files`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use tracing::{error, warn};
use vidpress_actors::board::Published;
use vidpress_actors::{JobId, JobStatus, ServiceError, SubmitRequest};
use vidpress_cluster::MemberState;

use super::auth::Caller;
use super::dto::{ErrorBody, JobDocument, JobListDocument, SubmitForm, Video};
use super::error::{retry_after_secs, ApiError, Unavailable, UnknownJob};
use super::extract::{JobPath, ListQuery, Params, SubmitQuery};
use super::long_poll::{preferred_wait, wait_for_end};
use super::multipart;
use super::standby_copy::StandbyCopy;
use super::stops;
use super::upload::{self, Upload};
use super::AppState;

/// Poll interval suggested while no estimate exists yet.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// `POST /jobs`: streams the upload to disk and accepts it as a job.
#[utoipa::path(
    post,
    path = "/jobs",
    tag = "jobs",
    summary = "Submit a video",
    description = "Streams the upload to disk and answers at once with the job's status \
        document; the compression runs in the background. The body is the raw video, or a \
        `multipart/form-data` form with the video in part `file`. Unknown query options are \
        refused.",
    security(("bearer" = [])),
    params(
        SubmitQuery,
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            min_length = 1, max_length = 255,
            description = "The same key with the same body returns the same job; \
                with another body, 422"),
    ),
    request_body(
        description = "The video",
        content(
            (Video = "application/octet-stream"),
            (Video = "video/*"),
            (SubmitForm = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 202, description = "Accepted: the job is queued", body = JobDocument,
            headers(
                ("Location" = String, description = "The job: `/jobs/{id}`"),
                ("Retry-After" = u32, description = "Seconds until a poll is worth it"),
            )),
        (status = 400, description = "A bad option, a malformed form or Idempotency-Key, \
            or an interrupted upload", body = ErrorBody),
        (status = 401, response = super::error::NoKey),
        (status = 408, description = "The upload sent nothing for the idle timeout and was \
            dropped", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 415, description = "Not a video container vidpress reads", body = ErrorBody),
        (status = 422, description = "An empty upload, or an Idempotency-Key reused with \
            another body", body = ErrorBody),
        (status = 429, description = "This tenant already has its most jobs queued or \
            running at once (`--tenant-max-active`); retry when one ends", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until one of them may \
                have ended, 1 to 60"))),
        (status = 431, description = "A multipart part's headers are over 16 KiB",
            body = ErrorBody),
        (status = 503, response = Unavailable),
        (status = 507, description = "The upload would leave the node's disk with less free \
            space than it keeps; retry later", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub async fn submit(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<SubmitQuery>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let options = query.options()?;
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                    )
                })
        })
        .transpose()?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_upload_bytes) {
        return Err(ApiError::TooLarge {
            limit: app.max_upload_bytes,
        });
    }
    let limits = app.upload_limits();
    limits.check_room(&app.uploads_dir, declared.unwrap_or(0))?;
    // A retried submission is told from a different one by its digest.
    let hash = idempotency_key.is_some();
    // The input goes to the standby as it arrives, so the 202 does not
    // wait for a second copy after the upload.
    let mut copy = StandbyCopy::open(&app);
    let upload = if is_multipart(&headers) {
        multipart::receive(
            &app.uploads_dir,
            limits,
            &headers,
            request.into_body(),
            hash,
            copy.as_mut(),
        )
        .await?
    } else {
        let body = request
            .into_body()
            .into_data_stream()
            .map_err(|e| limits.body_error(&e));
        upload::receive(&app.uploads_dir, limits, hash, copy.as_mut(), body).await?
    };
    let copied = match &mut copy {
        None => None,
        // This node's copy goes to its disk while the standby makes its
        // own durable, rather than after. An error here is met again, and
        // answered, by the job's commit.
        Some(copy) => match tokio::join!(copy.finish(), upload.sync_data()).0 {
            Ok(copied) => Some(copied),
            Err(e) => {
                // The supervisor copies the input after the upload, to
                // whichever standby is up then, or the job is refused.
                warn!(job_id = %copy.id(), error = %e, "the input's copy streamed to the standby failed: copying it after the upload");
                None
            }
        },
    };
    let Upload {
        file,
        bytes,
        digest,
    } = upload;
    let submitted = app
        .jobs
        .submit(SubmitRequest {
            upload: file.keep(),
            bytes,
            digest,
            options,
            idempotency_key,
            tenant: caller.tenant().cloned(),
            copied,
        })
        .await;
    if let Some(copy) = copy {
        if submitted.as_ref().map_or(true, |s| s.job.id != copy.id()) {
            // Refused, answered with an earlier job, or accepted under
            // another ID: the copy has no job.
            copy.discard();
        }
    }
    let submitted = submitted?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(JobDocument::from(&submitted.job)),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/jobs/{}", submitted.job.id)) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(submitted.estimate)),
    );
    Ok(response)
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// `GET /jobs/{id}`: 202 while queued or running, 200 completed, 400 failed
/// or canceled. With `Prefer: wait=N` (RFC 7240), a job not yet finished is
/// answered when it ends or after N seconds (at most [`super::long_poll::MAX_WAIT`]),
/// whichever comes first.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    summary = "Poll a job",
    description = "Answers with the job's status document; the status code tells the \
        state. Any node answers for any job.",
    security(("bearer" = [])),
    params(
        JobPath,
        ("Prefer" = Option<String>, Header, nullable = false,
            description = "`wait=N` (RFC 7240): answer when the job ends, or after N \
                seconds (at most 60); other preferences are ignored"),
    ),
    responses(
        (status = 200, description = "Completed", body = JobDocument,
            headers(("Preference-Applied" = String, description = "`wait=N`, when asked"))),
        (status = 202, description = "Queued or running", body = JobDocument,
            headers(
                ("Retry-After" = u32, description = "Estimate of the seconds left"),
                ("Preference-Applied" = String, description = "`wait=N`, when asked"),
            )),
        (status = 400, description = "Failed or canceled", body = JobDocument,
            headers(("Preference-Applied" = String, description = "`wait=N`, when asked"))),
        (status = 401, response = super::error::NoKey),
        (status = 404, response = UnknownJob),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn status(
    State(app): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = match held(&app, &caller, id)? {
        Held::Here(job) => job,
        // Its owner is lost and this node is taking it over: the copy says
        // where it stood, and the client comes back once the takeover is done.
        Held::Copy(copy) => return Ok(copy_response(&copy, app.takeover_within)),
    };
    let Some(wait) = preferred_wait(&headers) else {
        return Ok(status_response(&job));
    };
    let job = if job.status().is_terminal() {
        job
    } else {
        wait_for_end(&app, id, wait).await?
    };
    let mut response = status_response(&job);
    if let Ok(applied) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
        response.headers_mut().insert("preference-applied", applied);
    }
    Ok(response)
}

/// Answers a snapshot with the status code and headers of its state; its
/// JSON document is rendered once per snapshot, however often it is polled.
pub fn status_response(job: &Published) -> Response {
    let code = match job.status() {
        JobStatus::Queued | JobStatus::Running => StatusCode::ACCEPTED,
        JobStatus::Completed => StatusCode::OK,
        JobStatus::Failed | JobStatus::Canceled => StatusCode::BAD_REQUEST,
    };
    let body = job.rendered(|job| {
        serde_json::to_vec(&JobDocument::from(job)).map_or_else(
            |e| {
                error!(job_id = %job.id, node = job.node.as_ref().map(|n| n.as_str()), attempt = job.attempt.get(), error = %e, "cannot render the job document");
                Bytes::from_static(b"{}")
            },
            Bytes::from,
        )
    });
    let json = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    let mut response = (code, json, body).into_response();
    if code == StatusCode::ACCEPTED {
        let wait = job.eta().unwrap_or(DEFAULT_RETRY_AFTER);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(wait).min(30)),
        );
    }
    response
}

/// Where a node found a job it was asked about.
pub enum Held {
    /// Its supervisor runs here: the job as it is.
    Here(Arc<Published>),
    /// This node is its standby, its owner is lost and the takeover is not
    /// done: the job as the owner last copied it here.
    Copy(Arc<Published>),
}

impl Held {
    /// The job, wherever it was found.
    pub fn into_job(self) -> Arc<Published> {
        match self {
            Self::Here(job) | Self::Copy(job) => job,
        }
    }
}

/// Finds a job the caller may see: here, else in this node's copies (a
/// request reaches the standby's handlers for a job it does not hold only
/// while its owner is lost: see `route::to_owner`).
pub fn held(app: &AppState, caller: &Caller, id: JobId) -> Result<Held, ApiError> {
    match app.jobs.get(id) {
        Err(ServiceError::NotFound) => match app.jobs.standby_copy(id) {
            Some(copy) => Ok(Held::Copy(caller.check(copy)?)),
            // Held elsewhere, by a node that did not answer: not unknown.
            None if app.jobs.gave_up(id) => Err(ApiError::OwnerUnavailable),
            None => Err(ApiError::NotFound),
        },
        found => Ok(Held::Here(caller.check(found?)?)),
    }
}

/// Answers a poll from a standby's copy: as from the job, but asking the
/// client back once the takeover is done (`takeover_within`), not after an
/// estimate the copy does not have.
fn copy_response(copy: &Published, takeover_within: Duration) -> Response {
    let mut response = status_response(copy);
    if response.status() == StatusCode::ACCEPTED {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(takeover_within)),
        );
    }
    response
}

/// `DELETE /jobs/{id}`: 200 once terminal, 202 while the encode is stopping.
#[utoipa::path(
    delete,
    path = "/jobs/{id}",
    tag = "jobs",
    summary = "Cancel a job",
    description = "Idempotent: the encode stops within a second and the job ends \
        `canceled`; a job already ended stays as it is.",
    security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The job is terminal", body = JobDocument),
        (status = 202, description = "The encode is stopping", body = JobDocument),
        (status = 401, response = super::error::NoKey),
        (status = 404, response = UnknownJob),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    let job = match held(&app, &caller, id)? {
        Held::Here(_) => app.jobs.cancel(id).await?,
        // Carried out once this node has taken the job over.
        Held::Copy(_) => app.jobs.cancel_copy(id).await?,
    };
    let code = if job.status().is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(JobDocument::from(&job))).into_response())
}

/// `GET /jobs?status=&limit=&cursor=`: newest first, one page, of every
/// node's jobs: the node asks each other node that is up for the same page
/// of its own jobs and merges them (job IDs sort by creation). Nodes that
/// are not up or do not answer are named in `unreachable`.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    summary = "List jobs",
    description = "One page of the whole cluster's jobs, newest first: with a tenant's key, \
        that tenant's jobs only. Nodes that are not up or do not answer in time are named in \
        `unreachable`. Unknown parameters are refused.",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobListDocument),
        (status = 400, description = "A bad or unknown parameter", body = ErrorBody),
        (status = 401, response = super::error::NoKey),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
    headers: HeaderMap,
) -> Result<Json<JobListDocument>, ApiError> {
    let limit = query.limit()?;
    let jobs = app
        .jobs
        .list(query.status, caller.listing_filter(), query.cursor, limit)
        .await?;
    let mut docs = jobs
        .iter()
        .map(|job| serde_json::to_value(JobDocument::from(job)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("cannot render the job list: {e}")))?;
    let mut unreachable = Vec::new();
    if !headers.contains_key(stops::FORWARDED) {
        let (others, missing) = list_elsewhere(&app, &query, &headers).await;
        docs.extend(others);
        unreachable = missing;
    }
    let id_of = |doc: &serde_json::Value| doc["id"].as_str().map(str::to_owned);
    // Newest first (IDs sort by creation); a job listed twice once.
    docs.sort_by(|a, b| b["id"].as_str().cmp(&a["id"].as_str()));
    docs.dedup_by(|a, b| a["id"] == b["id"]);
    docs.truncate(limit);
    let next_cursor = (docs.len() == limit)
        .then(|| docs.last().and_then(id_of))
        .flatten();
    Ok(Json(JobListDocument {
        jobs: docs,
        next_cursor,
        unreachable,
    }))
}

/// Asks every other node that is up for its own jobs with the same query;
/// returns their job documents and the nodes that are not up or did not
/// answer.
async fn list_elsewhere(
    app: &AppState,
    query: &ListQuery,
    headers: &HeaderMap,
) -> (Vec<serde_json::Value>, Vec<String>) {
    // Each node lists what this caller may see there: the same key.
    let authorization = headers.get(header::AUTHORIZATION);
    let Some(cluster) = &app.cluster else {
        return (Vec::new(), Vec::new());
    };
    let view = cluster.borrow().clone();
    let others: Vec<_> = view
        .members
        .values()
        .filter(|m| m.name != app.node)
        .collect();
    let asks = others
        .iter()
        .filter(|m| m.state == MemberState::Up)
        .map(|member| async move {
            let mut ask = app
                .proxy
                .get(format!("{}/jobs", member.http))
                .query(query)
                .header(stops::FORWARDED, "1");
            if let Some(authorization) = authorization {
                ask = ask.header(header::AUTHORIZATION, authorization);
            }
            let answer = ask
                .timeout(LIST_TIMEOUT)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            let page = match answer {
                Ok(response) => response.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            (member.name.to_string(), page)
        });
    let (mut docs, mut missing) = (Vec::new(), Vec::new());
    for (node, page) in futures::future::join_all(asks).await {
        match page.and_then(|mut page| page.get_mut("jobs").map(serde_json::Value::take)) {
            Some(serde_json::Value::Array(jobs)) => docs.extend(jobs),
            _ => missing.push(node),
        }
    }
    missing.extend(
        others
            .iter()
            .filter(|m| m.state != MemberState::Up)
            .map(|m| m.name.to_string()),
    );
    missing.sort();
    (docs, missing)
}

/// How long a node waits for another's page of the job list.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
