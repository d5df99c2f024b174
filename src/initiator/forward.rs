//! Forwarding one tunnel stream to a local service: route by path prefix, rewrite for the
//! local hop, and stream the response back on the tunnel under flow control.

use std::rc::Rc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use tracing::Instrument;

use super::InitiatorShard;
use crate::config::Protocol;
use crate::http::body::{pump_body, RecvBody};
use crate::http::proxy_headers::strip_hop_by_hop;
use crate::http::route::match_route;
use crate::stats::inc;

/// Handles one stream the responder opened.
pub async fn handle(
    ctx: Rc<InitiatorShard>,
    req: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) {
    let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), stream = ?respond.stream_id());
    forward(ctx, req, respond).instrument(span).await
}

async fn forward(
    ctx: Rc<InitiatorShard>,
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    inc(&ctx.stats().initiator_requests);
    let route = match_route(&ctx.cfg().routes, req.uri().path());
    let Some((route, cluster)) =
        route.and_then(|r| Some((r, ctx.clusters.get(&r.cluster)?.clone())))
    else {
        inc(&ctx.stats().initiator_404_no_route);
        let msg = format!("No local route for path '{}'", req.uri().path());
        return local_reply(&mut respond, StatusCode::NOT_FOUND, &msg);
    };
    let req = to_local_request(req, cluster.protocol());
    let sent = cluster.send(req);
    let result = match route.timeout {
        None => Ok(sent.await),
        Some(t) => monoio::time::timeout(t, sent).await.map_err(|_| t),
    };
    let resp = match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            inc(&ctx.stats().initiator_502_local_error);
            let msg = format!("Local cluster '{}' failed: {e}", cluster.name);
            return local_reply(&mut respond, e.status(), &msg);
        }
        Err(t) => {
            inc(&ctx.stats().initiator_504_timeout);
            let msg = format!(
                "Local cluster '{}' did not answer within {t:?}",
                cluster.name
            );
            return local_reply(&mut respond, StatusCode::GATEWAY_TIMEOUT, &msg);
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = http::Version::HTTP_2;
    let end_of_stream = body.is_end_stream();
    let send = match respond.send_response(Response::from_parts(parts, ()), end_of_stream) {
        Ok(send) => send,
        Err(e) => return tracing::debug!("responder went away: {e}"),
    };
    if !end_of_stream {
        if let Err(e) = pump_body(body, send).await {
            tracing::debug!("response body: {e}");
        }
    }
}

/// Rewrites a tunnel request for the local hop. HTTP/1.1 gets an origin-form URI with `Host`
/// from `:authority`; HTTP/2 keeps the absolute URI (its `:scheme` and `:authority`).
fn to_local_request(req: Request<h2::RecvStream>, protocol: Protocol) -> Request<RecvBody> {
    let (mut parts, recv) = req.into_parts();
    if protocol == Protocol::Http1 {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        if let Some(pq) = parts.uri.path_and_query() {
            if let Ok(uri) = pq.as_str().parse() {
                parts.uri = uri;
            }
        }
        parts.version = http::Version::HTTP_11;
    }
    strip_hop_by_hop(&mut parts.headers);
    Request::from_parts(parts, RecvBody::new(recv, ()))
}

fn local_reply(respond: &mut h2::server::SendResponse<Bytes>, status: StatusCode, message: &str) {
    tracing::debug!(%status, "{message}");
    let (parts, body) = crate::http::local_reply::text_bytes(status, message).into_parts();
    match respond.send_response(Response::from_parts(parts, ()), false) {
        Ok(mut send) => {
            let _ = send.send_data(body, true);
        }
        Err(e) => tracing::debug!("responder went away: {e}"),
    }
}
