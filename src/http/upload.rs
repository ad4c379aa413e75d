//! Streams an upload to disk: raw body or the `file` part of a multipart
//! form, hashed on the way, bounded by the upload limit, and refused early
//! when its first bytes are not a video container.
//!
//! The partial file is owned by a [`TempUpload`] guard, so a client that
//! disconnects, goes quiet or overfills the disk mid-upload leaves no file.
//! Before each write the disk must keep [`UploadLimits::min_free_bytes`]
//! free after it; an upload that would take more is refused with 507.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use vidpress_actors::transfer::next_within;
use vidpress_actors::writeback;

use super::error::ApiError;
use super::standby_copy::StandbyCopy;

/// Bytes needed to recognise a container.
const SNIFF_LEN: usize = 189;

/// A file being uploaded; removed on drop unless kept.
pub struct TempUpload {
    path: PathBuf,
    kept: bool,
}

impl TempUpload {
    fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(format!("{}.part", uuid::Uuid::now_v7())),
            kept: false,
        }
    }

    /// Hands the file over to the caller, who now owns its removal.
    pub fn keep(mut self) -> PathBuf {
        self.kept = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A complete upload on disk.
pub struct Upload {
    pub file: TempUpload,
    pub bytes: u64,
    /// SHA-256 of the upload, when it was asked for.
    pub digest: Option<[u8; 32]>,
}

impl Upload {
    /// Flushes the upload's bytes to the disk now (fdatasync), off the
    /// runtime's threads. The job's group commit syncs the file again, and
    /// then finds little or nothing left to write: this lets a replicated
    /// upload's two copies reach their disks side by side.
    pub async fn sync_data(&self) -> std::io::Result<()> {
        let path = self.file.path.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(path)?.sync_data())
            .await
            .map_err(std::io::Error::other)?
    }
}

/// The bounds on one upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Largest upload, in bytes.
    pub max_bytes: u64,
    /// Free space the disk must keep after the upload.
    pub min_free_bytes: u64,
    /// How long the body may send nothing (enforced by the router's body
    /// timeout; here it only words the error).
    pub idle_timeout: Duration,
}

impl UploadLimits {
    /// Refuses at once an upload of `bytes` that would leave the disk of
    /// `dir` with less than the free space it must keep.
    pub fn check_room(&self, dir: &Path, bytes: u64) -> Result<(), ApiError> {
        match free_bytes(dir) {
            Ok(free) if free < bytes.saturating_add(self.min_free_bytes) => {
                Err(ApiError::InsufficientStorage {
                    min_free: self.min_free_bytes,
                })
            }
            _ => Ok(()),
        }
    }

    /// Returns the error a failed body read becomes: a quiet client (the
    /// body timeout), multipart headers over their bound, or a client gone.
    pub fn body_error(&self, error: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return ApiError::RequestTimeout {
                    secs: self.idle_timeout.as_secs(),
                };
            }
            if e.is::<super::error::PartHeadersTooLarge>() {
                return ApiError::PartHeadersTooLarge(super::error::PartHeadersTooLarge);
            }
            cause = e.source();
        }
        ApiError::UploadInterrupted
    }
}

/// Returns the bytes an unprivileged user may still write on the disk of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Body bytes gathered in memory before they go to disk in one blocking
/// write (no copy: the chunks themselves are handed over), as long as the
/// client keeps them coming.
const SPOOL_BYTES: usize = 256 * 1024;

/// How long the body may pause before what it has sent is written out.
const SPOOL_WAIT: Duration = Duration::from_millis(5);

/// Writes `body` to a new file in `dir`, refusing more than the limit's
/// bytes, more than the disk can spare, and anything whose first bytes are
/// not a known video container; hashes it when `hash` is set (only an
/// idempotent submission needs the digest), and sends each chunk on to the
/// standby through `copy` if given. The file is written but not synced
/// when this returns: its contents and its entry are made durable where it
/// ends up, in the job's folder, by the group commit that stores the job
/// before its 202 (so many uploads share one sync).
pub async fn receive<S>(
    dir: &Path,
    limits: UploadLimits,
    hash: bool,
    mut copy: Option<&mut StandbyCopy>,
    body: S,
) -> Result<Upload, ApiError>
where
    S: Stream<Item = Result<Bytes, ApiError>> + Unpin,
{
    let limit = limits.max_bytes;
    let upload = TempUpload::new(dir);
    let mut spool = Spool::new(upload.path.clone(), limits.min_free_bytes);
    let mut hasher = hash.then(Sha256::new);
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut bytes: u64 = 0;
    let mut body = body;
    loop {
        // What a client that pauses has sent goes to disk within
        // SPOOL_WAIT, so a stalled upload holds no batch in memory; a
        // client that keeps sending fills whole batches, each one hop to a
        // blocking thread, where writing whenever the socket ran dry cost
        // a hop per few kilobytes.
        let next = match next_within(&mut body, SPOOL_WAIT).await {
            Some(next) => next,
            None => {
                spool.write_pending().await?;
                if let Some(copy) = copy.as_deref_mut() {
                    copy.flush().await;
                }
                body.next().await
            }
        };
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        if bytes > limit {
            return Err(ApiError::TooLarge { limit });
        }
        if head.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == SNIFF_LEN {
                check_container(&head)?;
            }
        }
        if let Some(hasher) = &mut hasher {
            hasher.update(&chunk);
        }
        if let Some(copy) = copy.as_deref_mut() {
            copy.send(&chunk).await;
        }
        spool.push(chunk).await?;
    }
    if bytes == 0 {
        return Err(ApiError::EmptyUpload);
    }
    if head.len() < SNIFF_LEN {
        check_container(&head)?;
    }
    spool.finish().await?;
    Ok(Upload {
        file: upload,
        bytes,
        digest: hasher.map(|h| h.finalize().into()),
    })
}

