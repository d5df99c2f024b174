//! Operations: listeners that belong to one process, connection caps, and the probes
//! (`/ready`, `/healthz`) an orchestrator reads.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// GET an admin path as (status, text); `None` when nothing answers.
fn probe(port: u16, path: &str) -> Option<(u16, String)> {
    get(port, path, &[])
        .ok()
        .map(|r| (r.status, r.text().trim_end().to_owned()))
}

/// Waits for a second `rtun run` of `yaml` to exit; returns its status and log.
fn second_run(dir: &TempDir, name: &str, yaml: &str) -> (bool, String) {
    let mut second = spawn_rtun(dir, name, yaml);
    let status = second.wait_exit(WAIT);
    let log = second.log_text();
    let status = status.unwrap_or_else(|| panic!("{name} did not exit: it runs\n{log}"));
    (status.success(), log)
}

/// Every one of `n` requests on fresh connections reaches the service through the tunnel.
fn all_served(r: &ResponderOpts, n: usize) {
    for k in 0..n {
        let resp = get(r.egress, &format!("/k/{k}"), &[("x-node-id", "n1")]).expect("egress");
        assert_eq!(resp.status, 200, "request {k}: {}", resp.text());
    }
}

#[test]
fn a_second_process_on_the_same_ports_exits_naming_the_port() {
    let r = ResponderOpts {
        shards: 2,
        ..ResponderOpts::new()
    };
    let s = Stack::start("ops-second-process", r.clone(), 1, |_| {});
    let yaml = r.yaml();

    // The very same configuration: the admin port is taken first.
    let (ok, log) = second_run(&s.dir, "same-config", &yaml);
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!("admin.listen: port {}", r.admin)) && log.contains("already in use"),
        "{log}"
    );
    // Its own admin port: the tunnel listener's port is named, and the holder is rtun.
    let own_admin = ResponderOpts {
        admin: port(),
        ..r.clone()
    };
    let (ok, log) = second_run(&s.dir, "own-admin", &own_admin.yaml());
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!(
            "rtun: cannot start: responder.tunnel_listener.listen: port {} (127.0.0.1:{}) is \
             already in use by another rtun process",
            r.tunnel, r.tunnel
        )),
        "{log}"
    );
    assert!(!log.contains("rtun started"), "{log}");
    // Only the egress port shared: that one is named.
    let egress_only = ResponderOpts {
        admin: port(),
        tunnel: port(),
        ..r.clone()
    };
    let (ok, log) = second_run(&s.dir, "egress-only", &egress_only.yaml());
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!(
            "responder.egress_listener.listen: port {}",
            r.egress
        )),
        "{log}"
    );
    // A port held by a process that is not rtun.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let foreign_port = foreign.local_addr().expect("addr").port();
    let held = ResponderOpts {
        admin: port(),
        tunnel: port(),
        egress: foreign_port,
        ..r.clone()
    };
    let (ok, log) = second_run(&s.dir, "foreign", &held.yaml());
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!(
            "responder.egress_listener.listen: port {foreign_port} (127.0.0.1:{foreign_port}) \
             is already in use by another process"
        )),
        "{log}"
    );

    // The first one kept every connection: had the second joined its ports, some of these
    // fresh connections would have landed there and found no tunnel.
    all_served(&s.r, 60);
    assert_eq!(probe(r.admin, "/ready"), Some((200, "ready".into())));
}

/// Opens `n` connections to `port` and keeps them idle.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(addr(port)).expect("connect"))
        .collect()
}

