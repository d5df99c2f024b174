//! `node:`: the initiator's identity, what it announces in the handshake (ARCHITECTURE.md §3; README, "Configuration reference").

use serde::{Deserialize, Deserializer};

use super::de::with_str;
use crate::protocol::ids::validate_id;

/// An initiator identity: what it announces in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a node identity such as `{ id: edge-42, cluster: edge-west, tenant: acme }`"
)]
pub struct NodeIdentity {
    /// Node id: 1..=255 bytes of visible ASCII without `:`.
    #[serde(deserialize_with = "node_id")]
    pub id: String,
    /// Cluster id: same rule as the node id.
    #[serde(deserialize_with = "cluster_id")]
    pub cluster: String,
    /// Tenant id: same rule, may be empty (default "").
    #[serde(default, deserialize_with = "tenant_id")]
    pub tenant: String,
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
fn node_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_field(d, "node id", false)
}

/// `node.cluster`.
fn cluster_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_field(d, "cluster id", false)
}

/// `node.tenant` (may be empty).
fn tenant_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_field(d, "tenant id", true)
}
