//! `clusters:`: upstream clusters by name, the local services behind an initiator and the
//! responders it dials (README, "Configuration reference").

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::de::{at_least_one, checked_map, ranged, with_str, NonEmpty};
use super::duration::{self, secs};
use crate::protocol::ids::validate_id;

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
    #[serde(deserialize_with = "endpoints")]
    pub endpoints: Vec<String>,
    /// Upstream protocol (default http1).
    #[serde(default)]
    pub protocol: Protocol,
    /// TCP (+TLS) connect timeout (default 5s, > 0).
    #[serde(default = "secs::<5>", deserialize_with = "duration::positive")]
    pub connect_timeout: Duration,
    /// Client TLS settings; plaintext when absent.
    #[serde(default, deserialize_with = "client_tls")]
    pub tls: Option<ClientTlsConfig>,
    /// Idle keep-alive connections kept per shard (default 64; 0 disables pooling).
    #[serde(default = "default_max_idle")]
    pub max_idle_per_shard: usize,
    /// How often a responder cluster's host names are re-resolved (default 5s as Envoy's
    /// STRICT_DNS, > 0): every resolved address gets its own tunnels (`initiator::hosts`).
    #[serde(default = "secs::<5>", deserialize_with = "duration::positive")]
    pub dns_refresh_rate: Duration,
    /// A local service must send its response head within this time of receiving the whole
    /// request, else 504, whatever the route allows (default `0`: off, the route timeout
    /// alone bounds it). Only local services use it.
    #[serde(default, deserialize_with = "duration::off_or_any")]
    pub response_timeout: Duration,
    /// Local-service protection, per shard (ARCHITECTURE.md §7, `initiator::pool`): open
    /// connections to the cluster, connecting ones included (default 1024, ≥ 1).
    #[serde(default = "default_limit", deserialize_with = "at_least_one_usize")]
    pub max_connections: usize,
    /// Connects in flight to one endpoint (default 8, ≥ 1).
    #[serde(
        default = "default_max_connecting",
        deserialize_with = "at_least_one_usize"
    )]
    pub max_connecting: usize,
    /// Requests waiting for a connection or a request slot (default 1024, ≥ 1); beyond it: 503
    /// `local_overloaded`.
    #[serde(default = "default_limit", deserialize_with = "at_least_one_usize")]
    pub max_pending: usize,
    /// Longest wait in that queue (default 5s, > 0); then 503 `queue_timeout`.
    #[serde(default = "secs::<5>", deserialize_with = "duration::positive")]
    pub queue_timeout: Duration,
    /// Requests in flight to the cluster, response bodies included (default 1024, ≥ 1); more
    /// wait in the queue.
    #[serde(default = "default_limit", deserialize_with = "at_least_one_usize")]
    pub max_requests: usize,
    /// Failures in a row (connects, requests broken before their response) that eject an
    /// endpoint (default 5, ≥ 1).
    #[serde(
        default = "default_consecutive_failures",
        deserialize_with = "at_least_one"
    )]
    pub consecutive_failures: u32,
    /// How long a first ejection lasts (default 30s, > 0); it doubles on each ejection in a
    /// row, up to `max_ejection_time`.
    #[serde(default = "secs::<30>", deserialize_with = "duration::positive")]
    pub ejection_time: Duration,
    /// The longest ejection (default 300s, > 0; never below `ejection_time`).
    #[serde(default = "secs::<300>", deserialize_with = "duration::positive")]
    pub max_ejection_time: Duration,
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
    /// CA bundle (PEM) the server's certificate must chain to. Required: rtun has no
    /// built-in or system roots (`crate::tls`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Base64 SHA-256 SPKI pins; when non-empty the server key must match one.
    #[serde(default, deserialize_with = "spki_pins")]
    pub spki_pins: Vec<String>,
    /// SNI / name to verify; the endpoint host when absent.
    #[serde(default)]
    pub sni: Option<String>,
}

impl ClusterConfig {
    /// A plaintext HTTP/1.1 cluster of `endpoints` with every default, for building
    /// configurations in code.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            protocol: Protocol::default(),
            connect_timeout: secs::<5>(),
            tls: None,
            max_idle_per_shard: default_max_idle(),
            dns_refresh_rate: secs::<5>(),
            response_timeout: Duration::ZERO,
            max_connections: default_limit(),
            max_connecting: default_max_connecting(),
            max_pending: default_limit(),
            queue_timeout: secs::<5>(),
            max_requests: default_limit(),
            consecutive_failures: default_consecutive_failures(),
            ejection_time: secs::<30>(),
            max_ejection_time: secs::<300>(),
        }
    }
}

fn default_max_idle() -> usize {
    64
}

fn default_limit() -> usize {
    1024
}

fn default_max_connecting() -> usize {
    8
}

fn default_consecutive_failures() -> u32 {
    5
}

/// A count of at least 1.
fn at_least_one_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1, u32::MAX.into()).map(|v| v as usize)
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

struct Endpoint(String);

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_str(d, "an endpoint host:port", |s| {
            validate_endpoint(s).map(|()| Endpoint(s.to_owned()))
        })
    }
}

/// `clusters.*.endpoints`: at least one `host:port`.
fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(NonEmpty::<Endpoint>::new("endpoints host:port"))
        .map(|v| v.into_iter().map(|e| e.0).collect())
}

/// `clusters.*.tls`: `ca` present; `cert` and `key` together; `sni` not empty.
fn client_tls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ClientTlsConfig>, D::Error> {
    checked_map(d, "a client tls mapping", |tls: &ClientTlsConfig| {
        if tls.ca.is_none() {
            return Err(
                "`ca` is required: the server is verified only against the CA bundle given \
                 there (rtun uses no system roots)"
                    .to_owned(),
            );
        }
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
fn spki_pins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<Pin>::deserialize(d).map(|v| v.into_iter().map(|p| p.0).collect())
}
