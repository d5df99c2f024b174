//! What public clients see and what they can make rtun do: normalized paths for routing and
//! forwarding, proxy headers a client cannot forge or strip, one `Host`, request ids on local
//! replies without internal addresses, and a malformed request body answered as the client's
//! error (docs/DESIGN.md §10).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Routes `/public`, `/headers` (the service's header echo) and `/delay` only.
fn edge_responder() -> ResponderOpts {
    ResponderOpts {
        routes: "[{ prefix: /public }, { prefix: /headers }, { prefix: /delay }]".into(),
        probe_path: "/public/probe".into(),
        ..ResponderOpts::new()
    }
}

const NODE: (&str, &str) = ("x-node-id", "n1");

/// The header lines `/headers` saw, lowercased names.
fn seen_headers(body: &str) -> Vec<(String, String)> {
    body.lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect()
}

fn seen<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Sends `raw` on a fresh connection and parses the one response that comes back.
fn raw_request(port: u16, raw: &str) -> Response {
    let bytes = raw_exchange(port, raw.as_bytes(), Duration::from_secs(10));
    parse_response(&bytes, false)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&bytes)))
}

#[test]
fn routes_match_and_forward_the_normalized_path() {
    let s = Stack::start("edge-paths", edge_responder(), 1, |_| {});
    let e = s.r.egress;

    // A dot segment cannot climb out of the only route.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/./../admin",
    ] {
        let resp = get(e, path, &[NODE]).unwrap();
        assert_eq!(resp.status, 404, "{path}: {}", resp.text());
        assert_eq!(resp.header("x-rtun-local-reply"), Some("1"), "{path}");
        assert_eq!(resp.header("x-served-by"), None, "{path} was forwarded");
        assert!(resp.text().contains("'/admin'"), "{path}: {}", resp.text());
    }
    // The same over h2c (curl keeps the path as written only with --path-as-is).
    let url = format!("http://127.0.0.1:{e}/public/../admin");
    let h2 = curl(&[
        "--http2-prior-knowledge",
        "--path-as-is",
        "-H",
        "x-node-id: n1",
        &url,
    ]);
    assert_eq!(h2.status, 404, "{h2:?}");
    assert!(admin_stat(s.r.admin, "egress_404_no_route") >= 4);

    // What is forwarded is the normalized path, with the query as sent.
    let resp = get(e, "/public/./x//y/%7Ez?q=/../a&b=%2f", &[NODE]).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-served-by"), Some("svc-1"));
    assert!(
        resp.text().contains("GET /public/x/y/~z?q=/../a&b=%2f\n"),
        "{}",
        resp.text()
    );
    let resp = get(e, "/public/a/b/..", &[NODE]).unwrap();
    assert!(resp.text().contains("GET /public/a/\n"), "{}", resp.text());

    // Paths that cannot be normalized, and escaped slashes by default, are the client's error.
    for path in [
        "/public/%zz",
        "/public/a%2Fb",
        "/public/..%2f..%2fadmin",
        "/public/a%5Cb",
    ] {
        let resp = get(e, path, &[NODE]).unwrap();
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
        assert_eq!(resp.header("x-rtun-local-reply"), Some("1"), "{path}");
        assert!(resp.text().starts_with("Bad request: "), "{}", resp.text());
    }
    assert_eq!(admin_stat(s.r.admin, "egress_400_bad_request"), 4);
}

#[test]
fn escaped_slashes_can_be_kept() {
    let r = ResponderOpts {
        egress_extra: "    path_with_escaped_slashes_action: keep_unchanged\n".into(),
        ..edge_responder()
    };
    let s = Stack::start("edge-keep-slashes", r, 1, |_| {});
    let resp = get(s.r.egress, "/public/a%2fb/../c", &[NODE]).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("GET /public/c\n"), "{}", resp.text());
    let resp = get(s.r.egress, "/public/x/..%2fadmin", &[NODE]).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.text().contains("GET /public/x/..%2Fadmin\n"),
        "{}",
        resp.text()
    );
}

