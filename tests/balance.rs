//! Connection balance on the egress listener, end to end: with `connection_balance: exact` (the
//! default), keep-alive client connections opened one after another are even over the responder's
//! two shards at every step, whichever shard the kernel's reuseport hash gives each one, and every
//! request on a moved connection is served. The shard that served each request is read from the
//! access log (its `shard` field).
//!
//! Without the balance the kernel's hash keeps the split within one at every one of 16 steps
//! only one time in 256 (the 2nd, 4th, ... connection must each land on the emptier shard), so the
//! test fails when balancing does not happen.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
const CONNECTIONS: usize = 16;

/// `GET path` on `s`, which stays open, and the response read to the end of its
/// content-length body.
fn exchange(s: &mut TcpStream, port: u16, path: &str) -> Response {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-node-id: n1\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(resp) = parse_response(&raw, false) {
            let complete = resp
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| resp.body.len() == n);
            if complete {
                return resp;
            }
        }
        let n = s.read(&mut buf).expect("read the response");
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The shard of each `/balance/{k}` request in the access log, by k; waits for all of them.
fn shards_by_request(log: &Path) -> Vec<u64> {
    let mut shards = Vec::new();
    let all_logged = wait_until(WAIT, || {
        let text = fs::read_to_string(log).unwrap_or_default();
        let mut found = vec![None; CONNECTIONS];
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            let path = v["path"].as_str().unwrap_or("");
            if let Some(k) = path.strip_prefix("/balance/") {
                if let (Ok(k), Some(shard)) = (k.parse::<usize>(), v["shard"].as_u64()) {
                    if let Some(slot) = found.get_mut(k) {
                        *slot = Some(shard);
                    }
                }
            }
        }
        shards = found.iter().flatten().copied().collect();
        shards.len() == CONNECTIONS
    });
    assert!(
        all_logged,
        "{} of {CONNECTIONS} requests in the access log:\n{}",
        shards.len(),
        fs::read_to_string(log).unwrap_or_default()
    );
    shards
}

#[test]
fn by_default_keep_alive_connections_stay_even_over_shards() {
    let dir = TempDir::new("balance-exact");
    let log = dir.join("responder.access");
    let svc = port();
    let _service = spawn_service(&dir, "svc-1", svc);
    // The default: `connection_balance: exact`.
    let r = ResponderOpts {
        shards: 2,
        ..ResponderOpts::new()
    };
    let top = format!("access_log:\n  path: {}\n  format: json\n", log.display());
    let responder = spawn_rtun(&dir, "responder", &format!("{top}{}", r.yaml()));
    assert!(
        wait_for_port(r.egress, WAIT),
        "responder did not listen\n{}",
        responder.log_text()
    );
    let _initiator = InitiatorOpts::new("n1", "c1", r.tunnel, svc).spawn(&dir, "initiator");
    assert!(wait_tunnels(&r, "n1", 1, WAIT), "tunnel did not come up");
    // The readiness probes' connections are closed; let their shards count them off.
    std::thread::sleep(Duration::from_millis(300));

    let mut open = Vec::new();
    for k in 0..CONNECTIONS {
        let mut s = TcpStream::connect(addr(r.egress)).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let resp = exchange(&mut s, r.egress, &format!("/balance/{k}"));
        assert_eq!(resp.status, 200, "request {k}: {}", resp.text());
        assert_eq!(resp.header("x-served-by"), Some("svc-1"));
        open.push(s);
    }
    // A second request on every connection: a moved connection keeps working.
    for (k, s) in open.iter_mut().enumerate() {
        let resp = exchange(s, r.egress, &format!("/again/{k}"));
        assert_eq!(resp.status, 200, "second request on connection {k}");
    }

    let shards = shards_by_request(&log);
    let mut per_shard = [0usize; 2];
    for (k, &shard) in shards.iter().enumerate() {
        per_shard[shard as usize] += 1;
        assert!(
            per_shard[0].abs_diff(per_shard[1]) <= 1,
            "after {} connections the shards hold {per_shard:?}; shards in order: {shards:?}\n{}",
            k + 1,
            responder.log_text()
        );
    }
    let moved = admin_stat(r.admin, "egress_connections_rebalanced");
    assert!(
        moved <= CONNECTIONS as u64,
        "{moved} moves for {CONNECTIONS} connections"
    );
    assert!(
        admin_get(r.admin, "/metrics")
            .unwrap_or_default()
            .contains("rtun_egress_connections_rebalanced_total"),
        "the moves are a metric"
    );
}
