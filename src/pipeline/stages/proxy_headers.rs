//! Records the client and this hop on requests leaving the egress (`x-forwarded-for`,
//! `x-forwarded-proto`, `via`; RFC 9110 §7.6.3).

use http::request;

use crate::http::proxy_headers;
use crate::pipeline::{RequestCtx, Stage};

pub(in crate::pipeline) struct ProxyHeaders;

impl Stage for ProxyHeaders {
    fn upstream_request_filter(&self, ctx: &RequestCtx, request: &mut request::Parts) {
        proxy_headers::add_forwarding(&mut request.headers, ctx.peer, "http");
    }
}
