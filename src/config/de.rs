//! Deserializers that validate values as they are read.
//!
//! serde_yaml attaches a line and column only to errors raised *inside* a visitor (while the
//! value's YAML event is being consumed), not to errors raised after a nested `deserialize`
//! returned. So every check here runs inside a visitor: [`with_str`] for scalars, small
//! visitors for lists and maps. Cross-reference checks (`xref`) run inside the same visitors.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration;
use super::rc::parse_rc_address;
use super::schema::{
    AdminConfig, ClientTlsConfig, ClusterConfig, EgressRoute, InitiatorRoute, Shards, TunnelEntry,
    DEFAULT_INITIAL_RECONNECT_BACKOFF,
};
use super::xref::{self, Listener};
use crate::http::host_id::HostIdFormat;
use crate::protocol::ids::validate_id;

/// Most shards accepted; more is certainly a typo.
const MAX_SHARDS: u64 = 4096;

/// Reads a scalar as text and converts it with `parse`; its error becomes the message.
pub(crate) fn with_str<'de, D, T, F>(d: D, expecting: &'static str, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct StrVisitor<F> {
        expecting: &'static str,
        parse: F,
    }
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(StrVisitor { expecting, parse })
}

/// An unsigned integer within `min..=max`.
fn ranged<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64) -> Result<u64, D::Error> {
    struct RangeVisitor {
        min: u64,
        max: u64,
    }
    impl Visitor<'_> for RangeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an integer from {} to {}", self.min, self.max)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if (self.min..=self.max).contains(&v) {
                Ok(v)
            } else {
                Err(E::custom(format!(
                    "{v} is out of range: expected an integer from {} to {}",
                    self.min, self.max
                )))
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "{v} is negative: expected an integer from {} to {}",
                    self.min, self.max
                ))),
            }
        }
    }
    d.deserialize_any(RangeVisitor { min, max })
}

/// A `u32` of at least 1.
pub(crate) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, 1, u32::MAX.into()).map(|v| v as u32)
}

/// `max_request_headers_kb`: 1..=8192 (Envoy's bounds).
pub(crate) fn headers_kb<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, 1, 8192).map(|v| v as u32)
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ShardsVisitor;
        impl Visitor<'_> for ShardsVisitor {
            type Value = Shards;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`auto` or a positive number of shards")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Shards, E> {
                match usize::try_from(v).ok().and_then(NonZeroUsize::new) {
                    Some(n) if v <= MAX_SHARDS => Ok(Shards::Count(n)),
                    _ => Err(E::custom(format!(
                        "shards must be `auto` or a number from 1 to {MAX_SHARDS}, got {v}"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Shards, E> {
                Err(E::custom(format!(
                    "shards must be `auto` or a number from 1 to {MAX_SHARDS}, got {v}"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Shards, E> {
                match v.parse::<u64>() {
                    _ if v == "auto" => Ok(Shards::Auto),
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "shards must be `auto` or a number from 1 to {MAX_SHARDS}, got `{v}`"
                    ))),
                }
            }
        }
        d.deserialize_any(ShardsVisitor)
    }
}

/// `admin:` — present but empty (`admin:` or `admin: {}`) means enabled with defaults.
pub(crate) fn admin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdminConfig>, D::Error> {
    Option::<AdminConfig>::deserialize(d).map(|admin| Some(admin.unwrap_or_default()))
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "`{s}` is not a listen address: expected IP:PORT such as 0.0.0.0:9000 or [::]:9000 \
             (hostnames are not allowed here)"
        )
    })
}

const LISTEN: &str = "a listen address IP:PORT";

/// `admin.listen`.
pub(crate) fn admin_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    with_str(d, LISTEN, parse_listen)
}

/// `responder.tunnel_listener.listen`: must not collide with the admin listener.
pub(crate) fn tunnel_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    with_str(d, LISTEN, |s| {
        let addr = parse_listen(s)?;
        xref::check(|cfg| xref::listen_conflict(cfg, addr, Listener::Tunnel))?;
        Ok(addr)
    })
}

/// `responder.egress_listener.listen`: must not collide with admin or tunnel listeners.
pub(crate) fn egress_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    with_str(d, LISTEN, |s| {
        let addr = parse_listen(s)?;
        xref::check(|cfg| xref::listen_conflict(cfg, addr, Listener::Egress))?;
        Ok(addr)
    })
}

