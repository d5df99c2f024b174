//! The `rc://` tunnel address (Envoy's form):
//! `rc://<node>:<cluster>:<tenant>@<remote_cluster>:<connection_count>`.
//!
//! This module owns [`TunnelSpec`], what such an address says, and its parsing. As in Envoy:
//! exactly one `@`; three `:`-separated fields before it (node and cluster non-empty, tenant may
//! be empty), two after it (the remote cluster name and a non-negative integer count). Ids are
//! further checked with [`validate_id`]. Every error names the offending string.

use super::node::NodeIdentity;
use crate::protocol::ids::{validate_id, IdError};

/// The scheme every tunnel address starts with.
pub const RC_SCHEME: &str = "rc://";

/// One tunnel group: dial `connections` tunnels to `remote_cluster` announcing `identity`.
/// An `rc://` address says all three; the map form `{ cluster, connections }` takes the
/// identity from `node:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Identity to announce.
    pub identity: NodeIdentity,
    /// Name of the cluster (in `clusters:`) of the responder(s) to dial.
    pub remote_cluster: String,
    /// Number of tunnels, split across shards (0 is allowed and dials nothing).
    pub connections: u32,
}

/// A rejected `rc://` address: the whole address plus the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rc:// address `{address}`: {reason}; expected rc://<node>:<cluster>:<tenant>@<remote_cluster>:<count>")]
pub struct RcAddressError {
    /// The address as written.
    pub address: String,
    /// What is wrong with it.
    pub reason: RcReason,
}

/// Why an `rc://` address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RcReason {
    /// It does not start with `rc://`.
    #[error("it must start with `rc://`")]
    MissingScheme,
    /// It does not contain exactly one `@`.
    #[error("it must contain exactly one `@`, found {0}")]
    AtCount(usize),
    /// The part before `@` does not have exactly three `:`-separated fields.
    #[error(
        "the part before `@` must have three `:`-separated fields (node:cluster:tenant), found {0}"
    )]
    FieldsBefore(usize),
    /// The part after `@` does not have exactly two `:`-separated fields.
    #[error(
        "the part after `@` must have two `:`-separated fields (remote_cluster:count), found {0}"
    )]
    FieldsAfter(usize),
    /// The node id is empty.
    #[error("the node id is empty")]
    EmptyNode,
    /// The cluster id is empty.
    #[error("the cluster id is empty")]
    EmptyCluster,
    /// The remote cluster name is empty.
    #[error("the remote cluster name is empty")]
    EmptyRemoteCluster,
    /// An id breaks the id rule ([`validate_id`]).
    #[error("the {field} id `{value}` {error}")]
    InvalidId {
        /// `node`, `cluster` or `tenant`.
        field: &'static str,
        /// The rejected id.
        value: String,
        /// Why.
        error: IdError,
    },
    /// The connection count is negative.
    #[error("the connection count `{0}` is negative; it must be a non-negative integer")]
    NegativeCount(String),
    /// The connection count is not a decimal integer.
    #[error("the connection count `{0}` is not a non-negative integer")]
    NonNumericCount(String),
    /// The connection count does not fit in a `u32`.
    #[error("the connection count `{0}` is too large (at most 4294967295)")]
    CountTooLarge(String),
}

/// Parses one `rc://` address into a [`TunnelSpec`].
pub fn parse_rc_address(s: &str) -> Result<TunnelSpec, RcAddressError> {
    parse_inner(s).map_err(|reason| RcAddressError {
        address: s.to_owned(),
        reason,
    })
}

fn parse_inner(s: &str) -> Result<TunnelSpec, RcReason> {
    let rest = s.strip_prefix(RC_SCHEME).ok_or(RcReason::MissingScheme)?;
    let ats = rest.matches('@').count();
    let Some((before, after)) = rest.split_once('@').filter(|_| ats == 1) else {
        return Err(RcReason::AtCount(ats));
    };

    let local: Vec<&str> = before.split(':').collect();
    let [node, cluster, tenant] = local[..] else {
        return Err(RcReason::FieldsBefore(local.len()));
    };
    let remote: Vec<&str> = after.split(':').collect();
    let [remote_cluster, count] = remote[..] else {
        return Err(RcReason::FieldsAfter(remote.len()));
    };

    if node.is_empty() {
        return Err(RcReason::EmptyNode);
    }
    if cluster.is_empty() {
        return Err(RcReason::EmptyCluster);
    }
    if remote_cluster.is_empty() {
        return Err(RcReason::EmptyRemoteCluster);
    }
    for (field, value, allow_empty) in [
        ("node", node, false),
        ("cluster", cluster, false),
        ("tenant", tenant, true),
    ] {
        validate_id(value, allow_empty).map_err(|error| RcReason::InvalidId {
            field,
            value: value.to_owned(),
            error,
        })?;
    }
    let connections = parse_count(count)?;

    Ok(TunnelSpec {
        identity: NodeIdentity {
            id: node.to_owned(),
            cluster: cluster.to_owned(),
            tenant: tenant.to_owned(),
        },
        remote_cluster: remote_cluster.to_owned(),
        connections,
    })
}

