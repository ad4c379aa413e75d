//! [`StandbyCopy`]: a new job's input streamed to its standby while the
//! client uploads it, so that the 202 does not wait for a second full copy
//! after the upload (DESIGN.md, replication).
//!
//! The bytes go in batches through a bounded channel: a standby that reads slower than
//! the client sends slows the upload down (the upload waits for room), and
//! one that stops reading for [`STALL_LIMIT`] is given up on. A copy given
//! up on, or that fails, costs nothing but time: the upload goes on to this
//! node's disk, and the supervisor copies the input to a standby after it
//! as before the copy streamed, or the job is refused with 503. The stream
//! ends cleanly only through [`StandbyCopy::finish`]; dropped or given up
//! on, it ends with an error, so the standby keeps no partial input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;
use vidpress_actors::{standby_among, CopiedInput, JobId};

use super::App;
use crate::transfer::HttpTransfer;

/// Bytes gathered before they go on to the standby: one wake of its
/// request for many of the client's chunks (tens of KiB each), which go
/// on as they are, uncopied.
const BATCH_BYTES: usize = 256 * 1024;

/// Batches in flight to the standby at most.
const BUFFER_BATCHES: usize = 8;

/// How long the standby may leave the buffer full before the copy is
/// given up on.
const STALL_LIMIT: Duration = Duration::from_secs(5);

/// How long the standby may take, after the last byte, to answer that its
/// copy is durable.
const FINISH_LIMIT: Duration = Duration::from_secs(30);

/// A new job's input on its way to the standby.
pub struct StandbyCopy {
    copied: CopiedInput,
    standby_http: String,
    transfer: Arc<HttpTransfer>,
    /// `None` once given up on (or finished).
    sender: Option<mpsc::Sender<Vec<Bytes>>>,
    /// Chunks not sent on yet, and their bytes.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    /// Set before the sender is dropped by [`Self::finish`]: the end of the
    /// bytes is then the end of the input, not an upload that broke off.
    complete: Arc<AtomicBool>,
    request: JoinHandle<Result<(), String>>,
    /// Why the copy was given up on.
    failed: Option<String>,
}

impl StandbyCopy {
    /// Starts streaming a new job's input to the standby this node would
    /// pick now, under a job ID minted for it; `None` when the node is
    /// alone or has no other node up.
    pub fn open(app: &App) -> Option<Self> {
        let (standby, standby_http) = {
            let view = app.cluster.as_ref()?.borrow();
            let standby = standby_among(&app.node, view.up().map(|m| &m.name))?;
            let http = view.get(&standby)?.http.clone();
            (standby, http)
        };
        let id = JobId::with_standby(&app.node, Some(&standby));
        let (sender, receiver) = mpsc::channel(BUFFER_BATCHES);
        let complete = Arc::new(AtomicBool::new(false));
        let body = input_stream(receiver, complete.clone());
        let transfer = app.transfer.clone();
        let url = standby_http.clone();
        let request = tokio::spawn(async move {
            transfer
                .stream_input(&url, id, body)
                .await
                .map_err(|e| e.to_string())
        });
        Some(Self {
            copied: CopiedInput { id, standby },
            standby_http,
            transfer: app.transfer.clone(),
            sender: Some(sender),
            pending: Vec::new(),
            pending_bytes: 0,
            complete,
            request,
            failed: None,
        })
    }

    /// Sends `chunk` on to the standby in batches of [`BATCH_BYTES`],
    /// waiting while its buffer is full; gives the copy up if the standby
    /// failed or stopped reading.
    pub async fn send(&mut self, chunk: &Bytes) {
        if self.sender.is_none() {
            return;
        }
        self.pending_bytes += chunk.len();
        self.pending.push(chunk.clone());
        if self.pending_bytes >= BATCH_BYTES {
            self.flush().await;
        }
    }

