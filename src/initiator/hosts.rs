//! Endpoint sets: the responder hosts behind each endpoint the initiator dials, and the tunnel
//! keepers of each host (ARCHITECTURE.md §3, DESIGN §12 "Scale-out").
//!
//! As in Envoy's STRICT_DNS clusters, every address an endpoint's name resolves to is a
//! **host**, and every host gets its own share of `connections`: replicas behind one name are
//! all served. Each shard runs one endpoint set ([`Dialing`]) per (responder cluster, endpoint)
//! that its quota dials. The set resolves the name every `clusters.NAME.dns_refresh_rate` (off
//! the shard thread, `crate::net::resolve`), diffs the answer against its hosts ([`HostSet::apply`]),
//! starts keepers for a new address and retires the keepers of a vanished one: their tunnels
//! send GOAWAY, in-flight streams finish within `drain_timeout`, and the slots stop redialing.
//! A failed resolution keeps the last known hosts. An IP-literal endpoint is its own single
//! host, without a resolver.
//!
//! A reload ([`Dialing::follow`]) reuses the same machinery: a set no longer wanted retires
//! all its hosts, a new one starts resolving, and in a kept set every host's keepers follow
//! the new entries — an added entry's slots start, a removed entry's slots retire, a changed
//! `connections` starts or retires the highest slots (each slot has its own [`Retire`]).
//!
//! A keeper dials its host's exact address; the endpoint's name stays what the tunnel names:
//! the handshake's `Host` and the TLS server name (`TunnelTls` is per endpoint name).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tracing::Instrument;

use super::tunnels_up::EntryKey;
use super::{dialer, shard_quota, InitiatorShard, Snapshot};
use crate::config::{ClusterConfig, InitiatorConfig, TunnelSpec};
use crate::metrics::inc;
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::tracker::Tracker;
use crate::shard::ShardId;

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

    /// Every host and its handle, by address.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SocketAddr, &mut T)> + '_ {
        self.hosts.iter_mut().map(|(addr, t)| (*addr, t))
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

/// What one shard dials per (responder cluster, endpoint): each entry's key, its spec and
/// this shard's slots per host, and the cluster's DNS refresh rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetPlan {
    pub entries: BTreeMap<EntryKey, (TunnelSpec, u32)>,
    pub refresh: Duration,
}

/// The endpoint sets `cfg` asks of shard `shard` of `shards`: one per (responder cluster,
/// endpoint) for which it has a slot (`shard_quota` of some tunnels entry dialing it, per
/// host). Entries with the same key ([`EntryKey`]: identity and remote cluster) add up.
pub fn plan(
    cfg: &InitiatorConfig,
    clusters: &BTreeMap<String, ClusterConfig>,
    shard: ShardId,
    shards: usize,
) -> BTreeMap<(String, String), SetPlan> {
    let mut sets: BTreeMap<(String, String), SetPlan> = BTreeMap::new();
    for spec in &cfg.tunnels {
        let Some(remote) = clusters.get(&spec.remote_cluster) else {
            tracing::error!(cluster = %spec.remote_cluster, "tunnel names an unknown cluster");
            continue;
        };
        let slots = shard_quota(spec.connections, shard, shards);
        if slots == 0 {
            continue;
        }
        for endpoint in &remote.endpoints {
            let set = sets
                .entry((spec.remote_cluster.clone(), endpoint.clone()))
                .or_insert_with(|| SetPlan {
                    entries: BTreeMap::new(),
                    refresh: remote.dns_refresh_rate,
                });
            set.entries
                .entry(EntryKey::of(spec))
                .and_modify(|(_, n)| *n += slots)
                .or_insert_with(|| (spec.clone(), slots));
        }
    }
    sets
}

/// One shard's endpoint sets, kept in step with the configuration: at start and on each
/// reload ([`Dialing::follow`]) a set no longer wanted is retired (its hosts' keepers drain,
/// its resolver stops), a new one starts, and a kept one gets its new entries (keepers
/// added or retired per host, `SetState::reconcile`).
pub struct Dialing {
    shard: ShardId,
    shards: usize,
    /// Every keeper of the shard, so that the shard's drain can wait for them.
    keepers: Rc<Tracker>,
    sets: BTreeMap<(String, String), SetHandle>,
}

struct SetHandle {
    state: Rc<RefCell<SetState>>,
    /// Stops the set's resolver when dropped.
    _stop: Retire,
}

/// One shard's hosts of one responder endpoint and the keepers of each.
pub struct SetState {
    endpoint: Rc<str>,
    plan: SetPlan,
    hosts: HostSet<HostKeepers>,
}

/// One host's keepers: per entry, one retire handle per slot (dropping one retires that
/// slot's keeper; dropping all of them retires the host).
#[derive(Default)]
pub struct HostKeepers {
    slots: BTreeMap<EntryKey, Vec<Retire>>,
}

impl Dialing {
    pub fn new(shard: ShardId, shards: usize, keepers: Rc<Tracker>) -> Self {
        Dialing {
            shard,
            shards,
            keepers,
            sets: BTreeMap::new(),
        }
    }

