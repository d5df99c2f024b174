//! Body bridging between hyper bodies and h2 streams, under flow control both ways.
//!
//! Two pieces serve both roles:
//! - [`RecvBody`] presents a tunnel stream's h2 `RecvStream` as an `http_body::Body`. What
//!   arrived with the head is taken at once (so a small body goes out with its head in one
//!   write, not in a second one a loop turn later); then a task of
//!   its own takes the stream's data off the connection as soon as it arrives, into a buffer
//!   that the stream window bounds, and parks it in the tunnel's [`ParkingLot`], which gives the
//!   connection-level capacity back at once; the stream's own capacity comes back only as the
//!   consumer takes each chunk. So a slow reader stalls its own stream, never its tunnel's
//!   other streams (see [`parking`]), and a consumer that leaves data unread for the lot's
//!   stall timeout has its stream reset.
//! - [`pump_body`] copies any `http_body::Body` into an h2 `SendStream`, reserving send capacity
//!   chunk by chunk and waiting for the peer's WINDOW_UPDATEs.
//!
//! With both, memory per request is bounded by the h2 stream window, whatever the body size,
//! and per tunnel by the connection window plus the lot's budget (docs/ARCHITECTURE.md §7).

pub mod parking;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::{FlowControl, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::shard::timer::Timer;

pub use parking::{ParkingLot, WindowTarget};

/// How long a consumer may leave a tunnel stream's data unread before the stream is reset,
/// unless the tunnel says otherwise (the stream idle timeout as it applies to a reader that
/// stopped reading; Envoy's `stream_idle_timeout` default).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest chunk handed to h2 in one `send_data`; matches the default max frame size × 4 so
/// h2 can split it into frames without us holding more than a window's worth.
const MAX_CHUNK: usize = 64 * 1024;

/// Errors while moving a body across an h2 stream.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("h2 stream: {0}")]
    H2(#[from] h2::Error),
    #[error("reading body: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    #[error("peer reset the stream: {0:?}")]
    Reset(h2::Reason),
}

/// An h2 receive stream as a hyper-compatible body, drained eagerly into a buffer the stream
/// window bounds.
///
/// `G` is held until the body is dropped: callers use it to count active streams. Dropping the
/// body drops its buffer and lets the stream go (h2 resets it if it is still open).
pub struct RecvBody<G = ()> {
    cell: Arc<Cell>,
    lot: ParkingLot,
    _guard: G,
}

/// What a stream's drain task and its consumer share.
struct Cell {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Taken off the connection, not yet by the consumer; all of it parked in the lot.
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    buffered: usize,
    /// How the data ended, once it has (the drain task's word; the consumer takes it last).
    end: Option<Ending>,
    /// The consumer took the end.
    finished: bool,
    /// The stream's flow control, to release capacity as the consumer reads.
    flow: Option<FlowControl>,
    /// Since when the consumer has left data unread (`chunks` not empty and nothing taken).
    stalled_since: Option<Instant>,
    /// Why the stream must be reset, set by the stall timer or the lot (shedding).
    fault: Option<Fault>,
    /// The body was dropped: the drain task lets the stream go.
    dropped: bool,
    consumer: Option<Waker>,
    drainer: Option<Waker>,
}

enum Ending {
    Eof,
    Trailers(HeaderMap),
    Failed(h2::Error),
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The consumer did not read for the stall timeout.
    Stalled,
    /// The tunnel's parking budget is spent and this consumer read least recently.
    Shed,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent queue behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl parking::Parked for Cell {
    fn stalled_since(&self) -> Option<Instant> {
        self.lock().stalled_since
    }

    fn parked(&self) -> usize {
        self.lock().buffered
    }

    fn shed(&self) {
        let mut st = self.lock();
        st.fault.get_or_insert(Fault::Shed);
        if let Some(w) = st.drainer.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl State {
    /// Empties the buffer; returns how many bytes to unpark.
    fn clear(&mut self) -> usize {
        self.chunks.clear();
        self.stalled_since = None;
        std::mem::take(&mut self.buffered)
    }

    fn wake_consumer(&mut self) {
        if let Some(w) = self.consumer.take() {
            w.wake();
        }
    }
}

impl<G> RecvBody<G> {
    /// Starts draining `stream` into the body, parking what it takes in `lot` (its tunnel's;
    /// the lot's stall timeout applies). Call it on the monoio runtime that drives the
    /// stream's connection: the drain task is spawned there. The body itself may move to
    /// another thread.
    pub fn new(mut stream: RecvStream, guard: G, lot: &ParkingLot) -> Self {
        let mut state = State::default();
        let mut progress = Progress::default();
        let open = !stream.is_end_stream();
        if open {
            state.flow = Some(stream.flow_control().clone());
            // What arrived with the head (a small body and its END_STREAM usually come in the
            // same read): taken now, the consumer's first poll finds it, and hyper writes it
            // with the head in one write instead of a second one a loop turn later. The drain
            // task, polled next, registers for what comes after (this waker does nothing).
            let mut cx = Context::from_waker(Waker::noop());
            let took = take_received(&mut stream, &mut state, &mut progress, &mut cx);
            if took > 0 {
                lot.park(took);
            }
        } else {
            // Nothing will come: no task, and the stream goes now.
            state.end = Some(Ending::Eof);
        }
        let cell = Arc::new(Cell {
            state: Mutex::new(state),
        });
        if open {
            monoio::spawn(drain(stream, cell.clone(), lot.clone(), progress));
        }
        Self {
            cell,
            lot: lot.clone(),
            _guard: guard,
        }
    }
}

impl<G> Drop for RecvBody<G> {
    fn drop(&mut self) {
        let (flow, freed) = {
            let mut st = self.cell.lock();
            st.dropped = true;
            let freed = st.clear();
            if let Some(w) = st.drainer.take() {
                w.wake();
            }
            (st.flow.take(), freed)
        };
        let_go(flow, freed, &self.lot);
    }
}

/// Lets a stream's buffer go: its capacity back to h2 (which would otherwise keep it until
/// every handle of the stream is gone, and another task may hold one), then out of the lot.
fn let_go(flow: Option<FlowControl>, freed: usize, lot: &ParkingLot) {
    if let Some(mut flow) = flow {
        if freed > 0 {
            let _ = flow.release_capacity(freed);
        }
    }
    lot.unpark(freed);
}

impl<G: Unpin> Body for RecvBody<G> {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let mut st = self.cell.lock();
        if let Some(chunk) = st.chunks.pop_front() {
            let n = chunk.len();
            st.buffered -= n;
            // The chunk now belongs to the consumer: the stream may have more. (This also
            // gives back connection capacity, which the lot had lent already: unparking takes
            // as much back off the target.)
            if let Some(flow) = st.flow.as_mut() {
                let _ = flow.release_capacity(n);
            }
            self.lot.unpark(n);
            st.stalled_since = (!st.chunks.is_empty()).then(Instant::now);
            if st.chunks.is_empty() && st.end.is_some() {
                // Nothing left for the drain task to watch over.
                if let Some(w) = st.drainer.take() {
                    w.wake();
                }
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match st.end.take() {
            Some(ending) => {
                st.finished = true;
                Poll::Ready(match ending {
                    Ending::Eof => None,
                    Ending::Trailers(trailers) => Some(Ok(Frame::trailers(trailers))),
                    Ending::Failed(e) => Some(Err(e)),
                })
            }
            None if st.finished => Poll::Ready(None),
            None => {
                if !st
                    .consumer
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    st.consumer = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let st = self.cell.lock();
        st.chunks.is_empty() && (st.finished || matches!(st.end, Some(Ending::Eof)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// How far a stream's data has been taken off the connection.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// h2 has no more DATA for it (trailers may follow).
    data_done: bool,
    /// Its end (EOF, trailers or failure) is in `State::end`.
    ended: bool,
}

/// Takes what h2 holds for the stream into `st`, up to its end; returns how many bytes it took
/// (the caller parks them). Registers `cx` with h2 when it stops short of the end.
fn take_received(
    stream: &mut RecvStream,
    st: &mut State,
    progress: &mut Progress,
    cx: &mut Context<'_>,
) -> usize {
    let mut took = 0;
    while !progress.ended {
        if !progress.data_done {
            match stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    if st.chunks.is_empty() {
                        st.stalled_since = Some(Instant::now());
                    }
                    took += data.len();
                    st.buffered += data.len();
                    st.chunks.push_back(data);
                }
                Poll::Ready(Some(Err(e))) => {
                    st.end = Some(Ending::Failed(e));
                    progress.ended = true;
                }
                Poll::Ready(None) => progress.data_done = true,
                Poll::Pending => break,
            }
        } else {
            match stream.poll_trailers(cx) {
                Poll::Ready(Ok(trailers)) => {
                    st.end = Some(trailers.map_or(Ending::Eof, Ending::Trailers));
                    progress.ended = true;
                }
                Poll::Ready(Err(e)) => {
                    st.end = Some(Ending::Failed(e));
                    progress.ended = true;
                }
                Poll::Pending => break,
            }
        }
    }
    took
}

/// The drain task of one stream: takes whatever h2 has received into the cell, parks it, and
/// watches over the consumer (stall timeout, shedding) until the data has ended and been taken,
/// or the body is dropped. `progress` is how far [`RecvBody::new`] already took it.
async fn drain(mut stream: RecvStream, cell: Arc<Cell>, lot: ParkingLot, mut progress: Progress) {
    let weak: Weak<dyn parking::Parked> = Arc::downgrade(&cell) as Weak<dyn parking::Parked>;
    let _ticket = lot.register(weak);
    let stall_timeout = lot.stall_timeout();
    let mut timer = Timer::new();
    let fault = poll_fn(|cx| {
        let mut st = cell.lock();
        if st.dropped {
            return Poll::Ready(None);
        }
        if let Some(fault) = st.fault {
            return Poll::Ready(Some(fault));
        }
        let took = take_received(&mut stream, &mut st, &mut progress, cx);
        if took > 0 {
            lot.park(took);
        }
        if took > 0 || progress.ended {
            st.wake_consumer();
        }
        if progress.ended && st.chunks.is_empty() {
            return Poll::Ready(None);
        }
        // Watch the consumer: data left unread for the stall timeout resets the stream.
        if let Some(since) = st.stalled_since {
            // `poll_until` is Ready at once when the deadline has already passed.
            if timer.poll_until(since + stall_timeout, cx).is_ready() {
                return Poll::Ready(Some(Fault::Stalled));
            }
        }
        if !st.drainer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.drainer = Some(cx.waker().clone());
        }
        Poll::Pending
    })
    .await;
    if let Some(fault) = fault {
        let (flow, freed) = {
            let mut st = cell.lock();
            let freed = st.clear();
            if !st.finished {
                // Whatever was left unread is gone: the consumer must see an error.
                st.end = Some(Ending::Failed(h2::Error::from(h2::Reason::CANCEL)));
            }
            st.wake_consumer();
            (st.flow.take(), freed)
        };
        let_go(flow, freed, &lot);
        match fault {
            Fault::Stalled => tracing::info!(
                stream = ?stream.stream_id(),
                "stream reset: its reader took nothing for {stall_timeout:?}"
            ),
            Fault::Shed => tracing::info!(
                stream = ?stream.stream_id(),
                "stream reset: the tunnel's parking budget is spent and its reader read least recently"
            ),
        }
    }
    // With the body's flow control handle gone too, h2 resets the stream (CANCEL) once no other
    // handle holds it (a request body still being sent, a response not yet sent); until then
    // it discards what arrives for it and gives the connection capacity straight back.
    drop(stream);
}

/// Copies `body` into `send`, then ends the stream (with trailers if the body had any).
///
/// Returns when the whole body is sent, the source fails (the stream is reset with
/// INTERNAL_ERROR so the peer sees a truncated body, never a silently short one), or the peer
/// resets the stream.
pub async fn pump_body<B>(body: B, mut send: SendStream<Bytes>) -> Result<(), BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    // END_STREAM went out with the last chunk: the body is only polled to its end now.
    let mut ended = false;
    loop {
        let frame = poll_fn(|cx| {
            // Notice a peer reset even while the source is idle.
            if let Poll::Ready(reason) = send.poll_reset(cx) {
                return Poll::Ready(Err(match reason {
                    Ok(reason) => BodyError::Reset(reason),
                    Err(e) => BodyError::H2(e),
                }));
            }
            body.as_mut().poll_frame(cx).map(Ok)
        })
        .await?;
        let frame = match frame {
            None if ended => return Ok(()),
            None => {
                send.send_data(Bytes::new(), true)?;
                return Ok(());
            }
            // A body that said it ended and then went on: what follows cannot be sent.
            Some(_) if ended => return Ok(()),
            Some(Err(e)) => {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return Err(BodyError::Source(e.into()));
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                // The last chunk carries END_STREAM (a known length ends with it), instead of
                // an empty DATA frame after it that both hops would then process and forward.
                ended = body.is_end_stream();
                send_data(&mut send, data, ended).await?;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers)?;
                    return Ok(());
                }
            }
        }
    }
}

/// Sends one chunk, waiting for flow-control capacity piece by piece; `end`: its last piece
/// ends the stream.
async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), BodyError> {
    if data.is_empty() {
        if end {
            send.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len().min(MAX_CHUNK));
        let granted = poll_fn(|cx| {
            if let Poll::Ready(reason) = send.poll_reset(cx) {
                return Poll::Ready(Err(match reason {
                    Ok(reason) => BodyError::Reset(reason),
                    Err(e) => BodyError::H2(e),
                }));
            }
            match send.poll_capacity(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(n))) => Poll::Ready(Ok(n)),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Err(BodyError::H2(e))),
                // The stream went away (reset or connection closed).
                Poll::Ready(None) => Poll::Ready(Err(BodyError::Reset(h2::Reason::CANCEL))),
            }
        })
        .await?;
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    /// A lot with the defaults, for tests that do not look at it.
    fn lot() -> ParkingLot {
        ParkingLot::new(1 << 20, DEFAULT_STALL_TIMEOUT)
    }

