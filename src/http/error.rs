//! [`ApiError`]: every error a client can get, mapped to a status code and
//! the `{"error": {"code", "message"}}` document. Internals never leak.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::error;
use vidpress_actors::{ServiceError, SubmitError};

use super::dto::{ErrorBody, ErrorDocument};

/// Largest preamble or header block of one multipart part, in bytes.
pub const MAX_PART_HEADERS: usize = 16 * 1024;

/// A part's header block (or the preamble) went past [`MAX_PART_HEADERS`].
#[derive(Debug, thiserror::Error)]
#[error("a multipart part's headers are larger than {MAX_PART_HEADERS} bytes")]
pub struct PartHeadersTooLarge;

/// The 503 of every endpoint, in the spec: the node cannot answer now (its
/// gateway or the job's supervisor did not answer in time, the node that
/// holds the job is unreachable, or the cluster takes no more work).
#[derive(utoipa::ToResponse)]
#[response(
    description = "Unavailable for now: retry after `Retry-After` seconds",
    headers(("Retry-After" = u32, description = "Seconds to wait, 1 to 60"))
)]
pub struct Unavailable(pub ErrorBody);

/// The 404 of the endpoints about one job, in the spec.
#[derive(utoipa::ToResponse)]
#[response(
    description = "No job with this ID that this key may see (another tenant's job \
    is answered as if it did not exist)"
)]
pub struct UnknownJob(pub ErrorBody);

/// Why a request was not let in (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error("this endpoint needs an API key: Authorization: Bearer <token>")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
}

impl Unauthorized {
    /// Returns the `WWW-Authenticate` challenge (RFC 6750): a request
    /// without credentials gets the bare scheme, a wrong token its error.
    fn challenge(self) -> &'static str {
        match self {
            Self::Missing => "Bearer realm=\"vidpress\"",
            Self::Invalid => "Bearer realm=\"vidpress\", error=\"invalid_token\"",
        }
    }
}