    /// Makes the sets those `snapshot` asks for. Returns the sets started and retired.
    pub fn follow(&mut self, ctx: &Rc<InitiatorShard>, snapshot: &Snapshot) -> (usize, usize) {
        let mut wanted = plan(&snapshot.cfg, &snapshot.clusters, self.shard, self.shards);
        let before = self.sets.len();
        self.sets.retain(|key, set| {
            let keep = wanted.contains_key(key);
            if !keep {
                // Its keepers drain; its resolver stops when the handle drops.
                set.state
                    .borrow_mut()
                    .hosts
                    .apply(&[], |_| HostKeepers::default());
            }
            keep
        });
        let retired = before - self.sets.len();
        let mut started = 0;
        for (key, set) in &self.sets {
            if let Some(plan) = wanted.remove(key) {
                let mut state = set.state.borrow_mut();
                state.plan = plan;
                state.reconcile(ctx, &self.keepers);
            }
        }
        for (key, plan) in wanted {
            let (stop, retire) = Stop::new(ctx.shutdown.clone());
            let state = Rc::new(RefCell::new(SetState {
                endpoint: key.1.as_str().into(),
                plan,
                hosts: HostSet::default(),
            }));
            let endpoint = key.1.clone();
            let task = follow_endpoint(
                ctx.clone(),
                key.0.clone(),
                state.clone(),
                self.keepers.clone(),
                stop,
            );
            let span = tracing::info_span!("endpoint", endpoint = %endpoint, shard = ctx.shard);
            monoio::spawn(task.instrument(span));
            self.sets.insert(
                key,
                SetHandle {
                    state,
                    _stop: retire,
                },
            );
            started += 1;
        }
        (started, retired)
    }
}

/// Keeps a set's hosts in step with its endpoint's name until `stop` (shutdown, or the set
/// retired by a reload); then every keeper is told to stop (they drain on their own; wait for
/// them with the keepers' tracker).
async fn follow_endpoint(
    ctx: Rc<InitiatorShard>,
    cluster: String,
    state: Rc<RefCell<SetState>>,
    keepers: Rc<Tracker>,
    stop: Stop,
) {
    let endpoint = state.borrow().endpoint.clone();
    if let Some(addr) = crate::net::literal(&endpoint) {
        state.borrow_mut().update(&ctx, &keepers, &[addr]);
        stop.wait().await;
        return;
    }
    // Failures count under the responder cluster's slot, found once for the set's life.
    let series = ctx.stats().dialed_slot(&ctx.series, &cluster);
    let mut failing = false;
    loop {
        let resolved = monoio::select! {
            resolved = crate::net::resolve(&endpoint) => resolved,
            _ = stop.wait() => return,
        };
        if stop.is_triggered() {
            return;
        }
        match resolved {
            Ok(addrs) => {
                if failing {
                    tracing::info!("resolves again");
                    failing = false;
                }
                state.borrow_mut().update(&ctx, &keepers, &addrs);
            }
            Err(source) => {
                let e = dialer::DialError::Resolve {
                    endpoint: endpoint.to_string(),
                    source,
                };
                ctx.stats().dial_failed(series, &e);
                let kept = state.borrow().hosts.len();
                // One warning per run of failures: every shard resolves on its own.
                if failing {
                    tracing::debug!(kept, "resolution failed again: {e}");
                } else {
                    tracing::warn!(kept, "resolution failed, keeping the last known hosts: {e}");
                    failing = true;
                }
            }
        }
        let refresh = state.borrow().plan.refresh;
        monoio::select! {
            _ = monoio::time::sleep(refresh) => {}
            _ = stop.wait() => return,
        }
    }
}

/// Starts the keeper of one slot; dropping the handle retires it.
fn spawn_keeper(
    ctx: &Rc<InitiatorShard>,
    keepers: &Rc<Tracker>,
    spec: &TunnelSpec,
    target: &Target,
    slot: u32,
) -> Retire {
    let (stop, retire) = Stop::new(ctx.shutdown.clone());
    keepers.spawn(dialer::keep_tunnel(
        ctx.clone(),
        spec.clone(),
        target.clone(),
        slot,
        stop,
    ));
    retire
}

