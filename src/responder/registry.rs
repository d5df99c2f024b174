//! A shard's registry: its own tunnels, keyed by tenant, then by host id (node id and cluster
//! id).
//!
//! Owned by one shard and never locked. Within a tenant, a host id is looked up first as a
//! cluster id (round-robin over that cluster's nodes), then as a node id; within a node the
//! tunnel with the fewest active streams that still has stream capacity wins. Tenants never see
//! each other's hosts: a lookup names its tenant.
//!
//! Health: a tunnel that answers PINGs but lets its streams time out (the egress route
//! timeout, 504) is marked unhealthy after `unhealthy_after_timeouts` in a row
//! ([`TunnelHealth`]). Picks then avoid it: a node's healthy tunnels first, a cluster's nodes
//! with a healthy tunnel first; an unhealthy tunnel is used only when nothing else can take the
//! request, and once per `unhealthy_probe_interval` as a probe. Any response head through it
//! makes it healthy again.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::http::body::ParkingLot;
use crate::protocol::TunnelIdentity;
pub use crate::tunnel::info::StreamGuard;

/// One tunnel as the egress path sees it.
#[derive(Debug)]
pub struct TunnelHandle {
    pub id: u64,
    pub identity: TunnelIdentity,
    pub send: h2::client::SendRequest<Bytes>,
    /// Where the tunnel's response bodies park what their clients have not read yet
    /// (`http::body::parking`); the tunnel's driver applies its connection target.
    pub parking: ParkingLot,
    /// Streams in flight; shared with [`StreamGuard`]s, which may travel to another shard with a
    /// response body.
    active: Arc<AtomicUsize>,
    max_streams: usize,
    /// Whether its streams time out; shared with the requests it carries, which may be
    /// another shard's.
    pub health: Arc<TunnelHealth>,
}

impl TunnelHandle {
    /// `probe_interval`: how often an unhealthy tunnel still gets one request.
    pub fn new(
        id: u64,
        identity: TunnelIdentity,
        send: h2::client::SendRequest<Bytes>,
        parking: ParkingLot,
        max_streams: usize,
        probe_interval: Duration,
    ) -> Self {
        Self {
            id,
            identity,
            send,
            parking,
            active: Arc::new(AtomicUsize::new(0)),
            max_streams: max_streams.max(1),
            health: Arc::new(TunnelHealth::new(probe_interval)),
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
        StreamGuard::new(&self.active)
    }

    /// The count of its active streams, for its `/tunnels` entry (`tunnel::info`).
    pub fn stream_count(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }
}

impl crate::tunnel::info::Health for TunnelHealth {
    fn is_unhealthy(&self) -> bool {
        TunnelHealth::is_unhealthy(self)
    }
}

/// How a pick ranks a tunnel: lower is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Unhealthy, and its probe is due: one request goes to it.
    ProbeDue,
    Healthy,
    /// Unhealthy: only when nothing else can take the request.
    Unhealthy,
}

/// A tunnel's health as its requests report it: consecutive route timeouts, and since when it
/// is unhealthy. Atomics: a request carried for another shard reports from there.
#[derive(Debug)]
pub struct TunnelHealth {
    /// Route timeouts in a row (reset by any response head).
    timeouts: AtomicU32,
    /// Milliseconds since `created` (plus one) when it was marked unhealthy, or its last probe
    /// started; 0 while healthy.
    unhealthy_since: AtomicU64,
    created: Instant,
    probe_interval: Duration,
}

impl TunnelHealth {
    pub fn new(probe_interval: Duration) -> Self {
        Self {
            timeouts: AtomicU32::new(0),
            unhealthy_since: AtomicU64::new(0),
            created: Instant::now(),
            probe_interval,
        }
    }

