//! The request loop of one shard: connection slots (one HTTP/1.1 connection per lane,
//! or one HTTP/2 connection shared by `-m` lanes), the pacing of requests (closed loop,
//! or open loop with intended send times), and the per-request outcome recording.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use monoio::io::IntoPollIo;

use crate::h2_client::{self, H2Conn};
use crate::header_template::HeaderSource;
use crate::latency::{HistogramError, LatencyPair};
use crate::outcome::{classify_hyper, classify_status, ErrorCounts, ErrorKind};
use crate::run::{Protocol, RunConfig};
use rtun::http::io::HyperIo;

type ReqBody = Full<Bytes>;

/// Granularity of monoio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Pause after a failed connect before the lane tries again.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Live counters of one shard, read by the progress line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardProgress {
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

/// What one shard is asked to do.
#[derive(Clone, Debug)]
pub struct ShardPlan {
    pub index: usize,
    pub connections: u64,
    /// Measured requests this shard issues (`-n` share), if bounded by count.
    pub requests: Option<u64>,
    /// Requests per second for this shard (open loop).
    pub rate: Option<f64>,
}

/// Common clock of a run (identical for all shards).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// When the schedule starts (first intended send time).
    pub start: Instant,
    /// Requests intended and sent before this are warmup and not recorded. A request
    /// intended before it but sent after it (the open loop's backlog when the target is
    /// overloaded) is recorded, with its latency from the intended time.
    pub measure_start: Instant,
    /// No request is intended at or after this.
    pub issue_end: Option<Instant>,
}

/// What one shard measured.
#[derive(Debug)]
pub struct ShardResult {
    pub latency: LatencyPair,
    pub ok: u64,
    pub errors: ErrorCounts,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Completion time of the last measured request.
    pub last_done: Option<Instant>,
    /// Open loop with a duration: measured slots whose send never happened because
    /// the run ended while lanes were still busy.
    pub unsent: u64,
}

#[derive(Clone, Copy, Debug)]
struct Ticket {
    intended: Instant,
    measured: bool,
}

struct Shard {
    cfg: Arc<RunConfig>,
    clock: Clock,
    remaining: Cell<Option<u64>>,
    requests_cap: Option<u64>,
    measured_issued: Cell<u64>,
    interval_nanos: Option<u128>,
    next_slot: Cell<u64>,
    stopped: Cell<bool>,
    headers: RefCell<HeaderSource>,
    result: RefCell<ShardResult>,
    progress: Arc<ShardProgress>,
}

impl Shard {
    fn next_ticket(&self) -> Option<Ticket> {
        if self.stopped.get() {
            return None;
        }
        let intended = match self.interval_nanos {
            Some(iv) => {
                let k = self.next_slot.get();
                self.next_slot.set(k + 1);
                let offset = iv.saturating_mul(k as u128);
                let offset = Duration::from_nanos(offset.min(u64::MAX as u128) as u64);
                self.clock.start + offset
            }
            None => Instant::now(),
        };
        if let Some(end) = self.clock.issue_end {
            // Open loop: also stop at the wall-clock end, so a backlog of late slots
            // does not stretch the run (the shortfall shows as a missed target rate).
            if intended >= end || Instant::now() >= end {
                self.stopped.set(true);
                return None;
            }
        }
        let in_window = intended >= self.clock.measure_start;
        // Behind schedule past the warmup: the target is overloaded. Recording only slots
        // intended in the window would record nothing until the warmup's backlog is sent
        // (a run shorter than that backlog reported 0 req/s); what is sent in the window is
        // what the target serves in it.
        let measured = in_window || Instant::now() >= self.clock.measure_start;
        if measured {
            if let Some(left) = self.remaining.get() {
                if left == 0 {
                    self.stopped.set(true);
                    return None;
                }
                self.remaining.set(Some(left - 1));
            }
        }
        if in_window {
            self.measured_issued.set(self.measured_issued.get() + 1);
        }
        Some(Ticket { intended, measured })
    }

    /// Open loop with an end: how many slots fall in the measured window.
    fn scheduled_measured(&self) -> u64 {
        let (Some(iv), Some(end)) = (self.interval_nanos, self.clock.issue_end) else {
            return 0;
        };
        let slots_before = |t: Instant| -> u64 {
            let nanos = t.saturating_duration_since(self.clock.start).as_nanos();
            nanos.div_ceil(iv.max(1)).min(u64::MAX as u128) as u64
        };
        let n = slots_before(end).saturating_sub(slots_before(self.clock.measure_start));
        self.requests_cap.map_or(n, |cap| n.min(cap))
    }

