//! Tenants and API keys as clients see them: every keyed route refuses a
//! missing or wrong key, a tenant never sees or touches another tenant's
//! job (404 on every route, absent from listings), on one node and across a
//! three-node cluster, also once the job's owner is killed and its standby
//! answers for it; idempotency keys and quotas are per tenant; SIGHUP
//! re-reads the key file; an open node refuses to listen beyond loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vidpress::config::ConfigError;
use vidpress::server::{ServeError, Server};

use crate::cluster::NodeProc;
use crate::support::{clip, eventually, long_clip, TestNode};

const ACME: &str = "acme-token-0123456789abcdefghij";
const GLOBEX: &str = "globex-token-0123456789abcdefgh";
const ADMIN: &str = "admin-token-0123456789abcdefghi";
const WRONG: &str = "wrong-token-0123456789abcdefghi";

/// Writes a key file with the tenants `acme`, `globex` and an admin `ops`.
fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("api-keys");
    std::fs::write(
        &path,
        format!("# tenants\nacme:{ACME}\nglobex:{GLOBEX}\nops:{ADMIN}:admin\n"),
    )
    .expect("key file");
    path
}

/// A client of one node speaking with one key (or none).
struct As<'a> {
    base: &'a str,
    token: Option<&'a str>,
}

impl<'a> As<'a> {
    fn new(base: &'a str, token: Option<&'a str>) -> Self {
        Self { base, token }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.expect("an answer")
    }

