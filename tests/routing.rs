//! Requests through the tunnel: by node id (h1, h2c), by cluster id, local replies, the
//! cross-shard fallback, many concurrent streams over one tunnel, route timeouts.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn by_node_id_over_http1_and_h2c() {
    let s = Stack::start("node-h1-h2c", ResponderOpts::new(), 2, |_| {});
    let url = format!("http://127.0.0.1:{}/hello/world", s.r.egress);

    let h1 = curl(&["--http1.1", "-H", "x-node-id: n1", &url]);
    assert_eq!(h1.code, 0, "curl h1 failed: {}", h1.stderr);
    assert_eq!(h1.http_version, "1.1");
    assert_eq!(h1.status, 200, "h1: {h1:?}");
    assert_eq!(h1.header("x-served-by"), Some("svc-1"), "h1: {h1:?}");
    assert!(h1.text().contains("/hello/world"), "h1 body: {}", h1.text());

    let h2 = curl(&["--http2-prior-knowledge", "-H", "x-node-id: n1", &url]);
    assert_eq!(h2.code, 0, "curl h2c failed: {}", h2.stderr);
    assert_eq!(h2.http_version, "2");
    assert_eq!(h2.status, 200, "h2c: {h2:?}");
    assert_eq!(h2.header("x-served-by"), Some("svc-1"));
    assert!(
        h2.text().contains("/hello/world"),
        "h2c body: {}",
        h2.text()
    );

    // Bodies go both ways on both protocols.
    let echo = format!("http://127.0.0.1:{}/echo", s.r.egress);
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let out = curl(&[
            proto,
            "-H",
            "x-node-id: n1",
            "--data-binary",
            "ping-pong-body",
            &echo,
        ]);
        assert_eq!(out.status, 200, "{proto}: {out:?}");
        assert_eq!(out.text(), "ping-pong-body", "{proto}");
    }
    assert!(admin_stat(s.r.admin, "egress_requests") >= 4);
}

#[test]
fn by_cluster_id_across_three_initiators() {
    let dir = TempDir::new("cluster-share");
    let r = ResponderOpts {
        shards: 2,
        ..ResponderOpts::new()
    };
    let responder = r.spawn(&dir, "responder");
    let mut procs = Vec::new();
    for n in 1..=3 {
        let svc = port();
        let name = format!("svc-{n}");
        procs.push(spawn_service(&dir, &name, svc));
        let i = InitiatorOpts::new(&format!("node-{n}"), "shared", r.tunnel, svc);
        procs.push(i.spawn(&dir, &format!("initiator-{n}")));
    }
    for n in 1..=3 {
        assert!(
            wait_tunnels(&r, &format!("node-{n}"), 1, Duration::from_secs(10)),
            "node-{n} not up: {:?}",
            admin_tunnels(r.admin)
        );
    }
    assert!(
        tunnels_of(r.admin, "shared") >= 3,
        "{:?}",
        admin_tunnels(r.admin)
    );

    let mut served: HashMap<String, u32> = HashMap::new();
    for k in 0..60 {
        let resp = get(r.egress, &format!("/c/{k}"), &[("x-cluster-id", "shared")])
            .unwrap_or_else(|e| panic!("request {k}: {e}"));
        assert_eq!(resp.status, 200, "request {k}: {}", resp.text());
        let by = resp.header("x-served-by").expect("x-served-by").to_owned();
        *served.entry(by).or_default() += 1;
    }
    for n in 1..=3 {
        let name = format!("svc-{n}");
        assert!(
            served.get(&name).copied().unwrap_or(0) > 0,
            "{name} got no share: {served:?}"
        );
    }
    assert_eq!(served.values().sum::<u32>(), 60);
    drop(responder);
}

#[test]
fn local_replies_503_400_404() {
    let r = ResponderOpts {
        routes: "[{ prefix: /api }]".into(),
        probe_path: "/api/probe".into(),
        ..ResponderOpts::new()
    };
    let s = Stack::start("local-replies", r, 1, |_| {});
    let e = s.r.egress;
    // Reachable through the /api route.
    let ok = get(e, "/api/x", &[("x-node-id", "n1")]).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());

    let unknown = get(e, "/api/x", &[("x-node-id", "no-such-node-77")]).unwrap();
    assert_eq!(unknown.status, 503, "{}", unknown.text());
    assert!(
        unknown.text().contains("no-such-node-77"),
        "503 body: {}",
        unknown.text()
    );
    assert_eq!(unknown.header("x-rtun-local-reply"), Some("1"));

    let unknown_cluster = get(e, "/api/x", &[("x-cluster-id", "no-such-cluster")]).unwrap();
    assert_eq!(unknown_cluster.status, 503);
    assert!(
        unknown_cluster.text().contains("no-such-cluster"),
        "{}",
        unknown_cluster.text()
    );

    let none = get(e, "/api/x", &[]).unwrap();
    assert_eq!(none.status, 400, "{}", none.text());
    assert!(
        none.text().contains("x-node-id"),
        "400 body: {}",
        none.text()
    );
    assert!(
        none.text().contains("x-cluster-id"),
        "400 body: {}",
        none.text()
    );
    assert_eq!(none.header("x-rtun-local-reply"), Some("1"));

    let unrouted = get(e, "/other", &[("x-node-id", "n1")]).unwrap();
    assert_eq!(unrouted.status, 404, "{}", unrouted.text());
    assert_eq!(unrouted.header("x-rtun-local-reply"), Some("1"));

    // The same over h2c.
    let url = format!("http://127.0.0.1:{e}/api/x");
    let h2 = curl(&["--http2-prior-knowledge", "-H", "x-node-id: nobody", &url]);
    assert_eq!(h2.status, 503, "{h2:?}");
    assert!(h2.text().contains("nobody"));
    let h2 = curl(&["--http2-prior-knowledge", &url]);
    assert_eq!(h2.status, 400, "{h2:?}");

    assert!(admin_stat(s.r.admin, "egress_503_no_tunnel") >= 3);
    assert!(admin_stat(s.r.admin, "egress_400_no_host_id") >= 2);
    assert!(admin_stat(s.r.admin, "egress_404_no_route") >= 1);
}

