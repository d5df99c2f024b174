//! Bodies that keep the books for the logging phase.
//!
//! [`Logged`] wraps the response body sent to the client: it counts the bytes, notices whether
//! the body ended whole, and when it is dropped (hyper or the h2 pump is done with it, or the
//! client went away) it closes the [`RequestCtx`]'s outcome and runs the logging phase. So the
//! logging phase sees the request's true end, not the moment the response head left.
//!
//! [`Counted`] wraps the request body sent upstream: it counts its bytes and records a failure
//! of the client's body in a [`BodyTally`] shared with the
//! context. A body that broke off because the client's body did is the client's fault
//! (`client_body`), not the upstream's (`upstream_body`) nor a client that went away.
//!
//! Both keep the request's [`StreamClock`] (`pipeline::deadline`): each body byte that moves
//! postpones the stream idle timeout, and the request body's end starts the route timeout.
//! [`Logged`] also enforces the stream idle timeout once the response head is out: when no
//! byte moved either way for that long while it waits for the next chunk, it ends the body
//! with [`StreamIdle`] (`stream_idle_timeout` in the logging phase).

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use super::{BodyTally, Pipeline, ProxyError, RequestCtx, StreamClock};
use crate::shard::timer::Timer;

/// A boxed body error, what [`Logged`] yields (hyper and the h2 pump take it as is).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error that ends a response body when the stream idle timeout fires.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout: no body bytes moved for {0:?}")]
pub struct StreamIdle(pub Duration);

/// A response body that runs the logging phase when it is done.
pub struct Logged<B> {
    inner: B,
    ctx: Option<Box<RequestCtx>>,
    pipeline: Rc<Pipeline>,
    ended: bool,
    /// The response head's `content-length`: a body that sent that much was sent whole, even
    /// if its writer (hyper, HTTP/1.1) dropped it before it saw the end of the stream.
    length: Option<u64>,
    /// The request's clock (inert for a local reply).
    clock: StreamClock,
    /// Armed while the body waits for a chunk and the stream idle timeout is on.
    idle_timer: Timer,
}

impl<B: Body> Logged<B> {
    /// `ctx` comes boxed from the driver, which holds it boxed from the start: the context
    /// is a few hundred bytes that would otherwise be copied into every future holding it.
    pub fn new(inner: B, ctx: Box<RequestCtx>, pipeline: Rc<Pipeline>) -> Self {
        let ended = inner.is_end_stream();
        let clock = ctx.outcome.stream.clone();
        Self {
            inner,
            ctx: Some(ctx),
            pipeline,
            ended,
            length: None,
            clock,
            idle_timer: Timer::new(),
        }
    }

    /// Takes the response head's `content-length`, so the body counts as whole once it has
    /// sent that many bytes.
    pub fn with_length(mut self, headers: &http::HeaderMap) -> Self {
        self.length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        self
    }
}

impl<B> Logged<B> {
    fn note_failure(&mut self, failure: ProxyError) {
        if let Some(ctx) = self.ctx.as_mut() {
            ctx.outcome.failure.get_or_insert(failure);
        }
    }

