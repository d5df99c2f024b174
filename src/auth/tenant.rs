//! The tenant of an egress request (DESIGN §10, ARCHITECTURE.md §6): taken from an
//! authenticated source the operator chooses (`responder.egress_listener.tenant`), never from a
//! header a client can set unless the operator names that header as trusted.
//!
//! - [`TenantSource::Fixed`]: every request on the listener belongs to one tenant.
//! - [`TenantSource::ApiKeys`]: the SHA-256 of one header's value is looked up among the
//!   configured keys in constant time (`tokens::find_hashed`, as for handshake tokens); the
//!   header is removed from the request, so the key never reaches a service.
//! - [`TenantSource::ClientCertificate`]: a format over the verified client certificate, as the
//!   handshake's mTLS binding (`mtls::PeerFormat`); it must yield exactly one valid tenant id.
//! - [`TenantSource::TrustedHeader`]: a header's value, believed as sent. Safe only behind a
//!   proxy that authenticates clients and always sets (or strips) it.
//!
//! Pure, like the rest of `auth`: the configuration builds a source once; the egress pipeline's
//! tenant stage (`pipeline::stages::tenant`) asks it for every request and turns a
//! [`NoTenant`] into a 401. Reasons are short and never contain the credential.

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, HeaderName};

use super::tokens::find_hashed;
use super::PeerFormat;
use crate::protocol::validate_id;
use crate::tls::PeerCertificate;

/// The header `api_keys` reads when `header:` is not given.
pub const DEFAULT_API_KEY_HEADER: &str = "x-rtun-api-key";

/// Where each egress request's tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// Every request belongs to this tenant.
    Fixed(String),
    /// The tenant of the API key in a header.
    ApiKeys(ApiKeys),
    /// The one tenant id `tenant_format` yields over the client certificate.
    ClientCertificate { tenant_format: PeerFormat },
    /// The value of a header set by a proxy the operator trusts. Trusts the client otherwise.
    TrustedHeader(HeaderName),
}

/// `api_keys:` with the header they are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    pub keys: Vec<ApiKey>,
    pub header: HeaderName,
}