#[test]
fn cross_shard_fallback_single_tunnel_two_shards() {
    let r = ResponderOpts {
        shards: 2,
        ..ResponderOpts::new()
    };
    let s = Stack::start("cross-shard", r, 1, |_| {});
    assert_eq!(tunnels_of(s.r.admin, "n1"), 1);
    let mut failures = Vec::new();
    for k in 0..100 {
        // `get` opens a new TCP connection per request (connection: close).
        match get(s.r.egress, &format!("/x/{k}"), &[("x-node-id", "n1")]) {
            Ok(resp) if resp.status == 200 && resp.header("x-served-by") == Some("svc-1") => {}
            Ok(resp) => failures.push(format!("{k}: {} {}", resp.status, resp.text())),
            Err(e) => failures.push(format!("{k}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100 failed: {failures:?}",
        failures.len()
    );
    // With 100 fresh connections over 2 SO_REUSEPORT listeners, some land on the other shard.
    let cross = admin_stat(s.r.admin, "egress_cross_shard");
    assert!(
        cross > 0,
        "egress_cross_shard = 0 after 100 fresh connections; /tunnels {:?}; /stats {:?}",
        admin_get(s.r.admin, "/tunnels"),
        admin_stats(s.r.admin)
    );
    assert_eq!(tunnels_of(s.r.admin, "n1"), 1);
}

fn h2load_succeeded(args: &[&str]) -> (u64, u64, String) {
    let out = Command::new(H2LOAD)
        .args(args)
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout"
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or("");
    let field = |name: &str| -> u64 {
        line.trim_start_matches("requests:")
            .split(',')
            .find(|f| f.trim().ends_with(name))
            .and_then(|f| f.trim().split(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or("")
        .to_owned();
    (
        field("succeeded"),
        field("total"),
        format!("{line}\n{codes}\n{text}"),
    )
}

#[test]
fn two_hundred_concurrent_streams_over_one_tunnel() {
    let s = Stack::start("concurrency", ResponderOpts::new(), 1, |_| {});
    assert_eq!(tunnels_of(s.r.admin, "n1"), 1);
    let url = format!("http://127.0.0.1:{}/delay/300", s.r.egress);
    let started = Instant::now();
    let (ok, total, report) = h2load_succeeded(&[
        "-n",
        "200",
        "-c",
        "1",
        "-m",
        "200",
        "-H",
        "x-node-id: n1",
        &url,
    ]);
    let took = started.elapsed();
    assert_eq!(total, 200, "{report}");
    assert_eq!(ok, 200, "{report}");
    assert!(report.contains("200 2xx"), "{report}");
    // 200 requests of 300 ms each over one connection: concurrent, not serialised.
    assert!(
        took < Duration::from_secs(5),
        "200 x /delay/300 took {took:?}: streams were not concurrent"
    );

    let url = format!("http://127.0.0.1:{}/hello", s.r.egress);
    let (ok, total, report) = h2load_succeeded(&[
        "-n",
        "2000",
        "-c",
        "1",
        "-m",
        "200",
        "-H",
        "x-node-id: n1",
        &url,
    ]);
    assert_eq!(total, 2000, "{report}");
    assert_eq!(ok, 2000, "{report}");
    assert_eq!(tunnels_of(s.r.admin, "n1"), 1);
}

#[test]
fn route_timeout_gives_504() {
    let r = ResponderOpts {
        routes: "[{ prefix: /, timeout: 300ms }]".into(),
        ..ResponderOpts::new()
    };
    let s = Stack::start("route-timeout", r, 1, |_| {});
    let started = Instant::now();
    let resp = get(s.r.egress, "/delay/2000", &[("x-node-id", "n1")]).unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
    assert!(
        took < Duration::from_millis(1500),
        "504 came after {took:?}"
    );
    assert!(admin_stat(s.r.admin, "egress_504_timeout") >= 1);
    // A fast request on the same route still works.
    let ok = get(s.r.egress, "/delay/10", &[("x-node-id", "n1")]).unwrap();
    assert_eq!(ok.status, 200);
}

#[test]
fn pending_timeout_waits_for_a_tunnel_to_appear() {
    let dir = TempDir::new("pending");
    let r = ResponderOpts::new();
    let _responder = spawn_rtun(&dir, "responder", &(r.yaml() + "    pending_timeout: 8s\n"));
    for port in [r.egress, r.admin, r.tunnel] {
        assert!(wait_for_port(port, Duration::from_secs(10)));
    }
    let egress = r.egress;
    let waiting = std::thread::spawn(move || get(egress, "/hello", &[("x-node-id", "late")]));
    std::thread::sleep(Duration::from_millis(300));
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let _initiator = InitiatorOpts::new("late", "c1", r.tunnel, svc).spawn(&dir, "initiator");
    let resp = waiting.join().expect("thread").expect("response");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("GET /hello"));
}
