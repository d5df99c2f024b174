//! `responder:`: the tunnel listener initiators dial, the egress listener clients use, and the
//! registry sweep (README, "Configuration reference").

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use http::HeaderName;

use super::auth::TunnelAuthConfig;
use super::de::{
    at_least_one, default_request_path, parse_listen, path_prefix, ranged, request_path, with_str,
    NonEmpty, LISTEN,
};
use super::duration::{self, secs};
use super::route::{self, HeaderToAdd, RouteRewrite};
use super::xref::{self, Listener};
use crate::auth::TenantSource;
use crate::http::host_id::HostIdFormat;
use crate::http::path::EscapedSlashes;
use crate::http::route::Prefixed;
use crate::shard::balance::Balance;

/// The responder role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a responder mapping with `tunnel_listener:` and `egress_listener:`"
)]
pub struct ResponderConfig {
    /// Where initiators connect.
    pub tunnel_listener: TunnelListenerConfig,
    /// Where clients send requests to be carried through tunnels.
    pub egress_listener: EgressListenerConfig,
    /// Period of the sweep for dead tunnels and empty registry entries (default 60s).
    #[serde(default = "secs::<60>", deserialize_with = "duration::positive")]
    pub cleanup_interval: Duration,
}

/// The responder's tunnel listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a tunnel listener mapping with `listen:`"
)]
pub struct TunnelListenerConfig {
    /// Address to listen on.
    #[serde(deserialize_with = "tunnel_listen")]
    pub listen: SocketAddr,
    /// Handshake path (default /reverse_connections/request).
    #[serde(default = "default_request_path", deserialize_with = "request_path")]
    pub request_path: String,
    /// HTTP/2 PING period (default 2s, plus 0–15 % jitter).
    #[serde(default = "secs::<2>", deserialize_with = "duration::positive")]
    pub ping_interval: Duration,
    /// Missed PING replies before a tunnel is dead (default 3, >= 1).
    #[serde(default = "three", deserialize_with = "at_least_one")]
    pub ping_failure_threshold: u32,
    /// Time allowed for the handshake request (default 10s).
    #[serde(default = "secs::<10>", deserialize_with = "duration::positive")]
    pub handshake_timeout: Duration,
    /// Tunnels accepted in total; beyond that the handshake gets 429 (default 10000).
    #[serde(default = "default_max_tunnels", deserialize_with = "at_least_one")]
    pub max_tunnels: u32,
    /// Tunnels accepted per node id; beyond that 403 (default 64).
    #[serde(
        default = "default_max_tunnels_per_node",
        deserialize_with = "at_least_one"
    )]
    pub max_tunnels_per_node: u32,
    /// Concurrent streams per tunnel (default 1000).
    #[serde(default = "default_max_streams", deserialize_with = "at_least_one")]
    pub max_concurrent_streams: u32,
    /// Connections in their TLS or handshake phase at once, per process; more are closed at
    /// once and counted in `handshakes_refused_busy` (default 256).
    #[serde(default = "default_max_handshakes", deserialize_with = "at_least_one")]
    pub max_handshakes_in_progress: u32,
    /// Consecutive egress route timeouts (504) on one tunnel after which it is unhealthy:
    /// requests prefer its host's other tunnels and nodes (default 3; 0: never marked).
    #[serde(default = "three")]
    pub unhealthy_after_timeouts: u32,
    /// While a tunnel is unhealthy, one request per this interval still goes to it as a probe;
    /// a probe answered in time makes it healthy again (default 30s, Envoy's
    /// `base_ejection_time`).
    #[serde(default = "secs::<30>", deserialize_with = "duration::positive")]
    pub unhealthy_probe_interval: Duration,
    /// Server TLS; plaintext when absent.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// Handshake authentication and authorization (`auth.rs`); none when absent.
    #[serde(default, deserialize_with = "super::auth::tunnel_auth")]
    pub auth: TunnelAuthConfig,
}

