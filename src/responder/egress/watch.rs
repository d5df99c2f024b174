//! Connection-level timeouts of the egress listener (ARCHITECTURE.md §7), one [`ConnWatch`]
//! per client connection:
//!
//! - **first request**: from accepting the connection (TLS handshake included) to its first
//!   request head, `header_read_timeout`, on HTTP/1.1 and HTTP/2 alike (an h2c client that
//!   sends only the preface, or only SETTINGS and PINGs, is closed);
//! - **request head** (HTTP/1.1): from the first byte of a later request head to its end,
//!   `header_read_timeout` (hyper's own timer is off: it would also cut idle keep-alive
//!   connections at that bound);
//! - **idle**: no request in flight for `idle_timeout` closes the connection (HTTP/2: GOAWAY
//!   first).
//!
//! A request is in flight from the moment hyper hands its head to the service until its
//! response body is dropped ([`InFlight`]). The watch is polled with the connection, on its
//! shard: it recomputes its deadline on every poll, and while requests are in flight looks
//! again at most every `idle_timeout`, so no request needs to wake it.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{enabled, EgressListenerConfig};
use crate::shard::timer::Timer;

/// Why the watch closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No first request within `header_read_timeout` of the accept.
    FirstRequest,
    /// An HTTP/1.1 request head begun but not finished within `header_read_timeout`.
    Head,
    /// No request in flight for `idle_timeout`.
    Idle,
}

impl Expiry {
    pub fn label(&self) -> &'static str {
        match self {
            Expiry::FirstRequest => "first_request_timeout",
            Expiry::Head => "header_read_timeout",
            Expiry::Idle => "idle_timeout",
        }
    }
}

/// The bounds a watch enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    first_request: Duration,
    /// HTTP/1.1 only: the bound on a later request head.
    head: Option<Duration>,
    idle: Option<Duration>,
}

/// What a connection is doing, as the watch last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    start: Instant,
    in_flight: u32,
    served: bool,
    idle_since: Instant,
    head_started: Option<Instant>,
}

/// Which deadline applies now: expired, or when to look again.
fn next(b: Bounds, s: State, now: Instant) -> Result<Instant, Expiry> {
    let recheck = now + b.idle.unwrap_or(b.first_request);
    if s.in_flight > 0 {
        return Ok(recheck);
    }
    if !s.served {
        let due = s.start + b.first_request;
        return if now >= due {
            Err(Expiry::FirstRequest)
        } else {
            Ok(due)
        };
    }
    if let (Some(head), Some(started)) = (b.head, s.head_started) {
        let due = started + head;
        return if now >= due {
            Err(Expiry::Head)
        } else {
            Ok(due)
        };
    }
    match b.idle {
        Some(idle) => {
            let due = s.idle_since + idle;
            if now >= due {
                Err(Expiry::Idle)
            } else {
                Ok(due)
            }
        }
        None => Ok(recheck),
    }
}

/// One connection's timeouts; clones share it.
#[derive(Clone)]
pub struct ConnWatch(Rc<Shared>);

struct Shared {
    h2: bool,
    bounds: Bounds,
    state: Cell<State>,
    timer: Cell<Timer>,
}

impl ConnWatch {
    /// A watch for a connection accepted at `accepted`; `h1` tracks request heads.
    pub fn new(accepted: Instant, h1: bool, cfg: &EgressListenerConfig) -> Self {
        let bounds = Bounds {
            first_request: cfg.header_read_timeout,
            head: h1.then_some(cfg.header_read_timeout),
            idle: enabled(cfg.idle_timeout),
        };
        Self(Rc::new(Shared {
            h2: !h1,
            bounds,
            state: Cell::new(State {
                start: accepted,
                in_flight: 0,
                served: false,
                idle_since: accepted,
                head_started: None,
            }),
            timer: Cell::new(Timer::new()),
        }))
    }

