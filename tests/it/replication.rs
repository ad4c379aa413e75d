//! A new job's input goes to its standby while it is uploaded (issue 17):
//! the standby holds it before the upload ends, the 202 then waits only for
//! the record; an upload broken off leaves no copy; a standby lost mid-upload
//! gives way to another standby, or the job is refused with 503 and nothing
//! of it is kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::SinkExt;
use serde_json::Value;
use tempfile::TempDir;

use crate::cluster::{wait_members_up, NodeProc};
use crate::support::{clip, eventually};

const COOKIE: &str = "replication-test-cookie";

/// Pieces an upload is sent in.
const PIECES: usize = 16;

/// Starts `names` as a cluster (the first the seed), one worker each, and
/// waits until every node sees them all.
async fn cluster(names: &[&str]) -> (Vec<NodeProc>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes: Vec<NodeProc> = Vec::new();
    for name in names {
        let seeds = nodes
            .first()
            .map(|seed| vec![seed.cluster])
            .unwrap_or_default();
        nodes.push(NodeProc::spawn_with(
            name,
            &dir,
            1,
            seeds,
            COOKIE,
            Vec::new(),
        ));
    }
    for node in &nodes {
        wait_members_up(node, names.len(), Duration::from_secs(30)).await;
    }
    (nodes, dir)
}

/// An upload the test sends piece by piece.
struct SlowUpload {
    pieces: Vec<Bytes>,
    sent: usize,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    response: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

impl SlowUpload {
    /// Starts a raw-body upload of `file` to `node`, sending nothing yet.
    fn start(node: &NodeProc, file: &Path) -> Self {
        let bytes = Bytes::from(std::fs::read(file).expect("the clip"));
        let size = bytes.len().div_ceil(PIECES);
        let pieces = (0..bytes.len())
            .step_by(size)
            .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
            .collect();
        let (sender, receiver) = mpsc::channel(1);
        let request = reqwest::Client::new()
            .post(format!("{}/jobs", node.base()))
            .body(reqwest::Body::wrap_stream(receiver));
        Self {
            pieces,
            sent: 0,
            sender,
            response: tokio::spawn(request.send()),
        }
    }

    /// Sends the next `n` pieces.
    async fn send(&mut self, n: usize) {
        for piece in self.pieces.iter().skip(self.sent).take(n) {
            self.sender
                .send(Ok(piece.clone()))
                .await
                .expect("the body goes out");
        }
        self.sent = (self.sent + n).min(self.pieces.len());
    }

    /// Sends the rest and returns the answer's status and document.
    async fn finish(mut self) -> (u16, Value) {
        self.send(PIECES).await;
        drop(self.sender);
        let response = self
            .response
            .await
            .expect("the request task")
            .expect("an answer");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }
}

/// Every file under `dir`, with its size.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            let size = entry.metadata().map_or(0, |m| m.len());
            found.push((path, size));
        }
    }
    found
}

/// Waits until `node` holds part of a copy being streamed to it, and
/// returns its size.
async fn wait_for_partial_copy(node: &NodeProc) -> u64 {
    let replicas = node.data.join("replicas");
    eventually(
        format!("{} to receive part of the input", node.name),
        Duration::from_secs(10),
        || async {
            files_under(&replicas)
                .into_iter()
                .find(|(path, size)| path.ends_with("input.part") && *size > 0)
                .map(|(_, size)| size)
                .ok_or_else(|| format!("{:?}", files_under(&replicas)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_input_reaches_the_standby_while_it_is_uploaded() {
    let (nodes, _dir) = cluster(&["node-a", "node-b", "node-c"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let input = clip(4);
    let mut upload = SlowUpload::start(a, &input);
    upload.send(PIECES / 2).await;
    // Half the upload is sent and no 202 has come: node-b (node-a's
    // standby, the next by name) is receiving the input already.
    let partial = wait_for_partial_copy(b).await;
    assert!(
        !upload.response.is_finished(),
        "answered before the upload ended"
    );
    let total = std::fs::metadata(&input).expect("the clip").len();
    assert!(partial < total, "a partial copy of {partial} of {total} B");
    let (status, job) = upload.finish().await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("an id");
    let copy = b.data.join("replicas").join(id);
    assert_eq!(
        std::fs::read(copy.join("input")).expect("the standby's copy"),
        std::fs::read(&input).expect("the clip"),
        "the standby's copy differs from the upload"
    );
    assert!(copy.join("job.json").exists(), "the standby has no record");
    assert!(
        !a.log().contains("copying it after the upload"),
        "the streamed copy failed:\n{}",
        a.log()
    );
    let (code, done) =
        crate::support::wait_for_terminal(&a.base(), id, Duration::from_secs(60)).await;
    assert_eq!(
        (code, done["status"].as_str()),
        (200, Some("completed")),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_broken_off_leaves_no_copy_on_the_standby() {
    let (nodes, _dir) = cluster(&["node-a", "node-b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut upload = SlowUpload::start(a, &clip(4));
    upload.send(PIECES / 2).await;
    wait_for_partial_copy(b).await;
    // The client goes away mid-upload.
    upload.response.abort();
    drop(upload);
    let (uploads, replicas) = (a.data.join("uploads"), b.data.join("replicas"));
    eventually(
        "the partial upload and its copy to be removed".to_owned(),
        Duration::from_secs(10),
        || async {
            let left = [files_under(&uploads), files_under(&replicas)].concat();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_lost_mid_upload_gives_way_to_another() {
    let (mut nodes, _dir) = cluster(&["node-a", "node-b", "node-c"]).await;
    let input = clip(4);
    let mut upload = SlowUpload::start(&nodes[0], &input);
    upload.send(PIECES / 2).await;
    wait_for_partial_copy(&nodes[1]).await;
    nodes[1].kill();
    // The rest comes after node-a marked node-b down (1.5 s here).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, job) = upload.finish().await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("an id");
    let copy = nodes[2].data.join("replicas").join(id);
    assert_eq!(
        std::fs::read(copy.join("input")).expect("node-c's copy"),
        std::fs::read(&input).expect("the clip"),
        "node-c's copy differs from the upload"
    );
    assert!(copy.join("job.json").exists(), "node-c has no record");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_only_standby_is_lost_mid_upload_is_refused_and_removed() {
    let (mut nodes, _dir) = cluster(&["node-a", "node-b"]).await;
    let mut upload = SlowUpload::start(&nodes[0], &clip(4));
    upload.send(PIECES / 2).await;
    wait_for_partial_copy(&nodes[1]).await;
    nodes[1].kill();
    let (status, body) = upload.finish().await;
    assert_eq!(status, 503, "{body}");
    let a = &nodes[0];
    let left = [
        files_under(&a.data.join("uploads")),
        files_under(&a.data.join("jobs")),
    ]
    .concat();
    assert!(left.is_empty(), "a refused upload left {left:?}");
}
