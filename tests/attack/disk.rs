//! The disk: a submission that would leave less than `--min-free-bytes`
//! free is refused with 507 and leaves no file; and the files a job leaves
//! are owner-only (0600, folders 0700), even under a permissive umask.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::fixtures::{long_clip, small_clip};
use crate::node::{client, Launch};
use crate::raw::{connect, read_response, Reply};
use crate::watch::{Healthy, Scope, Verdict, Watch};

const KILL_GROWTH_MB: u64 = 1024;

/// Bytes free for an unprivileged writer on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs(3) fills the struct it is given; the path is a valid
    // NUL-terminated string.
    unsafe {
        let mut stats: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c_path.as_ptr(), &mut stats), 0, "statvfs");
        stats.f_bavail as u64 * stats.f_frsize as u64
    }
}

/// The margin left above `--min-free-bytes`: a small job fits in it, the
/// 20 MB upload does not.
const MARGIN: u64 = 10_000_000;
const UPLOAD: usize = 20_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_admission() {
    // A tmpfs where nothing else writes, so that the free space stays put
    // (the shared target dir's disk moves by hundreds of MB during a build).
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let mut body = std::fs::read(long_clip()).expect("read the long clip");
    body.resize(UPLOAD, 0);
    let free = free_bytes(&parent);
    let min_free = free - MARGIN;
    let mut node = Launch::new()
        .data_under(&parent)
        .flag("min-free-bytes", min_free)
        .start()
        .await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let stream = connect(node.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let upload = tokio::spawn(async move {
        let head = format!(
            "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n\
             Content-Length: {UPLOAD}\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await?;
        // The node may answer and close before taking it all.
        for piece in body.chunks(256 * 1024) {
            writer.write_all(piece).await?;
        }
        std::io::Result::Ok(writer)
    });
    let reply = read_response(&mut reader, Duration::from_secs(15)).await;
    let _ = upload.await;
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("disk-admission", figures, 64, Healthy::Ok);
    let jobs_dir = node.data.join("jobs");
    let job_folders = std::fs::read_dir(&jobs_dir).map_or(0, |d| d.count());
    let refused = matches!(&reply, Reply::Response(r)
        if r.status == 507 && r.error_code().as_deref() == Some("insufficient_storage"));
    verdict.outcome(format!(
        "a {} MB upload with {} MB above --min-free-bytes: {reply:?}; {job_folders} job \
         folders, {} files in uploads/",
        UPLOAD / 1_000_000,
        MARGIN / 1_000_000,
        node.uploads().len()
    ));
    verdict.check(refused, || {
        format!("the upload was not refused with 507 insufficient_storage: {reply:?}")
    });
    verdict.check(job_folders == 0, || {
        format!("{job_folders} job folders in {}", jobs_dir.display())
    });
    // The small job of `after` fits in the margin: the limit is the free
    // space, not a refusal of everything.
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}

/// Every entry under `dir` (itself included) with its mode bits.
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        found.push((
            path.clone(),
            meta.is_dir(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            todo.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_file_modes() {
    // A umask that takes nothing away: the modes must be the node's doing.
    let mut node = Launch::new().umask(0).start().await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let (status, job) = node
        .submit(&small_clip(), "?preset=ultrafast")
        .await
        .expect("submit");
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("job id").to_owned();
    let ended = node.wait_terminal(&id, Duration::from_secs(30)).await;
    let result = client()
        .get(format!("{}/jobs/{id}/result", node.base()))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("file-modes", figures, 64, Healthy::Ok);
    verdict.check(matches!(ended, Ok((200, _))), || {
        format!("the job did not complete: {ended:?}")
    });
    verdict.check(matches!(result, Ok(200)), || {
        format!("the result did not download: {result:?}")
    });
    let entries = modes(&node.data);
    let (dirs, files): (Vec<_>, Vec<_>) = entries.iter().partition(|e| e.1);
    let wrong: Vec<String> = entries
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(path, _, mode)| {
            let shown = path.strip_prefix(&node.data).unwrap_or(path);
            format!("{} {mode:o}", shown.display())
        })
        .collect();
    verdict.outcome(format!(
        "after a completed job (umask 000): {} files, {} folders, {} not owner-only{}",
        files.len(),
        dirs.len(),
        wrong.len(),
        if wrong.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                wrong.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
            )
        }
    ));
    verdict.check(wrong.is_empty(), || {
        format!(
            "{} entries are not 0600/0700: {}",
            wrong.len(),
            wrong.join(", ")
        )
    });
    // At least the job's record and its result.
    verdict.check(files.len() >= 2, || {
        format!(
            "only {} files under the data dir: the job left no trace?",
            files.len()
        )
    });
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}
