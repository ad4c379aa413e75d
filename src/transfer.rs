//! [`HttpTransfer`]: moves a job's bytes between nodes over their HTTP APIs
//! (`/internal/...`), streaming both ways so memory stays bounded whatever
//! the file size. Requests carry the cluster cookie.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use vidpress_actors::record::JobRecord;
use vidpress_actors::{
    Attempt, Epoch, JobId, Relinquished, ReplicaFile, Transfer, TransferError, TransferFuture,
};

/// Deadline of a small node-to-node request, and the base of a file's.
const SMALL_REQUEST: Duration = Duration::from_secs(5);
/// Slowest transfer rate accepted for a file, in bytes per second.
const MIN_RATE: u64 = 2 * 1024 * 1024;

/// The header that carries the cluster cookie on node-to-node requests.
pub const COOKIE_HEADER: &str = "x-vidpress-cookie";

/// Node-to-node transfers over HTTP.
pub struct HttpTransfer {
    client: reqwest::Client,
    cookie: String,
}

impl HttpTransfer {
    /// Returns a transfer that authenticates with `cookie` and lets go of
    /// an idle connection after `pool_idle` (before the other node closes
    /// it: a request sent on a connection closing under it would fail).
    pub fn new(cookie: String, pool_idle: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .pool_idle_timeout(pool_idle)
            .build()
            .unwrap_or_default();
        Self { client, cookie }
    }
}

fn failed(e: impl std::fmt::Display) -> TransferError {
    TransferError(e.to_string())
}

fn expect_success(response: &reqwest::Response) -> Result<(), TransferError> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(TransferError(format!(
            "the peer answered {}",
            response.status()
        )))
    }
}

impl HttpTransfer {
    /// Streams a file to `url` with a PUT, within a deadline that grows with
    /// its size: a peer that stops reading (frozen) must not hold the sender.
    async fn put_file(&self, url: String, from: &Path) -> Result<(), TransferError> {
        let file = tokio::fs::File::open(from).await.map_err(failed)?;
        let size = file.metadata().await.map_err(failed)?.len();
        let deadline = SMALL_REQUEST + Duration::from_secs(size / MIN_RATE);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let response = self
            .client
            .put(url)
            .timeout(deadline)
            .header(COOKIE_HEADER, &self.cookie)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        expect_success(&response)
    }
}

impl Transfer for HttpTransfer {
    fn fetch_input<'a>(
        &'a self,
        owner_http: &'a str,
        job: JobId,
        to: &'a Path,
    ) -> TransferFuture<'a> {
        Box::pin(async move {
            let response = self
                .client
                .get(format!("{owner_http}/internal/jobs/{job}/input"))
                .header(COOKIE_HEADER, &self.cookie)
                .send()
                .await
                .map_err(failed)?;
            if !response.status().is_success() {
                return Err(TransferError(format!(
                    "the owner answered {}",
                    response.status()
                )));
            }
            let mut file = tokio::fs::File::create(to).await.map_err(failed)?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                file.write_all(&chunk.map_err(failed)?)
                    .await
                    .map_err(failed)?;
            }
            file.flush().await.map_err(failed)
        })
    }

    fn replicate_file<'a>(
        &'a self,
        standby_http: &'a str,
        job: JobId,
        file: ReplicaFile,
        from: &'a Path,
    ) -> TransferFuture<'a> {
        let url = format!("{standby_http}/internal/replicas/{job}/{}", file.name());
        Box::pin(self.put_file(url, from))
    }

    fn replicate_record<'a>(
        &'a self,
        standby_http: &'a str,
        record: &'a JobRecord,
    ) -> TransferFuture<'a> {
        Box::pin(async move {
            let response = self
                .client
                .put(format!(
                    "{standby_http}/internal/replicas/{}/record",
                    record.id
                ))
                .header(COOKIE_HEADER, &self.cookie)
                .timeout(SMALL_REQUEST)
                .json(record)
                .send()
                .await
                .map_err(failed)?;
            expect_success(&response)
        })
    }

    fn relinquish<'a>(
        &'a self,
        owner_http: &'a str,
        job: JobId,
        epoch: Epoch,
        finished: bool,
    ) -> TransferFuture<'a, Relinquished> {
        Box::pin(async move {
            let response = self
                .client
                .post(format!(
                    "{owner_http}/internal/jobs/{job}/relinquish?epoch={epoch}&finished={finished}"
                ))
                .header(COOKIE_HEADER, &self.cookie)
                .timeout(SMALL_REQUEST)
                .send()
                .await
                .map_err(failed)?;
            if response.status() == reqwest::StatusCode::CONFLICT {
                return Ok(Relinquished::Kept);
            }
            expect_success(&response).map(|()| Relinquished::GaveWay)
        })
    }

    fn push_output<'a>(
        &'a self,
        owner_http: &'a str,
        job: JobId,
        attempt: Attempt,
        from: &'a Path,
    ) -> TransferFuture<'a> {
        let url = format!("{owner_http}/internal/jobs/{job}/attempts/{attempt}/output");
        Box::pin(self.put_file(url, from))
    }
}