/// One API key: the SHA-256 of the key and the tenant it authenticates.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub sha256: [u8; 32],
    pub tenant: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `TokenGrant`: enough of the hash to tell entries apart, not enough to attack it.
        let short: String = self.sha256[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        f.debug_struct("ApiKey")
            .field("sha256", &format_args!("{short}…"))
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Why a request has no tenant (401); the text is the public reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoTenant(pub Cow<'static, str>);

impl NoTenant {
    fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        NoTenant(reason.into())
    }
}

impl TenantSource {
    /// The request's tenant. `headers` are the request's as the client sent them; the API key
    /// header is removed from them whatever the outcome. `cert` is the verified client
    /// certificate of the connection, if any.
    pub fn tenant_of(
        &self,
        headers: &mut HeaderMap,
        cert: Option<&PeerCertificate>,
    ) -> Result<String, NoTenant> {
        match self {
            TenantSource::Fixed(tenant) => Ok(tenant.clone()),
            TenantSource::ApiKeys(api) => api.tenant_of(headers),
            TenantSource::ClientCertificate { tenant_format } => {
                certificate_tenant(tenant_format, cert)
            }
            TenantSource::TrustedHeader(name) => trusted_header_tenant(name, headers),
        }
    }

    /// The `tenant isolation:` line of `rtun validate` (never a key or a hash).
    pub fn describe(&self) -> String {
        match self {
            TenantSource::Fixed(tenant) => format!("fixed tenant {tenant:?}"),
            TenantSource::ApiKeys(api) => {
                format!("API keys ({}) in header {}", api.keys.len(), api.header)
            }
            TenantSource::ClientCertificate { tenant_format } => format!(
                "client certificate (tenant_format {:?})",
                tenant_format.as_str()
            ),
            TenantSource::TrustedHeader(name) => format!(
                "trusted header {name} (WARNING: believed as sent; safe only behind a proxy that \
                 sets it for every request)"
            ),
        }
    }
}

impl ApiKeys {
    fn tenant_of(&self, headers: &mut HeaderMap) -> Result<String, NoTenant> {
        let count = headers.get_all(&self.header).iter().count();
        // Removed before anything else: the key never travels on, whether it is good or not.
        let value = headers.remove(&self.header);
        let value = match (count, value) {
            (1, Some(value)) => value,
            (0, _) | (_, None) => {
                return Err(NoTenant(
                    format!("Missing API key: send the `{}` header", self.header).into(),
                ))
            }
            _ => {
                return Err(NoTenant(
                    format!("More than one `{}` header", self.header).into(),
                ))
            }
        };
        let entries = self.keys.iter().map(|k| (&k.sha256, &k.tenant));
        find_hashed(entries, value.as_bytes())
            .cloned()
            .ok_or_else(|| NoTenant::new("Unknown API key"))
    }
}

fn certificate_tenant(
    format: &PeerFormat,
    cert: Option<&PeerCertificate>,
) -> Result<String, NoTenant> {
    let Some(cert) = cert else {
        return Err(NoTenant::new("A client certificate is required"));
    };
    // A value that is not a tenant id (empty, a `:`) names no tenant; several would be a
    // guess between tenants, which is refused.
    let mut tenants = format
        .values(cert)
        .into_iter()
        .filter(|v| validate_id(v, false).is_ok());
    match (tenants.next(), tenants.next()) {
        (Some(tenant), None) => Ok(tenant),
        (None, _) => Err(NoTenant::new("The client certificate names no tenant")),
        (Some(_), Some(_)) => Err(NoTenant::new(
            "The client certificate names more than one tenant",
        )),
    }
}

fn trusted_header_tenant(name: &HeaderName, headers: &HeaderMap) -> Result<String, NoTenant> {
    let mut values = headers.get_all(name).iter();
    let value = match (values.next(), values.next()) {
        (Some(value), None) => value,
        (None, _) => return Err(NoTenant(format!("Missing `{name}` header").into())),
        (Some(_), Some(_)) => {
            return Err(NoTenant(format!("More than one `{name}` header").into()))
        }
    };
    // The empty tenant is reachable only by an explicit `fixed: ""` or API key: a proxy that
    // forgets to fill the header must not land in it.
    match value.to_str() {
        Ok(tenant) if validate_id(tenant, false).is_ok() => Ok(tenant.to_owned()),
        _ => Err(NoTenant(format!("Invalid `{name}` header").into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::sha256;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn api_keys() -> TenantSource {
        TenantSource::ApiKeys(ApiKeys {
            keys: vec![
                ApiKey {
                    sha256: sha256(b"key-a"),
                    tenant: "a".into(),
                },
                ApiKey {
                    sha256: sha256(b"key-b"),
                    tenant: "b".into(),
                },
            ],
            header: HeaderName::from_static(DEFAULT_API_KEY_HEADER),
        })
    }

    fn cert(uri: &[&str], dns: &[&str]) -> PeerCertificate {
        PeerCertificate {
            uri_sans: uri.iter().map(|s| (*s).to_owned()).collect(),
            dns_sans: dns.iter().map(|s| (*s).to_owned()).collect(),
            subject: "CN=edge-1,O=acme".into(),
            fingerprint_sha256: "cd".repeat(32),
        }
    }

    fn format(text: &str) -> TenantSource {
        TenantSource::ClientCertificate {
            tenant_format: PeerFormat::parse(text).expect("format"),
        }
    }

    fn reason(r: Result<String, NoTenant>) -> String {
        r.expect_err("no tenant").0.into_owned()
    }

    #[test]
    fn fixed_is_the_listeners_tenant_whatever_the_request_says() {
        let source = TenantSource::Fixed("acme".into());
        let mut h = headers(&[("x-tenant-id", "globex"), ("x-rtun-api-key", "key-b")]);
        assert_eq!(source.tenant_of(&mut h, None), Ok("acme".into()));
        assert_eq!(h.len(), 2, "nothing is removed");
    }

    #[test]
    fn api_keys_find_the_tenant_and_remove_the_header() {
        let source = api_keys();
        for (key, tenant) in [("key-a", "a"), ("key-b", "b")] {
            let mut h = headers(&[("x-rtun-api-key", key), ("x-node-id", "n1")]);
            assert_eq!(source.tenant_of(&mut h, None), Ok(tenant.into()));
            assert!(h.get("x-rtun-api-key").is_none(), "the key is removed");
            assert_eq!(h.get("x-node-id").map(|v| v.as_bytes()), Some(&b"n1"[..]));
        }
        let mut h = headers(&[]);
        assert_eq!(
            reason(source.tenant_of(&mut h, None)),
            "Missing API key: send the `x-rtun-api-key` header"
        );
        let hash_of_a: String = sha256(b"key-a")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for bad in ["key-c", "KEY-A", "", "key-a ", &hash_of_a] {
            let mut h = headers(&[("x-rtun-api-key", bad)]);
            assert_eq!(reason(source.tenant_of(&mut h, None)), "Unknown API key");
            assert!(h.is_empty(), "an unknown key is removed too");
        }
        let mut h = headers(&[("x-rtun-api-key", "key-a"), ("x-rtun-api-key", "key-b")]);
        assert_eq!(
            reason(source.tenant_of(&mut h, None)),
            "More than one `x-rtun-api-key` header"
        );
        assert!(h.is_empty(), "every copy is removed");
    }

    #[test]
    fn api_key_reasons_never_show_the_key() {
        let source = api_keys();
        let mut h = headers(&[("x-rtun-api-key", "sekrit-value")]);
        let text = reason(source.tenant_of(&mut h, None));
        assert!(!text.contains("sekrit"), "{text}");
        let dump = format!("{source:?}");
        let hash_of_a: String = sha256(b"key-a")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(dump.contains(&format!("{}…", &hash_of_a[..8])), "{dump}");
        assert!(!dump.contains(&hash_of_a), "{dump}");
    }

    #[test]
    fn client_certificate_needs_exactly_one_tenant() {
        let by_dns = format("%DOWNSTREAM_PEER_DNS_SAN%");
        let one = cert(&[], &["acme"]);
        assert_eq!(
            by_dns.tenant_of(&mut headers(&[]), Some(&one)),
            Ok("acme".into())
        );
        assert_eq!(
            reason(by_dns.tenant_of(&mut headers(&[]), None)),
            "A client certificate is required"
        );
        let two = cert(&[], &["acme", "globex"]);
        assert_eq!(
            reason(by_dns.tenant_of(&mut headers(&[]), Some(&two))),
            "The client certificate names more than one tenant"
        );
        let none = cert(&["spiffe://acme.test/edge"], &[]);
        assert_eq!(
            reason(by_dns.tenant_of(&mut headers(&[]), Some(&none))),
            "The client certificate names no tenant"
        );
        // A URI SAN always has a `:` (its scheme), which no tenant id may contain.
        let by_uri = format("%DOWNSTREAM_PEER_URI_SAN%");
        assert_eq!(
            reason(by_uri.tenant_of(&mut headers(&[]), Some(&none))),
            "The client certificate names no tenant"
        );
        // Values that are not tenant ids do not count against the one that is.
        let mixed = cert(&["spiffe://acme.test/edge", "acme"], &[]);
        assert_eq!(
            by_uri.tenant_of(&mut headers(&[]), Some(&mixed)),
            Ok("acme".into())
        );
        let literal = format("tenant-%DOWNSTREAM_PEER_FINGERPRINT_256%");
        assert_eq!(
            literal.tenant_of(&mut headers(&[]), Some(&one)),
            Ok(format!("tenant-{}", "cd".repeat(32)))
        );
        // A client's headers mean nothing to this source.
        let mut h = headers(&[("x-tenant-id", "globex")]);
        assert_eq!(by_dns.tenant_of(&mut h, Some(&one)), Ok("acme".into()));
    }

    #[test]
    fn trusted_header_is_believed_only_when_it_is_one_valid_id() {
        let source = TenantSource::TrustedHeader(HeaderName::from_static("x-tenant-id"));
        let mut h = headers(&[("x-tenant-id", "acme")]);
        assert_eq!(source.tenant_of(&mut h, None), Ok("acme".into()));
        assert_eq!(h.len(), 1, "the trusted header travels on");
        assert_eq!(
            reason(source.tenant_of(&mut headers(&[]), None)),
            "Missing `x-tenant-id` header"
        );
        for bad in ["", "a:b", "a b"] {
            assert_eq!(
                reason(source.tenant_of(&mut headers(&[("x-tenant-id", bad)]), None)),
                "Invalid `x-tenant-id` header",
                "{bad:?}"
            );
        }
        let mut two = headers(&[("x-tenant-id", "a"), ("x-tenant-id", "b")]);
        assert_eq!(
            reason(source.tenant_of(&mut two, None)),
            "More than one `x-tenant-id` header"
        );
    }

    #[test]
    fn descriptions_name_the_source_not_the_secret() {
        assert_eq!(
            TenantSource::Fixed("acme".into()).describe(),
            "fixed tenant \"acme\""
        );
        assert_eq!(
            api_keys().describe(),
            "API keys (2) in header x-rtun-api-key"
        );
        assert!(format("%DOWNSTREAM_PEER_DNS_SAN%")
            .describe()
            .contains("%DOWNSTREAM_PEER_DNS_SAN%"));
        assert!(TenantSource::TrustedHeader(HeaderName::from_static("x-t"))
            .describe()
            .contains("WARNING"));
    }
}
