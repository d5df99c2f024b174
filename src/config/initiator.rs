//! `initiator:`: the tunnels to keep open, the routes to local clusters, redial backoff and the
//! handshake (README, "Configuration reference").

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::auth::TokenSource;
use super::de::{
    at_least_one, default_request_path, path_prefix, request_path, with_str, NonEmpty,
};
use super::duration::{self, secs};
use super::node::NodeIdentity;
use super::rc::{parse_rc_address, TunnelSpec};
use super::route::{self, HeaderToAdd, RouteRewrite};
use super::xref;
use crate::http::route::Prefixed;
use crate::protocol::HandshakeForm;

/// The default first redial delay of an initiator.
pub const DEFAULT_INITIAL_RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// The initiator role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// Tunnels to keep open.
    pub tunnels: Vec<TunnelSpec>,
    /// Path-prefix routes to local clusters, tried in order (first match wins).
    pub routes: Vec<InitiatorRoute>,
    /// Route timeout of routes that set none: from the end of the request to the local
    /// service's response head, else 504 (default 15s as Envoy; `Duration::ZERO`: off).
    pub request_timeout: Duration,
    /// A request whose body bytes stop moving, in both directions, for this long is ended:
    /// 408 before the response head, a reset after it (default 5m; `Duration::ZERO`: off).
    pub stream_idle_timeout: Duration,
    /// Cap of the exponential redial backoff (default 30s).
    pub max_reconnect_backoff: Duration,
    /// First redial delay (default 250ms, at most `max_reconnect_backoff`).
    pub initial_reconnect_backoff: Duration,
    /// Handshake path (default /reverse_connections/request).
    pub request_path: String,
    /// Time allowed for the handshake response (default 10s).
    pub handshake_timeout: Duration,
    /// `plain` (`GET` → `200`, default) or `upgrade` (`GET` with `upgrade: reverse-tunnel` →
    /// `101`, Envoy's `use_http_upgrade`), for an HTTP proxy between the two ends.
    pub handshake: HandshakeForm,
    /// Send `x-envoy-reverse-tunnel-initiation-time`, when the tunnel was first wanted (default
    /// true, as Envoy's initiator always does).
    pub send_initiation_time: bool,
    /// After the handshake's `200` and before HTTP/2 starts, each wait for the responder's next
    /// bytes (an Envoy `RPING` or the HTTP/2 preface) may last this long; then the tunnel is
    /// redialed (default 30s). Once HTTP/2 runs, the keepalive below watches the tunnel.
    pub idle_timeout: Duration,
    /// HTTP/2 PING period on each tunnel (default 10s, plus 0–15 % jitter).
    pub ping_interval: Duration,
    /// Missed PING replies before the tunnel is dead and redialed (default 3, >= 1).
    pub ping_failure_threshold: u32,
    /// Streams one tunnel accepts at once; the responder's requests queue beyond this
    /// (default 1024, >= 1).
    pub max_concurrent_streams: u32,
    /// Extra handshake headers in file order (`handshake_headers:` in YAML), names lowercased.
    pub extra_handshake_headers: Vec<(String, String)>,
    /// Where the handshake's bearer token comes from (`auth:`); none when absent.
    pub auth: Option<TokenSource>,
}

/// An initiator route: requests whose path starts with `prefix` go to `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawRoute")]
pub struct InitiatorRoute {
    /// Path prefix, starting with `/`.
    pub prefix: String,
    /// Name of a cluster in `clusters:`.
    pub cluster: String,
    /// Route timeout: from the end of the request to the response head, else 504;
    /// `initiator.request_timeout` when absent; `0`: off for this route.
    pub timeout: Option<Duration>,
    /// `prefix_rewrite` and the header rules (`route.rs`).
    pub rewrite: RouteRewrite,
}

/// An initiator route as written; the rewrite keys as in `responder::RawEgressRoute`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route such as `{ prefix: /, cluster: local-app }`"
)]
struct RawRoute {
    #[serde(deserialize_with = "path_prefix")]
    prefix: String,
    #[serde(deserialize_with = "cluster_ref")]
    cluster: String,
    #[serde(default, deserialize_with = "duration::option_off_or_any")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "route::prefix_rewrite")]
    prefix_rewrite: Option<String>,
    #[serde(default, deserialize_with = "route::request_headers_to_add")]
    request_headers_to_add: Vec<HeaderToAdd>,
    #[serde(default, deserialize_with = "route::headers_to_remove")]
    request_headers_to_remove: Vec<http::HeaderName>,
    #[serde(default, deserialize_with = "route::response_headers_to_add")]
    response_headers_to_add: Vec<HeaderToAdd>,
    #[serde(default, deserialize_with = "route::headers_to_remove")]
    response_headers_to_remove: Vec<http::HeaderName>,
}

