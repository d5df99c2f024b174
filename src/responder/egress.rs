//! The egress listener: where clients send requests meant for services behind initiators.
//!
//! HTTP/1.1 (keep-alive, content-length and chunked bodies, by hyper) and h2c with prior
//! knowledge share the port: the first bytes decide. With `tls:` the listener speaks HTTPS
//! instead (`tls`): the TLS handshake comes first, and ALPN (`h2`, `http/1.1`) picks the
//! protocol. Each request's target is checked (`Host`) and its path normalized
//! (`crate::http::target`), then it is routed by path prefix (the route's `prefix_rewrite`
//! applied), given a host id by
//! `host_id_format`, and sent through the reverse cluster, within the route and stream idle
//! timeouts (`crate::pipeline::deadline`). A route timeout on a tunnel counts against its
//! health (`registry`, "Health"). Connections are bounded by `watch`: the first request, each
//! HTTP/1.1 request head, and idleness.

mod handover;
pub mod tls;
pub mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use std::time::Instant;

use bytes::Bytes;
use http::{header, request, uri, HeaderName, Request, Response, Uri};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use monoio::net::{TcpListener, TcpStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use super::reverse_cluster::{self, PickedTunnel, TunnelBody};
use super::settings::Settings;
use super::ResponderShard;
use crate::http::host_id::first_host_id;
use crate::http::io::{sniff_h2, HyperIo};
use crate::http::proxy_headers;
use crate::http::route::{match_route, rewrite_prefix};
use crate::http::rt::{ShardExecutor, ShardTimer};
use crate::http::target;
use crate::metrics::inc;
use crate::net::completion::CompletionStream;
use crate::pipeline::logged::{Counted, InFlight};
use crate::pipeline::{
    respond, ConnectionInfo, Deadlines, Logged, ProxyError, RequestCtx, RequestId, Role,
    REQUEST_ID_HEADER,
};
use crate::shard::accept_loop;
pub use handover::{adopt, HandedConnection};
use watch::{ConnWatch, Expiry};

/// What the egress listener sends back: a local reply or a tunnel's response body, with the
/// logging phase run when it is done.
pub type EgressBody = Logged<Either<Full<Bytes>, TunnelBody>>;

/// Accepts egress connections until shutdown; beyond `max_connections` open ones a new
/// connection is closed at once (`egress_connections_refused`). With `connection_balance:
/// exact`, one this shard should not serve goes to the shard with the fewest (`handover`).
pub async fn run(ctx: Rc<ResponderShard>, listener: TcpListener) {
    let shutdown = ctx.shared.shutdown().clone();
    accept_loop(listener, &shutdown, "egress", |stream, peer| {
        let Some(open) = ctx.admit(
            |r| &r.egress_connections,
            |s| &s.egress_connections_refused,
            "egress listener: max_connections reached",
        ) else {
            return;
        };
        let balance = ctx.settings().cfg.egress_listener.connection_balance;
        let placed = ctx.shared.egress_load.place(ctx.shard, balance);
        if placed.shard() != ctx.shard {
            return handover::hand_over(&ctx, stream, peer, open, placed);
        }
        let connection = serve_connection(ctx.clone(), stream, peer);
        ctx.tasks.spawn(async move {
            connection.await;
            drop((open, placed));
        })
    })
    .await
}

async fn serve_connection(ctx: Rc<ResponderShard>, stream: TcpStream, peer: SocketAddr) {
    let accepted_at = Instant::now();
    let io = CompletionStream::new(stream);
    if let Some(reloadable) = ctx.shared.egress_tls() {
        let server = reloadable.current();
        if let Some(accepted) = tls::accept(&ctx, &server, io, peer).await {
            let connection = Some(accepted.connection);
            let (stream, h2) = (accepted.stream, accepted.h2);
            serve_http(ctx, stream, h2, connection, peer, accepted_at).await;
        }
        return;
    }
    let header_timeout = ctx.settings().cfg.egress_listener.header_read_timeout;
    let (is_h2, io) = match monoio::time::timeout(header_timeout, sniff_h2(io)).await {
        Ok(Some(sniffed)) => sniffed,
        Ok(None) => return, // closed before sending anything
        Err(_) => return inc(&ctx.stats().egress_header_timeout),
    };
    serve_http(ctx, io, is_h2, None, peer, accepted_at).await;
}

/// Serves HTTP/2 (`is_h2`) or HTTP/1.1 on a client connection until it ends, its timeouts
/// (`watch`) close it, or the shard drains. `connection` (TLS connections) goes into each
/// request's extensions for its context.
async fn serve_http<I>(
    ctx: Rc<ResponderShard>,
    io: I,
    is_h2: bool,
    connection: Option<ConnectionInfo>,
    peer: SocketAddr,
    accepted_at: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    // The connection's own bounds come from the settings at its start; each request reads
    // the settings in force when it arrives (`handle`).
    let settings = ctx.settings();
    let cfg = &settings.cfg.egress_listener;
    let watch = ConnWatch::new(accepted_at, !is_h2, cfg);
    let io = HyperIo(watch.io(io));
    let service = {
        let (ctx, watch) = (ctx.clone(), watch.clone());
        service_fn(move |mut req: Request<Incoming>| {
            let ctx = ctx.clone();
            let in_flight = watch.request();
            if let Some(connection) = &connection {
                req.extensions_mut().insert(connection.clone());
            }
            // The request's future is large and hyper moves the service future several times
            // (into its stream task, into the executor): boxed, only a pointer moves.
            async move {
                let response = Box::pin(handle(&ctx, req, peer)).await;
                Ok::<_, Infallible>(response.map(|body| in_flight.attach(body)))
            }
        })
    };
    let max_headers = cfg.max_request_headers_kb as usize * 1024;
    let shutdown = ctx.shared.shutdown().clone();
    let drain = settings.drain_timeout;
    if is_h2 {
        let conn = hyper::server::conn::http2::Builder::new(ShardExecutor)
            .timer(ShardTimer)
            .max_header_list_size(max_headers as u32)
            .initial_stream_window_size(crate::tunnel::STREAM_WINDOW)
            .initial_connection_window_size(crate::tunnel::CONNECTION_WINDOW)
            .max_concurrent_streams(1024)
            .keep_alive_interval(crate::config::enabled(cfg.http2_keepalive_interval))
            .keep_alive_timeout(cfg.http2_keepalive_timeout)
            .serve_connection(io, service);
        serve_until_shutdown(&ctx, conn, &watch, shutdown, drain, peer).await;
    } else {
        // The watch bounds request heads; hyper's own timer would also cut idle keep-alive
        // connections at that bound.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(ShardTimer)
            .header_read_timeout(None)
            .max_buf_size(max_headers.max(8192))
            .keep_alive(true)
            .serve_connection(io, service);
        serve_until_shutdown(&ctx, conn, &watch, shutdown, drain, peer).await;
    }
}

/// hyper's two connection types, for graceful shutdown.
trait GracefulConnection: std::future::Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self)
    }
}

