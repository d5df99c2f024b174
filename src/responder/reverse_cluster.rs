//! The reverse cluster: from a host id to a response head, through a tunnel.
//!
//! The fast path uses this shard's registry. When this shard holds no tunnel for the host, the
//! shared directory names the shards that do and the request is handed to one of them over the
//! mesh; its response (an h2 body, `Send`) or its failure streams straight back. A request never
//! fails only because it landed on the wrong core. When the only tunnel this shard has for the
//! host is unhealthy (`registry`, "Health") and another shard holds the host, the request goes
//! there instead. A handed-over request whose origin gave up (its route timeout, a client that
//! left) is dropped, and its tunnel stream with it.
//!
//! A tunnel whose initiator has sent GOAWAY (it drains: a removed tunnels entry, a shutdown)
//! refuses new streams locally, before anything is sent: such a request goes back to the pick
//! and onto another tunnel of the host, at most [`MAX_REFUSALS`] times, and the refusing tunnel
//! leaves the registry at once (the driver would only notice when its last stream ends). The
//! initiator's GOAWAY is h2's graceful two-step one (last stream id MAX, a PING round trip,
//! then the real one), so a stream that was already on its way when it left is still served:
//! no request is lost to a draining tunnel.
//!
//! The tunnel a request's stream opened on is recorded in its [`PickedTunnel`] as soon as the
//! stream opens, on whichever shard: the egress driver blames a route timeout on it.
//!
//! Cancellation: when the client goes away, every handle of its tunnel stream is dropped — the
//! response future or body, the pump of the request body (told by its switch), a handed-over
//! request's work on the other shard (its reply channel is cancelled) — and h2 resets a stream
//! whose last handle goes before it ended with RST_STREAM(CANCEL), which the initiator sees at
//! once.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use super::registry::{StreamGuard, TunnelHandle, TunnelHealth};
use super::{ResponderShard, ShardMsg};
use crate::http::body::{pump_body, RecvBody};
use crate::http::replay::copy_head;
use crate::metrics::inc;
use crate::pipeline::logged::Counted;
use crate::pipeline::ProxyError;

/// A tunnel's response body; counts its stream as active on the tunnel until dropped, and
/// holds the switch of the request body's pump (dropping it stops the pump).
pub type TunnelBody = RecvBody<(StreamGuard, Option<oneshot::Sender<()>>)>;

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
    /// Where the serving shard records the tunnel it opened the stream on.
    pub picked: PickedTunnel,
}

/// The tunnel a request's stream opened on, once it has: shared by the egress driver and the
/// shard that opened the stream. A stream the tunnel refused ([`Sent::Refused`]) is replaced
/// by the one on the next tunnel.
#[derive(Debug, Clone, Default)]
pub struct PickedTunnel(Arc<Mutex<Option<Picked>>>);

/// A tunnel that carries a request.
#[derive(Debug, Clone)]
pub struct Picked {
    pub id: u64,
    pub health: Arc<TunnelHealth>,
}

impl PickedTunnel {
    /// The tunnel the stream opened on, if it did.
    pub fn get(&self) -> Option<Picked> {
        self.0.lock().ok().and_then(|picked| picked.clone())
    }

    fn set(&self, tunnel: &TunnelHandle) {
        if let Ok(mut picked) = self.0.lock() {
            *picked = Some(Picked {
                id: tunnel.id,
                health: tunnel.health.clone(),
            });
        }
    }
}

/// How often a request waiting for a tunnel (`pending_timeout`) looks again.
const PENDING_POLL: Duration = Duration::from_millis(20);

/// How many tunnels may refuse one request before it fails (each refusal also takes the
/// refusing tunnel out of the registry).
pub const MAX_REFUSALS: usize = 3;

/// What sending on one tunnel came to.
enum Sent<B> {
    Done(TunnelResponse),
    /// The tunnel refused the stream before it opened (it received GOAWAY): nothing was
    /// sent, and the request comes back to be sent elsewhere.
    Refused(Request<B>, ProxyError),
}

