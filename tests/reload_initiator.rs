//! Hot reload of the initiator, end to end: the real binary, a real SIGHUP after rewriting its
//! configuration file, and a client loop through responder → tunnel → initiator → service
//! that must see ZERO failed requests across each change.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// The initiator's file, written by each test.
struct InitiatorFile {
    shards: usize,
    admin: u16,
    tunnel: u16,
    /// `name: port` of local clusters.
    clusters: Vec<(String, u16)>,
    /// YAML flow items of `initiator.tunnels`.
    tunnels: Vec<String>,
    /// YAML flow items of `initiator.routes`.
    routes: Vec<String>,
}

impl InitiatorFile {
    fn yaml(&self) -> String {
        let mut y = format!(
            "shards: {}\nadmin: {{ listen: 127.0.0.1:{} }}\ndrain_timeout: 5s\nclusters:\n  responder: {{ endpoints: [\"127.0.0.1:{}\"], connect_timeout: 1s }}\n",
            self.shards, self.admin, self.tunnel
        );
        for (name, port) in &self.clusters {
            y += &format!("  {name}: {{ endpoints: [\"127.0.0.1:{port}\"] }}\n");
        }
        y += &format!(
            "initiator:\n  initial_reconnect_backoff: 100ms\n  max_reconnect_backoff: 1s\n  tunnels: [{}]\n  routes: [{}]\n",
            self.tunnels.join(", "),
            self.routes.join(", ")
        );
        y
    }

    fn path(dir: &TempDir) -> std::path::PathBuf {
        dir.join("initiator.yaml")
    }

    fn spawn(&self, dir: &TempDir) -> Proc {
        let path = dir.write("initiator.yaml", self.yaml());
        let p = Proc::spawn(
            dir,
            "initiator",
            RTUN,
            &["run", "-c", path.to_str().unwrap()],
        );
        assert!(wait_for_port(self.admin, Duration::from_secs(10)));
        p
    }

    /// Rewrites the file and sends SIGHUP.
    fn reload(&self, dir: &TempDir, initiator: &Proc) {
        std::fs::write(Self::path(dir), self.yaml()).expect("rewrite config");
        initiator.signal(libc::SIGHUP);
    }
}

/// What the client loop saw.
#[derive(Default, Debug)]
struct Seen {
    /// (path, served by) of each 200.
    ok: Vec<(String, String)>,
    /// Every other outcome, described.
    failed: Vec<String>,
}

/// Client threads looping over `paths` (each with `x-node-id: node`) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(egress: u16, node: &str, paths: &[&str], threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let threads = (0..threads)
            .map(|t| {
                let (stop, seen) = (stop.clone(), seen.clone());
                let node = node.to_owned();
                let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
                std::thread::spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let path = &paths[i % paths.len()];
                        i += 1;
                        let got = get(egress, path, &[("x-node-id", &node)]);
                        let mut seen = seen.lock().unwrap();
                        match got {
                            Ok(r) if r.status == 200 => {
                                let by = r.header("x-served-by").unwrap_or("?").to_owned();
                                seen.ok.push((path.clone(), by));
                            }
                            Ok(r) => seen
                                .failed
                                .push(format!("{path}: {} {}", r.status, r.text())),
                            Err(e) => seen.failed.push(format!("{path}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            threads,
        }
    }

    /// Served-by of the 200s to `path` so far.
    fn served(&self, path: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.ok
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, by)| by.clone())
            .collect()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().ok.len()
    }

    /// Waits until the last `n` answers to `path` were all served by `by`.
    fn wait_served_by(&self, path: &str, by: &str, n: usize) -> bool {
        wait_until(WAIT, || {
            let served = self.served(path);
            served.len() >= n && served[served.len() - n..].iter().all(|b| b == by)
        })
    }

    /// Stops the loop and asserts that no request failed; returns what it saw.
    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("client thread");
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        assert!(
            seen.failed.is_empty(),
            "{} of {} requests failed across the reload: {:?}",
            seen.failed.len(),
            seen.failed.len() + seen.ok.len(),
            &seen.failed[..seen.failed.len().min(10)]
        );
        assert!(
            seen.ok.len() > 20,
            "the load ran: {} requests",
            seen.ok.len()
        );
        seen
    }
}

