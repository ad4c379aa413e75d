//! A failover no client notices (DESIGN.md, invariant 7): a job's owner is
//! killed while clients poll it through every other node and hold
//! WebSockets on them. No poll answers 5xx, the streams go on across the
//! takeover with every `seq` once and in order, a subscriber that resumes
//! with `since` gets no duplicate and no gap, and a cancel asked during the
//! failover is carried out after the takeover; a cancel answered by the
//! owner just before it dies stays carried out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{wait_members_up, NodeProc};
use crate::support::{eventually, get_json, long_clip};

const COOKIE: &str = "failover-test-cookie";

/// node-a (the owner of the jobs submitted to it), node-b (their standby:
/// the next node by name) and node-c, one worker each.
struct Trio {
    nodes: Vec<NodeProc>,
    _dir: TempDir,
}

impl Trio {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = NodeProc::spawn_with("node-a", &dir, 1, vec![], COOKIE, Vec::new());
        let seed = a.cluster;
        let b = NodeProc::spawn_with("node-b", &dir, 1, vec![seed], COOKIE, Vec::new());
        let c = NodeProc::spawn_with("node-c", &dir, 1, vec![seed], COOKIE, Vec::new());
        let trio = Self {
            nodes: vec![a, b, c],
            _dir: dir,
        };
        for node in &trio.nodes {
            wait_members_up(node, 3, Duration::from_secs(30)).await;
        }
        trio
    }
}

async fn submit(node: &NodeProc, query: &str) -> String {
    let body = tokio::fs::read(long_clip()).await.expect("the clip");
    let response = reqwest::Client::new()
        .post(format!("{}/jobs{query}", node.base()))
        .body(body)
        .send()
        .await
        .expect("the upload");
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.expect("a JSON answer");
    job["id"].as_str().expect("an id").to_owned()
}

/// Every poll's status code and `status`, in order.
type Polls = Arc<Mutex<Vec<(u16, String)>>>;

/// Polls `node` for the job every 100 ms until `stop` is set.
fn poll_through(
    node: &NodeProc,
    id: &str,
    stop: Arc<AtomicBool>,
) -> (Polls, tokio::task::JoinHandle<()>) {
    let polls: Polls = Arc::default();
    let url = format!("{}/jobs/{id}", node.base());
    let seen = polls.clone();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::new();
        while !stop.load(Ordering::Relaxed) {
            let answer = client
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let entry = match answer {
                Ok(response) => {
                    let code = response.status().as_u16();
                    let doc: Value = response.json().await.unwrap_or_default();
                    (code, doc["status"].as_str().unwrap_or_default().to_owned())
                }
                // No answer at all counts as a failure as much as a 5xx.
                Err(_) => (0, "no answer".to_owned()),
            };
            seen.lock().expect("polls").push(entry);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (polls, task)
}

/// What a subscriber was sent: each event's `seq`, event name and job
/// status, and the close code.
#[derive(Default)]
struct Stream {
    events: Vec<(u64, String, String)>,
    close: Option<u16>,
}

type Shared = Arc<Mutex<Stream>>;

/// Subscribes through `node` (after `since`, if given) and records what
/// comes until the close (at most 240 s).
async fn subscribe(
    node: &NodeProc,
    id: &str,
    since: Option<u64>,
) -> (Shared, tokio::task::JoinHandle<()>) {
    let query = since.map_or_else(String::new, |s| format!("?since={s}"));
    let url = format!("ws://127.0.0.1:{}/jobs/{id}/events{query}", node.http);
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("upgrade through {}: {e}", node.name));
    let stream: Shared = Arc::default();
    let seen = stream.clone();
    let task = tokio::spawn(async move {
        let frames = async {
            while let Some(frame) = socket.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        let doc: Value = serde_json::from_str(&text).expect("an event document");
                        let event = (
                            doc["seq"].as_u64().expect("a seq"),
                            doc["event"].as_str().unwrap_or_default().to_owned(),
                            doc["job"]["status"].as_str().unwrap_or_default().to_owned(),
                        );
                        seen.lock().expect("stream").events.push(event);
                    }
                    Ok(Message::Close(frame)) => {
                        seen.lock().expect("stream").close = frame.map(|f| u16::from(f.code));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(240), frames).await;
    });
    (stream, task)
}

