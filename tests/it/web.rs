//! The web page at `/`, used in a real browser: Debian's chromium, headless,
//! driven over WebDriver by its chromedriver (both installed by
//! `scripts/deps.sh`). The page is loaded from a node on a loopback port and
//! used as a person would: pick files, watch the bars, cancel, download.
//! On a node with API keys the page asks for one, and shows a tenant its
//! own jobs only. A job split into segments (issue 16) has its segments
//! drawn on its bar, each in the colour of its node.
//!
//! Each test leaves a screenshot in `target/artifacts/web/`.

use std::collections::BTreeMap;
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
use vidpress::config::ServeConfig;

use crate::cluster::NodeProc;
use crate::support::{clip, eventually, ffprobe, long_clip, stream, Served, TestNode};

/// How long chromedriver and chromium get to start.
const BROWSER_START: Duration = Duration::from_secs(30);

/// How long a result gets to load and play in a card (a few seconds of
/// video, played in real time).
const PLAY_LIMIT: Duration = Duration::from_secs(60);

/// How long a short clip's job gets to complete, for the slowest codec
/// (SVT-AV1) on a busy machine.
const ENCODE_LIMIT: Duration = Duration::from_secs(180);

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
                    // The results played in the cards start without a
                    // person's gesture (WebDriver's clicks may not count).
                    "--autoplay-policy=no-user-gesture-required",
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
        self.select("#preset", preset).await;
        self.select("#max-height", max_height).await;
    }

    /// Chooses `value` in the select `css`, as a person would.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("{value} not offered in {css}: {e}"));
    }

    /// Chooses the codec, then the container, of the next uploads.
    pub async fn choose_codec(&self, codec: &str, format: &str) {
        self.select("#codec", codec).await;
        self.select("#format", format).await;
        assert_eq!(self.value("#format").await, format, "{codec}/{format}");
    }

    /// Aims the next uploads at a whole file of `megabytes` MB.
    pub async fn aim_at_size(&self, megabytes: &str) {
        self.find("#rate-size")
            .await
            .click()
            .await
            .expect("size mode");
        let field = self.find("#target-mb").await;
        field.clear().await.expect("size cleared");
        field.send_keys(megabytes).await.expect("size typed");
    }

    /// Aims the next uploads at an SSIM of at least `ssim`, moving the
    /// slider as a drag would (WebDriver cannot type in a range input).
    pub async fn aim_at_ssim(&self, ssim: &str) {
        self.find("#rate-quality")
            .await
            .click()
            .await
            .expect("quality mode");
        self.client
            .execute(
                r##"const slider = document.querySelector("#min-ssim");
                slider.value = arguments[0];
                slider.dispatchEvent(new Event("input", {bubbles: true}));
                slider.dispatchEvent(new Event("change", {bubbles: true}));"##,
                vec![json!(ssim)],
            )
            .await
            .expect("the slider moves");
    }

    /// The current value of the form field `css`.
    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("a value")
            .unwrap_or_default()
    }

    /// Asks the page's browser whether it can play `mime` (`canPlayType`).
    pub async fn can_play(&self, mime: &str) -> String {
        let answer = self
            .client
            .execute(
                "return document.createElement('video').canPlayType(arguments[0]);",
                vec![json!(mime)],
            )
            .await
            .expect("canPlayType answers");
        answer.as_str().expect("a string").to_owned()
    }

    /// Clicks the card's Play button and waits until its video ends or
    /// fails; returns what the `<video>` element says then: `playback`
    /// (the card's `ended` or `error`), `error` (a MediaError code or
    /// null), `frames` (decoded, from getVideoPlaybackQuality), `time`,
    /// `duration`, `width` and `height`.
    pub async fn play(&self, card: &Element) -> Value {
        let button = card
            .find(Locator::Css("button.play"))
            .await
            .expect("a play button");
        assert!(button.is_displayed().await.expect("displayed"));
        button.click().await.expect("play clicked");
        eventually("the video to end or fail", PLAY_LIMIT, || async {
            let now = card.attr("data-playback").await.expect("data-playback");
            match now.as_deref() {
                Some("ended" | "error") => Ok(()),
                _ => Err(format!("{now:?}")),
            }
        })
        .await;
        let id = card.attr("data-id").await.expect("id").expect("an id");
        self.client
            .execute(
                r#"const card = document.querySelector(`.job[data-id="${arguments[0]}"]`);
                const video = card.querySelector("video.preview");
                const quality = video.getVideoPlaybackQuality();
                return {
                  playback: card.dataset.playback,
                  error: video.error ? video.error.code : null,
                  message: video.error ? video.error.message : null,
                  frames: quality.totalVideoFrames,
                  time: video.currentTime,
                  duration: video.duration,
                  width: video.videoWidth,
                  height: video.videoHeight,
                  src: video.currentSrc,
                };"#,
                vec![json!(id)],
            )
            .await
            .expect("the video answers")
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

    /// Picks `file`, which the node refuses; returns its card and the
    /// sentence the card shows.
    pub async fn refused(&self, file: &Path) -> (Element, String) {
        self.pick(&[file]).await;
        let name = file.file_name().and_then(|n| n.to_str()).expect("a name");
        let css = format!(".job[data-name='{name}'][data-status='failed']");
        let card = self.wait_for(&css, Duration::from_secs(30)).await;
        let error = card.find(Locator::Css(".error")).await.expect("an error");
        assert!(error.is_displayed().await.expect("displayed"));
        let message = error.text().await.expect("text");
        (card, message)
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

    /// Returns whether the element `css` is shown.
    async fn shown(&self, css: &str) -> bool {
        self.find(css)
            .await
            .is_displayed()
            .await
            .expect("displayed")
    }

    /// Types `token` in the page's key form and sends it.
    async fn enter_key(&self, token: &str) {
        let field = self
            .wait_for("#gate:not([hidden]) #api-key", Duration::from_secs(10))
            .await;
        field.clear().await.expect("key cleared");
        field.send_keys(token).await.expect("key typed");
        self.find("#key-form button[type='submit']")
            .await
            .click()
            .await
            .expect("key sent");
    }

    /// Signs in with `token`; returns once the page shows the node's
    /// answer to it (its jobs loaded).
    async fn sign_in(&self, token: &str) {
        self.enter_key(token).await;
        self.wait_for("#app:not([hidden])", Duration::from_secs(10))
            .await;
        assert!(!self.shown("#gate").await, "the key form is gone");
    }

    /// Signs out; returns once the key form is shown again.
    async fn sign_out(&self) {
        self.find("#sign-out")
            .await
            .click()
            .await
            .expect("sign out clicked");
        self.wait_for("#gate:not([hidden])", Duration::from_secs(10))
            .await;
    }

    /// The IDs of the job cards on the page, top first.
    async fn job_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for card in self
            .client
            .find_all(Locator::Css(".job[data-id]"))
            .await
            .expect("job cards")
        {
            ids.extend(card.attr("data-id").await.expect("data-id"));
        }
        ids
    }

    /// Records every WebSocket the page opens from now on (its URL, how
    /// many messages it got), for [`Browser::sockets`].
    async fn spy_on_sockets(&self) {
        self.client
            .execute(
                r#"window.spied = [];
                window.WebSocket = new Proxy(window.WebSocket, {
                  construct(Real, args) {
                    const socket = new Real(...args);
                    const seen = {url: String(args[0]), socket, messages: 0};
                    socket.addEventListener("message", () => seen.messages++);
                    window.spied.push(seen);
                    return socket;
                  },
                });"#,
                vec![],
            )
            .await
            .expect("the spy is installed");
    }

    /// The WebSockets the page opened since [`Browser::spy_on_sockets`]:
    /// `{url, messages, open}` each, in order.
    async fn sockets(&self) -> Vec<Value> {
        let sockets = self
            .client
            .execute(
                "return window.spied.map((s) => ({url: s.url, messages: s.messages, \
                 open: s.socket.readyState === WebSocket.OPEN}));",
                vec![],
            )
            .await
            .expect("the spy answers");
        serde_json::from_value(sockets).expect("a list of sockets")
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

/// Clicks the card's cancel button; returns once the card says canceled
/// and the button is gone.
async fn cancel(card: &Element) {
    let button = card
        .find(Locator::Css("button.cancel"))
        .await
        .expect("cancel");
    button.click().await.expect("cancel clicked");
    follow(card, "canceled", Duration::from_secs(10)).await;
    assert!(!button.is_displayed().await.expect("displayed"));
}

/// Tenant acme's key.
const ACME: &str = "acme-key-0123456789abcdefghij";
/// Tenant globex's key.
const GLOBEX: &str = "globex-key-0123456789abcdefgh";
/// An admin's key (tenant ops).
const ADMIN: &str = "ops-key-0123456789abcdefghijkl";
/// Long enough to be a key, but not one of the node's.
const WRONG: &str = "acme-key-0123456789abcdefghiX";

/// Options that keep a long clip encoding for minutes.
const SLOW: &str = "?preset=veryslow";

/// Starts a node with `--api-keys` (acme, globex, and ops as admin) after
/// `tweak`, and serves it; the folder holds the key file.
async fn keyed_node(tweak: impl FnOnce(&mut ServeConfig)) -> (Served, TempDir) {
    let dir = tempfile::tempdir().expect("key dir");
    let path = dir.path().join("keys");
    let keys = format!("# the page's tenants\nacme:{ACME}\nglobex:{GLOBEX}\nops:{ADMIN}:admin\n");
    std::fs::write(&path, keys).expect("key file");
    let node = TestNode::start_with(|config| {
        config.api_keys = Some(path);
        tweak(config);
    })
    .await
    .serve();
    (node, dir)
}

/// Calls `GET {base}{path}` with `token`; returns the status and the body.
async fn get_as(base: &str, path: &str, token: &str) -> (u16, bytes::Bytes) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("a body"))
}