    async fn json(&self, method: Method, path: &str) -> (StatusCode, Value) {
        let response = self.send(method, path, None).await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn submit_with(&self, file: &Path, key: Option<&str>) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/jobs", self.base))
            .bearer_auth(self.token.unwrap_or_default())
            .body(std::fs::read(file).expect("fixture"));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn submit(&self, file: &Path) -> String {
        let (status, job) = self.submit_with(file, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().expect("a job id").to_owned()
    }

    /// Opens the job's event stream with the key as `?access_token=`;
    /// returns the handshake's status (101 when upgraded).
    async fn subscribe(&self, id: &str) -> u16 {
        let ws = self.base.replacen("http://", "ws://", 1);
        let url = match self.token {
            Some(token) => format!("{ws}/jobs/{id}/events?access_token={token}"),
            None => format!("{ws}/jobs/{id}/events"),
        };
        handshake(url.into_client_request().expect("a ws request")).await
    }

    /// Listed job IDs, of every page of the cluster's listing.
    async fn listed(&self) -> Vec<String> {
        let (status, page) = self.json(Method::GET, "/jobs?limit=100").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .filter_map(|j| j["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Polls until the job ends; 202, 503 and no answer are "not yet".
    async fn wait_for_end(&self, id: &str, limit: Duration) -> Value {
        eventually(format!("job {id} to end"), limit, || async {
            let response = reqwest::Client::new()
                .get(format!("{}/jobs/{id}", self.base))
                .bearer_auth(self.token.unwrap_or_default())
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 200 || r.status() == 400 => {
                    Ok(r.json::<Value>().await.unwrap_or(Value::Null))
                }
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }
}

async fn handshake(request: tungstenite::handshake::client::Request) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("no handshake answer: {e}"),
    }
}

/// Checks that every route about job `id` answers `stranger` as if the job
/// did not exist, and that its listing leaves it out.
async fn hidden_from(stranger: &As<'_>, id: &str) {
    for (method, path) in [
        (Method::GET, format!("/jobs/{id}")),
        (Method::GET, format!("/jobs/{id}/result")),
        (Method::GET, format!("/jobs/{id}/thumbnail")),
        (Method::DELETE, format!("/jobs/{id}")),
    ] {
        let (status, doc) = stranger.json(method.clone(), &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {doc}");
        assert_eq!(doc["error"]["code"], "not_found");
    }
    assert_eq!(stranger.subscribe(id).await, 404, "events of {id}");
    assert!(!stranger.listed().await.contains(&id.to_owned()));
}

/// Checks that a keyed route refuses no key and a wrong key with 401 and
/// the Bearer challenge.
async fn refuses_without_a_valid_key(base: &str, method: Method, path: &str) {
    for (token, challenge) in [
        (None, "Bearer realm=\"vidpress\""),
        (
            Some(WRONG),
            "Bearer realm=\"vidpress\", error=\"invalid_token\"",
        ),
    ] {
        let response = As::new(base, token).send(method.clone(), path, None).await;
        let status = response.status();
        let header = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let doc: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} {token:?}: {doc}"
        );
        assert_eq!(header.as_deref(), Some(challenge), "{method} {path}");
        assert_eq!(doc["error"]["code"], "unauthorized", "{method} {path}");
    }
}

async fn keyed_node(
    dir: &Path,
    tweak: impl FnOnce(&mut vidpress::config::ServeConfig),
) -> TestNode {
    let keys = key_file(dir);
    TestNode::start_with(|c| {
        c.api_keys = Some(keys);
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn every_keyed_route_refuses_a_missing_or_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = keyed_node(dir.path(), |_| {}).await.serve();
    let acme = As::new(&node.base, Some(ACME));
    let id = acme.submit(&clip(1)).await;
    for (method, path) in [
        (Method::GET, "/jobs".to_owned()),
        (Method::POST, "/jobs".to_owned()),
        (Method::GET, format!("/jobs/{id}")),
        (Method::DELETE, format!("/jobs/{id}")),
        (Method::GET, format!("/jobs/{id}/result")),
        (Method::GET, format!("/jobs/{id}/thumbnail")),
        (Method::GET, "/cluster".to_owned()),
        (Method::GET, "/metrics".to_owned()),
    ] {
        refuses_without_a_valid_key(&node.base, method, &path).await;
    }
    // The WebSocket: no key, a wrong one, a wrong one as a header.
    assert_eq!(As::new(&node.base, None).subscribe(&id).await, 401);
    assert_eq!(As::new(&node.base, Some(WRONG)).subscribe(&id).await, 401);
    let ws = node.base.replacen("http://", "ws://", 1);
    let mut request = format!("{ws}/jobs/{id}/events")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {ACME}").parse().unwrap());
    assert_eq!(handshake(request).await, 101, "a key as a header");
    assert_eq!(acme.subscribe(&id).await, 101, "a key as access_token");
    // The key was never asked for on these.
    for path in ["/", "/healthz", "/readyz", "/openapi.json"] {
        let (status, _) = As::new(&node.base, None).json(Method::GET, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // A tenant's key is not an admin's.
    for path in ["/cluster", "/metrics"] {
        let (status, doc) = acme.json(Method::GET, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {doc}");
        assert_eq!(doc["error"]["code"], "forbidden");
        let admin = As::new(&node.base, Some(ADMIN))
            .send(Method::GET, path, None)
            .await;
        assert_eq!(admin.status(), StatusCode::OK, "{path}");
    }
    node.stop().await;
}

#[tokio::test]
async fn a_tenant_never_sees_or_touches_another_tenants_job() {
    let dir = tempfile::tempdir().unwrap();
    let node = keyed_node(dir.path(), |_| {}).await.serve();
    let (acme, globex, admin) = (
        As::new(&node.base, Some(ACME)),
        As::new(&node.base, Some(GLOBEX)),
        As::new(&node.base, Some(ADMIN)),
    );
    let mine = acme.submit(&clip(1)).await;
    let theirs = globex.submit(&clip(1)).await;
    let done = acme.wait_for_end(&mine, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed");
    // The thumbnail is there for its owner (made by the probe, which may
    // report after a job this short ends), and hidden from the stranger.
    eventually("acme's thumbnail", Duration::from_secs(10), || async {
        let response = acme
            .send(Method::GET, &format!("/jobs/{mine}/thumbnail"), None)
            .await;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(status),
        }
    })
    .await;
    hidden_from(&globex, &mine).await;
    hidden_from(&acme, &theirs).await;
    // Its owner sees it, the result included; the admin sees both.
    let result = acme
        .send(Method::GET, &format!("/jobs/{mine}/result"), None)
        .await;
    assert_eq!(result.status(), StatusCode::OK);
    assert_eq!(acme.listed().await, vec![mine.clone()]);
    let all = admin.listed().await;
    assert!(all.contains(&mine) && all.contains(&theirs), "{all:?}");
    // An admin may cancel anyone's job; a stranger's cancel did nothing.
    let (status, job) = admin.json(Method::DELETE, &format!("/jobs/{theirs}")).await;
    assert!(status.is_success(), "{status} {job}");
    let (_, still) = acme.json(Method::GET, &format!("/jobs/{mine}")).await;
    assert_eq!(still["status"], "completed");
    node.stop().await;
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let node = keyed_node(dir.path(), |c| {
        c.workers = Some(0);
        c.drain_timeout = 0;
    })
    .await
    .serve();
    let (acme, globex) = (
        As::new(&node.base, Some(ACME)),
        As::new(&node.base, Some(GLOBEX)),
    );
    let (status, first) = acme.submit_with(&clip(1), Some("upload-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // Another tenant's same key, with another body: its own new job, not 422.
    let (status, other) = globex.submit_with(&clip(2), Some("upload-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{other}");
    assert_ne!(first["id"], other["id"]);
    // The same tenant's retry is the same job; its key with another body, 422.
    let (status, again) = acme.submit_with(&clip(1), Some("upload-1")).await;
    assert_eq!((status, &again["id"]), (StatusCode::ACCEPTED, &first["id"]));
    let (status, conflict) = acme.submit_with(&clip(2), Some("upload-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{conflict}");
    node.stop().await;
}

#[tokio::test]
async fn a_tenant_at_its_quota_gets_429_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = keyed_node(dir.path(), |c| {
        c.workers = Some(0);
        c.drain_timeout = 0;
        c.tenant_max_active = 2;
    })
    .await
    .serve();
    let (acme, globex) = (
        As::new(&node.base, Some(ACME)),
        As::new(&node.base, Some(GLOBEX)),
    );
    let first = acme.submit(&clip(1)).await;
    acme.submit(&clip(1)).await;
    let response = reqwest::Client::new()
        .post(format!("{}/jobs", node.base))
        .bearer_auth(ACME)
        .body(std::fs::read(clip(1)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(retry_after >= 1);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["error"]["code"], "too_many_active_jobs");
    // Another tenant is not held back by acme's quota.
    globex.submit(&clip(1)).await;
    // An ended job frees its place.
    let (status, _) = acme.json(Method::DELETE, &format!("/jobs/{first}")).await;
    assert!(status.is_success());
    acme.submit(&clip(1)).await;
    node.stop().await;
}

#[tokio::test]
async fn a_restarted_node_keeps_each_jobs_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = key_file(dir.path());
    let node = TestNode::start_at(&data, |c| {
        c.api_keys = Some(keys.clone());
        c.workers = Some(0);
        c.drain_timeout = 0;
    })
    .await
    .serve();
    let id = As::new(&node.base, Some(ACME)).submit(&clip(1)).await;
    node.stop().await;
    let node = TestNode::start_at(&data, |c| c.api_keys = Some(keys))
        .await
        .serve();
    let acme = As::new(&node.base, Some(ACME));
    let done = acme.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed");
    hidden_from(&As::new(&node.base, Some(GLOBEX)), &id).await;
    node.stop().await;
}

#[tokio::test]
async fn an_open_node_listens_only_on_loopback_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = vidpress::config::ServeConfig::defaults();
    config.http = "0.0.0.0:0".parse().unwrap();
    config.data_dir = dir.path().join("data");
    match Server::start(&config).await {
        Err(ServeError::Config(ConfigError::OpenWithoutKeys(_))) => {}
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    config.open = true;
    assert!(Server::start(&config).await.is_ok(), "--open lets it start");
    config.open = false;
    config.api_keys = Some(key_file(dir.path()));
    assert!(Server::start(&config).await.is_ok(), "keys let it start");
    // A key file that cannot be used stops the start, naming the line.
    let bad = dir.path().join("bad-keys");
    std::fs::write(&bad, "acme:short\n").unwrap();
    config.api_keys = Some(bad);
    let e = Server::start(&config).await.err().expect("a refusal");
    assert!(e.to_string().contains("line 1"), "{e}");
}

/// A node process of its own, to be sent SIGHUP.
struct Process {
    child: Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_reads_the_key_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vidpress"))
        .args(["serve", "--http", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--api-keys")
        .arg(&keys)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Process {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let status_with = |token: &'static str| {
        let base = node.base.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{base}/jobs"))
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }
    };
    eventually(
        "the node to let acme in",
        Duration::from_secs(20),
        || async {
            status_with(ACME)
                .await
                .and_then(|s| if s == 200 { Ok(()) } else { Err(s.to_string()) })
        },
    )
    .await;
    const NEW: &str = "initech-token-0123456789abcdefg";
    std::fs::write(&keys, format!("initech:{NEW}\nglobex:{GLOBEX}\n")).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(node.child.id() as i32, libc::SIGHUP) };
    eventually(
        "the new key file to apply",
        Duration::from_secs(10),
        || async {
            match (status_with(NEW).await, status_with(ACME).await) {
                (Ok(200), Ok(401)) => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        },
    )
    .await;
    // A broken file is refused on SIGHUP and the keys stay as they were.
    std::fs::write(&keys, "broken line\n").unwrap();
    unsafe { libc::kill(node.child.id() as i32, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_with(NEW).await, Ok(200));
    assert_eq!(status_with(GLOBEX).await, Ok(200));
}

/// Starts three node processes with keys; waits until each sees all three.
async fn keyed_trio(dir: &TempDir) -> Vec<NodeProc> {
    let keys = key_file(dir.path());
    let env = vec![("VIDPRESS_API_KEYS".to_owned(), keys.display().to_string())];
    let spawn = |name: &str, seeds: Vec<u16>| {
        NodeProc::spawn_with(name, dir, 1, seeds, "tenants-cookie", env.clone())
    };
    let a = spawn("node-a", vec![]);
    let seed = a.cluster;
    let nodes = vec![a, spawn("node-b", vec![seed]), spawn("node-c", vec![seed])];
    for node in &nodes {
        let base = node.base();
        eventually(
            format!("{} to see 3 nodes up", node.name),
            Duration::from_secs(30),
            || async {
                let answer = reqwest::Client::new()
                    .get(format!("{base}/cluster"))
                    .bearer_auth(ADMIN)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let (status, view) = match answer {
                    Ok(r) => (r.status(), r.json::<Value>().await.unwrap_or(Value::Null)),
                    Err(e) => return Err(e.to_string()),
                };
                let up = view["nodes"]
                    .as_array()
                    .map_or(0, |n| n.iter().filter(|m| m["state"] == "up").count());
                if up == 3 {
                    Ok(())
                } else {
                    Err(format!("{status} {view}"))
                }
            },
        )
        .await;
    }
    nodes
}

#[tokio::test]
async fn across_the_cluster_a_tenant_sees_only_its_jobs_even_after_their_owner_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = keyed_trio(&dir).await;
    let bases: Vec<String> = nodes.iter().map(NodeProc::base).collect();
    let owner = As::new(&bases[0], Some(ACME));
    let id = owner.submit(&long_clip()).await;
    let small = owner.submit(&clip(1)).await;
    let theirs = As::new(&bases[1], Some(GLOBEX)).submit(&clip(1)).await;
    for base in &bases {
        for (method, path) in [
            (Method::GET, format!("/jobs/{id}")),
            (Method::GET, format!("/jobs/{id}/result")),
            (Method::DELETE, format!("/jobs/{id}")),
            (Method::GET, "/jobs".to_owned()),
        ] {
            refuses_without_a_valid_key(base, method, &path).await;
        }
        assert_eq!(As::new(base, None).subscribe(&id).await, 401);
        hidden_from(&As::new(base, Some(GLOBEX)), &id).await;
        hidden_from(&As::new(base, Some(ACME)), &theirs).await;
        let acme = As::new(base, Some(ACME));
        let (status, _) = acme.json(Method::GET, &format!("/jobs/{id}")).await;
        assert!(status == 200 || status == 202, "{base}: {status}");
        assert_eq!(acme.subscribe(&id).await, 101, "{base}");
        let listed = acme.listed().await;
        assert!(
            listed.contains(&id) && !listed.contains(&theirs),
            "{base}: {listed:?}"
        );
    }
    let done = As::new(&bases[1], Some(ACME))
        .wait_for_end(&small, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "completed");

    // The owner dies: its standby answers for its jobs, to their tenant only.
    nodes[0].kill();
    for base in &bases[1..] {
        let acme = As::new(base, Some(ACME));
        let done = acme.wait_for_end(&id, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "completed", "{base}: {done}");
        let result = acme
            .send(Method::GET, &format!("/jobs/{small}/result"), None)
            .await;
        assert_eq!(result.status(), StatusCode::OK, "{base}");
        for job in [&id, &small] {
            hidden_from(&As::new(base, Some(GLOBEX)), job).await;
            refuses_without_a_valid_key(base, Method::GET, &format!("/jobs/{job}")).await;
        }
    }
}