    /// Milliseconds since creation, plus one (0 means "healthy").
    fn now(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX / 2) + 1
    }

    /// A route timeout on this tunnel. `threshold`: timeouts in a row that make it unhealthy
    /// (0: never). Returns true when this one marked it unhealthy (it was healthy before); a
    /// failed probe keeps it unhealthy and restarts the probe interval.
    pub fn record_timeout(&self, threshold: u32) -> bool {
        let n = self
            .timeouts
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if threshold == 0 || n < threshold {
            return false;
        }
        self.unhealthy_since.swap(self.now(), Ordering::Relaxed) == 0
    }

    /// A response head arrived through this tunnel. Returns true when that made an unhealthy
    /// tunnel healthy again.
    pub fn record_success(&self) -> bool {
        if self.timeouts.load(Ordering::Relaxed) != 0 {
            self.timeouts.store(0, Ordering::Relaxed);
        }
        self.unhealthy_since.load(Ordering::Relaxed) != 0
            && self.unhealthy_since.swap(0, Ordering::Relaxed) != 0
    }

    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy_since.load(Ordering::Relaxed) != 0
    }

    /// How a pick ranks the tunnel now.
    pub fn rank(&self) -> Rank {
        match self.unhealthy_since.load(Ordering::Relaxed) {
            0 => Rank::Healthy,
            since if self.now().saturating_sub(since) >= self.probe_millis() => Rank::ProbeDue,
            _ => Rank::Unhealthy,
        }
    }

    /// The pick chose this tunnel for its probe: the next one is a whole interval away.
    fn start_probe(&self) {
        let since = self.unhealthy_since.load(Ordering::Relaxed);
        if since != 0 {
            let _ = self.unhealthy_since.compare_exchange(
                since,
                self.now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn probe_millis(&self) -> u64 {
        u64::try_from(self.probe_interval.as_millis()).unwrap_or(u64::MAX / 2)
    }
}

/// Whether tunnels and requests are separated by tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenancy {
    /// One namespace for everyone: the tenant id is carried but not used for routing.
    Shared,
    /// Each tenant its own namespace.
    Isolated,
}

impl Tenancy {
    /// The registry (and directory) key for a tunnel or request of `tenant`.
    pub fn registry_tenant<'a>(&self, tenant: Option<&'a str>) -> &'a str {
        match self {
            Tenancy::Shared => "",
            Tenancy::Isolated => tenant.unwrap_or(""),
        }
    }

    /// The registry key an egress request looks hosts up under: `None` when tenants are
    /// isolated and the request has no tenant, which must then reach nothing (not the empty
    /// tenant's hosts).
    pub fn request_tenant<'a>(&self, tenant: Option<&'a str>) -> Option<&'a str> {
        match (self, tenant) {
            (Tenancy::Shared, _) => Some(""),
            (Tenancy::Isolated, tenant) => tenant,
        }
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
    tenants: HashMap<String, Hosts>,
}

impl Registry {
    /// Registers `tunnel` under `tenant` (a key from [`Tenancy::registry_tenant`]).
    pub fn insert(&mut self, tenant: &str, tunnel: Rc<TunnelHandle>) {
        match self.tenants.get_mut(tenant) {
            Some(hosts) => hosts.insert(tunnel),
            None => {
                let mut hosts = Hosts::default();
                hosts.insert(tunnel);
                self.tenants.insert(tenant.to_owned(), hosts);
            }
        }
    }

    /// Removes a tunnel at once; a node left without tunnels leaves its cluster.
    pub fn remove(&mut self, tenant: &str, id: u64, identity: &TunnelIdentity) {
        if let Some(hosts) = self.tenants.get_mut(tenant) {
            hosts.remove(id, identity);
            if hosts.is_empty() {
                self.tenants.remove(tenant);
            }
        }
    }

    /// Picks a tunnel of `tenant` for `host_id`: as a cluster id first, then as a node id.
    pub fn pick(&mut self, tenant: &str, host_id: &str) -> Option<Rc<TunnelHandle>> {
        self.pick_ranked(tenant, host_id).map(|(tunnel, _)| tunnel)
    }

    /// [`Registry::pick`], and whether the tunnel is one to use gladly: healthy, or chosen for
    /// its probe. `false`: unhealthy, the only one that could take the request here.
    pub fn pick_ranked(&mut self, tenant: &str, host_id: &str) -> Option<(Rc<TunnelHandle>, bool)> {
        let (tunnel, rank) = self.tenants.get_mut(tenant)?.pick(host_id)?;
        if rank == Rank::ProbeDue {
            tunnel.health.start_probe();
        }
        Some((tunnel, rank != Rank::Unhealthy))
    }

    /// Whether this shard holds any tunnel of `tenant` for `host_id` (busy or not).
    pub fn knows(&self, tenant: &str, host_id: &str) -> bool {
        self.tenants
            .get(tenant)
            .is_some_and(|hosts| hosts.knows(host_id))
    }

    /// Drops empty entries; returns how many were swept. Removal is eager, so this is a
    /// safety net run every `cleanup_interval`.
    pub fn sweep(&mut self) -> usize {
        let swept = self.tenants.values_mut().map(Hosts::sweep).sum();
        self.tenants.retain(|_, hosts| !hosts.is_empty());
        swept
    }
}

/// One tenant's hosts on one shard.
#[derive(Debug, Default)]
struct Hosts {
    nodes: HashMap<String, Vec<Rc<TunnelHandle>>>,
    clusters: HashMap<String, ClusterEntry>,
}

