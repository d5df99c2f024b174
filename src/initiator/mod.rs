//! The initiator: dials tunnels to the responder, serves HTTP/2 on them, and forwards each
//! stream to a local service.
//!
//! Modules: `hosts` (each resolved address of a responder endpoint, re-resolved on an
//! interval, with its tunnel keepers), `dialer` (connect, handshake, redial), `credential` (the
//! handshake's bearer token), `tunnel_server` (HTTP/2 server on a tunnel), `forward` (the
//! request driver), `pool` (local services), `reload` (applying a new configuration
//! generation on a shard).
//!
//! What new work reads lives in one [`Snapshot`] per shard, swapped whole by a reload: a
//! stream takes the current one when it starts (its route, cluster pool and timeouts; held
//! until its response head), a dial when it starts (handshake settings, TLS, timeouts). Work
//! in flight keeps what it took.

pub mod credential;
pub mod dialer;
pub mod forward;
pub mod hosts;
pub mod pool;
pub mod reload;
pub mod tunnel_server;
pub mod tunnel_tls;
pub mod tunnels_up;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use crate::access_log::{AccessLog, ShardLog};
use crate::config::{ClusterConfig, Config, InitiatorConfig};
use crate::metrics::{Metrics, SeriesIndex, ShardMetrics};
use crate::pipeline::{Pipeline, Role, RouteRewrites, StageSettings};
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::tracker::Tracker;
use crate::shard::ShardId;
use crate::tunnel::info::TunnelBoard;

use pool::{LocalCluster, LocalTls};
use tunnel_tls::TunnelTls;
use tunnels_up::TunnelsUp;

/// The initiator's TLS, loaded once at start and shared by every shard: the responder
/// endpoints it dials, and its local services.
#[derive(Clone)]
pub struct InitiatorTls {
    pub tunnel: Arc<TunnelTls>,
    pub local: Arc<LocalTls>,
}

/// One configuration generation of the initiator, as a shard's new work reads it. Take it
/// with [`InitiatorShard::snapshot`] when work starts and drop it once the work has what it
/// needs: a snapshot held keeps its generation's pools alive.
pub struct Snapshot {
    /// The generation (0: the configuration the process started with).
    pub generation: u64,
    pub cfg: InitiatorConfig,
    /// This shard's copy of the routes' rewrite rules, indexed like `cfg.routes` (built with
    /// them, so they always agree).
    pub route_rewrites: RouteRewrites,
    /// Every cluster of the configuration: local services and responders to dial.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Local services by cluster name, with this shard's connection pools.
    pub local: HashMap<String, Rc<LocalCluster>>,
    /// TLS of the responder endpoints it dials.
    pub tunnel_tls: Arc<TunnelTls>,
    pub drain_timeout: std::time::Duration,
}

impl Snapshot {
    /// Generation `generation` of `config`, whose initiator section is `cfg`, with this
    /// shard's pools of its local clusters.
    pub fn new(
        generation: u64,
        cfg: InitiatorConfig,
        config: &Config,
        local: HashMap<String, Rc<LocalCluster>>,
        tunnel_tls: Arc<TunnelTls>,
    ) -> Self {
        Snapshot {
            generation,
            route_rewrites: RouteRewrites::new(cfg.routes.iter().map(|r| &r.rewrite)),
            cfg,
            clusters: config.clusters.clone(),
            local,
            tunnel_tls,
            drain_timeout: config.drain_timeout,
        }
    }
}

/// One shard's view of the initiator.
pub struct InitiatorShard {
    shard: ShardId,
    stats: Metrics,
    shutdown: ShutdownSignal,
    /// What new streams and dials read; a reload swaps it (`reload`).
    current: RefCell<Rc<Snapshot>>,
    /// The request pipeline for streams arriving through tunnels.
    pipeline: Rc<Pipeline>,
    /// Forwarded streams in flight: the drain waits for them.
    tasks: Rc<Tracker>,
    /// Tunnels up per `tunnels` entry, across shards (`/ready`).
    tunnels_up: Arc<TunnelsUp>,
    /// The live tunnels of every shard, for `/tunnels` (`tunnel::info`).
    dialed: Arc<TunnelBoard>,
    /// This shard's access log, for tunnel events (`None`: off).
    access_log: Option<ShardLog>,
    /// This shard's slots of the responder clusters in its metrics (`ShardMetrics::dialed`).
    series: SeriesIndex,
}

