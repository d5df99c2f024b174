//! Local services protected, and cancellation carried end to end (ARCHITECTURE.md §4, §7):
//! a burst shares a few local connections, a full queue and a long wait are 503s with a
//! reason, clients that give up leave no local connection behind, and a refusing endpoint is
//! ejected while the healthy one serves.
//!
//! The service's connections are counted from the kernel (`/proc/net/tcp`): established
//! sockets whose local port is the service's.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Established TCP connections whose local port is `port`: the service's side of each
/// connection to it.
fn established(port: u16) -> usize {
    let mut n = 0;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "01" {
                n += 1;
            }
        }
    }
    n
}

/// The most connections the service at `port` holds at once while `f` runs (sampled).
fn peak_connections<T>(port: u16, f: impl FnOnce() -> T) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(established(port), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    (out, peak.load(Ordering::SeqCst))
}

/// A responder, `rtun service` and an initiator whose local cluster has `keys` (YAML lines
/// indented by four) and, when given, these endpoints instead of the service alone.
struct Protected {
    dir: TempDir,
    r: ResponderOpts,
    svc: u16,
    /// The initiator's admin port.
    admin: u16,
    initiator: Proc,
    _responder: Proc,
    _service: Proc,
}

impl Protected {
    fn start(name: &str, keys: &str, endpoints: Option<&[String]>) -> Self {
        Self::start_with(name, keys, endpoints, 1)
    }

    /// With `shards` responder shards.
    fn start_with(name: &str, keys: &str, endpoints: Option<&[String]>, shards: usize) -> Self {
        let dir = TempDir::new(name);
        let svc = port();
        let service = spawn_service(&dir, "svc", svc);
        let mut r = ResponderOpts::new();
        r.shards = shards;
        let responder = r.spawn(&dir, "responder");
        let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, svc);
        let admin = port();
        i.admin = Some(admin);
        let own = format!("    endpoints: [\"127.0.0.1:{svc}\"]\n");
        let endpoints = match endpoints {
            Some(list) => format!(
                "    endpoints: [{}]\n",
                list.iter()
                    .map(|e| format!("\"{e}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => own.clone(),
        };
        let yaml = i.yaml().replace(&own, &format!("{endpoints}{keys}"));
        assert!(yaml.contains(keys), "{yaml}");
        let initiator = spawn_rtun(&dir, "initiator", &yaml);
        assert!(
            wait_for_port(admin, Duration::from_secs(10)),
            "initiator admin did not listen\n{}",
            initiator.log_text()
        );
        let up = wait_tunnels(&r, "n1", 1, Duration::from_secs(15));
        let s = Protected {
            dir,
            r,
            svc,
            admin,
            initiator,
            _responder: responder,
            _service: service,
        };
        assert!(up, "tunnel did not come up: {:?}", admin_tunnels(s.r.admin));
        s
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.r.egress)
    }
}

#[test]
fn a_burst_of_streams_waits_for_a_few_local_connections_and_all_succeed() {
    let s = Protected::start(
        "burst",
        "    max_connections: 4\n    queue_timeout: 60s\n",
        None,
    );
    let url = s.url("/delay/50");
    let (out, peak) = peak_connections(s.svc, || {
        Command::new(H2LOAD)
            .args([
                "-n",
                "200",
                "-c",
                "1",
                "-m",
                "200",
                "-H",
                "x-node-id: n1",
                &url,
            ])
            .output()
            .expect("run h2load")
    });
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("200 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{report}"
    );
    assert!(report.contains("200 2xx"), "{report}");
    assert!(peak <= 4, "the service saw {peak} connections at once");
    let connects = admin_stat(s.admin, "initiator_local_connects");
    assert!(connects <= 4, "{connects} local connections opened");
    let _ = &s.dir;
}

#[test]
fn a_full_queue_and_a_long_wait_are_503s_with_a_reason() {
    let s = Protected::start(
        "queue",
        "    max_connections: 1\n    max_pending: 1\n    queue_timeout: 1s\n",
        None,
    );
    let e = s.r.egress;
    let n1 = [("x-node-id", "n1")];
    // One request holds the only connection; the next waits in the queue.
    let holder = std::thread::spawn(move || get(e, "/delay/4000", &[("x-node-id", "n1")]));
    std::thread::sleep(Duration::from_millis(400));
    let waiter = std::thread::spawn(move || get(e, "/delay/10", &[("x-node-id", "n1")]));
    std::thread::sleep(Duration::from_millis(300));
    // The queue (max_pending: 1) is full: refused at once.
    let refused = get(e, "/delay/10", &n1).expect("an answer");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("x-rtun-local-reply"), Some("1"));
    assert!(
        refused.text().contains("overloaded") && refused.text().contains("max_pending"),
        "{}",
        refused.text()
    );
    // The waiting one gives up after queue_timeout.
    let started = Instant::now();
    let expired = waiter.join().unwrap().expect("an answer");
    assert_eq!(expired.status, 503, "{}", expired.text());
    assert!(
        expired
            .text()
            .contains("no connection to it became free within 1s"),
        "{}",
        expired.text()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let held = holder.join().unwrap().expect("an answer");
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(admin_stat(s.admin, "initiator_503_local_overloaded"), 1);
    assert_eq!(admin_stat(s.admin, "initiator_503_queue_timeout"), 1);
}

#[test]
fn clients_that_give_up_leave_no_local_connection_open() {
    let s = Protected::start("give-up", "", None);
    // Idle connections from the probes stay pooled, as they should.
    let baseline = established(s.svc);
    let url = s.url("/delay/5000");
    let curls: Vec<_> = (0..50)
        .map(|_| {
            Command::new(CURL)
                .args([
                    "-sS",
                    "--http1.1",
                    "--max-time",
                    "0.5",
                    "-H",
                    "x-node-id: n1",
                ])
                .arg(&url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run curl")
        })
        .collect();
    for mut curl in curls {
        let _ = curl.wait();
    }
    // Before the service would have answered (5 s), every local connection of a request
    // that was given up is closed, none pooled.
    let closed = wait_until(Duration::from_secs(3), || established(s.svc) <= baseline);
    assert!(
        closed,
        "{} local connections still open (baseline {baseline})",
        established(s.svc)
    );
    let egress = admin_stat(s.r.admin, "egress_client_cancelled");
    let initiator = admin_stat(s.admin, "initiator_cancelled");
    assert!(egress >= 25, "egress_client_cancelled {egress}");
    assert!(initiator >= 25, "initiator_cancelled {initiator}");
    // The service is fine and the pool usable.
    let r = get(s.r.egress, "/ok", &[("x-node-id", "n1")]).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `streams` streams on each of `connections` HTTP/2 connections, reset (RST_STREAM CANCEL)
/// after half a second while the connections stay open; returns once the streams are reset,
/// keeping the connections `hold` longer.
fn reset_streams_after_forwarding(
    egress: u16,
    connections: usize,
    streams: usize,
    hold: Duration,
) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut senders = Vec::new();
            let mut open = Vec::new();
            for _ in 0..connections {
                let stream = monoio::net::TcpStream::connect(("127.0.0.1", egress))
                    .await
                    .expect("connect");
                let io = stream.try_into_poll_io().expect("poll io");
                let (mut send, conn) = h2::client::handshake(io).await.expect("h2");
                monoio::spawn(async move {
                    let _ = conn.await;
                });
                for _ in 0..streams {
                    let req = http::Request::get(format!("http://127.0.0.1:{egress}/delay/5000"))
                        .header("x-node-id", "n1")
                        .body(())
                        .expect("request");
                    send = send.ready().await.expect("ready");
                    open.push(send.send_request(req, true).expect("send"));
                }
                senders.push(send);
            }
            monoio::time::sleep(Duration::from_millis(500)).await;
            // Dropping a stream's handles before its response resets it.
            drop(open);
            monoio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(());
            monoio::time::sleep(hold).await;
            drop(senders);
        });
    });
    let _ = rx.recv_timeout(Duration::from_secs(10));
    client
}

