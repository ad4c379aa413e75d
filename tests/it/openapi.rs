//! `GET /openapi.json`: the spec lists every endpoint of the contract with
//! the status codes it answers, its bounds and names are the server's, the
//! answers it promises as error documents are, and it asks for an API key
//! exactly where a node with keys does. (scripts/openapi-test.sh fuzzes a
//! live node with keys against the same spec with schemathesis.)

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::support::{clip, Served, TestNode};

/// Who may call an endpoint on a node with `--api-keys` (DESIGN.md,
/// "Tenants, keys and TLS").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Anyone, without a key.
    Public,
    /// Any key (401 without one).
    Key,
    /// An admin key (401 without a key, 403 with another).
    Admin,
}

/// Every public endpoint of DESIGN.md, with who may call it and every
/// status code a client can get from it.
const CONTRACT: &[(&str, &str, Access, &[&str])] = &[
    (
        "post",
        "/jobs",
        Access::Key,
        &[
            "202", "400", "401", "408", "413", "415", "422", "429", "431", "503", "507",
        ],
    ),
    ("get", "/jobs", Access::Key, &["200", "400", "401", "503"]),
    (
        "get",
        "/jobs/{id}",
        Access::Key,
        &["200", "202", "400", "401", "404", "503"],
    ),
    (
        "delete",
        "/jobs/{id}",
        Access::Key,
        &["200", "202", "401", "404", "503"],
    ),
    (
        "get",
        "/jobs/{id}/result",
        Access::Key,
        &[
            "200", "206", "304", "401", "404", "409", "412", "416", "503",
        ],
    ),
    (
        "get",
        "/jobs/{id}/thumbnail",
        Access::Key,
        &["200", "401", "404", "503"],
    ),
    (
        "get",
        "/jobs/{id}/events",
        Access::Key,
        &["101", "400", "401", "404", "503"],
    ),
    (
        "get",
        "/cluster",
        Access::Admin,
        &["200", "401", "403", "503"],
    ),
    ("get", "/healthz", Access::Public, &["200"]),
    ("get", "/readyz", Access::Public, &["200", "503"]),
    (
        "get",
        "/metrics",
        Access::Admin,
        &["200", "401", "403", "503"],
    ),
    ("get", "/openapi.json", Access::Public, &["200"]),
    ("get", "/", Access::Public, &["200"]),
];

async fn spec(node: &Served) -> Value {
    let response = reqwest::get(format!("{}/openapi.json", node.base))
        .await
        .expect("get the spec");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("a JSON spec")
}

/// Follows `value`'s `$ref` within the spec, if it has one.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => spec
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} does not resolve")),
        None => value,
    }
}

/// Returns the response object of `status`.
fn response<'a>(spec: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    resolve(spec, &spec["paths"][path][method]["responses"][status])
}

/// Returns the schema of a parameter.
fn parameter<'a>(spec: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    let parameters = spec["paths"][path][method]["parameters"]
        .as_array()
        .expect("parameters");
    let parameter = parameters
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    resolve(spec, &parameter["schema"])
}

#[tokio::test]
async fn the_spec_lists_every_endpoint_of_the_contract_with_its_status_codes() {
    let node = TestNode::start().await.serve();
    let spec = spec(&node).await;
    let version = spec["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, not {version}");

    for (method, path, _, codes) in CONTRACT {
        let responses = spec["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{} {path} is missing from the spec", method.to_uppercase()));
        let listed: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = codes.iter().copied().collect();
        assert_eq!(listed, expected, "{} {path}", method.to_uppercase());
    }
    let paths = spec["paths"].as_object().expect("paths");
    let operations: usize = paths
        .values()
        .map(|item| item.as_object().map_or(0, |item| item.len()))
        .sum();
    assert_eq!(operations, CONTRACT.len(), "operations beyond the contract");
    assert!(
        !paths.keys().any(|path| path.starts_with("/internal")),
        "node-to-node routes are not part of the public API"
    );
}

