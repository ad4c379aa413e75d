//! `GET /`: the web page. One self-contained HTML file (its styles and
//! script inline, nothing fetched from elsewhere) compiled into the binary,
//! so the page works offline and always matches the node's API.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, from `web.html` beside this file.
const PAGE: &str = include_str!("web.html");

/// `GET /`: serves the page. Browsers revalidate it, so a node upgraded
/// in place serves its own page at the next load.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
