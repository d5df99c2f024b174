//! `responder.egress_listener.tenant:` where each egress request's tenant comes from (README,
//! "Tenants"; `crate::auth::tenant`). Exactly one source:
//!
//! ```yaml
//! tenant: { fixed: acme }
//! tenant: { api_keys: [{ sha256: HEX, tenant: acme }], header: x-rtun-api-key }
//! tenant: { client_certificate: { tenant_format: "%DOWNSTREAM_PEER_DNS_SAN%" } }
//! tenant: { trusted_header: x-tenant-id }   # trusts whoever sets the header
//! ```
//!
//! Absent: tenants are not isolated. Any source isolates them, for the whole responder.

use std::collections::HashSet;

use http::HeaderName;
use serde::{Deserialize, Deserializer};

use super::auth::tenant;
use super::de::{checked_map, with_str, NonEmpty};
use crate::auth::tenant::{ApiKey, ApiKeys, TenantSource, DEFAULT_API_KEY_HEADER};
use crate::auth::{parse_sha256_hex, PeerFormat};

/// Headers a tenant source may not read: the request's framing and target, and what rtun sets
/// itself.
const RESERVED: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
];

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a tenant mapping with one of `fixed:`, `api_keys:`, `client_certificate:` or \
                 `trusted_header:`"
)]
struct RawTenant {
    #[serde(default, deserialize_with = "fixed")]
    fixed: Option<String>,
    #[serde(default, deserialize_with = "api_keys")]
    api_keys: Option<Vec<ApiKey>>,
    #[serde(default, deserialize_with = "header_name")]
    header: Option<HeaderName>,
    #[serde(default)]
    client_certificate: Option<RawClientCertificate>,
    #[serde(default, deserialize_with = "header_name")]
    trusted_header: Option<HeaderName>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a client_certificate mapping with `tenant_format:`"
)]
struct RawClientCertificate {
    #[serde(deserialize_with = "tenant_format")]
    tenant_format: PeerFormat,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an API key `{ sha256: HEX, tenant: ID }`"
)]
struct RawApiKey {
    #[serde(deserialize_with = "key_sha256")]
    sha256: [u8; 32],
    #[serde(deserialize_with = "tenant")]
    tenant: String,
}

/// `egress_listener.tenant`: `None` when absent or null.
pub(crate) fn tenant_source<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<TenantSource>, D::Error> {
    let raw = checked_map(d, "a tenant mapping", |raw: &RawTenant| {
        let given = [
            raw.fixed.is_some(),
            raw.api_keys.is_some(),
            raw.client_certificate.is_some(),
            raw.trusted_header.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(
                "give exactly one of `fixed:`, `api_keys:`, `client_certificate:` or \
                        `trusted_header:`"
                    .into(),
            );
        }
        if raw.header.is_some() && raw.api_keys.is_none() {
            return Err("`header:` names the API key header: it goes with `api_keys:`".into());
        }
        let mut seen = HashSet::new();
        for (i, key) in raw.api_keys.iter().flatten().enumerate() {
            if !seen.insert(key.sha256) {
                return Err(format!(
                    "api_keys entry #{} repeats the sha256 of an earlier key: each key must \
                     have one tenant",
                    i + 1
                ));
            }
        }
        Ok(())
    })?;
    Ok(raw.map(|raw| {
        if let Some(keys) = raw.api_keys {
            let header = raw
                .header
                .unwrap_or_else(|| HeaderName::from_static(DEFAULT_API_KEY_HEADER));
            return TenantSource::ApiKeys(ApiKeys { keys, header });
        }
        if let Some(cert) = raw.client_certificate {
            return TenantSource::ClientCertificate {
                tenant_format: cert.tenant_format,
            };
        }
        match (raw.trusted_header, raw.fixed) {
            (Some(name), _) => TenantSource::TrustedHeader(name),
            // The check above leaves `fixed` as the only source here.
            (None, fixed) => TenantSource::Fixed(fixed.unwrap_or_default()),
        }
    }))
}

fn fixed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    tenant(d).map(Some)
}

fn api_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<ApiKey>>, D::Error> {
    let raw: Vec<RawApiKey> = d.deserialize_seq(NonEmpty::new("API keys `{ sha256, tenant }`"))?;
    Ok(Some(
        raw.into_iter()
            .map(|k| ApiKey {
                sha256: k.sha256,
                tenant: k.tenant,
            })
            .collect(),
    ))
}

fn key_sha256<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    with_str(d, "the API key's SHA-256 in hex", |s| {
        parse_sha256_hex(s).map_err(|e| e.replace("of the token", "of the API key"))
    })
}

fn tenant_format<'de, D: Deserializer<'de>>(d: D) -> Result<PeerFormat, D::Error> {
    with_str(d, "a format such as \"%DOWNSTREAM_PEER_DNS_SAN%\"", |s| {
        PeerFormat::parse(s).map_err(|e| format!("tenant_format `{s}`: {e}"))
    })
}

/// A header name: lowercase is how it is written in every other place; not a reserved one.
fn header_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderName>, D::Error> {
    with_str(d, "a header name such as x-tenant-id", |s| {
        let name = HeaderName::from_bytes(s.as_bytes())
            .map_err(|_| format!("`{s}` is not a valid header name"))?;
        if RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "`{s}` cannot carry a tenant or an API key: rtun reads or sets it itself"
            ));
        }
        Ok(Some(name))
    })
}