impl<I, S, B, E> GracefulConnection for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self)
    }
}

/// How long an HTTP/2 connection closed by its watch (idle, or no first request) gets to
/// take its GOAWAY: nothing is in flight, so a round trip.
const EXPIRED_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a connection stopped being served normally.
enum Stop {
    Shutdown,
    Expired(Expiry),
}

/// Serves until the connection ends; on shutdown, or when the watch finds it idle or without
/// a first request, asks it to finish gracefully (GOAWAY, or `connection: close` after the
/// in-flight request) and gives it `drain` to do so. An HTTP/1.1 connection the watch closes
/// has no request in flight: it is dropped at once.
async fn serve_until_shutdown<C: GracefulConnection>(
    ctx: &ResponderShard,
    conn: C,
    watch: &ConnWatch,
    shutdown: crate::shard::shutdown::ShutdownSignal,
    drain: Duration,
    peer: SocketAddr,
) {
    let mut conn = pin!(conn);
    let mut signal = pin!(crate::shard::rare::Rare::new(shutdown.wait()));
    let result = std::future::poll_fn(|cx| {
        if let Poll::Ready(res) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(res));
        }
        if let Poll::Ready(expiry) = watch.poll_expired(cx) {
            return Poll::Ready(Err(Stop::Expired(expiry)));
        }
        signal.as_mut().poll(cx).map(|()| Err(Stop::Shutdown))
    })
    .await;
    let result = match result {
        Ok(res) => res,
        Err(stop) => {
            if let Stop::Expired(expiry) = &stop {
                let expiry = *expiry;
                inc(match expiry {
                    Expiry::FirstRequest | Expiry::Head => &ctx.stats().egress_header_timeout,
                    Expiry::Idle => &ctx.stats().egress_idle_timeout,
                });
                tracing::debug!(%peer, reason = expiry.label(), "closing egress connection");
                if expiry == Expiry::Head || !watch.is_h2() {
                    return;
                }
            }
            // With nothing in flight (the watch's closes), the GOAWAY needs only a round trip.
            let grace = match stop {
                Stop::Shutdown => drain,
                Stop::Expired(_) => drain.min(EXPIRED_CLOSE_GRACE),
            };
            conn.as_mut().graceful_shutdown();
            match monoio::time::timeout(grace, conn).await {
                Ok(res) => res,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            inc(&ctx.stats().egress_header_timeout);
        }
        tracing::debug!(%peer, "egress connection: {e}");
    }
}

