//! Head-of-line isolation on a tunnel (docs/ARCHITECTURE.md §7): streams whose readers do not
//! read — HTTP/2 clients that never open their stream window, HTTP/1.1 clients that never read
//! their socket, a local service that does not read uploads — must not hold the tunnel's
//! connection-level window in either direction, so other clients of the same node keep moving
//! data at full speed, and the receiving end's memory stays within the stated budget while the
//! hogs sit there (past the tunnel's parking budget, the longest-unread streams are shed).
//!
//! Each test measures the real binary: 2 MB alone, then beside the hogs once everything has
//! settled (on a loaded machine the local service takes seconds to fill the hogs' buffers). All
//! three stalled for good before the tunnels parked unread data.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// What each hog asks for: far more than any window.
const HOG_BYTES: usize = 8_000_000;

/// The normal download that must not stall, and how long it may take (it took more than 15 s,
/// or forever, before head-of-line isolation; about 0.1 s with it).
const DOWNLOAD: usize = 2_000_000;
const DOWNLOAD_BOUND: Duration = Duration::from_secs(5);

/// The tunnel's receive buffers, as docs/ARCHITECTURE.md §7 states them:
/// `tunnel::CONNECTION_WINDOW + tunnel::PARKED_BUDGET`.
const TUNNEL_BOUND_KIB: u64 = (4 + 32) * 1024;

/// What each HTTP/1.1 connection may buffer besides, the egress's to a client or the
/// initiator's to the local service: hyper's write buffer (about 400 KiB).
const H1_CONNECTION_KIB: u64 = 408;

/// Allocator slack and everything else a busy responder touches.
const SLACK_KIB: u64 = 6 * 1024;

/// An HTTP/2 frame header: length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK literal header field without indexing, new name (RFC 7541 §6.2.2), for short
/// strings.
fn literal(name: &str, value: &str) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// An HTTP/2 (prior knowledge) client that announces a stream window of 0, asks for `path`
/// and then never sends a WINDOW_UPDATE and never reads: the server may send it nothing.
fn zero_window_h2_client(port: u16, path: &str, node: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr(port)).expect("connect h2 hog");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE (0x4) = 0.
    out.extend(frame(0x4, 0, 0, &[0x00, 0x04, 0, 0, 0, 0]));
    // HEADERS, END_STREAM | END_HEADERS, stream 1: :method GET (static 2), :scheme http
    // (static 6), :path and :authority as literals with indexed names (4 and 1).
    let mut block = vec![0x82, 0x86];
    block.push(0x04);
    block.push(path.len() as u8);
    block.extend_from_slice(path.as_bytes());
    let authority = format!("127.0.0.1:{port}");
    block.push(0x01);
    block.push(authority.len() as u8);
    block.extend_from_slice(authority.as_bytes());
    block.extend(literal("x-node-id", node));
    out.extend(frame(0x1, 0x5, 1, &block));
    s.write_all(&out).expect("write h2 hog");
    s
}

/// An HTTP/1.1 client that asks for `path` and never reads its socket.
fn non_reading_h1_client(port: u16, path: &str, node: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr(port)).expect("connect h1 hog");
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-node-id: {node}\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write h1 hog");
    s
}

/// An HTTP/1.1 client that uploads a large body to `/delay/60000`: the service answers after
/// a minute and reads none of the body meanwhile, so once the kernel's buffers are full the
/// initiator's side of the tunnel holds the upload. A thread writes until the socket blocks for
/// good or is shut down.
fn upload_to_a_service_that_does_not_read(port: u16, node: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr(port)).expect("connect upload hog");
    let head = format!(
        "POST /delay/60000 HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-node-id: {node}\r\n\
         content-type: application/octet-stream\r\ncontent-length: {HOG_BYTES}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("write upload hog");
    let mut writer = s.try_clone().expect("clone upload hog");
    std::thread::spawn(move || {
        let _ = writer.set_write_timeout(Some(Duration::from_secs(60)));
        let chunk = pattern(64 * 1024);
        let mut sent = 0;
        while sent < HOG_BYTES {
            let n = chunk.len().min(HOG_BYTES - sent);
            if writer.write_all(&chunk[..n]).is_err() {
                return;
            }
            sent += n;
        }
    });
    s
}

/// The hogs' connections; shut down (which also stops uploader threads) when dropped.
struct Hogs(Vec<TcpStream>);