/// Server side of TLS / mTLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a server tls mapping with `cert:` and `key:`"
)]
pub struct ServerTlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA (PEM) that client certificates must chain to; client certs are required when set.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// The responder's egress listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an egress listener mapping with `listen:`"
)]
pub struct EgressListenerConfig {
    /// Address to listen on.
    #[serde(deserialize_with = "egress_listen")]
    pub listen: SocketAddr,
    /// Formats tried in order; first non-empty result is the host_id. YAML: a string or a list.
    #[serde(
        default = "default_host_id_format",
        deserialize_with = "host_id_formats"
    )]
    pub host_id_format: Vec<HostIdFormat>,
    /// Path-prefix routes carried to tunnels (default: one route `/`); others get 404.
    #[serde(default = "default_egress_routes", deserialize_with = "egress_routes")]
    pub routes: Vec<EgressRoute>,
    /// How long a request for an unknown host may wait for a tunnel; 503 at once when absent.
    #[serde(default, deserialize_with = "duration::option_any")]
    pub pending_timeout: Option<Duration>,
    /// Limit on request headers in KiB (default 60, 1..=8192).
    #[serde(default = "default_headers_kb", deserialize_with = "headers_kb")]
    pub max_request_headers_kb: u32,
    /// Route timeout of routes that set none: from the end of the request to the response
    /// head, else 504 (default 15s as Envoy; `0`: off).
    #[serde(
        default = "duration::default_route_timeout",
        deserialize_with = "duration::off_or_any"
    )]
    pub request_timeout: Duration,
    /// A request whose body bytes stop moving, in both directions, for this long is ended:
    /// 408 before the response head, a reset after it (default 5m as Envoy's
    /// `stream_idle_timeout`; `0`: off).
    #[serde(
        default = "duration::default_stream_idle_timeout",
        deserialize_with = "duration::off_or_any"
    )]
    pub stream_idle_timeout: Duration,
    /// A client must send each request head within this time, or its connection is closed
    /// (slow-client defence; default 30s). Also bounds the time from accepting a connection
    /// (TLS included) to its first request, on HTTP/1.1 and HTTP/2 alike.
    #[serde(default = "secs::<30>", deserialize_with = "duration::positive")]
    pub header_read_timeout: Duration,
    /// Client connections open at once, per process; more are closed at once and counted in
    /// `egress_connections_refused` (default 10000).
    #[serde(default = "default_max_connections", deserialize_with = "at_least_one")]
    pub max_connections: u32,
    /// A client connection with no request in flight for this long is closed (HTTP/2: GOAWAY
    /// first) (default 60s; `0`: off).
    #[serde(default = "secs::<60>", deserialize_with = "duration::off_or_any")]
    pub idle_timeout: Duration,
    /// HTTP/2 client connections: PING after this long without a frame from the client
    /// (default 30s; `0`: off).
    #[serde(default = "secs::<30>", deserialize_with = "duration::off_or_any")]
    pub http2_keepalive_interval: Duration,
    /// An unanswered keepalive PING closes the connection after this long (default 20s).
    #[serde(default = "secs::<20>", deserialize_with = "duration::positive")]
    pub http2_keepalive_timeout: Duration,
    /// Proxies in front of this listener whose `x-forwarded-*` headers are believed (Envoy's
    /// `xff_num_trusted_hops`). 0 (default): rtun is the edge, client-supplied forwarding
    /// headers are dropped; more: the client's `x-forwarded-for` list is kept and appended to.
    #[serde(default)]
    pub xff_num_trusted_hops: u32,
    /// Keep a client's valid `x-request-id` instead of generating one (default false: only
    /// behind a proxy that sets it).
    #[serde(default)]
    pub trust_request_id: bool,
    /// What a path with `%2F`, `%5C` or `\` gets: `reject_request` (default, 400) or
    /// `keep_unchanged` (Envoy's `path_with_escaped_slashes_action`; ARCHITECTURE.md §4).
    #[serde(default, deserialize_with = "escaped_slashes")]
    pub path_with_escaped_slashes_action: EscapedSlashes,
    /// Which shard serves a new client connection: `exact` (default: the shard with the fewest
    /// open; `crate::shard::balance`) or `kernel` (where the reuseport hash put it).
    #[serde(default, deserialize_with = "connection_balance")]
    pub connection_balance: Balance,
    /// Where each request's tenant comes from (`tenant.rs`); `None`: tenants are not isolated.
    #[serde(default, deserialize_with = "super::tenant::tenant_source")]
    pub tenant: Option<TenantSource>,
    /// HTTPS: server TLS on this listener, ALPN `h2` and `http/1.1` on one port; with
    /// `client_ca`, clients must present a certificate that chains to it. Plaintext (HTTP/1.1
    /// and h2c) when absent.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

