//! The reverse cluster: from a host id to a response head, through a tunnel.
//!
//! The fast path uses this shard's registry. When this shard holds no tunnel for the host, the
//! shared directory names the shards that do and the request is handed to one of them over the
//! mesh; its response (an h2 body, `Send`) or its failure streams straight back. A request never
//! fails only because it landed on the wrong core.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use super::registry::{StreamGuard, TunnelHandle};
use super::{ResponderShard, ShardMsg};
use crate::http::body::{pump_body, RecvBody};
use crate::pipeline::logged::Counted;
use crate::pipeline::ProxyError;
use crate::stats::inc;

/// A tunnel's response body; counts its stream as active on the tunnel until dropped.
pub type TunnelBody = RecvBody<StreamGuard>;

/// The request body sent up a tunnel: the client's body, counted.
pub type EgressRequestBody = Counted<Incoming>;

/// What a tunnel gives back: the response head with its body still streaming, and the id of
/// the tunnel that carried it.
pub type TunnelResponse = Result<(Response<TunnelBody>, u64), ProxyError>;

/// A request handed to another shard, with where to send its response.
pub struct ForwardedRequest {
    pub tenant: String,
    pub host_id: String,
    pub request: Request<EgressRequestBody>,
    pub reply: oneshot::Sender<TunnelResponse>,
}

/// How often a request waiting for a tunnel (`pending_timeout`) looks again.
const PENDING_POLL: Duration = Duration::from_millis(20);

/// Sends `request` to `host_id` of `tenant` through a tunnel on this shard or another.
pub async fn proxy(
    ctx: &Rc<ResponderShard>,
    tenant: &str,
    host_id: &str,
    request: Request<EgressRequestBody>,
) -> TunnelResponse {
    let pending_until = ctx
        .shared
        .egress()
        .pending_timeout
        .map(|t| std::time::Instant::now() + t);
    loop {
        let local = ctx.registry.borrow_mut().pick(tenant, host_id);
        if let Some(tunnel) = local {
            return send_on_tunnel(ctx, &tunnel, request).await;
        }
        let elsewhere = ctx.shared.directory.shards_for(tenant, host_id, ctx.shard);
        if let Some(&target) = elsewhere.first() {
            inc(&ctx.stats().egress_cross_shard);
            return forward(ctx, target, tenant, host_id, request).await;
        }
        match pending_until {
            Some(deadline) if std::time::Instant::now() < deadline => {
                monoio::time::sleep(PENDING_POLL).await;
            }
            _ => return Err(no_tunnel(ctx, tenant, host_id)),
        }
    }
}

/// No usable tunnel: busy ones and missing ones are told apart.
fn no_tunnel(ctx: &ResponderShard, tenant: &str, host_id: &str) -> ProxyError {
    let host_id = host_id.to_owned();
    match ctx.registry.borrow().knows(tenant, &host_id) {
        true => ProxyError::TunnelsBusy { host_id },
        false => ProxyError::NoTunnel { host_id },
    }
}

async fn forward(
    ctx: &Rc<ResponderShard>,
    target: usize,
    tenant: &str,
    host_id: &str,
    request: Request<EgressRequestBody>,
) -> TunnelResponse {
    let (tx, rx) = oneshot::channel();
    let msg = ShardMsg::Forward(Box::new(ForwardedRequest {
        tenant: tenant.to_owned(),
        host_id: host_id.to_owned(),
        request,
        reply: tx,
    }));
    if ctx.shared.mesh.send(target, msg).await.is_err() {
        return Err(no_tunnel(ctx, tenant, host_id));
    }
    rx.await.unwrap_or_else(|_| {
        Err(ProxyError::TunnelFailed {
            node: host_id.to_owned(),
            detail: format!("shard {target} dropped the request"),
        })
    })
}

/// Serves a request another shard handed over; no tunnel if it went away meanwhile.
pub async fn serve_forwarded(ctx: Rc<ResponderShard>, fwd: ForwardedRequest) {
    let tunnel = ctx.registry.borrow_mut().pick(&fwd.tenant, &fwd.host_id);
    let result = match tunnel {
        Some(tunnel) => send_on_tunnel(&ctx, &tunnel, fwd.request).await,
        None => Err(no_tunnel(&ctx, &fwd.tenant, &fwd.host_id)),
    };
    let _ = fwd.reply.send(result);
}

/// Opens a stream on `tunnel`, streams the request body up and returns the response head with
/// its body still streaming.
async fn send_on_tunnel<B>(
    ctx: &ResponderShard,
    tunnel: &Rc<TunnelHandle>,
    request: Request<B>,
) -> TunnelResponse
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let failed = |detail: String| ProxyError::TunnelFailed {
        node: tunnel.identity.node_id.clone(),
        detail,
    };
    let guard = tunnel.stream_guard();
    let mut send = tunnel.send.clone();
    send = match monoio::time::timeout(crate::tunnel::READY_TIMEOUT, send.ready()).await {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed("no stream capacity within 5s".into())),
    };
    let (parts, body) = request.into_parts();
    let end_of_stream = body.is_end_stream();
    let (response, stream) = send
        .send_request(Request::from_parts(parts, ()), end_of_stream)
        .map_err(|e| failed(e.to_string()))?;
    if !end_of_stream {
        ctx.tasks.spawn(async move {
            if let Err(e) = pump_body(body, stream).await {
                tracing::debug!("request body: {e}");
            }
        });
    }
    let (mut parts, recv) = response
        .await
        .map_err(|e| failed(e.to_string()))?
        .into_parts();
    crate::http::proxy_headers::strip_hop_by_hop(&mut parts.headers, &[]);
    Ok((
        Response::from_parts(parts, RecvBody::new(recv, guard, &tunnel.parking)),
        tunnel.id,
    ))
}