/// Submits `file` with `query` as the holder of `token`; returns the job's ID.
async fn submit_as(node: &Served, token: &str, file: &Path, query: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/jobs{query}", node.base))
        .bearer_auth(token)
        .body(std::fs::read(file).expect("read fixture"))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202, "the job is accepted");
    let doc: Value = response.json().await.expect("a status document");
    doc["id"].as_str().expect("an id").to_owned()
}

/// Polls job `id` as the holder of `token` until it ends; returns the
/// status code and document.
async fn wait_for_end_as(node: &Served, token: &str, id: &str, limit: Duration) -> (u16, Value) {
    eventually(format!("job {id} to end"), limit, || async {
        let (status, body) = get_as(&node.base, &format!("/jobs/{id}"), token).await;
        let doc: Value = serde_json::from_slice(&body).expect("json");
        match status {
            202 | 503 => Err(format!("{status} {doc}")),
            _ => Ok((status, doc)),
        }
    })
    .await
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
    // An open node is never asked for a key.
    assert!(!browser.shown("#gate").await, "no key form");
    assert!(!browser.shown("#sign-out").await, "no key to forget");

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
    let (card, message) = browser.refused(&notes).await;
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
    cancel(&card).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_keys_asks_the_page_for_one_and_takes_it_everywhere() {
    let (node, _keys) = keyed_node(|_| {}).await;
    let browser = Browser::start().await;
    browser.open(&node.base).await;

    // The node answers the page's first call with 401: the page asks for
    // a key, shows nothing else, and has nothing to complain of yet.
    browser
        .wait_for("#gate:not([hidden]) #key-form", Duration::from_secs(10))
        .await;
    assert!(!browser.shown("#app").await, "nothing but the key form");
    assert!(
        !browser.shown("#key-error").await,
        "no key given, none wrong"
    );
    let field = browser.find("#api-key").await;
    assert_eq!(
        field.attr("type").await.expect("type"),
        Some("password".into())
    );
    let label = browser.find("label[for='api-key']").await;
    assert_eq!(label.text().await.expect("label"), "API key");

    // A wrong key is said to be one, and the key is asked for again.
    browser.enter_key(WRONG).await;
    let error = browser
        .wait_for("#key-error:not([hidden])", Duration::from_secs(10))
        .await;
    assert_eq!(error.text().await.expect("text"), "this key is not valid");
    assert_eq!(
        error.attr("role").await.expect("role"),
        Some("alert".into())
    );
    assert!(browser.shown("#api-key").await, "the key form again");
    assert_eq!(
        field.prop("value").await.expect("value"),
        Some(String::new())
    );
    browser.screenshot("key-not-valid").await;
    // So is one that no header can carry (fetch would refuse it).
    browser
        .client
        .execute(
            "document.querySelector('#key-error').hidden = true;",
            vec![],
        )
        .await
        .expect("message hidden");
    browser.enter_key("ключ-0123456789abcdefghijklmnop").await;
    let error = browser
        .wait_for("#key-error:not([hidden])", Duration::from_secs(10))
        .await;
    assert_eq!(error.text().await.expect("text"), "this key is not valid");

    // The right key: the page, and every call with the key. A tenant's key
    // does not see the cluster, which the panel says once, quietly.
    browser.spy_on_sockets().await;
    browser.sign_in(ACME).await;
    let admin_only = browser
        .wait_for("#cluster-admin:not([hidden])", Duration::from_secs(10))
        .await;
    assert_eq!(
        admin_only.text().await.expect("text"),
        "the cluster view needs an admin key"
    );
    assert!(!browser.shown("#cluster").await, "no empty table");
    assert!(!browser.shown("#cluster-notice").await, "no error");
    assert!(browser.shown("#sign-out").await, "the key can be forgotten");

    browser.choose(30, "ultrafast", "360").await;
    let short = clip(3);
    browser.pick(&[&short]).await;
    let card = browser.card(&short).await;
    let seen = follow(&card, "completed", Duration::from_secs(60)).await;
    assert_eq!(seen.last(), Some(&100), "the bar ends full: {seen:?}");
    let id = card.attr("data-id").await.expect("id").expect("an id");
    // Followed over one WebSocket, which carried the key.
    let sockets = browser.sockets().await;
    assert_eq!(sockets.len(), 1, "one socket: {sockets:?}");
    let url = sockets[0]["url"].as_str().expect("a URL");
    assert!(
        url.ends_with(&format!("/jobs/{id}/events?access_token={ACME}")),
        "{url}"
    );
    assert!(sockets[0]["messages"].as_u64() > Some(1), "{sockets:?}");
    let (status, _) = get_as(&node.base, &format!("/jobs/{id}"), ACME).await;
    assert_eq!(status, 200, "the page's upload is acme's job");
    browser.screenshot("key-completed").await;

    // The download link fetches the result with the key.
    let link = card
        .find(Locator::Css("a.download"))
        .await
        .expect("a download link");
    link.click().await.expect("download clicked");
    let file = browser
        .downloaded(&format!("{id}.mp4"), Duration::from_secs(20))
        .await;
    let (status, expected) = get_as(&node.base, &format!("/jobs/{id}/result"), ACME).await;
    assert_eq!(status, 200);
    let got = std::fs::read(&file).expect("downloaded file");
    assert!(got == expected, "the download is the job's result");
    assert_eq!(link.text().await.expect("text"), "Download");

    // The key is kept: a reload shows the job without asking.
    browser.open(&node.base).await;
    browser
        .wait_for(
            &format!(".job[data-id='{id}'][data-status='completed']"),
            Duration::from_secs(10),
        )
        .await;
    assert!(!browser.shown("#gate").await, "not asked again");

    // Signing out forgets the key and the jobs, and asks for a key.
    browser.sign_out().await;
    assert!(!browser.shown("#key-error").await, "nothing was wrong");
    assert_eq!(browser.job_ids().await, Vec::<String>::new());
    let kept = browser
        .client
        .execute("return localStorage.length;", vec![])
        .await
        .expect("storage");
    assert_eq!(kept, json!(0), "the key is forgotten");
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_a_tenant_its_own_jobs_only() {
    let (node, _keys) = keyed_node(|config| config.tenant_max_active = 1).await;
    let short = clip(3);
    let fast = "?preset=ultrafast";
    let acme_done = submit_as(&node, ACME, &short, fast).await;
    let globex_done = submit_as(&node, GLOBEX, &short, fast).await;
    for (token, id) in [(ACME, &acme_done), (GLOBEX, &globex_done)] {
        let (status, _) = wait_for_end_as(&node, token, id, Duration::from_secs(60)).await;
        assert_eq!(status, 200, "job {id} completed");
    }
    // Acme's one job at a time, slow enough to be running while the page
    // looks (it is canceled at the end).
    let acme_running = submit_as(&node, ACME, &long_clip(), SLOW).await;

    // Globex sees its job, and none of acme's (the list is loaded whole
    // before the page is shown).
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.sign_in(GLOBEX).await;
    assert_eq!(browser.job_ids().await, vec![globex_done.clone()]);
    browser.screenshot("tenant-globex").await;

    // Another key, other jobs: globex's are gone from the page.
    browser.sign_out().await;
    browser.sign_in(ACME).await;
    assert_eq!(
        browser.job_ids().await,
        vec![acme_running.clone(), acme_done.clone()],
        "acme's jobs, newest first"
    );

    // Over its limit of active jobs, acme's upload shows the node's 429.
    let (_, message) = browser.refused(&short).await;
    assert!(
        message.contains("queued or running") && message.ends_with("(too_many_active_jobs)"),
        "the card says why: {message:?}"
    );
    assert!(!browser.shown("#key-error").await, "the key is fine");
    browser.screenshot("tenant-busy").await;

    // An admin sees every job and the cluster.
    browser.sign_out().await;
    browser.sign_in(ADMIN).await;
    let mut ids = browser.job_ids().await;
    ids.sort();
    let mut all = vec![acme_done, globex_done, acme_running.clone()];
    all.sort();
    assert_eq!(ids, all);
    browser
        .wait_for(
            "#cluster tbody tr[data-state='up']",
            Duration::from_secs(10),
        )
        .await;
    assert!(!browser.shown("#cluster-admin").await);
    browser.screenshot("tenant-admin").await;

    let response = reqwest::Client::new()
        .delete(format!("{}/jobs/{acme_running}", node.base))
        .bearer_auth(ACME)
        .send()
        .await
        .expect("cancel");
    assert!(response.status().is_success(), "{}", response.status());
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_with_a_key_resumes_its_websocket_and_cancels_with_it() {
    let (node, _keys) = keyed_node(|_| {}).await;
    let id = submit_as(&node, ACME, &long_clip(), SLOW).await;
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.spy_on_sockets().await;
    browser.sign_in(ACME).await;
    let card = browser
        .wait_for(&format!(".job[data-id='{id}']"), Duration::from_secs(10))
        .await;
    follow(&card, "running", Duration::from_secs(30)).await;

    // The stream drops after its first events; the page opens another,
    // after the last event it saw, with the key again.
    let awaited = "the page's socket to get events";
    eventually(awaited, Duration::from_secs(10), || async {
        let sockets = browser.sockets().await;
        match sockets.first() {
            Some(socket) if socket["messages"].as_u64() > Some(0) => Ok(()),
            _ => Err(format!("{sockets:?}")),
        }
    })
    .await;
    browser
        .client
        .execute("window.spied[0].socket.close();", vec![])
        .await
        .expect("socket closed");
    let awaited = "a second socket to open and get events";
    let sockets = eventually(awaited, Duration::from_secs(10), || async {
        let sockets = browser.sockets().await;
        match sockets.get(1) {
            Some(socket) if socket["open"] == true && socket["messages"].as_u64() > Some(0) => {
                Ok(sockets)
            }
            _ => Err(format!("{sockets:?}")),
        }
    })
    .await;
    let first = sockets[0]["url"].as_str().expect("a URL");
    assert!(
        first.ends_with(&format!("/events?access_token={ACME}")),
        "{first}"
    );
    let again = sockets[1]["url"].as_str().expect("a URL");
    let query = again.split_once('?').expect("a query").1;
    let query: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("a query");
    let names: Vec<_> = query.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["since", "access_token"], "{again}");
    assert!(query[0].1.parse::<u64>().is_ok(), "{again}");
    assert_eq!(query[1].1, ACME);

    // Cancel sends the key too.
    cancel(&card).await;
    browser.screenshot("key-canceled").await;
    let (status, doc) = wait_for_end_as(&node, ACME, &id, Duration::from_secs(5)).await;
    assert_eq!((status, doc["status"].as_str()), (400, Some("canceled")));
    browser.close().await;
    node.stop().await;
}

/// Returns a copy of `source` named `name` in `dir`: the cards are found
/// by file name.
fn named_copy(dir: &TempDir, source: &Path, name: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::copy(source, &path).expect("fixture copied");
    path
}

/// Returns job `id`'s status document from the node at `base`.
async fn document(base: &str, id: &str) -> Value {
    let (status, doc) = crate::support::get_json(&format!("{base}/jobs/{id}"))
        .await
        .expect("the node answers");
    assert_eq!(status, 200, "{doc}");
    doc
}

/// The text of the element `css` in `card`.
async fn text_in(card: &Element, css: &str) -> String {
    card.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} in the card: {e}"))
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_form_offers_only_the_pairs_the_node_takes() {
    let node = TestNode::start().await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    let formats = |codec: &'static str| {
        let browser = &browser;
        async move {
            browser.select("#codec", codec).await;
            let offered = browser
                .client
                .execute(
                    "return [...document.querySelectorAll('#format option')]\
                     .filter((o) => !o.disabled).map((o) => o.value);",
                    vec![],
                )
                .await
                .expect("the formats");
            (
                offered,
                browser.value("#format").await,
                browser.find("#crf").await.attr("max").await.expect("max"),
                browser.value("#crf").await,
            )
        }
    };
    // Each codec's containers only, its default chosen, its CRF scale and
    // default (a CRF left at a default follows the codec).
    assert_eq!(
        formats("vp9").await,
        (
            json!(["webm"]),
            "webm".into(),
            Some("63".into()),
            "40".into()
        )
    );
    assert_eq!(
        formats("h265").await,
        (json!(["mp4"]), "mp4".into(), Some("51".into()), "30".into())
    );
    browser.select("#format", "mp4").await;
    assert_eq!(
        formats("av1").await,
        (
            json!(["mp4", "webm"]),
            "mp4".into(),
            Some("63".into()),
            "40".into()
        )
    );
    assert_eq!(
        browser.find("#crf").await.attr("min").await.expect("min"),
        Some("1".into()),
        "SVT-AV1's CRF starts at 1"
    );
    // AV1 keeps WebM when it is chosen; H.264 cannot have it.
    browser.select("#format", "webm").await;
    assert_eq!(browser.value("#format").await, "webm");
    assert_eq!(
        formats("h264").await,
        (json!(["mp4"]), "mp4".into(), Some("51".into()), "28".into())
    );
    // Only the chosen rate mode's field shows; the slider starts at 0.97.
    assert!(browser.shown("#crf").await);
    assert!(!browser.shown("#target-mb").await);
    assert!(!browser.shown("#min-ssim").await);
    browser.aim_at_size("25").await;
    assert!(!browser.shown("#crf").await);
    assert!(browser.shown("#target-mb").await);
    browser
        .find("#rate-quality")
        .await
        .click()
        .await
        .expect("quality mode");
    assert!(browser.shown("#min-ssim").await);
    assert!(!browser.shown("#target-mb").await);
    assert_eq!(browser.value("#min-ssim").await, "0.97");
    assert_eq!(
        browser
            .find("#min-ssim-value")
            .await
            .text()
            .await
            .expect("text"),
        "0.970"
    );
    browser.aim_at_ssim("0.985").await;
    assert_eq!(
        browser
            .find("#min-ssim-value")
            .await
            .text()
            .await
            .expect("text"),
        "0.985"
    );
    browser.screenshot("rate-modes").await;

    // A CRF out of the codec's range is said on the card, not uploaded.
    browser
        .find("#rate-crf")
        .await
        .click()
        .await
        .expect("crf mode");
    browser.select("#codec", "av1").await;
    let field = browser.find("#crf").await;
    field.clear().await.expect("crf cleared");
    field.send_keys("0").await.expect("crf typed");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = named_copy(&dir, &clip(1), "best.mp4");
    let (_, message) = browser.refused(&file).await;
    assert_eq!(
        message,
        "the CRF of av1 must be a whole number from 1 to 63"
    );
    let jobs = crate::support::get_json(&format!("{}/jobs", node.base))
        .await
        .expect("the list");
    assert_eq!(jobs.1["jobs"], json!([]), "nothing was uploaded");
    browser.close().await;
    node.stop().await;
}

/// Compresses a short clip to `codec`/`format` through the page's form,
/// then plays the result in its card to the end and checks that frames
/// were decoded; if the browser's `canPlayType(mime)` says it cannot play
/// the codec, checks that the card says so instead.
async fn a_result_plays_in_the_page(codec: &str, format: &str, mime: &str) {
    let node = TestNode::start().await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.choose_codec(codec, format).await;
    browser.select("#preset", "ultrafast").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = named_copy(&dir, &clip(2), &format!("{codec}-{format}.mp4"));
    browser.pick(&[&file]).await;
    let card = browser.card(&file).await;
    follow(&card, "completed", ENCODE_LIMIT).await;
    let id = card.attr("data-id").await.expect("id").expect("an id");

    // The node got the pair the form chose, and made it.
    let doc = document(&node.base, &id).await;
    assert_eq!(doc["options"]["codec"], codec, "{doc}");
    assert_eq!(doc["options"]["format"], format, "{doc}");
    assert_eq!(doc["result"]["codec"], codec, "{doc}");
    assert_eq!(doc["result"]["content_type"], format!("video/{format}"));
    let duration = doc["result"]["duration_seconds"]
        .as_f64()
        .expect("a duration");

    let can_play = browser.can_play(mime).await;
    let played = browser.play(&card).await;
    browser
        .screenshot(&format!("played-{codec}-{format}"))
        .await;
    assert!(
        played["src"]
            .as_str()
            .is_some_and(|s| s.starts_with("blob:")),
        "{played}"
    );
    if can_play.is_empty() {
        // This browser says it cannot play the codec, so no frame may be
        // decoded and the card must say so. A browser may refuse the file
        // with MEDIA_ERR_SRC_NOT_SUPPORTED (4); Debian's Chromium 156 does
        // not: it drops the HEVC track it has no decoder for and plays the
        // AAC track to its end (`ended`, no error, videoWidth 0, no frame
        // decoded), so the page says only the sound plays.
        assert_eq!(played["frames"], 0, "{played}");
        assert_eq!(played["width"], 0, "{played}");
        let said = text_in(&card, ".link").await;
        if played["error"].is_null() {
            assert_eq!(played["playback"], "ended", "{played}");
            assert_eq!(
                card.attr("data-picture").await.expect("attr").as_deref(),
                Some("none")
            );
            assert!(
                said.contains("cannot show this video's picture (h265)"),
                "{said}"
            );
        } else {
            assert_eq!(played["playback"], "error", "{played}");
            assert_eq!(played["error"], 4, "MEDIA_ERR_SRC_NOT_SUPPORTED: {played}");
            assert!(said.contains("cannot play it"), "{said}");
        }
        eprintln!("{codec}/{format}: canPlayType({mime}) is \"\": {played}");
    } else {
        // Played: `ended` fired at the end, and frames were decoded.
        assert_eq!(played["playback"], "ended", "{played}");
        assert_eq!(played["error"], Value::Null, "{played}");
        let frames = played["frames"].as_u64().expect("frames");
        assert!(frames > 0, "no frame decoded: {played}");
        let time = played["time"].as_f64().expect("a time");
        let length = played["duration"].as_f64().expect("a duration");
        assert!((time - length).abs() < 0.1, "stopped short: {played}");
        assert!((length - duration).abs() < 0.2, "{played} vs {duration}");
        assert_eq!(
            (played["width"].as_u64(), played["height"].as_u64()),
            (Some(320), Some(240))
        );
    }
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h264_mp4_result_plays_in_the_page() {
    a_result_plays_in_the_page("h264", "mp4", r#"video/mp4; codecs="avc1.64001e""#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h265_mp4_result_plays_in_the_page_or_is_refused_as_unsupported() {
    a_result_plays_in_the_page("h265", "mp4", r#"video/mp4; codecs="hvc1.1.6.L93.B0""#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_av1_mp4_result_plays_in_the_page() {
    a_result_plays_in_the_page("av1", "mp4", r#"video/mp4; codecs="av01.0.04M.08""#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_av1_webm_result_plays_in_the_page() {
    a_result_plays_in_the_page("av1", "webm", r#"video/webm; codecs="av01.0.04M.08""#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vp9_webm_result_plays_in_the_page() {
    a_result_plays_in_the_page("vp9", "webm", r#"video/webm; codecs="vp09.00.10.08""#).await;
}

/// Checks the card of a completed job against its status document: the
/// sizes and their ratio, the SSIM, and the CRF (or the bit rate aimed at
/// for a size).
async fn assert_card_reports(card: &Element, doc: &Value) {
    let result = &doc["result"];
    let input = doc["input"]["bytes"].as_f64().expect("input bytes");
    let output = result["bytes"].as_f64().expect("output bytes");
    let sizes = text_in(card, ".sizes").await;
    let percent = (output / input * 100.0).round();
    assert!(sizes.contains(" → "), "{sizes}");
    assert!(sizes.ends_with(&format!("({percent} %)")), "{sizes}");
    let saving = text_in(card, ".saving").await;
    let ratio = input / output;
    let expected = if ratio >= 10.0 {
        format!("{ratio:.0}× smaller")
    } else {
        format!("{ratio:.1}× smaller")
    };
    assert_eq!(saving, expected, "the input is larger than the output");
    let quality = &result["quality"];
    let ssim = quality["ssim"].as_f64().expect("an SSIM");
    let sampled = if quality["sampled"] == true {
        " (sampled)"
    } else {
        ""
    };
    assert_eq!(
        text_in(card, ".ssim").await,
        format!("SSIM {ssim:.4}{sampled}")
    );
    let crf = text_in(card, ".crf").await;
    match result["crf"].as_u64() {
        Some(n) => assert_eq!(crf, format!("CRF {n}")),
        None => assert_eq!(
            crf,
            format!(
                "video {} kbit/s",
                result["video_bitrate_kbps"].as_u64().expect("a bit rate")
            )
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_size_and_a_look_aimed_at_in_the_form_reach_the_node_and_their_cards_report() {
    let node = TestNode::start().await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.select("#preset", "ultrafast").await;
    let dir = tempfile::tempdir().expect("temp dir");

    // A size, in MB: 0.3 MB is 300 000 bytes.
    browser.aim_at_size("0.3").await;
    let sized = named_copy(&dir, &clip(6), "sized.mp4");
    browser.pick(&[&sized]).await;
    let sized_card = browser.card(&sized).await;

    // A look: at least SSIM 0.95, the CRF searched.
    browser.aim_at_ssim("0.95").await;
    let looked = named_copy(&dir, &clip(2), "looked.mp4");
    browser.pick(&[&looked]).await;
    let looked_card = browser.card(&looked).await;

    follow(&sized_card, "completed", ENCODE_LIMIT).await;
    follow(&looked_card, "completed", ENCODE_LIMIT).await;
    browser.screenshot("size-and-look").await;

    let id = sized_card
        .attr("data-id")
        .await
        .expect("id")
        .expect("an id");
    let doc = document(&node.base, &id).await;
    let options = &doc["options"];
    assert_eq!(options["target_size_bytes"], 300_000, "{doc}");
    assert_eq!(options["crf"], Value::Null, "{doc}");
    assert_eq!(options["min_ssim"], Value::Null, "{doc}");
    assert_eq!(
        (options["codec"].as_str(), options["format"].as_str()),
        (Some("h264"), Some("mp4"))
    );
    assert_card_reports(&sized_card, &doc).await;

    let id = looked_card
        .attr("data-id")
        .await
        .expect("id")
        .expect("an id");
    let doc = document(&node.base, &id).await;
    let options = &doc["options"];
    assert_eq!(options["min_ssim"], 0.95, "{doc}");
    assert_eq!(options["crf"], Value::Null, "{doc}");
    assert_eq!(options["target_size_bytes"], Value::Null, "{doc}");
    assert!(doc["result"]["crf"].is_u64(), "a CRF was chosen: {doc}");
    assert_card_reports(&looked_card, &doc).await;

    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_card_shows_the_thumbnail_while_the_job_runs_fetched_with_the_key() {
    // With keys: an <img> could not send one, so the page fetches it.
    let (node, _keys) = keyed_node(|_| {}).await;
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.sign_in(ACME).await;
    browser.select("#preset", "veryslow").await;
    let input = long_clip();
    let card = browser.run(&input).await;
    let id = card.attr("data-id").await.expect("id").expect("an id");
    let thumb = eventually("the thumbnail to show", Duration::from_secs(30), || async {
        let seen = browser
            .client
            .execute(
                r#"const img = document.querySelector(`.job[data-id="${arguments[0]}"] img.thumb`);
                return {width: img.naturalWidth, height: img.naturalHeight,
                        complete: img.complete, hidden: img.hidden, src: img.src};"#,
                vec![json!(id)],
            )
            .await
            .expect("the image answers");
        if seen["width"].as_u64() > Some(0) && seen["hidden"] == false {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await;
    let (status, doc) = get_as(&node.base, &format!("/jobs/{id}"), ACME).await;
    assert_eq!(status, 202, "still running");
    let doc: Value = serde_json::from_slice(&doc).expect("json");
    assert_eq!(
        doc["status"], "running",
        "the thumbnail came during the encode"
    );
    // The node's picture of the 1280×720 input, at most 320 px wide.
    assert_eq!(
        (thumb["width"].as_u64(), thumb["height"].as_u64()),
        (Some(320), Some(180)),
        "{thumb}"
    );
    assert!(
        thumb["src"]
            .as_str()
            .is_some_and(|s| s.starts_with("blob:")),
        "{thumb}"
    );
    let shown = card
        .find(Locator::Css("img.thumb"))
        .await
        .expect("a thumbnail")
        .is_displayed()
        .await
        .expect("displayed");
    assert!(shown, "{thumb}");
    browser.screenshot("thumbnail").await;
    cancel(&card).await;
    browser.close().await;
    node.stop().await;
}

/// One segment's slice on a card's bar, as the page draws it.
#[derive(Debug, serde::Deserialize)]
struct Slice {
    index: String,
    state: String,
    node: String,
    title: String,
    /// Its width on screen, in pixels (its border included).
    width: f64,
    /// How far it is filled, in % of its width (the fill's own style; the
    /// drawn width glides there over 0.2 s).
    filled: f64,
    fill_colour: String,
    background: String,
}

/// One node in a card's legend: its name and its swatch's colour.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Swatch {
    node: String,
    colour: String,
}

/// What a card's progress bar shows.
#[derive(Debug, serde::Deserialize)]
struct Bar {
    role: Option<String>,
    /// The whole job's progress, in % (`aria-valuenow`).
    now: u32,
    text: Option<String>,
    /// Whether the plain bar is shown, and its width (in %).
    plain: bool,
    plain_width: String,
    track_width: f64,
    slices: Vec<Slice>,
    legend_shown: bool,
    count: Option<String>,
    legend: Vec<Swatch>,
}

/// The grey of a pending segment's slice.
const PENDING_GREY: &str = "rgb(221, 226, 234)";

/// The accent of the plain bar, which no node's slice may take.
const ACCENT: &str = "rgb(37, 99, 235)";

/// Returns the tint a running slice's rest takes of `colour`: a quarter of it.
fn tint(colour: &str) -> String {
    colour.replace("rgb(", "rgba(").replace(')', ", 0.25)")
}

/// Settings under which a node splits inputs longer than 4 s into segments
/// of about 2 s.
fn splitting(config: &mut ServeConfig) {
    config.segment_secs = 2;
    config.segment_min_secs = 4;
}

impl Browser {
    /// Reads the bar of job `id`'s card.
    async fn bar(&self, id: &str) -> Bar {
        let bar = self
            .client
            .execute(
                r#"const card = document.querySelector(`.job[data-id="${arguments[0]}"]`);
                const track = card.querySelector(".track");
                const bar = track.querySelector(".bar");
                const legend = card.querySelector(".legend");
                const shown = (e) => e.getClientRects().length > 0;
                const colour = (e) => getComputedStyle(e).backgroundColor;
                return {
                  role: track.getAttribute("role"),
                  now: Number(track.getAttribute("aria-valuenow")),
                  text: track.getAttribute("aria-valuetext"),
                  plain: shown(bar),
                  plain_width: bar.style.width,
                  track_width: track.getBoundingClientRect().width,
                  slices: [...track.querySelectorAll(".segment")].map((s) => {
                    const fill = s.querySelector(".fill");
                    return {
                      index: s.dataset.index, state: s.dataset.state, node: s.dataset.node,
                      title: s.title, width: s.getBoundingClientRect().width,
                      filled: parseFloat(fill.style.width), fill_colour: colour(fill),
                      background: colour(s),
                    };
                  }),
                  legend_shown: shown(legend),
                  count: legend.querySelector(".count")?.textContent ?? null,
                  legend: [...legend.querySelectorAll("li[data-node]")].map((li) => ({
                    node: li.dataset.node, colour: colour(li.querySelector(".swatch")),
                  })),
                };"#,
                vec![json!(id)],
            )
            .await
            .expect("the bar answers");
        serde_json::from_value(bar.clone()).unwrap_or_else(|e| panic!("{e}: {bar}"))
    }

    /// From now on, gives every status document the page receives over a
    /// WebSocket the `segments` of `window.segments` while that is set, as
    /// a node that splits jobs would send them.
    async fn give_documents_segments(&self) {
        self.client
            .execute(
                r#"window.segments = null;
                const Real = window.WebSocket;
                window.WebSocket = class extends Real {
                  set onmessage(handler) {
                    super.onmessage = (message) => {
                      const event = JSON.parse(message.data);
                      if (window.segments) event.job.segments = window.segments;
                      handler({data: JSON.stringify(event)});
                    };
                  }
                };"#,
                vec![],
            )
            .await
            .expect("the rewrite is installed");
    }

    /// Sets the segments [`Browser::give_documents_segments`] adds, and
    /// waits (up to 30 s) until job `id`'s card has drawn them, as told by
    /// `drawn`.
    async fn show_segments(&self, id: &str, segments: Value, drawn: impl Fn(&Bar) -> bool) -> Bar {
        self.client
            .execute("window.segments = arguments[0];", vec![segments.clone()])
            .await
            .expect("segments set");
        let awaited = format!("the card to draw {segments}");
        eventually(awaited, Duration::from_secs(30), || async {
            let bar = self.bar(id).await;
            if drawn(&bar) {
                Ok(bar)
            } else {
                Err(format!("{bar:?}"))
            }
        })
        .await
    }
}

/// A segment of the status document (issue 16's `segments`).
fn segment(
    index: u32,
    start: f64,
    end: f64,
    state: &str,
    node: Option<&str>,
    progress: f64,
) -> Value {
    json!({
        "index": index, "start_seconds": start, "end_seconds": end,
        "state": state, "node": node, "progress": progress,
    })
}

/// Checks that the slices are as wide as their segments' shares of
/// `durations` (in seconds) of a track `track_width` wide, within a pixel.
fn assert_proportional(bar: &Bar, durations: &[f64]) {
    let total: f64 = durations.iter().sum();
    assert_eq!(bar.slices.len(), durations.len(), "{bar:?}");
    for (slice, duration) in bar.slices.iter().zip(durations) {
        let expected = duration / total * bar.track_width;
        assert!(
            (slice.width - expected).abs() <= 1.0,
            "slice {} is {} px wide, not {expected} px: {bar:?}",
            slice.index,
            slice.width
        );
    }
}

/// Checks that a card shows the plain bar of a job that is not split: no
/// slice, no legend, the bar as wide as the job's progress.
fn assert_plain(bar: &Bar) {
    assert!(bar.plain, "the plain bar shows: {bar:?}");
    assert!(bar.slices.is_empty(), "no slices: {bar:?}");
    assert!(!bar.legend_shown, "no legend: {bar:?}");
    assert_eq!(bar.text, None, "{bar:?}");
    assert_eq!(bar.plain_width, format!("{}%", bar.now), "{bar:?}");
    assert_eq!(bar.role.as_deref(), Some("progressbar"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_segments_in_a_document_are_drawn_on_the_bar_in_their_nodes_colours() {
    // The page draws what the status documents say: here a real running
    // job's documents are given segments on their way to the page, in every
    // state and on three nodes, which one real node cannot show at will.
    let node = TestNode::start().await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.give_documents_segments().await;
    browser.select("#preset", "veryslow").await;
    let card = browser.run(&long_clip()).await;
    let id = card.attr("data-id").await.expect("id").expect("an id");
    let durations = [2.04, 1.96, 2.0, 2.0, 4.0];
    let segments = json!([
        segment(0, 0.0, 2.04, "done", Some("node-a"), 1.0),
        segment(1, 2.04, 4.0, "done", Some("node-b"), 1.0),
        segment(2, 4.0, 6.0, "running", Some("node-b"), 0.4),
        segment(3, 6.0, 8.0, "running", Some("node-c"), 0.1),
        segment(4, 8.0, 12.0, "pending", None, 0.0),
    ]);
    let bar = browser
        .show_segments(&id, segments, |bar| bar.slices.len() == 5)
        .await;
    browser.screenshot("segments-by-node").await;

    assert!(!bar.plain, "the plain bar gives way to the slices: {bar:?}");
    assert_proportional(&bar, &durations);
    let states: Vec<_> = bar.slices.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["done", "done", "running", "running", "pending"]);
    let filled: Vec<_> = bar.slices.iter().map(|s| s.filled).collect();
    assert_eq!(filled, [100.0, 100.0, 40.0, 10.0, 0.0]);
    // One colour per node, a different one for each.
    let colours: Vec<_> = bar.slices.iter().map(|s| s.fill_colour.as_str()).collect();
    let (a, b, c) = (colours[0], colours[1], colours[3]);
    assert_eq!(colours[2], b, "both of node-b's slices: {bar:?}");
    assert!(
        a != b && b != c && a != c,
        "three nodes, three colours: {bar:?}"
    );
    for colour in [a, b, c] {
        assert!(colour.starts_with("rgb("), "opaque: {colour}");
        assert_ne!(colour, PENDING_GREY);
    }
    // A running slice's rest is a tint of its node's colour; a pending one is grey.
    assert_eq!(bar.slices[2].background, tint(b), "{bar:?}");
    assert_eq!(bar.slices[3].background, tint(c), "{bar:?}");
    assert_eq!(bar.slices[4].background, PENDING_GREY, "{bar:?}");
    assert_eq!(bar.slices[4].node, "");
    // Pointing at a slice says which segment, where and how far.
    let titles: Vec<_> = bar.slices.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "segment 1 of 5, 0:00.0–0:02.0: done on node-a",
            "segment 2 of 5, 0:02.0–0:04.0: done on node-b",
            "segment 3 of 5, 0:04.0–0:06.0: running on node-b, 40 %",
            "segment 4 of 5, 0:06.0–0:08.0: running on node-c, 10 %",
            "segment 5 of 5, 0:08.0–0:12.0: pending",
        ]
    );
    // The legend names each node in its colour.
    assert!(bar.legend_shown);
    assert_eq!(bar.count.as_deref(), Some("2 of 5 segments done"));
    let swatch = |node: &str, colour: &str| Swatch {
        node: node.into(),
        colour: colour.into(),
    };
    assert_eq!(
        bar.legend,
        [
            swatch("node-a", a),
            swatch("node-b", b),
            swatch("node-c", c)
        ]
    );
    // The bar is still the whole job's progress bar.
    assert_eq!(bar.role.as_deref(), Some("progressbar"));
    assert_eq!(
        bar.text,
        Some(format!("{} %, 2 of 5 segments done", bar.now)),
        "{bar:?}"
    );
    assert_eq!(
        text_in(&card, ".where").await,
        "on node-b, node-c",
        "the nodes running its segments"
    );

    // Later: node-c is gone, its segment pending again; node-a runs the last.
    let segments = json!([
        segment(0, 0.0, 2.04, "done", Some("node-a"), 1.0),
        segment(1, 2.04, 4.0, "done", Some("node-b"), 1.0),
        segment(2, 4.0, 6.0, "done", Some("node-b"), 1.0),
        segment(3, 6.0, 8.0, "pending", None, 0.0),
        segment(4, 8.0, 12.0, "running", Some("node-a"), 0.5),
    ]);
    let bar = browser
        .show_segments(&id, segments, |bar| {
            bar.slices.get(4).is_some_and(|s| s.state == "running")
        })
        .await;
    let colours: Vec<_> = bar.slices.iter().map(|s| s.fill_colour.as_str()).collect();
    assert_eq!(colours[..3], [a, b, b], "a node keeps its colour: {bar:?}");
    assert_eq!(colours[4], a, "{bar:?}");
    assert_eq!(bar.slices[4].background, tint(a), "{bar:?}");
    assert_eq!(bar.slices[3].background, PENDING_GREY, "{bar:?}");
    assert_eq!(bar.slices[3].filled, 0.0, "{bar:?}");
    assert_eq!(bar.count.as_deref(), Some("3 of 5 segments done"));
    assert_eq!(bar.legend, [swatch("node-a", a), swatch("node-b", b)]);
    assert_eq!(text_in(&card, ".where").await, "on node-a");

    // A document without segments brings the plain bar back.
    let bar = browser
        .show_segments(&id, json!([]), |bar| bar.slices.is_empty())
        .await;
    assert_plain(&bar);
    cancel(&card).await;
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_is_not_split_keeps_the_plain_bar() {
    // A node that splits videos longer than 4 s, and a 3 s one.
    let node = TestNode::start_with(splitting).await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.select("#preset", "slow").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = named_copy(&dir, &clip(3), "whole.mp4");
    browser.pick(&[&file]).await;
    let card = browser.card(&file).await;
    let id = card.attr("data-id").await.expect("id").expect("an id");
    // Every look at the card, from its acceptance to its end, shows the
    // plain bar.
    let mut looks = 0;
    eventually("the card to say completed", ENCODE_LIMIT, || {
        looks += 1;
        let (browser, card, id) = (&browser, &card, &id);
        async move {
            let status = card.attr("data-status").await.expect("data-status");
            assert_plain(&browser.bar(id).await);
            if status.as_deref() == Some("completed") {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await;
    let bar = browser.bar(&id).await;
    assert_eq!(bar.now, 100, "{bar:?}");
    let doc = document(&node.base, &id).await;
    assert_eq!(
        doc.get("segments").unwrap_or(&json!([])),
        &json!([]),
        "{doc}"
    );
    eprintln!("the plain bar in all of {looks} looks");
    browser.screenshot("not-split").await;
    browser.close().await;
    node.stop().await;
}

/// What the page showed of a split job's bar, look after look, until the
/// job completed.
struct Watched {
    /// The one colour of each node's slices.
    colours: BTreeMap<String, String>,
    /// How many slices the looks that showed slices had (all the same).
    slices: usize,
    /// Whether a look showed done slices beside unfinished ones.
    mixed: bool,
    /// The fullest a running slice was seen, in %.
    running_fill: f64,
    looks: usize,
}

/// Checks one look at a split job's bar: slices or the plain bar, never
/// both; a pending slice grey and empty, unowned; a running or done slice
/// filled in its node's colour (`colours` keeps the first seen for each
/// node, and every later slice of that node must have it), a running one's
/// rest tinted with it, a done one full; the legend in the same colours.
fn check_look(bar: &Bar, colours: &mut BTreeMap<String, String>) {
    assert_eq!(
        bar.plain,
        bar.slices.is_empty(),
        "slices or the plain bar: {bar:?}"
    );
    assert_eq!(bar.role.as_deref(), Some("progressbar"));
    for slice in &bar.slices {
        match slice.state.as_str() {
            "pending" => {
                assert_eq!(slice.background, PENDING_GREY, "{slice:?}");
                assert_eq!(slice.filled, 0.0, "{slice:?}");
                assert_eq!(slice.node, "", "{slice:?}");
            }
            state @ ("running" | "done") => {
                assert!(!slice.node.is_empty(), "a node: {slice:?}");
                let colour = colours
                    .entry(slice.node.clone())
                    .or_insert_with(|| slice.fill_colour.clone());
                assert_eq!(&slice.fill_colour, colour, "one colour per node: {bar:?}");
                assert!(colour.starts_with("rgb("), "opaque: {slice:?}");
                assert!(colour != PENDING_GREY && colour != ACCENT, "{slice:?}");
                if state == "done" {
                    assert_eq!(slice.filled, 100.0, "{slice:?}");
                } else {
                    assert_eq!(slice.background, tint(colour), "{slice:?}");
                    assert!((0.0..=100.0).contains(&slice.filled), "{slice:?}");
                }
            }
            other => panic!("a segment in state {other:?}: {slice:?}"),
        }
    }
    assert_eq!(bar.legend_shown, !bar.slices.is_empty(), "{bar:?}");
    for swatch in &bar.legend {
        assert_eq!(
            Some(&swatch.colour),
            colours.get(&swatch.node),
            "the legend's colour of {}: {bar:?}",
            swatch.node
        );
    }
}

/// Follows job `id`'s card until it says completed (within
/// [`ENCODE_LIMIT`]), checking every look at its bar with [`check_look`];
/// leaves a screenshot named `name` of the first look that shows done
/// slices beside unfinished ones.
async fn watch_split(browser: &Browser, card: &Element, id: &str, name: &str) -> Watched {
    let watched = std::cell::RefCell::new(Watched {
        colours: BTreeMap::new(),
        slices: 0,
        mixed: false,
        running_fill: 0.0,
        looks: 0,
    });
    eventually(
        "the split job's card to say completed",
        ENCODE_LIMIT,
        || async {
            let status = card.attr("data-status").await.expect("data-status");
            let bar = browser.bar(id).await;
            let first_mix = {
                let mut watched = watched.borrow_mut();
                watched.looks += 1;
                check_look(&bar, &mut watched.colours);
                let count = bar.slices.len();
                if count > 0 {
                    assert!(
                        watched.slices == 0 || watched.slices == count,
                        "the plan's slices came and went: {} then {count}",
                        watched.slices
                    );
                    watched.slices = count;
                }
                for slice in bar.slices.iter().filter(|s| s.state == "running") {
                    watched.running_fill = watched.running_fill.max(slice.filled);
                }
                let done = bar.slices.iter().filter(|s| s.state == "done").count();
                let mixed = done > 0 && done < count;
                let first = mixed && !watched.mixed;
                watched.mixed |= mixed;
                first
            };
            if first_mix {
                browser.screenshot(name).await;
            }
            if status.as_deref() == Some("completed") {
                Ok(())
            } else {
                Err(format!("{status:?}: {bar:?}"))
            }
        },
    )
    .await;
    watched.into_inner()
}

/// The start and end of each segment of a status document, in seconds.
fn segment_durations(doc: &Value) -> Vec<f64> {
    doc["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            s["end_seconds"].as_f64().expect("an end")
                - s["start_seconds"].as_f64().expect("a start")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_job_shows_its_segments_on_the_bar_in_its_nodes_colour() {
    let node = TestNode::start_with(splitting).await.serve();
    let browser = Browser::start().await;
    browser.open(&node.base).await;
    browser.select("#preset", "veryslow").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = named_copy(&dir, &clip(10), "split.mp4");
    browser.pick(&[&file]).await;
    let card = browser.card(&file).await;
    let id = card.attr("data-id").await.expect("id").expect("an id");
    let watched = watch_split(&browser, &card, &id, "split-running").await;

    let doc = document(&node.base, &id).await;
    let durations = segment_durations(&doc);
    assert!(durations.len() >= 3, "10 s in segments of about 2 s: {doc}");
    assert_eq!(watched.slices, durations.len(), "one slice per segment");
    // One node, one colour: the node's name in the documents.
    let names: Vec<_> = watched.colours.keys().cloned().collect();
    let ran: std::collections::BTreeSet<_> = doc["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| s["node"].as_str().expect("a node").to_owned())
        .collect();
    assert_eq!(names, ran.into_iter().collect::<Vec<_>>(), "{doc}");
    assert_eq!(names.len(), 1, "{:?}", watched.colours);
    eprintln!(
        "{} looks, {} slices, done beside unfinished seen: {}, a running slice seen {} % full",
        watched.looks, watched.slices, watched.mixed, watched.running_fill
    );

    // Completed: every slice full, in the node's colour.
    let bar = browser.bar(&id).await;
    browser.screenshot("split-completed").await;
    assert_proportional(&bar, &durations);
    let colour = &watched.colours[&names[0]];
    for slice in &bar.slices {
        assert_eq!(
            (slice.state.as_str(), slice.filled, &slice.fill_colour),
            ("done", 100.0, colour),
            "{bar:?}"
        );
    }
    assert_eq!(
        bar.legend,
        [Swatch {
            node: names[0].clone(),
            colour: colour.clone()
        }]
    );
    let count = durations.len();
    assert_eq!(bar.count, Some(format!("{count} of {count} segments done")));
    assert_eq!(text_in(&card, ".where").await, format!("on {}", names[0]));
    assert_eq!(
        bar.text,
        Some(format!("100 %, {count} of {count} segments done"))
    );
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_split_over_two_nodes_shows_each_nodes_segments_in_its_own_colour() {
    // Two nodes of one worker each: while one encodes a segment, the next
    // goes to the other.
    let dir = tempfile::tempdir().expect("temp dir");
    let cookie = "web-segments-cookie";
    let env = vec![
        ("VIDPRESS_SEGMENT_SECS".to_owned(), "2".to_owned()),
        ("VIDPRESS_SEGMENT_MIN_SECS".to_owned(), "4".to_owned()),
    ];
    let a = NodeProc::spawn_with("node-a", &dir, 1, vec![], cookie, env.clone());
    let b = NodeProc::spawn_with("node-b", &dir, 1, vec![a.cluster], cookie, env);
    eventually(
        "node-a to see both nodes up",
        Duration::from_secs(30),
        || async {
            let view = crate::support::get_json(&format!("{}/cluster", a.base())).await;
            let up = view.as_ref().map_or(0, |(_, view)| {
                view["nodes"]
                    .as_array()
                    .map_or(0, |n| n.iter().filter(|m| m["state"] == "up").count())
            });
            if up == 2 {
                Ok(())
            } else {
                Err(format!("{view:?}\n{}\n{}", a.log(), b.log()))
            }
        },
    )
    .await;
    let browser = Browser::start().await;
    browser.open(&a.base()).await;
    browser.select("#preset", "veryslow").await;
    let file = named_copy(&dir, &clip(10), "split-two.mp4");
    browser.pick(&[&file]).await;
    let card = browser.card(&file).await;
    let id = card.attr("data-id").await.expect("id").expect("an id");
    let watched = watch_split(&browser, &card, &id, "split-two-nodes-running").await;

    let doc = document(&a.base(), &id).await;
    let durations = segment_durations(&doc);
    assert_eq!(watched.slices, durations.len(), "one slice per segment");
    let nodes: Vec<_> = doc["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| s["node"].as_str().expect("a node").to_owned())
        .collect();
    let ran: std::collections::BTreeSet<_> = nodes.iter().cloned().collect();
    assert_eq!(
        ran.iter().map(String::as_str).collect::<Vec<_>>(),
        ["node-a", "node-b"],
        "both nodes encoded segments: {doc}"
    );
    assert_eq!(
        watched.colours.keys().collect::<Vec<_>>(),
        ran.iter().collect::<Vec<_>>()
    );
    let (colour_a, colour_b) = (&watched.colours["node-a"], &watched.colours["node-b"]);
    assert_ne!(colour_a, colour_b, "two nodes, two colours");
    eprintln!(
        "{} looks, segments on {nodes:?}, done beside unfinished seen: {}, a running slice seen {} % full",
        watched.looks, watched.mixed, watched.running_fill
    );

    // Completed: each slice full, in the colour of the node that encoded it.
    let bar = browser.bar(&id).await;
    browser.screenshot("split-two-nodes").await;
    assert_proportional(&bar, &durations);
    for (slice, node) in bar.slices.iter().zip(&nodes) {
        assert_eq!(
            (slice.state.as_str(), slice.filled, &slice.node),
            ("done", 100.0, node),
            "{bar:?}"
        );
        assert_eq!(&slice.fill_colour, &watched.colours[node], "{bar:?}");
        assert!(
            slice.title.ends_with(&format!(": done on {node}")),
            "{slice:?}"
        );
    }
    assert_eq!(
        bar.legend,
        [
            Swatch {
                node: "node-a".into(),
                colour: colour_a.clone()
            },
            Swatch {
                node: "node-b".into(),
                colour: colour_b.clone()
            },
        ]
    );
    assert_eq!(
        text_in(&card, ".where").await,
        "on node-a, node-b",
        "the nodes that encoded it"
    );
    browser.close().await;
    drop((a, b));
}
