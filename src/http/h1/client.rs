//! One HTTP/1.1 client connection to a local service, as the initiator's pool uses it: one
//! request at a time, and no task of its own.
//!
//! hyper's client runs every connection as a task, reached from the request through a channel
//! and handing the response body back through another; each request then costs two task
//! hand-offs and their wakeups on top of the exchange. Here the request's own future writes the
//! request and reads the response head ([`Conn::send`]), and the response body reads the rest
//! from the socket as it is polled ([`ResponseBody`]). When the body has ended whole and the
//! connection may carry another request, [`ResponseBody::take_conn`] gives it back; otherwise it
//! is dropped with the body, which closes the socket.
//!
//! Between requests nobody polls the connection, so a close by the service would go unseen.
//! [`Conn::park`] leaves a read pending on an idle connection, and [`Conn::is_stale`] collects
//! it: a connection the service closed (or that received bytes nobody asked for) is never used
//! again, and the request that found it goes to another connection unsent.
//!
//! Framing is [`head`](super::head)'s and [`chunked`](super::chunked)'s: a response that is
//! ambiguous about where it ends is refused, and nothing after a response's end is ever read
//! as part of it or of the next one.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::chunked::{self, ChunkError, ChunkedDecoder, Decoded};
use super::head::{self, Framing, HeadError, Parsed};
use crate::pipeline::logged::BoxError;

/// Free room below which the read buffer grows before a read.
const READ_MIN: usize = 4 * 1024;
/// What a read asks for while a response head is awaited.
const READ_HEAD: usize = 8 * 1024;
/// What a read asks for inside a body: large enough that the stream receives straight into
/// it while a transfer streams (`net::completion`'s direct reads).
const READ_BODY: usize = 64 * 1024;

/// Why an exchange failed. What the service sent is named in the log only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the service closed the connection before a response")]
    ClosedBeforeResponse,
    #[error("the service closed the connection inside a response head")]
    ClosedInHead,
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("bad response head ({label}): {0}", label = .0.label())]
    Head(#[from] HeadError),
    #[error("bad chunked response body ({label}): {0}", label = .0.label())]
    Chunk(#[from] ChunkError),
    #[error("the response body ended after {received} of its {expected} bytes")]
    ShortBody { expected: u64, received: u64 },
    #[error("the connection closed inside a chunked response body")]
    UnfinishedChunks,
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body does not match its content-length ({declared})")]
    RequestBodyLength { declared: u64 },
}

/// A failed exchange, with the request's head given back: an idempotent request without a
/// body can then be sent again elsewhere (`Error::broke_before_response`) without a copy of
/// its head kept for every request.
#[derive(Debug)]
pub struct SendError {
    pub error: Error,
    pub head: http::request::Parts,
}

impl Error {
    /// The connection broke (a reset, a close) before any byte of a response arrived, so an
    /// idempotent request may be sent again elsewhere.
    pub fn broke_before_response(&self) -> bool {
        matches!(
            self,
            Error::ClosedBeforeResponse | Error::Write(_) | Error::Read(_)
        )
    }

    /// A short reason label for logs and counters.
    pub fn label(&self) -> &'static str {
        match self {
            Error::ClosedBeforeResponse => "closed_before_response",
            Error::ClosedInHead => "closed_in_head",
            Error::Write(_) => "write_failed",
            Error::Read(_) => "read_failed",
            Error::Head(e) => e.label(),
            Error::Chunk(e) => e.label(),
            Error::ShortBody { .. } => "short_body",
            Error::UnfinishedChunks => "unfinished_chunks",
            Error::RequestBody(_) => "request_body_failed",
            Error::RequestBodyLength { .. } => "request_body_length",
        }
    }
}