fn id_field<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    allow_empty: bool,
) -> Result<String, D::Error> {
    with_str(d, "an id", |s| {
        validate_id(s, allow_empty)
            .map(|()| s.to_owned())
            .map_err(|e| format!("{what} `{s}` {e}"))
    })
}

/// `node.id`.
pub(crate) fn node_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_field(d, "node id", false)
}

/// `node.cluster`.
pub(crate) fn cluster_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_field(d, "cluster id", false)
}

/// `node.tenant` (may be empty).
pub(crate) fn tenant_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_field(d, "tenant id", true)
}

/// Checks a `host:port` endpoint; IPv6 hosts must be bracketed.
pub(crate) fn validate_endpoint(s: &str) -> Result<(), String> {
    let example = "write host:port, for example 127.0.0.1:8080 or [::1]:8080";
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("endpoint `{s}` needs a port: {example}"))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("endpoint `{s}`: `{v6}` is not an IPv6 address"))?;
        (v6, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("endpoint `{s}` needs a port: {example}"))?;
        if host.contains(':') {
            return Err(format!(
                "endpoint `{s}`: IPv6 addresses need brackets, for example [::1]:8080"
            ));
        }
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !host_ok {
            return Err(format!(
                "endpoint `{s}`: `{host}` is not a host name or IP address"
            ));
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "endpoint `{s}`: port `{port}` of `{host}` is not a number from 1 to 65535"
        )),
    }
}

/// A list with at least one element; `what` names it in the error.
struct NonEmpty<T> {
    what: &'static str,
    marker: PhantomData<T>,
}

impl<T> NonEmpty<T> {
    fn new(what: &'static str) -> Self {
        NonEmpty {
            what,
            marker: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for NonEmpty<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {}", self.what)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        if items.is_empty() {
            return Err(de::Error::custom(format!(
                "the list is empty: give at least one of {}",
                self.what
            )));
        }
        Ok(items)
    }
}

struct Endpoint(String);

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_str(d, "an endpoint host:port", |s| {
            validate_endpoint(s).map(|()| Endpoint(s.to_owned()))
        })
    }
}

/// `clusters.*.endpoints`: at least one `host:port`.
pub(crate) fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(NonEmpty::<Endpoint>::new("endpoints host:port"))
        .map(|v| v.into_iter().map(|e| e.0).collect())
}

/// `initiator.tunnels`: at least one.
pub(crate) fn tunnels<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TunnelEntry>, D::Error> {
    d.deserialize_seq(NonEmpty::new(
        "tunnels (`rc://node:cluster:tenant@remote_cluster:count` or `{ cluster: NAME, connections: N }`)",
    ))
}

/// `initiator.routes`: at least one.
pub(crate) fn initiator_routes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<InitiatorRoute>, D::Error> {
    d.deserialize_seq(NonEmpty::new("routes `{ prefix: /, cluster: NAME }`"))
}

/// `responder.egress_listener.routes`: at least one.
pub(crate) fn egress_routes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EgressRoute>, D::Error> {
    d.deserialize_seq(NonEmpty::new("routes `{ prefix: / }`"))
}

fn check_path(s: &str, what: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{what} `{s}` must start with `/`"));
    }
    if let Some(b) = s.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(format!(
            "{what} `{s}` contains byte 0x{b:02x}; only visible ASCII is allowed (percent-encode the rest)"
        ));
    }
    Ok(s.to_owned())
}

/// A route `prefix`.
pub(crate) fn path_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a path prefix starting with `/`", |s| {
        check_path(s, "prefix")
    })
}

/// A handshake `request_path`.
pub(crate) fn request_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a path starting with `/`", |s| {
        let path = check_path(s, "request_path")?;
        if path.contains(['?', '#']) {
            return Err(format!(
                "request_path `{s}` must be a plain path without `?` or `#`"
            ));
        }
        Ok(path)
    })
}

/// A reference to a cluster in `clusters:` (initiator routes, map-form tunnels).
pub(crate) fn cluster_ref<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a cluster name", |s| {
        xref::check(|cfg| xref::unknown_cluster(cfg, s))?;
        Ok(s.to_owned())
    })
}

