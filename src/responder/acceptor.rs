//! The tunnel listener: TLS when configured, then the handshake request, admission, a slot in
//! the directory, and the tunnel's placement.
//!
//! Every refusal is a [`Rejection`]: a `text/plain` reply with its status, a counter, a log
//! line with its label, and a close. TLS and the whole handshake must complete within
//! `handshake_timeout`; the handshake must fit in 16 KiB. A failed TLS handshake is counted by
//! its class (`tunnel_tls_failed_<label>`) and logged with it; a plaintext peer on a TLS
//! listener is told so in plaintext (400) so a misconfigured initiator logs why.
//!
//! Placement: a plaintext tunnel goes to the shard holding the fewest tunnels of its node (its
//! socket moves before HTTP/2 starts). A TLS tunnel stays on the shard that accepted it: a
//! rustls session cannot be rebuilt on another thread through tokio-rustls, and requests
//! reach it from any shard through the directory anyway.

use std::net::SocketAddr;
use std::rc::Rc;

use std::time::Instant;

use monoio::net::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::admission::ConnectionFacts;
use super::{ResponderShard, ShardMsg};
use crate::access_log::{TunnelEvent, TunnelEventKind};
use crate::metrics::{inc, HandshakeOutcome, TlsSide};
use crate::net::completion::CompletionStream;
use crate::protocol::{parse_request, AcceptedHandshake, Rejection, MAX_HANDSHAKE_BYTES};
use crate::shard::directory::{PlaceError, Placement};
use crate::shard::{accept_loop, CapPermit};
use crate::tls::{peek_is_tls, Looks, ServerTls, TlsFailure};
use crate::tunnel::TunnelStream;

/// Seconds a 429 asks the initiator to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// Accepts tunnel connections until shutdown; beyond `max_handshakes_in_progress` a new
/// connection is closed at once (`handshakes_refused_busy`).
pub async fn run(ctx: Rc<ResponderShard>, listener: TcpListener) {
    let shutdown = ctx.shared.shutdown.clone();
    accept_loop(listener, &shutdown, "tunnel listener", |stream, peer| {
        let Some(busy) = ctx.admit(
            |r| &r.handshakes,
            |s| &s.handshakes_refused_busy,
            "tunnel listener: max_handshakes_in_progress reached",
        ) else {
            return;
        };
        ctx.tasks.spawn(handle(ctx.clone(), stream, peer, busy))
    })
    .await
}

/// `busy` holds the connection's place among the handshakes in progress until the tunnel
/// starts (or the handshake is refused).
async fn handle(ctx: Rc<ResponderShard>, stream: TcpStream, peer: SocketAddr, busy: CapPermit) {
    // This handshake's settings, kept to its end whatever a reload swaps meanwhile.
    let settings = ctx.settings();
    let cfg = &settings.cfg.tunnel_listener;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let io = CompletionStream::new(stream);
    let mut stream = match ctx.shared.tunnel_tls.as_ref().map(|tls| tls.current()) {
        None => TunnelStream::Plain(io),
        Some(tls) => {
            let left = deadline.saturating_duration_since(Instant::now());
            match monoio::time::timeout(left, accept_tls(&ctx, &tls, io, peer)).await {
                Ok(Some(stream)) => stream,
                Ok(None) => return, // refused: counted and logged
                Err(_elapsed) => {
                    ctx.stats().handshake(HandshakeOutcome::TlsTimeout);
                    return tracing::info!(%peer, "TLS handshake not done within handshake_timeout");
                }
            }
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let read = read_handshake(&mut stream, &cfg.request_path);
    let mut hs = match monoio::time::timeout(left, read).await {
        Err(_elapsed) => return reject(&ctx, &mut stream, peer, None, Rejection::Timeout).await,
        Ok(Err(rejection)) => return reject(&ctx, &mut stream, peer, None, rejection).await,
        Ok(Ok(None)) => return, // closed before a full request: nothing to answer
        Ok(Ok(Some(hs))) => hs,
    };
    let facts = ConnectionFacts {
        peer,
        peer_certificate: stream.peer_certificate(),
    };
    if let Err(rejection) = settings.admission.admit(&hs, &facts) {
        return reject(&ctx, &mut stream, peer, Some(&hs.identity), rejection).await;
    }
    // The credential has done its job; it does not travel with the tunnel.
    hs.headers.retain(|(name, _)| name != "authorization");
    let slot = ctx.shared.slot(&hs.identity);
    let node = slot.node;
    let placement = match stream {
        TunnelStream::Plain(_) => Placement::Spread {
            preferred: ctx.shard,
        },
        _ => Placement::Fixed(ctx.shard),
    };
    let target = match ctx.shared.directory.place(slot, placement) {
        Ok(shard) => shard,
        Err(e) => {
            let rejection = placement_rejection(e);
            return reject(&ctx, &mut stream, peer, Some(&hs.identity), rejection).await;
        }
    };
    tracing::debug!(%peer, node, target, tls = stream.is_tls(), "handshake accepted");
    let io = match stream {
        TunnelStream::Plain(io) if target != ctx.shard => io,
        // Here, or a TLS tunnel (always placed here).
        stream => {
            drop(busy);
            return super::tunnel::run(ctx, stream, hs, peer).await;
        }
    };
    let stream = match io.into_inner() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(%peer, "cannot hand the tunnel over: {e}");
            ctx.shared.directory.release(slot, target);
            return;
        }
    };
    drop(busy);
    hand_over(ctx, stream, hs, target).await;
}

