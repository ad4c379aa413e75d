//! Streams an upload to disk: raw body or the `file` part of a multipart
//! form, hashed on the way, bounded by the upload limit, and refused early
//! when its first bytes are not a video container.
//!
//! The partial file is owned by a [`TempUpload`] guard, so a client that
//! disconnects mid-upload (the handler's future is dropped) leaves no file.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::error::ApiError;

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

/// Body bytes gathered in memory before they go to disk in one blocking
/// write (no copy: the chunks themselves are handed over).
const SPOOL_BYTES: usize = 256 * 1024;

/// Writes `body` to a new file in `dir`, refusing more than `limit` bytes
/// and anything whose first bytes are not a known video container; hashes it
/// when `hash` is set (only an idempotent submission needs the digest). The
/// file's contents are on disk (fdatasync) when this returns; its folder
/// entry is made durable where it ends up, in the job's folder.
pub async fn receive<S, E>(dir: &Path, limit: u64, hash: bool, body: S) -> Result<Upload, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let upload = TempUpload::new(dir);
    let mut spool = Spool::new(upload.path.clone());
    let mut hasher = hash.then(Sha256::new);
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut bytes: u64 = 0;
    let mut body = body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ApiError::UploadInterrupted)?;
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
        spool.push(chunk).await?;
    }
    if bytes == 0 {
        return Err(ApiError::EmptyUpload);
    }
    if head.len() < SNIFF_LEN {
        check_container(&head)?;
    }
    // Durable before the 202 that promises the job.
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
    /// Created with the first batch, so a refused upload touches no disk.
    file: Option<std::fs::File>,
    pending: Vec<Bytes>,
    pending_bytes: usize,
}

impl Spool {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    /// Keeps `chunk`; writes the batch out once it is large enough.
    async fn push(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        if self.pending_bytes >= SPOOL_BYTES {
            self.write(false).await?;
        }
        Ok(())
    }

    /// Writes what is pending and flushes the file's data to the disk.
    async fn finish(mut self) -> Result<(), ApiError> {
        self.write(true).await
    }

    async fn write(&mut self, sync: bool) -> Result<(), ApiError> {
        let (file, path) = (self.file.take(), self.path.clone());
        let chunks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let written = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => std::fs::File::create(&path)?,
            };
            for chunk in &chunks {
                file.write_all(chunk)?;
            }
            if sync {
                file.sync_data()?;
            }
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written)
        .map_err(|e| ApiError::Internal(format!("cannot write upload: {e}")))?;
        self.file = Some(written);
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
