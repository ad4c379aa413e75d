//! The probe at acceptance and the thumbnail, as a client sees them: a
//! queued job already shows its input's details and has a JPEG thumbnail
//! (at most 320 px wide), also while a longer job encodes; a job that is
//! not a video still fails with its own error and has no thumbnail; a
//! burst of uploads is probed a few children at a time, every job in the
//! end; what the probe found survives a restart, and a missing
//! thumbnail is made again then.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{eventually, ffprobe, fixture, get_json, long_clip, stream, TestNode};

/// A 12 s 640x360 clip: its thumbnail is scaled down to 320x180.
fn wide_clip() -> std::path::PathBuf {
    fixture(
        "probe-640x360-12s.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-t",
            "12",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// Waits until job `id` shows its input's media; returns its document.
async fn probed(base: &str, id: &str) -> Value {
    eventually(
        format!("job {id} to show its input"),
        Duration::from_secs(20),
        || async {
            match get_json(&format!("{base}/jobs/{id}")).await {
                Some((_, job)) if !job["input"]["width"].is_null() => Ok(job),
                seen => Err(format!("{seen:?}")),
            }
        },
    )
    .await
}

/// Returns the thumbnail's answer: status, content type, cache control, body.
async fn thumbnail(base: &str, id: &str) -> (u16, String, String, Vec<u8>) {
    let response = reqwest::get(format!("{base}/jobs/{id}/thumbnail"))
        .await
        .expect("an answer");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let kind = header(reqwest::header::CONTENT_TYPE);
    let cache = header(reqwest::header::CACHE_CONTROL);
    let status = response.status().as_u16();
    (
        status,
        kind,
        cache,
        response.bytes().await.expect("a body").to_vec(),
    )
}

/// Asserts `jpeg` is a JPEG picture of at most 320 px wide, even
/// dimensions; returns its width and height.
fn assert_thumbnail(jpeg: &[u8], dir: &Path) -> (u64, u64) {
    assert!(
        jpeg.starts_with(&[0xFF, 0xD8, 0xFF]),
        "a JPEG's magic bytes"
    );
    let path = dir.join("thumbnail.jpg");
    std::fs::write(&path, jpeg).expect("write the thumbnail");
    let probe = ffprobe(&path);
    let video = stream(&probe, "video").expect("a picture");
    assert_eq!(video["codec_name"], "mjpeg", "{probe}");
    let width = video["width"].as_u64().expect("a width");
    let height = video["height"].as_u64().expect("a height");
    assert!(width <= 320, "{width} px wide");
    assert_eq!((width % 2, height % 2), (0, 0), "{width}x{height}");
    (width, height)
}

#[tokio::test]
async fn a_queued_job_shows_its_input_and_thumbnail_which_a_restart_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let node = TestNode::start_at(&data, |c| {
        c.workers = Some(0);
        c.drain_timeout = 0;
    })
    .await
    .serve();

    // Unknown job: 404 with the error document.
    let unknown = "0193a000-0000-7000-8000-000000000000";
    let (status, kind, _, body) = thumbnail(&node.base, unknown).await;
    assert_eq!((status, kind.as_str()), (404, "application/json"));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");

    let (status, job) = node.submit(&wide_clip(), "").await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    let job = probed(&node.base, &id).await;
    assert_eq!(job["status"], "queued", "no worker: {job}");
    assert_eq!(job["input"]["width"], 640, "{job}");
    assert_eq!(job["input"]["height"], 360, "{job}");
    assert_eq!(job["input"]["video_codec"], "h264", "{job}");
    let seconds = job["input"]["duration_seconds"].as_f64().unwrap();
    assert!((seconds - 12.0).abs() < 0.1, "{job}");

    // The thumbnail is written with the probe's report, or just before.
    let (status, kind, cache, jpeg) =
        eventually("the thumbnail", Duration::from_secs(10), || async {
            let answer = thumbnail(&node.base, &id).await;
            if answer.0 == 200 {
                Ok(answer)
            } else {
                Err(answer.0)
            }
        })
        .await;
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    assert!(
        cache.contains("private") && cache.contains("max-age"),
        "{cache}"
    );
    assert_eq!(assert_thumbnail(&jpeg, dir.path()), (320, 180));
    let (_, job) = get_json(&format!("{}/jobs/{id}", node.base)).await.unwrap();
    assert_eq!(job["status"], "queued", "still queued: {job}");

    // The probe's findings are in the record: a restart shows them at once;
    // a thumbnail that is missing then (a takeover, a crash mid-probe) is
    // made again.
    node.stop().await;
    let file = data.join("jobs").join(&id).join("thumbnail.jpg");
    std::fs::remove_file(&file).expect("the thumbnail is in the job's folder");
    let node = TestNode::start_at(&data, |c| {
        c.workers = Some(0);
        c.drain_timeout = 0;
    })
    .await
    .serve();
    let (_, job) = get_json(&format!("{}/jobs/{id}", node.base)).await.unwrap();
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["input"]["width"], 640, "{job}");
    eventually("the thumbnail again", Duration::from_secs(10), || async {
        match thumbnail(&node.base, &id).await.0 {
            200 => Ok(()),
            status => Err(status),
        }
    })
    .await;
}

