//! [`stream_events`]: a subscription's events sent on a WebSocket, generic
//! over `Sink`/`Stream` so that it is tested without a socket.

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, error};
use vidpress_actors::{JobEvent, Seq, Subscription};

use super::super::dto::EventDocument;
use super::super::ws::{Beat, Liveness, ReadError, TOO_BIG};

/// Close code of a stream that ended with the job (RFC 6455 normal closure).
const NORMAL: u16 = 1000;
/// Close code when the node goes away before the job ends.
const GOING_AWAY: u16 = 1001;
/// Pause between the terminal event and the close. A close costs more than
/// an event (a frame, the client's answer, two FINs); closing each of ten
/// thousand streams right after its terminal event delayed the terminal event
/// of the rest by 2x (bench: p50 90 -> 175-240 ms for that event alone).
const CLOSE_AFTER: Duration = Duration::from_millis(250);

/// Sends a subscription's events as text frames until the job is terminal,
/// then closes with 1000. Returns early if the client goes away, sends a
/// message over the limit (1009), or sends nothing for `idle` (1001). A
/// subscriber too slow for the live feed catches up through
/// `resubscribe(last_seq)`.
pub async fn stream_events<S, R, F, Fut>(
    mut sink: S,
    mut incoming: R,
    subscription: Subscription,
    mut resubscribe: F,
    idle: Duration,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, ReadError>> + Unpin,
    F: FnMut(Option<Seq>) -> Fut,
    Fut: Future<Output = Option<Subscription>>,
{
    let mut last_seq = None;
    let mut subscription = subscription;
    let mut liveness = Liveness::new(idle);
    loop {
        if forward(&mut sink, &subscription.backlog, &mut last_seq, idle).await == Flow::Stop {
            return;
        }
        let Some(mut rx) = subscription.live.take() else {
            close(&mut sink, NORMAL).await;
            return;
        };
        // Live events until the job ends, the client leaves or the feed lags.
        let lagged = loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(event) => {
                        if forward(&mut sink, std::slice::from_ref(&event), &mut last_seq, idle).await == Flow::Stop {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => break missed,
                    Err(RecvError::Closed) => {
                        close(&mut sink, GOING_AWAY).await;
                        return;
                    }
                },
                message = incoming.next() => match message {
                    // The client closed or the connection broke.
                    None | Some(Err(ReadError::Broken)) | Some(Ok(Message::Close(_))) => return,
                    Some(Err(ReadError::TooBig)) => {
                        close(&mut sink, TOO_BIG).await;
                        return;
                    }
                    // Pings are answered by the protocol layer; pongs and
                    // text only show the client is there.
                    Some(Ok(_)) => liveness.heard(),
                },
                beat = liveness.beat() => match beat {
                    Beat::Ping => {
                        if timed_send(&mut sink, Message::Ping(Bytes::new()), idle).await.is_err() {
                            return;
                        }
                    }
                    Beat::Expired => {
                        close(&mut sink, GOING_AWAY).await;
                        return;
                    }
                },
            }
        };
        // Too slow for the live feed: catch up from the supervisor's history.
        debug!(missed = lagged, "subscriber lagged; resubscribing");
        match resubscribe(last_seq).await {
            Some(next) => subscription = next,
            None => {
                close(&mut sink, GOING_AWAY).await;
                return;
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Sends the events not yet sent; closes normally after a terminal one. A
/// send that waits `idle` on a client that does not read ends the stream.
async fn forward<S: Sink<Message> + Unpin>(
    sink: &mut S,
    events: &[JobEvent],
    last_seq: &mut Option<Seq>,
    idle: Duration,
) -> Flow {
    for event in events {
        if last_seq.is_some_and(|last| event.seq <= last) {
            continue;
        }
        if send(sink, event, idle).await.is_err() {
            return Flow::Stop;
        }
        *last_seq = Some(event.seq);
        if event.is_terminal() {
            tokio::time::sleep(CLOSE_AFTER).await;
            close(sink, NORMAL).await;
            return Flow::Stop;
        }
    }
    Flow::Continue
}

async fn send<S: Sink<Message> + Unpin>(
    sink: &mut S,
    event: &JobEvent,
    idle: Duration,
) -> Result<(), ()> {
    let json = event.rendered(|event| {
        serde_json::to_vec(&EventDocument::from(event)).map_or_else(
            |e| {
                error!(job_id = %event.job.id, node = event.job.node.as_ref().map(|n| n.as_str()), attempt = event.job.attempt.get(), error = %e, "cannot render the event");
                Bytes::new()
            },
            Bytes::from,
        )
    });
    let text = Utf8Bytes::try_from(json).map_err(|_| ())?;
    timed_send(sink, Message::Text(text), idle).await?;
    super::super::metrics::events_sent().increment(1);
    Ok(())
}

/// Sends `message`, giving up after `limit` on a client that does not read.
async fn timed_send<S: Sink<Message> + Unpin>(
    sink: &mut S,
    message: Message,
    limit: Duration,
) -> Result<(), ()> {
    match tokio::time::timeout(limit, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

pub(super) async fn close<S: Sink<Message> + Unpin>(sink: &mut S, code: u16) {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use futures::channel::mpsc;
    use tokio::sync::broadcast;
    use vidpress_actors::{Attempt, EventKind, InputInfo, JobId, JobSnapshot, JobState};

    use super::*;

    fn event(kind: EventKind, seq: u64, state: JobState) -> JobEvent {
        JobEvent::new(
            kind,
            Seq::new(seq),
            Arc::new(JobSnapshot {
                id: JobId::new(&"node-1".parse().unwrap()),
                state,
                attempt: Attempt::new(1),
                node: None,
                created_at: SystemTime::now(),
                updated_at: SystemTime::now(),
                options: Default::default(),
                input: InputInfo {
                    bytes: 1,
                    media: None,
                },
                seq: Seq::new(seq),
                tenant: None,
                segments: Vec::new(),
            }),
        )
    }

    fn running(progress: f64) -> JobState {
        JobState::Running {
            progress,
            eta_seconds: None,
            cancel_requested: false,
        }
    }

    /// Splits what the stream sent into event seqs and the close code.
    fn sent(frames: Vec<Message>) -> (Vec<u64>, Option<u16>) {
        let mut seqs = Vec::new();
        let mut close = None;
        for frame in frames {
            match frame {
                Message::Text(text) => {
                    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
                    seqs.push(doc["seq"].as_u64().unwrap());
                }
                Message::Close(frame) => close = frame.map(|f| f.code),
                _ => {}
            }
        }
        (seqs, close)
    }

    async fn no_resubscribe(_: Option<Seq>) -> Option<Subscription> {
        None
    }

    const IDLE: Duration = Duration::from_secs(60);

    /// A running job's subscription whose live feed stays open and quiet.
    fn quiet() -> (broadcast::Sender<JobEvent>, Subscription) {
        let (tx, rx) = broadcast::channel(2);
        let subscription = Subscription {
            backlog: vec![event(EventKind::Snapshot, 1, running(0.0))],
            live: Some(rx),
        };
        (tx, subscription)
    }

    #[tokio::test]
    async fn a_client_message_over_the_limit_closes_with_1009() {
        let (_tx, subscription) = quiet();
        let (sink, frames) = mpsc::unbounded();
        let incoming = futures::stream::iter([Err(ReadError::TooBig)]);
        stream_events(sink, incoming, subscription, no_resubscribe, IDLE).await;
        let (seqs, close) = sent(frames.collect().await);
        assert_eq!(seqs, vec![1]);
        assert_eq!(close, Some(TOO_BIG));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_pinged_then_dropped_after_the_idle_timeout() {
        let (_tx, subscription) = quiet();
        let (sink, frames) = mpsc::unbounded();
        let incoming = futures::stream::pending::<Result<Message, ReadError>>();
        let started = tokio::time::Instant::now();
        stream_events(sink, incoming, subscription, no_resubscribe, IDLE).await;
        assert_eq!(started.elapsed(), IDLE);
        let frames: Vec<Message> = frames.collect().await;
        let pings = frames
            .iter()
            .filter(|f| matches!(f, Message::Ping(_)))
            .count();
        assert_eq!(pings, 2, "pinged at 20 s and 40 s, dropped at 60 s");
        assert_eq!(sent(frames).1, Some(GOING_AWAY));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_pings_stays() {
        let (tx, subscription) = quiet();
        let (sink, frames) = mpsc::unbounded();
        // A pong every 30 s, as a client answering the pings would.
        let incoming = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Some((Ok::<_, ReadError>(Message::Pong(Bytes::new())), ()))
        });
        let stream = tokio::spawn(stream_events(
            sink,
            Box::pin(incoming),
            subscription,
            no_resubscribe,
            IDLE,
        ));
        tokio::time::sleep(5 * IDLE).await;
        tx.send(event(EventKind::Status, 2, JobState::Canceled))
            .unwrap();
        stream.await.unwrap();
        let (seqs, close) = sent(frames.collect().await);
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(close, Some(NORMAL));
    }

    #[tokio::test]
    async fn sends_backlog_then_live_events_and_closes_normally_after_the_terminal_one() {
        let (tx, rx) = broadcast::channel(8);
        let subscription = Subscription {
            backlog: vec![event(EventKind::Snapshot, 3, running(0.1))],
            live: Some(rx),
        };
        tx.send(event(EventKind::Progress, 4, running(0.5)))
            .unwrap();
        tx.send(event(
            EventKind::Status,
            5,
            JobState::Completed {
                output: "out.mp4".into(),
                result: vidpress_transcode::Output {
                    bytes: 9,
                    report: None,
                },
            },
        ))
        .unwrap();
        let (sink, frames) = mpsc::unbounded();
        let incoming = futures::stream::pending::<Result<Message, ReadError>>();
        stream_events(sink, incoming, subscription, no_resubscribe, IDLE).await;
        let (seqs, close) = sent(frames.collect().await);
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(close, Some(NORMAL));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_catches_up_from_a_fresh_subscription() {
        let (tx, rx) = broadcast::channel(2);
        let subscription = Subscription {
            backlog: vec![event(EventKind::Snapshot, 1, running(0.0))],
            live: Some(rx),
        };
        for seq in 2..=9 {
            tx.send(event(EventKind::Progress, seq, running(seq as f64 / 10.0)))
                .unwrap();
        }
        let resubscribe = |since: Option<Seq>| async move {
            assert_eq!(since, Some(Seq::new(1)));
            Some(Subscription {
                backlog: vec![event(EventKind::Status, 10, JobState::Canceled)],
                live: None,
            })
        };
        let (sink, frames) = mpsc::unbounded();
        let incoming = futures::stream::pending::<Result<Message, ReadError>>();
        stream_events(sink, incoming, subscription, resubscribe, IDLE).await;
        let (seqs, close) = sent(frames.collect().await);
        assert_eq!(seqs, vec![1, 10]);
        assert_eq!(close, Some(NORMAL));
    }

    #[tokio::test]
    async fn stops_when_the_client_closes() {
        let (_tx, rx) = broadcast::channel(2);
        let subscription = Subscription {
            backlog: vec![event(EventKind::Snapshot, 1, running(0.0))],
            live: Some(rx),
        };
        let (sink, frames) = mpsc::unbounded();
        let incoming = futures::stream::iter([Ok::<_, ReadError>(Message::Close(None))]);
        stream_events(sink, incoming, subscription, no_resubscribe, IDLE).await;
        let (seqs, close) = sent(frames.collect().await);
        assert_eq!(seqs, vec![1]);
        assert_eq!(close, None, "no close frame is owed to a client that left");
    }
}
