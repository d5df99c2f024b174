//! Records the client and this hop on requests leaving the egress (`x-forwarded-for`,
//! `x-forwarded-proto`, `via`; RFC 9110 §7.6.3). The client's own forwarding headers are
//! dropped unless `xff_num_trusted_hops` says proxies the operator trusts stand in front
//! (`crate::http::proxy_headers::add_forwarding`).

use http::request;

use crate::http::proxy_headers;
use crate::pipeline::{RequestCtx, Stage};

pub(in crate::pipeline) struct ProxyHeaders {
    /// `egress_listener.xff_num_trusted_hops`.
    pub(in crate::pipeline) trusted_hops: u32,
}

impl Stage for ProxyHeaders {
    fn upstream_request_filter(&self, ctx: &RequestCtx, request: &mut request::Parts) {
        proxy_headers::add_forwarding(&mut request.headers, ctx.peer, "http", self.trusted_hops);
    }
}
