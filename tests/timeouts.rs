//! Timeouts end to end, with the real binary: the route timeout on both roles (a local service
//! that never answers), the stream idle timeout before and after the response head, the egress
//! connection bounds (an h2c client that sends only the preface, an idle HTTP/1.1 keep-alive
//! connection), and a tunnel that answers PINGs but lets its streams time out: marked unhealthy,
//! and a healthy node of the same cluster preferred.
//!
//! Bounds are generous (seconds): each test sets its timeouts to about a second and allows
//! several.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A local service that accepts connections and answers according to the request path:
/// `/partial…` gets a response head and 5 of the 100 bytes it announces, anything else
/// nothing at all. Connections are held open until the test ends.
struct Scripted {
    port: u16,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Scripted {
    fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let head = read_head(&mut stream);
                    if head.contains(" /partial") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello");
                    }
                    if let Ok(mut held) = keep.lock() {
                        held.push(stream);
                    }
                });
            }
        });
        Scripted { port, _held: held }
    }
}

/// Reads one HTTP/1.1 head (up to the blank line), or what arrived before EOF.
fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads one response (head, then a `content-length` body) from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    let head = read_head(s);
    let status = status_of(head.as_bytes())?;
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    s.read_exact(&mut body).ok()?;
    Some((status, body))
}

/// Reads until EOF (or the read timeout); how long that took.
fn time_to_close(s: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    started.elapsed()
}

/// A responder (its egress routes and extra egress listener lines given) and one initiator
/// (node `n1`) whose local service is `service`; waits for the tunnel (not for an answer: the
/// service may never give one).
fn start(
    dir: &TempDir,
    (routes, egress_extra): (&str, &str),
    (initiator_extra, local_cluster_extra): (&str, &str),
    service: u16,
) -> (ResponderOpts, InitiatorOpts, Proc, Proc) {
    let r = ResponderOpts {
        routes: routes.into(),
        egress_extra: egress_extra.into(),
        ..ResponderOpts::new()
    };
    let responder = r.spawn(dir, "responder");
    let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, service);
    i.admin = Some(port());
    i.initiator_extra = initiator_extra.into();
    i.local_cluster_extra = local_cluster_extra.into();
    let initiator = i.spawn(dir, "initiator");
    assert!(
        wait_until(Duration::from_secs(10), || tunnels_of(r.admin, "n1") >= 1),
        "tunnel: {:?}",
        admin_tunnels(r.admin)
    );
    (r, i, responder, initiator)
}

#[test]
fn a_local_service_that_never_answers_gets_504_within_the_route_timeout() {
    let dir = TempDir::new("route-timeout");
    let silent = Scripted::start();
    // Egress: 1 s on `/`, off on `/initiator`, where the local cluster's response_timeout
    // (2 s; the initiator's route timeout is off) answers.
    let (r, i, _responder, _initiator) = start(
        &dir,
        (
            "[{ prefix: /initiator, timeout: 0 }, { prefix: /, timeout: 1s }]",
            "",
        ),
        ("  request_timeout: 0\n", "    response_timeout: 2s\n"),
        silent.port,
    );
    let started = Instant::now();
    let resp = get(r.egress, "/never", &[("x-node-id", "n1")]).expect("an answer");
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
    assert!(
        resp.text().contains("No response within 1s"),
        "{}",
        resp.text()
    );
    assert!(took < Duration::from_secs(6), "504 after {took:?}");
    assert!(admin_stat(r.admin, "egress_504_timeout") >= 1);

    let started = Instant::now();
    let resp = get(r.egress, "/initiator/never", &[("x-node-id", "n1")]).expect("an answer");
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        resp.text().contains("No response within 2s"),
        "{}",
        resp.text()
    );
    assert!(took < Duration::from_secs(8), "504 after {took:?}");
    let admin = i.admin.expect("initiator admin");
    assert!(wait_until(Duration::from_secs(5), || admin_stat(
        admin,
        "initiator_504_timeout"
    ) >= 1));
    assert_eq!(
        admin_stat(r.admin, "egress_504_timeout"),
        1,
        "the initiator answered"
    );
}

