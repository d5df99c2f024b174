//! Tunnels that die, responders that restart, processes that drain.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn fast_pings() -> ResponderOpts {
    ResponderOpts {
        ping_interval: "500ms".into(),
        ping_failure_threshold: 3,
        ..ResponderOpts::new()
    }
}

/// ping_interval × (threshold + 1) = 2 s, plus a margin for the 0–15 % PING jitter and polling.
const DEAD_BOUND: Duration = Duration::from_millis(2000 + 500);

#[test]
fn sigkilled_initiator_leaves_registry_then_503() {
    let mut s = Stack::start("sigkill", fast_pings(), 2, |_| {});
    assert_eq!(tunnels_of(s.r.admin, "n1"), 2);
    let killed = Instant::now();
    s.initiator.kill();
    let gone = wait_until(DEAD_BOUND, || tunnels_of(s.r.admin, "n1") == 0);
    let took = killed.elapsed();
    assert!(
        gone,
        "n1 still registered {took:?} after SIGKILL: {:?}",
        admin_tunnels(s.r.admin)
    );
    assert_eq!(
        tunnels_of(s.r.admin, "c1"),
        0,
        "{:?}",
        admin_tunnels(s.r.admin)
    );
    let resp = get(s.r.egress, "/after", &[("x-node-id", "n1")]).unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.text().contains("n1"), "{}", resp.text());
    let resp = get(s.r.egress, "/after", &[("x-cluster-id", "c1")]).unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(admin_stat(s.r.admin, "tunnels_active"), 0);
}

#[test]
fn sigstopped_initiator_detected_by_pings() {
    let s = Stack::start("sigstop", fast_pings(), 1, |_| {});
    assert_eq!(admin_stat(s.r.admin, "tunnels_dead_ping"), 0);
    let stopped = Instant::now();
    s.initiator.signal(libc::SIGSTOP);
    // The socket stays open: only missed PINGs can tell.
    let gone = wait_until(DEAD_BOUND, || tunnels_of(s.r.admin, "n1") == 0);
    let took = stopped.elapsed();
    let dead_ping = admin_stat(s.r.admin, "tunnels_dead_ping");
    s.initiator.signal(libc::SIGCONT);
    assert!(
        gone,
        "frozen n1 still registered {took:?} after SIGSTOP: {:?}",
        admin_tunnels(s.r.admin)
    );
    assert!(
        took >= Duration::from_millis(1000),
        "removed after only {took:?}: not by PINGs?"
    );
    assert!(dead_ping >= 1, "tunnels_dead_ping = {dead_ping}");
    let resp = get(s.r.egress, "/after", &[("x-node-id", "n1")]).unwrap();
    // The thawed initiator may already be redialing; before it is back, 503.
    assert!(
        resp.status == 503 || resp.status == 200,
        "{} {}",
        resp.status,
        resp.text()
    );
    // And once thawed it comes back.
    assert!(
        wait_tunnels(&s.r, "n1", 1, Duration::from_secs(5)),
        "thawed initiator did not come back: {:?}",
        admin_tunnels(s.r.admin)
    );
}

#[test]
fn responder_restart_initiator_reconnects_within_backoff() {
    // max_reconnect_backoff 1s (InitiatorOpts default).
    let mut s = Stack::start("restart", ResponderOpts::new(), 2, |_| {});
    assert_eq!(s.i.max_backoff, "1s");
    s.responder.kill();
    // Leave it down long enough for the redial backoff to reach its cap.
    thread::sleep(Duration::from_secs(3));
    let resp = get(s.r.egress, "/", &[("x-node-id", "n1")]);
    assert!(resp.is_err(), "egress still answering after SIGKILL");
    s.responder = spawn_rtun(&s.dir, "responder-2", &s.r.yaml());
    assert!(
        wait_for_port(s.r.egress, Duration::from_secs(10)),
        "restarted responder not listening"
    );
    let listening = Instant::now();
    assert!(wait_for_port(s.r.tunnel, Duration::from_secs(10)));
    let bound = Duration::from_secs(1) + Duration::from_secs(1);
    let ok = wait_until(bound, || {
        get(s.r.egress, "/again", &[("x-node-id", "n1")]).is_ok_and(|r| r.status == 200)
    });
    let took = listening.elapsed();
    assert!(
        ok,
        "no 200 within {bound:?} of the responder listening (waited {took:?}): {:?}",
        admin_tunnels(s.r.admin)
    );
    // Both tunnels come back.
    assert!(
        wait_until(Duration::from_secs(3), || tunnels_of(s.r.admin, "n1") == 2),
        "{:?}",
        admin_tunnels(s.r.admin)
    );
}