impl Drop for Hogs {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Waits until the hogs have filled whatever they can hold.
fn settle(s: &Stack) {
    std::thread::sleep(Duration::from_millis(500));
    // On a loaded machine the local service takes seconds to produce what the hogs' buffers
    // (kernel, hyper, the tunnel's streams) absorb; the test is about what happens after.
    let quiet = wait_quiet(&[s.responder.pid(), s.initiator.pid(), s.service.pid()]);
    assert!(quiet, "the hogs' transfers did not settle within 60 s");
}

/// Starts `h2` zero-window HTTP/2 hogs and `h1` non-reading HTTP/1.1 hogs against the stack's
/// egress, all downloading from node n1, and waits until they have filled what they can.
fn start_hogs(s: &Stack, h2: usize, h1: usize) -> Hogs {
    let path = format!("/bytes/{HOG_BYTES}");
    let mut hogs = Vec::new();
    for _ in 0..h2 {
        hogs.push(zero_window_h2_client(s.r.egress, &path, "n1"));
    }
    for _ in 0..h1 {
        hogs.push(non_reading_h1_client(s.r.egress, &path, "n1"));
    }
    settle(s);
    Hogs(hogs)
}

/// Downloads `/bytes/N` from node n1 on a fresh HTTP/1.1 connection, reading as fast as it
/// can; returns how long the whole body took, or what went wrong within `limit`.
fn timed_download(port: u16, n: usize, limit: Duration) -> Result<Duration, String> {
    timed_exchange(port, &format!("GET /bytes/{n}"), n, 0, limit)
}

/// Uploads `n` bytes to node n1's `/echo` on a fresh HTTP/1.1 connection, writing and reading
/// the echo at once; returns how long the whole exchange took.
fn timed_upload(port: u16, n: usize, limit: Duration) -> Result<Duration, String> {
    timed_exchange(port, "POST /echo", n, n, limit)
}

/// One request (`upload` bytes of the pattern as its body, written by a thread) whose response
/// must be 200 with `n` bytes of the pattern, read as fast as they come, within `limit`.
fn timed_exchange(
    port: u16,
    request_line: &str,
    n: usize,
    upload: usize,
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr(port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let req = format!(
        "{request_line} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-node-id: n1\r\n\
         content-length: {upload}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut writer = s.try_clone().map_err(|e| e.to_string())?;
    let _ = writer.set_write_timeout(Some(limit));
    let uploader = std::thread::spawn(move || writer.write_all(&pattern(upload)));
    let mut raw = Vec::with_capacity(n + 4096);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if start.elapsed() > limit {
            return Err(format!(
                "{} bytes after {:?}: the exchange stalled",
                raw.len(),
                start.elapsed()
            ));
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(e) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                return Err(format!(
                    "{} bytes after {:?}: {e}",
                    raw.len(),
                    start.elapsed()
                ));
            }
        }
    }
    let elapsed = start.elapsed();
    match uploader.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("upload: {e}")),
        Err(_) => return Err("upload thread panicked".into()),
    }
    let resp = parse_response(&raw, false).map_err(|e| e.to_string())?;
    if resp.status != 200 || resp.body != pattern(n) {
        return Err(format!(
            "status {}, {} body bytes, pattern intact: {}",
            resp.status,
            resp.body.len(),
            resp.body == pattern(n)
        ));
    }
    Ok(elapsed)
}

/// CPU time (user + system, in clock ticks) of a process so far.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) : utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// Waits (up to 60 s) until `pids` together use at most one clock tick of CPU in each of two
/// 500 ms periods in a row: the
/// hogs' responses have filled every buffer they can and everything waits on them. On a loaded
/// machine the local service takes a while to produce what the buffers absorb.
fn wait_quiet(pids: &[i32]) -> bool {
    let total = || pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let mut last = total();
    let mut quiet_for = 0;
    wait_until(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = total();
        quiet_for = if now <= last + 1 { quiet_for + 1 } else { 0 };
        last = now;
        quiet_for >= 2
    })
}

/// Resident set (VmRSS) of a process in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// What one run measured.
struct Run {
    alone: Duration,
    beside_hogs: Vec<Duration>,
    /// Responder and initiator RSS before the hogs (KiB).
    rss_before_kib: [u64; 2],
    /// The same with the hogs in place.
    rss_with_hogs_kib: [u64; 2],
    hogs: usize,
    stack: Stack,
}

/// How a run's normal client moves its 2 MB: [`timed_download`] or [`timed_upload`].
type Probe = fn(u16, usize, Duration) -> Result<Duration, String>;

