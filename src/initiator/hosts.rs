//! Endpoint sets: the responder hosts behind each endpoint the initiator dials, and the tunnel
//! keepers of each host (ARCHITECTURE.md §3, DESIGN §12 "Scale-out").
//!
//! As in Envoy's STRICT_DNS clusters, every address an endpoint's name resolves to is a
//! **host**, and every host gets its own share of `connections`: replicas behind one name are
//! all served. Each shard runs one [`EndpointSet`] per (responder cluster, endpoint) that its
//! quota dials. The set resolves the name every `clusters.NAME.dns_refresh_rate` (off the shard
//! thread, `crate::net::resolve`), diffs the answer against its hosts ([`HostSet::apply`]),
//! starts keepers for a new address and retires the keepers of a vanished one: their tunnels
//! send GOAWAY, in-flight streams finish within `drain_timeout`, and the slots stop redialing.
//! A failed resolution keeps the last known hosts. An IP-literal endpoint is its own single
//! host, without a resolver.
//!
//! A keeper dials its host's exact address; the endpoint's name stays what the tunnel names:
//! the handshake's `Host` and the TLS server name (`TunnelTls` is per endpoint name).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tracing::Instrument;

use super::{dialer, shard_quota, InitiatorShard};
use crate::config::TunnelSpec;
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::tracker::Tracker;
use crate::shard::ShardId;
use crate::stats::inc;

/// Where a keeper dials: one host of an endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// The endpoint as configured (`host:port`): the handshake's `Host`, the TLS name.
    pub endpoint: Rc<str>,
    /// The resolved address dialed.
    pub addr: SocketAddr,
}

/// What stops a tunnel keeper: the process shutting down, or its host leaving its endpoint's
/// set. Either way the keeper's tunnel drains and the slot stops redialing.
#[derive(Debug, Clone)]
pub struct Stop {
    shutdown: ShutdownSignal,
    /// Closed when the host's [`Retire`] drops.
    retired: async_channel::Receiver<()>,
}

/// A host's keepers run while this lives; dropping it retires them.
#[derive(Debug)]
pub struct Retire {
    _sender: async_channel::Sender<()>,
}

impl Stop {
    /// A stop for keepers of a new host, and the handle that retires them.
    pub fn new(shutdown: ShutdownSignal) -> (Stop, Retire) {
        // Nothing is ever sent: dropping the sender closes the channel, waking every keeper.
        let (sender, retired) = async_channel::bounded(1);
        (Stop { shutdown, retired }, Retire { _sender: sender })
    }

    pub fn is_triggered(&self) -> bool {
        self.shutdown.is_triggered() || self.retired.is_closed()
    }

    /// Resolves once the process shuts down or the host is retired.
    pub async fn wait(&self) {
        monoio::select! {
            _ = self.shutdown.wait() => {}
            _ = self.retired.recv() => {}
        }
    }
}

/// How a resolution changed an endpoint's hosts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// An endpoint's hosts by address, each with what keeps its tunnels (`T`, dropped to stop
/// them).
#[derive(Debug)]
pub struct HostSet<T> {
    hosts: BTreeMap<SocketAddr, T>,
}

impl<T> Default for HostSet<T> {
    fn default() -> Self {
        HostSet {
            hosts: BTreeMap::new(),
        }
    }
}

impl<T> HostSet<T> {
    /// Makes the set exactly `resolved` (order and duplicates do not matter): drops the handle
    /// of every address no longer resolved (stopping its keepers), then calls `start` for
    /// every new one. Addresses in both are left alone.
    pub fn apply(
        &mut self,
        resolved: &[SocketAddr],
        mut start: impl FnMut(SocketAddr) -> T,
    ) -> Change {
        let wanted: BTreeSet<SocketAddr> = resolved.iter().copied().collect();
        let removed: Vec<SocketAddr> = self
            .hosts
            .keys()
            .filter(|addr| !wanted.contains(addr))
            .copied()
            .collect();
        for addr in &removed {
            self.hosts.remove(addr);
        }
        let added: Vec<SocketAddr> = wanted
            .into_iter()
            .filter(|addr| !self.hosts.contains_key(addr))
            .collect();
        for &addr in &added {
            self.hosts.insert(addr, start(addr));
        }
        Change { added, removed }
    }

