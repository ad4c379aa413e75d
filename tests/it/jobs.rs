//! Jobs end to end over a real socket: real compression checked with
//! ffprobe, cancel, concurrency, and a transcoder that crashes or hangs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{
    clip, duration, eventually, ffprobe, fixture, get_json, long_clip, stream, Served, TestNode,
};

async fn download(node: &Served, id: &str, to: &Path) -> reqwest::header::HeaderMap {
    let response = reqwest::get(format!("{}/jobs/{id}/result", node.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    std::fs::write(to, response.bytes().await.unwrap()).unwrap();
    headers
}

#[tokio::test]
async fn compresses_to_h264_aac_mp4_of_the_same_duration_and_smaller() {
    let node = TestNode::start().await.serve();
    let input = fixture(
        "hq-640x360-4s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "10",
            "-c:a",
            "aac",
            "-b:a",
            "256k",
        ],
    );
    let (status, job) = node.submit(&input, "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap();
    let (status, done) = node.wait_for_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(status, 200, "{done}");

    let out = node.data_dir().join("downloaded.mp4");
    let headers = download(&node, id, &out).await;
    assert_eq!(headers["content-type"], "video/mp4");
    let size = std::fs::metadata(&out).unwrap().len();
    assert_eq!(headers["content-length"], size.to_string().as_str());
    assert_eq!(done["result"]["bytes"], size);

    let probe = ffprobe(&out);
    let input_probe = ffprobe(&input);
    assert_eq!(stream(&probe, "video").unwrap()["codec_name"], "h264");
    assert_eq!(stream(&probe, "audio").unwrap()["codec_name"], "aac");
    assert_eq!(stream(&probe, "video").unwrap()["width"], 640);
    assert!((duration(&probe) - duration(&input_probe)).abs() < 0.2);
    assert!(
        size < std::fs::metadata(&input).unwrap().len(),
        "the output is smaller"
    );
    // +faststart: the index comes before the media data.
    let bytes = std::fs::read(&out).unwrap();
    let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "moov must precede mdat");

    // Range requests give 206 with the asked bytes.
    let partial = reqwest::Client::new()
        .get(format!("{}/jobs/{id}/result", node.base))
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(partial.bytes().await.unwrap().as_ref(), &bytes[..100]);
}

#[tokio::test]
async fn max_height_downscales_with_even_dimensions_and_odd_inputs_work() {
    let node = TestNode::start().await.serve();
    let odd = fixture(
        "odd-321x241.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=321x241:rate=25",
            "-t",
            "1",
            "-c:v",
            "ffv1",
        ],
    );
    let (status, job) = node.submit(&odd, "?max_height=101").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap();
    let (status, done) = node.wait_for_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(status, 200, "{done}");
    let out = node.data_dir().join("scaled.mp4");
    download(&node, id, &out).await;
    let probe = ffprobe(&out);
    let video = stream(&probe, "video").unwrap();
    let (w, h) = (
        video["width"].as_u64().unwrap(),
        video["height"].as_u64().unwrap(),
    );
    assert_eq!(h, 100, "101 rounded down to even");
    assert_eq!(w % 2, 0);
    assert!(
        (w as f64 / h as f64 - 321.0 / 241.0).abs() < 0.05,
        "aspect kept: {w}x{h}"
    );
    assert!(stream(&probe, "audio").is_none(), "no audio in, none out");
}