/// An HTTP/1.1 connection between requests. It is kept boxed ([`Conn::new`]): it moves from the
/// pool into a request, into its response body and back, and a box moves as a pointer.
pub struct Conn<I> {
    io: I,
    /// Bytes received and not yet consumed.
    buf: BytesMut,
    /// The request head, and chunk framing, on their way out; kept for the next request.
    out: Vec<u8>,
    /// Found closed (or sent something unasked) while idle.
    stale: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    pub fn new(io: I) -> Box<Self> {
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            stale: false,
        })
    }

    /// An idle connection: leaves a read pending on it so that [`is_stale`](Self::is_stale)
    /// sees a close by the service. Nobody is woken by it; the read that a request later makes
    /// is the same one.
    pub fn park(&mut self) {
        self.check_idle();
    }

    /// Whether the service closed this idle connection, or sent bytes on it unasked, since it
    /// was parked: it must not carry a request.
    pub fn is_stale(&mut self) -> bool {
        self.check_idle();
        self.stale
    }

    fn check_idle(&mut self) {
        if self.stale {
            return;
        }
        if !self.buf.is_empty() {
            self.stale = true;
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        // Anything but "nothing yet": a close, an error, or bytes no request asked for.
        if self.poll_fill(&mut cx, READ_HEAD).is_ready() {
            self.stale = true;
        }
    }

    /// Reads what the socket has into `buf`, making room for `want` bytes first if little is
    /// left; `Ready(Ok(0))` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_MIN {
            self.buf.reserve(want);
        }
        let spare = self.buf.spare_capacity_mut();
        let mut read = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Poll::Ready(Ok(n))
    }

    /// Sends `req` and reads the response head. The future owns the connection: dropping it,
    /// or an error, closes it. Interim (1xx) responses are skipped. A response may come before
    /// the request body has gone out whole (a service that streams its answer, or refuses the
    /// upload early): the response body then goes on sending it while it is read, and the
    /// connection is reused only if both ended whole.
    pub async fn send<B>(
        self: Box<Self>,
        req: Request<B>,
    ) -> Result<Response<ResponseBody<I, B>>, SendError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (head, body) = req.into_parts();
        self.exchange(&head, body)
            .await
            .map_err(|error| SendError { error, head })
    }

    async fn exchange<B>(
        mut self: Box<Self>,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Response<ResponseBody<I, B>>, Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let framing = request_framing(&parts.headers, &body);
        self.out.clear();
        head::encode_request_head(parts, framing, &mut self.out);
        let mut sending = Sending {
            body: (framing != Framing::Empty).then_some(body),
            framing,
            written: 0,
            data: Bytes::new(),
            out_pos: 0,
            state: SendState::Writing,
        };
        let method = &parts.method;
        // Nothing to parse until something arrives.
        let mut unparsed = !self.buf.is_empty();
        let parsed =
            poll_fn(|cx| self.poll_exchange(cx, &mut sending, method, &mut unparsed)).await?;
        let (head, len) = parsed;
        self.buf.advance(len);
        // A request body that failed to go out leaves the service waiting for the rest of it:
        // the connection cannot take another request.
        let keep_alive = head.keep_alive && !matches!(sending.state, SendState::Failed);
        let sending = match sending.state {
            SendState::Done | SendState::Failed => None,
            SendState::Writing | SendState::Flushing => Some(sending),
        };
        let state = match head.framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length {
                remaining: n,
                expected: n,
            },
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let mut body = ResponseBody {
            conn: Some(self),
            state,
            keep_alive,
            sending,
        };
        if matches!(body.state, BodyState::Done) {
            body.ended();
        }
        Ok(Response::from_parts(head.parts, body))
    }

    /// Writes the request (head, then body) and reads the response head, both at once.
    fn poll_exchange<B>(
        &mut self,
        cx: &mut Context<'_>,
        sending: &mut Sending<B>,
        method: &Method,
        unparsed: &mut bool,
    ) -> Poll<Result<(head::ResponseHead, usize), Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut write_error = None;
        if !matches!(sending.state, SendState::Done | SendState::Failed) {
            match self.poll_send(cx, sending) {
                Poll::Ready(Ok(())) => sending.state = SendState::Done,
                Poll::Ready(Err(e)) => {
                    sending.state = SendState::Failed;
                    match e {
                        // The service may have answered already (and closed): read on.
                        Error::Write(e) => write_error = Some(e),
                        other => return Poll::Ready(Err(other)),
                    }
                }
                Poll::Pending => {}
            }
        }
        loop {
            if *unparsed {
                match head::parse_response_head(&self.buf, method)? {
                    Parsed::Head { head, len } => return Poll::Ready(Ok((head, len))),
                    Parsed::Interim { len } => {
                        self.buf.advance(len);
                        continue;
                    }
                    Parsed::Partial => *unparsed = false,
                }
            }
            match self.poll_fill(cx, READ_HEAD) {
                Poll::Ready(Ok(0)) if self.buf.is_empty() => {
                    return Poll::Ready(Err(match write_error {
                        Some(e) => Error::Write(e),
                        None => Error::ClosedBeforeResponse,
                    }))
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::ClosedInHead)),
                Poll::Ready(Ok(_)) => *unparsed = true,
                Poll::Ready(Err(e)) if self.buf.is_empty() => {
                    return Poll::Ready(Err(match write_error {
                        Some(e) => Error::Write(e),
                        None => Error::Read(e),
                    }))
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Error::ClosedInHead)),
                Poll::Pending => {
                    return match write_error {
                        // Nothing to read yet and nothing more can be written.
                        Some(e) if self.buf.is_empty() => Poll::Ready(Err(Error::Write(e))),
                        _ => Poll::Pending,
                    };
                }
            }
        }
    }

    /// Writes what is pending, then the body's frames as they come; `Ready(Ok)` once all of it
    /// is written and flushed.
    fn poll_send<B>(&mut self, cx: &mut Context<'_>, s: &mut Sending<B>) -> Poll<Result<(), Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        loop {
            // What is encoded goes out first: framing in `out`, then the data it frames.
            while s.out_pos < self.out.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[s.out_pos..]))
                    .map_err(Error::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Error::Write(io::ErrorKind::WriteZero.into())));
                }
                s.out_pos += n;
            }
            while s.data.has_remaining() {
                let n =
                    ready!(Pin::new(&mut self.io).poll_write(cx, &s.data)).map_err(Error::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Error::Write(io::ErrorKind::WriteZero.into())));
                }
                s.data.advance(n);
                if !s.data.has_remaining() && s.framing == Framing::Chunked {
                    self.out.clear();
                    self.out.extend_from_slice(chunked::CRLF);
                    s.out_pos = 0;
                }
            }
            if s.out_pos < self.out.len() {
                continue;
            }
            if matches!(s.state, SendState::Flushing) {
                ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(Error::Write)?;
                return Poll::Ready(Ok(()));
            }
            self.out.clear();
            s.out_pos = 0;
            let Some(body) = s.body.as_mut() else {
                s.state = SendState::Flushing;
                continue;
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Waiting for more of the body: what is staged must go out meanwhile
                    // (the stream submits staged bytes only when written to or flushed).
                    if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                        return Poll::Ready(Err(Error::Write(e)));
                    }
                    return Poll::Pending;
                }
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => s.queue_data(data, &mut self.out)?,
                    Err(frame) => {
                        // Trailers: only chunked framing can carry them.
                        if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), s.framing)
                        {
                            chunked::encode_last_chunk(Some(&trailers), &mut self.out);
                            s.finish_body()?;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(Error::RequestBody(e.into()))),
                None => {
                    if s.framing == Framing::Chunked {
                        self.out.extend_from_slice(chunked::LAST_CHUNK);
                    }
                    s.finish_body()?;
                }
            }
        }
    }
}

