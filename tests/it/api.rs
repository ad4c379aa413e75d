//! The HTTP API through `Router::oneshot`: options, errors, documents.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{clip, eventually, listed_ids, TestNode};

async fn call(
    node: &TestNode,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = node
        .server
        .router()
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).body(body.into()).expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn submit_answers_202_with_location_retry_after_and_status_document() {
    let node = TestNode::start().await;
    let video = std::fs::read(clip(1)).unwrap();
    let (status, headers, body) =
        call(&node, post("/jobs?crf=30&preset=ultrafast", video.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id");
    assert_eq!(headers[header::LOCATION], format!("/jobs/{id}").as_str());
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert!(matches!(
        body["status"].as_str(),
        Some("queued" | "running")
    ));
    assert_eq!(body["options"]["crf"], 30);
    assert_eq!(body["options"]["preset"], "ultrafast");
    assert_eq!(body["options"]["audio_bitrate"], 96);
    assert_eq!(body["input"]["bytes"], video.len() as u64);
    assert_eq!(body["links"]["self"], format!("/jobs/{id}"));
    assert_eq!(body["links"]["events"], format!("/jobs/{id}/events"));
    assert!(body["result"].is_null() && body["error"].is_null());

    // Polled until done: 202 with Retry-After while running, then 200.
    let poll = format!("/jobs/{id}");
    let done = eventually("the job to complete", Duration::from_secs(60), || async {
        let (status, headers, body) = call(&node, get(&poll)).await;
        match status {
            StatusCode::ACCEPTED => {
                assert!(headers.contains_key(header::RETRY_AFTER));
                Err(body)
            }
            StatusCode::OK => Ok(body),
            other => panic!("unexpected {other}: {body}"),
        }
    })
    .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["node"], "node-1");
    assert_eq!(done["input"]["video_codec"], "h264");
    assert_eq!(done["input"]["width"], 320);
    assert!(done["result"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(done["result"]["url"], format!("/jobs/{id}/result"));
}

#[tokio::test]
async fn multipart_uploads_are_accepted_from_the_file_part() {
    let node = TestNode::start().await;
    let video = std::fs::read(clip(1)).unwrap();
    let boundary = "vidpressboundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").as_bytes());
    body.extend_from_slice(&video);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let request = Request::post("/jobs")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    let (status, _, doc) = call(&node, request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
    assert_eq!(doc["input"]["bytes"], video.len() as u64);

    let request = Request::post("/jobs")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--{boundary}--\r\n")))
        .unwrap();
    let (status, _, doc) = call(&node, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert_eq!(doc["error"]["code"], "bad_request");
}

#[tokio::test]
async fn bad_options_get_400_naming_the_option() {
    let node = TestNode::start().await;
    let video = std::fs::read(clip(1)).unwrap();
    for (query, names) in [
        ("crf=52", "crf"),
        ("crf=abc", "crf"),
        ("preset=warp", "preset"),
        ("max_height=0", "max_height"),
        ("max_height=-5", "max_height"),
        ("audio_bitrate=100000", "audio"),
        ("colour=red", "colour"),
    ] {
        let (status, _, body) = call(&node, post(&format!("/jobs?{query}"), video.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_option", "{query}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{query}: {message}");
    }
    // Nothing was accepted.
    let (_, _, list) = call(&node, get("/jobs")).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_with_an_error_document() {
    let node = TestNode::start().await;
    let unknown = uuid::Uuid::now_v7();
    for uri in [
        format!("/jobs/{unknown}"),
        format!("/jobs/{unknown}/result"),
        "/jobs/not-an-id".to_owned(),
        "/nowhere".to_owned(),
    ] {
        let (status, _, body) = call(&node, get(&uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["error"]["code"], "not_found", "{uri}");
    }
    let request = Request::delete(format!("/jobs/{unknown}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = call(&node, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job_and_refuses_a_different_body() {
    let node = TestNode::start().await;
    let video = std::fs::read(clip(1)).unwrap();
    let keyed = |body: Vec<u8>| {
        Request::post("/jobs")
            .header("Idempotency-Key", "upload-42")
            .body(Body::from(body))
            .unwrap()
    };
    let (s1, _, first) = call(&node, keyed(video.clone())).await;
    let (s2, _, second) = call(&node, keyed(video.clone())).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["id"], second["id"]);

    let mut other = video.clone();
    other.extend_from_slice(b"different");
    let (s3, _, conflict) = call(&node, keyed(other)).await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{conflict}");
    assert_eq!(conflict["error"]["code"], "idempotency_key_reused");

    let (_, _, list) = call(&node, get("/jobs")).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn health_readiness_and_cluster_answer() {
    let node = TestNode::start().await;
    let (status, _, _) = call(&node, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&node, get("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, cluster) = call(&node, get("/cluster")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster["self"], "node-1");
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["state"], "up");
    assert_eq!(nodes[0]["workers"], 2);
    assert_eq!(nodes[0]["busy"], 0);
    // Alone, a node has no cluster address; its HTTP URL is where it answers.
    assert_eq!(nodes[0]["address"], serde_json::Value::Null);
    let http = format!("http://{}", node.server.local_addr());
    assert_eq!(nodes[0]["http"], http.as_str());
}

#[tokio::test]
async fn list_is_newest_first_filtered_and_paginated() {
    let node = TestNode::start_with(|c| c.workers = Some(0)).await;
    let video = std::fs::read(clip(1)).unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (status, _, body) = call(&node, post("/jobs", video.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Cancel the oldest so that one status differs.
    let request = Request::delete(format!("/jobs/{}", ids[0]))
        .body(Body::empty())
        .unwrap();
    let (status, _, canceled) = call(&node, request).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a queued job cancels at once: {canceled}"
    );
    assert_eq!(canceled["status"], "canceled");

    let (_, _, page1) = call(&node, get("/jobs?limit=2")).await;
    let page1_ids = listed_ids(&page1);
    assert_eq!(page1_ids, vec![ids[4].as_str(), ids[3].as_str()]);
    let cursor = page1["next_cursor"].as_str().expect("more pages");
    let (_, _, page2) = call(&node, get(&format!("/jobs?limit=2&cursor={cursor}"))).await;
    let page2_ids = listed_ids(&page2);
    assert_eq!(page2_ids, vec![ids[2].as_str(), ids[1].as_str()]);

    let (_, _, queued) = call(&node, get("/jobs?status=queued")).await;
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 4);
    let (_, _, canceled) = call(&node, get("/jobs?status=canceled")).await;
    assert_eq!(canceled["jobs"][0]["id"], ids[0].as_str());
    let (status, _, bad) = call(&node, get("/jobs?status=sleeping")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["code"], "invalid_option");

    // A canceled job polls as 400, and has no result (409 with the document).
    let (status, _, doc) = call(&node, get(&format!("/jobs/{}", ids[0]))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["status"], "canceled");
    let (status, _, doc) = call(&node, get(&format!("/jobs/{}/result", ids[1]))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(doc["status"], "queued");
}

#[tokio::test]
async fn a_full_queue_gives_503_with_retry_after() {
    let node = TestNode::start_with(|c| {
        c.workers = Some(0);
        c.queue_capacity = 2;
    })
    .await;
    let video = std::fs::read(clip(1)).unwrap();
    for _ in 0..2 {
        let (status, _, _) = call(&node, post("/jobs", video.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, headers, body) = call(&node, post("/jobs", video.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "queue_full");
    assert!(headers.contains_key(header::RETRY_AFTER));
    // The refused upload left no file behind.
    let uploads = node.data_dir().join("uploads");
    assert_eq!(std::fs::read_dir(uploads).unwrap().count(), 0);
}
