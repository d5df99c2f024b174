//! A tunnel on its owning responder shard: answer the handshake (200, or 101 to the upgrade
//! form), start HTTP/2 as the client, register, keep it alive with PINGs, and take it out of the
//! registry the moment it dies. What both ends share (windows, keepalive, end reasons) is in
//! `crate::tunnel`.

use std::future::poll_fn;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use monoio::net::TcpStream;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::registry::TunnelHandle;
use super::ResponderShard;
use crate::http::io::Rewind;
use crate::protocol::{encode_accept, AcceptedHandshake, HandshakeForm, TunnelIdentity};
use crate::stats::{dec, inc};
use crate::tunnel::{self, keepalive, End, Keepalive, TunnelIo, TunnelStream};

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
    let peer = stream.peer_addr().ok();
    let adopted =
        TcpStream::from_std(stream).and_then(|s| s.try_into_poll_io().map_err(|(e, _)| e));
    match (adopted, peer) {
        (Ok(io), Some(peer)) => run(ctx, TunnelStream::Plain(io), hs, peer).await,
        (Err(e), _) => {
            tracing::warn!(node = %hs.identity.node_id, "cannot adopt tunnel: {e}");
            release(&ctx, &hs.identity);
        }
        (Ok(_), None) => {
            tracing::debug!(node = %hs.identity.node_id, "tunnel closed before adoption");
            release(&ctx, &hs.identity);
        }
    }
}

/// Gives back the directory slot the acceptor reserved on this shard.
fn release(ctx: &ResponderShard, identity: &TunnelIdentity) {
    ctx.shared
        .directory
        .release(ctx.shared.slot(identity), ctx.shard);
}

/// Runs an accepted tunnel whose directory slot on this shard is already reserved.
pub async fn run(
    ctx: Rc<ResponderShard>,
    stream: TunnelStream,
    hs: AcceptedHandshake,
    peer: std::net::SocketAddr,
) {
    let id = ctx.shared.next_tunnel_id();
    let (form, initiation_time_ms) = (hs.form, hs.initiation_time_ms);
    let identity = hs.identity;
    let span = tracing::info_span!("tunnel", id, node = %identity.node_id, cluster = %identity.cluster_id, shard = ctx.shard, tls = stream.is_tls(), form = form.as_str());
    async {
        tracing::debug!(%peer, initiation_time_ms, "accepting handshake");
        match serve(&ctx, id, stream, &identity, form).await {
            Ok(end) => tracing::info!(%peer, reason = end.label(), "tunnel closed: {end}"),
            Err(e) => tracing::warn!(%peer, "tunnel failed: {e}"),
        }
        release(&ctx, &identity);
        inc(&ctx.stats().tunnels_closed);
    }
    .instrument(span)
    .await
}

async fn serve(
    ctx: &Rc<ResponderShard>,
    id: u64,
    stream: TunnelStream,
    identity: &TunnelIdentity,
    form: HandshakeForm,
) -> Result<End, Box<dyn std::error::Error>> {
    let cfg = ctx.shared.tunnel_listener();
    let mut io: TunnelIo = Rewind::new(Bytes::new(), stream);
    // 200 or 101, the form the request used; HTTP/2 starts the same way after either.
    io.write_all(&encode_accept(form)).await?;
    let handshake = h2::client::Builder::new()
        .initial_window_size(tunnel::STREAM_WINDOW)
        .initial_connection_window_size(tunnel::CONNECTION_WINDOW)
        .max_concurrent_reset_streams(tunnel::MAX_CONCURRENT_RESET_STREAMS)
        .handshake::<_, Bytes>(io);
    let (send, mut conn) = monoio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| "HTTP/2 did not start within handshake_timeout")??;
    let ping_pong = conn.ping_pong().ok_or("PING handle already taken")?;
    inc(&ctx.stats().handshake_accepted);

    let tenant = ctx
        .shared
        .tenancy()
        .registry_tenant(Some(&identity.tenant_id));
    let parking = tunnel::parking_lot();
    let mut window = parking.window_target(tunnel::CONNECTION_WINDOW);
    let handle = Rc::new(TunnelHandle::new(
        id,
        identity.clone(),
        send,
        parking,
        cfg.max_concurrent_streams as usize,
        cfg.unhealthy_probe_interval,
    ));
    ctx.registry.borrow_mut().insert(tenant, handle);
    inc(&ctx.stats().tunnels_active);
    tracing::info!("tunnel up");

    let settings = Keepalive {
        interval: cfg.ping_interval,
        failure_threshold: cfg.ping_failure_threshold,
    };
    let mut keepalive = pin!(keepalive::watch(ping_pong, settings));
    let mut shutdown = pin!(ctx.shared.shutdown.wait());
    let end = poll_fn(|cx| {
        // Parked response bytes go back to the connection window before h2 runs.
        if let Some(target) = window.poll_target(cx) {
            conn.set_target_window_size(target);
        }
        if let Poll::Ready(res) = Pin::new(&mut conn).poll(cx) {
            return Poll::Ready(res.map_or_else(End::Failed, |()| End::Closed));
        }
        if let Poll::Ready(end) = keepalive.as_mut().poll(cx) {
            return Poll::Ready(End::from(end));
        }
        shutdown.as_mut().poll(cx).map(|()| End::Drained)
    })
    .await;
    // Out of the registry at once: no new stream may pick a dead or draining tunnel.
    ctx.registry.borrow_mut().remove(tenant, id, identity);
    dec(&ctx.stats().tunnels_active);
    match end {
        End::Dead => inc(&ctx.stats().tunnels_dead_ping),
        End::Drained => {
            // In-flight streams finish within the grace period; the connection then closes
            // (GOAWAY) once the last SendRequest, held by those streams, is gone.
            let finish = poll_fn(|cx| {
                if let Some(target) = window.poll_target(cx) {
                    conn.set_target_window_size(target);
                }
                Pin::new(&mut conn).poll(cx)
            });
            let _ = monoio::time::timeout(ctx.shared.drain_timeout, finish).await;
        }
        End::Closed | End::Failed(_) => {}
    }
    Ok(end)
}