    /// While the body waits: `Ready` with the timeout once no body byte moved either way for
    /// the stream idle timeout, else `Pending` with a timer armed for that moment.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        loop {
            let due = match self.clock.idle_deadline() {
                None => return Poll::Pending,
                Some(Err(idle)) => return Poll::Ready(idle),
                Some(Ok(due)) => due,
            };
            if self.idle_timer.poll_until(due, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<B> Body for Logged<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(ctx) = this.ctx.as_mut() {
                        ctx.outcome.bytes_sent += data.remaining() as u64;
                    }
                    if data.has_remaining() {
                        this.clock.touch();
                    }
                }
                this.ended |= this.inner.is_end_stream();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                let failure = this
                    .ctx
                    .as_ref()
                    .and_then(|ctx| ctx.outcome.client_body_failure())
                    .unwrap_or_else(|| ProxyError::UpstreamBodyFailed {
                        detail: e.to_string(),
                    });
                // The one log line of a failure after the head (a local reply's is `respond`'s):
                // the client's doing at debug, the upstream's at warn.
                if let Some(ctx) = this.ctx.as_ref().filter(|c| c.outcome.failure.is_none()) {
                    match &failure {
                        ProxyError::UpstreamBodyFailed { .. } => {
                            tracing::warn!(request_id = %ctx.request_id, role = ctx.role.label(), reason = failure.label(), bytes_sent = ctx.outcome.bytes_sent, "response cut short: {failure}")
                        }
                        _ => {
                            tracing::debug!(request_id = %ctx.request_id, role = ctx.role.label(), reason = failure.label(), "response cut short: {failure}")
                        }
                    }
                }
                this.note_failure(failure);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Poll::Ready(idle) = this.poll_idle(cx) else {
                    return Poll::Pending;
                };
                this.idle_timer.cancel();
                if let Some(ctx) = this.ctx.as_mut() {
                    tracing::info!(request_id = %ctx.request_id, role = ctx.role.label(), bytes_sent = ctx.outcome.bytes_sent, "stream idle timeout: no body bytes moved for {idle:?}; ending the response");
                }
                this.note_failure(ProxyError::StreamIdleTimeout {
                    timeout: idle,
                    response_started: true,
                });
                Poll::Ready(Some(Err(Box::new(StreamIdle(idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            let whole = self.length.is_some_and(|n| n == ctx.outcome.bytes_sent);
            finish(&mut ctx, &self.pipeline, self.ended || whole);
        }
    }
}

/// Closes the outcome and runs the logging phase. `completed`: the response body was sent
/// whole; a body cut short with no recorded cause was cut by the client: its request body
/// failed, or it went away.
pub fn finish(ctx: &mut RequestCtx, pipeline: &Pipeline, completed: bool) {
    if !completed && ctx.outcome.failure.is_none() {
        let failure = ctx.outcome.client_body_failure().unwrap_or_else(|| {
            tracing::debug!(request_id = %ctx.request_id, role = ctx.role.label(), "request cancelled: the client went away before the response ended");
            ProxyError::ClientClosed
        });
        ctx.outcome.failure = Some(failure);
    }
    ctx.outcome.completed = completed;
    ctx.timings.end = Some(Instant::now());
    pipeline.logging(ctx);
}

/// A request between its head and its response head, borrowed by the driver. Dropped before
/// [`disarm`](Self::disarm) — the client went away and hyper dropped the request's future — it
/// closes the outcome (`ClientClosed`) and runs the logging phase, so a request cancelled
/// before its response is logged and counted as one cancelled during it is (by [`Logged`]).
pub struct InFlight<'a> {
    ctx: &'a mut RequestCtx,
    pipeline: &'a Pipeline,
    armed: bool,
}

impl<'a> InFlight<'a> {
    pub fn new(ctx: &'a mut RequestCtx, pipeline: &'a Pipeline) -> Self {
        Self {
            ctx,
            pipeline,
            armed: true,
        }
    }

    /// The response head is ready: the request is no longer cancelled by going away here.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl std::ops::Deref for InFlight<'_> {
    type Target = RequestCtx;

    fn deref(&self) -> &RequestCtx {
        self.ctx
    }
}

impl std::ops::DerefMut for InFlight<'_> {
    fn deref_mut(&mut self) -> &mut RequestCtx {
        self.ctx
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            finish(self.ctx, self.pipeline, false);
        }
    }
}

/// A request body that counts the bytes it yields and records why it failed, if it does;
/// on the request's clock, each chunk is activity and the body's end starts the route timeout.
pub struct Counted<B> {
    inner: B,
    tally: BodyTally,
    clock: StreamClock,
}

