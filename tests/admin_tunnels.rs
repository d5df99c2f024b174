//! `GET /tunnels` with the real binary: two tunnels of one node carry requests, and both ends'
//! admin endpoints list them as JSON — ids, shard, peer, streams, the bytes the requests moved,
//! the PING round trip — and as a text table with its header; `?tenant=` keeps one tenant's.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// The tunnels of a role on `/tunnels` (`role`: `responder` or `initiator`).
fn tunnels(admin: u16, role: &str, query: &str) -> Vec<Value> {
    admin_tunnels_json(admin, query)[role]["tunnels"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The sum of one numeric field over tunnels.
fn sum(tunnels: &[Value], field: &str) -> u64 {
    tunnels.iter().filter_map(|t| t[field].as_u64()).sum()
}

#[test]
fn tunnels_are_listed_with_their_traffic_on_both_ends() {
    let r = ResponderOpts {
        shards: 2,
        ping_interval: "300ms".into(),
        ..ResponderOpts::new()
    };
    let initiator_admin = port();
    let s = Stack::start("admin-tunnels", r, 2, |i| {
        i.admin = Some(initiator_admin);
        i.initiator_extra = "  ping_interval: 300ms\n".into();
    });
    let (radmin, iadmin) = (s.r.admin, initiator_admin);

    // Both ends list both tunnels, each with a round trip once a PING has come back.
    let measured = |admin, role| {
        let list = tunnels(admin, role, "");
        list.len() == 2 && list.iter().all(|t| t["rtt_ms"].as_f64().is_some())
    };
    assert!(
        wait_until(WAIT, || measured(radmin, "responder")
            && measured(iadmin, "initiator")),
        "responder {}\ninitiator {}",
        admin_tunnels_json(radmin, ""),
        admin_tunnels_json(iadmin, "")
    );
    let listing = admin_tunnels_json(radmin, "");
    assert!(
        listing["initiator"].is_null(),
        "no initiator here: {listing}"
    );
    assert_eq!(listing["responder"]["tenancy"], "shared");
    let before = tunnels(radmin, "responder", "");
    let mut ids: Vec<u64> = before.iter().filter_map(|t| t["id"].as_u64()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2, "{before:?}");
    for t in &before {
        assert_eq!(
            (&t["node"], &t["cluster"], &t["tenant"]),
            (&"n1".into(), &"c1".into(), &"t".into()),
            "{t}"
        );
        assert!(t["shard"].as_u64().is_some_and(|s| s < 2), "{t}");
        let peer = t["peer"].as_str().unwrap_or_default();
        assert!(peer.starts_with("127.0.0.1:"), "{t}");
        assert_eq!(
            (&t["tls"], &t["state"], &t["healthy"]),
            (&false.into(), &"up".into(), &true.into()),
            "{t}"
        );
        assert!(
            t["opened_at"]
                .as_str()
                .is_some_and(|at| at.ends_with('Z') && at.len() == 24),
            "{t}"
        );
        assert!(
            t["opened_at_unix_ms"]
                .as_u64()
                .is_some_and(|ms| ms > 1_600_000_000_000),
            "{t}"
        );
        assert!(
            t["age_seconds"].as_f64().is_some_and(|age| age >= 0.0),
            "{t}"
        );
        assert!(t["rtt_ms"].as_f64().is_some_and(|rtt| rtt >= 0.0), "{t}");
    }
    // The initiator's view: where each tunnel leads.
    for t in tunnels(iadmin, "initiator", "") {
        let responder = format!("127.0.0.1:{}", s.r.tunnel);
        assert_eq!(
            (t["endpoint"].as_str(), t["peer"].as_str()),
            (Some(&*responder), Some(&*responder)),
            "{t}"
        );
        assert_eq!(
            (&t["remote_cluster"], &t["node"], &t["state"]),
            (&"responder".into(), &"n1".into(), &"up".into()),
            "{t}"
        );
        assert!(t.get("healthy").is_none(), "{t}");
    }
    assert!(admin_tunnels_json(iadmin, "")["responder"].is_null());

    // A request in flight is an active stream on both ends.
    let egress = s.r.egress;
    let slow = std::thread::spawn(move || get(egress, "/delay/4000", &[("x-node-id", "n1")]));
    let busy = |admin, role| sum(&tunnels(admin, role, ""), "active_streams") == 1;
    let seen = wait_until(Duration::from_secs(4), || {
        busy(radmin, "responder") && busy(iadmin, "initiator")
    });
    let slow = slow
        .join()
        .expect("slow request thread")
        .expect("slow request");
    assert_eq!(slow.status, 200);
    assert!(seen, "{}", admin_tunnels_json(radmin, ""));

    // Requests through them: the bytes each way grow by at least the bodies they carried.
    let before = tunnels(radmin, "responder", "");
    let (sent0, received0) = (sum(&before, "bytes_sent"), sum(&before, "bytes_received"));
    let upload = noise(100_000);
    for k in 0..4 {
        let resp =
            http(s.r.egress, "POST", "/echo", &[("x-node-id", "n1")], &upload).expect("echo");
        assert_eq!((resp.status, resp.body.len()), (200, upload.len()), "{k}");
    }
    for k in 0..2 {
        let resp = get(s.r.egress, "/bytes/50000", &[("x-node-id", "c1")]).expect("bytes");
        assert_eq!((resp.status, resp.body.len()), (200, 50_000), "{k}");
    }
    let (up, down) = (4 * 100_000, 4 * 100_000 + 2 * 50_000);
    let idle = |admin, role| sum(&tunnels(admin, role, ""), "active_streams") == 0;
    assert!(wait_until(WAIT, || idle(radmin, "responder")
        && idle(iadmin, "initiator")));
    let after = tunnels(radmin, "responder", "");
    let (sent, received) = (
        sum(&after, "bytes_sent") - sent0,
        sum(&after, "bytes_received") - received0,
    );
    // HTTP/2 adds frame headers, request and response heads, PINGs and window updates: a few
    // percent, never less than the bodies.
    let near = |got: u64, body: u64| got >= body && got <= body + body / 50 + 16 * 1024;
    assert!(
        near(sent, up),
        "sent toward the node {sent}, bodies {up}: {after:?}"
    );
    assert!(
        near(received, down),
        "received from the node {received}, bodies {down}: {after:?}"
    );
    // What one end sent, the other received (PINGs may be in flight).
    let dialed = tunnels(iadmin, "initiator", "");
    for (ours, theirs) in [
        ("bytes_sent", "bytes_received"),
        ("bytes_received", "bytes_sent"),
    ] {
        let (a, b) = (sum(&after, ours), sum(&dialed, theirs));
        assert!(
            a.abs_diff(b) < 4096,
            "responder {ours} {a}, initiator {theirs} {b}"
        );
    }

    // The text form: a header naming every column, a row per tunnel.
    let text = get(radmin, "/tunnels?format=text", &[]).expect("admin");
    assert_eq!(text.status, 200);
    assert!(text
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let body = text.text();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("responder tunnels (2):"),
        "{body}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "NODE",
            "CLUSTER",
            "TENANT",
            "SHARD",
            "PEER",
            "TLS",
            "STATE",
            "AGE_S",
            "STREAMS",
            "BYTES_SENT",
            "BYTES_RECEIVED",
            "RTT_MS",
            "HEALTH"
        ],
        "{body}"
    );
    for row in &lines[2..4] {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), header.len(), "{body}");
        assert_eq!(&cells[1..4], ["n1", "c1", "t"], "{body}");
    }
    assert!(body.contains("\nresponder hosts (2):\nTENANT"), "{body}");
    let json = get(radmin, "/tunnels", &[]).expect("admin");
    assert_eq!(json.header("content-type"), Some("application/json"));
    let itext = admin_get(iadmin, "/tunnels?format=text").unwrap_or_default();
    assert!(itext.starts_with("initiator tunnels (2):\nID"), "{itext}");
    assert!(
        itext
            .lines()
            .nth(1)
            .is_some_and(|h| h.contains("REMOTE_CLUSTER") && h.contains("ENDPOINT")),
        "{itext}"
    );

    // A bad query is a 400 that says what the page takes.
    let bad = get(radmin, "/tunnels?format=xml", &[]).expect("admin");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("format=json or text"), "{}", bad.text());
}