/// The 401 of every endpoint with keys, in the spec.
#[derive(utoipa::ToResponse)]
#[response(
    description = "No API key, or one that is not valid",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"vidpress\"`, with `error=\"invalid_token\"` for a wrong key"))
)]
pub struct NoKey(pub ErrorBody);

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadOption { message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("no job with this id")]
    NotFound,
    #[error("this job has no thumbnail yet: its input is still being probed, or is not a video")]
    NoThumbnail,
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("this endpoint does not answer this method")]
    MethodNotAllowed,
    #[error("expected a WebSocket handshake: {0}")]
    NotWebSocket(String),
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("the upload is empty")]
    EmptyUpload,
    #[error("the upload was interrupted before it was complete")]
    UploadInterrupted,
    #[error("the upload sent nothing for {secs} s and was dropped")]
    RequestTimeout { secs: u64 },
    #[error(transparent)]
    PartHeadersTooLarge(#[from] PartHeadersTooLarge),
    #[error("the upload would leave less than {min_free} bytes free on the node's disk; retry later or on another node")]
    InsufficientStorage { min_free: u64 },
    #[error("the result was modified after the If-Unmodified-Since date")]
    PreconditionFailed,
    #[error("the Range is not one byte range within the {size} bytes of the result")]
    RangeNotSatisfiable { size: u64 },
    #[error("this Idempotency-Key was already used with a different body")]
    IdempotencyConflict,
    #[error("the cluster cannot take more work now; retry later")]
    QueueFull { retry_after: Duration },
    #[error("the service is unavailable; retry later")]
    Unavailable,
    #[error("the node that owns this job is unreachable; retry later")]
    OwnerUnavailable,
    #[error("this endpoint is for the nodes of the cluster")]
    Forbidden,
    #[error("this endpoint needs an admin key")]
    AdminOnly,
    #[error("{0}")]
    Unauthorized(Unauthorized),
    #[error(
        "this tenant has {limit} jobs queued or running, its most at once; retry when one ends"
    )]
    TenantBusy { limit: usize, retry_after: Duration },
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadOption { .. }
            | Self::BadRequest(_)
            | Self::NotWebSocket(_)
            | Self::UploadInterrupted => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::NoSuchEndpoint | Self::NoThumbnail => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::PartHeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::EmptyUpload | Self::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            Self::QueueFull { .. } | Self::Unavailable | Self::OwnerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Forbidden | Self::AdminOnly => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::TenantBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadOption { .. } => "invalid_option",
            Self::BadRequest(_) => "bad_request",
            Self::NotFound | Self::NoSuchEndpoint => "not_found",
            Self::NoThumbnail => "no_thumbnail",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotWebSocket(_) => "websocket_expected",
            Self::PreconditionFailed => "precondition_failed",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::TooLarge { .. } => "payload_too_large",
            Self::UnsupportedMedia(_) => "unsupported_media_type",
            Self::EmptyUpload => "empty_upload",
            Self::UploadInterrupted => "upload_interrupted",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::PartHeadersTooLarge(_) => "header_fields_too_large",
            Self::InsufficientStorage { .. } => "insufficient_storage",
            Self::IdempotencyConflict => "idempotency_key_reused",
            Self::QueueFull { .. } => "queue_full",
            Self::Unavailable => "unavailable",
            Self::OwnerUnavailable => "owner_unavailable",
            Self::Forbidden | Self::AdminOnly => "forbidden",
            Self::Unauthorized(_) => "unauthorized",
            Self::TenantBusy { .. } => "too_many_active_jobs",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            error!(error = %detail, "internal error");
        }
        let body = ErrorBody {
            error: ErrorDocument {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Self::RequestTimeout { .. } = &self {
            // The client went quiet: the connection is not worth keeping.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::RangeNotSatisfiable { size } = &self {
            if let Ok(range) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, range);
            }
        }
        if let Self::Unauthorized(why) = &self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(why.challenge()),
            );
        }
        let retry_after = match &self {
            Self::QueueFull { retry_after } | Self::TenantBusy { retry_after, .. } => {
                Some(retry_after_secs(*retry_after))
            }
            Self::Unavailable | Self::OwnerUnavailable => Some(1),
            Self::InsufficientStorage { .. } => Some(60),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => Self::NotFound,
            ServiceError::Timeout | ServiceError::Unavailable => Self::Unavailable,
            ServiceError::Submit(SubmitError::QueueFull { retry_after }) => {
                Self::QueueFull { retry_after }
            }
            ServiceError::Submit(SubmitError::IdempotencyConflict) => Self::IdempotencyConflict,
            ServiceError::Submit(SubmitError::TenantBusy { limit, retry_after }) => {
                Self::TenantBusy { limit, retry_after }
            }
            // Each leaves the client to retry, maybe on another node.
            ServiceError::Submit(
                SubmitError::Draining | SubmitError::CutOff | SubmitError::Replication(_),
            ) => Self::Unavailable,
            ServiceError::Submit(e @ (SubmitError::Storage(_) | SubmitError::Spawn(_))) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(e: WebSocketUpgradeRejection) -> Self {
        Self::NotWebSocket(e.body_text())
    }
}

impl ApiError {
    /// Returns the 400 of a query string that axum's `Query` refused: the
    /// sentence `explain` gives for the parameter at fault (a bad value or
    /// an unknown name), or serde's own when no one parameter is at fault.
    pub fn bad_query(rejection: &QueryRejection, explain: impl Fn(&str) -> String) -> Self {
        type QueryError = serde_path_to_error::Error<serde_urlencoded::de::Error>;
        let cause = std::iter::successors(std::error::Error::source(rejection), |e| e.source())
            .find_map(|e| e.downcast_ref::<QueryError>());
        let message = match cause {
            Some(e) => match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => explain(key),
                _ => e.inner().to_string(),
            },
            None => rejection.body_text(),
        };
        Self::BadOption { message }
    }
}

/// Returns whole seconds for a `Retry-After` header: at least 1, at most 60.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs_f64().ceil() as u64).clamp(1, 60)
}
