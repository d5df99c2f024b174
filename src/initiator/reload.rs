//! The initiator's applier: a new configuration generation on one shard (DESIGN.md §12, the
//! commit half of a reload; `crate::shard::reload` delivers it).
//!
//! What it swaps, without dropping a tunnel or an in-flight request:
//! - **routes, route timeouts, `request_timeout`, `stream_idle_timeout`**, and every setting a
//!   new dial reads (handshake form and path, extra headers, `send_initiation_time`, `auth`,
//!   backoff, ping and stream limits, `connect_timeout`, `drain_timeout`): a new [`Snapshot`]
//!   that new streams and new dials take; streams in flight keep the one they started with;
//! - **local clusters** (`clusters.NAME` named by a route): a cluster whose settings changed
//!   gets a new pool ([`LocalCluster`]); an unchanged one keeps its pool and connections; an
//!   old pool closes its connections once its last request in flight is done (its streams
//!   hold it; the snapshot no longer does). TLS of a changed or new cluster is loaded from
//!   its (possibly new) files here; an unchanged cluster's files are re-read;
//! - **tunnels entries** (`hosts::Dialing::follow`): an added entry starts dialing, a removed
//!   one drains (GOAWAY, in-flight streams finish within `drain_timeout`, no redial), a changed
//!   `connections` starts or retires this shard's highest slots; a dialed cluster's changed
//!   `endpoints` start and retire endpoint sets; its `dns_refresh_rate` applies at the next
//!   resolution; its `tls:` is loaded for new dials (`TunnelTls::follow`); `/ready` follows the
//!   entries (`TunnelsUp::follow`);
//! - **node identity** (`node:`, or an `rc://` address's ids): part of each tunnels entry's
//!   key, so a changed identity is an entry removed and one added: tunnels under the old
//!   identity drain, new ones dial under the new one. No restart is needed.
//!
//! Nothing here fails: the process side loaded and validated the file and every TLS file
//! before publishing. A TLS file that changed in between is logged, and the cluster keeps its
//! old pool (or, new, is left out: its routes answer 404 `no_route` until the next reload);
//! a dialed endpoint keeps its old TLS (or, new, does not dial). What needs a restart is
//! [`restart_required`]'s to say, before publishing.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::hosts::Dialing;
use super::pool::{load_cluster_tls, LocalCluster};
use super::{local_clusters, InitiatorShard, Snapshot};
use crate::config::{ClusterConfig, Config};
use crate::shard::reload::Generation;

/// The configuration keys whose change `generation`'s initiator cannot apply: the process
/// side reports them as needing a restart (and applies the rest). Only the presence of the
/// `initiator` section: a shard runs the initiator role or not from its start.
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    if old.initiator.is_some() != new.initiator.is_some() {
        vec!["initiator"]
    } else {
        Vec::new()
    }
}

/// How a reload changes the local clusters (by name, sorted).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LocalDiff {
    /// Same settings: the pool stays.
    pub kept: Vec<String>,
    /// Changed settings: a new pool; the old one drains.
    pub changed: Vec<String>,
    pub added: Vec<String>,
    /// No route names it any more: its pool drains.
    pub removed: Vec<String>,
}

/// Compares the local clusters in use (`old`) with those `new` names.
pub fn diff_local(old: &BTreeMap<&str, &ClusterConfig>, new: &Config) -> LocalDiff {
    let wanted = local_clusters(new);
    let mut diff = LocalDiff::default();
    for (name, cluster) in &wanted {
        match old.get(name) {
            Some(was) if was == cluster => diff.kept.push(name.to_string()),
            Some(_) => diff.changed.push(name.to_string()),
            None => diff.added.push(name.to_string()),
        }
    }
    diff.removed = old
        .keys()
        .filter(|name| !wanted.contains_key(*name))
        .map(|name| name.to_string())
        .collect();
    diff
}

/// Applies `generation` on this shard (registered with `ShardReload::on_reload` by
/// `run_shard`).
pub fn apply(ctx: &Rc<InitiatorShard>, dialing: &RefCell<Dialing>, generation: &Generation) {
    let config = &generation.config;
    let Some(cfg) = config.initiator.clone() else {
        tracing::warn!(
            generation = generation.number,
            "the new configuration has no initiator: the initiator keeps running its old one until restarted"
        );
        return;
    };
    let old = ctx.snapshot();
    let old_local: BTreeMap<&str, &ClusterConfig> = old
        .local
        .iter()
        .map(|(name, c)| (name.as_str(), c.config()))
        .collect();
    let diff = diff_local(&old_local, config);
    let local = local_pools(ctx, &old.local, &diff, config);
    let (tunnel_tls, tls_errors) = old.tunnel_tls.follow(config);
    for e in tls_errors {
        tracing::error!("reload: {e}; keeping what was loaded before");
    }
    let snapshot = Rc::new(Snapshot::new(
        generation.number,
        cfg,
        config,
        local,
        tunnel_tls,
    ));
    drop(old);
    *ctx.current.borrow_mut() = snapshot.clone();
    ctx.tunnels_up.follow(&snapshot.cfg.tunnels);
    let (started, retired) = if ctx.shutdown.is_triggered() {
        (0, 0) // draining: nothing new is dialed
    } else {
        dialing.borrow_mut().follow(ctx, &snapshot)
    };
    if ctx.shard == 0 {
        tracing::info!(
            generation = generation.number,
            routes = snapshot.cfg.routes.len(),
            clusters_kept = ?diff.kept,
            clusters_changed = ?diff.changed,
            clusters_added = ?diff.added,
            clusters_removed = ?diff.removed,
            endpoint_sets_started = started,
            endpoint_sets_retired = retired,
            "initiator: configuration applied (shard 0's view)"
        );
    }
}