#[test]
fn streams_reset_after_they_were_forwarded_release_their_local_connections() {
    let s = Protected::start("reset", "", None);
    let baseline = established(s.svc);
    let client = reset_streams_after_forwarding(s.r.egress, 1, 50, Duration::from_secs(4));
    let closed = wait_until(Duration::from_secs(3), || established(s.svc) <= baseline);
    assert!(
        closed,
        "{} local connections still open (baseline {baseline})",
        established(s.svc)
    );
    assert!(admin_stat(s.r.admin, "egress_client_cancelled") >= 50);
    assert!(admin_stat(s.admin, "initiator_cancelled") >= 50);
    let _ = client.join();
    assert!(
        admin_stat(s.admin, "initiator_local_connects") <= 50 + 4,
        "no connection storm"
    );
}

#[test]
fn a_refusing_endpoint_is_ejected_and_requests_go_to_the_healthy_one() {
    let refusing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a.to_string()
    };
    let svc = port();
    let healthy = format!("127.0.0.1:{svc}");
    // Without idle connections every request needs a connect: the endpoints take turns.
    let keys = "    max_idle_per_shard: 0\n    consecutive_failures: 3\n";
    let dir = TempDir::new("eject-svc");
    let _service = spawn_service(&dir, "svc", svc);
    let s = Protected::start("eject", keys, Some(&[refusing, healthy]));
    for i in 0..20 {
        let r = get(s.r.egress, &format!("/r{i}"), &[("x-node-id", "n1")]).expect("an answer");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-served-by"), Some("svc"));
    }
    assert_eq!(admin_stat(s.admin, "initiator_local_ejections"), 1);
    assert_eq!(admin_stat(s.admin, "initiator_local_connect_failures"), 3);
    assert!(wait_until(Duration::from_secs(2), || s
        .initiator
        .log_text()
        .contains("local endpoint ejected")));
}

#[test]
fn streams_reset_on_another_shard_release_their_local_connections_too() {
    // Two responder shards: client connections that land on the shard without the tunnel
    // are handed over (`egress_cross_shard`); their resets must travel as well.
    let s = Protected::start_with("reset-shards", "", None, 2);
    let baseline = established(s.svc);
    let client = reset_streams_after_forwarding(s.r.egress, 6, 10, Duration::from_secs(4));
    let closed = wait_until(Duration::from_secs(3), || established(s.svc) <= baseline);
    assert!(
        closed,
        "{} local connections still open (baseline {baseline}); {} requests crossed shards",
        established(s.svc),
        admin_stat(s.r.admin, "egress_cross_shard")
    );
    assert!(admin_stat(s.admin, "initiator_cancelled") >= 60);
    let _ = client.join();
}
