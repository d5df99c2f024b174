//! A scripted local service: a small `std::net` HTTP/1.1 server that answers each request with
//! the exact bytes a test chooses (including malformed or malicious ones) and records every
//! request it read: its head, its body as it was on the wire and decoded, and the connection
//! it came on. Every connection is served by a thread of its own, one request after another,
//! for as long as the peer keeps it open (or until the reply says to close it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most a request head may take.
const MAX_HEAD: usize = 64 * 1024;

/// One request as the service read it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The connection it came on: 0 for the first connection accepted, and so on.
    pub conn: usize,
    /// Its place on that connection: 0 for the first request.
    pub index: usize,
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// The head as it arrived, request line included.
    pub head: String,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as it was on the wire (chunk framing included).
    pub raw_body: Vec<u8>,
    /// The body decoded.
    pub body: Vec<u8>,
    /// Why the body's framing was invalid, if it was (the connection was then closed).
    pub body_error: Option<String>,
}

impl Seen {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target's path (without the query).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the connection does after a reply is written.
#[derive(Clone, Copy, Debug)]
pub enum Then {
    /// Reads the next request.
    KeepOpen,
    /// Closes the connection at once.
    Close,
    /// Closes the connection after this long, reading nothing more.
    CloseAfter(Duration),
}

/// The bytes written in answer to one request, and what follows.
#[derive(Clone, Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub after: Then,
}

