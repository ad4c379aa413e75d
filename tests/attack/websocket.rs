//! Sixty subscribers that each start a 60 MiB message: a frame head that
//! announces it, then a trickle of its bytes. Half announce it in one frame;
//! the other half send it as four 15 MiB fragments, whose first frame head
//! passes tungstenite's default 16 MiB frame limit, so that only the 4 KiB
//! limits stop them (without them, such a node buffers each fragment whole).
//! The node must close each client with 1009 (message too big) as soon as
//! the announced size is over its limit, and buffer none of it; through a
//! bridged socket (a job owned by node A, subscribed through node B) too.
//! Without the limit, ten such clients took a node from 57 to 682 MB and
//! sixty crashed it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::fixtures::long_clip;
use crate::node::{freeze_children, thaw, Launch, Node};
use crate::raw::{client_frame_head, ws_connect, Frame};
use crate::watch::{Healthy, Scope, Verdict, Watch};

const CLIENTS: usize = 60;
/// The size of each client's message.
const MESSAGE: u64 = 60 << 20;
/// The size of each fragment, for the clients that send fragments.
const FRAGMENT: u64 = 15 << 20;
/// The trickle: 64 KiB every 50 ms, 1.25 MiB/s per client, 75 MiB/s in
/// all; enough to show within seconds a node that buffers it.
const TRICKLE: usize = 64 * 1024;
const TRICKLE_EVERY: Duration = Duration::from_millis(50);
/// How long the clients keep trickling at most.
const ATTACK_FOR: Duration = Duration::from_secs(10);
/// How soon after its frame head a client must be closed.
const CLOSED_WITHIN: Duration = Duration::from_secs(3);
/// Memory growth allowed on the node(s): sixty small subscribers.
const GROWTH_MB: u64 = 64;
/// Growth at which the watch kills the node(s).
const KILL_GROWTH_MB: u64 = 1024;

/// What happened to one client.
enum Outcome {
    /// The upgrade failed.
    Refused(String),
    /// A close frame came, this long after the frame head.
    Closed(Option<u16>, Duration),
    /// The connection ended without a close frame.
    Dropped(Duration),
    /// Still open when the attack ended.
    Open,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) => write!(f, "refused: {e}"),
            Self::Closed(code, after) => {
                write!(f, "closed with {code:?} after {} ms", after.as_millis())
            }
            Self::Dropped(after) => {
                write!(
                    f,
                    "dropped without a close frame after {} ms",
                    after.as_millis()
                )
            }
            Self::Open => write!(f, "still open after {} s", ATTACK_FOR.as_secs()),
        }
    }
}

/// Opens one subscriber, sends the frame head (of the whole message, or of
/// its first fragment), trickles until the node closes the socket or the
/// attack's time is up.
async fn big_message(addr: SocketAddr, path: String, fragmented: bool) -> Outcome {
    let (mut reader, mut writer) = match ws_connect(addr, &path).await {
        Ok(halves) => halves,
        Err(e) => return Outcome::Refused(e),
    };
    let start = Instant::now();
    let read = async {
        loop {
            match reader.next().await {
                Some(Frame::Close(code)) => return Outcome::Closed(code, start.elapsed()),
                Some(_) => {}
                None => return Outcome::Dropped(start.elapsed()),
            }
        }
    };
    let write = async {
        let chunk = vec![0u8; TRICKLE];
        let (frames, frame_len) = if fragmented {
            (MESSAGE / FRAGMENT, FRAGMENT)
        } else {
            (1, MESSAGE)
        };
        'frames: for n in 0..frames {
            // Binary first, continuations after; FIN on the last.
            let head =
                client_frame_head(n + 1 == frames, if n == 0 { 0x2 } else { 0x0 }, frame_len);
            if writer.write_all(&head).await.is_err() {
                break;
            }
            let mut sent = 0u64;
            while sent < frame_len {
                tokio::time::sleep(TRICKLE_EVERY).await;
                let piece = &chunk[..TRICKLE.min((frame_len - sent) as usize)];
                if writer.write_all(piece).await.is_err() {
                    break 'frames;
                }
                sent += piece.len() as u64;
            }
        }
        // The node closed its side or took it all: wait for the reader.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        outcome = read => outcome,
        () = write => Outcome::Open,
        () = tokio::time::sleep(ATTACK_FOR) => Outcome::Open,
    }
}