/// A stack with one tunnel; the probe alone, then the hogs `start` makes, then the probe three
/// times beside them, with both roles' RSS before and with the hogs.
fn run(name: &str, start: impl FnOnce(&Stack) -> Hogs, probe: Probe) -> Run {
    // One run at a time: the runs measure time and memory, and on a small machine each needs
    // the CPU to itself to settle.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Stack::start(name, ResponderOpts::new(), 1, |_| {});
    let rss = |s: &Stack| [rss_kib(s.responder.pid()), rss_kib(s.initiator.pid())];
    // The tunnel is healthy: the probe is quick before any hog arrives.
    let alone = probe(s.r.egress, DOWNLOAD, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{name}: 2 MB without hogs: {e}"));
    let rss_before_kib = rss(&s);
    let hogs = start(&s);
    let rss_with_hogs_kib = rss(&s);
    eprintln!(
        "{name}: {} hogs settled; RSS (KiB) responder {} -> {}, initiator {} -> {}",
        hogs.0.len(),
        rss_before_kib[0],
        rss_with_hogs_kib[0],
        rss_before_kib[1],
        rss_with_hogs_kib[1],
    );
    let beside_hogs = (0..3)
        .map(|_| {
            probe(s.r.egress, DOWNLOAD, Duration::from_secs(15))
                .unwrap_or_else(|e| panic!("{name}: 2 MB beside {} hogs: {e}", hogs.0.len()))
        })
        .collect();
    let run = Run {
        alone,
        beside_hogs,
        rss_before_kib,
        rss_with_hogs_kib,
        hogs: hogs.0.len(),
        stack: s,
    };
    eprintln!(
        "{name}: 2 MB in {:?} alone, {:?} beside {} hogs",
        run.alone, run.beside_hogs, run.hogs
    );
    drop(hogs);
    run
}

impl Run {
    fn assert_quick(&self) {
        for took in &self.beside_hogs {
            assert!(
                *took < DOWNLOAD_BOUND,
                "2 MB took {took:?} beside {} hogs (bound {DOWNLOAD_BOUND:?})",
                self.hogs
            );
        }
    }

    /// The growth of the role's RSS (0 responder, 1 initiator) with the hogs is within `bound`.
    fn assert_rss_within(&self, role: usize, bound_kib: u64) {
        let grew = self.rss_with_hogs_kib[role].saturating_sub(self.rss_before_kib[role]);
        let name = ["responder", "initiator"][role];
        assert!(
            grew <= bound_kib,
            "the {name} grew by {grew} KiB with {} hogs (bound {bound_kib} KiB)",
            self.hogs
        );
    }
}

/// The reproduction: 12 zero-window HTTP/2 clients and 16 HTTP/1.1 clients that never
/// read, all on one node's tunnel, held its whole connection window (28 × 1 MiB of stream
/// windows against 4 MiB); another client's 2 MB download from that node stalled.
#[test]
fn non_reading_clients_do_not_stall_other_downloads() {
    let (h2, h1) = (12, 16);
    let run = run("hol-stall", |s| start_hogs(s, h2, h1), timed_download);
    run.assert_quick();
    // Each hog parks at most its stream window; the tunnel at most its bound.
    run.assert_rss_within(
        0,
        TUNNEL_BOUND_KIB + h1 as u64 * H1_CONNECTION_KIB + SLACK_KIB,
    );
}

/// More hogs than the tunnel's parking budget holds (48 × 1 MiB against 32 MiB): the tunnel's
/// receive buffers stay within their bound, the hogs that went longest without reading are
/// reset to make room, and downloads still go through.
#[test]
fn past_the_parking_budget_the_longest_unread_streams_are_shed() {
    let run = run("hol-shed", |s| start_hogs(s, 48, 0), timed_download);
    run.assert_quick();
    run.assert_rss_within(0, TUNNEL_BOUND_KIB + SLACK_KIB);
    let log = run.stack.responder.log_text();
    let shed = log.matches("the tunnel's parking budget is spent").count();
    eprintln!("hol-shed: {shed} streams shed");
    assert!(shed > 0, "no stream was shed");
    assert!(shed <= 48 - 32 + 4, "{shed} streams shed: more than needed");
}

/// The initiator's side: 16 uploads the local service does not read would hold the
/// initiator's receive window on the tunnel (16 × 1 MiB against 4 MiB); another client's 2 MB
/// upload (echoed back) still goes through.
#[test]
fn uploads_the_service_does_not_read_do_not_stall_other_uploads() {
    let hogs = 16;
    let run = run(
        "hol-upload",
        |s| {
            let hogs = Hogs(
                (0..hogs)
                    .map(|_| upload_to_a_service_that_does_not_read(s.r.egress, "n1"))
                    .collect(),
            );
            settle(s);
            hogs
        },
        timed_upload,
    );
    run.assert_quick();
    let bound = TUNNEL_BOUND_KIB + hogs as u64 * H1_CONNECTION_KIB + SLACK_KIB;
    run.assert_rss_within(1, bound);
}