/// How the request body goes on the wire: none when the body is empty; the `content-length`
/// the request carries (the tunnel's h2 checks that the DATA matches it), or the body's exact
/// size; else chunked.
fn request_framing<B: Body>(headers: &HeaderMap, body: &B) -> Framing {
    if body.is_end_stream() {
        return Framing::Empty;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .filter(|_| headers.get_all(header::CONTENT_LENGTH).iter().count() == 1)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok());
    match declared.or_else(|| body.size_hint().exact()) {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    }
}

enum SendState {
    Writing,
    /// Everything is encoded and written; the stream is being flushed.
    Flushing,
    Done,
    Failed,
}

/// A request body on its way out.
struct Sending<B> {
    /// `None` once it ended (or for a request without one).
    body: Option<B>,
    framing: Framing,
    /// Body bytes written or queued so far.
    written: u64,
    /// The chunk of body being written.
    data: Bytes,
    /// How much of the connection's `out` is written.
    out_pos: usize,
    state: SendState,
}

impl<B> Sending<B> {
    /// Queues `data` (after its chunk-size line when chunked); more than a declared length is
    /// an error: nothing beyond it may go out, or the service would read it as a request.
    fn queue_data(&mut self, data: Bytes, out: &mut Vec<u8>) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.written += data.len() as u64;
        match self.framing {
            Framing::Length(declared) if self.written > declared => {
                return Err(Error::RequestBodyLength { declared })
            }
            Framing::Chunked | Framing::UntilClose => chunked::encode_chunk_size(data.len(), out),
            _ => {}
        }
        self.data = data;
        Ok(())
    }

    /// The body ended: checks its length against the declared one.
    fn finish_body(&mut self) -> Result<(), Error> {
        self.body = None;
        self.state = SendState::Flushing;
        match self.framing {
            Framing::Length(declared) if self.written != declared => {
                Err(Error::RequestBodyLength { declared })
            }
            _ => Ok(()),
        }
    }
}

