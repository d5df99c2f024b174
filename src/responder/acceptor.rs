//! The tunnel listener: reads and validates handshakes, then places each tunnel on the shard
//! that holds the fewest tunnels of its node.
//!
//! Every rejection is a `text/plain` reply with the status of DESIGN §3, a counter, and a close.
//! The whole handshake must arrive within `handshake_timeout` and fit in 16 KiB.

use std::rc::Rc;

use monoio::net::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ResponderShard, ShardMsg};
use crate::protocol::{
    encode_response, parse_request, AcceptedHandshake, Rejection, MAX_HANDSHAKE_BYTES,
};
use crate::shard::accept_loop;
use crate::shard::directory::PlaceError;
use crate::stats::inc;

/// Seconds a 429 asks the initiator to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// Accepts tunnel connections until shutdown.
pub async fn run(ctx: Rc<ResponderShard>, listener: TcpListener) {
    let shutdown = ctx.shared.shutdown.clone();
    accept_loop(listener, &shutdown, "tunnel listener", |stream, peer| {
        ctx.tasks.spawn(handle(ctx.clone(), stream, peer))
    })
    .await
}

async fn handle(ctx: Rc<ResponderShard>, stream: TcpStream, peer: std::net::SocketAddr) {
    let cfg = &ctx.shared.cfg().tunnel_listener;
    let mut io = match stream.try_into_poll_io() {
        Ok(io) => io,
        Err((e, _)) => {
            tracing::warn!(%peer, "poll io: {e}");
            return;
        }
    };
    let outcome = monoio::time::timeout(
        cfg.handshake_timeout,
        read_handshake(&mut io, &cfg.request_path),
    )
    .await;
    let hs = match outcome {
        Err(_elapsed) => {
            inc(&ctx.stats().handshake_timeout);
            tracing::debug!(%peer, "handshake timed out");
            let reply =
                encode_response(408, "Handshake not received within handshake_timeout", None);
            let _ = io.write_all(&reply).await;
            return;
        }
        Ok(Err(rejection)) => return reject(&ctx, &mut io, peer, rejection, None).await,
        Ok(Ok(None)) => return, // closed before a full request: nothing to answer
        Ok(Ok(Some(hs))) => hs,
    };
    if ctx.shared.shutdown.is_triggered() {
        let r = Rejection {
            status: 503,
            reason: "The responder is shutting down".into(),
        };
        return reject(&ctx, &mut io, peer, r, None).await;
    }
    let node = &hs.identity.node_id;
    let cluster = &hs.identity.cluster_id;
    let target = match ctx.shared.directory.place(node, cluster, ctx.shard) {
        Ok(shard) => shard,
        Err(e @ PlaceError::TooManyTunnels(_)) => {
            let r = Rejection {
                status: 429,
                reason: e.to_string().into(),
            };
            return reject(&ctx, &mut io, peer, r, Some(RETRY_AFTER_SECS)).await;
        }
        Err(e @ PlaceError::TooManyForNode { .. }) => {
            let r = Rejection {
                status: 403,
                reason: e.to_string().into(),
            };
            return reject(&ctx, &mut io, peer, r, None).await;
        }
    };
    tracing::debug!(%peer, node, target, "handshake accepted");
    let stream = match io.try_into_comp_io() {
        Ok(stream) => stream,
        Err((e, _)) => {
            tracing::warn!(%peer, "completion io: {e}");
            ctx.shared.directory.release(node, cluster, target);
            return;
        }
    };
    if target == ctx.shard {
        return super::tunnel::run(ctx, stream, hs).await;
    }
    hand_over(ctx, stream, hs, target).await;
}

/// Moves the socket to `target` before HTTP/2 starts there.
async fn hand_over(
    ctx: Rc<ResponderShard>,
    stream: TcpStream,
    hs: AcceptedHandshake,
    target: usize,
) {
    let (node, cluster) = (hs.identity.node_id.clone(), hs.identity.cluster_id.clone());
    let detached = match super::tunnel::detach(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(node, "cannot detach tunnel socket: {e}");
            ctx.shared.directory.release(&node, &cluster, target);
            return;
        }
    };
    let msg = ShardMsg::Adopt {
        stream: detached,
        handshake: hs,
    };
    if ctx.shared.mesh.send(target, msg).await.is_err() {
        // The target stopped (shutdown): the socket dropped with the message.
        ctx.shared.directory.release(&node, &cluster, target);
    }
}

/// Reads one handshake request. `Ok(None)`: the peer closed before sending a whole one.
async fn read_handshake<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    path: &str,
) -> Result<Option<AcceptedHandshake>, Rejection> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() > MAX_HANDSHAKE_BYTES {
            return Err(Rejection {
                status: 400,
                reason: "Handshake larger than 16 KiB".into(),
            });
        }
        let n = match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                // A truncated handshake is answered too, so a broken initiator learns why.
                return match buf.is_empty() {
                    true => Ok(None),
                    false => Err(Rejection {
                        status: 400,
                        reason: "Truncated handshake".into(),
                    }),
                };
            }
            Ok(n) => n,
        };
        debug_assert!(n > 0);
        if let Some((hs, consumed)) = parse_request(&buf, path)? {
            if consumed != buf.len() {
                return Err(Rejection {
                    status: 400,
                    reason: "Unexpected bytes after the handshake request".into(),
                });
            }
            return Ok(Some(hs));
        }
    }
}

async fn reject<S: tokio::io::AsyncWrite + Unpin>(
    ctx: &ResponderShard,
    io: &mut S,
    peer: std::net::SocketAddr,
    rejection: Rejection,
    retry_after: Option<u64>,
) {
    let stats = ctx.stats();
    inc(match rejection.status {
        404 => &stats.handshake_rejected_404,
        401 | 403 => &stats.handshake_rejected_403,
        429 => &stats.handshake_rejected_429,
        503 => &stats.handshake_rejected_503,
        _ => &stats.handshake_rejected_400,
    });
    tracing::info!(%peer, status = rejection.status, "handshake rejected: {}", rejection.reason);
    let reply = encode_response(rejection.status, &rejection.reason, retry_after);
    let _ = io.write_all(&reply).await;
    let _ = io.shutdown().await;
}
