//! Body bridging between hyper bodies and h2 streams, under flow control both ways.
//!
//! Two pieces serve both roles:
//! - [`RecvBody`] presents an h2 `RecvStream` as an `http_body::Body`, releasing flow-control
//!   capacity only as the consumer takes each chunk, so a slow reader stalls the sender instead
//!   of growing a buffer.
//! - [`pump_body`] copies any `http_body::Body` into an h2 `SendStream`, reserving send capacity
//!   chunk by chunk and waiting for the peer's WINDOW_UPDATEs.
//!
//! With both, memory per request is bounded by the h2 windows, whatever the body size.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body::{Body, Frame, SizeHint};

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

/// An h2 receive stream as a hyper-compatible body.
///
/// `G` is held until the body is dropped: callers use it to count active streams.
pub struct RecvBody<G = ()> {
    stream: RecvStream,
    data_done: bool,
    _guard: G,
}

impl<G> RecvBody<G> {
    pub fn new(stream: RecvStream, guard: G) -> Self {
        let data_done = stream.is_end_stream();
        Self {
            stream,
            data_done,
            _guard: guard,
        }
    }
}

impl<G: Unpin> Body for RecvBody<G> {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.stream.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    // The chunk now belongs to the consumer: let the peer send more.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.stream.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
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
            None => {
                send.send_data(Bytes::new(), true)?;
                return Ok(());
            }
            Some(Err(e)) => {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return Err(BodyError::Source(e.into()));
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => send_data(&mut send, data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers)?;
                    return Ok(());
                }
            }
        }
    }
}

/// Sends one chunk, waiting for flow-control capacity piece by piece.
async fn send_data(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), BodyError> {
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
        send.send_data(chunk, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

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

    #[monoio::test]
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
        let collected = RecvBody::new(recv, ()).collect().await.expect("body");
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

    #[monoio::test]
    async fn a_failing_source_resets_the_stream() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"partial"))),
            Err(std::io::Error::other("client went away")),
        ];
        let (pump, recv, _client) =
            pump_through(StreamBody::new(futures_util::stream::iter(frames))).await;
        assert!(matches!(pump.await, Err(BodyError::Source(_))));
        let received = RecvBody::new(recv, ()).collect().await;
        assert!(
            received.is_err(),
            "the receiver sees a reset, never a short body"
        );
    }
}
