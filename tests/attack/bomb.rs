//! The decompression bomb: about 200 KB that decode to 8192x8192 frames,
//! submitted three at a time with `preset=veryslow&crf=0` to a node with
//! default flags. Each must fail with `limits_exceeded` within seconds, the
//! node and its children together must stay under one child's memory limit
//! (2 GiB), and the worker must be free again for a normal job. Without the
//! limits, one such file had the transcoder at 7.3 GB after 60 s.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::bomb;
use crate::node::{Launch, Node};
use crate::watch::{Healthy, Scope, Verdict, Watch};

const BOMBS: usize = 3;
/// How soon after its submission a bomb must have failed.
const FAILED_WITHIN: Duration = Duration::from_secs(20);
/// The default `--max-child-memory-bytes`: all the bombs together.
const GROWTH_MB: u64 = 2048;
/// Past this the watch kills the node and its children.
const KILL_GROWTH_MB: u64 = 6144;

/// How one bomb ended: its error code and message, and when.
#[derive(Debug)]
struct Ending {
    code: Option<String>,
    message: String,
    after: Duration,
}

/// Submits one bomb; returns how it ended (refused at once, or failed).
async fn drop_bomb(node: &Node) -> Result<Ending, String> {
    let start = Instant::now();
    let (status, body) = node.submit(&bomb(), "?preset=veryslow&crf=0").await?;
    let ending = |body: &Value| Ending {
        code: body["error"]["code"].as_str().map(str::to_owned),
        message: body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        after: start.elapsed(),
    };
    if status != 202 {
        // Refused before it was accepted: as good, if for the same reason.
        return Ok(ending(&body));
    }
    let id = body["id"].as_str().ok_or("no job id")?;
    let (_, job) = node.wait_terminal(id, FAILED_WITHIN).await?;
    if job["status"] != "failed" {
        return Err(format!("the bomb ended {}: {job}", job["status"]));
    }
    Ok(ending(&job))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bomb() {
    // Made before the node starts: ffmpeg takes a while over it, once.
    bomb();
    let mut node = Launch::new().start().await;

    let watch = Watch::start(&[&node], &node, Scope::Tree, KILL_GROWTH_MB);
    let endings = futures::future::join_all((0..BOMBS).map(|_| drop_bomb(&node))).await;
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("decompression-bomb", figures, GROWTH_MB, Healthy::Ok);
    let limited: Vec<&Ending> = endings
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .filter(|e| e.code.as_deref() == Some("limits_exceeded"))
        .collect();
    let slowest = limited.iter().map(|e| e.after).max().unwrap_or_default();
    verdict.outcome(format!(
        "{} of {BOMBS} failed with limits_exceeded within {:.1} s ({:?}); memory is the tree's",
        limited.len(),
        slowest.as_secs_f64(),
        limited.first().map_or("", |e| e.message.as_str())
    ));
    let other: Vec<String> = endings
        .iter()
        .filter(|e| {
            !e.as_ref()
                .is_ok_and(|e| e.code.as_deref() == Some("limits_exceeded"))
        })
        .map(|e| format!("{e:?}"))
        .collect();
    verdict.check(other.is_empty(), || {
        format!(
            "{} bombs did not fail with limits_exceeded: {}",
            other.len(),
            other[0]
        )
    });
    verdict.check(
        limited.iter().all(|e| {
            ["pixel", "memory"]
                .iter()
                .any(|w| e.message.to_lowercase().contains(w))
        }),
        || "a limits_exceeded message names no limit".into(),
    );
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}
