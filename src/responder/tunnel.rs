//! A tunnel on its owning shard: answer the handshake with 200, start HTTP/2 as the client,
//! register, keep it alive with PINGs, and take it out of the registry the moment it dies.

use std::future::poll_fn;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::registry::TunnelHandle;
use super::ResponderShard;
use crate::http::keepalive::{self, KeepaliveEnd};
use crate::protocol::{encode_response, AcceptedHandshake};
use crate::stats::{dec, inc};

/// HTTP/2 windows on tunnels: large enough to fill loopback, small enough that a tunnel's
/// buffered data stays bounded (connection window) whatever the number of streams.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// Detaches a stream's file descriptor so another shard can adopt it.
pub fn detach(stream: TcpStream) -> std::io::Result<std::net::TcpStream> {
    // SAFETY: `dup` returns a fresh descriptor we own; the original closes when `stream` drops.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { std::net::TcpStream::from_raw_fd(fd) })
}

/// Entry point for a tunnel handed over by another shard.
pub async fn adopt(ctx: Rc<ResponderShard>, stream: std::net::TcpStream, hs: AcceptedHandshake) {
    let identity = hs.identity.clone();
    match TcpStream::from_std(stream) {
        Ok(stream) => run(ctx, stream, hs).await,
        Err(e) => {
            tracing::warn!(node = %identity.node_id, "cannot adopt tunnel: {e}");
            ctx.shared
                .directory
                .release(&identity.node_id, &identity.cluster_id, ctx.shard);
        }
    }
}

/// Runs an accepted tunnel whose directory slot on this shard is already reserved.
pub async fn run(ctx: Rc<ResponderShard>, stream: TcpStream, hs: AcceptedHandshake) {
    let id = ctx.shared.next_tunnel_id();
    let identity = hs.identity;
    let span = tracing::info_span!("tunnel", id, node = %identity.node_id, cluster = %identity.cluster_id, shard = ctx.shard);
    async {
        let peer = stream.peer_addr().ok();
        match serve(&ctx, id, stream, &identity).await {
            Ok(end) => tracing::info!(?peer, "tunnel closed: {end}"),
            Err(e) => tracing::warn!(?peer, "tunnel failed: {e}"),
        }
        ctx.shared
            .directory
            .release(&identity.node_id, &identity.cluster_id, ctx.shard);
        inc(&ctx.stats().tunnels_closed);
    }
    .instrument(span)
    .await
}

async fn serve(
    ctx: &Rc<ResponderShard>,
    id: u64,
    stream: TcpStream,
    identity: &crate::protocol::TunnelIdentity,
) -> Result<End, Box<dyn std::error::Error>> {
    let cfg = &ctx.shared.cfg().tunnel_listener;
    let mut io = stream
        .try_into_poll_io()
        .map_err(|(e, _)| format!("poll io: {e}"))?;
    io.write_all(&encode_response(200, "", None)).await?;
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, bytes::Bytes>(io);
    let (send, mut conn) = monoio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| "HTTP/2 did not start within handshake_timeout")??;
    let ping_pong = conn.ping_pong().ok_or("PING handle already taken")?;
    inc(&ctx.stats().handshake_accepted);

    let handle = Rc::new(TunnelHandle::new(
        id,
        identity.clone(),
        send,
        cfg.max_concurrent_streams as usize,
    ));
    ctx.registry.borrow_mut().insert(handle.clone());
    inc(&ctx.stats().tunnels_active);
    tracing::info!("tunnel up");
    drop(handle);

    let mut keepalive = pin!(keepalive::watch(
        ping_pong,
        cfg.ping_interval,
        cfg.ping_failure_threshold
    ));
    let mut shutdown = pin!(ctx.shared.shutdown.wait());
    let mut conn = pin!(conn);
    let end = poll_fn(|cx| {
        if let Poll::Ready(res) = conn.as_mut().poll(cx) {
            return Poll::Ready(res.map_or_else(End::Failed, |()| End::Closed));
        }
        if let Poll::Ready(end) = keepalive.as_mut().poll(cx) {
            return Poll::Ready(match end {
                KeepaliveEnd::Dead => End::Dead,
                KeepaliveEnd::Closed => End::Closed,
            });
        }
        shutdown.as_mut().poll(cx).map(|()| End::Drained)
    })
    .await;
    // Out of the registry at once: no new stream may pick a dead or draining tunnel.
    ctx.registry.borrow_mut().remove(id, identity);
    dec(&ctx.stats().tunnels_active);
    match end {
        End::Dead => inc(&ctx.stats().tunnels_dead_ping),
        End::Drained => {
            // In-flight streams finish within the grace period; the connection then closes
            // (GOAWAY) once the last SendRequest, held by those streams, is gone.
            let _ = monoio::time::timeout(ctx.shared.config.drain_timeout, conn).await;
        }
        End::Closed | End::Failed(_) => {}
    }
    Ok(end)
}

/// Why a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// The initiator closed the connection (or sent GOAWAY and finished).
    Closed,
    /// `ping_failure_threshold` PINGs went unanswered.
    Dead,
    /// The responder shut down and drained the tunnel.
    Drained,
    /// The connection failed with an HTTP/2 or I/O error.
    Failed(h2::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed by the initiator"),
            End::Dead => f.write_str("dead: PINGs unanswered"),
            End::Drained => f.write_str("drained on shutdown"),
            End::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// How long a tunnel may hold no stream capacity before a request gives up on it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);
