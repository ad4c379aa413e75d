//! One cluster node and nothing else, for the multi-process tests of
//! `vidpress-cluster` (ractor's registry and process groups are
//! process-global, so every node of a test cluster is its own process).
//!
//! ```text
//! vidpress-member --name a --listen 127.0.0.1:7000 [--advertise HOST:PORT]
//!     [--http URL] [--seeds HOST:PORT,…] [--cookie SECRET]
//!     [--heartbeat-ms 500] [--timeout-ms 3000] [--workers N]
//! ```
//!
//! Prints one JSON line to stdout per change of its view,
//! `{"me":"a","members":[{"name","address","state","incarnation","load"}]}`,
//! and one per member event, `{"event":"down","node":"b"}`. Logs go to
//! stderr (`RUST_LOG`, default `info`). Leaves the cluster and exits on
//! SIGTERM or SIGINT.

use std::io::Write;
use std::time::Duration;

use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, watch};
use vidpress_cluster::{Cluster, ClusterConfig, ClusterView, MemberEvent, NodeLoad};

const USAGE: &str = "usage: vidpress-member --name NAME --listen ADDR:PORT [--advertise HOST:PORT] \
[--http URL] [--seeds HOST:PORT,...] [--cookie SECRET] [--heartbeat-ms N] [--timeout-ms N] [--workers N]";

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (config, workers) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("vidpress-member: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let code = runtime.block_on(run(config, workers));
    std::process::exit(code);
}

async fn run(config: ClusterConfig, workers: u32) -> i32 {
    let (_load_tx, load) = watch::channel(NodeLoad {
        workers,
        busy: 0,
        queued: 0,
        spare: 0,
    });
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    let cluster = match Cluster::join(config, load).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("vidpress-member: {e}");
            return 1;
        }
    };
    let mut view = cluster.view();
    let mut events = cluster.events();
    let mut last = String::new();
    print_view(&view.borrow_and_update(), &mut last);
    loop {
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    break;
                }
                let current = view.borrow_and_update().clone();
                print_view(&current, &mut last);
            }
            event = events.recv() => match event {
                Ok(event) => print_event(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    cluster.leave().await;
    0
}

/// Prints the view unless it looks the same as the last one printed.
fn print_view(view: &ClusterView, last: &mut String) {
    let members: Vec<_> = view
        .members
        .values()
        .map(|m| {
            json!({
                "name": m.name,
                "address": m.address,
                "http": m.http,
                "state": m.state,
                "incarnation": m.incarnation,
                "load": m.load,
            })
        })
        .collect();
    let line = json!({ "me": view.me, "members": members }).to_string();
    if line != *last {
        emit(&line);
        *last = line;
    }
}

fn print_event(event: &MemberEvent) {
    let kind = match event {
        MemberEvent::Up(_) => "up",
        MemberEvent::Suspect(_) => "suspect",
        MemberEvent::Down(_) => "down",
        MemberEvent::Restarted(_) => "restarted",
        MemberEvent::Stalled(_) => "stalled",
    };
    emit(&json!({ "event": kind, "node": event.node() }).to_string());
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the test is gone) is no reason to stop the node.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<(ClusterConfig, u32), String> {
    let mut name = None;
    let mut listen = None;
    let mut advertise = None;
    let mut http = None;
    let mut seeds = Vec::new();
    let mut cookie = "vidpress".to_owned();
    let mut heartbeat = None;
    let mut timeout = None;
    let mut workers = 0;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let ms = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--name" => name = Some(value.parse().map_err(|e| format!("--name: {e}"))?),
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen: {e}"))?),
            "--advertise" => advertise = Some(value),
            "--http" => http = Some(value),
            "--seeds" => {
                seeds = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--cookie" => cookie = value,
            "--heartbeat-ms" => heartbeat = Some(ms(&value)?),
            "--timeout-ms" => timeout = Some(ms(&value)?),
            "--workers" => workers = value.parse().map_err(|e| format!("--workers: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let mut config = ClusterConfig::new(
        name.ok_or("--name is required")?,
        listen.ok_or("--listen is required")?,
        cookie,
    );
    if let Some(advertise) = advertise {
        config.advertise = advertise;
    }
    config.http = http.unwrap_or_else(|| format!("http://{}", config.advertise));
    config.seeds = seeds;
    if let Some(heartbeat) = heartbeat {
        config.heartbeat_interval = heartbeat;
    }
    if let Some(timeout) = timeout {
        config.failure_timeout = timeout;
    }
    Ok((config, workers))
}