    /// The current addresses, sorted.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.hosts.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// One shard's hosts of one responder endpoint and the keepers of each.
pub struct EndpointSet {
    ctx: Rc<InitiatorShard>,
    endpoint: Rc<str>,
    /// The tunnels entries that dial this endpoint, each with this shard's slots per host.
    entries: Vec<(TunnelSpec, u32)>,
    refresh: Duration,
    hosts: HostSet<Retire>,
    /// Every keeper of the shard, so that the shard's drain can wait for them.
    keepers: Rc<Tracker>,
}

/// The endpoint sets of this shard: one per (responder cluster, endpoint) for which it has a
/// slot (`shard_quota` of some tunnels entry dialing it, per host).
pub fn endpoint_sets(
    ctx: &Rc<InitiatorShard>,
    shard: ShardId,
    shards: usize,
    keepers: &Rc<Tracker>,
) -> Vec<EndpointSet> {
    let mut sets: BTreeMap<(&str, &str), EndpointSet> = BTreeMap::new();
    for spec in &ctx.cfg.tunnels {
        let Some(remote) = ctx.clusters.get(&spec.remote_cluster) else {
            tracing::error!(cluster = %spec.remote_cluster, "tunnel names an unknown cluster");
            continue;
        };
        let slots = shard_quota(spec.connections, shard, shards);
        if slots == 0 {
            continue;
        }
        for endpoint in &remote.endpoints {
            sets.entry((&spec.remote_cluster, endpoint))
                .or_insert_with(|| EndpointSet {
                    ctx: ctx.clone(),
                    endpoint: endpoint.as_str().into(),
                    entries: Vec::new(),
                    refresh: remote.dns_refresh_rate,
                    hosts: HostSet::default(),
                    keepers: keepers.clone(),
                })
                .entries
                .push((spec.clone(), slots));
        }
    }
    sets.into_values().collect()
}

impl EndpointSet {
    /// Keeps the hosts in step with the endpoint's name until shutdown; then every keeper is
    /// told to stop (they drain on their own; wait for them with the keepers' tracker).
    pub async fn run(self) {
        let span =
            tracing::info_span!("endpoint", endpoint = %self.endpoint, shard = self.ctx.shard);
        self.follow().instrument(span).await
    }

