//! Bad and stalled handshakes on the tunnel listener, while live traffic goes on.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn handshake(path: &str, method: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s.into_bytes()
}

const NODE: &str = "x-envoy-reverse-tunnel-node-id";
const CLUSTER: &str = "x-envoy-reverse-tunnel-cluster-id";
const TENANT: &str = "x-envoy-reverse-tunnel-tenant-id";
const PATH: &str = "/reverse_connections/request";

#[test]
fn bad_handshakes_rejected_while_traffic_continues() {
    let s = Stack::start("bad-handshakes", ResponderOpts::new(), 2, |_| {});
    let (egress, tunnel, admin) = (s.r.egress, s.r.tunnel, s.r.admin);
    let r400 = admin_stat(admin, "handshake_rejected_400");
    let r404 = admin_stat(admin, "handshake_rejected_404");

    // Live traffic through the tunnels for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let traffic = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match get(egress, "/live", &[("x-node-id", "n1")]) {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        bad.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("{other:?}"));
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            errors
        })
    };

    let good_ids = [(NODE, "evil"), (CLUSTER, "evil-c"), (TENANT, "t")];
    let upgrade_ids = [
        ("connection", "upgrade"),
        ("upgrade", "reverse-tunnel"),
        (NODE, "evil"),
        (CLUSTER, "evil-c"),
        (TENANT, "t"),
    ];
    let t = Duration::from_secs(3);
    let mut checks: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "wrong path",
            handshake("/wrong/path", "GET", &good_ids, ""),
            &[404],
        ),
        (
            "missing node header",
            handshake(PATH, "GET", &[(CLUSTER, "c"), (TENANT, "t")], ""),
            &[400],
        ),
        (
            "missing cluster header",
            handshake(PATH, "GET", &[(NODE, "n"), (TENANT, "t")], ""),
            &[400],
        ),
        (
            "node id with ':'",
            handshake(
                PATH,
                "GET",
                &[(NODE, "a:b"), (CLUSTER, "c"), (TENANT, "t")],
                "",
            ),
            &[400],
        ),
        (
            "empty node id",
            handshake(
                PATH,
                "GET",
                &[(NODE, ""), (CLUSTER, "c"), (TENANT, "t")],
                "",
            ),
            &[400],
        ),
        (
            "POST with a body",
            handshake(PATH, "POST", &good_ids, "hello"),
            &[400, 404],
        ),
        (
            "GET with a body",
            handshake(PATH, "GET", &good_ids, "hello"),
            &[400],
        ),
        (
            "upgrade with a body",
            handshake(PATH, "GET", &upgrade_ids, "hello"),
            &[400],
        ),
        (
            "upgrade to another protocol",
            handshake(
                PATH,
                "GET",
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    (NODE, "evil"),
                    (CLUSTER, "evil-c"),
                ],
                "",
            ),
            &[400],
        ),
        (
            "upgrade to a wrong path",
            handshake("/wrong/path", "GET", &upgrade_ids, ""),
            &[404],
        ),
        (
            "garbage with CRLFCRLF",
            b"\x16\x03\x01\x02\x00garbage\x00\xff\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all".to_vec(),
            &[400],
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &[400, 404],
        ),
    ];
    let long = "n".repeat(256);
    checks.push((
        "256-byte node id",
        handshake(PATH, "GET", &[(NODE, long.as_str()), (CLUSTER, "c")], ""),
        &[400],
    ));
    let huge = "v".repeat(20 * 1024);
    checks.push((
        "20 KiB handshake",
        handshake(
            PATH,
            "GET",
            &[(NODE, "n"), (CLUSTER, "c"), ("x-pad", huge.as_str())],
            "",
        ),
        &[400, 431],
    ));

    let mut failures = Vec::new();
    for (what, bytes, expected) in &checks {
        let started = Instant::now();
        let reply = raw_exchange(tunnel, bytes, t);
        let status = status_of(&reply);
        if !status.is_some_and(|st| expected.contains(&st)) {
            failures.push(format!(
                "{what}: expected {expected:?}, got {status:?} after {:?}: {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&reply)
            ));
        }
    }

    // Truncated handshakes, then close: nothing to answer, nothing may break.
    for cut in [1usize, 10, 40, 80] {
        let full = handshake(PATH, "GET", &good_ids, "");
        let mut sock = TcpStream::connect(addr(tunnel)).unwrap();
        sock.write_all(&full[..cut.min(full.len() - 1)]).unwrap();
        drop(sock);
    }
    // One truncated with a half close, reading what comes back.
    {
        let full = handshake(PATH, "GET", &good_ids, "");
        let mut sock = TcpStream::connect(addr(tunnel)).unwrap();
        sock.set_read_timeout(Some(t)).unwrap();
        sock.write_all(&full[..30]).unwrap();
        half_close(&sock);
        let mut out = Vec::new();
        let res = sock.read_to_end(&mut out);
        if let Err(e) = res {
            failures.push(format!(
                "truncated + half close: not closed within {t:?}: {e}"
            ));
        } else if !out.is_empty() && status_of(&out) != Some(400) {
            failures.push(format!(
                "truncated + half close answered {:?}",
                String::from_utf8_lossy(&out)
            ));
        }
    }

    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let errors = traffic.join().unwrap();
    assert!(
        failures.is_empty(),
        "handshake checks failed:\n{}",
        failures.join("\n")
    );
    assert!(
        errors.is_empty(),
        "live traffic failed {} times (ok {}): {errors:?}",
        bad.load(Ordering::SeqCst),
        ok.load(Ordering::SeqCst)
    );
    assert!(
        ok.load(Ordering::SeqCst) > 10,
        "too little live traffic: {}",
        ok.load(Ordering::SeqCst)
    );

    // The process is alive, the real node unaffected, no bogus node registered.
    assert_eq!(tunnels_of(admin, "n1"), 2, "{:?}", admin_tunnels(admin));
    assert_eq!(tunnels_of(admin, "evil"), 0, "{:?}", admin_tunnels(admin));
    let r404_after = admin_stat(admin, "handshake_rejected_404");
    let r400_after = admin_stat(admin, "handshake_rejected_400");
    assert!(
        r404_after > r404,
        "handshake_rejected_404 {r404} -> {r404_after}"
    );
    assert!(
        r400_after >= r400 + 9,
        "handshake_rejected_400 {r400} -> {r400_after}"
    );
    let resp = get(egress, "/still", &[("x-node-id", "n1")]).unwrap();
    assert_eq!(resp.status, 200);
}