#[test]
fn client_forwarding_headers_are_dropped_and_protected_ones_cannot_be_stripped() {
    let s = Stack::start("edge-xff", edge_responder(), 1, |_| {});
    let resp = get(
        s.r.egress,
        "/headers",
        &[
            NODE,
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("authorization", "Bearer secret-token"),
            ("x-request-id", "client-chosen-id"),
            ("x-other", "dropped"),
            (
                "connection",
                "x-forwarded-for, authorization, x-request-id, x-node-id, host, x-other",
            ),
        ],
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let h = seen_headers(&resp.text());
    assert_eq!(seen(&h, "x-forwarded-for"), ["127.0.0.1"], "{h:?}");
    assert_eq!(seen(&h, "x-forwarded-proto"), ["http"], "{h:?}");
    assert!(seen(&h, "x-forwarded-host").is_empty(), "{h:?}");
    assert!(seen(&h, "forwarded").is_empty(), "{h:?}");
    assert!(!resp.text().contains("6.6.6.6"), "{}", resp.text());
    // `Connection` could not strip what identifies, authenticates or routes the request ...
    assert_eq!(seen(&h, "authorization"), ["Bearer secret-token"], "{h:?}");
    assert_eq!(seen(&h, "x-node-id"), ["n1"], "{h:?}");
    assert_eq!(seen(&h, "host").len(), 1, "{h:?}");
    // ... but strips what it may.
    assert!(seen(&h, "x-other").is_empty(), "{h:?}");
    assert!(seen(&h, "connection").is_empty(), "{h:?}");
    // The request id is rtun's own, not the client's.
    let ids = seen(&h, "x-request-id");
    assert_eq!(ids.len(), 1, "{h:?}");
    assert_ne!(ids[0], "client-chosen-id");
}

#[test]
fn behind_trusted_hops_forwarding_headers_and_request_ids_are_kept() {
    let r = ResponderOpts {
        egress_extra: "    xff_num_trusted_hops: 1\n    trust_request_id: true\n".into(),
        ..edge_responder()
    };
    let s = Stack::start("edge-trusted", r, 1, |_| {});
    let resp = get(
        s.r.egress,
        "/headers",
        &[
            NODE,
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "from-the-front-proxy"),
        ],
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let h = seen_headers(&resp.text());
    assert_eq!(seen(&h, "x-forwarded-for"), ["6.6.6.6, 127.0.0.1"], "{h:?}");
    assert_eq!(seen(&h, "x-forwarded-proto"), ["https"], "{h:?}");
    assert_eq!(seen(&h, "x-request-id"), ["from-the-front-proxy"], "{h:?}");
    // A local reply quotes it too.
    let resp = get(
        s.r.egress,
        "/elsewhere",
        &[NODE, ("x-request-id", "from-the-front-proxy")],
    )
    .unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-request-id"), Some("from-the-front-proxy"));
}

#[test]
fn host_must_be_single_and_agree_with_the_target() {
    let s = Stack::start("edge-host", edge_responder(), 1, |_| {});
    let e = s.r.egress;
    let bad = [
        // Two Host fields (RFC 9112 §3.2).
        format!(
            "GET /public/x HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\nhost: other.example\r\n\
             x-node-id: n1\r\nconnection: close\r\n\r\n"
        ),
        // Absolute form naming another host than Host.
        format!(
            "GET http://other.example/public/x HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\n\
             x-node-id: n1\r\nconnection: close\r\n\r\n"
        ),
        // No Host at all.
        "GET /public/x HTTP/1.1\r\nx-node-id: n1\r\nconnection: close\r\n\r\n".to_owned(),
    ];
    for raw in &bad {
        let resp = raw_request(e, raw);
        assert_eq!(resp.status, 400, "{raw:?}: {}", resp.text());
        assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
        assert!(resp.header("x-request-id").is_some());
        assert!(resp.text().contains("Host"), "{}", resp.text());
    }
    assert_eq!(admin_stat(s.r.admin, "egress_400_bad_request"), 3);

    // An absolute form that agrees with Host is fine.
    let raw = format!(
        "GET http://127.0.0.1:{e}/public/x HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\n\
         x-node-id: n1\r\nconnection: close\r\n\r\n"
    );
    let resp = raw_request(e, &raw);
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn local_replies_carry_a_request_id_and_no_internal_address() {
    let mut s = Stack::start("edge-local-replies", edge_responder(), 1, |_| {});
    let e = s.r.egress;
    let unrouted = get(e, "/nowhere", &[NODE, ("x-request-id", "client-chosen-id")]).unwrap();
    assert_eq!(unrouted.status, 404);
    let id = unrouted.header("x-request-id").expect("x-request-id");
    assert!(!id.is_empty() && id != "client-chosen-id", "{id}");

    // The local service goes away: the initiator's 503 names no address.
    s.service.kill();
    // Let the initiator's pool notice its idle connections closed.
    std::thread::sleep(Duration::from_millis(300));
    let resp = get(e, "/public/x", &[NODE]).unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
    let id = resp
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    assert!(!resp.text().contains("127.0.0.1"), "{}", resp.text());
    assert!(
        !resp.text().to_lowercase().contains("refused"),
        "{}",
        resp.text()
    );
    // The detail goes to the initiator's log, under the same id.
    assert!(
        wait_until(Duration::from_secs(5), || s
            .initiator
            .log_text()
            .lines()
            .any(|l| l.contains(&id) && l.contains("127.0.0.1"))),
        "no log line with {id} and the address"
    );

    // An unknown host: the body names the host id it was asked for, nothing internal.
    let resp = get(e, "/public/x", &[("x-node-id", "nobody")]).unwrap();
    assert_eq!(resp.status, 503);
    assert!(resp.header("x-request-id").is_some());
    assert!(!resp.text().contains("127.0.0.1"), "{}", resp.text());
}

#[test]
fn a_malformed_request_body_is_the_clients_error() {
    let s = Stack::start("edge-bad-body", edge_responder(), 1, |_| {});
    let e = s.r.egress;
    // A bad chunk size, before the response started (the service waits 500 ms to answer).
    let raw = format!(
        "POST /delay/500 HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\nx-node-id: n1\r\n\
         transfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n"
    );
    let resp = raw_request(e, &raw);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
    assert!(resp.header("x-request-id").is_some());
    assert!(resp.text().contains("request body"), "{}", resp.text());

    // A content-length body cut short by a client that stops sending (half-close).
    let mut c = TcpStream::connect(addr(e)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST /delay/500 HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\nx-node-id: n1\r\n\
         content-length: 100\r\n\r\nonly ten b"
    )
    .unwrap();
    half_close(&c);
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let resp = parse_response(&raw, false)
        .unwrap_or_else(|err| panic!("{err}: {:?}", String::from_utf8_lossy(&raw)));
    assert_eq!(resp.status, 400, "{}", resp.text());

    assert_eq!(admin_stat(s.r.admin, "egress_400_client_body"), 2);
    assert_eq!(admin_stat(s.r.admin, "egress_502_tunnel_error"), 0);
}

#[test]
fn a_request_body_that_breaks_after_the_response_started_closes_the_connection() {
    let r = ResponderOpts {
        routes: "[{ prefix: / }]".into(),
        ..ResponderOpts::new()
    };
    let s = Stack::start("edge-bad-body-late", r, 1, |_| {});
    let e = s.r.egress;
    let mut c = TcpStream::connect(addr(e)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST /echo HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\nx-node-id: n1\r\n\
         transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    .unwrap();
    // The echo streams back: the response head and the first chunk arrive.
    let mut raw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !raw.windows(5).any(|w| w == b"hello") {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&raw)
        );
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(status_of(&raw), Some(200));
    // Now a bad chunk: the connection ends, the response body unfinished.
    c.write_all(b"zz\r\n").unwrap();
    let _ = c.read_to_end(&mut raw);
    assert!(
        !raw.ends_with(b"0\r\n\r\n"),
        "the response was finished: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(admin_stat(s.r.admin, "egress_502_tunnel_error"), 0);
}