#[test]
fn a_tenant_filter_keeps_one_tenants_tunnels() {
    let dir = TempDir::new("admin-tunnels-tenant");
    let r = ResponderOpts {
        egress_extra: "    tenant: { fixed: a }\n".into(),
        ..ResponderOpts::new()
    };
    let _responder = r.spawn(&dir, "responder");
    let mut procs = Vec::new();
    for t in ["a", "b"] {
        let svc = port();
        procs.push(spawn_service(&dir, &format!("svc-{t}"), svc));
        let mut i = InitiatorOpts::new(&format!("node-{t}"), "edge", r.tunnel, svc);
        i.tenant = t.into();
        procs.push(i.spawn(&dir, &format!("initiator-{t}")));
    }
    let up = wait_until(WAIT, || tunnels(r.admin, "responder", "").len() == 2);
    assert!(up, "{}", admin_tunnels_json(r.admin, ""));
    assert_eq!(
        admin_tunnels_json(r.admin, "")["responder"]["tenancy"],
        "isolated"
    );
    for t in ["a", "b"] {
        let query = format!("?tenant={t}");
        let listed = tunnels(r.admin, "responder", &query);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (&listed[0]["tenant"], &listed[0]["node"]),
            (&t.into(), &format!("node-{t}").into())
        );
        let hosts = admin_tunnels_json(r.admin, &query)["responder"]["hosts"].clone();
        let hosts = hosts.as_array().cloned().unwrap_or_default();
        assert_eq!(hosts.len(), 2, "node-{t} and edge: {hosts:?}");
        assert!(hosts.iter().all(|h| h["tenant"] == t), "{hosts:?}");
        let text =
            admin_get(r.admin, &format!("/tunnels?tenant={t}&format=text")).unwrap_or_default();
        assert!(text.starts_with("responder tunnels (1):"), "{text}");
    }
    assert!(tunnels(r.admin, "responder", "?tenant=c").is_empty());
}
