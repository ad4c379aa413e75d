//! TLS: a node serving its API over HTTPS and WebSockets over wss, a plain
//! HTTP client getting no answer there, a cluster on mutual TLS whose nodes
//! move bytes and forward requests over HTTPS, and a node with a
//! certificate from another CA kept out. Certificates are made here with
//! rcgen: a CA, and a certificate per node naming 127.0.0.1 and localhost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::NodeProc;
use crate::support::{clip, eventually, Served, TestNode};

/// A certificate authority, its certificate written to `<dir>/<name>.pem`.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    dir: PathBuf,
    pub pem: PathBuf,
}

/// A certificate and its key, as PEM files.
pub(crate) struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// Makes a CA named `name`, written under `dir`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Self {
            cert,
            key,
            dir: dir.to_owned(),
            pem,
        }
    }

    /// Issues `name` a certificate for 127.0.0.1 and localhost, good for
    /// a server and a client alike.
    pub(crate) fn issue(&self, name: &str) -> Issued {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// Starts a node serving its API over TLS, with a certificate from a new CA
/// under `dir`; returns the CA, the node and its `https://` base URL.
pub(crate) async fn https_node(dir: &Path) -> (Ca, Served, String) {
    let ca = Ca::new(dir, "ca");
    let issued = ca.issue("node-1");
    let node = TestNode::start_with(|c| {
        c.tls_cert = Some(issued.cert);
        c.tls_key = Some(issued.key);
    })
    .await
    .serve();
    let base = node.base.replacen("http://", "https://", 1);
    (ca, node, base)
}

/// Returns an HTTPS client that trusts only `ca`.
fn https_client(ca: &Path) -> reqwest::Client {
    let roots = vidpress::tls::client(Some(ca)).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(Arc::unwrap_or_clone(roots))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Returns the status and JSON body of `GET url` with `client`, if any.
async fn get_json(client: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Uploads `path` to `base` and returns the job ID.
async fn submit(client: &reqwest::Client, base: &str, path: &Path) -> String {
    let response = client
        .post(format!("{base}/jobs?preset=ultrafast"))
        .body(std::fs::read(path).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().to_owned()
}

/// Polls job `id` at `base` until it ends; returns the status code and document.
async fn wait_for_end(client: &reqwest::Client, base: &str, id: &str) -> (u16, Value) {
    let url = format!("{base}/jobs/{id}");
    eventually(
        format!("job {id} to end"),
        Duration::from_secs(60),
        || async {
            match get_json(client, &url).await {
                Some((status, doc)) if status != 202 && status != 503 => Ok((status, doc)),
                seen => Err(format!("{seen:?}")),
            }
        },
    )
    .await
}

/// Follows the events of job `id` over wss at `base` (`https://…`) until
/// the socket closes; returns the events' names and last status.
async fn events_over_wss(ca: &Path, base: &str, id: &str) -> (Vec<String>, String) {
    let url = format!(
        "{}/jobs/{id}/events",
        base.replacen("https://", "wss://", 1)
    );
    let connector = tokio_tungstenite::Connector::Rustls(vidpress::tls::client(Some(ca)).unwrap());
    let (mut socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(&url, None, false, Some(connector))
            .await
            .unwrap_or_else(|e| panic!("wss to {url}: {e}"));
    let (mut names, mut last) = (Vec::new(), String::new());
    let read = async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let event: Value = serde_json::from_str(&text).unwrap();
                names.push(event["event"].as_str().unwrap_or_default().to_owned());
                last = event["job"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the event stream ends with the job");
    (names, last)
}

#[tokio::test]
async fn a_node_serves_https_and_wss_and_no_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, node, base) = https_node(dir.path()).await;
    let client = https_client(&ca.pem);

    let id = submit(&client, &base, &clip(1)).await;
    let (names, last) = events_over_wss(&ca.pem, &base, &id).await;
    assert_eq!(names.first().map(String::as_str), Some("snapshot"));
    assert_eq!(last, "completed", "{names:?}");
    let (status, doc) = wait_for_end(&client, &base, &id).await;
    assert_eq!((status, doc["status"].as_str()), (200, Some("completed")));
    let result = client
        .get(format!("{base}/jobs/{id}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    assert!(!result.bytes().await.unwrap().is_empty());

    // A client that trusts another CA does not get through.
    let other = Ca::new(dir.path(), "other-ca");
    let refused = https_client(&other.pem)
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // Plain HTTP to the TLS port: the handshake fails, no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", node.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got {plain:?}");
    let addr = node.base.trim_start_matches("http://");
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer))
        .await
        .expect("the node closes the connection")
        .ok();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // And the node still serves TLS clients.
    let (status, _) = get_json(&client, &format!("{base}/healthz")).await.unwrap();
    assert_eq!(status, 200);
}

/// `VIDPRESS_*` settings of a node with `issued` for both its API and the
/// cluster protocol, trusting `ca` for its peers.
fn tls_env(issued: &Issued, ca: &Path, https: bool) -> Vec<(String, String)> {
    let path = |p: &Path| p.display().to_string();
    let mut env = vec![
        ("VIDPRESS_CLUSTER_TLS_CERT".to_owned(), path(&issued.cert)),
        ("VIDPRESS_CLUSTER_TLS_KEY".to_owned(), path(&issued.key)),
        ("VIDPRESS_CLUSTER_CA".to_owned(), path(ca)),
    ];
    if https {
        env.push(("VIDPRESS_TLS_CERT".to_owned(), path(&issued.cert)));
        env.push(("VIDPRESS_TLS_KEY".to_owned(), path(&issued.key)));
    }
    env
}

/// Starts node `name` with a certificate from `ca` for its API and the
/// cluster protocol, and the cookie every node of these tests shares.
fn spawn_tls(dir: &TempDir, ca: &Ca, name: &str, workers: u32, seeds: Vec<u16>) -> NodeProc {
    let env = tls_env(&ca.issue(name), &ca.pem, true);
    NodeProc::spawn_with(name, dir, workers, seeds, "tls-cookie", env)
}

/// Returns the names of the nodes `url` (`…/cluster`) lists up.
async fn nodes_up(client: &reqwest::Client, url: &str) -> Vec<String> {
    let Some((_, view)) = get_json(client, url).await else {
        return Vec::new();
    };
    let mut up: Vec<String> = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "up")
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    up.sort();
    up
}

/// Waits until `node` lists exactly `names` up, or panics after `limit`.
async fn wait_up(client: &reqwest::Client, node: &NodeProc, names: &[&str], limit: Duration) {
    let url = format!("{}/cluster", https_base(node));
    let awaited = format!("{} to see {names:?} up", node.name);
    eventually(awaited, limit, || async {
        let up = nodes_up(client, &url).await;
        if up == names {
            Ok(())
        } else {
            Err(format!("{up:?}\n{}", node.log()))
        }
    })
    .await
}

/// Returns the names of every node `url` (`…/cluster`) lists.
async fn nodes_listed(client: &reqwest::Client, url: &str) -> Vec<String> {
    let (_, view) = get_json(client, url).await.expect("a view");
    view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect()
}

fn https_base(node: &NodeProc) -> String {
    format!("https://127.0.0.1:{}", node.http)
}

#[tokio::test]
async fn a_cluster_on_mutual_tls_runs_and_forwards_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster-ca");
    let client = https_client(&ca.pem);
    let spawn =
        |name: &str, workers: u32, seeds: Vec<u16>| spawn_tls(&dir, &ca, name, workers, seeds);
    // The owner has no worker: the attempt runs elsewhere, and its input
    // and output cross over HTTPS, signed.
    let a = spawn("node-a", 0, vec![]);
    let b = spawn("node-b", 1, vec![a.cluster]);
    let c = spawn("node-c", 1, vec![a.cluster]);
    for node in [&a, &b, &c] {
        let everyone = ["node-a", "node-b", "node-c"];
        wait_up(&client, node, &everyone, Duration::from_secs(30)).await;
    }

    let id = submit(&client, &https_base(&a), &clip(1)).await;
    // Followed through c, which bridges the WebSocket to a over wss.
    let (names, last) = events_over_wss(&ca.pem, &https_base(&c), &id).await;
    assert_eq!(last, "completed", "{names:?}\n{}", c.log());
    // Polled through b, which forwards to a over HTTPS.
    let (status, doc) = wait_for_end(&client, &https_base(&b), &id).await;
    assert_eq!((status, doc["status"].as_str()), (200, Some("completed")));
    let ran_on = doc["node"].as_str().unwrap_or_default();
    assert!(ran_on == "node-b" || ran_on == "node-c", "{doc}");
    let result = client
        .get(format!("{}/jobs/{id}/result", https_base(&b)))
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    assert_eq!(
        result.bytes().await.unwrap().len() as u64,
        doc["result"]["bytes"].as_u64().unwrap()
    );
    for node in [&a, &b, &c] {
        let log = node.log();
        assert!(!log.contains("node-to-node request refused"), "{log}");
    }
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_never_joins() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster-ca");
    let client = https_client(&ca.pem);
    let spawn = |name: &str, seeds: Vec<u16>| spawn_tls(&dir, &ca, name, 0, seeds);
    let a = spawn("node-a", vec![]);
    let b = spawn("node-b", vec![a.cluster]);
    wait_up(&client, &a, &["node-a", "node-b"], Duration::from_secs(30)).await;

    // Same cookie, a certificate from another CA (which it trusts); its
    // API is plain HTTP, to ask it what it sees.
    let other = Ca::new(dir.path(), "other-ca");
    let env = tls_env(&other.issue("node-x"), &other.pem, false);
    let intruder = NodeProc::spawn_with(
        "node-x",
        &dir,
        0,
        vec![a.cluster, b.cluster],
        "tls-cookie",
        env,
    );
    intruder.wait_for_log("cluster peer refused").await;
    // Several failure timeouts (1.5 s each) of redials later, still apart.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in [&a, &b] {
        let listed = nodes_listed(&client, &format!("{}/cluster", https_base(node))).await;
        assert!(
            !listed.iter().any(|n| n == "node-x"),
            "{} admitted the intruder: {listed:?}",
            node.name
        );
    }
    let plain = reqwest::Client::new();
    let listed = nodes_listed(&plain, &format!("{}/cluster", intruder.base())).await;
    assert_eq!(listed, ["node-x"], "{}", intruder.log());
    let log = a.log();
    assert!(
        log.contains("secure socket"),
        "the seed did not log the refusal:\n{log}"
    );
}

#[tokio::test]
async fn a_silent_connection_to_the_cluster_port_keeps_no_node_out() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster-ca");
    let client = https_client(&ca.pem);
    let spawn = |name: &str, seeds: Vec<u16>| spawn_tls(&dir, &ca, name, 0, seeds);
    let a = spawn("node-a", vec![]);
    let url_a = format!("{}/cluster", https_base(&a));
    eventually("node-a to answer", Duration::from_secs(30), || async {
        get_json(&client, &url_a).await.ok_or("no answer")
    })
    .await;
    // Connected, and never a byte of a handshake: ractor_cluster 0.16.5 as
    // published would wait on it before accepting anyone else.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", a.cluster))
        .await
        .unwrap();
    let b = spawn("node-b", vec![a.cluster]);
    for node in [&a, &b] {
        wait_up(
            &client,
            node,
            &["node-a", "node-b"],
            Duration::from_secs(10),
        )
        .await;
    }
}
