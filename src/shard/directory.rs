//! The directory: which shards hold tunnels for which host id of which tenant, shared by all
//! shards.
//!
//! Written only when tunnels come and go; read by a shard whose own registry has no tunnel for
//! a request's host (the cross-shard fallback) and by the acceptor to place a new tunnel on the
//! shard that holds the fewest tunnels of its node.

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
}

#[derive(Debug, Default)]
struct Inner {
    /// tenant → host id (node id or cluster id) → tunnels per shard.
    tenants: HashMap<String, HashMap<String, Vec<u32>>>,
    total: u32,
}

#[derive(Debug)]
pub struct Directory {
    shards: usize,
    max_tunnels: u32,
    max_per_node: u32,
    inner: Mutex<Inner>,
}

impl Directory {
    pub fn new(shards: usize, max_tunnels: u32, max_per_node: u32) -> Self {
        Self {
            shards,
            max_tunnels,
            max_per_node,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters behind; they stay usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a slot for a tunnel of `node` in `cluster` of `tenant` on the shard holding
    /// the fewest tunnels of that node (`preferred` on ties, to avoid a needless move).
    pub fn place(
        &self,
        tenant: &str,
        node: &str,
        cluster: &str,
        preferred: ShardId,
    ) -> Result<ShardId, PlaceError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.total >= self.max_tunnels {
            return Err(PlaceError::TooManyTunnels(self.max_tunnels));
        }
        let shards = self.shards;
        let hosts = inner.tenants.entry(tenant.to_owned()).or_default();
        let counts = hosts
            .entry(node.to_owned())
            .or_insert_with(|| vec![0; shards]);
        if counts.iter().sum::<u32>() >= self.max_per_node {
            return Err(PlaceError::TooManyForNode {
                node: node.to_owned(),
                max: self.max_per_node,
            });
        }
        let preferred = preferred.min(shards - 1);
        let mut target = preferred;
        for (shard, &count) in counts.iter().enumerate() {
            if count < counts[target] {
                target = shard;
            }
        }
        counts[target] += 1;
        if cluster != node {
            hosts
                .entry(cluster.to_owned())
                .or_insert_with(|| vec![0; shards])[target] += 1;
        }
        inner.total += 1;
        Ok(target)
    }

    /// Releases a slot taken by [`Directory::place`].
    pub fn release(&self, tenant: &str, node: &str, cluster: &str, shard: ShardId) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(hosts) = inner.tenants.get_mut(tenant) else {
            return;
        };
        let names: &[&str] = if node == cluster {
            &[node]
        } else {
            &[node, cluster]
        };
        for &host in names {
            if let Some(counts) = hosts.get_mut(host) {
                if let Some(c) = counts.get_mut(shard) {
                    *c = c.saturating_sub(1);
                }
                if counts.iter().all(|&c| c == 0) {
                    hosts.remove(host);
                }
            }
        }
        if hosts.is_empty() {
            inner.tenants.remove(tenant);
        }
        inner.total = inner.total.saturating_sub(1);
    }

    /// The shards (other than `except`) that hold tunnels of `tenant` for `host`, fullest
    /// first.
    pub fn shards_for(&self, tenant: &str, host: &str, except: ShardId) -> Vec<ShardId> {
        let inner = self.lock();
        let Some(counts) = inner.tenants.get(tenant).and_then(|hosts| hosts.get(host)) else {
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

    /// (tenant, host id, tunnels per shard), sorted, for the admin page.
    pub fn snapshot(&self) -> Vec<(String, String, Vec<u32>)> {
        let inner = self.lock();
        let mut hosts: Vec<_> = inner
            .tenants
            .iter()
            .flat_map(|(t, hosts)| {
                hosts
                    .iter()
                    .map(move |(h, c)| (t.clone(), h.clone(), c.clone()))
            })
            .collect();
        hosts.sort();
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_a_nodes_tunnels_over_shards() {
        let d = Directory::new(2, 100, 10);
        assert_eq!(d.place("", "n", "c", 0), Ok(0));
        assert_eq!(d.place("", "n", "c", 0), Ok(1));
        assert_eq!(
            d.place("", "n", "c", 1),
            Ok(1),
            "ties go to the preferred shard"
        );
        assert_eq!(d.shards_for("", "c", 5).len(), 2);
        assert_eq!(d.total(), 3);
    }

    #[test]
    fn release_forgets_empty_hosts() {
        let d = Directory::new(2, 100, 10);
        let s = d.place("", "n", "c", 1).expect("place");
        d.release("", "n", "c", s);
        assert!(d.shards_for("", "n", 9).is_empty());
        assert!(d.shards_for("", "c", 9).is_empty());
        assert_eq!(d.total(), 0);
    }

    #[test]
    fn node_equal_to_cluster_counts_once() {
        let d = Directory::new(1, 100, 10);
        let s = d.place("", "same", "same", 0).expect("place");
        assert_eq!(
            d.snapshot(),
            vec![(String::new(), "same".to_owned(), vec![1])]
        );
        d.release("", "same", "same", s);
        assert!(d.snapshot().is_empty());
    }

    #[test]
    fn limits() {
        let d = Directory::new(1, 2, 1);
        d.place("", "a", "c", 0).expect("first");
        assert!(matches!(
            d.place("", "a", "c", 0),
            Err(PlaceError::TooManyForNode { .. })
        ));
        d.place("", "b", "c", 0).expect("second");
        assert_eq!(d.place("", "c", "c", 0), Err(PlaceError::TooManyTunnels(2)));
    }

    #[test]
    fn tenants_have_separate_namespaces() {
        let d = Directory::new(2, 100, 1);
        let s = d.place("acme", "n", "c", 0).expect("acme's n");
        d.place("globex", "n", "c", 0)
            .expect("globex's n is another node: its own per-node cap");
        assert!(d.shards_for("initech", "n", 9).is_empty());
        assert_eq!(d.shards_for("acme", "c", 9).len(), 1);
        d.release("acme", "n", "c", s);
        assert!(d.shards_for("acme", "n", 9).is_empty());
        assert_eq!(d.shards_for("globex", "n", 9).len(), 1);
        assert_eq!(d.total(), 1);
    }
}