/// True when the server closed `conn` without a word within a second.
fn closed_at_once(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn connections_beyond_the_caps_are_closed_at_once_and_counted() {
    let dir = TempDir::new("ops-caps");
    let r = ResponderOpts {
        shards: 2,
        egress_extra: "    max_connections: 20\n".into(),
        tunnel_extra: "    max_handshakes_in_progress: 3\n".into(),
        handshake_timeout: "30s".into(),
        ..ResponderOpts::new()
    };
    let responder = r.spawn(&dir, "responder");
    let stat = |name: &str| admin_stat(r.admin, name);

    // Egress: 20 idle clients fill the cap (across both shards); 30 more are turned away.
    let held = idle_connections(r.egress, 20);
    assert!(
        wait_until(WAIT, || stat("egress_connections_open") == 20),
        "{:?}",
        admin_stats(r.admin)
    );
    let mut extra = idle_connections(r.egress, 30);
    let refused = extra
        .iter_mut()
        .map(closed_at_once)
        .filter(|&closed| closed)
        .count();
    assert_eq!(refused, 30);
    assert_eq!(stat("egress_connections_refused"), 30);
    assert_eq!(stat("egress_connections_open"), 20);
    // The held ones are still served, and a freed place is taken again.
    drop(held);
    assert!(wait_until(WAIT, || stat("egress_connections_open") == 0));
    let resp = get(r.egress, "/x", &[("x-node-id", "nobody")]).expect("served");
    assert_eq!(resp.status, 503, "{}", resp.text());

    // Tunnel listener: 3 connections that never send a handshake fill the cap.
    let stalled = idle_connections(r.tunnel, 3);
    assert!(wait_until(WAIT, || stat("handshakes_in_progress") == 3));
    let mut more = idle_connections(r.tunnel, 5);
    assert_eq!(
        more.iter_mut()
            .map(closed_at_once)
            .filter(|&closed| closed)
            .count(),
        5
    );
    assert_eq!(stat("handshakes_refused_busy"), 5);
    // An initiator gets in once they are gone.
    drop(stalled);
    assert!(wait_until(WAIT, || stat("handshakes_in_progress") == 0));
    let svc = port();
    let _service = spawn_service(&dir, "svc-1", svc);
    let _initiator = InitiatorOpts::new("n1", "c1", r.tunnel, svc).spawn(&dir, "initiator");
    assert!(wait_tunnels(&r, "n1", 1, WAIT));
    // A tunnel that runs no longer counts as a handshake in progress.
    assert_eq!(stat("handshakes_in_progress"), 0);
    drop(responder);
}

/// An initiator with two tunnels entries: one to `live`, one to `dead` (nothing listens).
fn two_entry_initiator(admin: u16, live: u16, dead: u16, svc: u16, ready_when: &str) -> String {
    format!(
        "shards: 2\n\
         admin: {{ listen: 127.0.0.1:{admin}{ready_when} }}\n\
         drain_timeout: 1s\n\
         clusters:\n\
         \x20 local-app: {{ endpoints: [\"127.0.0.1:{svc}\"] }}\n\
         \x20 live: {{ endpoints: [\"127.0.0.1:{live}\"], connect_timeout: 1s }}\n\
         \x20 dead: {{ endpoints: [\"127.0.0.1:{dead}\"], connect_timeout: 1s }}\n\
         initiator:\n\
         \x20 tunnels: [\"rc://n1:c1:t@live:2\", \"rc://n1:c1:t@dead:1\"]\n\
         \x20 routes: [{{ prefix: /, cluster: local-app }}]\n\
         \x20 initial_reconnect_backoff: 100ms\n\
         \x20 max_reconnect_backoff: 500ms\n"
    )
}

#[test]
fn the_initiator_is_ready_when_every_tunnels_entry_has_a_tunnel() {
    let dir = TempDir::new("ops-initiator-ready");
    let live = ResponderOpts::new();
    let dead = ResponderOpts::new();
    let _live = live.spawn(&dir, "live");
    let svc = port();
    let _service = spawn_service(&dir, "svc-1", svc);
    let (all_admin, any_admin) = (port(), port());
    let yaml = two_entry_initiator(all_admin, live.tunnel, dead.tunnel, svc, "");
    let _all = spawn_rtun(&dir, "initiator-all", &yaml);
    let yaml = two_entry_initiator(
        any_admin,
        live.tunnel,
        dead.tunnel,
        svc,
        ", ready_when: any",
    );
    let _any = spawn_rtun(&dir, "initiator-any", &yaml);
    assert!(wait_for_port(all_admin, WAIT) && wait_for_port(any_admin, WAIT));

    // The case: dials fail again and again, and /ready must not say 200.
    assert!(wait_until(WAIT, || admin_stat(
        all_admin,
        "initiator_dial_failures"
    ) >= 3));
    assert!(wait_until(WAIT, || tunnels_of(live.admin, "n1") == 4));
    assert_eq!(
        probe(all_admin, "/ready"),
        Some((
            503,
            "not ready: no tunnel up for initiator.tunnels[1] (to dead)".into()
        ))
    );
    assert_eq!(probe(all_admin, "/healthz"), Some((200, "ok".into())));
    // `any`: one entry up is enough.
    assert_eq!(probe(any_admin, "/ready"), Some((200, "ready".into())));

    // The missing responder appears: ready.
    let mut dead_proc = dead.spawn(&dir, "dead");
    assert!(
        wait_until(WAIT, || probe(all_admin, "/ready")
            == Some((200, "ready".into()))),
        "{:?}",
        probe(all_admin, "/ready")
    );
    // It goes away again: not ready, still alive.
    dead_proc.kill();
    assert!(
        wait_until(WAIT, || probe(all_admin, "/ready")
            .is_some_and(|(s, _)| s == 503)),
        "{:?}",
        probe(all_admin, "/ready")
    );
    assert_eq!(probe(all_admin, "/healthz"), Some((200, "ok".into())));
}

#[test]
fn the_responder_is_ready_until_it_drains_and_alive_until_it_exits() {
    let r = ResponderOpts {
        shards: 2,
        drain_timeout: "5s".into(),
        ..ResponderOpts::new()
    };
    let mut s = Stack::start("ops-responder-ready", r.clone(), 1, |_| {});
    assert_eq!(probe(r.admin, "/ready"), Some((200, "ready".into())));
    assert_eq!(probe(r.admin, "/healthz"), Some((200, "ok".into())));

    // A slow request keeps the drain going while the probes are read. (The setup's probes
    // already counted: wait for this one, then give it time to reach the service.)
    let before = admin_stat(r.admin, "egress_requests");
    let egress = r.egress;
    let slow = std::thread::spawn(move || {
        get(egress, "/delay/2500", &[("x-node-id", "n1")]).map(|resp| resp.status)
    });
    assert!(wait_until(WAIT, || admin_stat(r.admin, "egress_requests") > before));
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    s.responder.signal(libc::SIGTERM);
    assert!(
        // Draining, and soon its listeners closed too: "not ready: draining; …".
        wait_until(WAIT, || probe(r.admin, "/ready").is_some_and(
            |(status, text)| status == 503 && text.starts_with("not ready: draining")
        )),
        "{:?}",
        probe(r.admin, "/ready")
    );
    let healthz = probe(r.admin, "/healthz");
    assert_eq!(
        healthz,
        Some((200, "ok".into())),
        "{}",
        s.responder.log_text()
    );
    assert_eq!(slow.join().expect("thread").expect("slow request"), 200);
    let status = s.responder.wait_exit(WAIT).expect("exits after the drain");
    assert!(status.success());
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert_eq!(probe(r.admin, "/healthz"), None);
}