    fn finish(
        &self,
        t: Ticket,
        sent: Instant,
        done: Instant,
        outcome: Result<Response, ErrorKind>,
    ) {
        if !t.measured {
            return;
        }
        let mut r = self.result.borrow_mut();
        r.last_done = Some(r.last_done.map_or(done, |d| d.max(done)));
        let failed = match outcome {
            Ok(resp) => {
                // A send may leave up to one timer tick early; the corrected latency
                // is never below the uncorrected one.
                let from_sent = done - sent;
                let from_intended = done.saturating_duration_since(t.intended);
                r.latency.record(from_intended.max(from_sent), from_sent);
                r.bytes_received += resp.body_bytes;
                r.bytes_sent += self.cfg.body.len() as u64;
                match classify_status(resp.status) {
                    None => {
                        r.ok += 1;
                        false
                    }
                    Some(kind) => {
                        r.errors.add(kind);
                        true
                    }
                }
            }
            Err(kind) => {
                r.errors.add(kind);
                true
            }
        };
        self.progress.done.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn build_request(&self) -> Result<Request<()>, ErrorKind> {
        let cfg = &self.cfg;
        let uri = match cfg.protocol {
            Protocol::Http1 => http::Uri::from(cfg.target.path_and_query.clone()),
            Protocol::H2c => cfg.target.uri.clone(),
        };
        let mut req = Request::builder()
            .method(cfg.method.clone())
            .uri(uri)
            .body(())
            .map_err(|_| ErrorKind::Other)?;
        let headers = req.headers_mut();
        self.headers.borrow_mut().apply(headers);
        if cfg.protocol == Protocol::Http1 && !headers.contains_key(http::header::HOST) {
            if let Ok(v) = HeaderValue::from_str(cfg.target.authority.as_str()) {
                headers.insert(http::header::HOST, v);
            }
        }
        if cfg.connect_per_request {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(req)
    }
}

struct Response {
    status: StatusCode,
    body_bytes: u64,
}

enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(H2Conn),
}

/// One logical connection: taken whole by its HTTP/1.1 lane for each request, or
/// shared (cloned) by the HTTP/2 lanes; reopened when it closes.
#[derive(Default)]
struct ConnSlot {
    current: RefCell<Option<Sender>>,
    connecting: Cell<bool>,
}

/// Clears `connecting` even when the connecting request is cancelled by its timeout.
struct ConnectingGuard<'a>(&'a Cell<bool>);

impl Drop for ConnectingGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl ConnSlot {
    async fn acquire(&self, cfg: &RunConfig) -> Result<Sender, ErrorKind> {
        loop {
            let taken = self.current.borrow_mut().take();
            match taken {
                Some(Sender::H2(s)) if !s.is_closed() => {
                    *self.current.borrow_mut() = Some(Sender::H2(s.clone()));
                    return Ok(Sender::H2(s));
                }
                Some(Sender::H1(mut s)) if !s.is_closed() => {
                    // An idle keep-alive connection the server closed fails here: open a
                    // new one instead of counting an error.
                    if s.ready().await.is_ok() {
                        return Ok(Sender::H1(s));
                    }
                    continue;
                }
                _ => {}
            }
            if self.connecting.get() {
                monoio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            self.connecting.set(true);
            let guard = ConnectingGuard(&self.connecting);
            let sender = connect(cfg.addr, cfg.protocol).await;
            drop(guard);
            return match sender? {
                Sender::H2(s) => {
                    *self.current.borrow_mut() = Some(Sender::H2(s.clone()));
                    Ok(Sender::H2(s))
                }
                Sender::H1(mut s) => {
                    s.ready().await.map_err(|e| classify_hyper(&e))?;
                    Ok(Sender::H1(s))
                }
            };
        }
    }

    /// Hands an HTTP/1.1 connection back for the lane's next request.
    fn give_back(&self, s: http1::SendRequest<ReqBody>) {
        if !s.is_closed() {
            *self.current.borrow_mut() = Some(Sender::H1(s));
        }
    }
}

/// Opens a connection and runs its connection task on this shard.
async fn connect(addr: SocketAddr, protocol: Protocol) -> Result<Sender, ErrorKind> {
    match protocol {
        Protocol::Http1 => {
            let stream = monoio::net::TcpStream::connect_addr(addr)
                .await
                .map_err(|_| ErrorKind::Connect)?;
            let _ = stream.set_nodelay(true);
            let io = HyperIo(stream.into_poll_io().map_err(|_| ErrorKind::Connect)?);
            let (sender, conn) = http1::handshake(io).await.map_err(|_| ErrorKind::Connect)?;
            monoio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H1(sender))
        }
        Protocol::H2c => Ok(Sender::H2(h2_client::connect(addr).await?)),
    }
}