    /// An h2 client and server over an in-memory pipe with small windows, so flow control
    /// is exercised many times over.
    async fn pair() -> (
        h2::client::SendRequest<Bytes>,
        h2::server::Connection<tokio::io::DuplexStream, Bytes>,
    ) {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let server = monoio::spawn(async move {
            h2::server::Builder::new()
                .initial_window_size(8 * 1024)
                .initial_connection_window_size(16 * 1024)
                .handshake(b)
                .await
                .expect("server handshake")
        });
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(8 * 1024)
            .handshake(a)
            .await
            .expect("client handshake");
        monoio::spawn(async move {
            let _ = conn.await;
        });
        (send, server.await)
    }

    /// Sends `body` up a fresh stream with [`pump_body`]; returns the pump's task, the
    /// receiving side's body, and the client's handles (dropping them cancels the stream). The
    /// server connection is driven in the background.
    async fn pump_through<B>(
        body: B,
    ) -> (
        monoio::task::JoinHandle<Result<(), BodyError>>,
        RecvStream,
        impl Sized,
    )
    where
        B: Body<Data = Bytes> + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (mut send, mut server) = pair().await;
        let request = http::Request::post("http://test/")
            .body(())
            .expect("request");
        let (response, stream) = send.send_request(request, false).expect("send");
        let pump = monoio::spawn(pump_body(body, stream));
        let (req, respond) = server.accept().await.expect("a stream").expect("accepted");
        monoio::spawn(async move {
            let _keep = respond;
            while server.accept().await.is_some() {}
        });
        (pump, req.into_body(), (send, response))
    }

