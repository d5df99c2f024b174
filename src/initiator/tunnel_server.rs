//! The initiator's end of a tunnel: an HTTP/2 server on the connection it dialed.
//!
//! Each accepted stream is forwarded to a local service on its own task. The initiator pings
//! too (Envoy issue 46677: a silently dead path must be noticed and redialed). On shutdown it
//! sends GOAWAY and lets in-flight streams finish within the drain timeout.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use super::dialer::TunnelIo;
use super::InitiatorShard;
use crate::http::keepalive::{self, KeepaliveEnd};
use crate::responder::tunnel::{CONNECTION_WINDOW, STREAM_WINDOW};

/// Why a tunnel ended, from the initiator's side.
#[derive(Debug)]
pub enum TunnelEnd {
    /// The responder went away (GOAWAY, close) — dial a replacement at once.
    Closed,
    /// `ping_failure_threshold` PINGs in a row went unanswered (or HTTP/2 did not start within
    /// `handshake_timeout`).
    Dead,
    /// HTTP/2 failed.
    Failed(h2::Error),
    /// Shutdown: drained.
    Drained,
}

impl TunnelEnd {
    /// GOAWAY or an orderly close: the responder is likely up, redial without backoff.
    pub fn redial_now(&self) -> bool {
        matches!(self, TunnelEnd::Closed)
    }
}

impl std::fmt::Display for TunnelEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelEnd::Closed => f.write_str("closed by the responder"),
            TunnelEnd::Dead => f.write_str("dead: PINGs unanswered"),
            TunnelEnd::Failed(e) => write!(f, "failed: {e}"),
            TunnelEnd::Drained => f.write_str("drained on shutdown"),
        }
    }
}

type Accepted = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<bytes::Bytes>,
);

enum Event {
    Stream(Box<Result<Accepted, h2::Error>>),
    Closed,
    Dead,
    Shutdown,
}

/// Serves HTTP/2 on an established tunnel until it ends.
pub async fn serve(ctx: &Rc<InitiatorShard>, io: TunnelIo) -> TunnelEnd {
    let cfg = ctx.cfg();
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .handshake::<_, bytes::Bytes>(io);
    let mut conn = match monoio::time::timeout(cfg.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return TunnelEnd::Failed(e),
        Err(_) => return TunnelEnd::Dead,
    };
    let mut keepalive = conn.ping_pong().map(|pp| {
        Box::pin(keepalive::watch(
            pp,
            cfg.ping_interval,
            cfg.ping_failure_threshold,
        ))
    });
    let mut shutdown = pin!(ctx.shutdown.wait());
    loop {
        let event = poll_fn(|cx| {
            if let Some(k) = keepalive.as_mut() {
                if let Poll::Ready(end) = k.as_mut().poll(cx) {
                    return Poll::Ready(match end {
                        KeepaliveEnd::Dead => Event::Dead,
                        KeepaliveEnd::Closed => Event::Closed,
                    });
                }
            }
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            conn.poll_accept(cx)
                .map(|s| s.map_or(Event::Closed, |s| Event::Stream(Box::new(s))))
        })
        .await;
        match event {
            Event::Stream(accepted) => match *accepted {
                Ok((request, respond)) => {
                    monoio::spawn(super::forward::handle(ctx.clone(), request, respond));
                }
                Err(e) => return TunnelEnd::Failed(e),
            },
            Event::Closed => return TunnelEnd::Closed,
            Event::Dead => return TunnelEnd::Dead,
            Event::Shutdown => {
                conn.graceful_shutdown();
                // Keep serving in-flight streams until the connection closes or the grace
                // period ends; the keepalive no longer matters.
                let grace = ctx.config.drain_timeout;
                let _ = monoio::time::timeout(grace, async {
                    // An error ends the connection: h2 would repeat it on every accept.
                    while let Some(Ok((request, respond))) = conn.accept().await {
                        monoio::spawn(super::forward::handle(ctx.clone(), request, respond));
                    }
                })
                .await;
                return TunnelEnd::Drained;
            }
        }
    }
}
