//! Proxy header rules (RFC 9110 §7.6): hop-by-hop fields stop at each hop, and the egress
//! records who asked in `x-forwarded-for` / `x-forwarded-proto` and itself in `via`.
//!
//! rtun is the edge by default (docs/DESIGN.md §10, "Proxy headers"): what a client says about
//! earlier hops is not believed. Unless the operator declares trusted proxies in front
//! (`egress_listener.xff_num_trusted_hops`, as Envoy's `xff_num_trusted_hops`), the client's
//! forwarding headers are dropped and `x-forwarded-for` / `x-forwarded-proto` describe the
//! connection alone. And a `Connection` header cannot nominate for removal the fields that
//! identify, authenticate or route a request ([`is_protected`]).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1 plus the
/// de-facto `proxy-connection` and `keep-alive`).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const VIA_VALUE: &str = "1.1 rtun";

/// Fields a `Connection` header may not remove, wherever it comes from: `host`,
/// `authorization`, `x-request-id`, `forwarded` and every `x-forwarded-*`. Routing headers
/// (those `host_id_format` reads) are passed to [`strip_hop_by_hop`] by the egress.
pub fn is_protected(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::AUTHORIZATION
        || name == header::FORWARDED
        || name.as_str() == "x-request-id"
        || name.as_str().starts_with("x-forwarded-")
}

/// True for the fields that describe one connection ([`strip_hop_by_hop`] removes them).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// What a client may say about hops before it, dropped at the edge: `forwarded`, `x-real-ip`
/// and every `x-forwarded-*`.
fn is_client_forwarding(name: &HeaderName) -> bool {
    name == header::FORWARDED
        || name.as_str() == "x-real-ip"
        || name.as_str().starts_with("x-forwarded-")
}

/// Removes hop-by-hop fields, including any named by `Connection` unless it is protected
/// ([`is_protected`] or in `also_protected`). A `te: trailers` request keeps that value: h2
/// permits it and gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, also_protected: &[HeaderName]) {
    // Most requests and responses carry none: one pass over the fields (standard names
    // compare as a tag) instead of hashing every hop-by-hop name for a `remove`.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !is_protected(name) && !also_protected.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    let keeps_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keeps_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Records the client in `x-forwarded-for` and `x-forwarded-proto`, and this hop in `via`.
///
/// With `trusted_hops` 0 (rtun is the edge) the client's forwarding headers are dropped first:
/// `x-forwarded-for` becomes the client's address and `x-forwarded-proto` the connection's
/// `proto`. With trusted hops in front, the list they wrote is kept and the client address is
/// appended; their `x-forwarded-proto` is kept, or set from `proto` when absent.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: Option<SocketAddr>,
    proto: &'static str,
    trusted_hops: u32,
) {
    let earlier = if trusted_hops == 0 {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_client_forwarding(name))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
        None
    } else {
        let list: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let list = (!list.is_empty()).then(|| list.join(", "));
        headers.remove(&X_FORWARDED_FOR);
        list
    };
    let ip = client.map(|c| ip_text(c.ip()));
    let value = match (earlier, ip) {
        (Some(list), Some(ip)) => Some(format!("{list}, {ip}")),
        (Some(list), None) => Some(list),
        (None, ip) => ip,
    };
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    // At the edge the client's was dropped above: no lookup needed (each hashes the name).
    if trusted_hops == 0 || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    headers.append(header::VIA, HeaderValue::from_static(VIA_VALUE));
}

/// `ip` as text for `x-forwarded-for`. IPv4 is written here: `Display` goes through the
/// formatting machinery, about 1.4k instructions on every request (bench/instructions.sh).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Option<SocketAddr> {
        Some("127.0.0.7:5000".parse().unwrap())
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn ip_text_is_display() {
        let ips = [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.199.200",
            "::1",
            "2001:db8::7",
            "::ffff:10.0.0.1",
        ];
        for ip in ips {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-node-id", HeaderValue::from_static("n1"));
        strip_hop_by_hop(&mut h, &[]);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-node-id"));
    }

    #[test]
    fn connection_cannot_nominate_protected_fields() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("host, Authorization, x-request-id, forwarded"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-forwarded-for, X-Forwarded-Proto, x-forwarded-host"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-node-id, x-other"),
        );
        let protected = [
            "host",
            "authorization",
            "x-request-id",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-node-id",
        ];
        for name in protected.iter().chain(&["x-other"]) {
            h.insert(*name, HeaderValue::from_static("v"));
        }
        strip_hop_by_hop(&mut h, &[HeaderName::from_static("x-node-id")]);
        for name in protected {
            assert!(h.contains_key(name), "{name} was stripped");
        }
        assert!(
            !h.contains_key("x-other"),
            "an ordinary nominee is stripped"
        );
        assert!(!h.contains_key(header::CONNECTION));

        // Without the routing header in the extra set, it is an ordinary nominee.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-node-id"));
        h.insert("x-node-id", HeaderValue::from_static("n1"));
        strip_hop_by_hop(&mut h, &[]);
        assert!(!h.contains_key("x-node-id"));
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h, &[]);
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
    }

    #[test]
    fn at_the_edge_client_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-node-id", HeaderValue::from_static("n1"));
        add_forwarding(&mut h, client(), "http", 0);
        assert_eq!(values(&h, "x-forwarded-for"), ["127.0.0.7"]);
        assert_eq!(values(&h, "x-forwarded-proto"), ["http"]);
        for gone in ["x-forwarded-host", "x-real-ip", "forwarded"] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert_eq!(values(&h, "via"), ["1.1 rtun"]);
        assert_eq!(values(&h, "x-node-id"), ["n1"]);
    }

    #[test]
    fn behind_trusted_hops_the_list_is_kept_and_appended() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("app.example"));
        add_forwarding(&mut h, client(), "http", 1);
        assert_eq!(
            values(&h, "x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.7"]
        );
        assert_eq!(values(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&h, "x-forwarded-host"), ["app.example"]);

        // Nothing from the trusted hop: the connection's facts.
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, client(), "http", 2);
        assert_eq!(values(&h, "x-forwarded-for"), ["127.0.0.7"]);
        assert_eq!(values(&h, "x-forwarded-proto"), ["http"]);
    }
}
