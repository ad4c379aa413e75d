//! Multi-process cluster tests: every node is a `vidpress-member` process
//! on a loopback ephemeral port (ractor's registry and process groups are
//! process-global, so nodes cannot share a process). Each test starts its
//! own nodes, every wait has a deadline, and every child is killed when its
//! handle drops.
//!
//! Timings: 200 ms heartbeats, 1.5 s failure timeout.

mod harness;

use std::time::{Duration, Instant};

use harness::{Node, TIMEOUT};

/// How late past the failure timeout a failure may be noticed.
const DETECTION_SLACK: Duration = Duration::from_secs(1);
/// How long a healthy cluster may take to converge.
const CONVERGE: Duration = Duration::from_secs(10);

/// Starts A, then B through A, and waits until both see both up.
fn two_nodes() -> (Node, Node) {
    let a = Node::start("a", &[]);
    let b = Node::start("b", &[&a]);
    for n in [&a, &b] {
        n.wait_all_up(&["a", "b"], CONVERGE);
    }
    (a, b)
}

/// Starts A, B through A, C through A only, and waits until all three see
/// all three up.
fn three_nodes() -> (Node, Node, Node) {
    let (a, b) = two_nodes();
    let c = Node::start("c", &[&a]);
    for n in [&a, &b, &c] {
        n.wait_all_up(&["a", "b", "c"], CONVERGE);
    }
    (a, b, c)
}

#[test]
fn a_node_joining_through_one_seed_comes_to_know_every_node() {
    let (a, b) = two_nodes();
    let started = Instant::now();
    let c = Node::start("c", &[&a]);
    // C was told only of A; B reaches it through A (transitive mode).
    let took = c.wait_all_up(&["a", "b", "c"], CONVERGE);
    eprintln!("c saw a, b and c up {took:?} after it started");
    for n in [&a, &b] {
        n.wait_all_up(&["a", "b", "c"], CONVERGE);
    }
    // The view carries what each node publishes.
    let view = a.view();
    let c_seen = harness::member(&view, "c").unwrap();
    assert_eq!(c_seen["address"], c.advertise());
    assert_eq!(c_seen["http"], format!("http://{}", c.advertise()));
    assert_eq!(c_seen["load"]["workers"], 2);
    assert!(started.elapsed() < CONVERGE);
}

#[test]
fn a_killed_node_is_marked_down_within_the_failure_timeout() {
    let (a, mut b, c) = three_nodes();
    b.kill();
    let killed = Instant::now();
    for n in [&a, &c] {
        let took = n.wait_state_since("b", "down", killed, TIMEOUT + DETECTION_SLACK);
        eprintln!("SIGKILL -> down on {}: {took:?}", n.name());
    }
    // The survivors stay up for each other.
    for n in [&a, &c] {
        n.wait_all_up(&["a", "c"], Duration::from_secs(1));
    }
}

#[test]
fn a_frozen_node_is_marked_down_and_comes_back_when_resumed() {
    let (a, b, c) = three_nodes();
    b.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    for n in [&a, &c] {
        let took = n.wait_state_since("b", "down", stopped, TIMEOUT + DETECTION_SLACK);
        eprintln!("SIGSTOP -> down on {}: {took:?}", n.name());
    }
    // Frozen well past the timeout, so that its sessions are dropped.
    std::thread::sleep(Duration::from_secs(1));

    b.signal(libc::SIGCONT);
    let resumed = Instant::now();
    for n in [&a, &c] {
        let took = n.wait_state_since("b", "up", resumed, CONVERGE);
        eprintln!("SIGCONT -> up on {}: {took:?}", n.name());
    }
    let took = b.wait_all_up(&["a", "b", "c"], CONVERGE);
    eprintln!("SIGCONT -> b sees everyone up: {took:?}");
    for n in [&a, &c] {
        n.wait_all_up(&["a", "b", "c"], CONVERGE);
    }
}