/// The pools of the new generation: kept ones as they are (their TLS files re-read), new ones
/// for changed and added clusters.
fn local_pools(
    ctx: &InitiatorShard,
    old: &HashMap<String, Rc<LocalCluster>>,
    diff: &LocalDiff,
    config: &Config,
) -> HashMap<String, Rc<LocalCluster>> {
    let mut pools = HashMap::new();
    for name in &diff.kept {
        if let Some(pool) = old.get(name) {
            if let Some(Err(e)) = pool.tls().map(|t| t.reload()) {
                tracing::error!("reload: clusters.{name}.tls: {e}; keeping the loaded one");
            }
            pools.insert(name.clone(), pool.clone());
        }
    }
    for name in diff.changed.iter().chain(&diff.added) {
        let Some(cluster) = config.clusters.get(name) else {
            continue;
        };
        match load_cluster_tls(name, cluster) {
            Ok(tls) => {
                let stats = ctx.stats.clone();
                let pool =
                    LocalCluster::new(name.as_str().into(), cluster.clone(), tls, stats, ctx.shard);
                pools.insert(name.clone(), Rc::new(pool));
            }
            Err(e) => match old.get(name) {
                Some(pool) => {
                    tracing::error!("reload: {e}; clusters.{name} keeps its old settings");
                    pools.insert(name.clone(), pool.clone());
                }
                None => tracing::error!("reload: {e}; clusters.{name} is left out"),
            },
        }
    }
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        crate::config::parse(yaml, "test.yaml").expect("valid config")
    }

    const BASE: &str = r#"
initiator:
  tunnels: ["rc://n1:c1:t1@cloud:2"]
  routes:
    - { prefix: /api, cluster: api }
    - { prefix: /, cluster: web }
clusters:
  cloud: { endpoints: ["127.0.0.1:9000"] }
  api: { endpoints: ["127.0.0.1:8001"] }
  web: { endpoints: ["127.0.0.1:8002"] }
  spare: { endpoints: ["127.0.0.1:8003"] }
"#;

    fn diff(old: &Config, new: &Config) -> LocalDiff {
        diff_local(&local_clusters(old), new)
    }

    #[test]
    fn local_clusters_are_kept_changed_added_and_removed() {
        let old = config(BASE);
        assert_eq!(
            diff(&old, &old),
            LocalDiff {
                kept: vec!["api".into(), "web".into()],
                ..LocalDiff::default()
            }
        );
        // web's endpoint moves, api is no longer routed, spare is; cloud (dialed) is no
        // local cluster whatever happens to it.
        let new = config(
            &BASE
                .replace("cluster: api", "cluster: spare")
                .replace("127.0.0.1:8002", "127.0.0.1:8012")
                .replace("127.0.0.1:9000", "127.0.0.1:9010"),
        );
        assert_eq!(
            diff(&old, &new),
            LocalDiff {
                kept: vec![],
                changed: vec!["web".into()],
                added: vec!["spare".into()],
                removed: vec!["api".into()],
            }
        );
        // Any setting counts: a pool limit.
        let new = config(&BASE.replace(
            "api: { endpoints: [\"127.0.0.1:8001\"] }",
            "api: { endpoints: [\"127.0.0.1:8001\"], max_connections: 3 }",
        ));
        assert_eq!(diff(&old, &new).changed, ["api"]);
        // A route timeout is the route's, not the cluster's.
        let new = config(&BASE.replace(
            "{ prefix: /api, cluster: api }",
            "{ prefix: /api, cluster: api, timeout: 2s }",
        ));
        assert_eq!(diff(&old, &new).kept, ["api", "web"]);
    }

    #[test]
    fn only_the_initiator_appearing_or_going_needs_a_restart() {
        let old = config(BASE);
        let renamed = config(&BASE.replace("rc://n1:c1:t1", "rc://n2:c2:t2"));
        assert!(restart_required(&old, &renamed).is_empty());
        let none = config(
            "clusters:\n  cloud: { endpoints: [\"127.0.0.1:9000\"] }\nresponder:\n  tunnel_listener: { listen: \"127.0.0.1:0\" }\n  egress_listener: { listen: \"127.0.0.1:0\", routes: [{ prefix: / }] }\n",
        );
        assert_eq!(restart_required(&old, &none), ["initiator"]);
        assert_eq!(restart_required(&none, &old), ["initiator"]);
    }
}