impl From<RawRoute> for InitiatorRoute {
    fn from(raw: RawRoute) -> Self {
        Self {
            prefix: raw.prefix,
            cluster: raw.cluster,
            timeout: raw.timeout,
            rewrite: RouteRewrite::from_keys(
                raw.prefix_rewrite,
                raw.request_headers_to_add,
                raw.request_headers_to_remove,
                raw.response_headers_to_add,
                raw.response_headers_to_remove,
            ),
        }
    }
}

impl InitiatorRoute {
    /// A route sending `prefix` to `cluster`, with no timeout of its own and no rewrite.
    pub fn new(prefix: &str, cluster: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            cluster: cluster.to_owned(),
            timeout: None,
            rewrite: RouteRewrite::default(),
        }
    }

    /// This route's timeout, given the initiator's default: `None` when off.
    pub fn effective_timeout(&self, default: Duration) -> Option<Duration> {
        duration::enabled(self.timeout.unwrap_or(default))
    }
}

impl Prefixed for InitiatorRoute {
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// `initiator:` as read: tunnels may still need the top-level `node`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an initiator mapping with `tunnels:` and `routes:`"
)]
pub(crate) struct RawInitiator {
    #[serde(deserialize_with = "tunnels")]
    pub(crate) tunnels: Vec<TunnelEntry>,
    #[serde(deserialize_with = "routes")]
    pub(crate) routes: Vec<InitiatorRoute>,
    #[serde(
        default = "duration::default_route_timeout",
        deserialize_with = "duration::off_or_any"
    )]
    pub(crate) request_timeout: Duration,
    #[serde(
        default = "duration::default_stream_idle_timeout",
        deserialize_with = "duration::off_or_any"
    )]
    pub(crate) stream_idle_timeout: Duration,
    #[serde(default = "secs::<30>", deserialize_with = "max_reconnect_backoff")]
    pub(crate) max_reconnect_backoff: Duration,
    /// `None` when not written (then [`DEFAULT_INITIAL_RECONNECT_BACKOFF`]).
    #[serde(default, deserialize_with = "initial_reconnect_backoff")]
    pub(crate) initial_reconnect_backoff: Option<Duration>,
    #[serde(default = "default_request_path", deserialize_with = "request_path")]
    pub(crate) request_path: String,
    #[serde(default = "secs::<10>", deserialize_with = "duration::positive")]
    pub(crate) handshake_timeout: Duration,
    #[serde(default)]
    pub(crate) handshake: HandshakeForm,
    #[serde(default = "yes")]
    pub(crate) send_initiation_time: bool,
    #[serde(default = "secs::<30>", deserialize_with = "duration::positive")]
    pub(crate) idle_timeout: Duration,
    #[serde(default = "secs::<10>", deserialize_with = "duration::positive")]
    pub(crate) ping_interval: Duration,
    #[serde(
        default = "default_ping_failure_threshold",
        deserialize_with = "at_least_one"
    )]
    pub(crate) ping_failure_threshold: u32,
    #[serde(
        default = "default_max_concurrent_streams",
        deserialize_with = "at_least_one"
    )]
    pub(crate) max_concurrent_streams: u32,
    #[serde(default, deserialize_with = "handshake_headers")]
    pub(crate) handshake_headers: Vec<(String, String)>,
    #[serde(default, deserialize_with = "super::auth::initiator_auth")]
    pub(crate) auth: Option<TokenSource>,
}

/// One entry of `initiator.tunnels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TunnelEntry {
    /// `rc://node:cluster:tenant@remote:count`.
    Rc(TunnelSpec),
    /// `{ cluster: remote, connections: n }`, identity from top-level `node`.
    FromNode {
        remote_cluster: String,
        connections: u32,
    },
}