/// Sends `request` to `host_id` of `tenant` through a tunnel on this shard or another; the
/// tunnel is recorded in `picked` as soon as the stream opens.
pub async fn proxy(
    ctx: &Rc<ResponderShard>,
    tenant: &str,
    host_id: &str,
    request: Request<EgressRequestBody>,
    picked: &PickedTunnel,
    pending_timeout: Option<Duration>,
) -> TunnelResponse {
    let pending_until = pending_timeout.map(|t| std::time::Instant::now() + t);
    let mut request = request;
    let mut refusals = 0;
    loop {
        let local = ctx.registry.borrow_mut().pick_ranked(tenant, host_id);
        if let Some((tunnel, preferred)) = local {
            if !preferred {
                // Only an unhealthy tunnel here: another shard may hold a healthy one.
                let elsewhere = ctx.shared.directory.shards_for(tenant, host_id, ctx.shard);
                if let Some(&target) = elsewhere.first() {
                    inc(&ctx.stats().egress_cross_shard);
                    return Box::pin(forward(ctx, target, tenant, host_id, request, picked)).await;
                }
            }
            // Boxed, as `forward` is: inline, each would make this future (itself boxed by
            // the caller) about 1.7 KiB, past the sizes glibc serves from its per-thread
            // cache; apart, each allocation is under 1 KiB.
            match Box::pin(send_on_tunnel(ctx, &tunnel, request, picked)).await {
                Sent::Done(result) => return result,
                Sent::Refused(back, error) => {
                    refusals += 1;
                    if refusals >= MAX_REFUSALS {
                        return Err(error);
                    }
                    inc(&ctx.stats().egress_tunnel_refused_retries);
                    request = back;
                    continue;
                }
            }
        }
        let elsewhere = ctx.shared.directory.shards_for(tenant, host_id, ctx.shard);
        if let Some(&target) = elsewhere.first() {
            inc(&ctx.stats().egress_cross_shard);
            return Box::pin(forward(ctx, target, tenant, host_id, request, picked)).await;
        }
        match pending_until {
            Some(deadline) if std::time::Instant::now() < deadline => {
                // A shard timer, not a monoio `Sleep`: that one is 128-byte aligned and would
                // make every request's boxed trip an aligned allocation (`shard::timer`).
                crate::shard::timer::sleep(PENDING_POLL).await;
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
    picked: &PickedTunnel,
) -> TunnelResponse {
    let (tx, rx) = oneshot::channel();
    let msg = ShardMsg::Forward(Box::new(ForwardedRequest {
        tenant: tenant.to_owned(),
        host_id: host_id.to_owned(),
        request,
        reply: tx,
        picked: picked.clone(),
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

/// Serves a request another shard handed over; no tunnel if it went away meanwhile. Gives up
/// (and resets the tunnel stream) when the origin stops waiting for the response head.
pub async fn serve_forwarded(ctx: Rc<ResponderShard>, fwd: ForwardedRequest) {
    let ForwardedRequest {
        tenant,
        host_id,
        request,
        mut reply,
        picked,
    } = fwd;
    let mut sent = pin!(send_here(&ctx, &tenant, &host_id, request, &picked));
    let done = poll_fn(|cx| {
        if let Poll::Ready(result) = sent.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        reply.poll_canceled(cx).map(|()| None)
    })
    .await;
    // `None`: the origin gave up.
    if let Some(result) = done {
        let _ = reply.send(result);
    }
}

/// Sends a handed-over request on one of this shard's tunnels for the host, on another when
/// one refuses it ([`MAX_REFUSALS`]); no tunnel left is `no_tunnel`.
async fn send_here(
    ctx: &Rc<ResponderShard>,
    tenant: &str,
    host_id: &str,
    request: Request<EgressRequestBody>,
    picked: &PickedTunnel,
) -> TunnelResponse {
    let mut request = request;
    for _ in 1..MAX_REFUSALS {
        let Some(tunnel) = ctx.registry.borrow_mut().pick(tenant, host_id) else {
            return Err(no_tunnel(ctx, tenant, host_id));
        };
        match send_on_tunnel(ctx, &tunnel, request, picked).await {
            Sent::Done(result) => return result,
            Sent::Refused(back, _) => {
                inc(&ctx.stats().egress_tunnel_refused_retries);
                request = back;
            }
        }
    }
    let Some(tunnel) = ctx.registry.borrow_mut().pick(tenant, host_id) else {
        return Err(no_tunnel(ctx, tenant, host_id));
    };
    match send_on_tunnel(ctx, &tunnel, request, picked).await {
        Sent::Done(result) => result,
        Sent::Refused(_, error) => Err(error),
    }
}

/// Opens a stream on `tunnel`, streams the request body up and returns the response head with
/// its body still streaming; or gives the request back, untouched, when the tunnel refuses
/// new streams (GOAWAY received), after taking the tunnel out of the registry.
async fn send_on_tunnel<B>(
    ctx: &ResponderShard,
    tunnel: &Rc<TunnelHandle>,
    request: Request<B>,
    picked: &PickedTunnel,
) -> Sent<B>
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
    send = match crate::shard::timer::timeout(crate::tunnel::READY_TIMEOUT, send.ready()).await {
        Ok(Ok(ready)) => ready,
        // h2 refuses new streams once the peer's GOAWAY arrived (or the connection broke):
        // nothing of this request was sent.
        Ok(Err(e)) => {
            tracing::debug!(tunnel = tunnel.id, "tunnel refuses new streams: {e}");
            ctx.forget_tunnel(tunnel);
            return Sent::Refused(request, failed(e.to_string()));
        }
        Err(_) => return Sent::Done(Err(failed("no stream capacity within 5s".into()))),
    };
    // No await between `ready` and `send_request`: the tunnel cannot change state between
    // them (its connection is driven on this shard).
    let (parts, body) = request.into_parts();
    let end_of_stream = body.is_end_stream();
    // A request without a body can go to another tunnel if this one refuses its stream after
    // it opened (see `refused`): its head is kept until the response head arrives.
    let replay = end_of_stream.then(|| copy_head(&parts));
    let (response, stream) = match send.send_request(Request::from_parts(parts, ()), end_of_stream)
    {
        Ok(opened) => opened,
        Err(e) => return Sent::Done(Err(failed(e.to_string()))),
    };
    picked.set(tunnel);
    // The pump stops when its switch goes: with this future before the response head, with
    // the response body after it.
    let (switch, unsent_body) = if end_of_stream {
        (None, Some(body))
    } else {
        let (switch, mut off) = oneshot::channel::<()>();
        ctx.tasks.spawn(async move {
            let mut pump = pin!(pump_body(body, stream));
            let pumped = poll_fn(|cx| {
                if let Poll::Ready(result) = pump.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                Pin::new(&mut off).poll(cx).map(|_| None)
            })
            .await;
            match pumped {
                Some(Err(e)) => tracing::debug!("request body: {e}"),
                None => tracing::debug!("request body abandoned: the response side went away"),
                Some(Ok(())) => {}
            }
        });
        (Some(switch), None)
    };
    let (mut parts, recv) = match response.await {
        Ok(response) => response.into_parts(),
        Err(e) if refused(&e) => {
            tracing::debug!(tunnel = tunnel.id, "tunnel refused the stream: {e}");
            if e.is_go_away() {
                ctx.forget_tunnel(tunnel);
            }
            return match (replay, unsent_body) {
                (Some(head), Some(body)) => {
                    Sent::Refused(Request::from_parts(head, body), failed(e.to_string()))
                }
                // Its body went up, in part at least: it cannot be sent again.
                _ => Sent::Done(Err(failed(e.to_string()))),
            };
        }
        Err(e) => return Sent::Done(Err(failed(e.to_string()))),
    };
    if tunnel.health.record_success() {
        inc(&ctx.stats().tunnels_healthy_again);
        tracing::info!(tunnel = tunnel.id, node = %tunnel.identity.node_id, "tunnel answered in time: healthy again");
    }
    crate::http::proxy_headers::strip_hop_by_hop(&mut parts.headers, &[]);
    Sent::Done(Ok((
        Response::from_parts(parts, RecvBody::new(recv, (guard, switch), &tunnel.parking)),
        tunnel.id,
    )))
}

/// Whether the tunnel refused a stream without processing it: a GOAWAY from the initiator
/// whose last stream id is below the stream's (RFC 9113 §6.8; h2 gives exactly those streams
/// the GOAWAY as their error: streams still open when the connection ends get an I/O error),
/// or a RST_STREAM with REFUSED_STREAM (§8.7).
fn refused(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
}
