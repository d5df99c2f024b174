//! STUB (replaced by the config branch): types only, so the engine compiles meanwhile.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::http::host_id::HostIdFormat;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    Err(ConfigError(format!("{}: stub", path.display())))
}
pub fn parse(_source: &str, file_name: &str) -> Result<Config, ConfigError> {
    Err(ConfigError(format!("{file_name}: stub")))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub shards: Shards,
    pub admin: Option<AdminConfig>,
    pub node: Option<NodeIdentity>,
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub initiator: Option<InitiatorConfig>,
    pub responder: Option<ResponderConfig>,
    pub drain_timeout: Duration,
}
impl Config {
    pub fn summary(&self) -> String {
        String::new()
    }
}
#[derive(Debug, Clone)]
pub enum Shards {
    Auto,
    Count(std::num::NonZeroUsize),
}
impl Shards {
    pub fn resolve(&self) -> usize {
        match self {
            Shards::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Shards::Count(n) => n.get(),
        }
    }
}
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub id: String,
    pub cluster: String,
    pub tenant: String,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub protocol: Protocol,
    pub connect_timeout: Duration,
    pub tls: Option<ClientTlsConfig>,
    pub max_idle_per_shard: usize,
}
#[derive(Debug, Clone)]
pub struct ClientTlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub spki_pins: Vec<String>,
    pub sni: Option<String>,
}
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    pub tunnels: Vec<TunnelSpec>,
    pub routes: Vec<InitiatorRoute>,
    pub max_reconnect_backoff: Duration,
    pub initial_reconnect_backoff: Duration,
    pub request_path: String,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub extra_handshake_headers: Vec<(String, String)>,
}
#[derive(Debug, Clone)]
pub struct TunnelSpec {
    pub identity: NodeIdentity,
    pub remote_cluster: String,
    pub connections: u32,
}
#[derive(Debug, Clone)]
pub struct InitiatorRoute {
    pub prefix: String,
    pub cluster: String,
    pub timeout: Option<Duration>,
}
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    pub tunnel_listener: TunnelListenerConfig,
    pub egress_listener: EgressListenerConfig,
    pub cleanup_interval: Duration,
}
#[derive(Debug, Clone)]
pub struct TunnelListenerConfig {
    pub listen: SocketAddr,
    pub request_path: String,
    pub ping_interval: Duration,
    pub ping_failure_threshold: u32,
    pub handshake_timeout: Duration,
    pub max_tunnels: u32,
    pub max_tunnels_per_node: u32,
    pub max_concurrent_streams: u32,
    pub tls: Option<ServerTlsConfig>,
}
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}
#[derive(Debug, Clone)]
pub struct EgressListenerConfig {
    pub listen: SocketAddr,
    pub host_id_format: Vec<HostIdFormat>,
    pub routes: Vec<EgressRoute>,
    pub pending_timeout: Option<Duration>,
    pub max_request_headers_kb: u32,
    pub request_timeout: Option<Duration>,
}
#[derive(Debug, Clone)]
pub struct EgressRoute {
    pub prefix: String,
    pub timeout: Option<Duration>,
}