/// `initiator.initial_reconnect_backoff`: positive, at most `max_reconnect_backoff`.
pub(crate) fn initial_reconnect_backoff<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration::checked(d, false, |initial| {
        xref::check(|cfg| {
            let max = cfg.initiator.as_ref()?.max_reconnect_backoff;
            (initial > max).then(|| {
                format!(
                    "initial_reconnect_backoff {} is longer than max_reconnect_backoff {}",
                    duration::format_duration(initial),
                    duration::format_duration(max)
                )
            })
        })
    })
    .map(Some)
}

/// `initiator.max_reconnect_backoff`: positive, and not below the default initial backoff
/// when `initial_reconnect_backoff` is not written (when it is, that key reports conflicts).
pub(crate) fn max_reconnect_backoff<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration::checked(d, false, |max| {
        xref::check(|cfg| {
            let initial_written = cfg.initiator.as_ref()?.initial_reconnect_backoff.is_some();
            (!initial_written && max < DEFAULT_INITIAL_RECONNECT_BACKOFF).then(|| {
                format!(
                    "max_reconnect_backoff {} is shorter than the default initial_reconnect_backoff {}; \
                     set initial_reconnect_backoff too",
                    duration::format_duration(max),
                    duration::format_duration(DEFAULT_INITIAL_RECONNECT_BACKOFF)
                )
            })
        })
    })
}

/// A cluster name key: an id (no `:`) without `@`, unique.
struct ClusterName<'a>(&'a BTreeMap<String, ClusterConfig>);

impl<'de> DeserializeSeed<'de> for ClusterName<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        with_str(d, "a cluster name", |s| {
            validate_id(s, false).map_err(|e| format!("cluster name `{s}` {e}"))?;
            if s.contains('@') {
                return Err(format!(
                    "cluster name `{s}` contains `@`, which rc:// addresses cannot refer to"
                ));
            }
            if self.0.contains_key(s) {
                return Err(format!("cluster `{s}` is defined twice"));
            }
            Ok(s.to_owned())
        })
    }
}

/// `clusters:` — a mapping of name to cluster; empty or absent is no clusters.
pub(crate) fn clusters<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ClusterConfig>, D::Error> {
    struct ClustersVisitor;
    impl<'de> Visitor<'de> for ClustersVisitor {
        type Value = BTreeMap<String, ClusterConfig>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of cluster names to clusters")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut clusters = BTreeMap::new();
            while let Some(name) = map.next_key_seed(ClusterName(&clusters))? {
                let cluster: ClusterConfig = map.next_value()?;
                clusters.insert(name, cluster);
            }
            Ok(clusters)
        }
    }
    d.deserialize_any(ClustersVisitor)
}

/// Headers the handshake writes itself; configuring them would break it.
fn reserved_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "upgrade"
            | "te"
            | "keep-alive"
            | "proxy-connection"
    ) || name.starts_with("x-envoy-reverse-tunnel-")
}

struct HeaderKey<'a>(&'a [(String, String)]);

impl<'de> DeserializeSeed<'de> for HeaderKey<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        with_str(d, "a header name", |s| {
            let name = http::HeaderName::from_bytes(s.as_bytes())
                .map_err(|_| format!("`{s}` is not a valid header name"))?;
            let name = name.as_str();
            if reserved_header(name) {
                return Err(format!(
                    "header `{s}` is written by the handshake itself and cannot be configured"
                ));
            }
            if self.0.iter().any(|(n, _)| n == name) {
                return Err(format!("header `{s}` is given twice"));
            }
            Ok(name.to_owned())
        })
    }
}

struct HeaderValueText(String);

impl<'de> Deserialize<'de> for HeaderValueText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_str(d, "a header value", |s| {
            http::HeaderValue::from_str(s)
                .map(|_| HeaderValueText(s.to_owned()))
                .map_err(|_| {
                    format!("header value `{s}` contains characters not allowed in HTTP headers")
                })
        })
    }
}

/// `initiator.handshake_headers`: a mapping of extra handshake headers, kept in file order.
pub(crate) fn handshake_headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, String)>, D::Error> {
    struct HeadersVisitor;
    impl<'de> Visitor<'de> for HeadersVisitor {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of header names to values")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut headers = Vec::new();
            while let Some(name) = map.next_key_seed(HeaderKey(&headers))? {
                let value: HeaderValueText = map.next_value()?;
                headers.push((name, value.0));
            }
            Ok(headers)
        }
    }
    d.deserialize_any(HeadersVisitor)
}

struct Format(HostIdFormat);

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_str(d, "a host_id format string", |s| {
            HostIdFormat::parse(s)
                .map(Format)
                .map_err(|e| e.to_string())
        })
    }
}

