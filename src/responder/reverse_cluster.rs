//! The reverse cluster: from a host id to a response, through a tunnel.
//!
//! The fast path uses this shard's registry. When this shard holds no tunnel for the host, the
//! shared directory names the shards that do and the request is handed to one of them over the
//! mesh; its response (an h2 body, `Send`) streams straight back. A request never fails only
//! because it landed on the wrong core.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Either;
use hyper::body::Incoming;

use super::registry::{StreamGuard, TunnelHandle};
use super::{ResponderShard, ShardMsg};
use crate::http::body::{pump_body, RecvBody};
use crate::http::local_reply;
use crate::stats::inc;

/// What the egress listener sends back: a local reply or a tunnel's response body.
pub type EgressBody = Either<http_body_util::Full<Bytes>, RecvBody<StreamGuard>>;

/// A request handed to another shard, with where to send its response.
pub struct ForwardedRequest {
    pub host_id: String,
    pub request: Request<Incoming>,
    pub reply: oneshot::Sender<Response<EgressBody>>,
}

/// How often a request waiting for a tunnel (`pending_timeout`) looks again.
const PENDING_POLL: Duration = Duration::from_millis(20);

/// Sends `request` to `host_id` through a tunnel on this shard or another.
pub async fn proxy(
    ctx: &Rc<ResponderShard>,
    host_id: String,
    request: Request<Incoming>,
) -> Response<EgressBody> {
    let pending_until = ctx
        .shared
        .cfg()
        .egress_listener
        .pending_timeout
        .map(|t| std::time::Instant::now() + t);
    loop {
        let local = ctx.registry.borrow_mut().pick(&host_id);
        if let Some(tunnel) = local {
            return send_on_tunnel(ctx, &tunnel, request).await;
        }
        if let Some(&target) = ctx.shared.directory.shards_for(&host_id, ctx.shard).first() {
            inc(&ctx.stats().egress_cross_shard);
            return forward(ctx, target, host_id, request).await;
        }
        match pending_until {
            Some(deadline) if std::time::Instant::now() < deadline => {
                monoio::time::sleep(PENDING_POLL).await;
            }
            _ => return no_tunnel(ctx, &host_id),
        }
    }
}

fn no_tunnel(ctx: &ResponderShard, host_id: &str) -> Response<EgressBody> {
    inc(&ctx.stats().egress_503_no_tunnel);
    let message = if ctx.registry.borrow().knows(host_id) {
        format!("Every tunnel for host id '{host_id}' is at max_concurrent_streams")
    } else {
        format!("No tunnel for host id '{host_id}'")
    };
    reply(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// A local reply as an egress response.
pub fn reply(status: StatusCode, message: impl Into<String>) -> Response<EgressBody> {
    local_reply::text(status, message).map(Either::Left)
}

async fn forward(
    ctx: &Rc<ResponderShard>,
    target: usize,
    host_id: String,
    request: Request<Incoming>,
) -> Response<EgressBody> {
    let (tx, rx) = oneshot::channel();
    let msg = ShardMsg::Forward(ForwardedRequest {
        host_id: host_id.clone(),
        request,
        reply: tx,
    });
    if ctx.shared.mesh.send(target, msg).await.is_err() {
        return no_tunnel(ctx, &host_id);
    }
    match rx.await {
        Ok(resp) => resp,
        Err(_) => reply(
            StatusCode::BAD_GATEWAY,
            format!("Shard {target} dropped the request for '{host_id}'"),
        ),
    }
}

/// Serves a request another shard handed over; answers 503 if the tunnel went away meanwhile.
pub async fn serve_forwarded(ctx: Rc<ResponderShard>, fwd: ForwardedRequest) {
    let tunnel = ctx.registry.borrow_mut().pick(&fwd.host_id);
    let resp = match tunnel {
        Some(tunnel) => send_on_tunnel(&ctx, &tunnel, fwd.request).await,
        None => no_tunnel(&ctx, &fwd.host_id),
    };
    let _ = fwd.reply.send(resp);
}

/// Opens a stream on `tunnel`, streams the request body up and returns the response head with
/// its body still streaming.
async fn send_on_tunnel<B>(
    ctx: &ResponderShard,
    tunnel: &Rc<TunnelHandle>,
    request: Request<B>,
) -> Response<EgressBody>
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let guard = tunnel.stream_guard();
    let mut send = tunnel.send.clone();
    match monoio::time::timeout(super::tunnel::READY_TIMEOUT, send.ready()).await {
        Ok(Ok(ready)) => send = ready,
        Ok(Err(e)) => return tunnel_error(ctx, tunnel, &e.to_string()),
        Err(_) => return tunnel_error(ctx, tunnel, "no stream capacity within 5s"),
    }
    let (parts, body) = request.into_parts();
    let end_of_stream = body.is_end_stream();
    let (response, stream) = match send.send_request(Request::from_parts(parts, ()), end_of_stream)
    {
        Ok(pair) => pair,
        Err(e) => return tunnel_error(ctx, tunnel, &e.to_string()),
    };
    if !end_of_stream {
        ctx.tasks.spawn(async move {
            if let Err(e) = pump_body(body, stream).await {
                tracing::debug!("request body: {e}");
            }
        });
    }
    match response.await {
        Ok(resp) => {
            let (mut parts, recv) = resp.into_parts();
            crate::http::proxy_headers::strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Right(RecvBody::new(recv, guard)))
        }
        Err(e) => tunnel_error(ctx, tunnel, &e.to_string()),
    }
}

fn tunnel_error(ctx: &ResponderShard, tunnel: &TunnelHandle, detail: &str) -> Response<EgressBody> {
    inc(&ctx.stats().egress_502_tunnel_error);
    tracing::debug!(tunnel = tunnel.id, "tunnel error: {detail}");
    reply(
        StatusCode::BAD_GATEWAY,
        format!(
            "Tunnel to node '{}' failed: {detail}",
            tunnel.identity.node_id
        ),
    )
}
