//! Connections that cost a node without doing anything: slowloris (headers
//! trickled forever), uploads that stall, a flood of connections at a
//! 256-file limit, and the connection cap. Without timeouts and a cap, 300
//! slowloris connections were all still open after 60 s, 400 stalled uploads
//! held 109 MB, and at 256 files a normal request failed ("accept error: Too
//! many open files").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::fixtures::long_clip;
use crate::node::Launch;
use crate::raw::{connect, read_response, wait_closed, Reply, Response};
use crate::watch::{normal_job, Healthy, Scope, Verdict, Watch};

const KILL_GROWTH_MB: u64 = 1024;

/// What one connection saw after it was opened: an answer (and whether the
/// node then closed the connection), a close without one, or nothing yet
/// (the connection is still open, and kept).
struct Knock {
    reply: Reply,
    after: Duration,
    closed: bool,
    stream: Option<TcpStream>,
}

/// Waits up to `limit` for the node to answer or close a connection that
/// sends nothing.
async fn knock(mut stream: TcpStream, limit: Duration) -> Knock {
    let start = Instant::now();
    let reply = read_response(&mut stream, limit).await;
    let after = start.elapsed();
    match reply {
        Reply::Silent => Knock {
            reply,
            after,
            closed: false,
            stream: Some(stream),
        },
        Reply::Closed => Knock {
            reply,
            after,
            closed: true,
            stream: None,
        },
        Reply::Response(_) => Knock {
            closed: wait_closed(&mut stream, Duration::from_secs(1)).await,
            reply,
            after,
            stream: None,
        },
    }
}

/// Returns whether a connection was refused as the cap says: 503, code
/// `unavailable`, `Retry-After`, then closed.
fn refused(knock: &Knock) -> bool {
    matches!(&knock.reply, Reply::Response(r) if is_unavailable(r)) && knock.closed
}

fn is_unavailable(r: &Response) -> bool {
    r.status == 503
        && r.error_code().as_deref() == Some("unavailable")
        && r.header("retry-after").is_some()
}

// ---- slowloris ----

const SLOWLORIS: usize = 300;
const HEADER_TIMEOUT_SECS: u64 = 2;
/// How soon after connecting the node must have dropped each connection.
const SLOW_DROPPED_WITHIN: Duration = Duration::from_secs(HEADER_TIMEOUT_SECS + 2);

