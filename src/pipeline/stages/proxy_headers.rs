//! Records the client and this hop on requests leaving the egress (`x-forwarded-for`,
//! `x-forwarded-proto`, `via`; RFC 9110 §7.6.3). The client's own forwarding headers are
//! dropped unless `xff_num_trusted_hops` says proxies the operator trusts stand in front
//! (`crate::http::proxy_headers::add_forwarding`).

use http::request;
use http::uri::Scheme;

use crate::http::proxy_headers;
use crate::pipeline::{RequestCtx, Stage};

pub(in crate::pipeline) struct ProxyHeaders {
    /// `egress_listener.xff_num_trusted_hops`.
    pub(in crate::pipeline) trusted_hops: u32,
}

impl Stage for ProxyHeaders {
    fn upstream_request_filter(&self, ctx: &RequestCtx, request: &mut request::Parts) {
        let proto = match ctx.scheme == Scheme::HTTPS {
            true => "https",
            false => "http",
        };
        proxy_headers::add_forwarding(&mut request.headers, ctx.peer, proto, self.trusted_hops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{ConnectionInfo, Role};

    fn forwarded_proto(connection: Option<ConnectionInfo>) -> String {
        let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        if let Some(c) = connection {
            parts.extensions.insert(c);
        }
        let ctx = RequestCtx::new(Role::Egress, 0, None, &parts, false);
        ProxyHeaders { trusted_hops: 0 }.upstream_request_filter(&ctx, &mut parts);
        parts.headers["x-forwarded-proto"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn forwarded_proto_is_the_connection_scheme() {
        assert_eq!(forwarded_proto(None), "http");
        let tls = ConnectionInfo {
            scheme: Scheme::HTTPS,
            peer_certificate: None,
        };
        assert_eq!(forwarded_proto(Some(tls)), "https");
    }
}