/// Starts a GET in a thread once the egress has counted it as received.
fn in_flight(s: &Stack, path: &str) -> thread::JoinHandle<std::io::Result<Response>> {
    let before = admin_stat(s.r.admin, "egress_requests");
    let (egress, path) = (s.r.egress, path.to_owned());
    let h = thread::spawn(move || get(egress, &path, &[("x-node-id", "n1")]));
    assert!(
        wait_until(Duration::from_secs(3), || admin_stat(
            s.r.admin,
            "egress_requests"
        ) > before),
        "request not received"
    );
    // Let it cross the tunnel to the service.
    thread::sleep(Duration::from_millis(200));
    h
}

#[test]
fn responder_drains_in_flight_request_on_sigterm() {
    let mut s = Stack::start("drain-responder", ResponderOpts::new(), 1, |_| {});
    let h = in_flight(&s, "/delay/1500");
    let sent = Instant::now();
    s.responder.signal(libc::SIGTERM);
    let status = s.responder.wait_exit(Duration::from_secs(2 + 2));
    let resp = h.join().unwrap();
    let resp = resp.unwrap_or_else(|e| panic!("in-flight request failed during drain: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let status = status
        .unwrap_or_else(|| panic!("responder still running {:?} after SIGTERM", sent.elapsed()));
    assert!(status.success(), "responder exited with {status}");
}

#[test]
fn initiator_drains_in_flight_request_on_sigterm() {
    let mut s = Stack::start("drain-initiator", ResponderOpts::new(), 1, |_| {});
    let h = in_flight(&s, "/delay/1500");
    let sent = Instant::now();
    s.initiator.signal(libc::SIGTERM);
    let status = s.initiator.wait_exit(Duration::from_secs(3 + 2));
    let resp = h.join().unwrap();
    let resp = resp.unwrap_or_else(|e| panic!("in-flight request failed during drain: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let status = status
        .unwrap_or_else(|| panic!("initiator still running {:?} after SIGTERM", sent.elapsed()));
    assert!(status.success(), "initiator exited with {status}");
}

#[test]
fn tunnel_dying_mid_request_gives_502() {
    let mut s = Stack::start("mid-request", ResponderOpts::new(), 1, |_| {});
    let url = format!("http://127.0.0.1:{}/delay/3000", s.r.egress);
    let h2 = thread::spawn(move || curl(&["--http2-prior-knowledge", "-H", "x-node-id: n1", &url]));
    let h1 = in_flight(&s, "/delay/3000");
    let killed = Instant::now();
    s.initiator.kill();
    let r1 = h1
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("h1 client got no response: {e}"));
    let took = killed.elapsed();
    assert_eq!(r1.status, 502, "h1: {} {}", r1.status, r1.text());
    assert_eq!(r1.header("x-rtun-local-reply"), Some("1"));
    assert!(
        took < Duration::from_millis(2000),
        "502 came {took:?} after the initiator died"
    );
    let r2 = h2.join().unwrap();
    // h2: a 502 local reply, or the stream reset (curl error).
    assert!(
        r2.status == 502 || (r2.status == 0 && r2.code != 0),
        "h2: {r2:?}"
    );
    assert!(admin_stat(s.r.admin, "egress_502_tunnel_error") >= 1);
}
