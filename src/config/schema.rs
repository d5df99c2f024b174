//! The configuration schema: the typed structs the rest of rtun codes against, with their serde
//! attributes and defaults.
//!
//! Every struct denies unknown fields. Values are validated while they are deserialized (see
//! `de`), so serde_yaml attaches the line and column of the offending value to every error.
//! `RawConfig`/`RawInitiator` are the shapes read from YAML; [`Config`]/[`InitiatorConfig`] are
//! built from them once the cross-reference checks (`xref`) have passed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{de, duration};
use crate::http::host_id::HostIdFormat;
use crate::protocol::DEFAULT_REQUEST_PATH;

/// The default first redial delay of an initiator.
pub const DEFAULT_INITIAL_RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Number of shards (threads): `shards: auto` (default) or a positive number.
    pub shards: Shards,
    /// Admin listener; `None` when `admin:` is absent.
    pub admin: Option<AdminConfig>,
    /// The initiator's own identity (`node:`), used by map-form tunnels.
    pub node: Option<NodeIdentity>,
    /// Upstream clusters by name: local services (initiator) and responders to dial.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// The initiator role, if configured.
    pub initiator: Option<InitiatorConfig>,
    /// The responder role, if configured.
    pub responder: Option<ResponderConfig>,
    /// Grace period for in-flight streams on shutdown (default 10s; `0s` closes at once).
    pub drain_timeout: Duration,
}

/// How many shards to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shards {
    /// One per available core.
    #[default]
    Auto,
    /// Exactly this many.
    Count(NonZeroUsize),
}

impl Shards {
    /// The number of shards to start: `Auto` asks [`std::thread::available_parallelism`]
    /// (1 if that fails).
    pub fn resolve(&self) -> usize {
        match self {
            Shards::Auto => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            Shards::Count(n) => n.get(),
        }
    }
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an admin mapping such as `{ listen: 127.0.0.1:9901 }`"
)]
pub struct AdminConfig {
    /// Address to listen on (default 127.0.0.1:9901).
    #[serde(
        default = "default_admin_listen",
        deserialize_with = "de::admin_listen"
    )]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
        }
    }
}

/// An initiator identity: what it announces in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a node identity such as `{ id: edge-42, cluster: edge-west, tenant: acme }`"
)]
pub struct NodeIdentity {
    /// Node id: 1..=255 bytes of visible ASCII without `:`.
    #[serde(deserialize_with = "de::node_id")]
    pub id: String,
    /// Cluster id: same rule as the node id.
    #[serde(deserialize_with = "de::cluster_id")]
    pub cluster: String,
    /// Tenant id: same rule, may be empty (default "").
    #[serde(default, deserialize_with = "de::tenant_id")]
    pub tenant: String,
}

/// Upstream protocol of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (or ALPN under TLS).
    Http2,
}

impl Protocol {
    /// The name used in the configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// An upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping with `endpoints:`")]
pub struct ClusterConfig {
    /// `host:port` endpoints (at least one); hostnames are re-resolved. IPv6 as `[addr]:port`.
    #[serde(deserialize_with = "de::endpoints")]
    pub endpoints: Vec<String>,
    /// Upstream protocol (default http1).
    #[serde(default)]
    pub protocol: Protocol,
    /// TCP (+TLS) connect timeout (default 5s, > 0).
    #[serde(default = "secs::<5>", deserialize_with = "duration::positive")]
    pub connect_timeout: Duration,
    /// Client TLS settings; plaintext when absent.
    #[serde(default, deserialize_with = "de::client_tls")]
    pub tls: Option<ClientTlsConfig>,
    /// Idle keep-alive connections kept per shard (default 64; 0 disables pooling).
    #[serde(default = "default_max_idle")]
    pub max_idle_per_shard: usize,
}

/// Client side of TLS / mTLS. Paths are used as written (relative to the working directory).
/// `cert` and `key` are given together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a client tls mapping")]
pub struct ClientTlsConfig {
    /// Client certificate chain (PEM) for mTLS.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) to verify the server; system roots when absent.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Base64 SHA-256 SPKI pins; when non-empty the server key must match one.
    #[serde(default, deserialize_with = "de::spki_pins")]
    pub spki_pins: Vec<String>,
    /// SNI / name to verify; the endpoint host when absent.
    #[serde(default)]
    pub sni: Option<String>,
}

/// The initiator role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// Tunnels to keep open.
    pub tunnels: Vec<TunnelSpec>,
    /// Path-prefix routes to local clusters, tried in order (first match wins).
    pub routes: Vec<InitiatorRoute>,
    /// Cap of the exponential redial backoff (default 30s).
    pub max_reconnect_backoff: Duration,
    /// First redial delay (default 250ms, at most `max_reconnect_backoff`).
    pub initial_reconnect_backoff: Duration,
    /// Handshake path (default /reverse_connections/request).
    pub request_path: String,
    /// Time allowed for the handshake response (default 10s).
    pub handshake_timeout: Duration,
    /// A tunnel with no frames (incl. PINGs) for this long is redialed (default 30s).
    pub idle_timeout: Duration,
    /// Extra handshake headers in file order (`handshake_headers:` in YAML), names lowercased.
    pub extra_handshake_headers: Vec<(String, String)>,
}

