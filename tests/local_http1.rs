//! The initiator's HTTP/1.1 client on the local hop (`http::h1`, `initiator::pool`), end to
//! end: the real responder and initiator in front of a scripted service that answers with
//! exact bytes (`common::scripted`) and records what it read on which connection.
//!
//! - a response followed by bytes nobody asked for (a glued second response) ends its
//!   connection: the next request never reads them;
//! - responses ambiguous about their framing are 502s, with the reason in the initiator's
//!   log and access log, never in the client's reply;
//! - connections the service closes while idle are noticed: never reused, not retried, and
//!   their sockets released (no CLOSE_WAIT left behind);
//! - request bodies go out with `content-length` or chunked, hop-by-hop fields stay behind;
//! - chunked responses with trailers, and HEAD responses, keep the connection usable.

mod common;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::scripted::{Reply, Scripted, Seen, Then};
use common::*;

const N1: [(&str, &str); 1] = [("x-node-id", "n1")];

/// A responder and an initiator (node `n1`, admin endpoint, JSON access log) in front of a
/// scripted service; one request (`/warmup`) has gone through, so the pool holds one idle
/// connection.
struct Setup {
    r: ResponderOpts,
    /// The initiator's admin port.
    admin: u16,
    /// The initiator's access log.
    access_log: PathBuf,
    initiator: Proc,
    _responder: Proc,
    svc: Scripted,
    dir: TempDir,
}

fn start(name: &str, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Setup {
    let dir = TempDir::new(name);
    let svc = Scripted::start(handler);
    let r = ResponderOpts::new();
    let responder = r.spawn(&dir, "responder");
    let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, svc.port);
    let admin = port();
    i.admin = Some(admin);
    let access_log = dir.join("initiator.access");
    let yaml = format!(
        "access_log:\n  path: {}\n  format: json\n{}",
        access_log.display(),
        i.yaml()
    );
    let initiator = spawn_rtun(&dir, "initiator", &yaml);
    assert!(
        wait_for_port(admin, Duration::from_secs(10)),
        "initiator admin did not listen"
    );
    assert!(
        wait_until(Duration::from_secs(10), || tunnels_of(r.admin, "n1") >= 1),
        "tunnel did not come up: {:?}",
        admin_tunnels(r.admin)
    );
    let warm = wait_until(Duration::from_secs(5), || {
        get(r.egress, "/warmup", &N1).is_ok_and(|resp| resp.status == 200)
    });
    assert!(warm, "no answer through the tunnel");
    Setup {
        r,
        admin,
        access_log,
        initiator,
        _responder: responder,
        svc,
        dir,
    }
}

impl Setup {
    fn get(&self, path: &str) -> Response {
        get(self.r.egress, path, &N1).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn stat(&self, name: &str) -> u64 {
        admin_stat(self.admin, name)
    }

    /// The request the service read for `path`.
    fn seen(&self, path: &str) -> Seen {
        self.svc.request_for(path).unwrap_or_else(|| {
            panic!(
                "the service did not see {path}; it saw:\n{}",
                self.svc.describe()
            )
        })
    }
}

/// A response in a few lines: status, headers (long values cut), the start of the body.
fn brief(r: &Response) -> String {
    let cut = |s: &str| -> String { s.chars().take(80).collect() };
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", cut(v)))
        .collect();
    format!("{} [{}] {:?}", r.status, headers.join(", "), cut(&r.text()))
}

/// TCP states in /proc/net/tcp.
const ESTABLISHED: &str = "01";
const CLOSE_WAIT: &str = "08";

/// The states of the TCP sockets process `pid` holds (open file descriptors) whose remote
/// port is `port`, from `/proc/<pid>/net/tcp` and `tcp6`.
fn sockets_to(pid: i32, port: u16) -> Vec<String> {
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|link| {
                    let link = link.to_str()?;
                    Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut states = Vec::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && inodes.contains(*inode) {
                states.push((*state).to_owned());
            }
        }
    }
    states
}

fn count(states: &[String], state: &str) -> usize {
    states.iter().filter(|s| *s == state).count()
}