/// `host_id_format`: one format string or a non-empty list of them.
pub(crate) fn host_id_formats<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<HostIdFormat>, D::Error> {
    struct FormatsVisitor;
    impl<'de> Visitor<'de> for FormatsVisitor {
        type Value = Vec<HostIdFormat>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a host_id format string or a list of them")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            HostIdFormat::parse(v).map(|f| vec![f]).map_err(E::custom)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            NonEmpty::<Format>::new("host_id formats such as \"%REQ(x-node-id)%\"")
                .visit_seq(seq)
                .map(|v| v.into_iter().map(|f| f.0).collect())
        }
    }
    d.deserialize_any(FormatsVisitor)
}

struct Pin(String);

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_str(d, "a base64 SHA-256 SPKI pin", |s| {
            let b = s.as_bytes();
            let ok = b.len() == 44
                && b[43] == b'='
                && b[..43]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/'));
            if ok {
                Ok(Pin(s.to_owned()))
            } else {
                Err(format!(
                    "spki pin `{s}` is not a base64 SHA-256 digest (44 characters ending in `=`)"
                ))
            }
        })
    }
}

/// `tls.spki_pins`.
pub(crate) fn spki_pins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<Pin>::deserialize(d).map(|v| v.into_iter().map(|p| p.0).collect())
}

impl<'de> Deserialize<'de> for TunnelEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The map form: identity from top-level `node`.
        #[derive(Deserialize)]
        #[serde(
            deny_unknown_fields,
            expecting = "a tunnel mapping `{ cluster: NAME, connections: N }`"
        )]
        struct FromNode {
            #[serde(deserialize_with = "cluster_ref")]
            cluster: String,
            #[serde(default = "one")]
            connections: u32,
        }
        fn one() -> u32 {
            1
        }

        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = TunnelEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an `rc://node:cluster:tenant@remote_cluster:count` string or a mapping \
                     `{ cluster: NAME, connections: N }`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TunnelEntry, E> {
                let spec = parse_rc_address(v).map_err(E::custom)?;
                xref::check(|cfg| xref::unknown_cluster(cfg, &spec.remote_cluster))
                    .map_err(|e| E::custom(format!("in `{v}`: {e}")))?;
                Ok(TunnelEntry::Rc(spec))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TunnelEntry, A::Error> {
                let entry = FromNode::deserialize(de::value::MapAccessDeserializer::new(map))?;
                xref::check(|cfg| {
                    cfg.node.is_none().then(|| {
                        format!(
                            "tunnel `{{ cluster: {} }}` takes its identity from the top-level \
                             `node:`, which is missing; add `node: {{ id: ..., cluster: ... }}` \
                             or write the tunnel as rc://node:cluster:tenant@{}:{}",
                            entry.cluster, entry.cluster, entry.connections
                        )
                    })
                })
                .map_err(de::Error::custom)?;
                Ok(TunnelEntry::FromNode {
                    remote_cluster: entry.cluster,
                    connections: entry.connections,
                })
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

/// Deserializes a mapping as `T`, then runs `check` on it inside the visitor, so a failed check
/// is reported at the mapping's line and column. `null` is `None`.
fn checked_map<'de, D, T, F>(d: D, expecting: &'static str, check: F) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: FnOnce(&T) -> Result<(), String>,
{
    struct MapVisitor<T, F> {
        expecting: &'static str,
        check: F,
        marker: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, F: FnOnce(&T) -> Result<(), String>> Visitor<'de>
        for MapVisitor<T, F>
    {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let value = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.check)(&value).map_err(de::Error::custom)?;
            Ok(Some(value))
        }
    }
    d.deserialize_any(MapVisitor {
        expecting,
        check,
        marker: PhantomData,
    })
}

/// `clusters.*.tls`: `cert` and `key` together; `sni` not empty.
pub(crate) fn client_tls<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ClientTlsConfig>, D::Error> {
    checked_map(d, "a client tls mapping", |tls: &ClientTlsConfig| {
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(
                "`cert` and `key` must be given together (a client certificate needs its key)"
                    .to_owned(),
            );
        }
        if tls.sni.as_deref().is_some_and(|s| s.is_empty()) {
            return Err(
                "`sni` must not be empty; leave it out to use the endpoint host".to_owned(),
            );
        }
        Ok(())
    })
}