/// One tunnel group: dial `connections` tunnels to `remote_cluster` announcing `identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Identity to announce.
    pub identity: NodeIdentity,
    /// Name of the cluster (in `clusters:`) of the responder(s) to dial.
    pub remote_cluster: String,
    /// Number of tunnels, split across shards (0 is allowed and dials nothing).
    pub connections: u32,
}

/// An initiator route: requests whose path starts with `prefix` go to `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route such as `{ prefix: /, cluster: local-app }`"
)]
pub struct InitiatorRoute {
    /// Path prefix, starting with `/`.
    #[serde(deserialize_with = "de::path_prefix")]
    pub prefix: String,
    /// Name of a cluster in `clusters:`.
    #[serde(deserialize_with = "de::cluster_ref")]
    pub cluster: String,
    /// Whole-request timeout (> 0); none when absent.
    #[serde(default, deserialize_with = "duration::option_positive")]
    pub timeout: Option<Duration>,
}

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
    #[serde(deserialize_with = "de::tunnel_listen")]
    pub listen: SocketAddr,
    /// Handshake path (default /reverse_connections/request).
    #[serde(
        default = "default_request_path",
        deserialize_with = "de::request_path"
    )]
    pub request_path: String,
    /// HTTP/2 PING period (default 2s, plus 0–15 % jitter).
    #[serde(default = "secs::<2>", deserialize_with = "duration::positive")]
    pub ping_interval: Duration,
    /// Missed PING replies before a tunnel is dead (default 3, >= 1).
    #[serde(default = "three", deserialize_with = "de::at_least_one")]
    pub ping_failure_threshold: u32,
    /// Time allowed for the handshake request (default 10s).
    #[serde(default = "secs::<10>", deserialize_with = "duration::positive")]
    pub handshake_timeout: Duration,
    /// Tunnels accepted in total; beyond that the handshake gets 429 (default 10000).
    #[serde(default = "default_max_tunnels", deserialize_with = "de::at_least_one")]
    pub max_tunnels: u32,
    /// Tunnels accepted per node id; beyond that 403 (default 64).
    #[serde(
        default = "default_max_tunnels_per_node",
        deserialize_with = "de::at_least_one"
    )]
    pub max_tunnels_per_node: u32,
    /// Concurrent streams per tunnel (default 1000).
    #[serde(default = "default_max_streams", deserialize_with = "de::at_least_one")]
    pub max_concurrent_streams: u32,
    /// Server TLS; plaintext when absent.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
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
    #[serde(deserialize_with = "de::egress_listen")]
    pub listen: SocketAddr,
    /// Formats tried in order; first non-empty result is the host_id. YAML: a string or a list.
    #[serde(
        default = "default_host_id_format",
        deserialize_with = "de::host_id_formats"
    )]
    pub host_id_format: Vec<HostIdFormat>,
    /// Path-prefix routes carried to tunnels (default: one route `/`); others get 404.
    #[serde(
        default = "default_egress_routes",
        deserialize_with = "de::egress_routes"
    )]
    pub routes: Vec<EgressRoute>,
    /// How long a request for an unknown host may wait for a tunnel; 503 at once when absent.
    #[serde(default, deserialize_with = "duration::option_any")]
    pub pending_timeout: Option<Duration>,
    /// Limit on request headers in KiB (default 60, 1..=8192).
    #[serde(default = "default_headers_kb", deserialize_with = "de::headers_kb")]
    pub max_request_headers_kb: u32,
    /// Default whole-request timeout (> 0); none when absent.
    #[serde(default, deserialize_with = "duration::option_positive")]
    pub request_timeout: Option<Duration>,
    /// A client must send each request head within this time, or its connection is closed
    /// (slow-client defence; default 30s).
    #[serde(default = "secs::<30>", deserialize_with = "duration::positive")]
    pub header_read_timeout: Duration,
}

