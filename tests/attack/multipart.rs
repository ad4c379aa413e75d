//! Twenty multipart uploads whose part header line never ends: the node
//! must refuse each with 431 once the part headers pass 16 KiB, holding no
//! more than that. Without a limit, one such connection took a node from
//! 126 to 537 MB and twenty crashed it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::node::Launch;
use crate::raw::{connect, read_response, Reply};
use crate::watch::{Healthy, Scope, Verdict, Watch};

const CONNECTIONS: usize = 20;
/// 64 KiB of header line every 50 ms per connection (25 MiB/s in all).
const TRICKLE: usize = 64 * 1024;
const TRICKLE_EVERY: Duration = Duration::from_millis(50);
const ATTACK_FOR: Duration = Duration::from_secs(10);
/// How soon a connection must be answered.
const ANSWERED_WITHIN: Duration = Duration::from_secs(3);
const GROWTH_MB: u64 = 64;
const KILL_GROWTH_MB: u64 = 1024;

/// What one connection got, and how many bytes it had sent by then.
enum Outcome {
    Answered(crate::raw::Response, Duration, u64),
    Closed(Duration, u64),
    Silent(u64),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answered(r, after, sent) => write!(
                f,
                "answered {} after {} ms, {} KiB sent",
                r.describe(),
                after.as_millis(),
                sent / 1024
            ),
            Self::Closed(after, sent) => write!(
                f,
                "closed unanswered after {} ms, {} KiB sent",
                after.as_millis(),
                sent / 1024
            ),
            Self::Silent(sent) => write!(f, "no answer, {} KiB sent", sent / 1024),
        }
    }
}

/// A chunk of a chunked request body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    framed
}

async fn endless_part_header(addr: SocketAddr) -> Outcome {
    let Ok(stream) = connect(addr).await else {
        return Outcome::Closed(Duration::ZERO, 0);
    };
    let (mut reader, mut writer) = stream.into_split();
    let start = Instant::now();
    let sent = AtomicU64::new(0);
    let write = async {
        let head = "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                    Content-Type: multipart/form-data; boundary=attackboundary\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        let opening = "--attackboundary\r\n\
                       Content-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\
                       X-Filler: ";
        let mut first = head.as_bytes().to_vec();
        first.extend_from_slice(&chunk(opening.as_bytes()));
        if writer.write_all(&first).await.is_ok() {
            let filler = chunk(&vec![b'a'; TRICKLE]);
            loop {
                tokio::time::sleep(TRICKLE_EVERY).await;
                if writer.write_all(&filler).await.is_err() {
                    break;
                }
                sent.fetch_add(TRICKLE as u64, Ordering::Relaxed);
            }
        }
        std::future::pending::<()>().await;
    };
    let sent = &sent;
    tokio::select! {
        reply = read_response(&mut reader, ATTACK_FOR) => match reply {
            Reply::Response(r) => Outcome::Answered(r, start.elapsed(), sent.load(Ordering::Relaxed)),
            Reply::Closed => Outcome::Closed(start.elapsed(), sent.load(Ordering::Relaxed)),
            Reply::Silent => Outcome::Silent(sent.load(Ordering::Relaxed)),
        },
        () = write => Outcome::Silent(sent.load(Ordering::Relaxed)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_endless_part_header() {
    let mut node = Launch::new().start().await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(endless_part_header(node.addr)))
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("connection task"));
    }
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("multipart-endless-header", figures, GROWTH_MB, Healthy::Ok);
    let refused: Vec<(Duration, u64)> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Answered(r, after, sent)
                if r.status == 431
                    && r.error_code().as_deref() == Some("header_fields_too_large") =>
            {
                Some((*after, *sent))
            }
            _ => None,
        })
        .collect();
    let slowest = refused.iter().map(|r| r.0).max().unwrap_or_default();
    let most_sent = refused.iter().map(|r| r.1).max().unwrap_or_default();
    verdict.outcome(format!(
        "{} of {CONNECTIONS} refused with 431 header_fields_too_large \
         (at most {} ms, {} KiB sent)",
        refused.len(),
        slowest.as_millis(),
        most_sent / 1024
    ));
    let other: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            !matches!(o, Outcome::Answered(r, _, _)
                if r.status == 431 && r.error_code().as_deref() == Some("header_fields_too_large"))
        })
        .collect();
    verdict.check(other.is_empty(), || {
        format!(
            "{} connections not refused with 431, e.g. {}",
            other.len(),
            other[0]
        )
    });
    verdict.check(slowest <= ANSWERED_WITHIN, || {
        format!(
            "a connection was refused only after {} ms",
            slowest.as_millis()
        )
    });
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}