/// An egress route: requests whose path starts with `prefix` are carried through tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawEgressRoute")]
pub struct EgressRoute {
    /// Path prefix, starting with `/`.
    pub prefix: String,
    /// Route timeout: from the end of the request to the response head, else 504; the
    /// listener's `request_timeout` when absent; `0`: off for this route.
    pub timeout: Option<Duration>,
    /// `prefix_rewrite` and the header rules (`route.rs`).
    pub rewrite: RouteRewrite,
}

/// An egress route as written: the rewrite keys sit flat on the route (serde's `flatten`
/// would lose unknown-key errors and line numbers), so they are listed here and in
/// `initiator::RawRoute`, each read by `route.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route such as `{ prefix: / }`")]
struct RawEgressRoute {
    #[serde(deserialize_with = "path_prefix")]
    prefix: String,
    #[serde(default, deserialize_with = "duration::option_off_or_any")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "route::prefix_rewrite")]
    prefix_rewrite: Option<String>,
    #[serde(default, deserialize_with = "route::egress_request_headers_to_add")]
    request_headers_to_add: Vec<HeaderToAdd>,
    #[serde(default, deserialize_with = "route::headers_to_remove")]
    request_headers_to_remove: Vec<HeaderName>,
    #[serde(default, deserialize_with = "route::response_headers_to_add")]
    response_headers_to_add: Vec<HeaderToAdd>,
    #[serde(default, deserialize_with = "route::headers_to_remove")]
    response_headers_to_remove: Vec<HeaderName>,
}

impl From<RawEgressRoute> for EgressRoute {
    fn from(raw: RawEgressRoute) -> Self {
        Self {
            prefix: raw.prefix,
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

impl EgressRoute {
    /// A route for `prefix` with no timeout of its own and no rewrite.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            timeout: None,
            rewrite: RouteRewrite::default(),
        }
    }

    /// This route's timeout, given the listener's default: `None` when off.
    pub fn effective_timeout(&self, listener_default: Duration) -> Option<Duration> {
        duration::enabled(self.timeout.unwrap_or(listener_default))
    }
}

impl Prefixed for EgressRoute {
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

fn three() -> u32 {
    3
}

impl ResponderConfig {
    /// A responder with every default, for building configurations in code (tests, the
    /// harness); the defaults are the ones a file gets.
    pub fn new(tunnel_listen: SocketAddr, egress_listen: SocketAddr) -> Self {
        Self {
            tunnel_listener: TunnelListenerConfig::new(tunnel_listen),
            egress_listener: EgressListenerConfig::new(egress_listen),
            cleanup_interval: secs::<60>(),
        }
    }
}

impl TunnelListenerConfig {
    /// A tunnel listener on `listen` with every default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            request_path: default_request_path(),
            ping_interval: secs::<2>(),
            ping_failure_threshold: three(),
            handshake_timeout: secs::<10>(),
            max_tunnels: default_max_tunnels(),
            max_tunnels_per_node: default_max_tunnels_per_node(),
            max_concurrent_streams: default_max_streams(),
            max_handshakes_in_progress: default_max_handshakes(),
            unhealthy_after_timeouts: three(),
            unhealthy_probe_interval: secs::<30>(),
            tls: None,
            auth: TunnelAuthConfig::default(),
        }
    }
}