#[tokio::test]
async fn errors_are_error_documents_and_job_states_are_status_documents() {
    let node = TestNode::start().await.serve();
    let spec = spec(&node).await;
    let schema_of = |method: &str, path: &str, status: &str| {
        let response = response(&spec, method, path, status);
        response["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .map(str::to_owned)
    };
    let job = Some("#/components/schemas/JobDocument".to_owned());
    let error = Some("#/components/schemas/ErrorBody".to_owned());
    for (method, path, _, codes) in CONTRACT {
        for code in codes.iter().filter(|code| code.starts_with(['4', '5'])) {
            // A failed or canceled job's poll, and the download of an
            // unfinished one, answer the job's status document.
            let expected = match (*path, *code) {
                ("/jobs/{id}", "400") | ("/jobs/{id}/result", "409") => &job,
                _ => &error,
            };
            assert_eq!(
                &schema_of(method, path, code),
                expected,
                "{method} {path} {code}"
            );
        }
    }
    // Every 503 tells when to retry.
    let unavailable = response(&spec, "get", "/jobs", "503");
    assert_eq!(unavailable["headers"]["Retry-After"]["required"], true);
    let accepted = response(&spec, "post", "/jobs", "202");
    for header in ["Location", "Retry-After"] {
        assert_eq!(accepted["headers"][header]["required"], true, "{header}");
    }
    assert_eq!(
        response(&spec, "get", "/jobs/{id}/result", "200")["content"]["video/mp4"]["schema"]
            ["$ref"],
        "#/components/schemas/Video"
    );
    assert_eq!(
        response(&spec, "get", "/jobs/{id}/thumbnail", "200")["content"]["image/jpeg"]["schema"]
            ["$ref"],
        "#/components/schemas/Jpeg"
    );
    assert!(response(&spec, "get", "/metrics", "200")["content"]["text/plain"].is_object());
    let status = spec
        .pointer("/components/schemas/JobStatus/enum")
        .expect("the status enum");
    assert_eq!(
        status,
        &serde_json::json!(["queued", "running", "completed", "failed", "canceled"])
    );
    let event = spec
        .pointer("/components/schemas/EventKind/enum")
        .expect("the event enum");
    assert_eq!(
        event,
        &serde_json::json!(["snapshot", "progress", "status"])
    );
}

/// Sends `query` to `POST /jobs` with bytes that are no video: 400 if an
/// option is refused, 415 once the options are taken.
async fn submit_status(node: &Served, query: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/jobs?{query}", node.base))
        .body("not a video, but the options come first")
        .send()
        .await
        .expect("submit")
        .status()
        .as_u16()
}

async fn list_status(node: &Served, query: &str) -> u16 {
    reqwest::get(format!("{}/jobs?{query}", node.base))
        .await
        .expect("list")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_specs_bounds_and_names_are_the_servers() {
    let node = TestNode::start().await.serve();
    let spec = spec(&node).await;
    let bounds = |method: &str, path: &str, name: &str| {
        let schema = parameter(&spec, method, path, name);
        let bound = |key: &str| {
            schema[key]
                .as_i64()
                .unwrap_or_else(|| panic!("{name} {key}"))
        };
        (bound("minimum"), bound("maximum"))
    };
    // The spec's crf bound is the widest codec's (vp9's 0 to 63).
    for (name, with) in [
        ("crf", "&codec=vp9"),
        ("target_size_bytes", ""),
        ("max_height", ""),
        ("audio_bitrate", ""),
    ] {
        let (min, max) = bounds("post", "/jobs", name);
        for (value, status) in [(min, 415), (max, 415), (min - 1, 400), (max + 1, 400)] {
            let query = format!("{name}={value}{with}");
            assert_eq!(submit_status(&node, &query).await, status, "{query}");
        }
    }
    assert_eq!(
        submit_status(&node, "crf=52").await,
        400,
        "h264's crf ends at 51"
    );
    let ssim = parameter(&spec, "post", "/jobs", "min_ssim");
    let (min, max) = (
        ssim["minimum"].as_f64().expect("min_ssim minimum"),
        ssim["maximum"].as_f64().expect("min_ssim maximum"),
    );
    for (value, status) in [
        (min, 415),
        (max, 415),
        (min - 0.01, 400),
        (max + 0.0005, 400),
    ] {
        let query = format!("min_ssim={value}");
        assert_eq!(submit_status(&node, &query).await, status, "{query}");
    }
    for (name, count) in [("codec", 4), ("format", 2)] {
        let names = parameter(&spec, "post", "/jobs", name)["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("the {name}s"))
            .clone();
        assert_eq!(names.len(), count, "{name}");
        for value in names {
            let value = value.as_str().expect("a name");
            // Each codec with its default format, each format with a codec
            // it holds.
            let query = match name {
                "codec" => format!("codec={value}"),
                _ => format!("format={value}&codec=av1"),
            };
            assert_eq!(submit_status(&node, &query).await, 415, "{query}");
        }
    }
    let presets = parameter(&spec, "post", "/jobs", "preset")["enum"]
        .as_array()
        .expect("the presets");
    assert_eq!(presets.len(), 9);
    for preset in presets {
        let query = format!("preset={}", preset.as_str().expect("a name"));
        assert_eq!(submit_status(&node, &query).await, 415, "{query}");
    }

    let (min, max) = bounds("get", "/jobs", "limit");
    for (value, status) in [(min, 200), (max, 200), (min - 1, 400), (max + 1, 400)] {
        let query = format!("limit={value}");
        assert_eq!(list_status(&node, &query).await, status, "{query}");
    }
    for status in parameter(&spec, "get", "/jobs", "status")["enum"]
        .as_array()
        .expect("the statuses")
    {
        let query = format!("status={}", status.as_str().expect("a name"));
        assert_eq!(list_status(&node, &query).await, 200, "{query}");
    }
}

#[tokio::test]
async fn the_spec_asks_for_a_bearer_key_where_the_contract_does() {
    let node = TestNode::start().await.serve();
    let spec = spec(&node).await;
    let schemes = spec["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(
        schemes.keys().collect::<Vec<_>>(),
        ["bearer"],
        "one scheme, the API keys'"
    );
    let bearer = &schemes["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"], &bearer["bearerFormat"]),
        (&"http".into(), &"bearer".into(), &"opaque token".into())
    );
    assert!(
        spec.get("security").is_none(),
        "no key unless an operation says so"
    );
    // Exactly the key: an empty requirement beside it would make it optional.
    let keyed = serde_json::json!([{ "bearer": [] }]);
    for (method, path, access, _) in CONTRACT {
        let operation = &spec["paths"][path][method];
        let responses = operation["responses"].as_object().expect("responses");
        let label = format!("{} {path}", method.to_uppercase());
        match access {
            Access::Public => assert!(operation.get("security").is_none(), "{label}"),
            Access::Key | Access::Admin => assert_eq!(operation["security"], keyed, "{label}"),
        }
        assert_eq!(
            responses.contains_key("401"),
            *access != Access::Public,
            "{label} 401"
        );
        assert_eq!(
            responses.contains_key("403"),
            *access == Access::Admin,
            "{label} 403"
        );
        if *access != Access::Public {
            let refused = response(&spec, method, path, "401");
            assert_eq!(
                refused["headers"]["WWW-Authenticate"]["required"], true,
                "{label}"
            );
        }
    }
    let busy = response(&spec, "post", "/jobs", "429");
    assert_eq!(busy["headers"]["Retry-After"]["required"], true);
    // A browser's WebSocket cannot set Authorization.
    let events = &spec["paths"]["/jobs/{id}/events"]["get"];
    let token = events["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "access_token")
        .expect("an access_token parameter");
    assert_eq!(
        (&token["in"], &token["required"], &token["schema"]["type"]),
        (&"query".into(), &false.into(), &"string".into())
    );
}

/// Tokens of the key file of [`the_specs_keys_are_the_servers`].
const ADMIN_TOKEN: &str = "ops-token-0123456789abcdefghij";
const TENANT_TOKEN: &str = "acme-token-0123456789abcdefghij";

#[tokio::test]
async fn the_specs_keys_are_the_servers() {
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("keys");
    std::fs::write(
        &key_file,
        format!("ops:{ADMIN_TOKEN}:admin\nacme:{TENANT_TOKEN}\n"),
    )
    .expect("write the keys");
    // No workers: the tenant's job stays queued, its one active job.
    let node = TestNode::start_with(|c| {
        c.api_keys = Some(key_file.clone());
        c.tenant_max_active = 1;
        c.workers = Some(0);
    })
    .await
    .serve();
    let spec = spec(&node).await;
    let client = reqwest::Client::new();
    let upload = std::fs::read(clip(1)).expect("read fixture");
    let submit = || {
        client
            .post(format!("{}/jobs", node.base))
            .bearer_auth(TENANT_TOKEN)
            .body(upload.clone())
            .send()
    };
    let accepted = submit().await.expect("submit");
    assert_eq!(accepted.status(), 202);
    let job: Value = accepted.json().await.expect("a status document");
    let id = job["id"].as_str().expect("an id");
    let busy = submit().await.expect("submit");
    assert_eq!(busy.status(), 429);
    let retry_after: u64 = busy.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = busy.json().await.expect("an error document");
    assert_eq!(body["error"]["code"], "too_many_active_jobs");

    let paths = spec["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let url = format!("{}{}", node.base, path.replace("{id}", id));
        for (method, operation) in item.as_object().expect("operations") {
            let label = format!("{} {path}", method.to_uppercase());
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let send = |token: Option<&str>| {
                let request = client.request(method.clone(), &url);
                match token {
                    Some(token) => request.bearer_auth(token),
                    None => request,
                }
                .send()
            };
            let anonymous = send(None).await.expect("send");
            if operation.get("security").is_none() {
                assert_eq!(anonymous.status(), 200, "{label} needs no key");
                continue;
            }
            for (token, challenge) in [
                (None, "Bearer realm=\"vidpress\""),
                (
                    Some("not-a-key-of-this-node-at-all"),
                    "Bearer realm=\"vidpress\", error=\"invalid_token\"",
                ),
            ] {
                let refused = send(token).await.expect("send");
                assert_eq!(refused.status(), 401, "{label} with {token:?}");
                assert_eq!(refused.headers()["www-authenticate"], challenge, "{label}");
                let body: Value = refused.json().await.expect("an error document");
                assert_eq!(body["error"]["code"], "unauthorized", "{label}");
            }
            // An endpoint that can answer 403 turns a tenant's key away and
            // lets an admin's in.
            if operation["responses"].get("403").is_some() {
                let refused = send(Some(TENANT_TOKEN)).await.expect("send");
                assert_eq!(refused.status(), 403, "{label}");
                let body: Value = refused.json().await.expect("an error document");
                assert_eq!(body["error"]["code"], "forbidden", "{label}");
                let admitted = send(Some(ADMIN_TOKEN)).await.expect("send");
                assert_eq!(admitted.status(), 200, "{label}");
            }
        }
    }

    // The WebSocket takes the key as `access_token`, and refuses it without.
    let events = format!(
        "ws://{}/jobs/{id}/events",
        node.base.trim_start_matches("http://")
    );
    match tokio_tungstenite::connect_async(events.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401 before the upgrade: {other:?}"),
    }
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{events}?access_token={TENANT_TOKEN}"))
            .await
            .expect("upgrade");
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a first frame")
        .expect("a frame")
        .expect("a frame");
    let event: Value =
        serde_json::from_str(first.to_text().expect("a text frame")).expect("an event");
    assert_eq!(event["event"], "snapshot");
    assert_eq!(event["job"]["id"], id);
}

#[tokio::test]
async fn answers_outside_the_handlers_are_error_documents_too() {
    let node = TestNode::start().await.serve();
    let client = reqwest::Client::new();
    let error_code = |response: reqwest::Response| async move {
        let content_type = response.headers()["content-type"].clone();
        assert_eq!(content_type, "application/json");
        let body: Value = response.json().await.expect("an error document");
        body["error"]["code"].as_str().expect("a code").to_owned()
    };

    // A method a route does not take: 405, with Allow.
    let response = client
        .put(format!("{}/jobs", node.base))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET,HEAD,POST");
    assert_eq!(error_code(response).await, "method_not_allowed");

    // The events of a real job, without a WebSocket handshake: 400.
    let (status, job) = node.submit(&clip(1), "").await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().expect("an id");
    let response = reqwest::get(format!("{}/jobs/{id}/events", node.base))
        .await
        .expect("get");
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "websocket_expected");

    // A range past the end, and a precondition that fails: 416 and 412.
    let (status, done) = node.wait_for_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(status, 200, "{done}");
    let size = done["result"]["bytes"].as_u64().expect("the result size");
    let result = format!("{}/jobs/{id}/result", node.base);
    let response = client
        .get(&result)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 416);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    assert_eq!(error_code(response).await, "range_not_satisfiable");
    let response = client
        .get(&result)
        .header("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 412);
    assert_eq!(error_code(response).await, "precondition_failed");
}