#[test]
fn a_restarted_node_rejoins_with_a_higher_incarnation() {
    let test_start = Instant::now();
    let (a, mut b, c) = three_nodes();
    let before = harness::member(&a.view(), "b").unwrap()["incarnation"]
        .as_u64()
        .unwrap();
    b.kill();
    let b2 = b.restart();
    let restarted = Instant::now();
    for n in [&a, &c] {
        let took = n.wait_for(
            &format!("b up with an incarnation above {before}"),
            CONVERGE,
            |view| {
                harness::member(view, "b").is_some_and(|m| {
                    m["state"] == "up" && m["incarnation"].as_u64().unwrap() > before
                })
            },
        );
        eprintln!("restart -> up on {}: {took:?}", n.name());
        n.wait_event("restarted", "b", restarted, CONVERGE);
    }
    b2.wait_all_up(&["a", "b", "c"], CONVERGE);
    // A and C were never restarted: they still run their first incarnation.
    for n in [&a, &b2, &c] {
        assert!(n
            .events_since(test_start)
            .iter()
            .all(|(kind, node)| !(kind == "restarted" && (node == "a" || node == "c"))));
    }
}

#[test]
fn a_node_with_the_wrong_cookie_is_refused_and_logged() {
    let (a, b) = two_nodes();
    let intruder = Node::start_with_cookie("w", &[&a], "not-the-cookie");
    let took = a.wait_stderr("cluster peer refused", Duration::from_secs(10));
    eprintln!("refusal logged by a after {took:?}");
    let line = a.stderr_line("cluster peer refused").unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains("w@127.0.0.1"), "{line}");
    // The intruder logs it from its side too.
    intruder.wait_stderr("cluster peer refused", Duration::from_secs(10));

    // Let it retry for a few heartbeats: it must never enter a view.
    std::thread::sleep(Duration::from_secs(2));
    for n in [&a, &b] {
        assert!(
            n.history()
                .iter()
                .all(|v| harness::member(v, "w").is_none()),
            "{} saw the intruder",
            n.name()
        );
        n.wait_all_up(&["a", "b"], Duration::from_secs(1));
    }
    assert!(intruder
        .history()
        .iter()
        .all(|v| v["members"].as_array().unwrap().len() == 1));
}

#[test]
#[ignore = "needs root, iptables and setpriv; drops the packets of user nobody for 5 s"]
fn a_cut_off_node_is_marked_down_and_comes_back_when_the_network_returns() {
    let a = Node::start("a", &[]);
    let b = Node::start_as_nobody("b", &[&a]);
    let c = Node::start("c", &[&a]);
    for n in [&a, &b, &c] {
        n.wait_all_up(&["a", "b", "c"], CONVERGE);
    }
    let cut = harness::NetworkCut::start();
    let cut_at = Instant::now();
    for n in [&a, &c] {
        let took = n.wait_state_since("b", "down", cut_at, TIMEOUT + DETECTION_SLACK);
        eprintln!("cut -> down on {}: {took:?}", n.name());
    }
    // Long enough for every TCP retransmission timer to back off.
    std::thread::sleep(Duration::from_secs(5));
    drop(cut);
    let restored = Instant::now();
    for n in [&a, &c] {
        let took = n.wait_state_since("b", "up", restored, CONVERGE);
        eprintln!("restore -> up on {}: {took:?}", n.name());
    }
    for n in [&a, &b, &c] {
        n.wait_all_up(&["a", "b", "c"], CONVERGE);
    }
}

#[test]
fn wire_helpers_refuse_what_they_cannot_decode() {
    use ractor::message::SerializedMessage;
    use serde::{Deserialize, Serialize};
    use vidpress_cluster::wire;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum V1 {
        Hello { n: u32 },
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum V2 {
        Hello { n: u32 },
        Bye(String),
    }

    let m = wire::encode_cast("t.v1", &V1::Hello { n: 7 }).unwrap();
    assert_eq!(wire::decode::<V1>(m).unwrap(), V1::Hello { n: 7 });
    let m = wire::encode_cast("t.v2", &V2::Hello { n: 7 }).unwrap();
    assert_eq!(wire::decode::<V1>(m).unwrap(), V1::Hello { n: 7 });
    let m = wire::encode_cast("t.v2", &V2::Bye("x".into())).unwrap();
    assert!(wire::decode::<V1>(m).is_err());
    for garbage in [vec![], vec![9], vec![0xff; 32], b"garbage".to_vec()] {
        let m = SerializedMessage::Cast {
            variant: "t.v1".into(),
            args: garbage,
            metadata: None,
        };
        assert!(wire::decode::<V1>(m).is_err());
    }
}
