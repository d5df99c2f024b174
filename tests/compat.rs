//! Envoy compatibility and initiator behaviour against a scripted responder: the exact
//! handshake bytes (plain and HTTP Upgrade forms, the initiation time), RPING echo before
//! HTTP/2, 429 Retry-After; a scripted upgrade-form initiator against the responder; plus
//! several `tunnels` entries, an HTTP/2 local service, and the epoll fallback driver.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    u64::try_from(since.as_millis()).expect("ms")
}

/// Removes the `x-envoy-reverse-tunnel-initiation-time` line from a request head and returns
/// the head without it and the value, checked to be decimal milliseconds within `window` of now.
fn take_initiation_time(head: &str, window: Duration) -> (String, u64) {
    const NAME: &str = "x-envoy-reverse-tunnel-initiation-time: ";
    let start = head
        .find(NAME)
        .unwrap_or_else(|| panic!("no {NAME}in {head:?}"));
    let end = start + head[start..].find("\r\n").expect("line end") + 2;
    let value = &head[start + NAME.len()..end - 2];
    assert!(value.bytes().all(|b| b.is_ascii_digit()), "{value:?}");
    let ms: u64 = value.parse().expect("decimal");
    let now = now_ms();
    let window = u64::try_from(window.as_millis()).expect("ms");
    assert!(
        ms <= now && now - ms <= window,
        "initiation time {ms} is not within {window} ms before {now}"
    );
    (format!("{}{}", &head[..start], &head[end..]), ms)
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
    // As Envoy's initiator, rtun sends the initiation time by default.
    let (head, _) = take_initiation_time(&read_head(&mut s), Duration::from_secs(30));
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

/// `handshake: upgrade`: the exact request, a `200` refused (the tunnel would not be spliced by
/// a proxy) and redialed with the same initiation time (one per establishment, as Envoy), then
/// `101` and HTTP/2 as after a `200`.
#[test]
fn upgrade_form_initiator_against_scripted_responder() {
    let dir = TempDir::new("upgrade-initiator");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let yaml = format!("{}  handshake: upgrade\n", initiator_yaml(port, 1, "100ms"));
    let initiator = spawn_rtun(&dir, "initiator", &yaml);
    let expected = format!(
        "GET /reverse_connections/request HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         connection: upgrade\r\n\
         upgrade: reverse-tunnel\r\n\
         x-envoy-reverse-tunnel-node-id: edge-1\r\n\
         x-envoy-reverse-tunnel-cluster-id: edge-west\r\n\
         x-envoy-reverse-tunnel-tenant-id: acme\r\n\
         x-envoy-reverse-tunnel-upstream-cluster-name: cloud\r\n\
         content-length: 0\r\n\r\n"
    );

    let (mut s, _) = listener.accept().expect("first dial");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (head, first) = take_initiation_time(&read_head(&mut s), Duration::from_secs(30));
    assert_eq!(head, expected);
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a refused 200 gets no HTTP/2: {rest:?}");

    let (mut s, _) = listener.accept().expect("redial after the 200");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (head, second) = take_initiation_time(&read_head(&mut s), Duration::from_secs(30));
    assert_eq!(head, expected);
    assert_eq!(
        second, first,
        "a retry keeps the first attempt's initiation time"
    );
    s.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n\
          RPINGPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo)
        .expect("RPING echoes after a 101 too");
    assert_eq!(&echo, b"RPING");
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame).expect("h2 server speaks");
    assert_eq!(frame[3], 0x4, "first frame is SETTINGS: {frame:?}");
    let log = initiator.log_text();
    assert!(
        log.contains("NotUpgraded") || log.contains("ignored `upgrade"),
        "{log}"
    );
}

/// `handshake: upgrade` between rtun initiator and responder, and a raw scripted upgrade-form
/// initiator (Envoy's bytes): both get tunnels, the responder answers `101` exactly, and
/// requests flow through both.
#[test]
fn upgrade_form_tunnels_carry_requests() {
    let stack = Stack::start("upgrade-e2e", ResponderOpts::new(), 2, |i| {
        i.initiator_extra = "  handshake: upgrade\n".into();
    });
    let r = &stack.r;
    for k in 0..5 {
        let resp = get(r.egress, &format!("/hello/{k}"), &[("x-node-id", "n1")]).expect("request");
        assert_eq!(resp.status, 200);
        assert!(
            resp.text().contains(&format!("GET /hello/{k}")),
            "{}",
            resp.text()
        );
    }
    assert!(
        stack.responder.log_text().contains("form=\"upgrade\""),
        "{}",
        stack.responder.log_text()
    );

    let mut s = TcpStream::connect(addr(r.tunnel)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!(
        "GET /reverse_connections/request HTTP/1.1\r\n\
         host: 127.0.0.1:{port}\r\n\
         connection: upgrade\r\n\
         upgrade: reverse-tunnel\r\n\
         x-envoy-reverse-tunnel-node-id: scripted\r\n\
         x-envoy-reverse-tunnel-cluster-id: scripted-c\r\n\
         x-envoy-reverse-tunnel-tenant-id: t\r\n\
         x-envoy-reverse-tunnel-upstream-cluster-name: responder\r\n\
         x-envoy-reverse-tunnel-initiation-time: {ms}\r\n\
         content-length: 0\r\n\r\n",
        port = r.tunnel,
        ms = now_ms(),
    );
    s.write_all(request.as_bytes()).unwrap();
    assert_eq!(
        read_head(&mut s),
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n"
    );
    std::thread::spawn(move || serve_h2(s, "hello from the scripted initiator"));
    assert!(
        wait_tunnels(r, "scripted", 1, Duration::from_secs(10)),
        "scripted tunnel: {:?}",
        admin_tunnels(r.admin)
    );
    for _ in 0..3 {
        let resp = get(r.egress, "/x", &[("x-node-id", "scripted")]).expect("request");
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "hello from the scripted initiator")
        );
    }
    // The rtun tunnels are still there and serving.
    let resp = get(r.egress, "/again", &[("x-node-id", "n1")]).expect("request");
    assert_eq!(resp.status, 200);
}

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

/// Reads one HTTP/2 frame: (type, flags, stream, payload).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload)?;
    Ok((head[3], head[4], stream, payload))
}

/// The initiator's half of HTTP/2 in a few lines: SETTINGS and PING are acknowledged, and every
/// request (once its END_STREAM arrives) is answered `:status 200` with `body`. Ends when the
/// responder closes.
fn serve_h2(mut s: TcpStream, body: &str) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const END_STREAM_OR_ACK: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    if s.write_all(&h2_frame(SETTINGS, 0, 0, &[])).is_err() {
        return;
    }
    let mut preface = [0u8; 24];
    if s.read_exact(&mut preface).is_err() || preface != PREFACE {
        return;
    }
    while let Ok((kind, flags, stream, payload)) = read_frame(&mut s) {
        let ack_or_end = flags & END_STREAM_OR_ACK != 0;
        let reply = match kind {
            SETTINGS if !ack_or_end => h2_frame(SETTINGS, END_STREAM_OR_ACK, 0, &[]),
            PING if !ack_or_end => h2_frame(PING, END_STREAM_OR_ACK, 0, &payload),
            HEADERS | DATA if ack_or_end && stream != 0 => {
                // 0x88: `:status: 200`, HPACK static table entry 8.
                let mut reply = h2_frame(HEADERS, END_HEADERS, stream, &[0x88]);
                reply.extend(h2_frame(DATA, END_STREAM_OR_ACK, stream, body.as_bytes()));
                reply
            }
            _ => continue,
        };
        if s.write_all(&reply).is_err() {
            return;
        }
    }
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
