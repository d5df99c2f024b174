//! Decides which tenant an egress request belongs to (ARCHITECTURE.md §6), from the source the
//! operator chose in `egress_listener.tenant` (`crate::auth::tenant`), and records it in
//! `RequestCtx::tenant`. The driver looks hosts up under that tenant only, so a host of another
//! tenant misses exactly as an unknown host does.
//!
//! Phase 1 (`request_filter`): no tenant is a 401 ([`ProxyError::Unauthenticated`]) before
//! anything is chosen for the request. The API key header is removed here, so it never travels
//! up a tunnel.

use std::sync::Arc;

use http::request;

use crate::auth::TenantSource;
use crate::pipeline::{ProxyError, RequestCtx, Stage};

pub(in crate::pipeline) struct Tenant {
    pub(in crate::pipeline) source: Arc<TenantSource>,
}

impl Stage for Tenant {
    fn request_filter(
        &self,
        ctx: &mut RequestCtx,
        request: &mut request::Parts,
    ) -> Result<(), ProxyError> {
        let cert = ctx.peer_certificate.as_deref();
        let tenant = self
            .source
            .tenant_of(&mut request.headers, cert)
            .map_err(|denied| ProxyError::Unauthenticated { reason: denied.0 })?;
        ctx.tenant = Some(tenant);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tenant::{ApiKey, ApiKeys};
    use crate::auth::tokens::sha256;
    use crate::pipeline::Role;
    use crate::tls::PeerCertificate;

    fn run(
        source: TenantSource,
        headers: &[(&str, &str)],
        cert: Option<PeerCertificate>,
    ) -> (Result<(), ProxyError>, RequestCtx, request::Parts) {
        let mut builder = http::Request::get("/headers");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (mut parts, ()) = builder.body(()).expect("request").into_parts();
        let mut ctx = RequestCtx::new(Role::Egress, 0, None, &parts, false);
        ctx.peer_certificate = cert.map(Arc::new);
        let stage = Tenant {
            source: Arc::new(source),
        };
        let result = stage.request_filter(&mut ctx, &mut parts);
        (result, ctx, parts)
    }

    fn keys() -> TenantSource {
        TenantSource::ApiKeys(ApiKeys {
            keys: vec![ApiKey {
                sha256: sha256(b"key-a"),
                tenant: "a".into(),
            }],
            header: http::HeaderName::from_static("x-rtun-api-key"),
        })
    }

    #[test]
    fn sets_the_tenant_and_drops_the_key() {
        let (result, ctx, parts) = run(keys(), &[("x-rtun-api-key", "key-a")], None);
        assert!(result.is_ok());
        assert_eq!(ctx.tenant.as_deref(), Some("a"));
        assert!(parts.headers.get("x-rtun-api-key").is_none());
    }

    #[test]
    fn no_tenant_is_a_401_with_a_short_reason() {
        let (result, ctx, parts) = run(keys(), &[("x-rtun-api-key", "nope")], None);
        let error = result.expect_err("401");
        assert_eq!(error.status(), 401);
        assert_eq!(error.label(), "unauthenticated");
        assert_eq!(error.public_message(), "Unauthenticated: Unknown API key");
        assert!(ctx.tenant.is_none());
        assert!(parts.headers.get("x-rtun-api-key").is_none());
    }

    #[test]
    fn reads_the_certificate_from_the_context() {
        let source = TenantSource::ClientCertificate {
            tenant_format: crate::auth::PeerFormat::parse("%DOWNSTREAM_PEER_DNS_SAN%")
                .expect("format"),
        };
        let cert = PeerCertificate {
            uri_sans: vec![],
            dns_sans: vec!["acme".into()],
            subject: "CN=x".into(),
            fingerprint_sha256: "00".repeat(32),
        };
        let (result, ctx, _) = run(source.clone(), &[], Some(cert));
        assert!(result.is_ok());
        assert_eq!(ctx.tenant.as_deref(), Some("acme"));
        // Today the egress has no TLS, so the context holds no certificate: 401.
        let (result, ..) = run(source, &[("x-tenant-id", "acme")], None);
        assert_eq!(
            result.expect_err("401").public_message(),
            "Unauthenticated: A client certificate is required"
        );
    }
}
