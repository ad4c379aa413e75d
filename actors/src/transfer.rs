//! [`Transfer`]: how a worker moves a job's bytes between its node and the
//! job's owner when they differ. The actors only see this trait; the HTTP
//! layer implements it with streaming node-to-node requests, so no video
//! ever travels inside a cluster message.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use std::io::Write;

use crate::counters::{Attempt, Epoch};
use crate::job::{JobId, Piece};
use crate::record::JobRecord;
use crate::writeback;

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

    /// Tells the standby at `standby_http` that this node gave `job` up,
    /// which it held under `epoch`: the standby drops its copy if that copy
    /// is of this epoch or an older one.
    fn drop_given_up<'a>(
        &'a self,
        standby_http: &'a str,
        job: JobId,
        epoch: Epoch,
    ) -> TransferFuture<'a>;

    /// Sends the output of attempt `attempt` of `job` from `from` to its owner.
    fn push_output<'a>(
        &'a self,
        owner_http: &'a str,
        job: JobId,
        attempt: Attempt,
        from: &'a Path,
    ) -> TransferFuture<'a>;
}

/// Bytes of a transferred file gathered before they go to disk in one
/// blocking write; the next batch is received while one is written.
const BATCH_BYTES: usize = 1024 * 1024;

/// How long the sender may pause before what it has sent is written out.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Streams a transferred file's `body` to `path` durably: into a `.part`
/// file beside it, fdatasynced, then renamed over `path`; the partial file
/// is removed if anything fails. The receiving end of a [`Transfer`].
pub async fn receive<S, E>(body: S, path: &Path) -> std::io::Result<()>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let partial = path.with_extension("part");
    let written = async {
        let mut out = Batches::new(tokio::fs::File::create(&partial).await?.into_std().await);
        let mut body = std::pin::pin!(body);
        loop {
            // What a sender that pauses has sent goes to disk within PAUSE.
            let next = match next_within(&mut body, PAUSE).await {
                Some(next) => next,
                None => {
                    out.write().await?;
                    body.next().await
                }
            };
            let Some(chunk) = next else { break };
            out.push(chunk.map_err(std::io::Error::other)?).await?;
        }
        out.finish().await?;
        tokio::fs::rename(&partial, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written
}

/// Returns the next item of `body` if it comes within `pause` (`Some(None)`
/// at its end), or `None` when the sender paused: the caller then writes
/// out what it gathered before it waits on. Items already there are taken
/// at once, so a sender that keeps sending fills whole batches.
pub async fn next_within<S: Stream + Unpin>(
    body: &mut S,
    pause: std::time::Duration,
) -> Option<Option<S::Item>> {
    match body.next().now_or_never() {
        Some(next) => Some(next),
        None => tokio::time::timeout(pause, body.next()).await.ok(),
    }
}

/// A file written from blocking threads in batches of chunks, one batch
/// in flight while the next is gathered, the disk asked to write each
/// [`writeback::WINDOW`] as it fills.
struct Batches {
    file: std::sync::Arc<std::fs::File>,
    writing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    batch: Vec<Bytes>,
    batched: usize,
    /// Bytes handed to the file so far.
    written: u64,
}

impl Batches {
    fn new(file: std::fs::File) -> Self {
        Self {
            file: std::sync::Arc::new(file),
            writing: None,
            batch: Vec::new(),
            batched: 0,
            written: 0,
        }
    }

    /// Keeps `chunk`; writes the batch out once it is large enough.
    async fn push(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= BATCH_BYTES {
            self.write().await?;
        }
        Ok(())
    }

    /// Starts writing what is gathered, once the batch before is written.
    async fn write(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.wait().await?;
        let (file, chunks) = (self.file.clone(), std::mem::take(&mut self.batch));
        let before = self.written;
        self.written += std::mem::take(&mut self.batched) as u64;
        let after = self.written;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let mut out = &*file;
            chunks.iter().try_for_each(|c| out.write_all(c))?;
            writeback::wrote(&file, before, after);
            Ok(())
        }));
        Ok(())
    }

    /// Waits for the batch being written, if any.
    async fn wait(&mut self) -> std::io::Result<()> {
        match self.writing.take() {
            Some(writing) => writing.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Writes the rest and flushes the file's data to the disk.
    async fn finish(mut self) -> std::io::Result<()> {
        self.write().await?;
        self.wait().await?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(std::io::Error::other)?
    }
}
