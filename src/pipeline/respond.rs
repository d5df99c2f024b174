//! The one place a [`ProxyError`] becomes a response (as linkerd2-proxy's `errors/respond`).
//!
//! A local reply is `text/plain` with the failure's public message, marked
//! `x-rtun-local-reply: 1`, and carries the request id so a client can quote it; the full
//! error, with its internal details, is logged under the same id.

use bytes::Bytes;
use http::Response;

use super::{ProxyError, RequestCtx, REQUEST_ID_HEADER};
use crate::http::local_reply;

/// The local reply for `error`, logged once with the request id.
pub fn respond(error: &ProxyError, ctx: &RequestCtx) -> Response<Bytes> {
    let status = error.status();
    // Failures the client caused are routine; failures of tunnels and services are not.
    if status.is_server_error() {
        tracing::warn!(request_id = %ctx.request_id, role = ctx.role.label(), reason = error.label(), %status, "{error}");
    } else {
        tracing::debug!(request_id = %ctx.request_id, role = ctx.role.label(), reason = error.label(), %status, "{error}");
    }
    let mut response = local_reply::text_bytes(status, error.public_message());
    response
        .headers_mut()
        .insert(&REQUEST_ID_HEADER, ctx.request_id.header_value().clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Role;

    #[test]
    fn local_reply_has_status_reason_and_request_id_but_no_details() {
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let ctx = RequestCtx::new(Role::Initiator, 0, None, &parts, false);
        let error = ProxyError::LocalUnreachable {
            cluster: "app".into(),
            detail: "connect to 127.0.0.1:8080: Connection refused".into(),
        };
        let resp = respond(&error, &ctx);
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.headers().get(&REQUEST_ID_HEADER),
            Some(ctx.request_id.header_value())
        );
        assert_eq!(
            resp.headers().get(local_reply::LOCAL_REPLY_HEADER).unwrap(),
            "1"
        );
        let body = String::from_utf8_lossy(resp.body());
        assert!(
            body.contains("unreachable") && !body.contains("127.0.0.1"),
            "{body}"
        );
    }
}