impl InitiatorShard {
    /// This shard's initiator, or `None` when the configuration has no initiator. `tls` is
    /// loaded once for every shard; `tunnels_up`, `dialed` and `access_log` are shared by every shard.
    pub fn new(
        config: &Config,
        shard: ShardId,
        stats: Metrics,
        shutdown: ShutdownSignal,
        tls: InitiatorTls,
        (tunnels_up, dialed, access_log): (Arc<TunnelsUp>, Arc<TunnelBoard>, Option<AccessLog>),
    ) -> Option<Rc<Self>> {
        let (tunnel_tls, local_tls) = (tls.tunnel, tls.local);
        let cfg = config.initiator.clone()?;
        let local = local_clusters(config)
            .into_iter()
            .map(|(name, c)| {
                let tls = local_tls.get(name).cloned();
                let cluster = LocalCluster::new(name.into(), c.clone(), tls, stats.clone(), shard);
                (name.to_owned(), Rc::new(cluster))
            })
            .collect();
        let settings = StageSettings {
            access_log: access_log.clone(),
            ..StageSettings::default()
        };
        let pipeline = Pipeline::for_role(Role::Initiator, &settings, &stats, shard);
        let snapshot = Snapshot::new(0, cfg, config, local, tunnel_tls);
        Some(Rc::new(InitiatorShard {
            shard,
            stats,
            shutdown,
            current: RefCell::new(Rc::new(snapshot)),
            pipeline,
            tasks: Tracker::new(),
            tunnels_up,
            dialed,
            access_log: access_log.map(|log| log.shard(shard)),
            series: SeriesIndex::default(),
        }))
    }

    /// The configuration new work uses now.
    pub fn snapshot(&self) -> Rc<Snapshot> {
        self.current.borrow().clone()
    }

    pub fn stats(&self) -> &ShardMetrics {
        self.stats.shard(self.shard)
    }

    /// Writes a tunnel event to the access log, if there is one.
    fn tunnel_event(&self, event: crate::access_log::TunnelEvent<'_>) {
        if let Some(log) = &self.access_log {
            log.tunnel(&event);
        }
    }
}

/// The local clusters of `config`: those its initiator's routes name (that exist), by name.
pub fn local_clusters(config: &Config) -> BTreeMap<&str, &ClusterConfig> {
    let routes = config.initiator.iter().flat_map(|i| &i.routes);
    routes
        .filter_map(|r| {
            let c = config.clusters.get(&r.cluster)?;
            Some((r.cluster.as_str(), c))
        })
        .collect()
}

/// How many of `count` connections shard `shard` of `shards` dials to each host (resolved
/// address) of an endpoint (ARCHITECTURE.md §3).
pub fn shard_quota(count: u32, shard: ShardId, shards: usize) -> u32 {
    let shards = shards.max(1) as u32;
    let shard = shard as u32;
    count / shards + u32::from(shard < count % shards)
}

/// Runs this shard's share of every tunnel until shutdown.
#[allow(clippy::too_many_arguments)]
pub async fn run_shard(
    config: Arc<Config>,
    shard: ShardId,
    shards: usize,
    stats: Metrics,
    shutdown: ShutdownSignal,
    tls: InitiatorTls,
    shared: (Arc<TunnelsUp>, Arc<TunnelBoard>, Option<AccessLog>),
    reload: Rc<crate::shard::reload::ShardReload>,
) {
    let Some(ctx) = InitiatorShard::new(&config, shard, stats, shutdown, tls, shared) else {
        return;
    };
    // Every resolved address of every endpoint gets this shard's quota (ARCHITECTURE.md §3).
    let keepers = Tracker::new();
    let dialing = Rc::new(RefCell::new(hosts::Dialing::new(
        shard,
        shards,
        keepers.clone(),
    )));
    dialing.borrow_mut().follow(&ctx, &ctx.snapshot());
    {
        let (ctx, dialing) = (ctx.clone(), dialing.clone());
        reload.on_reload(move |generation| reload::apply(&ctx, &dialing, generation));
    }
    ctx.shutdown.wait().await;
    // The endpoint sets stop at shutdown; their keepers drain their tunnels within the grace
    // period.
    keepers.idle().await;
    drop(dialing);
    // Tunnels are drained; streams they accepted finish within the grace period.
    let drain_timeout = ctx.snapshot().drain_timeout;
    ctx.tasks.drain(drain_timeout, shard).await;
}

#[cfg(test)]
mod tests {
    use super::shard_quota;

    #[test]
    fn quota_splits_count_over_shards() {
        assert_eq!(
            (0..3).map(|s| shard_quota(5, s, 3)).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(
            (0..2).map(|s| shard_quota(1, s, 2)).collect::<Vec<_>>(),
            [1, 0]
        );
        assert_eq!((0..4).map(|s| shard_quota(0, s, 4)).sum::<u32>(), 0);
        assert_eq!((0..7).map(|s| shard_quota(100, s, 7)).sum::<u32>(), 100);
    }
}
