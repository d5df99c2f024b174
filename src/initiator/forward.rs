//! The initiator's request driver: one tunnel stream through the pipeline's phases to a local
//! service (routed by the normalized path, `crate::http::path`, which the route's
//! `prefix_rewrite` may then change), and the response streamed
//! back on the tunnel under flow control. The local hop runs within the route timeout (and the
//! cluster's `response_timeout`) and the stream idle timeout (`crate::pipeline::deadline`).
//!
//! Cancellation (ARCHITECTURE.md §4): the responder resets the stream (RST_STREAM) when its
//! client goes away. Until the response head the driver watches for that reset and drops the
//! local request at once (`initiator::pool`: an HTTP/1.1 connection carrying it is closed, an
//! HTTP/2 stream reset); after it, `pump_body` notices and drops the local response body.

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http::{header, request, uri, HeaderValue, Request, Response, Uri};
use http_body::Body;
use tracing::Instrument;

use super::pool::{LocalBody, PooledBody};
use super::InitiatorShard;
use crate::config::Protocol;
use crate::http::body::{pump_body, ParkingLot, RecvBody};
use crate::http::path::{self, EscapedSlashes};
use crate::http::proxy_headers::strip_hop_by_hop;
use crate::http::route::{match_route, rewrite_prefix};
use crate::pipeline::logged::{finish, Counted};
use crate::pipeline::{
    respond, Deadlines, Logged, ProxyError, RequestCtx, Role, REQUEST_ID_HEADER,
};

/// Handles one stream the responder opened; its request body parks in `parking`, its tunnel's
/// (`http::body::parking`).
pub async fn handle(
    ctx: Rc<InitiatorShard>,
    request: Request<h2::RecvStream>,
    mut respond_to: h2::server::SendResponse<Bytes>,
    parking: ParkingLot,
) {
    let (mut parts, recv) = request.into_parts();
    // The responder is this request's only source: its request id is trusted.
    let mut rctx = Box::new(RequestCtx::new(
        Role::Initiator,
        ctx.shard,
        None,
        &parts,
        true,
    ));
    let span = tracing::debug_span!("request", id = %rctx.request_id, method = %parts.method, path = %parts.uri.path(), stream = ?respond_to.stream_id());
    // The phases' futures are boxed one by one: inline they made this one (boxed by the
    // caller) over 2 KiB, past the sizes glibc serves from its per-thread cache (a large
    // allocation costs about ten small ones); apart, each is under 1 KiB.
    async {
        let proxied = {
            let mut upstream = Box::pin(upstream(&ctx, &mut rctx, &mut parts, recv, &parking));
            poll_fn(|cx| {
                if let Poll::Ready(reset) = respond_to.poll_reset(cx) {
                    return Poll::Ready(Err(reset));
                }
                upstream.as_mut().poll(cx).map(Ok)
            })
            .await
        };
        match proxied {
            Ok(Ok(response)) => {
                Box::pin(send_upstream_response(&ctx, rctx, response, respond_to)).await
            }
            Ok(Err(error)) => send_local_reply(&ctx, rctx, error, &mut respond_to),
            Err(reset) => cancelled(&ctx, rctx, reset),
        }
    }
    .instrument(span)
    .await
}