/// The egress driver: one client request through the pipeline's phases.
async fn handle(
    ctx: &Rc<ResponderShard>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<EgressBody> {
    let (mut parts, body) = request.into_parts();
    // The request id is generated here unless a proxy the operator trusts sets it.
    // This request's settings: routes, timeouts and stages stay those of its start.
    let settings = ctx.settings();
    let trust_request_id = settings.cfg.egress_listener.trust_request_id;
    let mut rctx = Box::new(RequestCtx::new(
        Role::Egress,
        ctx.shard,
        Some(peer),
        &parts,
        trust_request_id,
    ));
    let span = tracing::debug_span!("request", id = %rctx.request_id, method = %parts.method, path = %parts.uri.path());
    let proxied = {
        // hyper drops this future when the client resets the stream or closes the connection:
        // the guard then logs and counts the cancellation; the tunnel stream, its handles
        // dropped, is reset (RST_STREAM CANCEL, `reverse_cluster`).
        let mut in_flight = InFlight::new(&mut rctx, &settings.pipeline);
        let proxied = upstream(ctx, &settings, &mut in_flight, &mut parts, body)
            .instrument(span)
            .await;
        in_flight.disarm();
        proxied
    };
    let (mut head, body) = match proxied {
        Ok(response) => {
            let (head, body) = response.into_parts();
            (head, Either::Right(body))
        }
        Err(error) => {
            let (head, body) = respond(&error, &rctx).into_parts();
            rctx.outcome.failure = Some(error);
            (head, Either::Left(Full::new(body)))
        }
    };
    rctx.timings.response_start = Some(Instant::now());
    let pipeline = settings.pipeline.clone();
    pipeline.response_filter(&mut rctx, &mut head);
    let body = Logged::new(body, rctx, pipeline).with_length(&head.headers);
    Response::from_parts(head, body)
}

/// Phases 1–3 and the trip through a tunnel, up to the response head.
async fn upstream(
    ctx: &Rc<ResponderShard>,
    settings: &Settings,
    rctx: &mut RequestCtx,
    parts: &mut request::Parts,
    body: Incoming,
) -> Result<Response<TunnelBody>, ProxyError> {
    settings.pipeline.request_filter(rctx, parts)?;
    let cfg = &settings.cfg.egress_listener;
    // Phase 2 starts from the one form of the target: routes see, and the tunnel gets, the
    // normalized path (ARCHITECTURE.md §4).
    target::check_and_normalize(parts, cfg.path_with_escaped_slashes_action).map_err(|e| {
        ProxyError::BadRequest {
            reason: e.to_string(),
        }
    })?;
    let (index, route) =
        match_route(&cfg.routes, parts.uri.path()).ok_or_else(|| ProxyError::NoRoute {
            path: parts.uri.path().to_owned(),
        })?;
    rctx.route = Some(index);
    rctx.route_rewrite = settings.route_rewrites.get(index);
    if let Some(to) = &route.rewrite.prefix_rewrite {
        parts.uri =
            rewrite_prefix(&parts.uri, &route.prefix, to).map_err(|e| ProxyError::BadRequest {
                reason: e.to_string(),
            })?;
    }
    let host_id =
        first_host_id(&cfg.host_id_format, &parts.headers, rctx.peer).ok_or_else(|| {
            ProxyError::NoHostId {
                expected: settings.expected_host_headers.clone(),
            }
        })?;
    rctx.host_id = Some(host_id);
    to_tunnel_request(parts, &rctx.request_id, &settings.routing_headers);
    settings.pipeline.upstream_request_filter(rctx, parts);
    let deadlines = Deadlines {
        route: route.effective_timeout(cfg.request_timeout),
        idle: crate::config::enabled(cfg.stream_idle_timeout),
    };
    let clock = rctx
        .outcome
        .stream
        .start(deadlines.idle, body.is_end_stream());
    let tally = rctx.outcome.request_body.for_body(body.is_end_stream());
    let body = Counted::new(body, tally, clock.clone());
    let request = Request::from_parts(std::mem::replace(parts, empty_parts()), body);
    rctx.timings.upstream_start = Some(Instant::now());
    // The tenant stage set `rctx.tenant` in phase 1 when tenants are isolated; a host of
    // another tenant then misses below exactly as an unknown host does (ARCHITECTURE.md §6).
    let host_id = rctx.host_id.as_deref().unwrap_or_default();
    let tenancy = ctx.shared.tenancy();
    let Some(tenant) = tenancy.request_tenant(rctx.tenant.as_deref()) else {
        // Isolated, yet no tenant: fail closed, with the unknown host's answer.
        return Err(ProxyError::NoTunnel {
            host_id: host_id.to_owned(),
        });
    };
    let picked = PickedTunnel::default();
    let pending_timeout = cfg.pending_timeout;
    // Boxed: the deadline wrapper would otherwise move the whole trip's future.
    let proxied = Box::pin(reverse_cluster::proxy(
        ctx,
        tenant,
        host_id,
        request,
        &picked,
        pending_timeout,
    ));
    let proxied = deadlines.bound(&clock, proxied).await;
    rctx.tunnel_id = picked.get().map(|tunnel| tunnel.id);
    // A tunnel stream reset because the client's body was malformed or cut short is the
    // client's failure (400), not the tunnel's (502).
    let (response, tunnel) = proxied.map_err(|e| {
        if let Some(failure) = rctx.outcome.client_body_failure() {
            return failure;
        }
        if matches!(e, ProxyError::Timeout(_)) {
            let threshold = settings.cfg.tunnel_listener.unhealthy_after_timeouts;
            blame_timeout(ctx, rctx, &picked, threshold);
        }
        e
    })?;
    rctx.tunnel_id = Some(tunnel);
    Ok(response)
}

/// A route timeout after a tunnel stream opened counts against that tunnel's health.
fn blame_timeout(ctx: &ResponderShard, rctx: &RequestCtx, picked: &PickedTunnel, threshold: u32) {
    let Some(tunnel) = picked.get() else {
        return; // no stream opened: nothing to blame on a tunnel
    };
    if tunnel.health.record_timeout(threshold) {
        inc(&ctx.stats().tunnels_marked_unhealthy);
        tracing::warn!(request_id = %rctx.request_id, tunnel = tunnel.id, host_id = rctx.host_id.as_deref().unwrap_or("-"), "tunnel marked unhealthy after {threshold} route timeouts in a row: requests prefer other tunnels");
    }
}

/// An empty request head, left behind when the real one moves into the upstream request.
fn empty_parts() -> request::Parts {
    Request::new(()).into_parts().0
}

/// Adapts a client request head for an h2 stream: absolute URI (`:scheme`, `:authority` from
/// `Host`), hop-by-hop fields removed (RFC 9110 §7.6.1; h2 forbids them) except those a
/// `Connection` header may not nominate (`routing`: the host id headers), the request id set.
fn to_tunnel_request(parts: &mut request::Parts, request_id: &RequestId, routing: &[HeaderName]) {
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| uri::Authority::try_from(h.as_bytes()).ok())
        })
        .unwrap_or_else(|| uri::Authority::from_static("rtun"));
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    if let Ok(uri) = Uri::builder()
        .scheme(uri::Scheme::HTTP)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
    {
        parts.uri = uri;
    }
    parts.version = http::Version::HTTP_2;
    proxy_headers::strip_hop_by_hop(&mut parts.headers, routing);
    parts.headers.remove(header::HOST);
    parts
        .headers
        .insert(&REQUEST_ID_HEADER, request_id.header_value().clone());
}
