//! `GET /tunnels[?tenant=ID]`: host ids with their tunnels per shard, from the directory.
//!
//! One line per host: `host total [per shard]`, or `tenant/host …` when tenants are isolated
//! and the host's tenant is not the empty one. `?tenant=ID` (percent-encoded) keeps one
//! tenant's hosts; it needs tenant isolation, since otherwise every tunnel sits in one shared
//! namespace and the directory does not tell tenants apart.

use http::StatusCode;

use crate::responder::registry::Tenancy;
use crate::responder::Responder;

/// The page's status and text.
pub(super) fn page(query: Option<&str>, responder: Option<&Responder>) -> (StatusCode, String) {
    let tenant = match tenant_filter(query) {
        Ok(tenant) => tenant,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason),
    };
    let Some(responder) = responder else {
        return (StatusCode::OK, String::new());
    };
    if tenant.is_some() && responder.tenancy() == Tenancy::Shared {
        return (
            StatusCode::BAD_REQUEST,
            "Tenant isolation is off (responder.egress_listener.tenant): all tunnels share one \
             namespace; GET /tunnels lists them all"
                .into(),
        );
    }
    let mut out = String::new();
    for (namespace, host, per_shard) in responder.directory().snapshot() {
        if tenant.as_deref().is_some_and(|t| t != namespace) {
            continue;
        }
        out.push_str(&line(&namespace, &host, &per_shard));
    }
    (StatusCode::OK, out.trim_end().to_owned())
}

/// One host's line: `tenant/host` when tenants are isolated; while they share one namespace
/// the tenant key is empty and the host stands alone.
fn line(namespace: &str, host: &str, per_shard: &[u32]) -> String {
    let total: u32 = per_shard.iter().sum();
    match namespace.is_empty() {
        true => format!("{host} {total} {per_shard:?}\n"),
        false => format!("{namespace}/{host} {total} {per_shard:?}\n"),
    }
}

/// The `tenant` of the query, decoded; other parameters are refused.
fn tenant_filter(query: Option<&str>) -> Result<Option<String>, String> {
    let mut tenant = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "tenant" {
            return Err(format!(
                "Unknown query parameter '{name}': /tunnels takes tenant=ID"
            ));
        }
        if tenant.is_some() {
            return Err("Give tenant= once".into());
        }
        let decoded = percent_decode(value)
            .ok_or_else(|| "The tenant is not valid percent-encoded UTF-8".to_owned())?;
        tenant = Some(decoded);
    }
    Ok(tenant)
}

/// RFC 3986 percent-decoding (`+` is a `+`: tenant ids may contain it).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_is_read_from_the_query() {
        assert_eq!(tenant_filter(None), Ok(None));
        assert_eq!(tenant_filter(Some("")), Ok(None));
        assert_eq!(tenant_filter(Some("tenant=acme")), Ok(Some("acme".into())));
        assert_eq!(tenant_filter(Some("tenant=")), Ok(Some(String::new())));
        assert_eq!(tenant_filter(Some("tenant")), Ok(Some(String::new())));
        assert_eq!(
            tenant_filter(Some("tenant=a%2Bb+c%25")),
            Ok(Some("a+b+c%".into()))
        );
        for bad in [
            "tenant=a&tenant=b",
            "x=1",
            "tenant=%zz",
            "tenant=%4",
            "tenant=%ff",
        ] {
            assert!(tenant_filter(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_name_the_tenant_when_there_is_one() {
        assert_eq!(line("", "n1", &[1, 0]), "n1 1 [1, 0]\n");
        assert_eq!(line("acme", "n1", &[2, 1]), "acme/n1 3 [2, 1]\n");
    }
}
