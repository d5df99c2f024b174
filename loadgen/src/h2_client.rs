//! HTTP/2 (h2c prior knowledge) client side on the h2 crate directly: one connection
//! task per connection, requests sent straight on shared `SendRequest` handles, and
//! request/response bodies moved with explicit flow control. Going around hyper's h2
//! client removes a channel hop and a spawned task per request.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use http::{Request, StatusCode};
use monoio::io::IntoPollIo;

use crate::outcome::{classify_io, ErrorKind};

/// Largest chunk handed to h2 at once when sending a request body.
const SEND_CHUNK: usize = 64 * 1024;

/// A shared HTTP/2 connection.
#[derive(Clone)]
pub struct H2Conn {
    sender: h2::client::SendRequest<Bytes>,
    /// Set when the connection task ends (peer closed, GOAWAY, I/O error).
    closed: Rc<Cell<bool>>,
}

impl H2Conn {
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// Classifies an h2 error: resets, GOAWAY and I/O failures are `Reset` (or what the
/// I/O error says), anything else `Other`.
pub fn classify_h2(err: &h2::Error) -> ErrorKind {
    if let Some(io) = err.get_io() {
        return classify_io(io);
    }
    if err.is_reset() || err.is_go_away() || err.is_io() {
        ErrorKind::Reset
    } else {
        ErrorKind::Other
    }
}

/// Opens an h2c connection to `addr` and spawns its connection task on this shard.
pub async fn connect(addr: std::net::SocketAddr) -> Result<H2Conn, ErrorKind> {
    let stream = monoio::net::TcpStream::connect_addr(addr)
        .await
        .map_err(|_| ErrorKind::Connect)?;
    let _ = stream.set_nodelay(true);
    let io = stream.into_poll_io().map_err(|_| ErrorKind::Connect)?;
    let (sender, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 16)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|_| ErrorKind::Connect)?;
    let closed = Rc::new(Cell::new(false));
    let flag = closed.clone();
    monoio::spawn(async move {
        let _ = conn.await;
        flag.set(true);
    });
    Ok(H2Conn { sender, closed })
}

/// Sends `req` with `body` and reads the whole response body; returns the status and
/// the number of body bytes received.
pub async fn exchange(
    conn: &H2Conn,
    req: Request<()>,
    body: &Bytes,
) -> Result<(StatusCode, u64), ErrorKind> {
    let mut sender = conn
        .sender
        .clone()
        .ready()
        .await
        .map_err(|e| classify_h2(&e))?;
    let (response, stream) = sender
        .send_request(req, body.is_empty())
        .map_err(|e| classify_h2(&e))?;
    // Full duplex: a peer that streams the response while reading the request (echo)
    // stops reading unless its response is drained, so send and receive together.
    let send = async {
        if body.is_empty() {
            Ok(())
        } else {
            send_body(stream, body.clone()).await
        }
    };
    let receive = async {
        let resp = response.await.map_err(|e| classify_h2(&e))?;
        let status = resp.status();
        let mut recv = resp.into_body();
        let mut received = 0u64;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| classify_h2(&e))?;
            received += chunk.len() as u64;
            // Hand the window back so the peer can keep sending.
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        Ok((status, received))
    };
    let (sent, received) = join(send, receive).await;
    let received = received?;
    // A response that completed before the body was all sent is still a response.
    if let Err(kind) = sent {
        if received.0.is_success() {
            return Err(kind);
        }
    }
    Ok(received)
}

/// Polls two futures on this task until both finish.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    poll_fn(|cx| {
        if out_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        match (out_a.take(), out_b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                out_a = x;
                out_b = y;
                Poll::Pending
            }
        }
    })
    .await
}

/// Sends `body` on `stream` within the peer's flow-control window, ending the stream.
async fn send_body(mut stream: h2::SendStream<Bytes>, mut body: Bytes) -> Result<(), ErrorKind> {
    while !body.is_empty() {
        stream.reserve_capacity(body.len().min(SEND_CHUNK));
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(classify_h2(&e)),
            None => return Err(ErrorKind::Reset),
        };
        if granted == 0 {
            continue;
        }
        let chunk = body.split_to(granted.min(body.len()));
        stream
            .send_data(chunk, body.is_empty())
            .map_err(|e| classify_h2(&e))?;
    }
    Ok(())
}
