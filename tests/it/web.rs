//! The web page at `/`, used in a real browser: Debian's chromium, headless,
//! driven over WebDriver by its chromedriver (both installed by
//! `scripts/deps.sh`). The page is loaded from a node on a loopback port and
//! used as a person would: pick files, watch the bars, cancel, download.
//!
//! Each test leaves a screenshot in `target/artifacts/web/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tower::ServiceExt;

use crate::support::{clip, eventually, ffprobe, long_clip, stream, TestNode};

/// How long chromedriver and chromium get to start.
const BROWSER_START: Duration = Duration::from_secs(30);

/// A headless chromium session, its driver and its download folder.
pub struct Browser {
    client: Client,
    _driver: Child,
    downloads: TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver, see scripts/deps.sh)");
        let downloads = tempfile::tempdir().expect("download dir");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    // Root in a container has no user namespace to sandbox with.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1280,900",
                ],
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        // The driver may not listen yet.
        let awaited = "a chromium session through chromedriver";
        let client = eventually(awaited, BROWSER_START, || async {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
        })
        .await;
        Self {
            client,
            _driver: driver,
            downloads,
        }
    }

    /// Loads the page of the node at `base` (`http://host:port`).
    pub async fn open(&self, base: &str) {
        self.client.goto(base).await.expect("the page loads");
        assert_eq!(self.client.title().await.expect("a title"), "vidpress");
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    /// Waits until `css` matches an element, or panics after `limit`.
    pub async fn wait_for(&self, css: &str, limit: Duration) -> Element {
        self.client
            .wait()
            .at_most(limit)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear within {limit:?}: {e}"))
    }

    /// Sets the encoding options of the next uploads.
    pub async fn choose(&self, crf: u8, preset: &str, max_height: &str) {
        let field = self.find("#crf").await;
        field.clear().await.expect("crf cleared");
        field.send_keys(&crf.to_string()).await.expect("crf typed");
        let select = |css, value| async move {
            self.find(css)
                .await
                .select_by_value(value)
                .await
                .unwrap_or_else(|e| panic!("{value} not offered in {css}: {e}"))
        };
        select("#preset", preset).await;
        select("#max-height", max_height).await;
    }

    /// Picks files in the page's file input, as the file dialog would.
    pub async fn pick(&self, files: &[&Path]) {
        let paths: Vec<_> = files.iter().map(|p| p.display().to_string()).collect();
        self.find("#files")
            .await
            .send_keys(&paths.join("\n"))
            .await
            .expect("files picked");
    }

    /// Waits until the job of `file` is accepted; returns its card.
    pub async fn card(&self, file: &Path) -> Element {
        let name = file.file_name().and_then(|n| n.to_str()).expect("a name");
        self.wait_for(&card_of(name), Duration::from_secs(30)).await
    }

    /// Picks one file and returns its card once its job is running.
    pub async fn run(&self, file: &Path) -> Element {
        self.pick(&[file]).await;
        let card = self.card(file).await;
        follow(&card, "running", Duration::from_secs(30)).await;
        card
    }

    /// Saves a screenshot of the page as `target/artifacts/web/{name}.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        // Let the bars' 0.2 s width transition finish first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../artifacts/web");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        let dir = dir.canonicalize().expect("artifact dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Waits for a finished download named `name`, or panics after `limit`.
    async fn downloaded(&self, name: &str, limit: Duration) -> PathBuf {
        let path = self.downloads.path().join(name);
        // Chromium writes `*.crdownload` and renames it when complete.
        eventually(format!("{name} downloaded"), limit, || {
            let folder = std::fs::read_dir(self.downloads.path())
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>());
            std::future::ready(if path.exists() {
                Ok(())
            } else {
                Err(format!("the download folder holds {folder:?}"))
            })
        })
        .await;
        path
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// The job card of `file`, once the node has accepted it.
fn card_of(file: &str) -> String {
    format!(".job[data-name='{file}'][data-id]")
}

/// The percentage the card's bar shows.
async fn bar_percent(card: &Element) -> u32 {
    let track = card
        .find(Locator::Css(".track"))
        .await
        .expect("a progress bar");
    track
        .attr("aria-valuenow")
        .await
        .expect("aria-valuenow")
        .and_then(|v| v.parse().ok())
        .expect("a percentage")
}

/// Waits until the card's status is `status`, or panics after `limit`;
/// returns every distinct bar percentage seen meanwhile, in order.
pub async fn follow(card: &Element, status: &str, limit: Duration) -> Vec<u32> {
    let seen = std::cell::RefCell::new(Vec::new());
    eventually(format!("the card to say {status}"), limit, || async {
        // The status first: the page renders a document's status and bar at
        // once, so a bar read after the status is at least as new.
        let now = card.attr("data-status").await.expect("data-status");
        let percent = bar_percent(card).await;
        let mut seen = seen.borrow_mut();
        if seen.last() != Some(&percent) {
            seen.push(percent);
        }
        if now.as_deref() == Some(status) {
            Ok(())
        } else {
            Err(format!("card {now:?}, bar seen at {seen:?}"))
        }
    })
    .await;
    seen.into_inner()
}

#[tokio::test]
async fn the_page_is_one_self_contained_html_document() {
    let node = TestNode::start().await;
    let response = node
        .server
        .router()
        .oneshot(
            axum::http::Request::get("/")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let page = std::str::from_utf8(&body).expect("utf-8");
    assert!(page.starts_with("<!doctype html>"));
    // Works offline: nothing is loaded from another origin.
    for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn videos_picked_in_the_page_are_compressed_and_downloaded() {
    let node = TestNode::start().await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    // The cluster panel shows this node, up.
    let row = browser
        .wait_for(
            "#cluster tbody tr[data-state='up']",
            Duration::from_secs(10),
        )
        .await;
    assert!(row.text().await.expect("row text").contains("node-"));

    browser.choose(30, "ultrafast", "360").await;
    let short = clip(3);
    let longer = clip(6);
    browser.pick(&[&short, &longer]).await;

    let mut ids = Vec::new();
    for file in [&short, &longer] {
        let card = browser.card(file).await;
        let seen = follow(&card, "completed", Duration::from_secs(60)).await;
        assert_eq!(seen.last(), Some(&100), "the bar ends full: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1] || w[1] == 0),
            "the bar only moves forward, apart from the switch from upload to encode: {seen:?}"
        );
        let percent = card.find(Locator::Css(".percent")).await.expect("percent");
        assert_eq!(percent.text().await.expect("text"), "100 %");
        ids.push(card.attr("data-id").await.expect("id").expect("an id"));
    }
    let shot = browser.screenshot("completed").await;
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 10_000);

    // The page's jobs are the node's jobs, with the options chosen.
    for id in &ids {
        let doc: Value = reqwest::get(format!("{}/jobs/{id}", node.base))
            .await
            .expect("poll")
            .json()
            .await
            .expect("json");
        assert_eq!(doc["status"], "completed");
        assert_eq!(doc["options"]["crf"], 30);
        assert_eq!(doc["options"]["preset"], "ultrafast");
        assert_eq!(doc["options"]["max_height"], 360);
    }

    // Download the first through its link, and check the file.
    let card = browser.card(&short).await;
    let link = card
        .find(Locator::Css("a.download"))
        .await
        .expect("a download link");
    assert!(link.is_displayed().await.expect("displayed"));
    link.click().await.expect("download clicked");
    let file = browser
        .downloaded(&format!("{}.mp4", ids[0]), Duration::from_secs(20))
        .await;
    let expected = reqwest::get(format!("{}/jobs/{}/result", node.base, ids[0]))
        .await
        .expect("result")
        .bytes()
        .await
        .expect("result bytes");
    let got = std::fs::read(&file).expect("downloaded file");
    assert!(got == expected, "the download is the job's result");
    let probe = ffprobe(&file);
    let video = stream(&probe, "video").expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["height"], 240, "max height 360 keeps 240p as it is");
    assert!(stream(&probe, "audio").is_some(), "audio kept");

    // A file dropped on the drop zone is uploaded too. WebDriver cannot drag
    // from the desktop, so the page gets the drop event a desktop drag
    // makes, carrying a file (the clip, fetched back from the node's result).
    let dropped = browser
        .client
        .execute_async(
            r##"const [url, done] = arguments;
            fetch(url).then((r) => r.blob()).then((blob) => {
              const files = new DataTransfer();
              files.items.add(new File([blob], "dropped.mp4", {type: "video/mp4"}));
              const zone = document.querySelector("#drop");
              zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: files, cancelable: true}));
              zone.dispatchEvent(new DragEvent("drop", {dataTransfer: files, cancelable: true}));
              done(files.files.length);
            }, (e) => done(String(e)));"##,
            vec![json!(format!("/jobs/{}/result", ids[0]))],
        )
        .await
        .expect("the drop script runs");
    assert_eq!(dropped, json!(1));
    let card = browser.card(Path::new("dropped.mp4")).await;
    let seen = follow(&card, "completed", Duration::from_secs(60)).await;
    assert_eq!(seen.last(), Some(&100), "the bar ends full: {seen:?}");

    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_video_shows_why() {
    let node = TestNode::start().await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "shopping list: eggs, milk\n".repeat(200)).expect("text file");
    browser.pick(&[&notes]).await;
    let card = browser
        .wait_for(
            ".job[data-name='notes.txt'][data-status='failed']",
            Duration::from_secs(30),
        )
        .await;
    let error = card.find(Locator::Css(".error")).await.expect("an error");
    assert!(error.is_displayed().await.expect("displayed"));
    let message = error.text().await.expect("text");
    assert!(
        message.ends_with("(unsupported_media_type)") || message.ends_with("(invalid_media)"),
        "the card says why: {message:?}"
    );
    let download = card.find(Locator::Css("a.download")).await.expect("link");
    assert!(!download.is_displayed().await.expect("displayed"));
    browser.screenshot("not-a-video").await;
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_canceled_from_the_page() {
    let node = TestNode::start().await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    let input = long_clip();
    let card = browser.run(&input).await;
    let id = card.attr("data-id").await.expect("id").expect("an id");
    // The running job shows in the cluster panel.
    browser
        .wait_for(
            &format!("#running li[data-id='{id}']"),
            Duration::from_secs(10),
        )
        .await;
    let cancel = card
        .find(Locator::Css("button.cancel"))
        .await
        .expect("cancel");
    cancel.click().await.expect("cancel clicked");
    follow(&card, "canceled", Duration::from_secs(10)).await;
    assert!(!cancel.is_displayed().await.expect("displayed"));
    browser.screenshot("canceled").await;

    let (status, doc) = node.wait_for_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!((status, doc["status"].as_str()), (400, Some("canceled")));
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_follows_a_job_through_a_node_restart() {
    let data = tempfile::tempdir().expect("data dir");
    // No drain: the stop interrupts the running attempt, as a crash would.
    let node = TestNode::start_at(data.path(), |config| config.drain_timeout = 0)
        .await
        .serve();
    let address = node.base.trim_start_matches("http://").to_owned();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.choose(30, "ultrafast", "360").await;
    let input = long_clip();
    let card = browser.run(&input).await;
    // Progress and an ETA arrive over the WebSocket before the node goes away.
    let eta = card.find(Locator::Css(".eta")).await.expect("an ETA");
    eventually(
        "progress and an ETA shown",
        Duration::from_secs(30),
        || async {
            let percent = bar_percent(&card).await;
            let eta = eta.text().await.expect("text");
            if percent > 0 && eta.starts_with("ETA ") {
                Ok(())
            } else {
                Err(format!("bar at {percent}, {eta:?}"))
            }
        },
    )
    .await;
    browser.screenshot("running").await;

    node.stop().await;
    let link = card.find(Locator::Css(".link")).await.expect("link state");
    let awaited = "the page to notice the node left";
    eventually(awaited, Duration::from_secs(10), || async {
        let text = link.text().await.expect("text");
        if text == "reconnecting…" {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    let node = TestNode::start_at(data.path(), |config| {
        config.http = address.parse().expect("the same address");
    })
    .await
    .serve();

    // The page reconnects by itself and sees the job through to the end.
    let seen = follow(&card, "completed", Duration::from_secs(120)).await;
    assert_eq!(seen.last(), Some(&100), "the bar ends full: {seen:?}");
    assert_eq!(link.text().await.expect("text"), "");
    let id = card.attr("data-id").await.expect("id").expect("an id");
    let (status, doc) = node.wait_for_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["attempt"], 2,
        "the restart interrupted the first attempt"
    );
    browser.screenshot("after-restart").await;
    browser.close().await;
    node.stop().await;
}