impl Reply {
    /// Exactly `bytes`; the connection stays open.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            after: Then::KeepOpen,
        }
    }

    /// `200 OK` with `body` and its `content-length`.
    pub fn ok(body: &str) -> Reply {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// The service's ordinary answer to `seen`: `200` with body `real:<target>`.
    pub fn real(seen: &Seen) -> Reply {
        Reply::ok(&format!("real:{}", seen.target))
    }

    pub fn then(mut self, after: Then) -> Reply {
        self.after = after;
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    seen: Mutex<Vec<Seen>>,
    /// A clone of every connection accepted, to close them from the test.
    open: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
    stop: AtomicBool,
}

/// The service; it stops accepting and closes its connections when dropped.
pub struct Scripted {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Scripted {
    /// Listens on a free loopback port and answers every request with `handler`'s reply. The
    /// handler runs on the connection's thread: it may sleep to answer late.
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted service");
        let port = listener.local_addr().expect("local address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            seen: Mutex::new(Vec::new()),
            open: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, s));
        Scripted { port, shared }
    }

    /// Every request read so far, in the order they were read.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// The last request read for `path` (the target without its query).
    pub fn request_for(&self, path: &str) -> Option<Seen> {
        self.requests().into_iter().rev().find(|s| s.path() == path)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection (both directions: the peer reads the end of the stream).
    pub fn close_all(&self) {
        if let Ok(mut open) = self.shared.open.lock() {
            for s in open.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// What the service saw, one line per request, for failure messages.
    pub fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|s| {
                format!(
                    "conn {} #{}: {} {} ({} body bytes{})",
                    s.conn,
                    s.index,
                    s.method,
                    s.target,
                    s.body.len(),
                    s.body_error
                        .as_ref()
                        .map(|e| format!(", body error: {e}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- requests seen by the scripted service (port {}) -----\n{}\n-----",
                self.port,
                self.describe()
            );
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.close_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let conn = shared.accepted.fetch_add(1, Ordering::SeqCst);
                if let (Ok(clone), Ok(mut open)) = (stream.try_clone(), shared.open.lock()) {
                    open.push(clone);
                }
                let s = shared.clone();
                std::thread::spawn(move || serve(stream, conn, s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves one connection, then closes it (a clone of it stays in `Shared::open`, so it is
/// shut down explicitly).
fn serve(stream: TcpStream, conn: usize, shared: Arc<Shared>) {
    if let Ok(read_half) = stream.try_clone() {
        exchange(&stream, BufReader::new(read_half), conn, &shared);
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Request, reply, until the peer closes or a reply closes.
fn exchange(mut out: &TcpStream, mut reader: BufReader<TcpStream>, conn: usize, shared: &Shared) {
    for index in 0.. {
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        let mut seen = parse_head(&head, conn, index);
        let framing_ok = read_body(&mut reader, &mut seen);
        if let Ok(mut all) = shared.seen.lock() {
            all.push(seen.clone());
        }
        if !framing_ok {
            return;
        }
        let reply = (shared.handler)(&seen);
        if out.write_all(&reply.bytes).is_err() {
            return;
        }
        let _ = out.flush();
        match reply.after {
            Then::KeepOpen => {}
            Then::Close => return,
            Then::CloseAfter(wait) => {
                std::thread::sleep(wait);
                return;
            }
        }
    }
}

/// One request head, up to and including its blank line; `None` at the end of the stream (or
/// a head too large).
fn read_head(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).ok()?;
        if n == 0 {
            return None;
        }
        // Blank lines before a request line are ignored (RFC 9112 §2.2).
        if head.is_empty() && (line == b"\r\n" || line == b"\n") {
            continue;
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return None;
        }
        if line == b"\r\n" || line == b"\n" {
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
    }
}

fn parse_head(head: &str, conn: usize, index: usize) -> Seen {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Seen {
        conn,
        index,
        method,
        target,
        head: head.to_owned(),
        headers,
        raw_body: Vec::new(),
        body: Vec::new(),
        body_error: None,
    }
}

/// Reads the request's body as its head frames it; false when the framing is invalid.
fn read_body(r: &mut BufReader<TcpStream>, seen: &mut Seen) -> bool {
    let chunked = seen
        .headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let lengths: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if chunked {
        if !lengths.is_empty() {
            seen.body_error = Some("both content-length and transfer-encoding".into());
            return false;
        }
        return match read_chunked(r, seen) {
            Ok(()) => true,
            Err(e) => {
                seen.body_error = Some(e);
                false
            }
        };
    }
    match lengths.as_slice() {
        [] => true,
        [one] => {
            let Ok(n) = one.parse::<usize>() else {
                seen.body_error = Some(format!("bad content-length {one:?}"));
                return false;
            };
            let mut body = vec![0; n];
            if r.read_exact(&mut body).is_err() {
                seen.body_error = Some(format!("body shorter than its content-length {n}"));
                return false;
            }
            seen.raw_body = body.clone();
            seen.body = body;
            true
        }
        many => {
            seen.body_error = Some(format!("several content-lengths: {many:?}"));
            false
        }
    }
}

/// A chunked body, strictly: hex sizes (extensions allowed), CRLF everywhere, trailers after
/// the last chunk.
fn read_chunked(r: &mut BufReader<TcpStream>, seen: &mut Seen) -> Result<(), String> {
    loop {
        let size_line = crlf_line(r, &mut seen.raw_body)?;
        let size_str = size_line.split(';').next().unwrap_or("");
        if size_str.is_empty() || !size_str.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad chunk size line {size_line:?}"));
        }
        let size =
            usize::from_str_radix(size_str, 16).map_err(|_| format!("chunk size {size_str:?}"))?;
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let trailer = crlf_line(r, &mut seen.raw_body)?;
                if trailer.is_empty() {
                    return Ok(());
                }
            }
        }
        let mut data = vec![0; size + 2];
        r.read_exact(&mut data)
            .map_err(|e| format!("chunk of {size}: {e}"))?;
        seen.raw_body.extend_from_slice(&data);
        if !data.ends_with(b"\r\n") {
            return Err(format!("chunk of {size} not followed by CRLF"));
        }
        seen.body.extend_from_slice(&data[..size]);
    }
}

/// One line that must end with CRLF, appended to `raw`; returned without its CRLF.
fn crlf_line(r: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> Result<String, String> {
    let mut l = Vec::new();
    r.read_until(b'\n', &mut l)
        .map_err(|e| format!("read: {e}"))?;
    raw.extend_from_slice(&l);
    if !l.ends_with(b"\r\n") {
        return Err(format!(
            "line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&l)
        ));
    }
    Ok(String::from_utf8_lossy(&l[..l.len() - 2]).into_owned())
}