impl RawInitiator {
    /// Builds the public [`InitiatorConfig`]. Map-form tunnels take the identity from `node`;
    /// `None` only if that is missing, which the cross-reference pass reports first.
    pub(crate) fn into_config(self, node: Option<&NodeIdentity>) -> Option<InitiatorConfig> {
        let tunnels = self
            .tunnels
            .into_iter()
            .map(|entry| match entry {
                TunnelEntry::Rc(spec) => Some(spec),
                TunnelEntry::FromNode {
                    remote_cluster,
                    connections,
                } => Some(TunnelSpec {
                    identity: node?.clone(),
                    remote_cluster,
                    connections,
                }),
            })
            .collect::<Option<Vec<_>>>()?;
        Some(InitiatorConfig {
            tunnels,
            routes: self.routes,
            request_timeout: self.request_timeout,
            stream_idle_timeout: self.stream_idle_timeout,
            max_reconnect_backoff: self.max_reconnect_backoff,
            initial_reconnect_backoff: self
                .initial_reconnect_backoff
                .unwrap_or(DEFAULT_INITIAL_RECONNECT_BACKOFF),
            request_path: self.request_path,
            handshake_timeout: self.handshake_timeout,
            handshake: self.handshake,
            send_initiation_time: self.send_initiation_time,
            idle_timeout: self.idle_timeout,
            ping_interval: self.ping_interval,
            ping_failure_threshold: self.ping_failure_threshold,
            max_concurrent_streams: self.max_concurrent_streams,
            extra_handshake_headers: self.handshake_headers,
            auth: self.auth,
        })
    }

    /// What the cross-reference checks consult of this section.
    pub(crate) fn backoffs(&self) -> xref::Backoffs {
        xref::Backoffs {
            initial: self.initial_reconnect_backoff,
            max: self.max_reconnect_backoff,
        }
    }
}

impl InitiatorConfig {
    /// An initiator keeping `tunnels` and serving `routes`, with every other setting at its
    /// default, for building configurations in code.
    pub fn new(tunnels: Vec<TunnelSpec>, routes: Vec<InitiatorRoute>) -> Self {
        Self {
            tunnels,
            routes,
            request_timeout: duration::DEFAULT_ROUTE_TIMEOUT,
            stream_idle_timeout: duration::DEFAULT_STREAM_IDLE_TIMEOUT,
            max_reconnect_backoff: secs::<30>(),
            initial_reconnect_backoff: DEFAULT_INITIAL_RECONNECT_BACKOFF,
            request_path: default_request_path(),
            handshake_timeout: secs::<10>(),
            handshake: HandshakeForm::Plain,
            send_initiation_time: true,
            idle_timeout: secs::<30>(),
            ping_interval: secs::<10>(),
            ping_failure_threshold: default_ping_failure_threshold(),
            max_concurrent_streams: default_max_concurrent_streams(),
            extra_handshake_headers: Vec::new(),
            auth: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_ping_failure_threshold() -> u32 {
    3
}

fn default_max_concurrent_streams() -> u32 {
    1024
}

/// `initiator.tunnels`: at least one.
fn tunnels<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TunnelEntry>, D::Error> {
    d.deserialize_seq(NonEmpty::new(
        "tunnels (`rc://node:cluster:tenant@remote_cluster:count` or `{ cluster: NAME, connections: N }`)",
    ))
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
                xref::check(|first| xref::unknown_cluster(first, &spec.remote_cluster))
                    .map_err(|e| E::custom(format!("in `{v}`: {e}")))?;
                Ok(TunnelEntry::Rc(spec))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TunnelEntry, A::Error> {
                let entry = FromNode::deserialize(de::value::MapAccessDeserializer::new(map))?;
                xref::check(|first| {
                    (!first.node).then(|| {
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

/// `initiator.routes`: at least one.
fn routes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<InitiatorRoute>, D::Error> {
    d.deserialize_seq(NonEmpty::new("routes `{ prefix: /, cluster: NAME }`"))
}

/// A reference to a cluster in `clusters:` (routes, map-form tunnels).
fn cluster_ref<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a cluster name", |s| {
        xref::check(|first| xref::unknown_cluster(first, s))?;
        Ok(s.to_owned())
    })
}

/// `initiator.initial_reconnect_backoff`: positive, at most `max_reconnect_backoff`.
fn initial_reconnect_backoff<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration::checked(d, false, |initial| {
        xref::check(|first| {
            let max = first.backoffs?.max;
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
fn max_reconnect_backoff<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration::checked(d, false, |max| {
        xref::check(|first| {
            let initial_written = first.backoffs?.initial.is_some();
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
            if name == "authorization" {
                xref::check(|first| {
                    first.initiator_auth.then(|| {
                        "header `authorization` is written from `initiator.auth`; remove one of \
                         them"
                            .to_owned()
                    })
                })?;
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
fn handshake_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
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
