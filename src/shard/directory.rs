//! The directory: which shards hold tunnels for which host id of which tenant, shared by all
//! shards.
//!
//! Written only when tunnels come and go; read by a shard whose own registry has no tunnel for
//! a request's host (the cross-shard fallback) and by the acceptor to place a new tunnel on the
//! shard that holds the fewest tunnels of its node.
//!
//! Per namespace (the registry's tenant key) it keeps node entries and cluster entries apart,
//! so that [`Directory::place`] can refuse, under the same lock that reserves the slot, a
//! handshake that would make a node id and a cluster id collide (DESIGN §10): two racing
//! handshakes cannot both pass. The per-node cap counts the tunnels of one node id *of one
//! tenant*, so a tunnel another tenant registers under the same node id never takes its slots.

use std::collections::HashMap;
use std::sync::Mutex;

use super::ShardId;

/// Why a tunnel may not be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaceError {
    #[error("the responder holds its maximum of {0} tunnels")]
    TooManyTunnels(u32),
    #[error("node {node} already holds its maximum of {max} tunnels")]
    TooManyForNode { node: String, max: u32 },
    /// The handshake's cluster id is a live node id, or its node id a live cluster id.
    #[error("{0}")]
    Collision(Collision),
}

/// Which ids would collide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Collision {
    #[error("cluster id {0} is the id of a live node")]
    ClusterIsNode(String),
    #[error("node id {0} is the id of a live cluster")]
    NodeIsCluster(String),
}

/// The tunnel a slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot<'a> {
    /// The registry's tenant key: the tenant when tenants are isolated, `""` while they share
    /// one namespace. Collisions are checked within it, because routing happens within it.
    pub namespace: &'a str,
    /// The tenant id of the tunnel (the per-node cap is per tenant and node id).
    pub tenant: &'a str,
    pub node: &'a str,
    pub cluster: &'a str,
}

/// Where a new tunnel may be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On any shard: the one holding the fewest tunnels of the node, `preferred` on ties.
    Spread { preferred: ShardId },
    /// Only on this shard: the connection cannot move (a TLS session lives where it was
    /// accepted).
    Fixed(ShardId),
}

#[derive(Debug)]
struct NodeEntry {
    /// Tunnels of this node id per shard, all tenants together (placement spreads them).
    per_shard: Vec<u32>,
    /// Tunnels of this node id per tenant (the per-node cap).
    per_tenant: HashMap<String, u32>,
}

/// One namespace's hosts.
#[derive(Debug, Default)]
struct Hosts {
    nodes: HashMap<String, NodeEntry>,
    /// Cluster id → tunnels of its nodes per shard.
    clusters: HashMap<String, Vec<u32>>,
}

impl Hosts {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.clusters.is_empty()
    }

    /// Node ids and cluster ids share one namespace; a node may carry its own cluster's id.
    fn collision(&self, node: &str, cluster: &str) -> Option<Collision> {
        if cluster != node && self.nodes.contains_key(cluster) {
            return Some(Collision::ClusterIsNode(cluster.to_owned()));
        }
        if cluster != node && self.clusters.contains_key(node) {
            return Some(Collision::NodeIsCluster(node.to_owned()));
        }
        None
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// namespace → hosts.
    namespaces: HashMap<String, Hosts>,
    total: u32,
    /// `max_tunnels` (changed by a reload: [`Directory::set_limits`]).
    max_tunnels: u32,
    /// `max_tunnels_per_node`.
    max_per_node: u32,
}

#[derive(Debug)]
pub struct Directory {
    shards: usize,
    inner: Mutex<Inner>,
}

impl Directory {
    pub fn new(shards: usize, max_tunnels: u32, max_per_node: u32) -> Self {
        Self {
            shards,
            inner: Mutex::new(Inner {
                max_tunnels,
                max_per_node,
                ..Inner::default()
            }),
        }
    }

    /// New caps (a configuration reload). They apply to the next placements: tunnels already
    /// placed above a lowered cap are kept, and new ones are refused until enough have closed.
    pub fn set_limits(&self, max_tunnels: u32, max_per_node: u32) {
        let mut inner = self.lock();
        inner.max_tunnels = max_tunnels;
        inner.max_per_node = max_per_node;
    }