/// A responder, services `svc-a` and `svc-b`, and the initiator file with node `n1`'s
/// tunnels (2, one per shard) and `/ → a`.
struct Setup {
    dir: TempDir,
    r: ResponderOpts,
    _responder: Proc,
    svc_a: Proc,
    _svc_b: Proc,
    port_a: u16,
    port_b: u16,
    file: InitiatorFile,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = TempDir::new(name);
        let (port_a, port_b) = (port(), port());
        let svc_a = spawn_service(&dir, "svc-a", port_a);
        let svc_b = spawn_service(&dir, "svc-b", port_b);
        let mut r = ResponderOpts::new();
        r.drain_timeout = "5s".into();
        let responder = r.spawn(&dir, "responder");
        let file = InitiatorFile {
            shards: 2,
            admin: port(),
            tunnel: r.tunnel,
            clusters: vec![("a".into(), port_a), ("b".into(), port_b)],
            tunnels: vec!["\"rc://n1:c1:t@responder:2\"".into()],
            routes: vec!["{ prefix: /, cluster: a }".into()],
        };
        Setup {
            dir,
            r,
            _responder: responder,
            svc_a,
            _svc_b: svc_b,
            port_a,
            port_b,
            file,
        }
    }

    fn start(&self) -> Proc {
        let initiator = self.file.spawn(&self.dir);
        assert!(
            wait_tunnels(&self.r, "n1", 2, WAIT),
            "tunnels: {:?}",
            admin_tunnels(self.r.admin)
        );
        initiator
    }
}

/// Established TCP connections to 127.0.0.1:`port` (either end), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "01" && f[2].ends_with(&port)
        })
        .count()
}

#[test]
fn a_route_added_sends_new_requests_to_its_cluster() {
    let mut s = Setup::new("reload-route");
    let initiator = s.start();
    let load = Load::start(s.r.egress, "n1", &["/b/x", "/"], 4);
    assert!(
        load.wait_served_by("/b/x", "svc-a", 10),
        "before: /b/x on a"
    );

    s.file.routes = vec![
        "{ prefix: /b, cluster: b }".into(),
        "{ prefix: /, cluster: a }".into(),
    ];
    s.file.reload(&s.dir, &initiator);
    assert!(
        load.wait_served_by("/b/x", "svc-b", 20),
        "after: /b/x reaches b; saw {:?}",
        load.served("/b/x").iter().rev().take(5).collect::<Vec<_>>()
    );
    // The route changed again: /b back to a, and / to b.
    s.file.routes = vec![
        "{ prefix: /b, cluster: a }".into(),
        "{ prefix: /, cluster: b }".into(),
    ];
    s.file.reload(&s.dir, &initiator);
    assert!(load.wait_served_by("/b/x", "svc-a", 20));
    assert!(load.wait_served_by("/", "svc-b", 20));
    let seen = load.finish();
    eprintln!("{} requests, none failed", seen.ok.len());
    // The tunnels were never touched.
    assert_eq!(tunnels_of(s.r.admin, "n1"), 2);
    assert!(initiator.log_text().contains("configuration applied"));
}