enum BodyState {
    Length { remaining: u64, expected: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body, read from the connection as it is polled. Dropped before its end, it
/// closes the connection.
pub struct ResponseBody<I, B> {
    /// `None` once given back, or closed.
    conn: Option<Box<Conn<I>>>,
    state: BodyState,
    /// Whether the connection may carry another request after the body.
    keep_alive: bool,
    /// The rest of the request body, still going out.
    sending: Option<Sending<B>>,
}

impl<I, B> std::fmt::Debug for ResponseBody<I, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            BodyState::Length { remaining, .. } => format!("{remaining} bytes to come"),
            BodyState::Chunked(_) => "chunked".to_owned(),
            BodyState::UntilClose => "until the close".to_owned(),
            BodyState::Done => "done".to_owned(),
        };
        f.debug_struct("ResponseBody")
            .field("state", &state)
            .field("keep_alive", &self.keep_alive)
            .field("sending", &self.sending.is_some())
            .finish()
    }
}

impl<I, B> ResponseBody<I, B>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// After the body's end: the connection, ready for another request, if it may carry one
    /// (and the request body went out whole).
    pub fn take_conn(&mut self) -> Option<Box<Conn<I>>> {
        match self.state {
            BodyState::Done if self.keep_alive && self.sending.is_none() => self.conn.take(),
            _ => None,
        }
    }

    /// Goes on sending the request body. A write that fails ends the sending (the service
    /// closed its side; its response may still be whole) and the connection's reuse.
    fn poll_sending(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let (Some(conn), Some(sending)) = (self.conn.as_mut(), self.sending.as_mut()) else {
            return Ok(());
        };
        match conn.poll_send(cx, sending) {
            Poll::Ready(Ok(())) => self.sending = None,
            Poll::Ready(Err(Error::Write(e))) => {
                tracing::debug!("the rest of the request body could not be written: {e}");
                self.sending = None;
                self.keep_alive = false;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
        Ok(())
    }

    /// The body ended whole. Bytes after it, which no request asked for, make the connection
    /// unusable.
    fn ended(&mut self) {
        end(&mut self.state, &mut self.keep_alive, self.conn.as_deref());
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Err(e) = self.poll_sending(cx) {
            return Poll::Ready(Some(Err(e)));
        }
        let Self {
            conn,
            state,
            keep_alive,
            ..
        } = self;
        let Some(conn) = conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length {
                    remaining,
                    expected,
                } => {
                    if !conn.buf.is_empty() {
                        let n = conn.buf.len().min(clamp(*remaining));
                        let data = conn.buf.split_to(n).freeze();
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            end(state, keep_alive, Some(conn));
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let (expected, received) = (*expected, *expected - *remaining);
                    let want = clamp(*remaining).clamp(READ_MIN, READ_BODY);
                    match ready!(conn.poll_fill(cx, want)) {
                        Ok(0) => {
                            return Poll::Ready(Some(Err(Error::ShortBody { expected, received })))
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(Error::Read(e)))),
                    }
                }
                BodyState::Chunked(decoder) => {
                    match decoder.decode(&mut conn.buf, usize::MAX)? {
                        Some(Decoded::Data(data)) => {
                            return Poll::Ready(Some(Ok(Frame::data(data))))
                        }
                        Some(Decoded::End(trailers)) => {
                            end(state, keep_alive, Some(conn));
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        None => {}
                    }
                    match ready!(conn.poll_fill(cx, READ_BODY)) {
                        Ok(0) => return Poll::Ready(Some(Err(Error::UnfinishedChunks))),
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(Error::Read(e)))),
                    }
                }
                BodyState::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx, READ_BODY)) {
                        Ok(0) => {
                            *state = BodyState::Done;
                            *keep_alive = false;
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(Error::Read(e)))),
                    }
                }
            }
        }
    }
}