#[test]
fn the_initiator_default_route_timeout_answers_504_through_the_tunnel() {
    let dir = TempDir::new("initiator-timeout");
    let silent = Scripted::start();
    let (r, i, _responder, _initiator) = start(
        &dir,
        ("[{ prefix: / }]", "    request_timeout: 0\n"),
        ("  request_timeout: 1s\n", ""),
        silent.port,
    );
    let started = Instant::now();
    let resp = get(r.egress, "/never", &[("x-node-id", "n1")]).expect("an answer");
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_eq!(
        resp.header("x-rtun-local-reply"),
        Some("1"),
        "the initiator's reply"
    );
    assert!(took < Duration::from_secs(6), "504 after {took:?}");
    let admin = i.admin.expect("initiator admin");
    assert!(wait_until(Duration::from_secs(5), || admin_stat(
        admin,
        "initiator_504_timeout"
    ) >= 1));
    assert_eq!(
        admin_stat(r.admin, "egress_504_timeout"),
        0,
        "the egress timeout is off"
    );
}

#[test]
fn the_stream_idle_timeout_ends_a_silent_or_stalled_response() {
    let dir = TempDir::new("stream-idle");
    let service = Scripted::start();
    let (r, _i, _responder, _initiator) = start(
        &dir,
        (
            "[{ prefix: / }]",
            "    request_timeout: 0\n    stream_idle_timeout: 1s\n",
        ),
        ("  request_timeout: 0\n", ""),
        service.port,
    );
    // Before the head: nothing moves, the route timeout is off: 408 (as Envoy).
    let started = Instant::now();
    let resp = get(r.egress, "/silent", &[("x-node-id", "n1")]).expect("an answer");
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
    assert!(
        resp.text().contains("Stream idle timeout"),
        "{}",
        resp.text()
    );
    assert!(started.elapsed() < Duration::from_secs(6));

    // After the head: 5 of 100 bytes, then nothing: the response is cut (the HTTP/1.1
    // connection closes before the announced length).
    let mut s = TcpStream::connect(addr(r.egress)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /partial HTTP/1.1\r\nhost: x\r\nx-node-id: n1\r\n\r\n")
        .expect("write");
    let started = Instant::now();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let took = started.elapsed();
    assert_eq!(
        status_of(&raw),
        Some(200),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(raw.ends_with(b"hello"), "{}", String::from_utf8_lossy(&raw));
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
    assert!(
        wait_until(Duration::from_secs(5), || admin_stat(
            r.admin,
            "egress_stream_idle_timeout"
        ) >= 2),
        "{:?}",
        admin_stats(r.admin)
    );
}

#[test]
fn an_h2c_connection_that_sends_only_the_preface_is_closed_within_the_head_bound() {
    let dir = TempDir::new("h2-first-request");
    let r = ResponderOpts {
        egress_extra: "    header_read_timeout: 1s\n    idle_timeout: 30s\n".into(),
        ..ResponderOpts::new()
    };
    let _responder = r.spawn(&dir, "responder");
    let mut s = TcpStream::connect(addr(r.egress)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The preface and an empty SETTINGS frame, then nothing.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("write");
    let took = time_to_close(&mut s);
    assert!(
        took < Duration::from_secs(6),
        "an h2c connection without a stream stayed open {took:?}"
    );
    assert!(wait_until(Duration::from_secs(3), || admin_stat(
        r.admin,
        "egress_header_timeout"
    ) >= 1));
}

#[test]
fn an_idle_http1_keepalive_connection_is_closed_after_the_idle_timeout() {
    // The head bound (1 s) no longer cuts idle keep-alive connections: idle_timeout (3 s) does.
    let r = ResponderOpts {
        egress_extra: "    header_read_timeout: 1s\n    idle_timeout: 3s\n".into(),
        ..ResponderOpts::new()
    };
    let stack = Stack::start("h1-idle", r, 1, |_| {});
    let egress = stack.r.egress;
    let mut s = TcpStream::connect(addr(egress)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let request = b"GET /hello HTTP/1.1\r\nhost: x\r\nx-node-id: n1\r\n\r\n";
    s.write_all(request).expect("write");
    let (status, _) = read_response(&mut s).expect("first response");
    assert_eq!(status, 200);
    // Idle longer than the head bound, shorter than the idle timeout: still open.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(request).expect("write again");
    let (status, _) = read_response(&mut s).expect("second response on the same connection");
    assert_eq!(status, 200);
    let took = time_to_close(&mut s);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(9),
        "closed after {took:?} idle"
    );
    assert!(wait_until(Duration::from_secs(3), || admin_stat(
        stack.r.admin,
        "egress_idle_timeout"
    ) >= 1));
}

// ---------------------------------------------------------------------------------------------
// A scripted initiator that keeps its tunnel alive (SETTINGS and PINGs acknowledged) but never
// answers a stream.

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("frame size")
        .to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads one HTTP/2 frame: (type, flags, payload).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload)?;
    Ok((head[3], head[4], payload))
}

/// Dials the tunnel listener as node `node` of cluster `cluster`, and then serves HTTP/2 in a
/// thread that acknowledges SETTINGS and PINGs and ignores every stream.
fn stuck_initiator(tunnel_port: u16, node: &str, cluster: &str) {
    let mut s = TcpStream::connect(addr(tunnel_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!(
        "GET /reverse_connections/request HTTP/1.1\r\n\
         host: 127.0.0.1:{tunnel_port}\r\n\
         x-envoy-reverse-tunnel-node-id: {node}\r\n\
         x-envoy-reverse-tunnel-cluster-id: {cluster}\r\n\
         x-envoy-reverse-tunnel-tenant-id: t\r\n\
         x-envoy-reverse-tunnel-upstream-cluster-name: responder\r\n\
         content-length: 0\r\n\r\n"
    );
    s.write_all(request.as_bytes()).expect("handshake");
    let head = read_head(&mut s);
    assert_eq!(status_of(head.as_bytes()), Some(200), "{head}");
    std::thread::spawn(move || {
        const SETTINGS: u8 = 4;
        const PING: u8 = 6;
        const ACK: u8 = 0x1;
        if s.write_all(&h2_frame(SETTINGS, 0, 0, &[])).is_err() {
            return;
        }
        let mut preface = [0u8; 24];
        if s.read_exact(&mut preface).is_err() {
            return;
        }
        while let Ok((kind, flags, payload)) = read_frame(&mut s) {
            let reply = match kind {
                SETTINGS if flags & ACK == 0 => h2_frame(SETTINGS, ACK, 0, &[]),
                PING if flags & ACK == 0 => h2_frame(PING, ACK, 0, &payload),
                _ => continue, // HEADERS, DATA, RST_STREAM, WINDOW_UPDATE: never answered
            };
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    });
}

#[test]
fn a_tunnel_that_lets_streams_time_out_is_marked_unhealthy_and_avoided() {
    let dir = TempDir::new("unhealthy");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let r = ResponderOpts {
        routes: "[{ prefix: /, timeout: 1s }]".into(),
        tunnel_extra: "    unhealthy_after_timeouts: 2\n    unhealthy_probe_interval: 1h\n".into(),
        ..ResponderOpts::new()
    };
    let _responder = r.spawn(&dir, "responder");
    // Two nodes of cluster `pool`: a real initiator, and one whose streams never answer.
    let good = InitiatorOpts::new("good", "pool", r.tunnel, svc);
    let _good = good.spawn(&dir, "initiator-good");
    assert!(wait_tunnels(&r, "good", 1, Duration::from_secs(10)));
    stuck_initiator(r.tunnel, "stuck", "pool");
    assert!(
        wait_until(Duration::from_secs(10), || tunnels_of(r.admin, "stuck")
            >= 1),
        "{:?}",
        admin_tunnels(r.admin)
    );

    // Round-robin over the two nodes: the stuck one times out twice, then is avoided.
    let mut statuses = Vec::new();
    for k in 0..10 {
        let resp =
            get(r.egress, &format!("/pool/{k}"), &[("x-cluster-id", "pool")]).expect("an answer");
        statuses.push(resp.status);
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 504).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses[statuses.len() - 5..].iter().all(|&s| s == 200),
        "the healthy node takes everything once the other is unhealthy: {statuses:?}"
    );
    assert_eq!(admin_stat(r.admin, "tunnels_marked_unhealthy"), 1);
    assert_eq!(
        tunnels_of(r.admin, "stuck"),
        1,
        "it answers PINGs: unhealthy, not dead"
    );
    // The stuck node's own id still reaches it (nothing else can take the request).
    let resp = get(r.egress, "/direct", &[("x-node-id", "stuck")]).expect("an answer");
    assert_eq!(resp.status, 504);
}