/// The TLS handshake as the server; `None` (counted and logged) when it fails or the peer
/// speaks plaintext.
async fn accept_tls(
    ctx: &ResponderShard,
    tls: &ServerTls,
    mut io: CompletionStream,
    peer: SocketAddr,
) -> Option<TunnelStream> {
    let peek = peek_is_tls(&mut io).await.ok()?;
    match peek.looks {
        Looks::Tls => {}
        Looks::Closed => return None,
        Looks::Plaintext | Looks::Unknown => {
            ctx.stats()
                .tls_failed(TlsSide::Tunnel, TlsFailure::PlaintextPeer);
            tracing::info!(%peer, reason = TlsFailure::PlaintextPeer.label(), "TLS refused: plaintext peer on a TLS port");
            tls_rejected(ctx, peer, TlsFailure::PlaintextPeer);
            let mut io = peek.replay(io);
            let _ = io.write_all(&Rejection::TlsRequired.encode()).await;
            let _ = io.shutdown().await;
            return None;
        }
    }
    match tls.accept(peek.replay(io)).await {
        Ok(stream) => {
            inc(&ctx.stats().tunnel_tls_accepted);
            Some(TunnelStream::Accepted(Box::new(stream)))
        }
        Err(e) => {
            ctx.stats().tls_failed(TlsSide::Tunnel, e.failure);
            tracing::info!(%peer, reason = e.failure.label(), "TLS refused: {e}");
            tls_rejected(ctx, peer, e.failure);
            None
        }
    }
}

/// A refused TLS handshake's access log event: its reason is the failure class.
fn tls_rejected(ctx: &ResponderShard, peer: SocketAddr, failure: TlsFailure) {
    ctx.tunnel_event(TunnelEvent {
        kind: Some(TunnelEventKind::Rejected),
        peer: Some(peer),
        reason: Some(failure.label()),
        ..TunnelEvent::default()
    });
}

/// Moves the socket to `target` before HTTP/2 starts there.
async fn hand_over(
    ctx: Rc<ResponderShard>,
    stream: TcpStream,
    hs: AcceptedHandshake,
    target: usize,
) {
    let identity = hs.identity.clone();
    let release = || {
        ctx.shared
            .directory
            .release(ctx.shared.slot(&identity), target)
    };
    let detached = match crate::shard::detach(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(node = identity.node_id, "cannot detach tunnel socket: {e}");
            return release();
        }
    };
    let msg = ShardMsg::Adopt {
        stream: detached,
        handshake: hs,
    };
    if ctx.shared.mesh.send(target, msg).await.is_err() {
        // The target stopped (shutdown): the socket dropped with the message.
        release();
    }
}

/// The rejection for a slot the directory refused.
fn placement_rejection(e: PlaceError) -> Rejection {
    match e {
        PlaceError::TooManyTunnels(max) => Rejection::TunnelLimit {
            max,
            retry_after_secs: RETRY_AFTER_SECS,
        },
        PlaceError::TooManyForNode { node, max } => Rejection::NodeLimit { node, max },
        PlaceError::Collision(collision) => {
            Rejection::IdentityCollision(format!("Refused: {collision}").into())
        }
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
            return Err(Rejection::TooLarge);
        }
        match io.read_buf(&mut buf).await {
            // A truncated handshake is answered too, so a broken initiator learns why.
            Ok(0) | Err(_) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(Rejection::Malformed("Truncated handshake".into())),
            Ok(_) => {}
        }
        if let Some((hs, consumed)) = parse_request(&buf, path)? {
            if consumed != buf.len() {
                return Err(Rejection::Malformed(
                    "Unexpected bytes after the handshake request".into(),
                ));
            }
            return Ok(Some(hs));
        }
    }
}

/// Counts, logs and answers a rejection, then closes.
async fn reject<S: tokio::io::AsyncWrite + Unpin>(
    ctx: &ResponderShard,
    io: &mut S,
    peer: SocketAddr,
    identity: Option<&crate::protocol::TunnelIdentity>,
    rejection: Rejection,
) {
    ctx.tunnel_event(TunnelEvent {
        kind: Some(TunnelEventKind::Rejected),
        node: identity.map(|i| i.node_id.as_str()),
        cluster: identity.map(|i| i.cluster_id.as_str()),
        tenant: identity.map(|i| i.tenant_id.as_str()),
        peer: Some(peer),
        reason: Some(rejection.label()),
        status: Some(rejection.status()),
        ..TunnelEvent::default()
    });
    ctx.stats()
        .handshake(HandshakeOutcome::Rejected(&rejection));
    match rejection {
        Rejection::Timeout => tracing::debug!(%peer, "handshake timed out"),
        _ => {
            tracing::info!(%peer, status = rejection.status(), reason = rejection.label(), "handshake rejected: {rejection}")
        }
    }
    let _ = io.write_all(&rejection.encode()).await;
    let _ = io.shutdown().await;
}
