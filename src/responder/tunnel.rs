//! A tunnel on its owning responder shard: answer the handshake (200, or 101 to the upgrade
//! form), start HTTP/2 as the client, register, keep it alive with PINGs, and take it out of the
//! registry the moment it dies. What both ends share (windows, keepalive, end reasons) is in
//! `crate::tunnel`.

use std::future::poll_fn;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use monoio::net::TcpStream;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::registry::TunnelHandle;
use super::ResponderShard;
use crate::access_log::{TunnelEvent, TunnelEventKind};
use crate::http::io::Rewind;
use crate::metrics::HandshakeOutcome;
use crate::net::completion::CompletionStream;
use crate::protocol::{encode_accept, AcceptedHandshake, HandshakeForm, TunnelIdentity};
use crate::tunnel::info::{Meter, Metered, TunnelInfo};
use crate::tunnel::{self, keepalive, End, Keepalive, TunnelIo, TunnelStream};

/// Entry point for a tunnel handed over by another shard.
pub async fn adopt(ctx: Rc<ResponderShard>, stream: std::net::TcpStream, hs: AcceptedHandshake) {
    let peer = stream.peer_addr().ok();
    let adopted = TcpStream::from_std(stream).map(CompletionStream::new);
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
        let started = std::time::Instant::now();
        match serve(&ctx, id, stream, &identity, form, peer).await {
            Ok(end) => {
                tracing::info!(%peer, reason = end.label(), "tunnel closed: {end}");
                ctx.tunnel_event(TunnelEvent {
                    kind: Some(TunnelEventKind::Closed),
                    reason: Some(end.label()),
                    duration: Some(started.elapsed()),
                    ..event(id, &identity, peer)
                });
            }
            Err(e) => tracing::warn!(%peer, "tunnel failed: {e}"),
        }
        release(&ctx, &identity);
    }
    .instrument(span)
    .await
}

/// A tunnel event about tunnel `id`.
fn event(id: u64, identity: &TunnelIdentity, peer: std::net::SocketAddr) -> TunnelEvent<'_> {
    TunnelEvent {
        tunnel_id: Some(id),
        node: Some(&identity.node_id),
        cluster: Some(&identity.cluster_id),
        tenant: Some(&identity.tenant_id),
        peer: Some(peer),
        ..TunnelEvent::default()
    }
}

/// Serves the tunnel until it ends; an error means it failed before it was registered (and
/// logged as opened).
async fn serve(
    ctx: &Rc<ResponderShard>,
    id: u64,
    stream: TunnelStream,
    identity: &TunnelIdentity,
    form: HandshakeForm,
    peer: std::net::SocketAddr,
) -> Result<End, Box<dyn std::error::Error>> {
    // Keepalive, stream limit and probe period are the tunnel's for its life: a reload
    // reaches tunnels opened after it.
    let settings = ctx.settings();
    let cfg = &settings.cfg.tunnel_listener;
    let tls = stream.is_tls();
    let mut io: TunnelIo = Rewind::new(Bytes::new(), stream);
    // 200 or 101, the form the request used; HTTP/2 starts the same way after either.
    io.write_all(&encode_accept(form)).await?;
    // HTTP/2's bytes are counted for `/tunnels` from here on.
    let meter = Arc::new(Meter::default());
    let handshake = h2::client::Builder::new()
        .initial_window_size(tunnel::STREAM_WINDOW)
        .initial_connection_window_size(tunnel::CONNECTION_WINDOW)
        .max_frame_size(tunnel::MAX_FRAME)
        .max_concurrent_reset_streams(tunnel::MAX_CONCURRENT_RESET_STREAMS)
        .handshake::<_, Bytes>(Metered::new(io, meter.clone()));
    let (send, mut conn) = monoio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| "HTTP/2 did not start within handshake_timeout")??;
    let ping_pong = conn.ping_pong().ok_or("PING handle already taken")?;
    ctx.stats().handshake(HandshakeOutcome::Accepted);

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
    let info = Arc::new(TunnelInfo::new(
        id,
        ctx.shard,
        identity.clone(),
        peer,
        tls,
        None,
        meter.clone(),
        handle.stream_count(),
        Some(handle.health.clone()),
    ));
    let _listed = ctx.shared.tunnels().list(info.clone());
    ctx.registry.borrow_mut().insert(tenant, handle);
    // The tunnel's series (tenant, cluster), found once for its whole life.
    let series = ctx.stats().tunnel_slot(
        &ctx.tunnel_series,
        &identity.tenant_id,
        &identity.cluster_id,
    );
    ctx.stats().tunnel_opened(series);
    tracing::info!("tunnel up");
    ctx.tunnel_event(TunnelEvent {
        kind: Some(TunnelEventKind::Opened),
        ..event(id, identity, peer)
    });

    let keepalive_settings = Keepalive {
        interval: cfg.ping_interval,
        failure_threshold: cfg.ping_failure_threshold,
    };
    let mut keepalive = pin!(keepalive::watch(ping_pong, keepalive_settings, meter));
    let mut shutdown = pin!(crate::shard::rare::Rare::new(ctx.shared.shutdown.wait()));
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
    ctx.stats().tunnel_closed(series, &end);
    if let End::Drained = end {
        info.set_draining();
        // In-flight streams finish within the grace period; the connection then closes
        // (GOAWAY) once the last SendRequest, held by those streams, is gone.
        let finish = poll_fn(|cx| {
            if let Some(target) = window.poll_target(cx) {
                conn.set_target_window_size(target);
            }
            Pin::new(&mut conn).poll(cx)
        });
        let _ = monoio::time::timeout(settings.drain_timeout, finish).await;
    }
    Ok(end)
}