/// A body's end: see [`ResponseBody::ended`].
fn end<I>(state: &mut BodyState, keep_alive: &mut bool, conn: Option<&Conn<I>>) {
    *state = BodyState::Done;
    if conn.is_some_and(|c| !c.buf.is_empty()) {
        *keep_alive = false;
    }
}

/// A body length as a buffer length (saturating on 32-bit targets).
fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl<I, B> Body for ResponseBody<I, B>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = self.poll_next(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            // Broken: the connection goes with the error.
            self.conn = None;
            self.state = BodyState::Done;
            self.keep_alive = false;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length { remaining, .. } => SizeHint::with_exact(remaining),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    use http_body_util::{BodyExt, Empty, Full};

    use super::*;
    use crate::net::completion::CompletionStream;

    type TestConn = Box<Conn<CompletionStream>>;

    /// A service on loopback that serves one connection with `serve`; what it read comes back
    /// through the channel when it returns.
    fn service(
        serve: impl FnOnce(&mut TcpStream, &mut Vec<u8>) + Send + 'static,
    ) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut seen = Vec::new();
            serve(&mut stream, &mut seen);
            let _ = tx.send(seen);
        });
        (addr, rx)
    }

    /// Reads until `seen` holds `count` request heads (and `body` bytes after the last).
    fn read_requests(stream: &mut TcpStream, seen: &mut Vec<u8>, count: usize, body: usize) {
        loop {
            let heads = seen.windows(4).filter(|w| *w == b"\r\n\r\n").count();
            if heads >= count {
                let last = seen.windows(4).rposition(|w| w == b"\r\n\r\n").unwrap() + 4;
                if seen.len() - last >= body {
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn connect(addr: SocketAddr) -> TestConn {
        let stream = monoio::net::TcpStream::connect(addr).await.unwrap();
        Conn::new(CompletionStream::new(stream))
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(path)
            .header("host", "svc")
            .body(Empty::new())
            .unwrap()
    }

    async fn body_of<B>(body: &mut ResponseBody<CompletionStream, B>) -> Result<Vec<u8>, Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_keep_alive_connection_carries_requests_one_after_another() {
        let (addr, seen) = service(|s, seen| {
            read_requests(s, seen, 1, 0);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                .unwrap();
            read_requests(s, seen, 2, 0);
            s.write_all(b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nx-a: b\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n")
                .unwrap();
        });
        let conn = connect(addr).await;
        let (head, mut body) = conn.send(get("/one")).await.unwrap().into_parts();
        assert_eq!(head.status, 200);
        assert_eq!(body_of(&mut body).await.unwrap(), b"first");
        let mut conn = body.take_conn().expect("reusable");
        conn.park();
        assert!(!conn.is_stale());
        let (head, mut body) = conn.send(get("/two?x")).await.unwrap().into_parts();
        assert_eq!(head.status, 201);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(body_of(&mut body).await.unwrap(), b"second");
        assert!(body.take_conn().is_some());
        let seen = String::from_utf8(seen.recv().unwrap()).unwrap();
        assert!(
            seen.starts_with("GET /one HTTP/1.1\r\nhost: svc\r\n\r\n"),
            "{seen}"
        );
        assert!(seen.contains("GET /two?x HTTP/1.1\r\n"), "{seen}");
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_request_body_goes_with_its_length_or_chunked() {
        let (addr, seen) = service(|s, seen| {
            read_requests(s, seen, 1, 5);
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            read_requests(s, seen, 2, "5\r\nhello\r\n0\r\n\r\n".len());
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
        });
        let conn = connect(addr).await;
        let req = Request::post("/a")
            .header("content-length", "5")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let (head, mut body) = conn.send(req).await.unwrap().into_parts();
        assert_eq!(head.status, 204);
        assert!(body.is_end_stream());
        let conn = body.take_conn().expect("reusable");
        // No length known: chunked.
        let req = Request::post("/b")
            .body(Unsized(Some(Bytes::from_static(b"hello"))))
            .unwrap();
        let (_, mut body) = conn.send(req).await.unwrap().into_parts();
        assert!(body.take_conn().is_some());
        let seen = String::from_utf8(seen.recv().unwrap()).unwrap();
        assert!(
            seen.starts_with("POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"),
            "{seen}"
        );
        assert!(
            seen.ends_with(
                "POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            "{seen}"
        );
    }

    /// A body of unknown length.
    struct Unsized(Option<Bytes>);

    impl Body for Unsized {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_body_longer_than_its_content_length_is_never_sent_past_it() {
        let (addr, seen) = service(|s, seen| {
            read_requests(s, seen, 1, 3);
            // Whatever else comes, until the client closes.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            seen.extend_from_slice(&rest);
        });
        let conn = connect(addr).await;
        let req = Request::put("/a")
            .header("content-length", "3")
            .body(Full::new(Bytes::from_static(
                b"abcdefGET /smuggled HTTP/1.1\r\n\r\n",
            )))
            .unwrap();
        let error = conn.send(req).await.expect_err("refused").error;
        assert!(
            matches!(error, Error::RequestBodyLength { declared: 3 }),
            "{error}"
        );
        let seen = String::from_utf8(seen.recv().unwrap()).unwrap();
        assert!(
            !seen.contains("abc") && !seen.contains("smuggled"),
            "{seen}"
        );
    }

    #[monoio::test(timer_enabled = true)]
    async fn responses_that_end_the_connection_do_not_give_it_back() {
        for response in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            // Bytes after the response that nobody asked for.
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
        ] {
            let (addr, _seen) = service(move |s, seen| {
                read_requests(s, seen, 1, 0);
                s.write_all(response).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            });
            let conn = connect(addr).await;
            let (_, mut body) = conn.send(get("/")).await.unwrap().into_parts();
            assert_eq!(body_of(&mut body).await.unwrap(), b"ok");
            assert!(
                body.take_conn().is_none(),
                "{}",
                String::from_utf8_lossy(response)
            );
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_body_until_close_and_interim_responses() {
        let (addr, _seen) = service(|s, seen| {
            read_requests(s, seen, 1, 0);
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil ")
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(b"the end").unwrap();
        });
        let conn = connect(addr).await;
        let (head, mut body) = conn.send(get("/")).await.unwrap().into_parts();
        assert_eq!(head.status, 200);
        assert!(!head.headers.contains_key("link"));
        assert_eq!(body_of(&mut body).await.unwrap(), b"until the end");
        assert!(body.take_conn().is_none());
    }

    #[monoio::test(timer_enabled = true)]
    async fn broken_responses_are_errors_with_a_reason() {
        let cases: [(&[u8], &str); 5] = [
            (b"", "closed_before_response"),
            (b"HTTP/1.1 200 OK\r\ncontent-le", "closed_in_head"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
                "content_length_and_transfer_encoding",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n",
                "bad_content_length",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "switching_protocols",
            ),
        ];
        for (response, label) in cases {
            let (addr, _seen) = service(move |s, seen| {
                read_requests(s, seen, 1, 0);
                s.write_all(response).unwrap();
            });
            let conn = connect(addr).await;
            let error = conn.send(get("/")).await.expect_err("an error").error;
            assert_eq!(error.label(), label, "{error}");
            assert_eq!(
                error.broke_before_response(),
                label == "closed_before_response",
                "{label}"
            );
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_short_or_broken_body_is_an_error() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
                "short_body",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
                "unfinished_chunks",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
                "bad_chunk_line",
            ),
        ];
        for (response, label) in cases {
            let (addr, _seen) = service(move |s, seen| {
                read_requests(s, seen, 1, 0);
                s.write_all(response).unwrap();
            });
            let conn = connect(addr).await;
            let (_, mut body) = conn.send(get("/")).await.unwrap().into_parts();
            let error = body_of(&mut body).await.expect_err("an error");
            assert_eq!(error.label(), label, "{error}");
            assert!(body.take_conn().is_none());
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_response_before_the_whole_request_body_ends_the_connection_after_it() {
        let (addr, _seen) = service(|s, seen| {
            read_requests(s, seen, 1, 0);
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        let conn = connect(addr).await;
        // A body that never ends.
        let req = Request::post("/upload")
            .body(http_body_util::StreamBody::new(
                futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>(),
            ))
            .unwrap();
        let (head, mut body) = conn.send(req).await.unwrap().into_parts();
        assert_eq!(head.status, 413);
        assert!(body.is_end_stream());
        assert!(
            body.take_conn().is_none(),
            "the service may still read a body"
        );
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_request_body_goes_on_while_a_streamed_response_is_read() {
        // An echo service: it answers as soon as the head is in, then echoes the body.
        let (addr, _seen) = service(|s, seen| {
            read_requests(s, seen, 1, 0);
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .unwrap();
            let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let mut echoed = head_end;
            while echoed < head_end + 10 {
                if seen.len() > echoed {
                    let piece = seen[echoed..].to_vec();
                    write!(s, "{:x}\r\n", piece.len()).unwrap();
                    s.write_all(&piece).unwrap();
                    s.write_all(b"\r\n").unwrap();
                    echoed += piece.len();
                    continue;
                }
                let mut chunk = [0u8; 64];
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
            }
            s.write_all(b"0\r\n\r\n").unwrap();
        });
        let (tx, rx) =
            futures_channel::mpsc::unbounded::<Result<Frame<Bytes>, std::convert::Infallible>>();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"hello"))))
            .unwrap();
        let req = Request::post("/echo")
            .header("content-length", "10")
            .body(http_body_util::StreamBody::new(rx))
            .unwrap();
        let conn = connect(addr).await;
        let (head, mut body) = conn.send(req).await.unwrap().into_parts();
        assert_eq!(head.status, 200);
        // The second half goes out only now, while the response is read.
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"world"))))
            .unwrap();
        drop(tx);
        assert_eq!(body_of(&mut body).await.unwrap(), b"helloworld");
        assert!(body.take_conn().is_some(), "both ended whole");
    }

    #[monoio::test(timer_enabled = true)]
    async fn an_idle_connection_closed_by_the_service_is_stale() {
        let (addr, _seen) = service(|s, seen| {
            read_requests(s, seen, 1, 0);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            // Its keep-alive timeout.
            std::thread::sleep(Duration::from_millis(50));
        });
        let conn = connect(addr).await;
        let (_, mut body) = conn.send(get("/")).await.unwrap().into_parts();
        let mut conn = body.take_conn().expect("reusable");
        conn.park();
        assert!(!conn.is_stale());
        let mut stale = false;
        for _ in 0..100 {
            monoio::time::sleep(Duration::from_millis(10)).await;
            if conn.is_stale() {
                stale = true;
                break;
            }
        }
        assert!(stale, "the close was not noticed");
    }
}
