//! `GET /`: the web page. One self-contained HTML file (its styles and
//! script inline, nothing fetched from elsewhere) compiled into the binary,
//! so the page works offline and always matches the node's API.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, from `web.html` beside this file.
const PAGE: &str = include_str!("web.html");

/// `GET /`: serves the page. Browsers revalidate it, so a node upgraded
/// in place serves its own page at the next load.
#[utoipa::path(
    get,
    path = "/",
    tag = "node",
    summary = "The web page",
    description = "Upload videos, follow their jobs live, cancel, download, and see the \
        cluster, from a browser. Self-contained: it loads nothing from elsewhere.",
    responses((
        status = 200,
        description = "The page",
        content_type = "text/html; charset=utf-8",
        body = String,
    )),
)]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