    /// Whether the connection speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.0.h2
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.0.state.get();
        f(&mut state);
        self.0.state.set(state);
    }

    /// A request head arrived: in flight until the returned guard (moved into its response
    /// body) drops.
    pub fn request(&self) -> InFlight {
        self.update(|s| {
            s.in_flight += 1;
            s.served = true;
            s.head_started = None;
        });
        InFlight(self.clone())
    }

    /// Bytes arrived from the client: while no request is in flight, a request head begins.
    fn on_read(&self) {
        let s = self.0.state.get();
        if self.0.bounds.head.is_some() && s.served && s.in_flight == 0 && s.head_started.is_none()
        {
            self.update(|s| s.head_started = Some(Instant::now()));
        }
    }

    /// `Ready` once a deadline has passed; else `Pending`, with a timer armed for the next.
    pub fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<Expiry> {
        let mut timer = self.0.timer.take();
        let polled = loop {
            let due = match next(self.0.bounds, self.0.state.get(), Instant::now()) {
                Err(expiry) => break Poll::Ready(expiry),
                Ok(due) => due,
            };
            // `due` moves on every poll while requests come and go (the recheck is `now +
            // idle`, the idle deadline follows each request): keep an earlier entry and
            // recompute when it fires.
            if timer.poll_by(due, cx).is_pending() {
                break Poll::Pending;
            }
        };
        self.0.timer.set(timer);
        polled
    }

    /// The connection's I/O, reporting to this watch when bytes arrive.
    pub fn io<I>(&self, io: I) -> Watched<I> {
        Watched {
            io,
            watch: self.clone(),
        }
    }
}

/// A request in flight on its connection.
pub struct InFlight(ConnWatch);

impl InFlight {
    /// `body`, keeping the request in flight until it is dropped.
    pub fn attach<B>(self, body: B) -> InFlightBody<B> {
        InFlightBody {
            body,
            _in_flight: self,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request in flight.
pub struct InFlightBody<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client connection's I/O that tells its [`ConnWatch`] when bytes arrive.
pub struct Watched<I> {
    io: I,
    watch: ConnWatch,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(60);

    fn bounds(h1: bool) -> Bounds {
        Bounds {
            first_request: T,
            head: h1.then_some(T),
            idle: Some(IDLE),
        }
    }

    fn state(t0: Instant) -> State {
        State {
            start: t0,
            in_flight: 0,
            served: false,
            idle_since: t0,
            head_started: None,
        }
    }

    #[test]
    fn a_connection_without_a_first_request_is_closed_after_the_head_bound() {
        let t0 = Instant::now();
        for h1 in [true, false] {
            assert_eq!(next(bounds(h1), state(t0), t0), Ok(t0 + T));
            assert_eq!(
                next(bounds(h1), state(t0), t0 + T),
                Err(Expiry::FirstRequest)
            );
        }
    }

    #[test]
    fn an_idle_connection_is_closed_after_the_idle_timeout_not_the_head_bound() {
        let t0 = Instant::now();
        let served = State {
            served: true,
            idle_since: t0 + T,
            ..state(t0)
        };
        assert_eq!(next(bounds(true), served, t0 + T), Ok(t0 + T + IDLE));
        assert_eq!(next(bounds(true), served, t0 + T + IDLE), Err(Expiry::Idle));
        // HTTP/1.1: once a head begins, the head bound applies from its first byte.
        let begun = State {
            head_started: Some(t0 + 2 * T),
            ..served
        };
        assert_eq!(next(bounds(true), begun, t0 + 2 * T), Ok(t0 + 3 * T));
        assert_eq!(next(bounds(true), begun, t0 + 3 * T), Err(Expiry::Head));
    }

    #[test]
    fn requests_in_flight_keep_the_connection_and_idle_can_be_off() {
        let t0 = Instant::now();
        let busy = State {
            in_flight: 2,
            served: true,
            ..state(t0)
        };
        let later = t0 + 10 * IDLE;
        assert_eq!(next(bounds(false), busy, later), Ok(later + IDLE));
        let no_idle = Bounds {
            idle: None,
            ..bounds(false)
        };
        let quiet = State {
            served: true,
            ..state(t0)
        };
        assert_eq!(next(no_idle, quiet, later), Ok(later + T), "only rechecks");
    }

    #[test]
    fn the_watch_counts_requests_in_flight() {
        let cfg = EgressListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
        let watch = ConnWatch::new(Instant::now(), true, &cfg);
        watch.on_read();
        assert_eq!(
            watch.0.state.get().head_started,
            None,
            "first head: own bound"
        );
        let (a, b) = (watch.request(), watch.request());
        assert_eq!(watch.0.state.get().in_flight, 2);
        drop(a);
        watch.on_read();
        assert_eq!(watch.0.state.get().head_started, None, "b is in flight");
        drop(b);
        let s = watch.0.state.get();
        assert_eq!((s.in_flight, s.served), (0, true));
        watch.on_read();
        assert!(watch.0.state.get().head_started.is_some());
        let _c = watch.request();
        assert_eq!(watch.0.state.get().head_started, None);
    }
}
