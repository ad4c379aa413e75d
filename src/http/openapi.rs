//! `GET /openapi.json`: the OpenAPI document of the public HTTP API,
//! generated from the handlers' `#[utoipa::path]` annotations and the
//! documents' schemas. The `/internal` routes (node to node, behind the
//! cookie) are left out. The operations that need an API key on a node
//! with `--api-keys` name the [`BEARER`] scheme.

use std::sync::LazyLock;

use axum::Json;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{dto, error, events, files, jobs, metrics, web};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vidpress",
        description = "A clustered video-compression service. Submit a video, get a job ID at \
            once (202), then poll the job or subscribe to its events until it ends, and \
            download the result. Any node answers for any job. Every error is \
            `{\"error\": {\"code\", \"message\"}}`. A node started with `--api-keys` \
            asks for `Authorization: Bearer <token>` on every operation that names the \
            `bearer` scheme (a missing or unknown token gets 401); a tenant's key sees only \
            its own jobs, an admin key every job and `/metrics` and `/cluster`. A node \
            without keys is open."
    ),
    paths(
        jobs::submit,
        jobs::list,
        jobs::status,
        jobs::cancel,
        files::result,
        files::thumbnail,
        events::events,
        super::cluster,
        super::healthz,
        super::readyz,
        metrics::metrics,
        web::page,
        openapi,
    ),
    components(
        schemas(dto::EventDocument),
        responses(error::Unavailable, error::UnknownJob, error::NoKey),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "jobs", description = "Submitting, following and downloading jobs"),
        (name = "node", description = "The node and its cluster"),
    ),
)]
pub struct ApiDoc;

/// Name of the security scheme of API keys, which the annotations of the
/// operations that need a key name as `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// Adds the [`BEARER`] scheme: utoipa declares security schemes only
/// through a modifier.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("opaque token")
            .description(Some(
                "An API key's token from the node's `--api-keys` file, as \
                `Authorization: Bearer <token>`",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// Response headers a client may not get: the rest are always sent.
const OPTIONAL_HEADERS: [&str; 1] = ["Preference-Applied"];

/// The document, made once.
static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

/// Returns the OpenAPI document as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    // utoipa has no `required` on response headers.
    let operations = doc
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for responses in operations.filter_map(|operation| operation.get_mut("responses")) {
        require_headers(responses);
    }
    if let Some(responses) = doc.pointer_mut("/components/responses") {
        require_headers(responses);
    }
    doc
}

/// Marks the headers of every response in `responses` required, but those
/// in [`OPTIONAL_HEADERS`].
fn require_headers(responses: &mut Value) {
    let headers = responses
        .as_object_mut()
        .into_iter()
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("headers")?.as_object_mut())
        .flat_map(|headers| headers.iter_mut());
    for (name, header) in headers {
        if !OPTIONAL_HEADERS.contains(&name.as_str()) {
            header["required"] = Value::Bool(true);
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "node",
    summary = "This OpenAPI document",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)),
)]
pub async fn openapi() -> Json<&'static Value> {
    Json(&DOCUMENT)
}