#[test]
fn fifty_stalled_handshakes_closed_after_handshake_timeout() {
    let dir = TempDir::new("stalled");
    let r = ResponderOpts {
        handshake_timeout: "1s".into(),
        ..ResponderOpts::new()
    };
    let _responder = r.spawn(&dir, "responder");
    let before = admin_stat(r.admin, "handshake_timeout");
    let mut socks = Vec::new();
    for k in 0..50 {
        let mut s = TcpStream::connect(addr(r.tunnel)).unwrap();
        match k % 3 {
            0 => {} // nothing at all
            1 => s
                .write_all(b"GET /reverse_connections/request HTTP/1.1\r\nhost: x\r\n")
                .unwrap(),
            _ => s.write_all(b"GE").unwrap(),
        }
        socks.push(s);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1 + 2);
    let mut failures = Vec::new();
    let mut first_close = None;
    for (k, s) in socks.iter_mut().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).unwrap();
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => {
                if !out.is_empty() && status_of(&out) != Some(408) {
                    failures.push(format!("{k}: answered {:?}", String::from_utf8_lossy(&out)));
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => failures.push(format!(
                "{k}: still open after {:?}: {e}",
                started.elapsed()
            )),
        }
        first_close.get_or_insert(started.elapsed());
    }
    assert!(
        failures.is_empty(),
        "{} of 50 stalled handshakes not closed in time:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let first = first_close.unwrap();
    assert!(
        first >= Duration::from_millis(800),
        "first stalled handshake closed after only {first:?}"
    );
    let counted = wait_until(Duration::from_secs(1), || {
        admin_stat(r.admin, "handshake_timeout") - before == 50
    });
    assert!(
        counted,
        "handshake_timeout counter {before} -> {}",
        admin_stat(r.admin, "handshake_timeout")
    );
    // The listener still works.
    let reply = raw_exchange(
        r.tunnel,
        &handshake("/nope", "GET", &[], ""),
        Duration::from_secs(2),
    );
    assert_eq!(status_of(&reply), Some(404));
}