impl<B> Counted<B> {
    /// Counts into `tally` (from [`BodyTally::for_body`] on the request's outcome) and keeps
    /// `clock` (from [`StreamClock::start`]).
    pub fn new(inner: B, tally: BodyTally, clock: StreamClock) -> Self {
        Self {
            inner,
            tally,
            clock,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.tally.add(data.remaining());
                    self.clock.touch();
                }
                if self.inner.is_end_stream() {
                    self.clock.end_request();
                }
            }
            Poll::Ready(Some(Err(e))) => self.tally.set_fault(e.to_string()),
            Poll::Ready(None) => self.clock.end_request(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;
    use crate::pipeline::{Role, Stage};

    /// (bytes sent, bytes received, completed, failure) as the logging phase saw them.
    type Log = Rc<RefCell<Vec<(u64, u64, bool, &'static str)>>>;

    /// Keeps what the logging phase saw.
    struct Seen(Log);

    impl Stage for Seen {
        fn logging(&self, ctx: &RequestCtx) {
            self.0.borrow_mut().push((
                ctx.outcome.bytes_sent,
                ctx.outcome.request_body.bytes(),
                ctx.outcome.completed,
                ctx.failure_label(),
            ));
        }
    }

    fn setup() -> (Box<RequestCtx>, Rc<Pipeline>, Log) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let pipeline = Pipeline::new(vec![Box::new(Seen(seen.clone()))]);
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let ctx = RequestCtx::new(Role::Egress, 0, None, &parts, false);
        (Box::new(ctx), pipeline, seen)
    }

    #[monoio::test]
    async fn logging_runs_once_with_bytes_both_ways_after_the_body_ends() {
        let (mut ctx, pipeline, seen) = setup();
        let mut request = Counted::new(
            Full::new(Bytes::from_static(b"12345")),
            ctx.outcome.request_body.for_body(false),
            StreamClock::default(),
        );
        while request.frame().await.is_some() {}
        let body = Logged::new(Full::new(Bytes::from_static(b"hello")), ctx, pipeline);
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"hello")));
        assert_eq!(*seen.borrow(), [(5, 5, true, "-")]);
    }

    #[monoio::test]
    async fn a_body_dropped_early_is_logged_as_client_closed() {
        let (ctx, pipeline, seen) = setup();
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ]);
        let mut body = Logged::new(StreamBody::new(chunks), ctx, pipeline);
        let first = body.frame().await;
        assert!(first.is_some());
        assert!(seen.borrow().is_empty(), "not before the end");
        drop(body);
        assert_eq!(*seen.borrow(), [(2, 0, false, "client_closed")]);
    }

    #[monoio::test]
    async fn a_body_that_sent_its_content_length_is_whole_even_if_dropped_before_its_end() {
        // hyper (HTTP/1.1) stops polling once content-length bytes are written; the stream's
        // end may not have been seen yet.
        let chunks = || {
            futures_util::stream::iter(vec![
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::from_static(b"cd"))),
            ])
        };
        for (length, expected) in [
            ("4", (4, 0, true, "-")),
            ("5", (4, 0, false, "client_closed")),
        ] {
            let (ctx, pipeline, seen) = setup();
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_LENGTH, length.parse().unwrap());
            let mut body =
                Logged::new(StreamBody::new(chunks()), ctx, pipeline).with_length(&headers);
            body.frame().await;
            body.frame().await;
            drop(body);
            assert_eq!(*seen.borrow(), [expected]);
        }
    }

    #[monoio::test]
    async fn a_request_dropped_before_its_response_is_logged_as_client_closed() {
        let (mut ctx, pipeline, seen) = setup();
        {
            let in_flight = InFlight::new(&mut ctx, &pipeline);
            assert_eq!(in_flight.failure_label(), "-");
            // The driver's future is dropped here, as hyper drops it when the client leaves.
        }
        assert_eq!(*seen.borrow(), [(0, 0, false, "client_closed")]);
        let (mut ctx, pipeline, seen) = setup();
        InFlight::new(&mut ctx, &pipeline).disarm();
        assert!(
            seen.borrow().is_empty(),
            "a disarmed guard leaves it to the body"
        );
    }

    /// A request body that yields `ab` and then fails, as a bad chunk does.
    fn failing_request() -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        StreamBody::new(futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("invalid chunk size line")),
        ]))
    }

    #[monoio::test]
    async fn a_failed_client_body_is_recorded_and_blamed_on_the_client() {
        // The response body breaks off because the client's body did (the tunnel stream was
        // reset under it): the client's fault, not the upstream's.
        let (mut ctx, pipeline, seen) = setup();
        let mut request = Counted::new(
            failing_request(),
            ctx.outcome.request_body.for_body(false),
            StreamClock::default(),
        );
        while let Some(Ok(_)) = request.frame().await {}
        assert_eq!(
            ctx.outcome.request_body.fault(),
            Some("invalid chunk size line")
        );
        let response = futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"xy"))),
            Err(std::io::Error::other("stream reset")),
        ]);
        let mut body = Logged::new(StreamBody::new(response), ctx, pipeline);
        while let Some(Ok(_)) = body.frame().await {}
        drop(body);
        assert_eq!(*seen.borrow(), [(2, 2, false, "client_body")]);

        // Or hyper drops the response body first: still the client's body, not client_closed.
        let (mut ctx, pipeline, seen) = setup();
        let mut request = Counted::new(
            failing_request(),
            ctx.outcome.request_body.for_body(false),
            StreamClock::default(),
        );
        while let Some(Ok(_)) = request.frame().await {}
        drop(Logged::new(
            StreamBody::new(futures_util::stream::pending::<
                Result<Frame<Bytes>, std::io::Error>,
            >()),
            ctx,
            pipeline,
        ));
        assert_eq!(*seen.borrow(), [(0, 2, false, "client_body")]);
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_response_that_stops_moving_ends_with_the_stream_idle_timeout() {
        let (mut ctx, pipeline, seen) = setup();
        let clock = ctx
            .outcome
            .stream
            .start(Some(Duration::from_millis(20)), false);
        // The request body moves and ends: activity, and the route timeout's start.
        let mut request = Counted::new(
            Full::new(Bytes::from_static(b"abc")),
            ctx.outcome.request_body.for_body(false),
            clock,
        );
        while request.frame().await.is_some() {}
        let stalled = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Frame::data(
            Bytes::from_static(b"xy"),
        ))])
        .chain(futures_util::stream::pending());
        let mut body = Logged::new(StreamBody::new(stalled), ctx, pipeline);
        assert!(matches!(body.frame().await, Some(Ok(_))));
        let ended = body.frame().await;
        let error = ended
            .and_then(Result::err)
            .expect("the idle timeout ends the body");
        assert!(error.is::<StreamIdle>(), "{error}");
        drop(body);
        assert_eq!(*seen.borrow(), [(2, 3, false, "stream_idle_timeout")]);
    }

    #[monoio::test]
    async fn an_empty_body_counts_as_ended() {
        let (ctx, pipeline, seen) = setup();
        drop(Logged::new(Full::new(Bytes::new()), ctx, pipeline));
        assert_eq!(*seen.borrow(), [(0, 0, true, "-")]);
    }
}
