//! The files of a job, served once they exist: the result (with Range and
//! conditional requests) and the input's thumbnail. Both are answered only
//! to a caller who may see the job.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use vidpress_actors::{paths, JobState};

use super::auth::Caller;
use super::dto::{ErrorBody, JobDocument, Jpeg, Video};
use super::error::{ApiError, Unavailable, UnknownJob};
use super::extract::JobPath;
use super::jobs::held;
use super::AppState;

/// `GET /jobs/{id}/result`: the video, with Range support; 409 until completed.
#[utoipa::path(
    get,
    path = "/jobs/{id}/result",
    tag = "jobs",
    summary = "Download the result",
    description = "The compressed video, once the job is completed: MP4 (`+faststart`, AAC \
        audio) or WebM (cues in front, Opus audio), with the codec the job asked for.",
    security(("bearer" = [])),
    params(
        JobPath,
        ("Range" = Option<String>, Header, nullable = false,
            description = "One byte range, e.g. `bytes=0-1023`"),
        ("If-Modified-Since" = Option<String>, Header, nullable = false,
            description = "An HTTP date"),
        ("If-Unmodified-Since" = Option<String>, Header, nullable = false,
            description = "An HTTP date"),
    ),
    responses(
        (status = 200, description = "The whole file",
            content((Video = "video/mp4"), (Video = "video/webm")),
            headers(
                ("Content-Length" = u64),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("Last-Modified" = String),
                ("Content-Disposition" = String,
                    description = "`attachment; filename=\"{id}.mp4\"` (or `.webm`)"),
            )),
        (status = 206, description = "The requested range",
            content((Video = "video/mp4"), (Video = "video/webm")),
            headers(
                ("Content-Range" = String, description = "`bytes FIRST-LAST/SIZE`"),
                ("Content-Length" = u64),
                ("Content-Disposition" = String),
            )),
        (status = 304, description = "Not modified since `If-Modified-Since`"),
        (status = 401, response = super::error::NoKey),
        (status = 404, response = UnknownJob),
        (status = 409, description = "The job is not completed: its status document",
            body = JobDocument),
        (status = 412, description = "Modified since `If-Unmodified-Since`", body = ErrorBody),
        (status = 416, description = "The range is not one satisfiable byte range",
            body = ErrorBody, headers(("Content-Range" = String, description = "`bytes */SIZE`"))),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn result(
    State(app): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    request: Request,
) -> Result<Response, ApiError> {
    // A standby's copy of a completed job holds its result too.
    let job = held(&app, &caller, id)?.into_job();
    let JobState::Completed { output, result } = &job.state else {
        return Ok((StatusCode::CONFLICT, Json(JobDocument::from(&**job))).into_response());
    };
    let mut response = ServeFile::new(output)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot serve result: {e}")))?
        .map(Body::new);
    // ServeFile answers these with empty or plain-text bodies.
    match response.status() {
        StatusCode::NOT_FOUND => {
            return Err(ApiError::Internal("the result file is missing".into()))
        }
        StatusCode::PRECONDITION_FAILED => return Err(ApiError::PreconditionFailed),
        StatusCode::RANGE_NOT_SATISFIABLE => {
            return Err(ApiError::RangeNotSatisfiable { size: result.bytes })
        }
        _ => {}
    }
    let format = job.options.format;
    let headers = response.headers_mut();
    // The result file is named for the job, not its format: say it here.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{}\"",
        job.id,
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// The thumbnail never changes once made, but is behind a key: shared
/// caches must not keep it.
const THUMBNAIL_CACHE_CONTROL: &str = "private, max-age=86400";

/// `GET /jobs/{id}/thumbnail`: a JPEG of one representative frame of the
/// input, made by the probe right after the job was accepted; 404 before.
#[utoipa::path(
    get,
    path = "/jobs/{id}/thumbnail",
    tag = "jobs",
    summary = "A thumbnail of the input",
    description = "A JPEG of one representative frame of the input (15 % into it, at most \
        320 pixels wide, its aspect kept), made when the input is probed right after the job \
        is accepted: from then on, whatever the job's state. 404 before, or when the input \
        is not a video.",
    security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The thumbnail",
            content_type = "image/jpeg", body = Jpeg,
            headers(
                ("Content-Length" = u64),
                ("Cache-Control" = String, description = "`private, max-age=86400`"),
            )),
        (status = 401, response = super::error::NoKey),
        (status = 404, description = "No job with this ID that this key may see, or no \
            thumbnail yet (code `no_thumbnail`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn thumbnail(
    State(app): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    let job = held(&app, &caller, id)?.into_job();
    let path = paths::thumbnail(&app.data_dir, job.id);
    let jpeg = match tokio::fs::read(&path).await {
        Ok(jpeg) => jpeg,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::NoThumbnail),
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "cannot read the thumbnail: {e}"
            )))
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, THUMBNAIL_CACHE_CONTROL),
        ],
        jpeg,
    )
        .into_response())
}