    /// Sends what is gathered, if anything: at a pause of the upload and
    /// after its last byte.
    pub async fn flush(&mut self) {
        let Some(sender) = &self.sender else { return };
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        match tokio::time::timeout(STALL_LIMIT, sender.send(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.give_up("the standby's request ended early".into()),
            Err(_) => self.give_up(format!(
                "the standby read nothing for {} s",
                STALL_LIMIT.as_secs()
            )),
        }
    }

    fn give_up(&mut self, why: String) {
        self.sender = None;
        self.request.abort();
        self.failed = Some(why);
    }

    /// Ends the stream after the upload's last byte and waits for the
    /// standby to answer that the input is durable there. Returns the copy
    /// to submit the job with, or why there is none.
    pub async fn finish(&mut self) -> Result<CopiedInput, String> {
        self.flush().await;
        if let Some(why) = self.failed.take() {
            return Err(why);
        }
        self.complete.store(true, Ordering::Release);
        self.sender = None;
        match tokio::time::timeout(FINISH_LIMIT, &mut self.request).await {
            Ok(Ok(Ok(()))) => Ok(self.copied.clone()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(format!("the copy's task ended: {e}")),
            Err(_) => {
                self.request.abort();
                Err(format!(
                    "the standby did not answer within {} s of the last byte",
                    FINISH_LIMIT.as_secs()
                ))
            }
        }
    }

    /// Returns the job ID minted for this copy.
    pub fn id(&self) -> JobId {
        self.copied.id
    }

    /// Tells the standby to drop the copy: its job was not accepted under
    /// this ID (refused, answered with an earlier job, or accepted under
    /// another after the copy failed).
    pub fn discard(self) {
        let (transfer, http, id) = (self.transfer.clone(), self.standby_http.clone(), self.id());
        tokio::spawn(async move {
            if let Err(e) = transfer.drop_unaccepted(&http, id).await {
                warn!(job_id = %id, standby = %http, error = %e, "cannot drop an unaccepted input's copy (the standby sweeps it later)");
            }
        });
    }
}

impl Drop for StandbyCopy {
    fn drop(&mut self) {
        // A copy not finished breaks off with an error (see input_stream);
        // its request is stopped too.
        if !self.complete.load(Ordering::Acquire) {
            self.request.abort();
        }
    }
}

/// The body of the standby's request: the chunks of the batches sent,
/// then an end if the copy was finished, else an error, which makes the
/// standby drop what it received.
fn input_stream(
    receiver: mpsc::Receiver<Vec<Bytes>>,
    complete: Arc<AtomicBool>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let batches = futures::stream::unfold(Some(receiver), move |receiver| {
        let complete = complete.clone();
        async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(batch) => Some((Ok(batch), Some(receiver))),
                None if complete.load(Ordering::Acquire) => None,
                None => Some((Err(std::io::Error::other("the upload broke off")), None)),
            }
        }
    });
    batches.flat_map(|batch| {
        let chunks: Vec<std::io::Result<Bytes>> = match batch {
            Ok(chunks) => chunks.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(chunks)
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[tokio::test]
    async fn a_finished_copy_ends_cleanly_and_a_broken_off_one_with_an_error() {
        for complete in [true, false] {
            let (sender, receiver) = mpsc::channel(4);
            let flag = Arc::new(AtomicBool::new(false));
            let body = input_stream(receiver, flag.clone());
            let batch = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")];
            sender.send(batch).await.unwrap();
            flag.store(complete, Ordering::Release);
            drop(sender);
            let items: Vec<_> = body.collect().await;
            assert_eq!(items.len(), if complete { 2 } else { 3 });
            assert_eq!(items[0].as_ref().unwrap(), &Bytes::from_static(b"ab"));
            assert_eq!(items[1].as_ref().unwrap(), &Bytes::from_static(b"c"));
            if !complete {
                assert!(items[2].is_err(), "a copy broken off must not end cleanly");
            }
        }
    }
}