/// An upload's file, written from a blocking thread in batches of chunks.
struct Spool {
    path: PathBuf,
    /// Free space each write must leave on the disk.
    min_free_bytes: u64,
    /// Created with the first batch, so a refused upload touches no disk.
    file: Option<std::fs::File>,
    pending: Vec<Bytes>,
    pending_bytes: usize,
    /// Bytes written to the file so far.
    written: u64,
}

impl Spool {
    fn new(path: PathBuf, min_free_bytes: u64) -> Self {
        Self {
            path,
            min_free_bytes,
            file: None,
            pending: Vec::new(),
            pending_bytes: 0,
            written: 0,
        }
    }

    /// Keeps `chunk`; writes the batch out once it is large enough.
    async fn push(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        if self.pending_bytes >= SPOOL_BYTES {
            self.write().await?;
        }
        Ok(())
    }

    /// Writes what is pending, if anything.
    async fn write_pending(&mut self) -> Result<(), ApiError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write().await
    }

    /// Writes what is pending (the job's group commit syncs it).
    async fn finish(mut self) -> Result<(), ApiError> {
        self.write_pending().await
    }

    async fn write(&mut self) -> Result<(), ApiError> {
        let (file, path) = (self.file.take(), self.path.clone());
        let chunks = std::mem::take(&mut self.pending);
        let batch = std::mem::take(&mut self.pending_bytes) as u64;
        let before = self.written;
        let min_free = self.min_free_bytes;
        let written = tokio::task::spawn_blocking(move || {
            let dir = path.parent().unwrap_or(Path::new("."));
            if free_bytes(dir)? < batch.saturating_add(min_free) {
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            let mut file = match file {
                Some(file) => file,
                None => std::fs::File::create(&path)?,
            };
            for chunk in &chunks {
                file.write_all(chunk)?;
            }
            // The disk starts on the upload while it arrives, so the
            // commit's sync before the 202 has little left to write.
            writeback::wrote(&file, before, before + batch);
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::StorageFull => ApiError::InsufficientStorage {
                min_free: self.min_free_bytes,
            },
            _ => ApiError::Internal(format!("cannot write upload: {e}")),
        })?;
        self.file = Some(written);
        self.written = before + batch;
        Ok(())
    }
}

/// Refuses bytes that start no video container the transcoder reads.
fn check_container(head: &[u8]) -> Result<(), ApiError> {
    match sniff(head) {
        Some(_) => Ok(()),
        None => Err(ApiError::UnsupportedMedia(
            "the upload is not a video container vidpress reads (mp4, mov, mkv, webm, avi, flv, mpeg-ts, mpeg-ps, ogg, asf)".into(),
        )),
    }
}

/// Names the container family that `head` starts, if it is one we take.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if head.len() >= 8
        && [
            b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot",
        ]
        .iter()
        .any(|m| at(4, *m))
    {
        Some("mp4")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("matroska")
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        Some("avi")
    } else if at(0, b"FLV") {
        Some("flv")
    } else if at(0, &[0x47]) && at(188, &[0x47]) {
        // MPEG-TS: a sync byte starts every 188-byte packet.
        Some("mpegts")
    } else if at(0, &[0x00, 0x00, 0x01, 0xBA]) {
        Some("mpeg")
    } else if at(0, b"OggS") {
        Some("ogg")
    } else if at(0, &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        Some("asf")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_common_containers_and_refuses_other_bytes() {
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0\0\0"), Some("mp4"));
        assert_eq!(
            sniff(&[0x1A, 0x45, 0xDF, 0xA3, 1, 2, 3, 4]),
            Some("matroska")
        );
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Some("avi"));
        assert_eq!(sniff(b"OggS\0\x02"), Some("ogg"));
        assert_eq!(sniff(b"hello, world, this is text"), None);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b"ID3\x04\0\0\0\0"), None);
        assert_eq!(sniff(b""), None);
    }
}