impl EgressListenerConfig {
    /// An egress listener on `listen` with every default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            host_id_format: default_host_id_format(),
            routes: default_egress_routes(),
            pending_timeout: None,
            max_request_headers_kb: default_headers_kb(),
            request_timeout: duration::DEFAULT_ROUTE_TIMEOUT,
            stream_idle_timeout: duration::DEFAULT_STREAM_IDLE_TIMEOUT,
            header_read_timeout: secs::<30>(),
            max_connections: default_max_connections(),
            idle_timeout: secs::<60>(),
            http2_keepalive_interval: secs::<30>(),
            http2_keepalive_timeout: secs::<20>(),
            xff_num_trusted_hops: 0,
            trust_request_id: false,
            path_with_escaped_slashes_action: EscapedSlashes::default(),
            connection_balance: Balance::default(),
            tenant: None,
            tls: None,
        }
    }
}

fn default_max_tunnels() -> u32 {
    10_000
}

fn default_max_tunnels_per_node() -> u32 {
    64
}

fn default_max_streams() -> u32 {
    1_000
}

fn default_max_handshakes() -> u32 {
    256
}

fn default_max_connections() -> u32 {
    10_000
}

fn default_host_id_format() -> Vec<HostIdFormat> {
    ["%REQ(x-node-id)%", "%REQ(x-cluster-id)%"]
        .iter()
        .filter_map(|s| HostIdFormat::parse(s).ok())
        .collect()
}

fn default_egress_routes() -> Vec<EgressRoute> {
    vec![EgressRoute::new("/")]
}

fn default_headers_kb() -> u32 {
    60
}

/// `responder.tunnel_listener.listen`: must not collide with the admin listener.
fn tunnel_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    with_str(d, LISTEN, |s| {
        let addr = parse_listen(s)?;
        xref::check(|first| xref::listen_conflict(first, addr, Listener::Tunnel))?;
        Ok(addr)
    })
}

/// `responder.egress_listener.listen`: must not collide with admin or tunnel listeners.
fn egress_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    with_str(d, LISTEN, |s| {
        let addr = parse_listen(s)?;
        xref::check(|first| xref::listen_conflict(first, addr, Listener::Egress))?;
        Ok(addr)
    })
}

/// `path_with_escaped_slashes_action`: `reject_request` or `keep_unchanged`.
fn escaped_slashes<'de, D: Deserializer<'de>>(d: D) -> Result<EscapedSlashes, D::Error> {
    with_str(d, "`reject_request` or `keep_unchanged`", |s| match s {
        "reject_request" => Ok(EscapedSlashes::Reject),
        "keep_unchanged" => Ok(EscapedSlashes::Keep),
        other => Err(format!(
            "unknown path_with_escaped_slashes_action `{other}`: expected `reject_request` or \
             `keep_unchanged`"
        )),
    })
}

/// `connection_balance`: `kernel` or `exact`.
fn connection_balance<'de, D: Deserializer<'de>>(d: D) -> Result<Balance, D::Error> {
    with_str(d, "`kernel` or `exact`", |s| match s {
        "kernel" => Ok(Balance::Kernel),
        "exact" => Ok(Balance::Exact),
        other => Err(format!(
            "unknown connection_balance `{other}`: expected `kernel` or `exact`"
        )),
    })
}

/// `max_request_headers_kb`: 1..=8192 (Envoy's bounds).
fn headers_kb<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, 1, 8192).map(|v| v as u32)
}

/// `responder.egress_listener.routes`: at least one.
fn egress_routes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EgressRoute>, D::Error> {
    d.deserialize_seq(NonEmpty::new("routes `{ prefix: / }`"))
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
fn host_id_formats<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HostIdFormat>, D::Error> {
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
