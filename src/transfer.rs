//! [`HttpTransfer`]: moves a job's bytes between nodes over their HTTP APIs
//! (`/internal/...`), streaming both ways so memory stays bounded whatever
//! the file size, over HTTPS to a node whose URL says so. Every request is
//! signed with the cluster cookie (`crate::signing`); the cookie itself is
//! never sent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use vidpress_actors::record::JobRecord;
use vidpress_actors::{
    Attempt, Epoch, JobId, Relinquished, ReplicaFile, Transfer, TransferError, TransferFuture,
};

use crate::signing::{Signer, SIGNATURE_HEADER};

/// Deadline of a small node-to-node request, and the base of a file's.
const SMALL_REQUEST: Duration = Duration::from_secs(5);
/// Slowest transfer rate accepted for a file, in bytes per second.
const MIN_RATE: u64 = 2 * 1024 * 1024;

/// Node-to-node transfers over HTTP.
pub struct HttpTransfer {
    client: reqwest::Client,
    signer: Signer,
}

impl HttpTransfer {
    /// Returns a transfer that signs with `cookie`, speaks TLS to other
    /// nodes with `tls` (trusting the cluster's CA) and lets go of an idle
    /// connection after `pool_idle` (before the other node closes it: a
    /// request sent on a connection closing under it would fail).
    pub fn new(
        cookie: &str,
        tls: Arc<rustls::ClientConfig>,
        pool_idle: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(Arc::unwrap_or_clone(tls))
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .pool_idle_timeout(pool_idle)
            .build()?;
        Ok(Self {
            client,
            signer: Signer::new(cookie),
        })
    }

    /// Sends `request` signed: the signature covers its method and its
    /// path and query as they go on the wire.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TransferError> {
        let mut request = request.build().map_err(failed)?;
        let url = request.url();
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let signature = self.signer.sign(request.method(), &path).map_err(failed)?;
        request.headers_mut().insert(SIGNATURE_HEADER, signature);
        self.client.execute(request).await.map_err(failed)
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
        let request = self
            .client
            .put(url)
            .timeout(deadline)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        let response = self.send(request).await?;
        expect_success(&response)
    }
}

impl HttpTransfer {
    /// Streams a new job's input to its standby at `standby_http` as it is
    /// uploaded: `body` yields the upload's bytes, and an error to abort
    /// the copy (the standby then keeps nothing). No deadline of its own:
    /// it lasts as long as the upload, whose sender gives up on a standby
    /// that stops reading. Returns once the copy is durable there.
    pub async fn stream_input<S>(
        &self,
        standby_http: &str,
        job: JobId,
        body: S,
    ) -> Result<(), TransferError>
    where
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    {
        let url = format!(
            "{standby_http}/internal/replicas/{job}/{}",
            ReplicaFile::Input.name()
        );
        let request = self.client.put(url).body(reqwest::Body::wrap_stream(body));
        let response = self.send(request).await?;
        expect_success(&response)
    }

    /// Asks the standby at `standby_http` to drop an input streamed to it
    /// for a job that was not accepted after all (a copy without a record).
    pub async fn drop_unaccepted(
        &self,
        standby_http: &str,
        job: JobId,
    ) -> Result<(), TransferError> {
        self.drop_copy(format!("{standby_http}/internal/replicas/{job}"))
            .await
    }

    /// Sends the standby's copy a `DELETE` at `url`.
    async fn drop_copy(&self, url: String) -> Result<(), TransferError> {
        let request = self.client.delete(url).timeout(SMALL_REQUEST);
        let response = self.send(request).await?;
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
            let request = self
                .client
                .get(format!("{owner_http}/internal/jobs/{job}/input"));
            let response = self.send(request).await?;
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
            let request = self
                .client
                .put(format!(
                    "{standby_http}/internal/replicas/{}/record",
                    record.id
                ))
                .timeout(SMALL_REQUEST)
                .json(record);
            let response = self.send(request).await?;
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
            let request = self
                .client
                .post(format!(
                    "{owner_http}/internal/jobs/{job}/relinquish?epoch={epoch}&finished={finished}"
                ))
                .timeout(SMALL_REQUEST);
            let response = self.send(request).await?;
            if response.status() == reqwest::StatusCode::CONFLICT {
                return Ok(Relinquished::Kept);
            }
            expect_success(&response).map(|()| Relinquished::GaveWay)
        })
    }

    fn drop_given_up<'a>(
        &'a self,
        standby_http: &'a str,
        job: JobId,
        epoch: Epoch,
    ) -> TransferFuture<'a> {
        Box::pin(self.drop_copy(format!(
            "{standby_http}/internal/replicas/{job}?given-up={epoch}"
        )))
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
