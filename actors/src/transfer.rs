//! [`Transfer`]: how a worker moves a job's bytes between its node and the
//! job's owner when they differ. The actors only see this trait; the HTTP
//! layer implements it with streaming node-to-node requests, so no video
//! ever travels inside a cluster message.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::counters::{Attempt, Epoch};
use crate::job::{JobId, Piece};
use crate::record::JobRecord;

/// A file of a job that is copied to its standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaFile {
    Input,
    Result,
    /// A finished piece of a split job.
    Piece(Piece),
}

impl ReplicaFile {
    /// Returns the file's name in a job folder and in URLs.
    pub fn name(self) -> Cow<'static, str> {
        match self {
            Self::Input => Cow::Borrowed("input"),
            Self::Result => Cow::Borrowed("output.mp4"),
            Self::Piece(piece) => Cow::Owned(piece.file_name()),
        }
    }

    /// Reads a file back from its [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "input" => Some(Self::Input),
            "output.mp4" => Some(Self::Result),
            other => Piece::from_file_name(other).map(Self::Piece),
        }
    }
}

/// A transfer that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransferError(pub String);

/// A boxed future of a transfer.
pub type TransferFuture<'a, T = ()> =
    Pin<Box<dyn Future<Output = Result<T, TransferError>> + Send + 'a>>;

/// What a former owner did when told its job was taken over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relinquished {
    /// It dropped its copy.
    GaveWay,
    /// It kept its copy: it had finished the job and the other had not.
    Kept,
}

/// Moves job files between nodes, streaming, with memory bounded whatever
/// the file size.
pub trait Transfer: Send + Sync + 'static {
    /// Copies the input of `job` from its owner at `owner_http` to `to`.
    fn fetch_input<'a>(
        &'a self,
        owner_http: &'a str,
        job: JobId,
        to: &'a Path,
    ) -> TransferFuture<'a>;

    /// Stores a copy of `file` (`input` or `result`) of `job` on its standby.
    fn replicate_file<'a>(
        &'a self,
        standby_http: &'a str,
        job: JobId,
        file: ReplicaFile,
        from: &'a Path,
    ) -> TransferFuture<'a>;

    /// Stores the job's record on its standby; answered once it is durable.
    fn replicate_record<'a>(
        &'a self,
        standby_http: &'a str,
        record: &'a JobRecord,
    ) -> TransferFuture<'a>;

    /// Tells the former owner at `owner_http` that this node took `job` over
    /// under `epoch` (and whether its copy is `finished`), so that the
    /// former owner's copy gives way, or is kept if it is the finished one.
    fn relinquish<'a>(
        &'a self,
        owner_http: &'a str,
        job: JobId,
        epoch: Epoch,
        finished: bool,
    ) -> TransferFuture<'a, Relinquished>;

    /// Sends the output of attempt `attempt` of `job` from `from` to its owner.
    fn push_output<'a>(
        &'a self,
        owner_http: &'a str,
        job: JobId,
        attempt: Attempt,
        from: &'a Path,
    ) -> TransferFuture<'a>;
}

/// Streams a transferred file's `body` to `path` durably: into a `.part`
/// file beside it, fsynced, then renamed over `path`; the partial file is
/// removed if anything fails. The receiving end of a [`Transfer`].
pub async fn receive<S, E>(body: S, path: &Path) -> std::io::Result<()>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let partial = path.with_extension("part");
    let written = async {
        let mut file = tokio::fs::File::create(&partial).await?;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?)
                .await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        tokio::fs::rename(&partial, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written
}
