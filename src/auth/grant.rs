//! What one credential allows: a tenant, and the node ids and cluster ids it may register.
//!
//! Every credential, whatever its kind (a static token, a JWT's claims), comes down to a
//! [`Grant`]; authorization is one function over it. The tenant must equal the handshake's
//! tenant id exactly (the empty tenant is a tenant like any other); the node id and the cluster
//! id must each match one of the grant's patterns.

use super::patterns::{any_matches, IdPattern};
use super::Denial;
use crate::protocol::TunnelIdentity;

/// The identities one credential may claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The tenant id the handshake must carry.
    pub tenant: String,
    /// Node ids it may register (at least one pattern for anything to pass).
    pub nodes: Vec<IdPattern>,
    /// Cluster ids it may register.
    pub clusters: Vec<IdPattern>,
}

impl Grant {
    /// `Ok` when `identity` is within this grant, else a 403 naming which id is not allowed.
    pub fn authorize(&self, identity: &TunnelIdentity) -> Result<(), Denial> {
        if identity.tenant_id != self.tenant {
            return Err(Denial::forbidden(
                "the credential does not allow this tenant id",
            ));
        }
        if !any_matches(&self.nodes, &identity.node_id) {
            return Err(Denial::forbidden(
                "the credential does not allow this node id",
            ));
        }
        if !any_matches(&self.clusters, &identity.cluster_id) {
            return Err(Denial::forbidden(
                "the credential does not allow this cluster id",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(tenant: &str, node: &str, cluster: &str) -> TunnelIdentity {
        TunnelIdentity {
            node_id: node.into(),
            cluster_id: cluster.into(),
            tenant_id: tenant.into(),
        }
    }

    fn grant(tenant: &str, nodes: &[&str], clusters: &[&str]) -> Grant {
        let parse = |ps: &[&str]| {
            ps.iter()
                .map(|p| IdPattern::parse(p).expect("pattern"))
                .collect()
        };
        Grant {
            tenant: tenant.into(),
            nodes: parse(nodes),
            clusters: parse(clusters),
        }
    }

    #[test]
    fn tenant_node_and_cluster_are_all_bound() {
        let g = grant("acme", &["edge-*", "core"], &["west"]);
        assert_eq!(g.authorize(&identity("acme", "edge-1", "west")), Ok(()));
        assert_eq!(g.authorize(&identity("acme", "core", "west")), Ok(()));
        for (t, n, c) in [
            ("globex", "edge-1", "west"),
            ("", "edge-1", "west"),
            ("acme", "core-1", "west"),
            ("acme", "edge-1", "east"),
        ] {
            let denial = g.authorize(&identity(t, n, c));
            assert!(matches!(denial, Err(Denial::Forbidden(_))), "{t} {n} {c}");
        }
    }

    #[test]
    fn empty_tenant_and_empty_lists() {
        let g = grant("", &["*"], &["*"]);
        assert_eq!(g.authorize(&identity("", "n", "c")), Ok(()));
        assert!(g.authorize(&identity("acme", "n", "c")).is_err());
        let nothing = grant("", &[], &[]);
        assert!(nothing.authorize(&identity("", "n", "c")).is_err());
    }
}