    /// The caps in force: (`max_tunnels`, `max_tunnels_per_node`).
    pub fn limits(&self) -> (u32, u32) {
        let inner = self.lock();
        (inner.max_tunnels, inner.max_per_node)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters behind; they stay usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a slot for a tunnel of `slot.node`: with [`Placement::Spread`] on the shard
    /// holding the fewest tunnels of that node (`preferred` on ties, to avoid a needless move),
    /// with [`Placement::Fixed`] on that shard. Refuses, in this order: the responder's total
    /// cap, a node id / cluster id collision, the per-node cap of (`slot.tenant`, `slot.node`).
    pub fn place(&self, slot: Slot<'_>, placement: Placement) -> Result<ShardId, PlaceError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.total >= inner.max_tunnels {
            return Err(PlaceError::TooManyTunnels(inner.max_tunnels));
        }
        let shards = self.shards;
        if let Some(hosts) = inner.namespaces.get(slot.namespace) {
            if let Some(collision) = hosts.collision(slot.node, slot.cluster) {
                return Err(PlaceError::Collision(collision));
            }
            let held = hosts
                .nodes
                .get(slot.node)
                .and_then(|n| n.per_tenant.get(slot.tenant))
                .copied()
                .unwrap_or(0);
            if held >= inner.max_per_node {
                return Err(PlaceError::TooManyForNode {
                    node: slot.node.to_owned(),
                    max: inner.max_per_node,
                });
            }
        }
        let hosts = inner
            .namespaces
            .entry(slot.namespace.to_owned())
            .or_default();
        let node = hosts
            .nodes
            .entry(slot.node.to_owned())
            .or_insert_with(|| NodeEntry {
                per_shard: vec![0; shards],
                per_tenant: HashMap::new(),
            });
        let counts = &node.per_shard;
        let target = match placement {
            Placement::Fixed(shard) => shard.min(shards - 1),
            Placement::Spread { preferred } => {
                let mut target = preferred.min(shards - 1);
                for (shard, &count) in counts.iter().enumerate() {
                    if count < counts[target] {
                        target = shard;
                    }
                }
                target
            }
        };
        node.per_shard[target] += 1;
        *node.per_tenant.entry(slot.tenant.to_owned()).or_default() += 1;
        hosts
            .clusters
            .entry(slot.cluster.to_owned())
            .or_insert_with(|| vec![0; shards])[target] += 1;
        inner.total += 1;
        Ok(target)
    }

