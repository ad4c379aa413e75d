//! The replicated submit of a large upload: the time from the request's
//! first byte to its 202 on a cluster of two (the owner streams the input
//! to its standby while it arrives) against one node alone, which keeps a
//! single copy. Both sides run in turn (A B B A ...), each run after the
//! page cache's dirty pages are flushed; medians are compared.
//!
//! Run twice: with the client sending as fast as loopback takes it (every
//! party then bound by the CPU of a two-core machine, the standby's copy
//! included), and with the client sending at a link's rate (`--replicated-
//! link-mbit`, 1000 by default), as a client elsewhere on a network does,
//! the two nodes' own link left unbounded. A copy made after the upload
//! would add its whole time at any rate; a copy streamed during it adds
//! only what the standby has left when the last byte arrives.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;

use crate::node::{self, Node};
use crate::report::{Entry, Goal};
use crate::{flush_dirty_pages, Bench};

/// The most a cluster's 202 may come later than one node's (issue 17).
const TARGET: f64 = 1.2;

impl Bench {
    /// Times the upload of `megabytes` to 202, `repeats` times on each
    /// side, the client sending at `link_mbit` megabits a second if given.
    pub(crate) async fn replicated(
        &self,
        megabytes: u64,
        repeats: usize,
        link_mbit: Option<u64>,
    ) -> anyhow::Result<Entry> {
        let input = self.large_input(megabytes)?;
        let body = bytes::Bytes::from(std::fs::read(&input)?);
        let paced = link_mbit.map_or("", |_| "-paced");
        let solo = self.solo(&format!("replicated-one{paced}"), 0)?;
        let (owner, standby) = self.pair(&format!("replicated-two{paced}"), [0, 0]).await?;
        // The standby, the one party the cluster adds, on a core of its
        // own, as on a machine of its own. Two cores cannot give the client
        // one too: it shares core 0 with the node it uploads to, on both
        // sides alike. (With the client beside the standby instead, the
        // cluster's side alone would have a core shared by two parties: its
        // standby slowed by a client that, on a real network, is elsewhere.)
        let pinned = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
        if pinned {
            solo.pin(Some(0))?;
            owner.pin(Some(0))?;
            standby.pin(Some(1))?;
            pin_self(0)?;
        }
        let (mut one, mut two) = (Side::default(), Side::default());
        for round in 0..repeats {
            let sides: [(Vec<&Node>, &mut Side); 2] =
                [(vec![&solo], &mut one), (vec![&owner, &standby], &mut two)];
            let ordered: Vec<_> = if round % 2 == 0 {
                sides.into_iter().collect()
            } else {
                sides.into_iter().rev().collect()
            };
            for (nodes, side) in ordered {
                flush_dirty_pages();
                let cpu = |nodes: &[&Node]| -> anyhow::Result<f64> {
                    nodes.iter().map(|n| n.cpu_seconds()).sum()
                };
                let before = cpu(&nodes)?;
                side.seconds.push(
                    self.time_to_202(nodes[0], body.clone(), link_mbit)
                        .await?
                        .as_secs_f64(),
                );
                side.cpu.push(cpu(&nodes)? - before);
                if let [owner, standby] = nodes[..] {
                    side.owner_cpu.push(owner.cpu_seconds()?);
                    side.standby_cpu.push(standby.cpu_seconds()?);
                }
            }
        }
        // Each round's two sides ran one after the other, in the same state
        // of the machine's memory (whose first touch, on this VM, can cost
        // ten times a warm write): their ratios show the drift the medians
        // hide.
        let rounds: Vec<f64> = one
            .seconds
            .iter()
            .zip(&two.seconds)
            .map(|(one, two)| two / one)
            .collect();
        let (one_median, two_median) = (median(&mut one.seconds), median(&mut two.seconds));
        if pinned {
            pin_self_anywhere()?;
        }
        let placement = if pinned {
            "the client with the node alone or the owner on core 0, the standby on core 1"
        } else {
            "not pinned (one core)"
        };
        let link = link_mbit.map_or_else(
            || "sent as fast as loopback takes it".to_owned(),
            |mbit| format!("sent at {mbit} Mbit/s (the nodes' own link unbounded)"),
        );
        let note = format!(
            "{megabytes} MB raw body on loopback, {link}, {placement}, {repeats} runs each (medians), s: one node {}, \
             two nodes {}; each round's ratio, two nodes to one: {}; CPU s of the nodes per upload: \
             one node {}, owner and standby {} (owner's in all {}, standby's {})",
            list(&one.seconds),
            list(&two.seconds),
            list(&rounds),
            list(&one.cpu),
            list(&two.cpu),
            list(&two.owner_cpu),
            list(&two.standby_cpu)
        );
        let name = match link_mbit {
            None => format!("replicated submit of {megabytes} MB: time to 202, 2 nodes vs 1"),
            Some(mbit) => format!(
                "replicated submit of {megabytes} MB from a {mbit} Mbit/s client: time to 202, 2 nodes vs 1"
            ),
        };
        Ok(Entry::new(
            &name,
            "s",
            two_median,
            one_median,
            Goal::AtMost(TARGET),
            note,
        ))
    }