/// Sends a request line, then one more header line every 250 ms, never the
/// blank line; returns when the node dropped the connection (and whether
/// it answered first), or `None` if it was still open after 10 s.
async fn slowloris(addr: SocketAddr, n: usize) -> Option<(Duration, Option<u16>)> {
    let stream = connect(addr).await.ok()?;
    let start = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        if writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .is_ok()
        {
            for line in 0.. {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let header = format!("X-Slow-{line}: {n}\r\n");
                if writer.write_all(header.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await;
    };
    let read = async {
        match read_response(&mut reader, Duration::from_secs(10)).await {
            Reply::Closed => Some((start.elapsed(), None)),
            Reply::Response(r) => wait_closed(&mut reader, Duration::from_secs(2))
                .await
                .then(|| (start.elapsed(), Some(r.status))),
            Reply::Silent => None,
        }
    };
    tokio::select! {
        dropped = read => dropped,
        () = write => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers() {
    let mut node = Launch::new()
        .flag("header-timeout", HEADER_TIMEOUT_SECS)
        .start()
        .await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let tasks: Vec<_> = (0..SLOWLORIS)
        .map(|n| tokio::spawn(slowloris(node.addr, n)))
        .collect();
    let mut dropped = Vec::new();
    for task in tasks {
        dropped.push(task.await.expect("slowloris task"));
    }
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("slowloris", figures, 64, Healthy::Ok);
    let times: Vec<Duration> = dropped.iter().flatten().map(|d| d.0).collect();
    let slowest = times.iter().max().copied().unwrap_or_default();
    let answered = dropped.iter().flatten().filter(|d| d.1.is_some()).count();
    verdict.outcome(format!(
        "{} of {SLOWLORIS} dropped by the node within {:.1} s (--header-timeout {HEADER_TIMEOUT_SECS}, \
         {answered} with an answer first)",
        times.len(),
        slowest.as_secs_f64()
    ));
    verdict.check(times.len() == SLOWLORIS, || {
        format!(
            "{} connections still open after 10 s",
            SLOWLORIS - times.len()
        )
    });
    verdict.check(slowest <= SLOW_DROPPED_WITHIN, || {
        format!("a connection was dropped only after {slowest:?}")
    });
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}

// ---- stalled uploads ----

const STALLED: usize = 400;
/// Bytes an upload sends before it stalls (the first bytes of a real video,
/// so it passes the container check): the 255 KB, which a node may
/// still hold in memory, and for every eighth upload 1 MiB, so that partial
/// files reach the disk whatever the node buffers, and their removal is
/// checked too.
const STALL_AFTER: usize = 255 * 1024;
const STALL_AFTER_LONG: usize = 1 << 20;
/// The length each upload announces.
const DECLARED: usize = 16 << 20;
const IDLE_TIMEOUT_SECS: u64 = 3;
/// How soon after stalling an upload must have been answered.
/// The time starts when the client's last write returns, which may be well
/// before the node reads those bytes when 400 uploads arrive at once.
const STALL_ANSWERED_WITHIN: Duration = Duration::from_secs(IDLE_TIMEOUT_SECS + 7);

/// How a stalled upload ended: the answer, how long after the stall, and
/// whether the node then closed the connection.
type Stall = Result<(Response, Duration, bool), String>;

async fn stalled_upload(addr: SocketAddr, prefix: Arc<Vec<u8>>) -> Stall {
    let stream = connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /jobs?preset=ultrafast HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: video/mp4\r\nContent-Length: {DECLARED}\r\n\r\n"
    );
    writer
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    writer
        .write_all(&prefix)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let stalled = Instant::now();
    // `writer` stays open (no FIN): the upload is silent, not finished.
    let limit = STALL_ANSWERED_WITHIN + Duration::from_secs(4);
    let outcome = match read_response(&mut reader, limit).await {
        Reply::Response(r) => {
            let after = stalled.elapsed();
            let closed = wait_closed(&mut reader, Duration::from_secs(2)).await;
            Ok((r, after, closed))
        }
        Reply::Closed => Err(format!(
            "closed without an answer after {:?}",
            stalled.elapsed()
        )),
        Reply::Silent => Err(format!("no answer in {limit:?}")),
    };
    drop(writer);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads() {
    let clip = std::fs::read(long_clip()).expect("read the long clip");
    assert!(
        clip.len() > STALL_AFTER_LONG,
        "the long clip is too short to stall in"
    );
    let short = Arc::new(clip[..STALL_AFTER].to_vec());
    let long = Arc::new(clip[..STALL_AFTER_LONG].to_vec());
    let mut node = Launch::new()
        .flag("idle-timeout", IDLE_TIMEOUT_SECS)
        .start()
        .await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    // Started 2 ms apart: the attack is 400 uploads held open, not a burst
    // of 400 at the same instant.
    let mut tasks = Vec::new();
    for n in 0..STALLED {
        let prefix = if n % 8 == 7 { &long } else { &short };
        tasks.push(tokio::spawn(stalled_upload(node.addr, prefix.clone())));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The most partial files on disk at once, while the uploads are open.
    let uploads_dir = node.data.join("uploads");
    let counting = tokio::spawn(async move {
        let mut most = 0;
        loop {
            let now = std::fs::read_dir(&uploads_dir).map_or(0, |d| d.count());
            most = most.max(now);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if now == 0 && most > 0 {
                return most;
            }
        }
    });
    let mut stalls = Vec::new();
    for task in tasks {
        stalls.push(task.await.expect("upload task"));
    }
    let figures = watch.finish().await;
    counting.abort();
    let partial_during = counting.await.unwrap_or_default();

    let mut verdict = Verdict::new("stalled-uploads", figures, 200, Healthy::Ok);
    let timed_out: Vec<Duration> = stalls
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .filter(|(r, _, closed)| {
            r.status == 408 && r.error_code().as_deref() == Some("request_timeout") && *closed
        })
        .map(|(_, after, _)| *after)
        .collect();
    let mut sorted = timed_out.clone();
    sorted.sort();
    let first = sorted.first().copied().unwrap_or_default();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let last = sorted.last().copied().unwrap_or_default();
    verdict.outcome(format!(
        "{} of {STALLED} uploads stalled after 255 KB (1 in 8 after 1 MiB) answered 408 \
         request_timeout {:.1}-{:.1} s (median {:.1} s) after stalling (--idle-timeout {IDLE_TIMEOUT_SECS}) and \
         were closed; at most {partial_during} partial files on disk during the stall",
        timed_out.len(),
        first.as_secs_f64(),
        last.as_secs_f64(),
        median.as_secs_f64()
    ));
    let other: Vec<String> = stalls
        .iter()
        .filter(|s| {
            !s.as_ref().is_ok_and(|(r, _, closed)| {
                r.status == 408 && r.error_code().as_deref() == Some("request_timeout") && *closed
            })
        })
        .map(|s| format!("{s:?}"))
        .collect();
    verdict.check(other.is_empty(), || {
        format!(
            "{} uploads not ended with 408 and a close, e.g. {}",
            other.len(),
            other[0]
        )
    });
    verdict.check(last <= STALL_ANSWERED_WITHIN, || {
        format!("an upload was answered only {last:?} after it stalled")
    });
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}

// ---- open-file limit ----

const FLOOD: usize = 1000;
const NOFILE: u64 = 256;
/// Attackers' connections closed before the normal request is made.
const RELEASED: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_at_file_limit() {
    let mut node = Launch::new().nofile(NOFILE).start().await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut knocks = Vec::new();
    let mut unopened = 0;
    for _ in 0..FLOOD {
        if Instant::now() >= deadline {
            unopened += 1;
            continue;
        }
        match connect(node.addr).await {
            Ok(stream) => knocks.push(tokio::spawn(knock(stream, Duration::from_secs(1)))),
            Err(_) => unopened += 1,
        }
    }
    let mut held = Vec::new();
    let (mut refusals, mut unanswered) = (0, 0);
    for task in knocks {
        let knock = task.await.expect("knock task");
        if refused(&knock) {
            refusals += 1;
        } else if let Some(stream) = knock.stream {
            held.push(stream);
        } else {
            unanswered += 1;
        }
    }
    // A few attackers leave; a normal client must get in while the rest stay.
    let held_at_first = held.len();
    held.truncate(held_at_first.saturating_sub(RELEASED));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = normal_job(&node).await;
    let still_held = held.len();
    drop(held);
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("fd-limit-flood", figures, 128, Healthy::OkOrRefused);
    verdict.outcome(format!(
        "{FLOOD} connections at --nofile {NOFILE}: {held_at_first} held, {refusals} refused with \
         503 at once, {unanswered} dropped unanswered, {unopened} not opened; with {still_held} \
         still held a job {}",
        if job.is_ok() {
            "was accepted and completed"
        } else {
            "FAILED"
        }
    ));
    verdict.check(unopened == 0 && unanswered == 0, || {
        format!("{unopened} connections not opened, {unanswered} closed without an answer")
    });
    verdict.check(still_held > 0, || {
        "the node held no connection at all".into()
    });
    if let Err(e) = job {
        verdict.check(false, || {
            format!("a normal job while attackers held connections: {e}")
        });
    }
    let log = node.log();
    verdict.check(!log.contains("Too many open files"), || {
        "the node ran out of file descriptors (\"Too many open files\" in its log)".into()
    });
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}

// ---- connection cap ----

const CAP: usize = 50;
const OPENED: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap() {
    let mut node = Launch::new().flag("max-connections", CAP).start().await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    // One after the other, so the node sees them in this order.
    let mut knocks = Vec::new();
    for _ in 0..OPENED {
        let stream = connect(node.addr).await.expect("connect");
        knocks.push(tokio::spawn(knock(stream, Duration::from_secs(1))));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut results = Vec::new();
    for task in knocks {
        results.push(task.await.expect("knock task"));
    }
    let held = results.iter().take_while(|k| k.stream.is_some()).count();
    let refusals = results[held..].iter().filter(|k| refused(k)).count();
    let slowest = results[held..]
        .iter()
        .map(|k| k.after)
        .max()
        .unwrap_or_default();
    let held_later = results[held..]
        .iter()
        .filter(|k| k.stream.is_some())
        .count();
    drop(results);
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("connection-cap", figures, 64, Healthy::OkOrRefused);
    verdict.outcome(format!(
        "{OPENED} connections at --max-connections {CAP}: the first {held} held, {refusals} of \
         the other {} refused with 503 unavailable + Retry-After within {} ms and closed",
        OPENED - held,
        slowest.as_millis()
    ));
    // A /healthz probe may hold a slot at the moment the 50th connects.
    verdict.check((CAP - 1..=CAP).contains(&held), || {
        format!("{held} connections held, not {CAP}")
    });
    verdict.check(refusals == OPENED - held, || {
        format!(
            "{} connections beyond the cap not refused at once ({held_later} held)",
            OPENED - held - refusals
        )
    });
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}