// ---------------------------------------------------------------------------------------------
// 1. Response splitting

#[test]
fn bytes_after_a_response_are_never_read_as_the_next_response() {
    let s = start("split", |seen| match seen.path() {
        "/split" => Reply::raw(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
               HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"[..],
        ),
        _ => Reply::real(seen),
    });
    let first = s.get("/split");
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "ok"),
        "the first response"
    );
    for path in ["/second", "/third"] {
        let next = s.get(path);
        assert!(
            !next.text().contains("smuggled"),
            "{path} got the glued response: {} {:?}",
            next.status,
            next.text()
        );
        assert_eq!(
            (next.status, next.text()),
            (200, format!("real:{path}")),
            "{path}"
        );
    }
    let (split, second) = (s.seen("/split"), s.seen("/second"));
    assert_ne!(
        split.conn,
        second.conn,
        "the connection that carried the glued response was used again:\n{}",
        s.svc.describe()
    );
    assert_eq!(s.stat("initiator_502_local_error"), 0);
}

// ---------------------------------------------------------------------------------------------
// 2. Ambiguous framing

/// The service answers `/bad` with `response`: the client gets a plain 502 local reply with
/// nothing of the service in it, the failure is counted, logged with its reason (`label`)
/// under the request id in the initiator's log and access log, and the next request is served
/// (on another connection).
fn ambiguous_framing_is_a_502(name: &str, response: Vec<u8>, label: &str) {
    let bad = response.clone();
    let s = start(name, move |seen| match seen.path() {
        "/bad" => Reply::raw(bad.clone()),
        _ => Reply::real(seen),
    });
    let before = s.stat("initiator_502_local_error");
    let r = s.get("/bad");
    assert_eq!(r.status, 502, "{name}: {}", brief(&r));
    assert_eq!(
        r.header("x-rtun-local-reply"),
        Some("1"),
        "{name}: {}",
        brief(&r)
    );
    let body = r.text();
    let svc_port = s.svc.port.to_string();
    for leak in [
        "SERVICE-SECRET",
        "x-service",
        "127.0.0.1",
        svc_port.as_str(),
    ] {
        assert!(
            !body.contains(leak),
            "{name}: the client's reply shows {leak:?}: {body:?}"
        );
    }
    for (k, v) in &r.headers {
        assert!(
            !k.starts_with("x-service") && !v.contains("SERVICE-SECRET"),
            "{name}: the client got the service's header {k}: {}",
            brief(&r)
        );
    }
    let id = r.header("x-request-id").expect("x-request-id").to_owned();

    let counted = wait_until(Duration::from_secs(2), || {
        s.stat("initiator_502_local_error") > before
    });
    assert!(
        counted,
        "{name}: initiator_502_local_error stayed at {before}"
    );
    assert_eq!(s.stat("initiator_502_local_error"), before + 1, "{name}");

    // The reason, for the operator.
    let mut line = String::new();
    let logged = wait_until(Duration::from_secs(3), || {
        line = s
            .initiator
            .log_text()
            .lines()
            .find(|l| l.contains(&format!("request_id={id}")) && l.contains("WARN"))
            .unwrap_or_default()
            .to_owned();
        !line.is_empty()
    });
    assert!(logged, "{name}: no warning with request_id={id}");
    assert!(
        line.contains("local_error") && line.contains("bad response head"),
        "{name}: {line}"
    );
    assert!(line.contains(label), "{name}: no {label:?} in {line}");
    eprintln!("{name}: {line}");
    let mut access = serde_json::Value::Null;
    let found = wait_until(Duration::from_secs(3), || {
        access = fs::read_to_string(&s.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == id.as_str())
            .unwrap_or_default();
        !access.is_null()
    });
    assert!(found, "{name}: no access log line for {id}");
    assert_eq!(access["status"], 502, "{name}: {access}");
    assert_eq!(access["response_flags"], "local_error", "{name}: {access}");

    let next = s.get("/next");
    assert_eq!(
        (next.status, next.text()),
        (200, "real:/next".to_owned()),
        "{name}: the request after the 502"
    );
    let (bad, next) = (s.seen("/bad"), s.seen("/next"));
    assert_ne!(
        bad.conn, next.conn,
        "{name}: the refused connection was reused"
    );
}

