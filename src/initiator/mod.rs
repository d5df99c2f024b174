//! The initiator: dials tunnels to the responder, serves HTTP/2 on them, and forwards each
//! stream to a local service.
//!
//! Modules: `hosts` (each resolved address of a responder endpoint, re-resolved on an
//! interval, with its tunnel keepers), `dialer` (connect, handshake, redial), `credential` (the
//! handshake's bearer token), `tunnel_server` (HTTP/2 server on a tunnel), `forward` (the
//! request driver), `pool` (local services).

pub mod credential;
pub mod dialer;
pub mod forward;
pub mod hosts;
pub mod pool;
pub mod tunnel_server;
pub mod tunnel_tls;
pub mod tunnels_up;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::{ClusterConfig, Config, InitiatorConfig};
use crate::pipeline::{Pipeline, Role, StageSettings};
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::tracker::Tracker;
use crate::shard::ShardId;
use crate::stats::{ShardStats, Stats};

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

/// One shard's view of the initiator.
pub struct InitiatorShard {
    shard: ShardId,
    cfg: InitiatorConfig,
    /// Every cluster of the configuration: local services and responders to dial.
    clusters: std::collections::BTreeMap<String, ClusterConfig>,
    drain_timeout: std::time::Duration,
    stats: Stats,
    shutdown: ShutdownSignal,
    /// Local services by cluster name, with this shard's connection pools.
    local: HashMap<String, Rc<LocalCluster>>,
    /// The request pipeline for streams arriving through tunnels.
    pipeline: Rc<Pipeline>,
    /// Forwarded streams in flight: the drain waits for them.
    tasks: Rc<Tracker>,
    /// TLS of the responder endpoints it dials (shared by every shard).
    tunnel_tls: Arc<TunnelTls>,
    /// Tunnels up per `tunnels` entry, across shards (`/ready`).
    tunnels_up: Arc<TunnelsUp>,
}

impl InitiatorShard {
    /// This shard's initiator, or `None` when the configuration has no initiator. `tls` is
    /// loaded once for every shard; `tunnels_up` is shared by every shard.
    pub fn new(
        config: &Config,
        shard: ShardId,
        stats: Stats,
        shutdown: ShutdownSignal,
        tls: InitiatorTls,
        tunnels_up: Arc<TunnelsUp>,
    ) -> Option<Rc<Self>> {
        let (tunnel_tls, local_tls) = (tls.tunnel, tls.local);
        let cfg = config.initiator.clone()?;
        let local = cfg
            .routes
            .iter()
            .filter_map(|r| {
                let c = config.clusters.get(&r.cluster)?;
                let tls = local_tls.get(&r.cluster).cloned();
                let name = r.cluster.as_str().into();
                let cluster = LocalCluster::new(name, c.clone(), tls, stats.clone(), shard);
                Some((r.cluster.clone(), Rc::new(cluster)))
            })
            .collect();
        let pipeline =
            Pipeline::for_role(Role::Initiator, &StageSettings::default(), &stats, shard);
        Some(Rc::new(InitiatorShard {
            shard,
            cfg,
            clusters: config.clusters.clone(),
            drain_timeout: config.drain_timeout,
            stats,
            shutdown,
            local,
            pipeline,
            tasks: Tracker::new(),
            tunnel_tls,
            tunnels_up,
        }))
    }

    pub fn cfg(&self) -> &InitiatorConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &ShardStats {
        self.stats.shard(self.shard)
    }
}

/// How many of `count` connections shard `shard` of `shards` dials to each host (resolved
/// address) of an endpoint (ARCHITECTURE.md §3).
pub fn shard_quota(count: u32, shard: ShardId, shards: usize) -> u32 {
    let shards = shards.max(1) as u32;
    let shard = shard as u32;
    count / shards + u32::from(shard < count % shards)
}

/// Runs this shard's share of every tunnel until shutdown.
pub async fn run_shard(
    config: Arc<Config>,
    shard: ShardId,
    shards: usize,
    stats: Stats,
    shutdown: ShutdownSignal,
    tls: InitiatorTls,
    tunnels_up: Arc<TunnelsUp>,
) {
    let Some(ctx) = InitiatorShard::new(&config, shard, stats, shutdown, tls, tunnels_up) else {
        return;
    };
    // Every resolved address of every endpoint gets this shard's quota (ARCHITECTURE.md §3).
    let keepers = Tracker::new();
    let sets: Vec<_> = hosts::endpoint_sets(&ctx, shard, shards, &keepers)
        .into_iter()
        .map(|set| monoio::spawn(set.run()))
        .collect();
    for set in sets {
        set.await;
    }
    // The sets stopped at shutdown; their keepers drain their tunnels within the grace period.
    keepers.idle().await;
    // Tunnels are drained; streams they accepted finish within the grace period.
    ctx.tasks.drain(ctx.drain_timeout, shard).await;
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
