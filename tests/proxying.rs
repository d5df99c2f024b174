//! What a proxy in the middle must preserve: statuses, methods, headers, framing; and what it
//! must answer itself when the far side fails.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn statuses_methods_and_framing_pass_through() {
    let s = Stack::start("passthrough", ResponderOpts::new(), 1, |_| {});
    let e = s.r.egress;
    let n1 = [("x-node-id", "n1")];
    for code in ["201", "302", "404", "418", "500", "503"] {
        let r = get(e, &format!("/status/{code}"), &n1).unwrap();
        assert_eq!(r.status.to_string(), code, "{}", r.text());
        assert_eq!(
            r.header("x-served-by"),
            Some("svc-1"),
            "/status/{code} must come from the service"
        );
        assert_eq!(
            r.header("x-rtun-local-reply"),
            None,
            "/status/{code} is not a local reply"
        );
    }
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = http(e, method, "/m", &n1, b"").unwrap();
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert!(r.text().contains(method), "{method}: {}", r.text());
    }
    // HEAD: headers, no body.
    let r = http(e, "HEAD", "/bytes/1000", &n1, b"").unwrap();
    assert_eq!(r.status, 200);
    // Empty POST body.
    let r = http(e, "POST", "/echo", &n1, b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // Query strings survive.
    let r = get(e, "/q?a=1&b=two", &n1).unwrap();
    assert!(
        r.text().contains("a=1&b=two") || r.text().contains("/q"),
        "{}",
        r.text()
    );
    // Keep-alive: many requests on one h1 connection.
    let url = format!("http://127.0.0.1:{e}/k");
    let mut args = vec!["--http1.1", "-H", "x-node-id: n1"];
    for _ in 0..20 {
        args.push(&url);
    }
    let out = curl(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.body).matches("/k").count(), 20);
}