    async fn follow(mut self) {
        if let Some(addr) = crate::net::literal(&self.endpoint) {
            self.update(&[addr]);
            self.ctx.shutdown.wait().await;
            return;
        }
        let shutdown = self.ctx.shutdown.clone();
        let mut failing = false;
        loop {
            let resolved = monoio::select! {
                resolved = crate::net::resolve(&self.endpoint) => resolved,
                _ = shutdown.wait() => return,
            };
            match resolved {
                Ok(addrs) => {
                    if failing {
                        tracing::info!("resolves again");
                        failing = false;
                    }
                    self.update(&addrs);
                }
                Err(e) => {
                    inc(&self.ctx.stats().initiator_dns_failures);
                    let kept = self.hosts.len();
                    // One warning per run of failures: every shard resolves on its own.
                    if failing {
                        tracing::debug!(kept, "resolution failed again: {e}");
                    } else {
                        tracing::warn!(
                            kept,
                            "resolution failed, keeping the last known hosts: {e}"
                        );
                        failing = true;
                    }
                }
            }
            monoio::select! {
                _ = monoio::time::sleep(self.refresh) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Applies a resolution: keepers for new addresses, retirement for vanished ones.
    fn update(&mut self, resolved: &[SocketAddr]) {
        let EndpointSet {
            ctx,
            endpoint,
            entries,
            hosts,
            keepers,
            ..
        } = self;
        let change = hosts.apply(resolved, |addr| {
            let (stop, retire) = Stop::new(ctx.shutdown.clone());
            let target = Target {
                endpoint: endpoint.clone(),
                addr,
            };
            for (spec, slots) in entries.iter() {
                for slot in 0..*slots {
                    keepers.spawn(dialer::keep_tunnel(
                        ctx.clone(),
                        spec.clone(),
                        target.clone(),
                        slot,
                        stop.clone(),
                    ));
                }
            }
            retire
        });
        if change.is_empty() {
            return;
        }
        let stats = ctx.stats();
        for _ in &change.added {
            inc(&stats.initiator_hosts_added);
        }
        for _ in &change.removed {
            inc(&stats.initiator_hosts_removed);
        }
        let now: Vec<SocketAddr> = hosts.addresses().collect();
        tracing::info!(
            added = ?change.added,
            removed = ?change.removed,
            hosts = ?now,
            "endpoint hosts changed; removed ones drain"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A host handle that records its own stop (drop).
    struct Keeper {
        addr: SocketAddr,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl Drop for Keeper {
        fn drop(&mut self) {
            self.log.borrow_mut().push(format!("stop {}", self.addr));
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("address")).collect()
    }

    fn apply(set: &mut HostSet<Keeper>, log: &Rc<RefCell<Vec<String>>>, to: &[&str]) -> Change {
        set.apply(&addrs(to), |addr| {
            log.borrow_mut().push(format!("start {addr}"));
            Keeper {
                addr,
                log: log.clone(),
            }
        })
    }

    #[test]
    fn new_addresses_start_and_vanished_ones_stop() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut set = HostSet::default();
        let change = apply(&mut set, &log, &["10.0.0.2:9000", "10.0.0.1:9000"]);
        assert_eq!(change.added, addrs(&["10.0.0.1:9000", "10.0.0.2:9000"]));
        assert!(change.removed.is_empty());
        assert_eq!(log.take(), ["start 10.0.0.1:9000", "start 10.0.0.2:9000"]);

        // Same set, another order, a duplicate: nothing happens.
        let change = apply(
            &mut set,
            &log,
            &["10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.1:9000"],
        );
        assert!(change.is_empty());
        assert!(log.borrow().is_empty());

        // One vanishes, one appears: only those two move.
        let change = apply(&mut set, &log, &["10.0.0.2:9000", "[::1]:9000"]);
        assert_eq!(change.added, addrs(&["[::1]:9000"]));
        assert_eq!(change.removed, addrs(&["10.0.0.1:9000"]));
        assert_eq!(log.take(), ["stop 10.0.0.1:9000", "start [::1]:9000"]);
        assert_eq!(
            set.addresses().collect::<Vec<_>>(),
            addrs(&["10.0.0.2:9000", "[::1]:9000"])
        );

        // Everything vanishes.
        let change = apply(&mut set, &log, &[]);
        assert_eq!(change.removed.len(), 2);
        assert!(set.is_empty());
        assert_eq!(log.take(), ["stop 10.0.0.2:9000", "stop [::1]:9000"]);
    }

    #[test]
    fn a_port_is_part_of_the_host() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut set = HostSet::default();
        apply(&mut set, &log, &["10.0.0.1:9000"]);
        let change = apply(&mut set, &log, &["10.0.0.1:9001"]);
        assert_eq!(change.added, addrs(&["10.0.0.1:9001"]));
        assert_eq!(change.removed, addrs(&["10.0.0.1:9000"]));
    }

    #[monoio::test(timer_enabled = true)]
    async fn retiring_a_host_stops_its_keepers_only() {
        let (_shutdown, signal) = crate::shard::shutdown::Shutdown::new();
        let (stop_a, retire_a) = Stop::new(signal.clone());
        let (stop_b, _retire_b) = Stop::new(signal);
        assert!(!stop_a.is_triggered());
        let waiter = monoio::spawn({
            let stop = stop_a.clone();
            async move { stop.wait().await }
        });
        drop(retire_a);
        waiter.await;
        assert!(stop_a.is_triggered());
        assert!(!stop_b.is_triggered());
    }

    #[monoio::test(timer_enabled = true)]
    async fn shutdown_stops_every_keeper() {
        let (shutdown, signal) = crate::shard::shutdown::Shutdown::new();
        let (stop, _retire) = Stop::new(signal);
        shutdown.trigger();
        stop.wait().await;
        assert!(stop.is_triggered());
    }
}
