//! The bound multer lacks on multipart bodies: multer keeps a part's headers
//! (and the preamble before the first boundary) in memory until they end,
//! bounded only by the size of the whole body. [`HeaderGuard`] watches the
//! raw bytes on their way to multer and fails the body as soon as a part's
//! header block passes [`MAX_PART_HEADERS`], so a header line that never
//! ends costs 16 KiB, not the upload limit. [`receive`] takes the `file`
//! part of a submitted form through it.

use std::path::Path;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use memchr::memmem;

use super::error::{ApiError, PartHeadersTooLarge, MAX_PART_HEADERS};
use super::standby_copy::StandbyCopy;
use super::upload::{self, Upload, UploadLimits};

/// Where the guard is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first boundary.
    Preamble,
    /// After a boundary, before the blank line that ends the part's headers.
    Headers,
    /// A part's content, until the next boundary.
    Content,
}

/// Follows a multipart body's structure, counting only what is buffered
/// whole: the preamble and each part's header block.
#[derive(Debug)]
pub struct HeaderGuard {
    /// `\r\n--boundary`; the first boundary may come without the CRLF.
    delimiter: Vec<u8>,
    stage: Stage,
    /// Bytes of the current preamble or header block so far.
    run: usize,
    /// The last bytes seen, for a delimiter split across two chunks.
    tail: Vec<u8>,
}

impl HeaderGuard {
    /// Returns a guard for a body whose parts are separated by `boundary`.
    pub fn new(boundary: &str) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Self {
            delimiter,
            stage: Stage::Preamble,
            run: 0,
            tail: Vec::new(),
        }
    }

    /// Takes the next bytes of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), PartHeadersTooLarge> {
        while !chunk.is_empty() {
            let needle: &[u8] = match self.stage {
                Stage::Preamble => &self.delimiter[2..],
                Stage::Headers => b"\r\n\r\n",
                Stage::Content => &self.delimiter,
            };
            let found = find(&self.tail, chunk, needle);
            let counted = found.unwrap_or(chunk.len());
            if self.stage != Stage::Content {
                self.run += counted;
                if self.run > MAX_PART_HEADERS {
                    return Err(PartHeadersTooLarge);
                }
            }
            let Some(end) = found else {
                keep_tail(&mut self.tail, chunk, needle.len() - 1);
                return Ok(());
            };
            self.stage = match self.stage {
                Stage::Preamble | Stage::Content => Stage::Headers,
                Stage::Headers => Stage::Content,
            };
            self.run = 0;
            self.tail.clear();
            chunk = &chunk[end..];
        }
        Ok(())
    }
}

/// Returns `body` with `guard` on it: the stream fails with
/// [`PartHeadersTooLarge`] at the chunk that takes a header block over.
pub fn guarded<S, E>(
    body: S,
    mut guard: HeaderGuard,
) -> impl Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body.map(move |chunk| {
        let chunk = chunk.map_err(Into::into)?;
        guard.feed(&chunk)?;
        Ok(chunk)
    })
}

/// Receives the `file` part of a multipart body. The whole body counts
/// against the upload limit, and each part's headers against
/// [`MAX_PART_HEADERS`].
pub async fn receive(
    dir: &Path,
    limits: UploadLimits,
    headers: &HeaderMap,
    body: Body,
    hash: bool,
    copy: Option<&mut StandbyCopy>,
) -> Result<Upload, ApiError> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| {
            ApiError::BadRequest("malformed multipart body: no boundary in Content-Type".into())
        })?;
    let body = guarded(body.into_data_stream(), HeaderGuard::new(&boundary));
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(limits.max_bytes));
    let mut form = multer::Multipart::with_constraints(body, boundary, constraints);
    let failed = |e: multer::Error| match e {
        multer::Error::StreamReadFailed(cause) => limits.body_error(&*cause),
        multer::Error::StreamSizeExceeded { limit }
        | multer::Error::FieldSizeExceeded { limit, .. } => ApiError::TooLarge { limit },
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    };
    while let Some(field) = form.next_field().await.map_err(failed)? {
        if field.name() == Some("file") {
            let body = field.map_err(failed);
            return upload::receive(dir, limits, hash, copy, Box::pin(body)).await;
        }
    }
    Err(ApiError::BadRequest(
        "the multipart body has no part named \"file\"".into(),
    ))
}

