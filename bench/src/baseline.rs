//! The bare axum handlers the service is measured against: what any HTTP
//! service of this kind would do at the least, with nothing of vidpress.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

struct Baseline {
    dir: PathBuf,
    next: AtomicU64,
    /// The job document `GET /jobs/{id}` answers, byte for byte.
    doc: Bytes,
}

/// Serves `POST /jobs` (streams the body to a file in `dir`, answers 202)
/// and `GET /jobs/{id}` (answers `doc` with 202, as vidpress does for a
/// queued job) on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, dir: PathBuf, doc: Vec<u8>) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(&dir).await?;
    let state = Arc::new(Baseline {
        dir,
        next: AtomicU64::new(0),
        doc: Bytes::from(doc),
    });
    let app = Router::new()
        .route("/jobs", post(submit))
        .route("/jobs/{id}", get(poll))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn submit(State(state): State<Arc<Baseline>>, body: Body) -> Response {
    let n = state.next.fetch_add(1, Ordering::Relaxed);
    let path = state.dir.join(format!("{n}.upload"));
    let written = async {
        let mut file = tokio::fs::File::create(&path).await?;
        let mut body = body.into_data_stream();
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?)
                .await?;
        }
        file.flush().await
    }
    .await;
    match written {
        Ok(()) => (
            StatusCode::ACCEPTED,
            [
                (header::LOCATION, format!("/jobs/{n}")),
                (header::CONTENT_TYPE, "application/json".to_owned()),
            ],
            format!("{{\"id\":\"{n}\",\"status\":\"queued\"}}"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn poll(State(state): State<Arc<Baseline>>) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        state.doc.clone(),
    )
        .into_response()
}
