//! Envoy compatibility and initiator behaviour against a scripted responder: the exact
//! handshake bytes, RPING echo before HTTP/2, 429 Retry-After; plus several `tunnels` entries,
//! an HTTP/2 local service, and the epoll fallback driver.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Reads one HTTP/1.1 request head (up to the blank line).
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

fn initiator_yaml(responder_port: u16, service_port: u16, initial_backoff: &str) -> String {
    format!(
        "shards: 1\n\
         clusters:\n\
         \x20 local-app: {{ endpoints: [\"127.0.0.1:{service_port}\"] }}\n\
         \x20 cloud: {{ endpoints: [\"127.0.0.1:{responder_port}\"] }}\n\
         initiator:\n\
         \x20 tunnels: [\"rc://edge-1:edge-west:acme@cloud:1\"]\n\
         \x20 routes: [{{ prefix: /, cluster: local-app }}]\n\
         \x20 initial_reconnect_backoff: {initial_backoff}\n\
         \x20 max_reconnect_backoff: 1s\n"
    )
}

#[test]
fn handshake_bytes_and_rping_echo_before_http2() {
    let dir = TempDir::new("rping");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _initiator = spawn_rtun(&dir, "initiator", &initiator_yaml(port, 1, "100ms"));
    let (mut s, _) = listener.accept().expect("initiator dials");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = read_head(&mut s);
    let expected = format!(
        "GET /reverse_connections/request HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         x-envoy-reverse-tunnel-node-id: edge-1\r\n\
         x-envoy-reverse-tunnel-cluster-id: edge-west\r\n\
         x-envoy-reverse-tunnel-tenant-id: acme\r\n\
         x-envoy-reverse-tunnel-upstream-cluster-name: cloud\r\n\
         content-length: 0\r\n\r\n"
    );
    assert_eq!(head, expected);
    // Accept, then ping the way an idle Envoy responder does, split across writes.
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nRPI")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"NGRPING").unwrap();
    let mut echo = [0u8; 10];
    s.read_exact(&mut echo).expect("RPING echoes");
    assert_eq!(&echo, b"RPINGRPING");
    // Now HTTP/2 starts: the initiator, as the h2 server, answers with a SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame).expect("h2 server speaks");
    assert_eq!(
        frame[3], 0x4,
        "first frame from the initiator is SETTINGS: {frame:?}"
    );
}

#[test]
fn retry_after_is_honoured() {
    let dir = TempDir::new("retry-after");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _initiator = spawn_rtun(&dir, "initiator", &initiator_yaml(port, 1, "100ms"));
    let (mut s, _) = listener.accept().expect("first dial");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    read_head(&mut s);
    s.write_all(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 5\r\nconnection: close\r\n\r\nbusy\n")
        .unwrap();
    drop(s);
    let rejected_at = Instant::now();
    let (_s, _) = listener.accept().expect("second dial");
    let waited = rejected_at.elapsed();
    // With a 100 ms backoff the redial would come at once; Retry-After asks for 2 s.
    assert!(
        waited >= Duration::from_millis(1900),
        "redialed after {waited:?}, before Retry-After"
    );
}

/// Also dials by hostname (`localhost`, re-resolved on each dial).
#[test]
fn several_tunnel_entries_reach_several_responders() {
    let dir = TempDir::new("two-responders");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let (a, b) = (ResponderOpts::new(), ResponderOpts::new());
    let _ra = a.spawn(&dir, "responder-a");
    let _rb = b.spawn(&dir, "responder-b");
    let yaml = format!(
        "shards: 1\n\
         clusters:\n\
         \x20 local-app: {{ endpoints: [\"127.0.0.1:{svc}\"] }}\n\
         \x20 cloud-a: {{ endpoints: [\"127.0.0.1:{ta}\"] }}\n\
         \x20 cloud-b: {{ endpoints: [\"localhost:{tb}\"] }}\n\
         node: {{ id: n1, cluster: c1 }}\n\
         initiator:\n\
         \x20 tunnels: [\"rc://n1:c1:t@cloud-a:1\", {{ cluster: cloud-b, connections: 2 }}]\n\
         \x20 routes: [{{ prefix: /, cluster: local-app }}]\n",
        ta = a.tunnel,
        tb = b.tunnel,
    );
    let _initiator = spawn_rtun(&dir, "initiator", &yaml);
    assert!(
        wait_tunnels(&a, "n1", 1, Duration::from_secs(10)),
        "tunnel to responder a"
    );
    assert!(
        wait_tunnels(&b, "n1", 2, Duration::from_secs(10)),
        "tunnels to responder b"
    );
    for r in [&a, &b] {
        let resp = get(r.egress, "/hello", &[("x-node-id", "n1")]).expect("request");
        assert_eq!(resp.status, 200);
        assert!(resp.text().contains("GET /hello"), "{}", resp.text());
    }
}

#[test]
fn http2_local_service() {
    let stack = Stack::start("h2-local", ResponderOpts::new(), 1, |i| {
        i.protocol = "http2".into()
    });
    let body = pattern(3 * 1024 * 1024);
    let file = stack.dir.write("body.bin", &body);
    let out = stack.dir.join("out.bin");
    let url = format!("http://127.0.0.1:{}/echo", stack.r.egress);
    let c = curl(&[
        "-H",
        "x-node-id: n1",
        "--data-binary",
        &format!("@{}", file.display()),
        "-o",
        out.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(std::fs::read(&out).expect("echo"), body);
    let hello = get(stack.r.egress, "/hello", &[("x-node-id", "n1")]).expect("hello");
    assert_eq!(hello.status, 200);
    assert_eq!(hello.header("x-served-by"), Some("svc-1"));
}

#[test]
fn epoll_driver_serves_the_same_path() {
    let dir = TempDir::new("epoll");
    let r = ResponderOpts::new();
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let spawn_epoll = |name: &str, yaml: String| {
        let cfg = dir.write(&format!("{name}.yaml"), yaml);
        let log = dir.join(&format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(RTUN)
            .args(["run", "-c", cfg.to_str().unwrap()])
            .env("RTUN_IO_DRIVER", "epoll")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn rtun");
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    };
    let responder = spawn_epoll("responder", r.yaml());
    let _initiator = spawn_epoll(
        "initiator",
        InitiatorOpts::new("n1", "c1", r.tunnel, svc).yaml(),
    );
    assert!(
        wait_tunnels(&r, "n1", 1, Duration::from_secs(10)),
        "tunnel over epoll"
    );
    let resp = get(r.egress, "/hello", &[("x-node-id", "n1")]).expect("request");
    assert_eq!(resp.status, 200);
    assert!(
        responder.log_text().contains("epoll driver"),
        "the fallback is logged"
    );
}
