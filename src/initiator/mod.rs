//! The initiator: dials tunnels to the responder, serves HTTP/2 on them, and forwards each
//! stream to a local service.

pub mod dialer;
pub mod forward;
pub mod pool;
pub mod tunnel_server;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::{Config, InitiatorConfig};
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::ShardId;
use crate::stats::{ShardStats, Stats};

use pool::LocalCluster;

/// One shard's view of the initiator.
pub struct InitiatorShard {
    pub shard: ShardId,
    pub shards: usize,
    pub config: Arc<Config>,
    pub stats: Stats,
    pub shutdown: ShutdownSignal,
    /// Local services by cluster name, with this shard's connection pools.
    pub clusters: HashMap<String, Rc<LocalCluster>>,
}

impl InitiatorShard {
    pub fn cfg(&self) -> &InitiatorConfig {
        self.config
            .initiator
            .as_ref()
            .expect("InitiatorShard is only built from a config with an initiator section")
    }

    pub fn stats(&self) -> &ShardStats {
        self.stats.shard(self.shard)
    }
}

/// How many of `count` connections shard `shard` of `shards` dials (DESIGN §2).
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
) {
    let Some(cfg) = config.initiator.as_ref() else {
        return;
    };
    let clusters = cfg
        .routes
        .iter()
        .filter_map(|r| {
            let c = config.clusters.get(&r.cluster)?;
            Some((
                r.cluster.clone(),
                Rc::new(LocalCluster::new(r.cluster.clone(), c.clone())),
            ))
        })
        .collect();
    let ctx = Rc::new(InitiatorShard {
        shard,
        shards,
        config: config.clone(),
        stats,
        shutdown,
        clusters,
    });
    let mut keepers = Vec::new();
    for spec in &ctx.cfg().tunnels {
        let Some(remote) = ctx.config.clusters.get(&spec.remote_cluster) else {
            tracing::error!(cluster = %spec.remote_cluster, "tunnel names an unknown cluster");
            continue;
        };
        for endpoint in &remote.endpoints {
            for slot in 0..shard_quota(spec.connections, shard, shards) {
                keepers.push(monoio::spawn(dialer::keep_tunnel(
                    ctx.clone(),
                    spec.clone(),
                    endpoint.clone(),
                    slot,
                )));
            }
        }
    }
    for keeper in keepers {
        keeper.await;
    }
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