    /// A body whose one chunk is also its end (`is_end_stream` says so), and which then
    /// never answers again: the peer still sees the stream end, so END_STREAM went out with
    /// the chunk, not in a frame of its own after the body's `None`.
    struct OneChunk(Option<Bytes>);

    impl Body for OneChunk {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn the_last_chunk_carries_the_end_of_stream() {
        let (_pump, mut recv, _client) =
            pump_through(OneChunk(Some(Bytes::from_static(b"hello")))).await;
        let first = recv.data().await.expect("a chunk").expect("data");
        assert_eq!(&first[..], b"hello");
        let next = monoio::time::timeout(Duration::from_secs(2), recv.data()).await;
        assert!(
            matches!(next, Ok(None)),
            "the stream did not end with its last chunk"
        );
    }

    /// A body that arrived with its head is there at the consumer's first poll, before the
    /// drain task ever runs: hyper then writes it with the head, in one write.
    #[monoio::test(timer_enabled = true)]
    async fn what_arrived_with_the_head_is_there_at_the_first_poll() {
        let (_pump, recv, _client) =
            pump_through(OneChunk(Some(Bytes::from_static(b"hello")))).await;
        // Let the pump send the chunk and its END_STREAM, and the server connection read them.
        monoio::time::sleep(Duration::from_millis(50)).await;
        let mut body = RecvBody::new(recv, (), &lot());
        // No await from here on: the drain task spawned by `new` does not run.
        let mut cx = Context::from_waker(Waker::noop());
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        let Poll::Ready(Some(Ok(frame))) = first else {
            panic!("the first poll found nothing: {first:?}");
        };
        assert_eq!(frame.into_data().expect("data").as_ref(), b"hello");
        assert!(body.is_end_stream(), "the end came with it");
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_large_body_and_its_trailers_cross_under_flow_control() {
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = payload
            .chunks(30_000)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .chain(std::iter::once(Ok(Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert("x-checksum", http::HeaderValue::from_static("ok"));
                t
            }))))
            .collect();
        let (pump, recv, _client) =
            pump_through(StreamBody::new(futures_util::stream::iter(chunks))).await;
        let collected = RecvBody::new(recv, (), &lot())
            .collect()
            .await
            .expect("body");
        let trailers = collected.trailers().cloned();
        assert_eq!(collected.to_bytes().as_ref(), &payload[..]);
        assert_eq!(
            trailers
                .and_then(|t| t.get("x-checksum").cloned())
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"ok"[..])
        );
        pump.await.expect("pump finished");
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_failing_source_resets_the_stream() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"partial"))),
            Err(std::io::Error::other("client went away")),
        ];
        let (pump, recv, _client) =
            pump_through(StreamBody::new(futures_util::stream::iter(frames))).await;
        assert!(matches!(pump.await, Err(BodyError::Source(_))));
        let received = RecvBody::new(recv, (), &lot()).collect().await;
        assert!(
            received.is_err(),
            "the receiver sees a reset, never a short body"
        );
    }

    /// Windows of the tunnel-like pair below: 4 streams that are never read hold twice the
    /// connection window.
    const TEST_STREAM_WINDOW: u32 = 8 * 1024;
    const TEST_CONNECTION_WINDOW: u32 = 16 * 1024;

    type Accepted = (String, RecvBody<()>, h2::server::SendResponse<Bytes>);

    /// An h2 client and a server whose accepted streams' bodies are drained into `lot` at once
    /// (as on a tunnel), handed out in order. With `apply_target`, the server's driver keeps the
    /// connection target as the lot says, as the tunnels' drivers do.
    async fn parking_pair(
        lot: ParkingLot,
        apply_target: bool,
    ) -> (
        h2::client::SendRequest<Bytes>,
        futures_channel::mpsc::UnboundedReceiver<Accepted>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = futures_channel::mpsc::unbounded();
        monoio::spawn(async move {
            let mut conn = h2::server::Builder::new()
                .initial_window_size(TEST_STREAM_WINDOW)
                .initial_connection_window_size(TEST_CONNECTION_WINDOW)
                .handshake::<_, Bytes>(b)
                .await
                .expect("server handshake");
            let mut window = lot.window_target(TEST_CONNECTION_WINDOW);
            loop {
                let accepted = poll_fn(|cx| {
                    if let Some(target) = window.poll_target(cx) {
                        if apply_target {
                            conn.set_target_window_size(target);
                        }
                    }
                    conn.poll_accept(cx)
                })
                .await;
                let Some(Ok((request, respond))) = accepted else {
                    return;
                };
                let (parts, recv) = request.into_parts();
                let body = RecvBody::new(recv, (), &lot);
                let _ = tx.unbounded_send((parts.uri.path().to_owned(), body, respond));
            }
        });
        let (send, conn) = h2::client::Builder::new()
            .handshake(a)
            .await
            .expect("client handshake");
        monoio::spawn(async move {
            let _ = conn.await;
        });
        (send, rx)
    }

    /// A body of `n` bytes of the `i % 251` pattern, in 16 KiB chunks.
    fn pattern_body(
        n: usize,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>>>
    {
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<_> = data
            .chunks(16 * 1024)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(chunks))
    }

    /// Opens a stream to `path` whose body (`n` bytes) is pumped in the background; returns
    /// the server's side of it and the client's handles to keep it open.
    async fn open(
        send: &mut h2::client::SendRequest<Bytes>,
        accepted: &mut futures_channel::mpsc::UnboundedReceiver<Accepted>,
        path: &str,
        n: usize,
    ) -> (
        Accepted,
        (
            h2::client::ResponseFuture,
            monoio::task::JoinHandle<Result<(), BodyError>>,
        ),
    ) {
        let request = http::Request::post(format!("http://test{path}"))
            .body(())
            .expect("request");
        let (response, stream) = send.send_request(request, false).expect("send");
        let pump = monoio::spawn(pump_body(pattern_body(n), stream));
        let got = accepted.next().await.expect("accepted");
        (got, (response, pump))
    }

    /// Four streams never read hold twice the connection window; a fifth stream's body
    /// still crosses, because what they hold is parked, not in the connection window. Without
    /// the target (`apply_target: false`, what h2 alone does), the same body stalls.
    async fn unread_streams_beside_a_reader(apply_target: bool) -> Option<usize> {
        let lot = lot();
        let (mut send, mut accepted) = parking_pair(lot.clone(), apply_target).await;
        let mut hogs = Vec::new();
        for _ in 0..4 {
            hogs.push(open(&mut send, &mut accepted, "/hog", 1 << 20).await);
        }
        // Let the hogs fill what they can.
        monoio::time::sleep(Duration::from_millis(100)).await;
        let ((path, body, _respond), _client) =
            open(&mut send, &mut accepted, "/reader", 200_000).await;
        assert_eq!(path, "/reader");
        let collected = monoio::time::timeout(Duration::from_secs(2), body.collect()).await;
        let len = collected.ok().map(|c| c.expect("body").to_bytes().len());
        if apply_target {
            assert_eq!(
                lot.parked(),
                4 * TEST_STREAM_WINDOW as usize,
                "each unread stream parks its stream window, no more"
            );
        }
        len
    }

    #[monoio::test(timer_enabled = true)]
    async fn unread_streams_do_not_hold_the_connection_window() {
        assert_eq!(unread_streams_beside_a_reader(true).await, Some(200_000));
    }

    #[monoio::test(timer_enabled = true)]
    async fn without_the_target_unread_streams_hold_the_connection_window() {
        assert_eq!(unread_streams_beside_a_reader(false).await, None);
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_reader_that_stops_reading_is_reset_after_the_stall_timeout() {
        let lot = ParkingLot::new(1 << 20, Duration::from_millis(200));
        let (mut send, mut accepted) = parking_pair(lot.clone(), true).await;
        // No response will be sent: the reset comes as soon as the body lets the stream go.
        let ((_, mut body, respond), (response, pump)) =
            open(&mut send, &mut accepted, "/slow", 1 << 20).await;
        drop(respond);
        // The reader reads a little, then stops.
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.is_data());
        monoio::time::sleep(Duration::from_millis(100)).await;
        assert!(lot.parked() > 0, "data waits for the reader");
        // Past the stall timeout the stream is reset: the sender's pump sees it, the parked
        // bytes are gone, and the reader, back at last, gets an error, not a short body.
        let pumped = monoio::time::timeout(Duration::from_secs(2), pump).await;
        assert!(
            matches!(pumped, Ok(Err(BodyError::Reset(h2::Reason::CANCEL)))),
            "the sender sees a CANCEL"
        );
        assert_eq!(lot.parked(), 0);
        assert!(body.collect().await.is_err());
        drop(response);
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_reader_that_keeps_reading_is_not_reset() {
        let lot = ParkingLot::new(1 << 20, Duration::from_millis(300));
        let (mut send, mut accepted) = parking_pair(lot.clone(), true).await;
        let ((_, mut body, _respond), _client) =
            open(&mut send, &mut accepted, "/slow", 200_000).await;
        // Slower than the sender, but never idle for the stall timeout: 16 KiB every 50 ms.
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            got += frame.expect("no reset").into_data().map_or(0, |d| d.len());
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(got, 200_000);
    }

    #[monoio::test(timer_enabled = true)]
    async fn over_budget_the_longest_unread_stream_is_shed() {
        // Room for one unread stream's window; the second pushes the lot over budget.
        let lot = ParkingLot::new(TEST_STREAM_WINDOW as usize, DEFAULT_STALL_TIMEOUT);
        let (mut send, mut accepted) = parking_pair(lot.clone(), true).await;
        let ((_, first, r1), (_c1, first_pump)) =
            open(&mut send, &mut accepted, "/first", 1 << 20).await;
        drop(r1);
        monoio::time::sleep(Duration::from_millis(300)).await;
        let ((_, second, _r2), (_c2, second_pump)) =
            open(&mut send, &mut accepted, "/second", 1 << 20).await;
        // The first has gone longest unread: it goes once it has been unread for SHED_AFTER.
        let shed = monoio::time::timeout(parking::SHED_AFTER * 2, first_pump).await;
        assert!(
            matches!(shed, Ok(Err(BodyError::Reset(h2::Reason::CANCEL)))),
            "the longest unread stream is reset"
        );
        assert!(first.collect().await.is_err());
        assert_eq!(lot.parked(), TEST_STREAM_WINDOW as usize, "the other stays");
        drop((second, second_pump));
    }
}
