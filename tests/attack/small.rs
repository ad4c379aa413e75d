//! The small ones: a `since` at `u64::MAX` on the events route (it used to
//! overflow, a panic in debug builds, which these tests run), and `/internal`
//! requests without a signature of the cluster cookie, with a wrong one or a
//! replayed one: refused with 403 before anything of them is parsed or read.

use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::io::AsyncWriteExt;
use vidpress::signing::{Signer, SIGNATURE_HEADER};

use crate::fixtures::small_clip;
use crate::node::{get_json, Launch, Node, COOKIE};
use crate::raw::{connect, read_response, ws_connect, Frame, Reply};
use crate::watch::{Healthy, Scope, Verdict, Watch};

const KILL_GROWTH_MB: u64 = 1024;

/// Submits the small clip and waits for it to complete; returns its ID.
async fn completed_job(node: &Node) -> String {
    let (status, job) = node
        .submit(&small_clip(), "?preset=ultrafast")
        .await
        .expect("submit");
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("job id").to_owned();
    let ended = node.wait_terminal(&id, Duration::from_secs(30)).await;
    assert!(
        matches!(ended, Ok((200, _))),
        "the job did not complete: {ended:?}"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_at_u64_max() {
    let mut node = Launch::new().start().await;
    let id = completed_job(&node).await;

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let path = format!("/jobs/{id}/events?since={}", u64::MAX);
    let max = match ws_connect(node.addr, &path).await {
        Ok((mut reader, _writer)) => {
            let (code, frames) = reader.until_close(Duration::from_secs(5)).await;
            let events = frames
                .iter()
                .filter(|f| matches!(f, Frame::Text(_)))
                .count();
            Ok((code, events))
        }
        Err(e) => Err(e),
    };
    // One past u64::MAX is no number of the route's: a 400, not a 500.
    let over = get_json(&format!(
        "{}/jobs/{id}/events?since=18446744073709551616",
        node.base()
    ))
    .await
    .map(|(status, _)| status);
    let job = get_json(&format!("{}/jobs/{id}", node.base())).await;
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("since-u64-max", figures, 64, Healthy::Ok);
    verdict.outcome(format!(
        "since=u64::MAX: {}; since=2^64: {over:?}; the job then answers {:?}",
        match &max {
            Ok((code, events)) => format!("upgraded, {events} events, close {code:?}"),
            Err(e) => e.clone(),
        },
        job.as_ref()
            .map(|(status, body)| (status, body["status"].clone()))
    ));
    // The job is over: whatever the stream sends, it ends with a normal close.
    verdict.check(matches!(max, Ok((Some(1000), _))), || {
        format!("since=u64::MAX did not end in a normal close: {max:?}")
    });
    verdict.check(matches!(over, Ok(400)), || {
        format!("since=2^64 was not a 400: {over:?}")
    });
    verdict.check(
        job.as_ref()
            .is_ok_and(|(status, body)| *status == 200 && body["status"] == "completed"),
        || format!("the job no longer answers as completed: {job:?}"),
    );
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}

/// One request to `/internal`: its head, then (unless empty) the start of a
/// body it never finishes when the head announces more.
struct Probe {
    name: &'static str,
    head: String,
    body: Vec<u8>,
}

/// A request's head with `signature` (if any) in the cluster's header.
fn head(request_line: &str, signature: Option<&str>, extra: &str) -> String {
    let signature = signature.map_or(String::new(), |s| format!("X-Vidpress-Signature: {s}\r\n"));
    format!("{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\n{signature}{extra}\r\n")
}

/// Returns the signature of `method` `path` with `cookie`, made now.
fn signature(cookie: &str, method: &Method, path: &str) -> String {
    let value = Signer::new(cookie)
        .sign(method, path)
        .expect("random nonce");
    value.to_str().expect("an ASCII header").to_owned()
}

/// How soon a refusal must come, while the body is far from sent.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_without_the_cookie() {
    let mut node = Launch::new().cluster("node-a", &[]).start().await;
    let id = completed_job(&node).await;

    // A well-formed signature, of a cookie of the same length, last byte wrong.
    let near_cookie = format!("{}X", &COOKIE[..COOKIE.len() - 1]);
    let input = format!("/internal/jobs/{id}/input");
    let near = signature(&near_cookie, &Method::GET, &input);
    let record = format!("/internal/replicas/{id}/record");
    let near_record = signature(&near_cookie, &Method::PUT, &record);
    let huge = "Content-Length: 1073741824\r\n";
    let garbage: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let probes = vec![
        Probe {
            name: "input, no cookie",
            head: head(&format!("GET /internal/jobs/{id}/input"), None, ""),
            body: Vec::new(),
        },
        Probe {
            name: "input, signed with a near cookie",
            head: head(&format!("GET {input}"), Some(&near), ""),
            body: Vec::new(),
        },
        Probe {
            name: "record, garbage JSON",
            head: head(
                &format!("PUT /internal/replicas/{id}/record"),
                Some("wrong"),
                "Content-Type: application/json\r\nContent-Length: 9\r\n",
            ),
            body: b"{garbage!".to_vec(),
        },
        Probe {
            name: "record, 1 GiB announced, signed with a near cookie",
            head: head(
                &format!("PUT {record}"),
                Some(&near_record),
                &format!("Content-Type: application/json\r\n{huge}"),
            ),
            body: garbage.clone(),
        },
        Probe {
            name: "replica input, 1 GiB announced",
            head: head(
                &format!("PUT /internal/replicas/{id}/input"),
                Some("wrong"),
                huge,
            ),
            body: garbage.clone(),
        },
        Probe {
            name: "attempt output, endless chunks",
            head: head(
                &format!("PUT /internal/jobs/{id}/attempts/9/output"),
                None,
                "Transfer-Encoding: chunked\r\n",
            ),
            body: [
                format!("{:x}\r\n", garbage.len()).as_bytes(),
                &garbage,
                b"\r\n",
            ]
            .concat(),
        },
        Probe {
            name: "relinquish, bad query",
            head: head(
                &format!("POST /internal/jobs/{id}/relinquish?epoch=x&finished=maybe"),
                Some("wrong"),
                "Content-Length: 0\r\n",
            ),
            body: Vec::new(),
        },
        Probe {
            name: "record, not a job id",
            head: head(
                "PUT /internal/replicas/not-a-job/record",
                Some("wrong"),
                "Content-Type: application/json\r\nContent-Length: 2\r\n",
            ),
            body: b"{}".to_vec(),
        },
    ];
    let files_before = count_files(&node.data);

    let watch = Watch::start(&[&node], &node, Scope::Node, KILL_GROWTH_MB);
    let mut answers = Vec::new();
    for probe in &probes {
        let mut stream = connect(node.addr).await.expect("connect");
        let start = Instant::now();
        let mut request = probe.head.clone().into_bytes();
        request.extend_from_slice(&probe.body);
        let _ = stream.write_all(&request).await;
        // The rest of an announced body never comes: only a node that
        // refuses before reading answers in time.
        let reply = read_response(&mut stream, Duration::from_secs(3)).await;
        answers.push((probe.name, reply, start.elapsed()));
    }
    // The control: signed with the right cookie, the same bad query gets
    // through to the handler, which refuses it for what it is; the same
    // signature sent again is a replay, refused.
    let relinquish = format!("/internal/jobs/{id}/relinquish?epoch=x&finished=maybe");
    let signed = signature(COOKIE, &Method::POST, &relinquish);
    let send = || async {
        reqwest::Client::new()
            .post(format!("{}{relinquish}", node.base()))
            .header(SIGNATURE_HEADER, &signed)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let control = send().await;
    let replayed = send().await;
    let figures = watch.finish().await;

    let mut verdict = Verdict::new("internal-cookie", figures, 64, Healthy::Ok);
    let forbidden = |reply: &Reply| {
        matches!(reply, Reply::Response(r)
            if r.status == 403 && r.error_code().as_deref() == Some("forbidden"))
    };
    let refused: Vec<&(&str, Reply, Duration)> = answers
        .iter()
        .filter(|(_, reply, after)| forbidden(reply) && *after <= REFUSED_WITHIN)
        .collect();
    let slowest = refused.iter().map(|a| a.2).max().unwrap_or_default();
    let files_after = count_files(&node.data);
    verdict.outcome(format!(
        "{} of {} badly signed requests refused with 403 within {} ms, unread; signed with the \
         right cookie, a bad query: {control:?}, then replayed: {replayed:?}; files under the \
         data dir {files_before} -> {files_after}",
        refused.len(),
        probes.len(),
        slowest.as_millis()
    ));
    for (name, reply, after) in &answers {
        verdict.check(forbidden(reply) && *after <= REFUSED_WITHIN, || {
            format!(
                "{name}: {reply:?} after {} ms, not a 403 at once",
                after.as_millis()
            )
        });
    }
    verdict.check(matches!(control, Ok(400)), || {
        format!("the right cookie with a bad query was not a 400: {control:?}")
    });
    verdict.check(matches!(replayed, Ok(403)), || {
        format!("a replayed signature was not a 403: {replayed:?}")
    });
    verdict.check(files_after == files_before, || {
        format!("the refused requests left files: {files_before} -> {files_after}")
    });
    verdict.after(&mut node).await;
    verdict.report(&[&node]);
}

/// Files (not folders) under `dir`.
fn count_files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(entry.path()),
                Ok(_) => count += 1,
                Err(_) => {}
            }
        }
    }
    count
}