/// Runs the sixty clients at once against `addr`.
async fn attack(addr: SocketAddr, path: &str) -> Vec<Outcome> {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(big_message(addr, path.to_owned(), n % 2 == 1)))
        .collect();
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.push(client.await.expect("client task"));
    }
    outcomes
}

/// Checks that every client was closed with 1009 in time.
fn judge(verdict: &mut Verdict, outcomes: &[Outcome]) {
    let with_1009: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Closed(Some(1009), after) => Some(*after),
            _ => None,
        })
        .collect();
    let slowest = with_1009.iter().max().copied().unwrap_or_default();
    verdict.outcome(format!(
        "{} of {CLIENTS} closed with 1009 (at most {} ms after the frame head; half of them \
         announced 60 MiB in one frame, half a first fragment of 15 MiB)",
        with_1009.len(),
        slowest.as_millis()
    ));
    let other: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Closed(Some(1009), _)))
        .collect();
    verdict.check(other.is_empty(), || {
        format!(
            "{} clients not closed with 1009, e.g. {}",
            other.len(),
            other[0]
        )
    });
    verdict.check(slowest <= CLOSED_WITHIN, || {
        format!(
            "a client was closed only {} ms after its frame head",
            slowest.as_millis()
        )
    });
}

/// Submits a long job to `owner` and freezes its transcoder, so the job
/// stays `running` (its subscribers stay open) without using the CPU.
async fn running_job(owner: &Node, nodes: &[&Node]) -> (String, Vec<i32>) {
    let (status, job) = owner
        .submit(&long_clip(), "?preset=ultrafast")
        .await
        .expect("submit");
    assert_eq!(status, 202, "the long job was refused: {job}");
    let id = job["id"].as_str().expect("job id").to_owned();
    owner.wait_encoding(&id, Duration::from_secs(30)).await;
    (id, freeze_children(nodes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_big_message() {
    let mut node = Launch::new().start().await;
    let (id, frozen) = running_job(&node, &[&node]).await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let outcomes = attack(node.addr, &format!("/jobs/{id}/events")).await;
    let figures = watch.finish().await;

    thaw(&frozen);
    node.cancel(&id).await;
    let mut verdict = Verdict::new("ws-big-message", figures, GROWTH_MB, Healthy::Ok);
    judge(&mut verdict, &outcomes);
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_big_message_bridged() {
    let mut a = Launch::new().cluster("node-a", &[]).start().await;
    let seed = a.cluster_port.expect("cluster port");
    let mut b = Launch::new().cluster("node-b", &[seed]).start().await;
    for node in [&a, &b] {
        node.wait_members_up(2, Duration::from_secs(30)).await;
    }
    // Owned by A (it accepted the job), subscribed through B, which bridges.
    let (id, frozen) = running_job(&a, &[&a, &b]).await;

    let watch = Watch::start(&[&a, &b], &b, Scope::Node, KILL_GROWTH_MB);
    let outcomes = attack(b.addr, &format!("/jobs/{id}/events")).await;
    let figures = watch.finish().await;

    thaw(&frozen);
    a.cancel(&id).await;
    // Memory is both nodes' together; /healthz is timed on B.
    let mut verdict = Verdict::new("ws-big-message-bridged", figures, GROWTH_MB, Healthy::Ok);
    judge(&mut verdict, &outcomes);
    verdict.after(&mut b).await;
    verdict.after(&mut a).await;
    verdict.report(&[&b, &a]);
}