#[tokio::test]
async fn a_thumbnail_is_served_while_a_longer_job_encodes() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(|c| c.workers = Some(1)).await.serve();
    let (status, job) = node.submit(&long_clip(), "?preset=medium").await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    eventually("the job to run", Duration::from_secs(20), || async {
        match get_json(&format!("{}/jobs/{id}", node.base)).await {
            Some((_, job)) if job["status"] == "running" => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let jpeg = eventually("the thumbnail", Duration::from_secs(20), || async {
        match thumbnail(&node.base, &id).await {
            (200, _, _, jpeg) => Ok(jpeg),
            (status, ..) => Err(status),
        }
    })
    .await;
    assert_eq!(assert_thumbnail(&jpeg, dir.path()), (320, 180));
    let (_, job) = get_json(&format!("{}/jobs/{id}", node.base)).await.unwrap();
    assert_eq!(job["status"], "running", "still encoding: {job}");
    assert_eq!(job["input"]["width"], 1280, "{job}");

    let _ = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", node.base))
        .send()
        .await;
}

#[tokio::test]
async fn an_accepted_file_that_is_not_a_video_fails_with_its_error_and_no_thumbnail() {
    let dir = tempfile::tempdir().unwrap();
    // Past the check at submit (an MP4 signature), not a video after it.
    let garbage = dir.path().join("garbage.mp4");
    let mut bytes = b"\0\0\0\x18ftypisom\0\0\0\0isomiso2".to_vec();
    bytes.extend_from_slice(&[0x5a; 4096]);
    std::fs::write(&garbage, bytes).unwrap();

    let node = TestNode::start_with(|c| c.workers = Some(1)).await.serve();
    let (status, job) = node.submit(&garbage, "").await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    let (status, end) = node.wait_for_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(status, 400, "{end}");
    assert_eq!(end["error"]["code"], "invalid_media", "{end}");
    assert!(end["input"]["width"].is_null(), "{end}");

    // The probe of the same file failed too: no thumbnail, ever. Its
    // report may come after the job's end; the thumbnail never does.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, kind, _, body) = thumbnail(&node.base, &id).await;
    assert_eq!((status, kind.as_str()), (404, "application/json"));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "no_thumbnail", "{error}");
}

/// Probe children of this test process now (the node runs in it): the
/// children serving probes, `vidpress __transcode probes`.
fn probe_children() -> usize {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …; comm may hold spaces, so after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned));
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            ppid.as_deref() == Some(me.as_str())
                && args.windows(2).any(|pair| {
                    pair[0] == vidpress_transcode::child::SUBCOMMAND.as_bytes()
                        && pair[1] == vidpress_transcode::child::PROBES.as_bytes()
                })
        })
        .count()
}

#[tokio::test]
async fn a_burst_of_uploads_is_probed_two_children_at_a_time() {
    let node = TestNode::start_with(|c| c.workers = Some(0)).await.serve();
    let clip = wide_clip();
    let submits = (0..10).map(|_| node.submit(&clip, ""));
    let ids: Vec<String> = futures::future::join_all(submits)
        .await
        .into_iter()
        .map(|(status, job)| {
            assert_eq!(status, 202, "{job}");
            job["id"].as_str().unwrap().to_owned()
        })
        .collect();

    let base = node.base.clone();
    let mut most = 0;
    let all_probed = async {
        for id in &ids {
            probed(&base, id).await;
        }
    };
    tokio::pin!(all_probed);
    loop {
        tokio::select! {
            () = &mut all_probed => break,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                most = most.max(probe_children());
            }
        }
    }
    assert!(most >= 1, "probe children were seen");
    assert!(most <= 2, "{most} probe children at once");
    for id in &ids {
        assert_eq!(thumbnail(&node.base, id).await.0, 200, "{id}");
    }
}