fn last_seq(stream: &Shared) -> Option<u64> {
    stream.lock().expect("stream").events.last().map(|e| e.0)
}

/// Checks that a stream's `seq`s rise by exactly one from event to event.
fn assert_in_order(name: &str, stream: &Stream) {
    let seqs: Vec<u64> = stream.events.iter().map(|e| e.0).collect();
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{name}: every seq once and in order: {seqs:?}"
        );
    }
}

#[tokio::test]
async fn the_owners_death_shows_no_client_a_5xx_nor_a_seq_out_of_order() {
    let mut trio = Trio::start().await;
    let id = submit(&trio.nodes[0], "?preset=veryfast").await;
    let url_c = format!("{}/jobs/{id}", trio.nodes[2].base());
    wait_running(&url_c).await;

    // Pollers and subscribers through both other nodes; one more subscriber
    // that leaves before the kill and comes back after it with `since`.
    let stop = Arc::new(AtomicBool::new(false));
    let (polls_b, poller_b) = poll_through(&trio.nodes[1], &id, stop.clone());
    let (polls_c, poller_c) = poll_through(&trio.nodes[2], &id, stop.clone());
    let (stream_b, subscriber_b) = subscribe(&trio.nodes[1], &id, None).await;
    let (stream_c, subscriber_c) = subscribe(&trio.nodes[2], &id, None).await;
    let (leaving, leaver) = subscribe(&trio.nodes[2], &id, None).await;
    // The kill comes right after an event both streams got (the next is
    // 250 ms away), so neither misses one the other saw.
    eventually(
        "both streams to agree on a progress event",
        Duration::from_secs(30),
        || async {
            let (b, c) = (last_seq(&stream_b), last_seq(&stream_c));
            match (b, c) {
                (Some(b), Some(c)) if b == c && b >= 3 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    leaver.abort();
    let left_at = last_seq(&leaving).expect("the leaving subscriber saw events");
    trio.nodes[0].kill();

    // The job goes on on its standby, node-b: the subscriber comes back
    // once the takeover is done and its events flow.
    let url_b = format!("{}/jobs/{id}", trio.nodes[1].base());
    eventually(
        "node-b to run the job it took over",
        Duration::from_secs(60),
        || async {
            match get_json(&url_b).await {
                Some((202, doc)) if doc["status"] == "running" && doc["node"] != "node-a" => Ok(()),
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (back, returner) = subscribe(&trio.nodes[2], &id, Some(left_at)).await;

    eventually("the job to complete", Duration::from_secs(240), || async {
        match get_json(&url_c).await {
            Some((200, doc)) if doc["status"] == "completed" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in [poller_b, poller_c, subscriber_b, subscriber_c, returner] {
        task.await.expect("a client task");
    }

    for (name, polls) in [("through node-b", &polls_b), ("through node-c", &polls_c)] {
        let polls = polls.lock().expect("polls");
        let failed: Vec<_> = polls
            .iter()
            .filter(|(code, _)| !matches!(code, 200 | 202))
            .collect();
        assert!(
            failed.is_empty(),
            "polls {name}: {failed:?} of {}",
            polls.len()
        );
        assert!(polls.len() > 20, "polls {name}: only {}", polls.len());
        eprintln!("polls {name}: {} answered, none 5xx", polls.len());
    }
    for (name, stream) in [("through node-b", &stream_b), ("through node-c", &stream_c)] {
        let stream = stream.lock().expect("stream");
        assert_in_order(name, &stream);
        assert_eq!(stream.close, Some(1000), "{name}: a normal close");
        let last = stream.events.last().expect("events");
        assert_eq!(last.2, "completed", "{name}: the terminal event last");
        eprintln!("stream {name}: seq {} to {}", stream.events[0].0, last.0);
    }
    let back = back.lock().expect("stream");
    assert_eq!(
        back.events.first().map(|e| e.0),
        Some(left_at + 1),
        "the returning subscriber resumes right after {left_at}"
    );
    assert_in_order("the returning subscriber", &back);
    assert_eq!(back.close, Some(1000));
}

#[tokio::test]
async fn a_cancel_asked_during_the_failover_is_carried_out_after_the_takeover() {
    let trio = Trio::start().await;
    let id = submit(&trio.nodes[0], "?preset=veryfast").await;
    let url_c = format!("{}/jobs/{id}", trio.nodes[2].base());
    wait_running(&url_c).await;
    // Freeze the owner (a kill is answered at once by a refused connection;
    // a frozen owner is found out by the failure detector): the cancel
    // comes while the takeover is under way.
    trio.nodes[0].signal(libc::SIGSTOP);
    let response = reqwest::Client::new()
        .delete(&url_c)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("an answer to the cancel");
    let code = response.status().as_u16();
    let doc: Value = response.json().await.expect("a JSON answer");
    assert!(
        matches!(code, 200 | 202),
        "cancel during the failover: {code} {doc}"
    );

    let (_, doc) = poll_until_terminal(&url_c).await;
    if doc["status"] != "canceled" {
        for node in &trio.nodes {
            eprintln!("--- {}'s log:\n{}", node.name, node.log());
        }
    }
    assert_eq!(doc["status"], "canceled", "{doc}");
    trio.nodes[0].signal(libc::SIGCONT);
}

#[tokio::test]
async fn a_job_canceled_on_its_owner_stays_canceled_when_the_owner_dies_right_after() {
    let mut trio = Trio::start().await;
    // Three jobs take the three workers; the fourth waits in node-a's queue.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(&trio.nodes[0], "?preset=veryfast").await);
    }
    let url = |node: &NodeProc, id: &str| format!("{}/jobs/{id}", node.base());
    let waiting = eventually(
        "three jobs running, one queued",
        Duration::from_secs(60),
        || async {
            let mut queued = Vec::new();
            let mut running = 0;
            for id in &ids {
                match get_json(&url(&trio.nodes[0], id)).await {
                    Some((_, doc)) if doc["status"] == "running" => running += 1,
                    Some((_, doc)) if doc["status"] == "queued" => queued.push(id.clone()),
                    other => return Err(format!("{other:?}")),
                }
            }
            match (running, &queued[..]) {
                (3, [one]) => Ok(one.clone()),
                _ => Err(format!("{running} running, queued {queued:?}")),
            }
        },
    )
    .await;

    // The owner answers that the job is canceled, and dies right after.
    // Its standby is frozen for the first 300 ms of the cancel: an answer
    // that did not wait for the standby's copy comes (and the owner dies)
    // before the ended record could reach it.
    let standby = (1..3)
        .find(|&i| trio.nodes[i].data.join("replicas").join(&waiting).is_dir())
        .expect("a node holds the queued job's copy");
    trio.nodes[standby].signal(libc::SIGSTOP);
    let (owner, cancel_url) = (trio.nodes[0].pid(), url(&trio.nodes[0], &waiting));
    let cancel = tokio::spawn(async move {
        let response = reqwest::Client::new().delete(cancel_url).send().await;
        // SAFETY: kill(2) on the test's own child (reaped by `kill` below).
        unsafe {
            libc::kill(owner, libc::SIGKILL);
        }
        response
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answered_early = cancel.is_finished();
    trio.nodes[standby].signal(libc::SIGCONT);
    let response = cancel
        .await
        .expect("the cancel's task")
        .expect("an answer to the cancel");
    trio.nodes[0].kill();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("a JSON answer");
    assert_eq!(doc["status"], "canceled", "{doc}");

    // Through the failover and after it, the job stays canceled: its
    // standby never runs it.
    let mut seen = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        for node in &trio.nodes[1..] {
            if let Some((_, doc)) = get_json(&url(node, &waiting)).await {
                seen.push(doc["status"].as_str().unwrap_or("?").to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.len() > 20, "polls answered: {seen:?}");
    assert!(
        seen.iter().all(|s| s == "canceled"),
        "answered {} the standby held the canceled record; seen since: {seen:?}",
        if answered_early { "before" } else { "after" }
    );
}

/// Polls until the job ends; every answer on the way is a 2xx.
async fn poll_until_terminal(url: &str) -> (u16, Value) {
    eventually("the job to end", Duration::from_secs(60), || async {
        match get_json(url).await {
            Some((202, doc)) => Err(format!("202 {doc}")),
            Some((code, doc)) if code < 500 => Ok((code, doc)),
            other => panic!("an answer during the failover: {other:?}"),
        }
    })
    .await
}

/// Waits (at most 60 s) until the job at `url` runs.
async fn wait_running(url: &str) {
    eventually("the job to run", Duration::from_secs(60), || async {
        match get_json(url).await {
            Some((202, doc)) if doc["status"] == "running" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The attempt a job's document names while it runs (0 otherwise).
fn running_attempt(doc: &Value) -> u64 {
    match doc["status"].as_str() {
        Some("running") => doc["attempt"].as_u64().unwrap_or(0),
        _ => 0,
    }
}

#[tokio::test]
async fn after_the_owner_thaws_no_node_answers_with_an_attempt_older_than_the_takeovers() {
    let trio = Trio::start().await;
    let id = submit(&trio.nodes[0], "?preset=veryfast").await;
    let (url_a, url_b) = (
        format!("{}/jobs/{id}", trio.nodes[0].base()),
        format!("{}/jobs/{id}", trio.nodes[1].base()),
    );
    wait_running(&url_a).await;
    // The owner freezes long enough for the others to find it down and
    // the standby to take the job over, which gives it a new attempt.
    trio.nodes[0].signal(libc::SIGSTOP);
    let taken_over = eventually("a takeover's attempt", Duration::from_secs(30), || async {
        match get_json(&url_b).await {
            Some((202, doc)) if doc["attempt"].as_u64() >= Some(2) => {
                Ok(doc["attempt"].as_u64().unwrap_or(2))
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Thawed, it still holds its copy of the job and the attempt it had
    // started until it hears of the takeover: polled at once and often,
    // itself and through the others (which forward to it as soon as they
    // see it up again), no node may show that attempt.
    trio.nodes[0].signal(libc::SIGCONT);
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let n = answers.len() % 3;
        let url = format!("{}/jobs/{id}", trio.nodes[n].base());
        if let Ok(response) = client
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            let code = response.status().as_u16();
            let doc: Value = response.json().await.unwrap_or_default();
            answers.push((n, code, doc["status"].clone(), doc["attempt"].clone()));
            let attempt = running_attempt(&doc);
            if attempt != 0 && attempt < taken_over {
                for node in &trio.nodes {
                    eprintln!("--- {}'s log:\n{}", node.name, node.log());
                }
                panic!(
                    "attempt {attempt} running after attempt {taken_over} was seen: {answers:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each node answered many times: the check above was not vacuous.
    for n in 0..3 {
        let answered = answers.iter().filter(|a| a.0 == n).count();
        assert!(
            answered >= 10,
            "{} answered {answered} polls",
            trio.nodes[n].name
        );
    }
    eprintln!(
        "answers after the thaw: {} ({:?} first)",
        answers.len(),
        answers.first()
    );
}

/// A thawed owner asks its job's standby at once whether it took the job
/// over meanwhile, and gives its own copy (and the attempt it had started)
/// up within a second of the thaw, rather than when the taker sees it up
/// again, which may wait for a redial.
#[tokio::test]
async fn a_thawed_owner_gives_up_a_job_taken_over_within_a_second() {
    let trio = Trio::start().await;
    let id = submit(&trio.nodes[0], "?preset=veryfast").await;
    let url_b = format!("{}/jobs/{id}", trio.nodes[1].base());
    wait_running(&format!("{}/jobs/{id}", trio.nodes[0].base())).await;
    trio.nodes[0].signal(libc::SIGSTOP);
    eventually("a takeover's attempt", Duration::from_secs(30), || async {
        match get_json(&url_b).await {
            Some((202, doc)) if doc["attempt"].as_u64() >= Some(2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    trio.nodes[0].signal(libc::SIGCONT);
    let thawed = std::time::Instant::now();
    let copy = trio.nodes[0].data.join("jobs").join(&id);
    let given_up = eventually(
        "node-a to give its copy up",
        Duration::from_secs(30),
        || {
            let copy = copy.clone();
            async move {
                if copy.exists() {
                    Err("still there")
                } else {
                    Ok(thawed.elapsed())
                }
            }
        },
    )
    .await;
    eprintln!("node-a gave its copy up {given_up:?} after the thaw");
    assert!(
        given_up <= Duration::from_secs(1),
        "node-a gave its copy up {given_up:?} after the thaw:\n{}",
        trio.nodes[0].log()
    );
    trio.nodes[0]
        .wait_for_log("job given up to its standby, which took it over while this node stalled")
        .await;
}
