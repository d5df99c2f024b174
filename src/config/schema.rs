//! The configuration schema: the typed structs the rest of rtun codes against, with their serde
//! attributes and defaults. This module holds the top level of the file ([`Config`],
//! `shards:`); each section has its own module: `admin`, `node`, `cluster`, `initiator`,
//! `responder`, and `rc` for the tunnel address.
//!
//! Every struct denies unknown fields. Values are validated while they are deserialized, by
//! deserializers that sit next to the types they fill and are built from the generic ones in
//! `de`, so serde_yaml attaches the line and column of the offending value to every error.
//! `RawConfig`/`RawInitiator` are the shapes read from YAML; [`Config`]/[`InitiatorConfig`] are
//! built from them once the cross-reference checks (`xref`) have passed.

use std::collections::BTreeMap;
use std::fmt;

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::access_log::AccessLogConfig;
use super::admin::AdminConfig;
use super::cluster::{self, ClusterConfig};
use super::duration::{self, secs};
use super::initiator::{InitiatorConfig, RawInitiator};
use super::node::NodeIdentity;
use super::responder::ResponderConfig;
use super::xref::FirstPass;

/// Most shards accepted; more is certainly a typo.
const MAX_SHARDS: u64 = 4096;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Number of shards (threads): `shards: auto` (default) or a positive number.
    pub shards: Shards,
    /// Admin listener; `None` when `admin:` is absent.
    pub admin: Option<AdminConfig>,
    /// The access log; `None` when `access_log:` is absent.
    pub access_log: Option<AccessLogConfig>,
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

impl Config {
    /// A configuration with neither role and every default; add roles and clusters to build
    /// one in code. Nothing checks cross-references here: [`crate::config::parse`] does that
    /// for files.
    pub fn empty() -> Self {
        Self {
            shards: Shards::Auto,
            admin: None,
            access_log: None,
            node: None,
            clusters: BTreeMap::new(),
            initiator: None,
            responder: None,
            drain_timeout: secs::<10>(),
        }
    }
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

/// The file as read, before cross-references are resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a configuration mapping with `initiator:` and/or `responder:`"
)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) shards: Shards,
    #[serde(default, deserialize_with = "super::admin::admin")]
    pub(crate) admin: Option<AdminConfig>,
    #[serde(default, deserialize_with = "super::access_log::access_log")]
    pub(crate) access_log: Option<AccessLogConfig>,
    #[serde(default)]
    pub(crate) node: Option<NodeIdentity>,
    #[serde(default, deserialize_with = "cluster::clusters")]
    pub(crate) clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub(crate) initiator: Option<RawInitiator>,
    #[serde(default)]
    pub(crate) responder: Option<ResponderConfig>,
    #[serde(default = "secs::<10>", deserialize_with = "duration::any")]
    pub(crate) drain_timeout: Duration,
}

impl RawConfig {
    /// What the cross-reference checks of the second pass consult (see `xref`).
    pub(crate) fn first_pass(&self) -> FirstPass {
        FirstPass {
            clusters: self.clusters.keys().cloned().collect(),
            node: self.node.is_some(),
            admin_listen: self.admin.as_ref().map(|a| a.listen),
            tunnel_listen: self.responder.as_ref().map(|r| r.tunnel_listener.listen),
            backoffs: self.initiator.as_ref().map(RawInitiator::backoffs),
            tunnel_client_ca: self.responder.as_ref().is_some_and(|r| {
                r.tunnel_listener
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.client_ca.is_some())
            }),
            initiator_auth: self.initiator.as_ref().is_some_and(|i| i.auth.is_some()),
            host_id_headers: self.responder.as_ref().map_or_else(Vec::new, |r| {
                crate::http::host_id::expected_headers(&r.egress_listener.host_id_format)
            }),
        }
    }

    /// Builds the public [`Config`]. Map-form tunnels take the identity from `node`; `None`
    /// only if that is missing, which the cross-reference pass reports first.
    pub(crate) fn into_config(self) -> Option<Config> {
        let initiator = match self.initiator {
            None => None,
            Some(raw) => Some(raw.into_config(self.node.as_ref())?),
        };
        Some(Config {
            shards: self.shards,
            admin: self.admin,
            access_log: self.access_log,
            node: self.node,
            clusters: self.clusters,
            initiator,
            responder: self.responder,
            drain_timeout: self.drain_timeout,
        })
    }
}