/// Finds `needle` in `tail` followed by `chunk`; returns the index in
/// `chunk` just past the first match. `tail` is shorter than `needle`, so
/// a match that starts in it ends in `chunk`.
fn find(tail: &[u8], chunk: &[u8], needle: &[u8]) -> Option<usize> {
    if !tail.is_empty() {
        let head = &chunk[..chunk.len().min(needle.len() - 1)];
        let mut joined = Vec::with_capacity(tail.len() + head.len());
        joined.extend_from_slice(tail);
        joined.extend_from_slice(head);
        if let Some(at) = memmem::find(&joined, needle) {
            return Some(at + needle.len() - tail.len());
        }
    }
    memmem::find(chunk, needle).map(|at| at + needle.len())
}

/// Keeps the last `keep` bytes of `tail` followed by `chunk`.
fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8], keep: usize) {
    if chunk.len() >= keep {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - keep..]);
    } else {
        tail.extend_from_slice(chunk);
        let excess = tail.len().saturating_sub(keep);
        tail.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "XyZ";

    fn body(header_len: usize, content: &[u8]) -> Vec<u8> {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', header_len));
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(
            b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nx\r\n--XyZ--\r\n",
        );
        body
    }

    /// Feeds `body` in chunks of `size` bytes.
    fn feed(body: &[u8], size: usize) -> Result<(), PartHeadersTooLarge> {
        let mut guard = HeaderGuard::new(BOUNDARY);
        body.chunks(size).try_for_each(|chunk| guard.feed(chunk))
    }

    #[test]
    fn a_body_with_small_headers_passes_in_any_chunking() {
        let content = vec![b'\r'; 100_000];
        let body = body(100, &content);
        for size in [1, 2, 3, 7, 64, 4096, body.len()] {
            assert!(feed(&body, size).is_ok(), "chunks of {size}");
        }
    }

    #[test]
    fn content_of_any_size_is_not_counted() {
        let content = vec![b'v'; 10 * MAX_PART_HEADERS];
        assert!(feed(&body(0, &content), 1000).is_ok());
    }

    #[test]
    fn a_header_block_over_the_limit_fails_in_any_chunking() {
        let body = body(MAX_PART_HEADERS, b"video");
        for size in [1, 5, 4096, body.len()] {
            assert!(feed(&body, size).is_err(), "chunks of {size}");
        }
    }

    #[test]
    fn a_header_line_that_never_ends_fails_once_past_the_limit() {
        let mut guard = HeaderGuard::new(BOUNDARY);
        guard.feed(b"--XyZ\r\nContent-Disposition: ").unwrap();
        let line = vec![b'x'; 1024];
        let fed = (0..100).take_while(|_| guard.feed(&line).is_ok()).count();
        assert_eq!(fed, MAX_PART_HEADERS / 1024 - 1);
    }

    #[test]
    fn a_preamble_over_the_limit_fails() {
        let mut guard = HeaderGuard::new(BOUNDARY);
        let preamble = vec![b'p'; MAX_PART_HEADERS + 1];
        assert!(guard.feed(&preamble).is_err());
    }

    #[test]
    fn the_second_part_headers_are_counted_too() {
        let mut body = b"--XyZ\r\nA: b\r\n\r\ncontent\r\n--XyZ\r\nB: ".to_vec();
        body.extend(std::iter::repeat_n(b'c', MAX_PART_HEADERS));
        assert!(feed(&body, 333).is_err());
    }
}