/// Sends one request on `slot` and reads the whole response body.
async fn exchange(shard: &Shard, slot: &ConnSlot) -> Result<Response, ErrorKind> {
    let req = shard.build_request()?;
    let sender = slot.acquire(&shard.cfg).await?;
    let resp = match sender {
        Sender::H1(mut s) => {
            let req = req.map(|()| Full::new(shard.cfg.body.clone()));
            let resp = s.send_request(req).await.map_err(|e| classify_hyper(&e))?;
            let out = read_body(resp).await?;
            if !shard.cfg.connect_per_request {
                slot.give_back(s);
            }
            out
        }
        Sender::H2(conn) => {
            let (status, body_bytes) = h2_client::exchange(&conn, req, &shard.cfg.body).await?;
            Response { status, body_bytes }
        }
    };
    Ok(resp)
}

async fn read_body(resp: http::Response<hyper::body::Incoming>) -> Result<Response, ErrorKind> {
    let status = resp.status();
    let mut body = resp.into_body();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify_hyper(&e))?;
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    Ok(Response { status, body_bytes })
}

async fn lane(shard: Rc<Shard>, slot: Rc<ConnSlot>) {
    while let Some(t) = shard.next_ticket() {
        // The timer wheel has millisecond ticks and rounds up: aim one tick early so
        // the send lands within [intended - 1 ms, intended] instead of after it.
        let now = Instant::now();
        if let Some(wait) = t.intended.checked_duration_since(now) {
            if wait > TIMER_TICK {
                monoio::time::sleep(wait - TIMER_TICK).await;
            }
        }
        let sent = Instant::now();
        let outcome = match monoio::time::timeout(shard.cfg.timeout, exchange(&shard, &slot)).await
        {
            Ok(r) => r,
            Err(_) => {
                // The HTTP/1.1 connection (if any) was dropped with the cancelled future;
                // an HTTP/2 connection stays shared, only the stream is reset.
                Err(ErrorKind::Timeout)
            }
        };
        let done = Instant::now();
        let connect_failed = matches!(outcome, Err(ErrorKind::Connect));
        shard.finish(t, sent, done, outcome);
        if connect_failed {
            monoio::time::sleep(CONNECT_BACKOFF).await;
        }
    }
}

/// Runs one shard's share of the load to completion.
pub async fn run_shard(
    cfg: Arc<RunConfig>,
    plan: ShardPlan,
    clock: Clock,
    progress: Arc<ShardProgress>,
) -> Result<ShardResult, HistogramError> {
    let headers = HeaderSource::new(cfg.headers.clone(), cfg.pick, plan.index, cfg.threads);
    let lanes_per_conn = match cfg.protocol {
        Protocol::Http1 => 1,
        Protocol::H2c => cfg.streams,
    };
    let shard = Rc::new(Shard {
        interval_nanos: plan
            .rate
            .filter(|r| *r > 0.0)
            .map(|r| (1e9 / r).round().max(1.0) as u128),
        remaining: Cell::new(plan.requests),
        requests_cap: plan.requests,
        measured_issued: Cell::new(0),
        next_slot: Cell::new(0),
        stopped: Cell::new(false),
        headers: RefCell::new(headers),
        result: RefCell::new(ShardResult {
            latency: LatencyPair::new()?,
            ok: 0,
            errors: ErrorCounts::default(),
            bytes_received: 0,
            bytes_sent: 0,
            last_done: None,
            unsent: 0,
        }),
        progress,
        clock,
        cfg,
    });
    if plan.requests == Some(0) || plan.connections == 0 {
        return Ok(take_result(&shard));
    }
    let now = Instant::now();
    if clock.start > now {
        monoio::time::sleep(clock.start - now).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        let slot = Rc::new(ConnSlot::default());
        for _ in 0..lanes_per_conn {
            tasks.push(monoio::spawn(lane(shard.clone(), slot.clone())));
        }
    }
    for t in tasks {
        t.await;
    }
    Ok(take_result(&shard))
}

fn take_result(shard: &Shard) -> ShardResult {
    let mut r = shard.result.borrow_mut();
    ShardResult {
        latency: r.latency.clone(),
        ok: r.ok,
        errors: std::mem::take(&mut r.errors),
        bytes_received: r.bytes_received,
        bytes_sent: r.bytes_sent,
        last_done: r.last_done,
        unsent: shard
            .scheduled_measured()
            .saturating_sub(shard.measured_issued.get()),
    }
}
