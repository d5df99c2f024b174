//! The fault suite: steady load through rtun while a piece fails, then recovers.
//!
//! Faults: SIGKILL and SIGSTOP/SIGCONT of the initiator, the responder and the local service;
//! the tunnel path blackholed and restored; the tunnel path slowed (50 ms a chunk, one chunk in
//! twenty held 200 ms more, standing in for 5 % loss: `netem` is not available here). For each:
//! no answered request waits past its route timeout, every failure is a 502/503/504 local reply
//! (or a refused connection while the responder itself is down), service comes back by itself
//! within `max_reconnect_backoff` + 2 s of the fault ending, and the processes' descriptors
//! return to their level before the fault. Bounded: each fault lasts a few seconds, every wait
//! has a deadline. What each fault cost is printed (`cargo test --test faults -- --nocapture`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::relay::Relay;
use common::*;

/// The route timeout every request runs under.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(2);
/// The initiator's redial backoff cap.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long the client waits for any answer (longer than the route timeout).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);

#[derive(Debug, Clone)]
enum Outcome {
    /// Status, whether rtun wrote the reply, how long it took.
    Answered(u16, bool, Duration),
    /// No answer: refused, reset, or the client's own timeout.
    NoAnswer(String, Duration),
}

/// One request through the egress, with the client's own bounds.
fn request(port: u16) -> Outcome {
    let start = Instant::now();
    let answer = (|| -> std::io::Result<(u16, bool)> {
        let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(2))?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        s.write_all(
            b"GET /hello HTTP/1.1\r\nhost: rtun\r\nx-node-id: n1\r\nconnection: close\r\n\r\n",
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let resp = parse_response(&raw, false)?;
        Ok((resp.status, resp.header("x-rtun-local-reply").is_some()))
    })();
    match answer {
        Ok((status, local)) => Outcome::Answered(status, local, start.elapsed()),
        Err(e) => Outcome::NoAnswer(e.kind().to_string(), start.elapsed()),
    }
}

/// Four clients sending requests back to back until stopped, recording every outcome.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, Outcome)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|_| {
                let (stop, log) = (stop.clone(), log.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let outcome = request(port);
                        log.lock().unwrap().push((Instant::now(), outcome));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Load { stop, log, threads }
    }

    /// Outcomes recorded after `since`.
    fn since(&self, since: Instant) -> Vec<Outcome> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The processes of one run.
struct Rig {
    dir: TempDir,
    r: ResponderOpts,
    i: InitiatorOpts,
    svc_port: u16,
    relay: Relay,
    responder: Proc,
    initiator: Proc,
    service: Proc,
}

impl Rig {
    fn start(name: &str) -> Rig {
        let dir = TempDir::new(name);
        let svc_port = port();
        let service = spawn_service(&dir, "svc", svc_port);
        let r = ResponderOpts {
            ping_interval: "500ms".into(),
            ping_failure_threshold: 2,
            egress_extra: format!("    request_timeout: {}s\n", ROUTE_TIMEOUT.as_secs()),
            ..ResponderOpts::new()
        };
        let relay = Relay::start(port(), r.tunnel);
        let mut i = InitiatorOpts::new("n1", "c1", relay.port, svc_port);
        i.count = 2;
        i.max_backoff = format!("{}s", MAX_BACKOFF.as_secs());
        // A dial caught by a blackhole waits out its handshake timeout before the next try, so
        // recovery after a cut path is bounded by it: 1 s here (a handshake takes milliseconds).
        i.initiator_extra =
            "  ping_interval: 500ms\n  ping_failure_threshold: 2\n  handshake_timeout: 1s\n".into();
        let responder = r.spawn(&dir, "responder");
        let initiator = i.spawn(&dir, "initiator");
        assert!(
            wait_tunnels(&r, "n1", 2, Duration::from_secs(10)),
            "no tunnels\n{}\n{}",
            responder.log_text(),
            initiator.log_text()
        );
        Rig {
            dir,
            r,
            i,
            svc_port,
            relay,
            responder,
            initiator,
            service,
        }
    }

    fn logs(&self) -> String {
        format!(
            "responder:\n{}\ninitiator:\n{}",
            self.responder.log_text(),
            self.initiator.log_text()
        )
    }
}