/// Phases 1–3 and the local hop, up to the response head.
async fn upstream(
    ctx: &InitiatorShard,
    rctx: &mut RequestCtx,
    parts: &mut request::Parts,
    recv: h2::RecvStream,
    parking: &ParkingLot,
) -> Result<Response<PooledBody>, ProxyError> {
    ctx.pipeline.request_filter(rctx, parts)?;
    // The responder normalized the path already (a no-op then: normalizing is idempotent);
    // another responder may not have. Escaped slashes are the responder's to refuse.
    parts.uri = path::normalize_uri(&parts.uri, EscapedSlashes::Keep).map_err(|e| {
        ProxyError::BadRequest {
            reason: e.to_string(),
        }
    })?;
    let no_route = || ProxyError::NoRoute {
        path: parts.uri.path().to_owned(),
    };
    // The configuration current as the stream starts: its route, pool and deadlines stay this
    // stream's whatever a reload swaps meanwhile. Held until the response head only (this
    // function's life); the pool lives on in the response body's lease.
    let snapshot = ctx.snapshot();
    let cfg = &snapshot.cfg;
    let (index, route) = match_route(&cfg.routes, parts.uri.path()).ok_or_else(no_route)?;
    let cluster = snapshot
        .local
        .get(&route.cluster)
        .ok_or_else(no_route)?
        .clone();
    rctx.route = Some(index);
    rctx.route_rewrite = snapshot.route_rewrites.get(index);
    rctx.cluster = Some(cluster.name.clone());
    if let Some(to) = &route.rewrite.prefix_rewrite {
        parts.uri =
            rewrite_prefix(&parts.uri, &route.prefix, to).map_err(|e| ProxyError::BadRequest {
                reason: e.to_string(),
            })?;
    }
    to_local_request(parts, cluster.protocol());
    // The service sees the request's id (the responder's, or ours if it sent none).
    carry_request_id(&mut parts.headers, rctx.request_id.header_value());
    ctx.pipeline.upstream_request_filter(rctx, parts);
    // The route timeout, cut shorter by the cluster's response_timeout if it has one.
    let response_timeout = crate::config::enabled(cluster.config().response_timeout);
    let route_timeout = route.effective_timeout(cfg.request_timeout);
    let deadlines = Deadlines {
        route: match (route_timeout, response_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        idle: crate::config::enabled(cfg.stream_idle_timeout),
    };
    let body = RecvBody::new(recv, (), parking);
    let clock = rctx
        .outcome
        .stream
        .start(deadlines.idle, body.is_end_stream());
    let tally = rctx.outcome.request_body.for_body(body.is_end_stream());
    let body = LocalBody::new(Counted::new(body, tally, clock.clone()));
    let request = Request::from_parts(std::mem::replace(parts, empty_parts()), body);
    rctx.timings.upstream_start = Some(Instant::now());
    // Boxed: the deadline wrapper would otherwise move the whole local exchange's future.
    let sent = deadlines
        .bound(&clock, Box::pin(cluster.send(request)))
        .await;
    // The responder reset the request body (its client's body failed): not the service's fault.
    sent.map_err(|e| rctx.outcome.client_body_failure().unwrap_or(e))
}

/// The responder reset the stream before the response head (its client went away): the local
/// request was dropped with the future that carried it; phase 5 runs (`initiator_cancelled`).
fn cancelled(
    ctx: &InitiatorShard,
    mut rctx: Box<RequestCtx>,
    reset: Result<h2::Reason, h2::Error>,
) {
    match reset {
        Ok(reason) => {
            tracing::debug!(request_id = %rctx.request_id, "the responder reset the stream ({reason:?}): local request dropped")
        }
        Err(e) => {
            tracing::debug!(request_id = %rctx.request_id, "the tunnel failed ({e}): local request dropped")
        }
    }
    // Logged just above: `finish` need not say it again.
    rctx.outcome.failure = Some(ProxyError::ClientClosed);
    finish(&mut rctx, &ctx.pipeline, false);
}

/// An empty request head, left behind when the real one moves into the local request.
fn empty_parts() -> request::Parts {
    Request::new(()).into_parts().0
}

/// Phase 4 on the local service's response, then its body streamed back; phase 5 runs when
/// the body is done.
async fn send_upstream_response(
    ctx: &InitiatorShard,
    mut rctx: Box<RequestCtx>,
    response: Response<PooledBody>,
    mut respond_to: h2::server::SendResponse<Bytes>,
) {
    let (mut head, body) = response.into_parts();
    strip_hop_by_hop(&mut head.headers, &[]);
    head.version = http::Version::HTTP_2;
    rctx.timings.response_start = Some(Instant::now());
    ctx.pipeline.response_filter(&mut rctx, &mut head);
    let body = Logged::new(body, rctx, ctx.pipeline.clone());
    let end_of_stream = body.is_end_stream();
    let send = match respond_to.send_response(Response::from_parts(head, ()), end_of_stream) {
        Ok(send) => send,
        Err(e) => return tracing::debug!("responder went away: {e}"),
    };
    if !end_of_stream {
        if let Err(e) = Box::pin(pump_body(body, send)).await {
            tracing::debug!("response body: {e}");
        }
    }
}

/// Phases 4 and 5 on a local reply made from `error`.
fn send_local_reply(
    ctx: &InitiatorShard,
    mut rctx: Box<RequestCtx>,
    error: ProxyError,
    respond_to: &mut h2::server::SendResponse<Bytes>,
) {
    let (mut head, body) = respond(&error, &rctx).into_parts();
    rctx.outcome.failure = Some(error);
    rctx.timings.response_start = Some(Instant::now());
    ctx.pipeline.response_filter(&mut rctx, &mut head);
    let len = body.len() as u64;
    let sent = match respond_to.send_response(Response::from_parts(head, ()), false) {
        // Queued whole on the tunnel: it counts as sent.
        Ok(mut send) => send.send_data(body, true).is_ok(),
        Err(e) => {
            tracing::debug!("responder went away: {e}");
            false
        }
    };
    if sent {
        rctx.outcome.bytes_sent = len;
    }
    finish(&mut rctx, &ctx.pipeline, sent);
}

/// Leaves `id` as the request's only `x-request-id`. Most tunnel requests carry it already,
/// once, and are left alone: `HeaderMap::insert` makes room for a new entry even when it
/// replaces one, and growing a full map rehashes it (1.5k instructions per request when the
/// tunnel request arrived with its map at capacity).
fn carry_request_id(headers: &mut http::HeaderMap, id: &HeaderValue) {
    let mut carried = headers.get_all(&REQUEST_ID_HEADER).iter();
    if carried.next() != Some(id) || carried.next().is_some() {
        headers.insert(&REQUEST_ID_HEADER, id.clone());
    }
}

/// Adapts a tunnel request head for the local hop. HTTP/1.1 gets an origin-form URI with
/// `Host` from `:authority`; HTTP/2 keeps the absolute URI (its `:scheme` and `:authority`).
fn to_local_request(parts: &mut request::Parts, protocol: Protocol) {
    if protocol == Protocol::Http1 {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        // The path as it is (its bytes are shared, not parsed again).
        if let Some(pq) = parts.uri.path_and_query().cloned() {
            let mut origin = uri::Parts::default();
            origin.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(origin) {
                parts.uri = uri;
            }
        }
        parts.version = http::Version::HTTP_11;
    }
    strip_hop_by_hop(&mut parts.headers, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str) -> request::Parts {
        let mut request = Request::get(uri).body(()).unwrap().into_parts().0;
        request.version = http::Version::HTTP_2;
        request
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("x-drop"));
        request
            .headers
            .insert("x-drop", HeaderValue::from_static("1"));
        request
    }

    #[test]
    fn the_local_http1_hop_gets_origin_form_and_host_from_the_authority() {
        let mut parts = head("http://svc.example:8080/a/%2F/b?x=1&y=%20");
        to_local_request(&mut parts, Protocol::Http1);
        assert_eq!(parts.uri, "/a/%2F/b?x=1&y=%20");
        assert_eq!(parts.uri.authority(), None);
        assert_eq!(parts.headers[header::HOST], "svc.example:8080");
        assert_eq!(parts.version, http::Version::HTTP_11);
        assert!(!parts.headers.contains_key("x-drop"), "hop-by-hop kept");
    }

    #[test]
    fn the_request_id_is_carried_once_and_a_full_map_left_alone() {
        let id = HeaderValue::from_static("abc");
        let mut full = http::HeaderMap::new();
        full.insert(&REQUEST_ID_HEADER, id.clone());
        for n in 0.. {
            if full.len() == full.capacity() {
                break;
            }
            full.insert(
                header::HeaderName::from_bytes(format!("x-{n}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let capacity = full.capacity();
        carry_request_id(&mut full, &id);
        assert_eq!(full.capacity(), capacity, "the map grew");
        assert_eq!(full[&REQUEST_ID_HEADER], "abc");

        let mut other = http::HeaderMap::new();
        carry_request_id(&mut other, &id);
        assert_eq!(other[&REQUEST_ID_HEADER], "abc", "absent");
        other.insert(&REQUEST_ID_HEADER, HeaderValue::from_static("zzz"));
        carry_request_id(&mut other, &id);
        assert_eq!(other[&REQUEST_ID_HEADER], "abc", "another id");
        other.append(&REQUEST_ID_HEADER, HeaderValue::from_static("abc"));
        carry_request_id(&mut other, &id);
        let ids: Vec<_> = other.get_all(&REQUEST_ID_HEADER).iter().collect();
        assert_eq!(ids, ["abc"], "twice");
    }

    #[test]
    fn the_local_http2_hop_keeps_the_absolute_uri() {
        let mut parts = head("http://svc.example/p?q");
        to_local_request(&mut parts, Protocol::Http2);
        assert_eq!(parts.uri, "http://svc.example/p?q");
        assert!(!parts.headers.contains_key(header::HOST));
        assert_eq!(parts.version, http::Version::HTTP_2);
        assert!(!parts.headers.contains_key("x-drop"), "hop-by-hop kept");
    }
}
