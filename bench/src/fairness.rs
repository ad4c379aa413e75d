//! Fairness between tenants: on a node with one worker, tenant `big`
//! submits a burst of jobs, then tenant `small` submits one at a time, five
//! times, at phases spread over a job of the burst. With the queue taking
//! turns between tenants, `small`'s job waits for at most the job running
//! when it arrived, not for the burst: its wait (202 to `running`, which a
//! job is from its dispatch) is compared with one job's time on that
//! worker: the mean interval between completions of the burst (dispatch,
//! child start and bookkeeping included, as in the wait). The mean wait
//! should come near half a job; first-come-first-served would make it wait
//! for the whole burst, which is given beside it for scale.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::node::{Node, NodeSpec};
use crate::report::{Entry, Goal};

const BIG: &str = "big-tenant-token-0123456789abcdef";
const SMALL: &str = "small-tenant-token-0123456789abcd";
/// Times the one job is submitted during the burst.
const ROUNDS: usize = 5;

/// Runs the burst of `burst` jobs and the one jobs during it.
pub async fn run(binary: &Path, dir: &Path, clip: &Path, burst: usize) -> anyhow::Result<Entry> {
    let keys = dir.join("api-keys");
    std::fs::write(&keys, format!("big:{BIG}\nsmall:{SMALL}\n"))?;
    let args = ["--api-keys".to_owned(), keys.display().to_string()];
    let node = Node::start(
        binary,
        dir,
        &NodeSpec {
            name: "fair",
            workers: 1,
            seed: None,
            clustered: false,
            args: &args,
        },
    )?;
    let client = reqwest::Client::new();
    let body = std::fs::read(clip)?;
    let mut burst_ids = Vec::with_capacity(burst);
    for _ in 0..burst {
        burst_ids.push(submit(&client, &node, BIG, body.clone()).await?);
    }
    // The burst runs; one job's time is measured on it, then the one job
    // comes at phases spread over a job of the burst.
    wait_for(&client, &node, BIG, &burst_ids[0], "running").await?;
    let one_job = job_interval(&client, &node, 10).await?;
    let mut waits = Vec::with_capacity(ROUNDS);
    let mut ran = 0.0;
    for round in 0..ROUNDS {
        let phase = one_job * round as f64 / ROUNDS as f64;
        tokio::time::sleep(Duration::from_secs_f64(phase)).await;
        let submitted = Instant::now();
        let id = submit(&client, &node, SMALL, body.clone()).await?;
        let started = wait_for(&client, &node, SMALL, &id, "running").await?;
        let ended = wait_for(&client, &node, SMALL, &id, "completed").await?;
        waits.push(started.duration_since(submitted).as_secs_f64());
        ran += ended.duration_since(started).as_secs_f64() / ROUNDS as f64;
    }
    let waited = waits.iter().sum::<f64>() / ROUNDS as f64;
    let longest = waits.iter().copied().fold(0.0, f64::max);
    let mut still_queued = 0;
    for big in &burst_ids {
        let url = format!("{}/jobs/{big}", node.base());
        let doc: Value = client
            .delete(url)
            .bearer_auth(BIG)
            .send()
            .await?
            .json()
            .await?;
        if doc["status"] == "canceled" && doc["attempt"] == 0 {
            still_queued += 1;
        }
    }
    Ok(Entry::new(
        "fairness: one tenant's job after another's burst, mean wait / one job's time",
        "s",
        waited,
        one_job,
        Goal::AtMost(1.0),
        format!(
            "1 worker; tenant big submitted {burst} jobs, then tenant small 1 at a time, \
             {ROUNDS} times at phases spread over a job of big's; small waited {waited:.2} s \
             on average, {longest:.2} s at most (202 to running: dispatched) and ran {ran:.2} s; \
             one job takes {one_job:.2} s on the worker (mean interval of 10 completions of \
             big's); {still_queued} of \
             big's jobs were still queued (never started) at the end; \
             first-come-first-served would have had it wait ~{:.0} s",
            one_job * (burst - 1) as f64
        ),
    ))
}

/// Returns the mean time between `count` completions of big's jobs from now.
async fn job_interval(client: &reqwest::Client, node: &Node, count: usize) -> anyhow::Result<f64> {
    let completed = || async {
        let page: Value = client
            .get(format!("{}/jobs?status=completed&limit=1000", node.base()))
            .bearer_auth(BIG)
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(page["jobs"].as_array().map_or(0, Vec::len))
    };
    // Counted from a completion, so the intervals are whole ones.
    let first = completed().await?;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let now = completed().await?;
        match start {
            None if now > first => start = Some((Instant::now(), now)),
            Some((at, from)) if now >= from + count => {
                return Ok(at.elapsed().as_secs_f64() / (now - from) as f64)
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the burst's jobs stopped completing")
}

async fn submit(
    client: &reqwest::Client,
    node: &Node,
    token: &str,
    body: Vec<u8>,
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{}/jobs", node.base()))
        .bearer_auth(token)
        .body(body)
        .send()
        .await?;
    if response.status() != 202 {
        bail!("submit answered {}", response.status());
    }
    let doc: Value = response.json().await?;
    doc["id"]
        .as_str()
        .map(str::to_owned)
        .context("a job id in the answer")
}

/// Polls every 20 ms until the job reaches `status` (or a later one);
/// returns when it was first seen there.
async fn wait_for(
    client: &reqwest::Client,
    node: &Node,
    token: &str,
    id: &str,
    status: &str,
) -> anyhow::Result<Instant> {
    let order = ["queued", "running", "completed"];
    let wanted = order
        .iter()
        .position(|s| *s == status)
        .context("a status")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let doc: Value = client
            .get(format!("{}/jobs/{id}", node.base()))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        let now = doc["status"].as_str().unwrap_or_default();
        match order.iter().position(|s| *s == now) {
            Some(at) if at >= wanted => return Ok(Instant::now()),
            Some(_) => {}
            None => bail!("job {id} ended {now}: {doc}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("job {id} never reached {status}")
}