    /// Releases a slot taken by [`Directory::place`].
    pub fn release(&self, slot: Slot<'_>, shard: ShardId) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(hosts) = inner.namespaces.get_mut(slot.namespace) else {
            return;
        };
        if let Some(node) = hosts.nodes.get_mut(slot.node) {
            if let Some(c) = node.per_shard.get_mut(shard) {
                *c = c.saturating_sub(1);
            }
            if let Some(c) = node.per_tenant.get_mut(slot.tenant) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    node.per_tenant.remove(slot.tenant);
                }
            }
            if node.per_shard.iter().all(|&c| c == 0) {
                hosts.nodes.remove(slot.node);
            }
        }
        if let Some(counts) = hosts.clusters.get_mut(slot.cluster) {
            if let Some(c) = counts.get_mut(shard) {
                *c = c.saturating_sub(1);
            }
            if counts.iter().all(|&c| c == 0) {
                hosts.clusters.remove(slot.cluster);
            }
        }
        if hosts.is_empty() {
            inner.namespaces.remove(slot.namespace);
        }
        inner.total = inner.total.saturating_sub(1);
    }

    /// Whether a handshake of `node` in `cluster` would collide with a live id of
    /// `namespace` now (`place` checks the same under its lock).
    pub fn collision(&self, namespace: &str, node: &str, cluster: &str) -> Option<Collision> {
        let inner = self.lock();
        inner.namespaces.get(namespace)?.collision(node, cluster)
    }

    /// The shards (other than `except`) that hold tunnels of `namespace` for `host`, fullest
    /// first. A host is looked up as a cluster id first, then as a node id, as the registry
    /// does.
    pub fn shards_for(&self, namespace: &str, host: &str, except: ShardId) -> Vec<ShardId> {
        let inner = self.lock();
        let Some(hosts) = inner.namespaces.get(namespace) else {
            return Vec::new();
        };
        let Some(counts) = hosts
            .clusters
            .get(host)
            .or_else(|| hosts.nodes.get(host).map(|n| &n.per_shard))
        else {
            return Vec::new();
        };
        let mut shards: Vec<ShardId> = (0..counts.len())
            .filter(|&s| s != except && counts[s] > 0)
            .collect();
        shards.sort_by_key(|&s| std::cmp::Reverse(counts[s]));
        shards
    }

    /// Total tunnels across all shards.
    pub fn total(&self) -> u32 {
        self.lock().total
    }

    /// (namespace, host id, tunnels per shard), sorted, for the admin page. A host id that is
    /// both a cluster and a node (a node carrying its own cluster's id) is listed once, with the
    /// cluster's counts, which include the node's.
    pub fn snapshot(&self) -> Vec<(String, String, Vec<u32>)> {
        let inner = self.lock();
        let mut hosts: Vec<_> = inner
            .namespaces
            .iter()
            .flat_map(|(ns, hosts)| {
                let clusters = hosts
                    .clusters
                    .iter()
                    .map(move |(h, c)| (ns.clone(), h.clone(), c.clone()));
                let nodes = hosts
                    .nodes
                    .iter()
                    .filter(|(h, _)| !hosts.clusters.contains_key(*h))
                    .map(move |(h, n)| (ns.clone(), h.clone(), n.per_shard.clone()));
                clusters.chain(nodes)
            })
            .collect();
        hosts.sort();
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot<'a>(tenant: &'a str, node: &'a str, cluster: &'a str) -> Slot<'a> {
        Slot {
            namespace: "",
            tenant,
            node,
            cluster,
        }
    }

    fn isolated<'a>(tenant: &'a str, node: &'a str, cluster: &'a str) -> Slot<'a> {
        Slot {
            namespace: tenant,
            ..slot(tenant, node, cluster)
        }
    }

    #[test]
    fn lowered_caps_keep_placed_tunnels_and_refuse_new_ones() {
        let d = Directory::new(1, 100, 10);
        let spread = Placement::Spread { preferred: 0 };
        for _ in 0..3 {
            d.place(slot("", "n", "c"), spread).expect("under the caps");
        }
        d.set_limits(2, 1);
        assert_eq!(d.limits(), (2, 1));
        assert_eq!(
            d.place(slot("", "m", "c"), spread),
            Err(PlaceError::TooManyTunnels(2))
        );
        // The three placed tunnels stay; once they drop below the new caps, placing works.
        d.release(slot("", "n", "c"), 0);
        d.release(slot("", "n", "c"), 0);
        assert_eq!(
            d.place(slot("", "n", "c"), spread),
            Err(PlaceError::TooManyForNode {
                node: "n".into(),
                max: 1
            })
        );
        assert_eq!(d.place(slot("", "m", "c"), spread), Ok(0));
    }

    #[test]
    fn spreads_a_nodes_tunnels_over_shards() {
        let d = Directory::new(2, 100, 10);
        assert_eq!(
            d.place(slot("", "n", "c"), Placement::Spread { preferred: 0 }),
            Ok(0)
        );
        assert_eq!(
            d.place(slot("", "n", "c"), Placement::Spread { preferred: 0 }),
            Ok(1)
        );
        assert_eq!(
            d.place(slot("", "n", "c"), Placement::Spread { preferred: 1 }),
            Ok(1),
            "ties go to the preferred shard"
        );
        assert_eq!(d.shards_for("", "c", 5).len(), 2);
        assert_eq!(d.shards_for("", "n", 5), vec![1, 0], "fullest first");
        assert_eq!(d.total(), 3);
    }

    #[test]
    fn release_forgets_empty_hosts() {
        let d = Directory::new(2, 100, 10);
        let s = d
            .place(slot("t", "n", "c"), Placement::Spread { preferred: 1 })
            .expect("place");
        d.release(slot("t", "n", "c"), s);
        assert!(d.shards_for("", "n", 9).is_empty());
        assert!(d.shards_for("", "c", 9).is_empty());
        assert!(d.snapshot().is_empty());
        assert_eq!(d.total(), 0);
    }

    #[test]
    fn fixed_placement_stays_on_its_shard() {
        let d = Directory::new(2, 100, 10);
        for _ in 0..3 {
            assert_eq!(d.place(slot("", "n", "c"), Placement::Fixed(1)), Ok(1));
        }
        assert_eq!(d.shards_for("", "n", 0), [1]);
    }

    #[test]
    fn node_equal_to_cluster_is_listed_once() {
        let d = Directory::new(1, 100, 10);
        let s = d
            .place(slot("", "same", "same"), Placement::Spread { preferred: 0 })
            .expect("place");
        assert_eq!(
            d.snapshot(),
            vec![(String::new(), "same".to_owned(), vec![1])]
        );
        d.release(slot("", "same", "same"), s);
        assert!(d.snapshot().is_empty());
    }

    #[test]
    fn limits() {
        let d = Directory::new(1, 2, 1);
        d.place(slot("", "a", "c"), Placement::Spread { preferred: 0 })
            .expect("first");
        assert!(matches!(
            d.place(slot("", "a", "c"), Placement::Spread { preferred: 0 }),
            Err(PlaceError::TooManyForNode { .. })
        ));
        d.place(slot("", "b", "c"), Placement::Spread { preferred: 0 })
            .expect("second");
        assert_eq!(
            d.place(slot("", "x", "c"), Placement::Spread { preferred: 0 }),
            Err(PlaceError::TooManyTunnels(2))
        );
    }

    #[test]
    fn the_per_node_cap_is_per_tenant() {
        let d = Directory::new(1, 100, 2);
        for _ in 0..2 {
            d.place(slot("acme", "n", "c"), Placement::Spread { preferred: 0 })
                .expect("acme's n");
        }
        assert!(matches!(
            d.place(slot("acme", "n", "c"), Placement::Spread { preferred: 0 }),
            Err(PlaceError::TooManyForNode { .. })
        ));
        // Another tenant's tunnels under the same node id have their own count, in a shared
        // namespace too, and never fill acme's.
        for _ in 0..2 {
            d.place(slot("globex", "n", "c"), Placement::Spread { preferred: 0 })
                .expect("globex's n");
        }
        d.release(slot("acme", "n", "c"), 0);
        d.place(slot("acme", "n", "c"), Placement::Spread { preferred: 0 })
            .expect("acme's freed slot is acme's again");
        assert_eq!(d.total(), 4);
    }

    #[test]
    fn tenants_have_separate_namespaces() {
        let d = Directory::new(2, 100, 1);
        let s = d
            .place(
                isolated("acme", "n", "c"),
                Placement::Spread { preferred: 0 },
            )
            .expect("acme's n");
        d.place(
            isolated("globex", "n", "c"),
            Placement::Spread { preferred: 0 },
        )
        .expect("globex's n is another node: its own per-node cap");
        assert!(d.shards_for("initech", "n", 9).is_empty());
        assert_eq!(d.shards_for("acme", "c", 9).len(), 1);
        d.release(isolated("acme", "n", "c"), s);
        assert!(d.shards_for("acme", "n", 9).is_empty());
        assert_eq!(d.shards_for("globex", "n", 9).len(), 1);
        assert_eq!(d.total(), 1);
        // A collision is within a namespace only.
        d.place(
            isolated("acme", "x", "n"),
            Placement::Spread { preferred: 0 },
        )
        .expect("acme has no node n any more; globex's n is in another namespace");
    }

    #[test]
    fn node_and_cluster_ids_share_one_namespace() {
        let d = Directory::new(2, 100, 10);
        d.place(slot("t", "n1", "c1"), Placement::Spread { preferred: 0 })
            .expect("n1");
        let cluster_is_node = d.place(slot("t", "evil", "n1"), Placement::Spread { preferred: 0 });
        assert_eq!(
            cluster_is_node,
            Err(PlaceError::Collision(Collision::ClusterIsNode("n1".into())))
        );
        let node_is_cluster = d.place(slot("t", "c1", "c9"), Placement::Spread { preferred: 0 });
        assert_eq!(
            node_is_cluster,
            Err(PlaceError::Collision(Collision::NodeIsCluster("c1".into())))
        );
        assert_eq!(
            d.collision("", "evil", "n1"),
            Some(Collision::ClusterIsNode("n1".into()))
        );
        assert_eq!(d.collision("", "n2", "c1"), None);
        assert_eq!(d.total(), 1, "refused handshakes reserve nothing");
        // Joining a cluster, and a node carrying its own cluster's id, are fine.
        d.place(slot("t", "n2", "c1"), Placement::Spread { preferred: 0 })
            .expect("n2 joins c1");
        d.place(
            slot("t", "solo", "solo"),
            Placement::Spread { preferred: 0 },
        )
        .expect("node id == own cluster id");
        d.place(
            slot("t", "solo", "solo"),
            Placement::Spread { preferred: 0 },
        )
        .expect("and again");
        // ... but no other node may then join a cluster named after the live node `solo`.
        assert!(matches!(
            d.place(slot("t", "n3", "solo"), Placement::Spread { preferred: 0 }),
            Err(PlaceError::Collision(_))
        ));
        // Once the node is gone its id is free for a cluster.
        d.release(slot("t", "n1", "c1"), 0);
        d.place(slot("t", "evil", "n1"), Placement::Spread { preferred: 0 })
            .expect("n1 is no longer a live node");
    }

    #[test]
    fn racing_collisions_cannot_both_pass() {
        // Two handshakes that collide with each other (a node `a` in cluster `b`, a node `b` in
        // cluster `a`), placed from many threads at once: exactly one kind wins.
        for _ in 0..20 {
            let d = std::sync::Arc::new(Directory::new(4, 10_000, 10_000));
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let d = d.clone();
                    std::thread::spawn(move || {
                        let (node, cluster) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
                        (0..50)
                            .filter(|_| {
                                d.place(
                                    slot("", node, cluster),
                                    Placement::Spread { preferred: i % 4 },
                                )
                                .is_ok()
                            })
                            .map(|_| node)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut winners: Vec<&str> = threads
                .into_iter()
                .flat_map(|t| t.join().expect("thread"))
                .collect();
            winners.dedup();
            assert_eq!(winners.len(), 1, "both sides placed: {winners:?}");
        }
    }
}
