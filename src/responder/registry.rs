//! A shard's registry: its own tunnels, keyed by host id (node id and cluster id).
//!
//! Owned by one shard and never locked. A host id is looked up first as a cluster id
//! (round-robin over that cluster's nodes), then as a node id; within a node the tunnel with the
//! fewest active streams that still has stream capacity wins.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::TunnelIdentity;

/// One tunnel as the egress path sees it.
#[derive(Debug)]
pub struct TunnelHandle {
    pub id: u64,
    pub identity: TunnelIdentity,
    pub send: h2::client::SendRequest<Bytes>,
    /// Streams in flight; shared with [`StreamGuard`]s, which may travel to another shard with a
    /// response body.
    active: Arc<AtomicUsize>,
    max_streams: usize,
}

impl TunnelHandle {
    pub fn new(
        id: u64,
        identity: TunnelIdentity,
        send: h2::client::SendRequest<Bytes>,
        max_streams: usize,
    ) -> Self {
        Self {
            id,
            identity,
            send,
            active: Arc::new(AtomicUsize::new(0)),
            max_streams: max_streams.max(1),
        }
    }

    pub fn active_streams(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn has_capacity(&self) -> bool {
        self.active_streams() < self.max_streams
    }

    /// Counts a stream as active until the guard drops.
    pub fn stream_guard(&self) -> StreamGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.active.clone())
    }
}

/// Keeps a stream counted as active on its tunnel.
#[derive(Debug)]
pub struct StreamGuard(Arc<AtomicUsize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct ClusterEntry {
    nodes: Vec<String>,
    next: usize,
}

/// The tunnels of one shard.
#[derive(Debug, Default)]
pub struct Registry {
    nodes: HashMap<String, Vec<Rc<TunnelHandle>>>,
    clusters: HashMap<String, ClusterEntry>,
}

impl Registry {
    pub fn insert(&mut self, tunnel: Rc<TunnelHandle>) {
        let node = tunnel.identity.node_id.clone();
        let cluster = tunnel.identity.cluster_id.clone();
        let tunnels = self.nodes.entry(node.clone()).or_default();
        let first_of_node = tunnels.is_empty();
        tunnels.push(tunnel);
        if first_of_node {
            let entry = self.clusters.entry(cluster).or_default();
            if !entry.nodes.contains(&node) {
                entry.nodes.push(node);
            }
        }
    }

    /// Removes a tunnel at once; a node left without tunnels leaves its cluster.
    pub fn remove(&mut self, id: u64, identity: &TunnelIdentity) {
        let Some(tunnels) = self.nodes.get_mut(&identity.node_id) else {
            return;
        };
        tunnels.retain(|t| t.id != id);
        if tunnels.is_empty() {
            self.nodes.remove(&identity.node_id);
            if let Some(entry) = self.clusters.get_mut(&identity.cluster_id) {
                entry.nodes.retain(|n| n != &identity.node_id);
                if entry.nodes.is_empty() {
                    self.clusters.remove(&identity.cluster_id);
                }
            }
        }
    }

    /// Picks a tunnel for `host_id`: as a cluster id first, then as a node id.
    pub fn pick(&mut self, host_id: &str) -> Option<Rc<TunnelHandle>> {
        if let Some(entry) = self.clusters.get_mut(host_id) {
            let n = entry.nodes.len();
            for step in 0..n {
                let node = &entry.nodes[(entry.next + step) % n];
                if let Some(t) = self.nodes.get(node).and_then(|ts| least_loaded(ts)) {
                    entry.next = (entry.next + step + 1) % n;
                    return Some(t);
                }
            }
        }
        self.nodes.get(host_id).and_then(|ts| least_loaded(ts))
    }

    /// Drops empty entries; returns how many were swept. Removal is eager, so this is a
    /// safety net run every `cleanup_interval`.
    pub fn sweep(&mut self) -> usize {
        let before = self.nodes.len() + self.clusters.len();
        self.nodes.retain(|_, ts| !ts.is_empty());
        let nodes = &self.nodes;
        for entry in self.clusters.values_mut() {
            entry.nodes.retain(|n| nodes.contains_key(n));
        }
        self.clusters.retain(|_, e| !e.nodes.is_empty());
        before - (self.nodes.len() + self.clusters.len())
    }

    pub fn tunnels(&self) -> impl Iterator<Item = &Rc<TunnelHandle>> {
        self.nodes.values().flatten()
    }

    /// Takes every tunnel out (drain): no new streams are opened on them.
    pub fn clear(&mut self) -> Vec<Rc<TunnelHandle>> {
        self.clusters.clear();
        self.nodes.drain().flat_map(|(_, ts)| ts).collect()
    }
}

fn least_loaded(tunnels: &[Rc<TunnelHandle>]) -> Option<Rc<TunnelHandle>> {
    tunnels
        .iter()
        .filter(|t| t.has_capacity())
        .min_by_key(|t| t.active_streams())
        .cloned()
}
