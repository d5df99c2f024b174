//! The egress listener: where clients send requests meant for services behind initiators.
//!
//! HTTP/1.1 (keep-alive, content-length and chunked bodies, by hyper) and h2c with prior
//! knowledge share the port: the first bytes decide. Each request is routed by path prefix,
//! given a host id by `host_id_format`, and sent through the reverse cluster.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use http::{header, uri, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;

use monoio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::reverse_cluster::{self, reply, EgressBody};
use super::ResponderShard;
use crate::http::host_id::{expected_headers, first_host_id};
use crate::http::io::{sniff_h2, HyperIo};
use crate::http::proxy_headers;
use crate::http::route::match_route;
use crate::http::rt::{ShardExecutor, ShardTimer};
use crate::shard::accept_loop;
use crate::stats::inc;

/// Accepts egress connections until shutdown.
pub async fn run(ctx: Rc<ResponderShard>, listener: TcpListener) {
    let shutdown = ctx.shared.shutdown.clone();
    accept_loop(listener, &shutdown, "egress", |stream, peer| {
        ctx.tasks.spawn(serve_connection(ctx.clone(), stream, peer))
    })
    .await
}

async fn serve_connection(ctx: Rc<ResponderShard>, stream: TcpStream, peer: SocketAddr) {
    let io = match stream.try_into_poll_io() {
        Ok(io) => io,
        Err((e, _)) => {
            tracing::warn!(%peer, "poll io: {e}");
            return;
        }
    };
    let header_timeout = ctx.shared.cfg().egress_listener.header_read_timeout;
    let (is_h2, io) = match monoio::time::timeout(header_timeout, sniff_h2(io)).await {
        Ok(Some(sniffed)) => sniffed,
        Ok(None) => return, // closed before sending anything
        Err(_) => return inc(&ctx.stats().egress_header_timeout),
    };
    let io = HyperIo(io);
    let service = {
        let ctx = ctx.clone();
        service_fn(move |req: Request<Incoming>| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(handle(&ctx, req, peer).await) }
        })
    };
    let max_headers = ctx.shared.cfg().egress_listener.max_request_headers_kb as usize * 1024;
    let shutdown = ctx.shared.shutdown.clone();
    let drain = ctx.shared.config.drain_timeout;
    if is_h2 {
        let conn = hyper::server::conn::http2::Builder::new(ShardExecutor)
            .timer(ShardTimer)
            .max_header_list_size(max_headers as u32)
            .initial_stream_window_size(super::tunnel::STREAM_WINDOW)
            .initial_connection_window_size(super::tunnel::CONNECTION_WINDOW)
            .max_concurrent_streams(1024)
            .serve_connection(io, service);
        serve_until_shutdown(&ctx, conn, shutdown, drain, peer).await;
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(ShardTimer)
            .header_read_timeout(header_timeout)
            .max_buf_size(max_headers.max(8192))
            .keep_alive(true)
            .serve_connection(io, service);
        serve_until_shutdown(&ctx, conn, shutdown, drain, peer).await;
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

/// Serves until the connection ends; on shutdown asks it to finish gracefully (GOAWAY or
/// `connection: close` after the in-flight request) and gives it `drain` to do so.
async fn serve_until_shutdown<C: GracefulConnection>(
    ctx: &ResponderShard,
    conn: C,
    shutdown: crate::shard::shutdown::ShutdownSignal,
    drain: Duration,
    peer: SocketAddr,
) {
    let mut conn = pin!(conn);
    let mut signal = pin!(shutdown.wait());
    let result = std::future::poll_fn(|cx| {
        if let Poll::Ready(res) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(res));
        }
        signal.as_mut().poll(cx).map(|()| None)
    })
    .await;
    let result = match result {
        Some(res) => res,
        None => {
            conn.as_mut().graceful_shutdown();
            match monoio::time::timeout(drain, conn).await {
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

async fn handle(
    ctx: &Rc<ResponderShard>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<EgressBody> {
    inc(&ctx.stats().egress_requests);
    let cfg = &ctx.shared.cfg().egress_listener;
    let Some(route) = match_route(&cfg.routes, req.uri().path()) else {
        inc(&ctx.stats().egress_404_no_route);
        return reply(
            StatusCode::NOT_FOUND,
            format!("No route for path '{}'", req.uri().path()),
        );
    };
    let Some(host_id) = first_host_id(&cfg.host_id_format, req.headers(), Some(peer)) else {
        inc(&ctx.stats().egress_400_no_host_id);
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "No host id in the request: expected one of the headers {}",
                expected_headers(&cfg.host_id_format).join(", ")
            ),
        );
    };
    let span = tracing::debug_span!("request", host_id = %host_id, method = %req.method(), path = %req.uri().path());
    let req = to_tunnel_request(req, peer);
    let timeout = route.timeout.or(cfg.request_timeout);
    let proxied = reverse_cluster::proxy(ctx, host_id, req).instrument(span);
    match timeout {
        None => proxied.await,
        Some(t) => match monoio::time::timeout(t, proxied).await {
            Ok(resp) => resp,
            Err(_) => {
                inc(&ctx.stats().egress_504_timeout);
                reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("No response within {t:?}"),
                )
            }
        },
    }
}

/// Rewrites a client request for an h2 stream: absolute URI (`:scheme`, `:authority` from
/// `Host`), proxy headers per RFC 9110 §7.6.1.
fn to_tunnel_request(req: Request<Incoming>, peer: SocketAddr) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
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
    proxy_headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    proxy_headers::add_forwarding(&mut parts.headers, Some(peer), "http");
    Request::from_parts(parts, body)
}