#[test]
fn content_length_with_chunked_is_a_502() {
    ambiguous_framing_is_a_502(
        "cl-and-te",
        b"HTTP/1.1 200 OK\r\nx-service: 1\r\ncontent-length: 14\r\ntransfer-encoding: chunked\r\n\r\n\
          e\r\nSERVICE-SECRET\r\n0\r\n\r\n"
            .to_vec(),
        "content_length_and_transfer_encoding",
    );
}

#[test]
fn two_different_content_lengths_are_a_502() {
    ambiguous_framing_is_a_502(
        "two-cl",
        b"HTTP/1.1 200 OK\r\nx-service: 1\r\ncontent-length: 14\r\ncontent-length: 5\r\n\r\n\
          SERVICE-SECRET"
            .to_vec(),
        "bad_content_length",
    );
}

#[test]
fn a_transfer_coding_other_than_chunked_is_a_502() {
    ambiguous_framing_is_a_502(
        "gzip-chunked",
        b"HTTP/1.1 200 OK\r\nx-service: 1\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
          e\r\nSERVICE-SECRET\r\n0\r\n\r\n"
            .to_vec(),
        "unsupported_transfer_encoding",
    );
}

#[test]
fn switching_protocols_to_a_plain_get_is_a_502() {
    ambiguous_framing_is_a_502(
        "101",
        b"HTTP/1.1 101 Switching Protocols\r\nx-service: 1\r\nconnection: upgrade\r\n\
          upgrade: websocket\r\n\r\nSERVICE-SECRET"
            .to_vec(),
        "switching_protocols",
    );
}

#[test]
fn a_response_head_over_64_kib_is_a_502() {
    let mut head = b"HTTP/1.1 200 OK\r\nx-service: 1\r\n".to_vec();
    for k in 0..9 {
        head.extend_from_slice(format!("x-service-big-{k}: ").as_bytes());
        head.extend_from_slice(&[b'a'; 8 * 1024]);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"content-length: 14\r\n\r\nSERVICE-SECRET");
    assert!(head.len() > 72 * 1024);
    ambiguous_framing_is_a_502("big-head", head, "head_too_large");
}

// ---------------------------------------------------------------------------------------------
// 3. Keep-alive connections the service closes

#[test]
fn connections_the_service_closes_after_each_answer_are_not_reused_nor_retried() {
    let s = start("closes-after", |seen| {
        Reply::real(seen).then(Then::CloseAfter(Duration::from_millis(50)))
    });
    let retries = s.stat("initiator_local_retries");
    let failures = s.stat("initiator_502_local_error");
    let mut answers = Vec::new();
    for k in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let path = format!("/r{k}");
        let r = get(s.r.egress, &path, &N1).expect("an answer");
        answers.push((path, r.status, r.text()));
    }
    let wrong: Vec<_> = answers
        .iter()
        .filter(|(path, status, text)| *status != 200 || *text != format!("real:{path}"))
        .collect();
    assert!(wrong.is_empty(), "requests not served: {wrong:?}");
    assert_eq!(
        s.stat("initiator_local_retries"),
        retries,
        "requests that found their idle connection closed were counted as retries"
    );
    assert_eq!(s.stat("initiator_502_local_error"), failures);
    // Each on a connection of its own, sent once.
    let seen: Vec<Seen> = s
        .svc
        .requests()
        .into_iter()
        .filter(|r| r.path().starts_with("/r"))
        .collect();
    let conns: HashSet<usize> = seen.iter().map(|r| r.conn).collect();
    assert_eq!((seen.len(), conns.len()), (20, 20), "{}", s.svc.describe());
}

// ---------------------------------------------------------------------------------------------
// 4. Half-closed idle sockets