/// Request bodies of unknown length: an h1 chunked upload and an h2 upload without
/// content-length must reach the local service whole.
#[test]
fn request_bodies_without_content_length_reach_the_service() {
    let s = Stack::start("chunked-upload", ResponderOpts::new(), 1, |_| {});
    let e = s.r.egress;
    let mut failures = Vec::new();
    let out = curl(&[
        "--http1.1",
        "-H",
        "x-node-id: n1",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        "chunked-body-123",
        &format!("http://127.0.0.1:{e}/echo"),
    ]);
    if out.status != 200 || out.text() != "chunked-body-123" {
        failures.push(format!(
            "h1 chunked upload: {} {:?}",
            out.status,
            out.text()
        ));
    }
    // h2: `-T -` streams stdin with no content-length.
    let mut child = Command::new(CURL)
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-H",
            "x-node-id: n1",
            "-T",
            "-",
        ])
        .arg(format!("http://127.0.0.1:{e}/echo"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"h2-streamed-body").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if String::from_utf8_lossy(&out.stdout) != "h2-streamed-body" {
        failures.push(format!(
            "h2 upload without content-length echoed {:?}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    assert!(
        failures.is_empty(),
        "bodies lost on the way to the service:\n{}",
        failures.join("\n")
    );
}

#[test]
fn smuggling_shaped_requests_rejected() {
    let s = Stack::start("smuggling", ResponderOpts::new(), 1, |_| {});
    let e = s.r.egress;
    // Both content-length and transfer-encoding: must not be forwarded as two requests.
    let raw = b"POST /echo HTTP/1.1\r\nhost: x\r\nx-node-id: n1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\nx-node-id: n1\r\n\r\n";
    let reply = raw_exchange(e, raw, Duration::from_secs(3));
    let text = String::from_utf8_lossy(&reply);
    assert!(
        !text.contains("/smuggled"),
        "smuggled request reached the service:\n{text}"
    );
    // Two different content-lengths.
    let raw = b"POST /echo HTTP/1.1\r\nhost: x\r\nx-node-id: n1\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde";
    let reply = raw_exchange(e, raw, Duration::from_secs(3));
    assert_eq!(
        status_of(&reply),
        Some(400),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Still serving.
    assert_eq!(get(e, "/ok", &[("x-node-id", "n1")]).unwrap().status, 200);
}

#[test]
fn local_service_down_gives_5xx_not_hang() {
    let mut s = Stack::start("service-down", ResponderOpts::new(), 1, |_| {});
    s.service.kill();
    let r = get(s.r.egress, "/x", &[("x-node-id", "n1")]).unwrap();
    assert!(
        r.status == 502 || r.status == 503,
        "{} {}",
        r.status,
        r.text()
    );
    // The tunnel itself stays up.
    assert_eq!(tunnels_of(s.r.admin, "n1"), 1);
    // And the service coming back is used again.
    s.service = spawn_service(&s.dir, "svc-1", s.i.service);
    assert!(wait_until(Duration::from_secs(3), || {
        get(s.r.egress, "/x", &[("x-node-id", "n1")]).is_ok_and(|r| r.status == 200)
    }));
}

/// A local cluster with `protocol: http2` (h2c prior knowledge to the service).
#[test]
fn local_cluster_over_http2() {
    let dir = TempDir::new("h2-local");
    let svc = port();
    let _service = spawn_service(&dir, "svc-1", svc);
    let r = ResponderOpts::new();
    let _responder = r.spawn(&dir, "responder");
    let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, svc);
    i.protocol = "http2".into();
    let _initiator = i.spawn(&dir, "initiator");
    assert!(wait_until(Duration::from_secs(5), || tunnels_of(
        r.admin, "n1"
    ) == 1));
    let resp = get(r.egress, "/via-h2", &[("x-node-id", "n1")]).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-served-by"), Some("svc-1"));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let resp = http(r.egress, "POST", "/echo", &[("x-node-id", "n1")], &big).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.body == big, "h2 echo differs");
}

#[test]
fn split_tunnels_spread_over_shards_with_bodies_and_many_connections() {
    // Three tunnels from a two-shard initiator to a two-shard responder.
    let r = ResponderOpts {
        shards: 2,
        ..ResponderOpts::new()
    };
    let s = Stack::start("split-tunnels", r, 3, |i| {
        i.shards = 2;
    });
    assert!(
        wait_until(Duration::from_secs(3), || tunnels_of(s.r.admin, "n1") == 3),
        "{:?}",
        admin_tunnels(s.r.admin)
    );
    let tunnels = admin_tunnels_json(s.r.admin, "");
    let hosts = tunnels["responder"]["hosts"].as_array().cloned();
    let n1 = hosts
        .unwrap_or_default()
        .into_iter()
        .find(|h| h["host"] == "n1")
        .unwrap_or_else(|| panic!("n1 not listed: {tunnels}"));
    // Spread over the responder's shards: [2, 1] or [1, 2].
    let per_shard = &n1["per_shard"];
    assert!(
        *per_shard == serde_json::json!([2, 1]) || *per_shard == serde_json::json!([1, 2]),
        "tunnels not spread over shards: {n1}"
    );
    let input: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for k in 0..20 {
        let r = http(s.r.egress, "POST", "/echo", &[("x-node-id", "n1")], &input).unwrap();
        assert_eq!(r.status, 200, "{k}: {}", r.text());
        assert!(
            r.body == input,
            "{k}: echo differs ({} bytes)",
            r.body.len()
        );
    }
    // Many h2 connections over both shards at once.
    let url = format!("http://127.0.0.1:{}/bytes/10000", s.r.egress);
    let out = Command::new(H2LOAD)
        .args([
            "-n",
            "2000",
            "-c",
            "8",
            "-m",
            "32",
            "-H",
            "x-node-id: n1",
            &url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2000 succeeded, 0 failed"), "{text}");
}

#[test]
fn oversized_headers_get_431_and_slow_clients_are_cut_off() {
    let dir = TempDir::new("limits");
    let r = ResponderOpts::new();
    // The egress listener is the last section of the generated file.
    let yaml = r.yaml() + "    header_read_timeout: 1s\n    max_request_headers_kb: 8\n";
    let _responder = spawn_rtun(&dir, "responder", &yaml);
    for port in [r.egress, r.admin] {
        assert!(wait_for_port(port, Duration::from_secs(10)));
    }
    // 16 KiB of headers against an 8 KiB limit.
    let big = "x".repeat(16 * 1024);
    let resp = get(r.egress, "/hello", &[("x-node-id", "n1"), ("x-big", &big)]).expect("answer");
    assert_eq!(resp.status, 431);

    // A client that sends half a request head and stalls is closed after the timeout.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", r.egress)).expect("connect");
    slow.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed by the responder, not our read timeout"
    );
    assert!(
        wait_until(Duration::from_secs(2), || admin_stat(
            r.admin,
            "egress_header_timeout"
        ) >= 1),
        "the slow client is counted: {:?}",
        admin_stats(r.admin)
    );
}