impl Hosts {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.clusters.is_empty()
    }

    fn insert(&mut self, tunnel: Rc<TunnelHandle>) {
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

    fn remove(&mut self, id: u64, identity: &TunnelIdentity) {
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

    /// Round-robin over a cluster's nodes, skipping nodes whose best tunnel is unhealthy
    /// while another node has a better one; then a node id.
    fn pick(&mut self, host_id: &str) -> Option<(Rc<TunnelHandle>, Rank)> {
        if let Some(entry) = self.clusters.get_mut(host_id) {
            let n = entry.nodes.len();
            let mut fallback = None;
            for step in 0..n {
                let node = &entry.nodes[(entry.next + step) % n];
                let Some((t, rank)) = self.nodes.get(node).and_then(|ts| least_loaded(ts)) else {
                    continue;
                };
                if rank == Rank::Unhealthy {
                    fallback.get_or_insert((step, t, rank));
                    continue;
                }
                entry.next = (entry.next + step + 1) % n;
                return Some((t, rank));
            }
            if let Some((step, t, rank)) = fallback {
                entry.next = (entry.next + step + 1) % n;
                return Some((t, rank));
            }
        }
        self.nodes.get(host_id).and_then(|ts| least_loaded(ts))
    }

    fn knows(&self, host_id: &str) -> bool {
        self.nodes.contains_key(host_id) || self.clusters.contains_key(host_id)
    }

    fn sweep(&mut self) -> usize {
        let before = self.nodes.len() + self.clusters.len();
        self.nodes.retain(|_, ts| !ts.is_empty());
        let nodes = &self.nodes;
        for entry in self.clusters.values_mut() {
            entry.nodes.retain(|n| nodes.contains_key(n));
        }
        self.clusters.retain(|_, e| !e.nodes.is_empty());
        before - (self.nodes.len() + self.clusters.len())
    }
}

/// The best tunnel with stream capacity: a due probe first, then healthy, then unhealthy;
/// within a rank the fewest active streams.
fn least_loaded(tunnels: &[Rc<TunnelHandle>]) -> Option<(Rc<TunnelHandle>, Rank)> {
    tunnels
        .iter()
        .filter(|t| t.has_capacity())
        .map(|t| (t, t.health.rank()))
        .min_by_key(|(t, rank)| (*rank, t.active_streams()))
        .map(|(t, rank)| (t.clone(), rank))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tunnel handle over an in-memory pipe (no peer needed: nothing is sent).
    async fn handle(id: u64, node: &str, cluster: &str, max_streams: usize) -> Rc<TunnelHandle> {
        let (io, peer) = tokio::io::duplex(64 * 1024);
        std::mem::forget(peer); // keep the pipe open for the test's lifetime
        let (send, _conn) = h2::client::handshake(io).await.expect("client handshake");
        let identity = TunnelIdentity {
            node_id: node.into(),
            cluster_id: cluster.into(),
            tenant_id: String::new(),
        };
        Rc::new(TunnelHandle::new(
            id,
            identity,
            send,
            crate::tunnel::parking_lot(),
            max_streams,
            Duration::from_secs(3600),
        ))
    }

    #[monoio::test]
    async fn node_picks_least_loaded_tunnel_with_capacity() {
        let mut r = Registry::default();
        let (a, b) = (handle(1, "n", "c", 2).await, handle(2, "n", "c", 2).await);
        r.insert("", a.clone());
        r.insert("", b.clone());
        let _busy = (a.stream_guard(), a.stream_guard());
        assert_eq!(r.pick("", "n").map(|t| t.id), Some(2), "a is full");
        let _g = b.stream_guard();
        assert_eq!(r.pick("", "n").map(|t| t.id), Some(2), "b still has room");
        let _g2 = b.stream_guard();
        assert!(r.pick("", "n").is_none(), "both full");
        assert!(r.knows("", "n") && r.knows("", "c"), "full is not unknown");
    }

    #[monoio::test]
    async fn cluster_round_robins_over_nodes() {
        let mut r = Registry::default();
        for (id, node) in [(1, "n1"), (2, "n2"), (3, "n3")] {
            r.insert("", handle(id, node, "c", 10).await);
        }
        let picks: Vec<u64> = (0..6)
            .filter_map(|_| r.pick("", "c").map(|t| t.id))
            .collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
        assert_eq!(
            r.pick("", "n2").map(|t| t.id),
            Some(2),
            "a node id still works"
        );
    }

    #[monoio::test]
    async fn removal_is_immediate_and_cleans_entries() {
        let mut r = Registry::default();
        let t = handle(7, "n", "c", 10).await;
        r.insert("", t.clone());
        r.remove("", 7, &t.identity);
        assert!(r.pick("", "n").is_none());
        assert!(r.pick("", "c").is_none());
        assert_eq!(r.sweep(), 0, "nothing left to sweep");
    }

    #[monoio::test]
    async fn tenants_do_not_see_each_other() {
        let mut r = Registry::default();
        r.insert("acme", handle(1, "n", "c", 10).await);
        r.insert("globex", handle(2, "n", "c", 10).await);
        assert_eq!(r.pick("acme", "n").map(|t| t.id), Some(1));
        assert_eq!(r.pick("globex", "c").map(|t| t.id), Some(2));
        assert!(r.pick("initech", "n").is_none());
        assert!(!r.knows("initech", "n"));
        let acme = r.pick("acme", "n").expect("acme's tunnel");
        r.remove("acme", 1, &acme.identity);
        assert!(r.pick("acme", "n").is_none(), "acme's tunnel left");
        assert_eq!(
            r.pick("globex", "n").map(|t| t.id),
            Some(2),
            "globex's stayed"
        );
    }

    #[test]
    fn shared_tenancy_ignores_the_tenant_and_isolation_keys_by_it() {
        assert_eq!(Tenancy::Shared.registry_tenant(Some("acme")), "");
        assert_eq!(Tenancy::Isolated.registry_tenant(Some("acme")), "acme");
        assert_eq!(Tenancy::Isolated.registry_tenant(None), "");
        assert_eq!(Tenancy::Shared.request_tenant(Some("acme")), Some(""));
        assert_eq!(Tenancy::Shared.request_tenant(None), Some(""));
        assert_eq!(Tenancy::Isolated.request_tenant(Some("acme")), Some("acme"));
        assert_eq!(Tenancy::Isolated.request_tenant(Some("")), Some(""));
        assert_eq!(
            Tenancy::Isolated.request_tenant(None),
            None,
            "no tenant, no hosts"
        );
    }

    #[monoio::test]
    async fn an_unhealthy_tunnel_is_used_only_when_nothing_else_can() {
        let mut r = Registry::default();
        let (a, b) = (handle(1, "n", "c", 2).await, handle(2, "n", "c", 2).await);
        r.insert("", a.clone());
        r.insert("", b.clone());
        assert!(!a.health.record_timeout(3));
        assert!(!a.health.record_timeout(3));
        assert!(a.health.record_timeout(3), "the third in a row marks it");
        assert!(!a.health.record_timeout(3), "marked once");
        assert_eq!(a.health.rank(), Rank::Unhealthy);
        // b is preferred even when busier.
        let _g = b.stream_guard();
        assert_eq!(
            r.pick_ranked("", "n").map(|(t, ok)| (t.id, ok)),
            Some((2, true))
        );
        // b full: a is all there is.
        let _g2 = b.stream_guard();
        assert_eq!(
            r.pick_ranked("", "n").map(|(t, ok)| (t.id, ok)),
            Some((1, false))
        );
        // A response through a heals it.
        assert!(a.health.record_success());
        assert!(!a.health.record_success(), "healed once");
        assert_eq!(a.health.rank(), Rank::Healthy);
        assert_eq!(
            r.pick_ranked("", "n").map(|(t, ok)| (t.id, ok)),
            Some((1, true))
        );
    }

    #[monoio::test]
    async fn a_cluster_skips_unhealthy_nodes_while_others_are_healthy() {
        let mut r = Registry::default();
        let (bad, good) = (
            handle(1, "n1", "c", 10).await,
            handle(2, "n2", "c", 10).await,
        );
        r.insert("", bad.clone());
        r.insert("", good.clone());
        assert!(bad.health.record_timeout(1));
        let picks: Vec<u64> = (0..4)
            .filter_map(|_| r.pick("", "c").map(|t| t.id))
            .collect();
        assert_eq!(picks, [2, 2, 2, 2]);
        assert!(good.health.record_timeout(1));
        let picks: Vec<u64> = (0..4)
            .filter_map(|_| r.pick("", "c").map(|t| t.id))
            .collect();
        assert_eq!(picks.len(), 4, "all unhealthy: still served");
        assert_eq!(
            r.pick("", "n1").map(|t| t.id),
            Some(1),
            "a node id reaches its only tunnel"
        );
    }

    #[test]
    fn an_unhealthy_tunnel_gets_one_probe_per_interval() {
        let health = TunnelHealth::new(Duration::ZERO);
        assert_eq!(health.rank(), Rank::Healthy);
        assert!(health.record_timeout(1));
        assert_eq!(
            health.rank(),
            Rank::ProbeDue,
            "a zero interval: due at once"
        );
        health.start_probe();
        assert!(health.is_unhealthy(), "a probe does not heal");
        let slow = TunnelHealth::new(Duration::from_secs(3600));
        assert!(slow.record_timeout(1));
        assert_eq!(slow.rank(), Rank::Unhealthy);
        let never = TunnelHealth::new(Duration::ZERO);
        assert!(!never.record_timeout(0), "threshold 0: never marked");
        assert_eq!(never.rank(), Rank::Healthy);
    }
}