    /// A file of `megabytes` that starts like an MP4 (so it is taken), made
    /// once under the output folder.
    fn large_input(&self, megabytes: u64) -> anyhow::Result<PathBuf> {
        let path = self.out.join(format!("large-{megabytes}mb.mp4"));
        let size = megabytes * 1_000_000;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            return Ok(path);
        }
        let mut bytes = vec![0u8; size as usize];
        bytes[..16].copy_from_slice(b"\0\0\0\x10ftypisom\0\0\0\0");
        // Not all zeros: a pattern no file system stores sparsely.
        for (i, b) in bytes.iter_mut().enumerate().skip(16) {
            *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        write_new(&path, &bytes)?;
        Ok(path)
    }

    /// Submits `body` to `node`, at `link_mbit` megabits a second if
    /// given, and returns how long its 202 took.
    async fn time_to_202(
        &self,
        node: &Node,
        body: bytes::Bytes,
        link_mbit: Option<u64>,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let body = match link_mbit {
            Some(mbit) => paced(body, mbit, started),
            None => reqwest::Body::from(body),
        };
        let response = self
            .client
            .post(format!("{}/jobs", node.base()))
            .body(body)
            .send()
            .await
            .context("the large upload")?;
        let took = started.elapsed();
        if response.status() != 202 {
            bail!(
                "the large upload was answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(took)
    }
}

/// The times to 202 of one side, and the CPU its nodes spent on each.
#[derive(Default)]
struct Side {
    seconds: Vec<f64>,
    cpu: Vec<f64>,
    /// The owner's and the standby's CPU seconds so far, after each run.
    owner_cpu: Vec<f64>,
    standby_cpu: Vec<f64>,
}

/// Bytes a paced body sends at a time.
const PACED_CHUNK: usize = 256 << 10;

/// `body` as a stream that sends each chunk once a link of `mbit` megabits
/// a second, starting at `started`, would have carried the bytes before it.
fn paced(body: bytes::Bytes, mbit: u64, started: Instant) -> reqwest::Body {
    let bytes_per_second = (mbit.max(1) * 1_000_000 / 8) as f64;
    let starts = (0..body.len()).step_by(PACED_CHUNK);
    let chunks = futures::stream::iter(starts).then(move |start| {
        let chunk = body.slice(start..(start + PACED_CHUNK).min(body.len()));
        let due = started + Duration::from_secs_f64(start as f64 / bytes_per_second);
        async move {
            tokio::time::sleep_until(due.into()).await;
            Ok::<_, std::io::Error>(chunk)
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// Keeps every thread of this process to `core`.
fn pin_self(core: usize) -> anyhow::Result<()> {
    for_own_threads(|tid| node::set_affinity(tid, Some(core)))
}

/// Lets every thread of this process run anywhere again.
fn pin_self_anywhere() -> anyhow::Result<()> {
    for_own_threads(|tid| node::set_affinity(tid, None))
}

fn for_own_threads(set: impl Fn(libc::pid_t) -> std::io::Result<()>) -> anyhow::Result<()> {
    for task in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = task?.file_name().to_str().and_then(|n| n.parse().ok()) {
            // A thread that has ended since the listing is no matter.
            let _ = set(tid);
        }
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