impl SetState {
    /// Applies a resolution: keepers for new addresses, retirement for vanished ones.
    fn update(&mut self, ctx: &Rc<InitiatorShard>, keepers: &Rc<Tracker>, resolved: &[SocketAddr]) {
        let SetState {
            endpoint,
            plan,
            hosts,
        } = self;
        let change = hosts.apply(resolved, |addr| {
            let target = Target {
                endpoint: endpoint.clone(),
                addr,
            };
            let mut host = HostKeepers::default();
            host.reconcile(ctx, keepers, plan, &target);
            host
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

    /// Brings every host's keepers to the plan (after a reload changed it).
    fn reconcile(&mut self, ctx: &Rc<InitiatorShard>, keepers: &Rc<Tracker>) {
        let SetState {
            endpoint,
            plan,
            hosts,
        } = self;
        for (addr, host) in hosts.iter_mut() {
            let target = Target {
                endpoint: endpoint.clone(),
                addr,
            };
            host.reconcile(ctx, keepers, plan, &target);
        }
    }
}

impl HostKeepers {
    /// Brings this host's slots to `plan` (see [`follow_plan`]).
    fn reconcile(
        &mut self,
        ctx: &Rc<InitiatorShard>,
        keepers: &Rc<Tracker>,
        plan: &SetPlan,
        target: &Target,
    ) {
        follow_plan(&mut self.slots, plan, |spec, slot| {
            spawn_keeper(ctx, keepers, spec, target, slot)
        });
    }
}

/// Per entry of `plan`, starts the missing slots (`start`) and drops the surplus handles (the
/// highest slots); drops every slot of an entry no longer planned.
pub fn follow_plan<T>(
    slots: &mut BTreeMap<EntryKey, Vec<T>>,
    plan: &SetPlan,
    mut start: impl FnMut(&TunnelSpec, u32) -> T,
) {
    slots.retain(|key, _| plan.entries.contains_key(key));
    for (key, (spec, wanted)) in &plan.entries {
        let slots = slots.entry(key.clone()).or_default();
        let wanted = *wanted as usize;
        slots.truncate(wanted);
        for slot in slots.len()..wanted {
            slots.push(start(spec, slot as u32));
        }
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
    fn the_plan_gives_each_shard_its_slots_per_entry_and_endpoint() {
        let config = crate::config::parse(
            r#"
clusters:
  cloud: { endpoints: ["10.0.0.1:9000", "edge.example:9000"], dns_refresh_rate: 2s }
  backup: { endpoints: ["10.0.0.2:9000"] }
  app: { endpoints: ["127.0.0.1:8000"] }
initiator:
  tunnels:
    - rc://n1:c1:t@cloud:3
    - rc://n1:c1:t@cloud:1
    - rc://n2:c1:t@cloud:1
    - rc://n1:c1:t@backup:0
  routes: [{ prefix: /, cluster: app }]
"#,
            "t.yaml",
        )
        .expect("config");
        let cfg = config.initiator.as_ref().expect("initiator");
        let slots = |shard| {
            plan(cfg, &config.clusters, shard, 2)
                .into_iter()
                .map(|((cluster, endpoint), set)| {
                    let entries: Vec<(String, u32)> = set
                        .entries
                        .iter()
                        .map(|(k, (_, n))| (k.node.clone(), *n))
                        .collect();
                    (format!("{cluster} {endpoint} {:?}", set.refresh), entries)
                })
                .collect::<Vec<_>>()
        };
        // Shard 0: n1 has 2 (3) + 1 (1) slots per host, n2 one; backup has none at all.
        let n = |node: &str, k| (node.to_owned(), k);
        assert_eq!(
            slots(0),
            [
                (
                    "cloud 10.0.0.1:9000 2s".to_owned(),
                    vec![n("n1", 3), n("n2", 1)]
                ),
                (
                    "cloud edge.example:9000 2s".to_owned(),
                    vec![n("n1", 3), n("n2", 1)]
                ),
            ]
        );
        // Shard 1: n1's one remaining slot; n2 has none here.
        assert_eq!(
            slots(1),
            [
                ("cloud 10.0.0.1:9000 2s".to_owned(), vec![n("n1", 1)]),
                ("cloud edge.example:9000 2s".to_owned(), vec![n("n1", 1)]),
            ]
        );
    }

    #[test]
    fn slots_follow_the_plan_highest_retired_first() {
        let log = Rc::new(RefCell::new(Vec::new()));
        struct Slot(String, Rc<RefCell<Vec<String>>>);
        impl Drop for Slot {
            fn drop(&mut self) {
                self.1.borrow_mut().push(format!("stop {}", self.0));
            }
        }
        let spec = |s: &str| crate::config::parse_rc_address(s).expect("rc");
        let plan_of = |specs: &[(&str, u32)]| SetPlan {
            entries: specs
                .iter()
                .map(|(s, n)| (EntryKey::of(&spec(s)), (spec(s), *n)))
                .collect(),
            refresh: Duration::from_secs(5),
        };
        let mut slots = BTreeMap::new();
        let mut follow = |plan: &SetPlan| {
            follow_plan(&mut slots, plan, |spec, slot| {
                let name = format!("{}#{slot}", spec.identity.id);
                log.borrow_mut().push(format!("start {name}"));
                Slot(name, log.clone())
            })
        };
        follow(&plan_of(&[("rc://a:c:t@x:2", 2)]));
        assert_eq!(log.take(), ["start a#0", "start a#1"]);
        // Grown, and an entry added.
        follow(&plan_of(&[("rc://a:c:t@x:3", 3), ("rc://b:c:t@x:1", 1)]));
        assert_eq!(log.take(), ["start a#2", "start b#0"]);
        // Shrunk: the highest slots go; nothing restarts.
        follow(&plan_of(&[("rc://a:c:t@x:1", 1), ("rc://b:c:t@x:1", 1)]));
        assert_eq!(log.take(), ["stop a#1", "stop a#2"]);
        // An entry removed, the other untouched.
        follow(&plan_of(&[("rc://b:c:t@x:1", 1)]));
        assert_eq!(log.take(), ["stop a#0"]);
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