/// Decimal digits only: `u32::from_str` would also take a leading `+`.
fn parse_count(count: &str) -> Result<u32, RcReason> {
    if count.starts_with('-') {
        return Err(RcReason::NegativeCount(count.to_owned()));
    }
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RcReason::NonNumericCount(count.to_owned()));
    }
    count
        .parse::<u32>()
        .map_err(|_| RcReason::CountTooLarge(count.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> RcReason {
        match parse_rc_address(s) {
            Ok(spec) => panic!("`{s}` was accepted as {spec:?}"),
            Err(err) => {
                assert_eq!(err.address, s);
                assert!(err.to_string().contains(s), "message must name the string");
                err.reason
            }
        }
    }

    #[test]
    fn accepts_full_address() {
        let spec = parse_rc_address("rc://edge-42:edge-west:acme@cloud:2").unwrap();
        assert_eq!(spec.identity.id, "edge-42");
        assert_eq!(spec.identity.cluster, "edge-west");
        assert_eq!(spec.identity.tenant, "acme");
        assert_eq!(spec.remote_cluster, "cloud");
        assert_eq!(spec.connections, 2);
    }

    #[test]
    fn accepts_empty_tenant() {
        let spec = parse_rc_address("rc://n:c:@r:1").unwrap();
        assert_eq!(spec.identity.tenant, "");
    }

    #[test]
    fn accepts_count_zero_and_max() {
        assert_eq!(parse_rc_address("rc://n:c:t@r:0").unwrap().connections, 0);
        assert_eq!(
            parse_rc_address("rc://n:c:t@r:4294967295")
                .unwrap()
                .connections,
            u32::MAX
        );
    }

    #[test]
    fn rejects_missing_scheme() {
        assert_eq!(reason("n:c:t@r:1"), RcReason::MissingScheme);
        assert_eq!(reason("http://n:c:t@r:1"), RcReason::MissingScheme);
        assert_eq!(reason("RC://n:c:t@r:1"), RcReason::MissingScheme);
    }

    #[test]
    fn rejects_zero_at() {
        assert_eq!(reason("rc://n:c:t:r:1"), RcReason::AtCount(0));
    }

    #[test]
    fn rejects_two_at() {
        assert_eq!(reason("rc://n:c:t@r@x:1"), RcReason::AtCount(2));
    }

    #[test]
    fn rejects_two_fields_before() {
        assert_eq!(reason("rc://n:c@r:1"), RcReason::FieldsBefore(2));
    }

    #[test]
    fn rejects_four_fields_before() {
        assert_eq!(reason("rc://n:c:t:x@r:1"), RcReason::FieldsBefore(4));
    }

    #[test]
    fn rejects_empty_node() {
        assert_eq!(reason("rc://:c:t@r:1"), RcReason::EmptyNode);
    }

    #[test]
    fn rejects_empty_cluster() {
        assert_eq!(reason("rc://n::t@r:1"), RcReason::EmptyCluster);
    }

    #[test]
    fn rejects_one_field_after() {
        assert_eq!(reason("rc://n:c:t@r"), RcReason::FieldsAfter(1));
    }

    #[test]
    fn rejects_three_fields_after() {
        assert_eq!(reason("rc://n:c:t@r:1:2"), RcReason::FieldsAfter(3));
    }

    #[test]
    fn rejects_empty_remote_cluster() {
        assert_eq!(reason("rc://n:c:t@:1"), RcReason::EmptyRemoteCluster);
    }

    #[test]
    fn rejects_negative_count() {
        assert_eq!(
            reason("rc://n:c:t@r:-1"),
            RcReason::NegativeCount("-1".into())
        );
    }

    #[test]
    fn rejects_non_numeric_count() {
        for count in ["x", "", "1.5", "+1", " 1", "0x10"] {
            assert_eq!(
                reason(&format!("rc://n:c:t@r:{count}")),
                RcReason::NonNumericCount(count.into()),
                "count {count:?}"
            );
        }
    }

    #[test]
    fn rejects_overflowing_count() {
        assert_eq!(
            reason("rc://n:c:t@r:4294967296"),
            RcReason::CountTooLarge("4294967296".into())
        );
    }

    #[test]
    fn rejects_ids_that_break_the_id_rule() {
        assert!(matches!(
            reason("rc://n o:c:t@r:1"),
            RcReason::InvalidId { field: "node", .. }
        ));
        assert!(matches!(
            reason("rc://n:c:t\u{e9}@r:1"),
            RcReason::InvalidId {
                field: "tenant",
                ..
            }
        ));
    }
}