#[tokio::test]
async fn ten_jobs_at_once_all_complete() {
    let node = TestNode::start().await.serve();
    let video = clip(1);
    let submits = (0..10).map(|_| node.submit(&video, "?preset=ultrafast"));
    let accepted = futures::future::join_all(submits).await;
    let ids: Vec<String> = accepted
        .iter()
        .map(|(status, job)| {
            assert_eq!(*status, 202);
            job["id"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &ids {
        let (status, done) = node.wait_for_terminal(id, Duration::from_secs(120)).await;
        assert_eq!(status, 200, "{done}");
    }
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 10);
}

/// Returns the pids of transcoder children working on job `id`.
pub(crate) fn transcoders_of(id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if cmdline.contains("__transcode") && cmdline.contains(id) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Answers `Ok` when job `id` has encoders running, or none, as `running`
/// asks: a check for [`eventually`].
fn encoders_running(id: &str, running: bool) -> std::future::Ready<Result<(), String>> {
    let pids = transcoders_of(id);
    std::future::ready(if pids.is_empty() != running {
        Ok(())
    } else {
        Err(format!("encoder pids {pids:?}"))
    })
}

#[tokio::test]
async fn cancel_stops_the_encoder_within_a_second() {
    let node = TestNode::start().await.serve();
    let (status, job) = node.submit(&long_clip(), "?preset=veryslow").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_owned();

    // Wait until it is really encoding.
    let url = format!("{}/jobs/{id}", node.base);
    eventually("the encode to start", Duration::from_secs(30), || async {
        let (_, doc) = get_json(&url).await.expect("the node answers");
        if doc["status"] == "running"
            && !transcoders_of(&id).is_empty()
            && doc["progress"].as_f64().unwrap() > 0.0
        {
            Ok(())
        } else {
            Err(doc)
        }
    })
    .await;

    let client = reqwest::Client::new();
    let canceled_at = Instant::now();
    let response = client
        .delete(format!("{}/jobs/{id}", node.base))
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status().as_u16(), 200 | 202));
    let left = Duration::from_secs(1).saturating_sub(canceled_at.elapsed());
    eventually("the encoder to stop within 1 s", left, || {
        encoders_running(&id, false)
    })
    .await;
    let (status, doc) = node.wait_for_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(status, 400);
    assert_eq!(doc["status"], "canceled");

    // Cancel is idempotent: again, 200 and still canceled.
    let again = client
        .delete(format!("{}/jobs/{id}", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    // The slot is free again.
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let (status, _) = node
        .wait_for_terminal(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(status, 200);
}

/// A transcoder program that runs the real one with a fault injected.
fn faulty_transcoder(dir: &Path, fault: &str) -> PathBuf {
    let script = dir.join(format!("transcoder-{fault}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nVIDPRESS_TRANSCODE_FAULT={fault} exec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_vidpress")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn a_crashing_transcoder_fails_the_job_and_the_node_lives() {
    let scripts = tempfile::tempdir().unwrap();
    let program = faulty_transcoder(scripts.path(), "crash");
    let node = TestNode::start_with(|c| {
        c.transcoder = Some(program);
        c.workers = Some(1);
    })
    .await
    .serve();
    for _ in 0..2 {
        let (status, job) = node.submit(&clip(1), "").await;
        assert_eq!(status, 202);
        let (status, doc) = node
            .wait_for_terminal(job["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(status, 400, "{doc}");
        assert_eq!(doc["error"]["code"], "transcoder_crashed");
    }
    let health = reqwest::get(format!("{}/readyz", node.base)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_hung_transcoder_is_killed_after_the_stall_timeout() {
    let scripts = tempfile::tempdir().unwrap();
    let program = faulty_transcoder(scripts.path(), "hang");
    let node = TestNode::start_with(|c| {
        c.transcoder = Some(program);
        c.workers = Some(1);
        c.stall_timeout = 1;
    })
    .await
    .serve();
    let started = Instant::now();
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_owned();
    let (status, doc) = node.wait_for_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(status, 400, "{doc}");
    assert_eq!(doc["error"]["code"], "transcode_stalled");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(transcoders_of(&id).is_empty(), "the hung child was killed");
}

#[tokio::test]
async fn a_restarted_node_recovers_its_jobs_from_disk() {
    let data = tempfile::tempdir().unwrap();
    let no_drain = |c: &mut vidpress::config::ServeConfig| c.drain_timeout = 0;

    // First run: one job completes, one is mid-encode when the node stops.
    let node = TestNode::start_at(data.path(), |c| {
        no_drain(c);
        c.workers = Some(1);
    })
    .await
    .serve();
    let video = std::fs::read(clip(1)).unwrap();
    let keyed = reqwest::Client::new()
        .post(format!("{}/jobs", node.base))
        .header("Idempotency-Key", "restart-key")
        .body(video.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 202);
    let done_id = keyed.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, done) = node
        .wait_for_terminal(&done_id, Duration::from_secs(60))
        .await;
    assert_eq!(status, 200, "{done}");
    let (_, long) = node.submit(&long_clip(), "?preset=veryslow").await;
    let interrupted = long["id"].as_str().unwrap().to_owned();
    let encoders = |running| encoders_running(&interrupted, running);
    eventually("the long job to start", Duration::from_secs(30), || {
        encoders(true)
    })
    .await;
    node.stop().await;
    // The encoder gets SIGKILL; give the kernel a moment to end it.
    let awaited = "stopping the node to stop its encoder";
    eventually(awaited, Duration::from_secs(2), || encoders(false)).await;

    // Second run on the same data: both jobs are there again.
    let node = TestNode::start_at(data.path(), |c| {
        no_drain(c);
        c.workers = Some(1);
    })
    .await
    .serve();
    let response = reqwest::get(format!("{}/jobs/{done_id}", node.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recovered: serde_json::Value = response.json().await.unwrap();
    assert_eq!(recovered["result"]["bytes"], done["result"]["bytes"]);
    assert_eq!(recovered["input"]["video_codec"], "h264");
    let out = node.data_dir().join("recovered.mp4");
    download(&node, &done_id, &out).await;
    assert_eq!(
        stream(&ffprobe(&out), "video").unwrap()["codec_name"],
        "h264"
    );

    // The idempotency key still names the same job.
    let again = reqwest::Client::new()
        .post(format!("{}/jobs", node.base))
        .header("Idempotency-Key", "restart-key")
        .body(video)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["id"],
        done_id.as_str()
    );

    // The interrupted job runs again, as a new attempt, and is not lost.
    let url = format!("{}/jobs/{interrupted}", node.base);
    let awaited = "the interrupted job to resume";
    eventually(awaited, Duration::from_secs(30), || async {
        let (_, doc) = get_json(&url).await.expect("the node answers");
        if doc["status"] == "running" && doc["attempt"] == 2 {
            Ok(())
        } else {
            Err(doc)
        }
    })
    .await;
    let response = reqwest::Client::new()
        .delete(format!("{}/jobs/{interrupted}", node.base))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

#[tokio::test]
async fn finished_jobs_are_removed_after_the_retention() {
    let node = TestNode::start_with(|c| c.retention_secs = 3).await.serve();
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_owned();
    let (status, _) = node.wait_for_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(status, 200);
    let finished = Instant::now();
    let url = format!("{}/jobs/{id}", node.base);
    eventually(
        "the finished job to be removed",
        Duration::from_secs(15),
        || async {
            let status = reqwest::get(&url).await.unwrap().status();
            if status == 404 {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await;
    assert!(
        finished.elapsed() >= Duration::from_secs(2),
        "removed before its retention"
    );
    assert!(
        !node.data_dir().join("jobs").join(&id).exists(),
        "its files are gone too"
    );
}

/// `GET /jobs/{id}` on `base` with `Prefer` set to `prefer`:
/// (status, Preference-Applied, body).
async fn long_poll(base: &str, id: &str, prefer: &str) -> (u16, Option<String>, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}/jobs/{id}"))
        .header("prefer", prefer)
        .send()
        .await
        .unwrap();
    let applied = response
        .headers()
        .get("preference-applied")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        applied,
        response.json().await.unwrap(),
    )
}

#[tokio::test]
async fn prefer_wait_holds_a_poll_until_the_job_ends() {
    let node = TestNode::start_with(|c| c.workers = Some(0)).await.serve();
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_owned();
    let waiting = {
        let (base, id) = (node.base.clone(), id.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = long_poll(&base, &id, "respond-async, wait=1000").await;
            (started.elapsed(), answer)
        })
    };
    // "Not at once" is a claim about time, and no event marks the poll's
    // arrival: it must still be open half a second on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a queued job's long poll answered at once"
    );
    let canceled = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    let (elapsed, (status, applied, body)) = waiting.await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "canceled");
    assert!(
        elapsed < Duration::from_secs(3),
        "answered {elapsed:?} after"
    );
    // Capped at a minute.
    assert_eq!(applied.as_deref(), Some("wait=60"));
}
#[tokio::test]
async fn prefer_wait_answers_202_when_the_wait_is_over_and_ignores_bad_values() {
    let node = TestNode::start_with(|c| c.workers = Some(0)).await.serve();
    let (_, job) = node.submit(&clip(1), "").await;
    let id = job["id"].as_str().unwrap();

    let started = Instant::now();
    let (status, applied, body) = long_poll(&node.base, id, "wait=1").await;
    let elapsed = started.elapsed();
    assert_eq!((status, applied.as_deref()), (202, Some("wait=1")));
    assert_eq!(body["status"], "queued");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );

    let started = Instant::now();
    let (status, applied, _) = long_poll(&node.base, id, "wait=soon").await;
    assert_eq!((status, applied), (202, None));
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn prefer_wait_on_a_finished_job_answers_at_once() {
    let node = TestNode::start().await.serve();
    let (_, job) = node.submit(&clip(1), "").await;
    let id = job["id"].as_str().unwrap();
    let (status, done) = node.wait_for_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(status, 200);
    let started = Instant::now();
    let (status, applied, body) = long_poll(&node.base, id, "wait=30").await;
    assert_eq!(
        (status, applied.as_deref(), &body),
        (200, Some("wait=30"), &done)
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}