/// An egress route: requests whose path starts with `prefix` are carried through tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route such as `{ prefix: / }`")]
pub struct EgressRoute {
    /// Path prefix, starting with `/`.
    #[serde(deserialize_with = "de::path_prefix")]
    pub prefix: String,
    /// Whole-request timeout (> 0); the listener's `request_timeout` when absent.
    #[serde(default, deserialize_with = "duration::option_positive")]
    pub timeout: Option<Duration>,
}

/// The file as read, before cross-references are resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a configuration mapping with `initiator:` and/or `responder:`"
)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) shards: Shards,
    #[serde(default, deserialize_with = "de::admin")]
    pub(crate) admin: Option<AdminConfig>,
    #[serde(default)]
    pub(crate) node: Option<NodeIdentity>,
    #[serde(default, deserialize_with = "de::clusters")]
    pub(crate) clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub(crate) initiator: Option<RawInitiator>,
    #[serde(default)]
    pub(crate) responder: Option<ResponderConfig>,
    #[serde(default = "secs::<10>", deserialize_with = "duration::any")]
    pub(crate) drain_timeout: Duration,
}

/// `initiator:` as read: tunnels may still need the top-level `node`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an initiator mapping with `tunnels:` and `routes:`"
)]
pub(crate) struct RawInitiator {
    #[serde(deserialize_with = "de::tunnels")]
    pub(crate) tunnels: Vec<TunnelEntry>,
    #[serde(deserialize_with = "de::initiator_routes")]
    pub(crate) routes: Vec<InitiatorRoute>,
    #[serde(default = "secs::<30>", deserialize_with = "de::max_reconnect_backoff")]
    pub(crate) max_reconnect_backoff: Duration,
    /// `None` when not written (then [`DEFAULT_INITIAL_RECONNECT_BACKOFF`]).
    #[serde(default, deserialize_with = "de::initial_reconnect_backoff")]
    pub(crate) initial_reconnect_backoff: Option<Duration>,
    #[serde(
        default = "default_request_path",
        deserialize_with = "de::request_path"
    )]
    pub(crate) request_path: String,
    #[serde(default = "secs::<10>", deserialize_with = "duration::positive")]
    pub(crate) handshake_timeout: Duration,
    #[serde(default = "secs::<30>", deserialize_with = "duration::positive")]
    pub(crate) idle_timeout: Duration,
    #[serde(default, deserialize_with = "de::handshake_headers")]
    pub(crate) handshake_headers: Vec<(String, String)>,
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

impl RawConfig {
    /// Builds the public [`Config`]. Map-form tunnels take the identity from `node`; `None`
    /// only if that is missing, which the cross-reference pass reports first.
    pub(crate) fn into_config(self) -> Option<Config> {
        let node = self.node;
        let initiator = match self.initiator {
            None => None,
            Some(raw) => {
                let tunnels = raw
                    .tunnels
                    .into_iter()
                    .map(|entry| match entry {
                        TunnelEntry::Rc(spec) => Some(spec),
                        TunnelEntry::FromNode {
                            remote_cluster,
                            connections,
                        } => Some(TunnelSpec {
                            identity: node.clone()?,
                            remote_cluster,
                            connections,
                        }),
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(InitiatorConfig {
                    tunnels,
                    routes: raw.routes,
                    max_reconnect_backoff: raw.max_reconnect_backoff,
                    initial_reconnect_backoff: raw
                        .initial_reconnect_backoff
                        .unwrap_or(DEFAULT_INITIAL_RECONNECT_BACKOFF),
                    request_path: raw.request_path,
                    handshake_timeout: raw.handshake_timeout,
                    idle_timeout: raw.idle_timeout,
                    extra_handshake_headers: raw.handshake_headers,
                })
            }
        };
        Some(Config {
            shards: self.shards,
            admin: self.admin,
            node,
            clusters: self.clusters,
            initiator,
            responder: self.responder,
            drain_timeout: self.drain_timeout,
        })
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9901))
}

fn default_request_path() -> String {
    DEFAULT_REQUEST_PATH.to_owned()
}

fn default_host_id_format() -> Vec<HostIdFormat> {
    ["%REQ(x-node-id)%", "%REQ(x-cluster-id)%"]
        .iter()
        .filter_map(|s| HostIdFormat::parse(s).ok())
        .collect()
}

fn default_egress_routes() -> Vec<EgressRoute> {
    vec![EgressRoute {
        prefix: "/".to_owned(),
        timeout: None,
    }]
}

fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

fn three() -> u32 {
    3
}

fn default_max_idle() -> usize {
    64
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

fn default_headers_kb() -> u32 {
    60
}