/// Runs `fault` (which returns once the fault has ended) under load and checks the outcome.
/// `responder_down`: the responder itself is out during the fault, so requests may go
/// unanswered (refused, or the client's own timeout when it is stopped).
fn under_load(rig: &mut Rig, what: &str, responder_down: bool, fault: impl FnOnce(&mut Rig)) {
    let fds = (open_fds(rig.responder.pid()), open_fds(rig.initiator.pid()));
    let load = Load::start(rig.r.egress);
    std::thread::sleep(Duration::from_millis(500));
    let steady = load.since(Instant::now() - Duration::from_millis(400));
    assert!(
        steady
            .iter()
            .any(|o| matches!(o, Outcome::Answered(200, ..))),
        "{what}: no steady traffic before the fault: {steady:?}\n{}",
        rig.logs()
    );
    let fault_start = Instant::now();
    fault(rig);
    let fault_end = Instant::now();
    // Recovery: the first 200 answered after the fault ended.
    let recovered = wait_until(MAX_BACKOFF + Duration::from_secs(6), || {
        load.since(fault_end)
            .iter()
            .any(|o| matches!(o, Outcome::Answered(200, ..)))
    });
    let recovery = fault_end.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let during = load.since(fault_start);
    load.stop();
    assert!(recovered, "{what}: no 200 after the fault\n{}", rig.logs());
    // A request sent just as the fault ended may still be finishing; the first 200 must come
    // within the backoff cap + 2 s plus one route timeout for the request already in flight.
    let bound = MAX_BACKOFF + Duration::from_secs(2) + ROUTE_TIMEOUT;
    assert!(
        recovery <= bound,
        "{what}: recovered after {recovery:?} (> {bound:?})"
    );

    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for o in &during {
        match o {
            Outcome::Answered(200, _, took) => {
                assert!(
                    *took <= ROUTE_TIMEOUT + Duration::from_secs(1),
                    "{what}: a 200 took {took:?}"
                )
            }
            Outcome::Answered(status, local, took) => {
                assert!(
                    matches!(status, 502..=504) && *local,
                    "{what}: failure {status} (local reply: {local}) is not a 502/503/504 local reply"
                );
                assert!(
                    *took <= ROUTE_TIMEOUT + Duration::from_secs(1),
                    "{what}: a {status} took {took:?}, past the route timeout"
                );
                *failures.entry(status.to_string()).or_default() += 1;
            }
            Outcome::NoAnswer(kind, took) => {
                assert!(
                    responder_down,
                    "{what}: a request got no answer ({kind} after {took:?}) while the responder was up\n{}",
                    rig.logs()
                );
                *failures.entry(format!("no answer ({kind})")).or_default() += 1;
            }
        }
    }
    // Descriptors back to their level (a little slack for pooled connections in flux).
    let settled = wait_until(Duration::from_secs(5), || {
        open_fds(rig.responder.pid()) <= fds.0 + 8 && open_fds(rig.initiator.pid()) <= fds.1 + 8
    });
    let now = (open_fds(rig.responder.pid()), open_fds(rig.initiator.pid()));
    assert!(settled, "{what}: descriptors {fds:?} before, {now:?} after");
    println!(
        "{what}: {} requests, failures {failures:?}, recovered {recovery:.2?} after the fault; \
         fds (responder, initiator) {fds:?} -> {now:?}; RSS {} / {} KiB",
        during.len(),
        rss_kib(rig.responder.pid()),
        rss_kib(rig.initiator.pid()),
    );
}

fn pause(rig: &Rig, pid: i32, for_: Duration) {
    let _ = rig;
    // SAFETY: signals to our own child processes.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(for_);
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

#[test]
fn the_initiator_killed_paused_and_its_path_cut() {
    let mut rig = Rig::start("faults-initiator");
    under_load(&mut rig, "initiator SIGKILL", false, |rig| {
        rig.initiator.kill();
        std::thread::sleep(Duration::from_secs(2));
        rig.initiator = rig.i.spawn(&rig.dir, "initiator-2");
    });
    under_load(&mut rig, "initiator SIGSTOP 3s", false, |rig| {
        pause(rig, rig.initiator.pid(), Duration::from_secs(3))
    });
    under_load(&mut rig, "tunnel path blackholed 3s", false, |rig| {
        rig.relay.blackhole(true);
        std::thread::sleep(Duration::from_secs(3));
        rig.relay.blackhole(false);
    });
    under_load(&mut rig, "tunnel path slow and lossy 3s", false, |rig| {
        rig.relay.degrade(Duration::from_millis(50), 20);
        std::thread::sleep(Duration::from_secs(3));
        rig.relay.degrade(Duration::ZERO, 0);
    });
}

#[test]
fn the_local_service_killed_and_paused() {
    let mut rig = Rig::start("faults-service");
    under_load(&mut rig, "service SIGKILL", false, |rig| {
        rig.service.kill();
        std::thread::sleep(Duration::from_secs(2));
        rig.service = spawn_service(&rig.dir, "svc-2", rig.svc_port);
    });
    under_load(&mut rig, "service SIGSTOP 3s", false, |rig| {
        pause(rig, rig.service.pid(), Duration::from_secs(3))
    });
}

#[test]
fn the_responder_killed_and_paused() {
    let mut rig = Rig::start("faults-responder");
    under_load(&mut rig, "responder SIGSTOP 2s", true, |rig| {
        pause(rig, rig.responder.pid(), Duration::from_secs(2))
    });
    under_load(&mut rig, "responder SIGKILL", true, |rig| {
        rig.responder.kill();
        std::thread::sleep(Duration::from_secs(1));
        rig.responder = rig.r.spawn(&rig.dir, "responder-2");
    });
}