#[test]
fn a_moved_endpoint_takes_new_requests_while_in_flight_ones_finish() {
    let mut s = Setup::new("reload-endpoint");
    let initiator = s.start();
    let load = Load::start(s.r.egress, "n1", &["/"], 4);
    assert!(load.wait_served_by("/", "svc-a", 10));
    // A slow request in flight on a's pool across the reload.
    let (egress, slow_done) = (s.r.egress, Arc::new(Mutex::new(None)));
    let slow = {
        let done = slow_done.clone();
        std::thread::spawn(move || {
            let r = get(egress, "/delay/2000", &[("x-node-id", "n1")]);
            *done.lock().unwrap() =
                Some(r.map(|r| (r.status, r.header("x-served-by").map(str::to_owned))));
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // Cluster `a` now points at svc-b's port.
    s.file.clusters = vec![("a".into(), s.port_b), ("b".into(), s.port_a)];
    s.file.reload(&s.dir, &initiator);
    assert!(
        load.wait_served_by("/", "svc-b", 20),
        "new requests go to the new endpoint"
    );
    slow.join().expect("slow request");
    let slow = slow_done.lock().unwrap().take().expect("slow answered");
    let slow = slow.expect("slow request answered");
    assert_eq!(
        slow,
        (200, Some("svc-a".to_owned())),
        "the in-flight request finished on the old endpoint"
    );

    // The old pool closed its connections once its last request was done.
    assert!(
        wait_until(WAIT, || established_to(s.port_a) == 0),
        "connections to the old endpoint remain: {}",
        established_to(s.port_a)
    );
    // The old endpoint going away costs nothing: nothing uses the old pool any more.
    let before = load.count();
    s.svc_a.kill();
    assert!(wait_until(WAIT, || load.count() > before + 50));
    let seen = load.finish();
    eprintln!("{} requests, none failed", seen.ok.len());
    let _ = s.port_a;
}

#[test]
fn tunnels_entries_added_resized_and_removed() {
    let mut s = Setup::new("reload-tunnels");
    let initiator = s.start();
    let load = Load::start(s.r.egress, "n1", &["/"], 3);
    assert!(wait_until(WAIT, || load.count() > 10));

    // An entry added: n2's tunnels appear at the responder, and it answers.
    s.file.tunnels.push("\"rc://n2:c1:t@responder:2\"".into());
    s.file.reload(&s.dir, &initiator);
    assert!(
        wait_tunnels(&s.r, "n2", 2, WAIT),
        "n2 added: {:?}",
        admin_tunnels(s.r.admin)
    );
    assert!(
        admin_get(s.file.admin, "/ready").is_some(),
        "ready with both entries up"
    );

    // n1 grows from 2 to 3 tunnels (one shard gets a second slot).
    s.file.tunnels[0] = "\"rc://n1:c1:t@responder:3\"".into();
    s.file.reload(&s.dir, &initiator);
    assert!(
        wait_until(WAIT, || tunnels_of(s.r.admin, "n1") == 3),
        "n1 grown: {:?}",
        admin_tunnels(s.r.admin)
    );

    // A slow request on n2 in flight while n2 is removed.
    let egress = s.r.egress;
    let slow = std::thread::spawn(move || get(egress, "/delay/1500", &[("x-node-id", "n2")]));
    std::thread::sleep(Duration::from_millis(300));
    s.file.tunnels.pop();
    s.file.reload(&s.dir, &initiator);
    let slow = slow
        .join()
        .expect("slow thread")
        .expect("slow request answered");
    assert_eq!(
        slow.status,
        200,
        "n2's in-flight request finished: {}",
        slow.text()
    );
    assert!(
        wait_until(WAIT, || tunnels_of(s.r.admin, "n2") == 0),
        "n2 drained: {:?}",
        admin_tunnels(s.r.admin)
    );
    assert_eq!(tunnels_of(s.r.admin, "n1"), 3, "n1 untouched");

    // n1 shrinks back to 1.
    s.file.tunnels[0] = "\"rc://n1:c1:t@responder:1\"".into();
    s.file.reload(&s.dir, &initiator);
    assert!(
        wait_until(WAIT, || tunnels_of(s.r.admin, "n1") == 1),
        "n1 shrunk: {:?}",
        admin_tunnels(s.r.admin)
    );
    let before = load.count();
    assert!(wait_until(WAIT, || load.count() > before + 20));
    assert!(
        admin_get(s.file.admin, "/ready").is_some(),
        "a removed entry no longer counts"
    );
    let seen = load.finish();
    eprintln!("{} requests, none failed", seen.ok.len());

    // A changed identity is the old entry drained and a new one dialed: no restart.
    s.file.tunnels[0] = "\"rc://n3:c1:t@responder:2\"".into();
    s.file.reload(&s.dir, &initiator);
    assert!(
        wait_tunnels(&s.r, "n3", 2, WAIT),
        "n3 dialed: {:?}",
        admin_tunnels(s.r.admin)
    );
    assert!(
        wait_until(WAIT, || tunnels_of(s.r.admin, "n1") == 0),
        "n1 drained: {:?}",
        admin_tunnels(s.r.admin)
    );
}

#[test]
fn a_route_timeout_changed_applies_to_new_streams_only() {
    let mut s = Setup::new("reload-timeout");
    s.file.routes = vec![
        "{ prefix: /delay, cluster: a, timeout: 500ms }".into(),
        "{ prefix: /, cluster: a }".into(),
    ];
    let initiator = s.start();
    let node = [("x-node-id", "n1")];
    let r = get(s.r.egress, "/delay/1000", &node).expect("answer");
    assert_eq!(r.status, 504, "the 500ms route timeout holds: {}", r.text());

    let load = Load::start(s.r.egress, "n1", &["/"], 3);
    s.file.routes[0] = "{ prefix: /delay, cluster: a, timeout: 5s }".into();
    s.file.reload(&s.dir, &initiator);
    assert!(
        wait_until(WAIT, || get(s.r.egress, "/delay/1000", &node)
            .is_ok_and(|r| r.status == 200)),
        "the new 5s timeout applies"
    );
    // A stream started under 5s keeps it when the timeout shrinks meanwhile.
    let egress = s.r.egress;
    let slow = std::thread::spawn(move || get(egress, "/delay/1500", &[("x-node-id", "n1")]));
    std::thread::sleep(Duration::from_millis(300));
    s.file.routes[0] = "{ prefix: /delay, cluster: a, timeout: 500ms }".into();
    s.file.reload(&s.dir, &initiator);
    let slow = slow.join().expect("slow thread").expect("answered");
    assert_eq!(
        slow.status,
        200,
        "the in-flight stream kept its timeout: {}",
        slow.text()
    );
    assert!(wait_until(WAIT, || get(s.r.egress, "/delay/1000", &node)
        .is_ok_and(|r| r.status == 504)));
    let seen = load.finish();
    eprintln!("{} requests, none failed", seen.ok.len());
    let _ = s.port_b;
}

#[test]
fn a_dialed_clusters_endpoint_moved_moves_its_tunnels() {
    let s = Setup::new("reload-responder-endpoint");
    let initiator = s.start();
    let mut r2 = ResponderOpts::new();
    r2.drain_timeout = "5s".into();
    let _responder2 = r2.spawn(&s.dir, "responder-2");

    // The responder cluster's endpoint moves to the second responder: tunnels follow it.
    let mut file = InitiatorFile {
        tunnel: r2.tunnel,
        ..s.file
    };
    file.reload(&s.dir, &initiator);
    assert!(
        wait_tunnels(&r2, "n1", 2, WAIT),
        "at r2: {:?}",
        admin_tunnels(r2.admin)
    );
    assert!(
        wait_until(WAIT, || tunnels_of(s.r.admin, "n1") == 0),
        "drained from r1: {:?}",
        admin_tunnels(s.r.admin)
    );
    file.tunnel = s.r.tunnel;
    file.reload(&s.dir, &initiator);
    assert!(wait_tunnels(&s.r, "n1", 2, WAIT));
    assert!(wait_until(WAIT, || tunnels_of(r2.admin, "n1") == 0));
}