#[test]
fn idle_connections_the_service_closed_leave_no_close_wait_socket() {
    let s = start("close-wait", |seen| {
        if seen.path() == "/slow" {
            std::thread::sleep(Duration::from_millis(300));
        }
        Reply::real(seen)
    });
    let pid = s.initiator.pid();
    let e = s.r.egress;
    let clients: Vec<_> = (0..5)
        .map(|k| std::thread::spawn(move || get(e, &format!("/slow?{k}"), &N1)))
        .collect();
    for c in clients {
        let r = c.join().expect("client thread").expect("an answer");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let conns: HashSet<usize> = s
        .svc
        .requests()
        .iter()
        .filter(|r| r.path() == "/slow")
        .map(|r| r.conn)
        .collect();
    assert_eq!(conns.len(), 5, "{}", s.svc.describe());
    // The pool keeps them idle.
    let mut states = Vec::new();
    let pooled = wait_until(Duration::from_secs(2), || {
        states = sockets_to(pid, s.svc.port);
        count(&states, ESTABLISHED) >= 5
    });
    assert!(
        pooled,
        "the initiator holds {states:?} to the service, not 5 idle connections"
    );

    s.svc.close_all();
    let closed_at = Instant::now();
    let mut most_close_wait = 0;
    let released = wait_until(Duration::from_secs(3), || {
        states = sockets_to(pid, s.svc.port);
        most_close_wait = most_close_wait.max(count(&states, CLOSE_WAIT));
        count(&states, CLOSE_WAIT) == 0 && count(&states, ESTABLISHED) == 0
    });
    assert!(
        released,
        "3 s after the service closed its connections the initiator still holds {states:?} \
         (08 = CLOSE_WAIT, 01 = ESTABLISHED)"
    );
    eprintln!(
        "released after {:?} (at most {most_close_wait} in CLOSE_WAIT seen)",
        closed_at.elapsed()
    );
    let r = s.get("/after");
    assert_eq!((r.status, r.text()), (200, "real:/after".to_owned()));
    assert_eq!(s.stat("initiator_502_local_error"), 0);
    assert_eq!(s.stat("initiator_local_retries"), 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Request framing

#[test]
fn request_bodies_are_framed_for_the_service_and_hop_by_hop_fields_stay_behind() {
    let s = start("request-framing", Reply::real);
    let e = s.r.egress;
    let mut failures = Vec::new();

    // A body of known length.
    let r = http(e, "POST", "/length", &N1, b"hello").expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.seen("/length");
    if seen.header("content-length") != Some("5")
        || seen.header("transfer-encoding").is_some()
        || seen.raw_body != b"hello"
    {
        failures.push(format!(
            "POST with 5 bytes arrived as:\n{}{:?}",
            seen.head, seen.raw_body
        ));
    }

    // Unknown length from an HTTP/1.1 client: a chunked upload.
    let raw = format!(
        "POST /chunked HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\nx-node-id: n1\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
    );
    let reply = raw_exchange(e, raw.as_bytes(), Duration::from_secs(5));
    assert_eq!(
        status_of(&reply),
        Some(200),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let seen = s.seen("/chunked");
    if seen.header("transfer-encoding") != Some("chunked")
        || seen.header("content-length").is_some()
        || seen.body_error.is_some()
        || seen.body != b"hello, world"
    {
        failures.push(format!(
            "an HTTP/1.1 chunked upload arrived as:\n{}{:?} ({:?})",
            seen.head,
            String::from_utf8_lossy(&seen.raw_body),
            seen.body_error
        ));
    }

    // Unknown length from an HTTP/2 client: curl streaming stdin.
    let mut child = Command::new(CURL)
        .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
        .args(["-X", "POST", "-H", "x-node-id: n1", "-T", "-"])
        .arg(format!("http://127.0.0.1:{e}/streamed"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"streamed from stdin")
        .expect("write to curl");
    let out = child.wait_with_output().expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "real:/streamed",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = s.seen("/streamed");
    if seen.header("transfer-encoding") != Some("chunked")
        || seen.header("content-length").is_some()
        || seen.body_error.is_some()
        || seen.body != b"streamed from stdin"
    {
        failures.push(format!(
            "an HTTP/2 upload without content-length arrived as:\n{}{:?} ({:?})",
            seen.head,
            String::from_utf8_lossy(&seen.raw_body),
            seen.body_error
        ));
    }

    // Hop-by-hop fields the client sent, and one its `connection` names.
    let raw = format!(
        "GET /hop HTTP/1.1\r\nhost: 127.0.0.1:{e}\r\nx-node-id: n1\r\n\
         connection: close, x-hop\r\nkeep-alive: timeout=5\r\nte: trailers\r\n\
         upgrade: example/1\r\nproxy-connection: keep-alive\r\nx-hop: secret\r\n\
         x-end-to-end: kept\r\n\r\n"
    );
    let reply = raw_exchange(e, raw.as_bytes(), Duration::from_secs(5));
    assert_eq!(
        status_of(&reply),
        Some(200),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let seen = s.seen("/hop");
    let leaked: Vec<&(String, String)> = seen
        .headers
        .iter()
        .filter(|(k, v)| {
            ["keep-alive", "te", "upgrade", "proxy-connection", "x-hop"].contains(&k.as_str())
                || (k == "connection" && (v.contains("close") || v.contains("x-hop")))
        })
        .collect();
    if !leaked.is_empty() || seen.header("x-end-to-end") != Some("kept") {
        failures.push(format!(
            "hop-by-hop fields reached the service: {leaked:?} in\n{}",
            seen.head
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// 6. Chunked responses with trailers

#[test]
fn a_chunked_response_with_trailers_reaches_an_http2_client_whole() {
    let s = start("trailers", |seen| match seen.path() {
        "/trailers" => Reply::raw(
            &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\
               trailer: x-checksum\r\n\r\n\
               5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n"[..],
        ),
        _ => Reply::real(seen),
    });
    let headers = s.dir.join("trailers.headers");
    let out = Command::new(CURL)
        .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
        .args(["-H", "x-node-id: n1", "-D"])
        .arg(&headers)
        .arg(format!("http://127.0.0.1:{}/trailers", s.r.egress))
        .output()
        .expect("run curl");
    let dumped = fs::read_to_string(&headers).unwrap_or_default();
    assert!(
        dumped.starts_with("HTTP/2 200"),
        "{dumped}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello world",
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // curl writes trailers to the header dump, after the head.
    assert!(
        dumped.to_ascii_lowercase().contains("x-checksum: abc123"),
        "no trailer in what curl received:\n{dumped}"
    );
    // The trailer section was read exactly: the connection carries the next request.
    std::thread::sleep(Duration::from_millis(100));
    let next = s.get("/next");
    assert_eq!((next.status, next.text()), (200, "real:/next".to_owned()));
    assert_eq!(
        s.seen("/trailers").conn,
        s.seen("/next").conn,
        "{}",
        s.svc.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. HEAD

#[test]
fn a_head_response_announcing_a_length_has_no_body_and_keeps_the_connection() {
    let s = start("head", |seen| match (seen.method.as_str(), seen.path()) {
        ("HEAD", "/head") => {
            Reply::raw(&b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nx-head: yes\r\n\r\n"[..])
        }
        _ => Reply::real(seen),
    });
    let r = http(s.r.egress, "HEAD", "/head", &N1, b"").expect("an answer");
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.header("x-head"), Some("yes"), "{:?}", r.headers);
    assert_eq!(r.header("content-length"), Some("100"), "{:?}", r.headers);
    // Give the pool the moment it needs to take the connection back.
    std::thread::sleep(Duration::from_millis(100));
    let next = s.get("/next");
    assert_eq!((next.status, next.text()), (200, "real:/next".to_owned()));
    let (head, after) = (s.seen("/head"), s.seen("/next"));
    assert_eq!(
        (head.conn, after.conn, after.index),
        (head.conn, head.conn, head.index + 1),
        "HEAD and the next request not on one connection:\n{}",
        s.svc.describe()
    );
    assert_eq!(s.stat("initiator_502_local_error"), 0);
}
