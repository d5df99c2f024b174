//! Every shard's blocks read and added up: what one scrape shows.
//!
//! Each value is read once with a relaxed load; a scrape that races a shard's write sees it
//! or not, never a torn value. Dynamic series are merged by label pair (each shard has its
//! own table and slot order).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::HistogramSnapshot;
use super::labels::{self, HANDSHAKE_OUTCOMES, REQUEST_SERIES};
use super::{Counters, MetricsSettings, ShardMetrics};
use crate::initiator::dialer::DialError;
use crate::tls::TlsFailure;
use crate::tunnel::End;

/// Tunnels of one (tenant, cluster), all shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelTotals {
    pub opened: u64,
    pub closed: [u64; End::LABELS.len()],
}

impl TunnelTotals {
    /// Live tunnels: opened and not closed yet.
    pub fn live(&self) -> u64 {
        self.opened.saturating_sub(self.closed.iter().sum())
    }
}

/// Initiator: tunnels to one responder cluster and failed dials, all shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DialedTotals {
    pub tunnels: TunnelTotals,
    /// By [`DialError::LABELS`].
    pub failures: [u64; DialError::LABELS.len()],
}

/// All shards, merged.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Plain counters, in [`Counters::DESCRIPTIONS`] order.
    pub counters: Vec<u64>,
    /// By [`labels::RequestLabels::index`].
    pub requests: Vec<u64>,
    /// By listener.
    pub latency: [HistogramSnapshot; labels::LISTENERS.len()],
    /// By [`labels::HandshakeOutcome::index`].
    pub handshakes: [u64; HANDSHAKE_OUTCOMES],
    /// By [`labels::TlsSide`], then [`TlsFailure::ALL`] order.
    pub tls_failures: [[u64; TlsFailure::ALL.len()]; 3],
    /// By (tenant, cluster id).
    pub tunnels: BTreeMap<(String, String), TunnelTotals>,
    /// Initiator: by responder cluster.
    pub dialed: BTreeMap<String, DialedTotals>,
    /// By (tenant, host id), by status class (detailed stats).
    pub hosts: BTreeMap<(String, String), [u64; labels::CODE_CLASSES.len()]>,
    pub settings: MetricsSettings,
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Snapshot {
    pub fn merge<'a>(
        shards: impl Iterator<Item = &'a ShardMetrics>,
        settings: MetricsSettings,
    ) -> Self {
        let mut s = Snapshot {
            counters: vec![0; Counters::DESCRIPTIONS.len()],
            requests: vec![0; REQUEST_SERIES],
            latency: Default::default(),
            handshakes: [0; HANDSHAKE_OUTCOMES],
            tls_failures: Default::default(),
            tunnels: BTreeMap::new(),
            dialed: BTreeMap::new(),
            hosts: BTreeMap::new(),
            settings,
        };
        for shard in shards {
            add(&mut s.counters, shard.counters.values());
            add(&mut s.requests, shard.requests.iter().map(load));
            for (mine, theirs) in s.latency.iter_mut().zip(&shard.latency) {
                mine.merge(&theirs.snapshot());
            }
            add(&mut s.handshakes, shard.handshakes.iter().map(load));
            for (mine, theirs) in s.tls_failures.iter_mut().zip(&shard.tls_failures) {
                add(mine, theirs.iter().map(load));
            }
            shard.tunnels.for_each(|tenant, cluster, c| {
                let total = s
                    .tunnels
                    .entry((tenant.to_owned(), cluster.to_owned()))
                    .or_default();
                total.opened += load(&c.opened);
                add(&mut total.closed, c.closed.iter().map(load));
            });
            shard.dialed.for_each(|cluster, _, c| {
                let total = s.dialed.entry(cluster.to_owned()).or_default();
                total.tunnels.opened += load(&c.tunnels.opened);
                add(&mut total.tunnels.closed, c.tunnels.closed.iter().map(load));
                add(&mut total.failures, c.failures.iter().map(load));
            });
            shard.hosts.for_each(|tenant, host, c| {
                let total = s
                    .hosts
                    .entry((tenant.to_owned(), host.to_owned()))
                    .or_default();
                add(total, c.requests.iter().map(load));
            });
        }
        // An empty overflow series (or any never used) says nothing.
        s.tunnels.retain(|_, t| t.opened > 0);
        // A responder cluster shows from its first keeper on (0 tunnels is news); the
        // overflow series only once used.
        s.dialed.retain(|cluster, d| {
            cluster != super::series::OVERFLOW
                || d.tunnels.opened > 0
                || d.failures.iter().any(|n| *n > 0)
        });
        s.hosts.retain(|_, h| h.iter().any(|n| *n > 0));
        s
    }

    /// A plain counter by name (tests and `/stats`).
    pub fn counter(&self, name: &str) -> Option<u64> {
        Counters::DESCRIPTIONS
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| self.counters[i])
    }
}

fn add(totals: &mut [u64], values: impl IntoIterator<Item = u64>) {
    for (total, v) in totals.iter_mut().zip(values) {
        *total += v;
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::pipeline::Role;
    use std::time::Duration;

    #[test]
    fn shards_are_added_up_family_by_family() {
        let metrics = Metrics::with_settings(
            2,
            MetricsSettings {
                detailed_stats: true,
                max_series: 1,
            },
        );
        let ok = RequestLabels::of(Role::Egress, Some(200), None);
        let no_tunnel = crate::pipeline::ProxyError::NoTunnel {
            host_id: "h".into(),
        };
        let failed = RequestLabels::of(Role::Egress, None, Some(&no_tunnel));
        metrics.shard(0).request(ok, Some(Duration::from_millis(2)));
        metrics
            .shard(1)
            .request(ok, Some(Duration::from_millis(20)));
        metrics.shard(1).request(failed, None);
        inc(&metrics.shard(0).egress_cross_shard);
        inc(&metrics.shard(1).egress_cross_shard);
        metrics
            .shard(0)
            .tls_failed(TlsSide::Egress, TlsFailure::UnknownCa);
        metrics
            .shard(1)
            .tls_failed(TlsSide::Egress, TlsFailure::UnknownCa);

        // The same (tenant, cluster) on both shards is one series; a second pair on a shard
        // whose table is full (max_series 1) goes to the overflow series.
        let (i0, i1) = (SeriesIndex::default(), SeriesIndex::default());
        let a0 = metrics.shard(0).tunnel_slot(&i0, "t", "c");
        let a1 = metrics.shard(1).tunnel_slot(&i1, "t", "c");
        let b1 = metrics.shard(1).tunnel_slot(&i1, "t", "d");
        for (shard, slot) in [(0, a0), (1, a1), (1, a1), (1, b1)] {
            metrics.shard(shard).tunnel_opened(slot);
        }
        metrics.shard(1).tunnel_closed(a1, &End::Dead);
        // Each table has its own index.
        let (h0, h1) = (SeriesIndex::default(), SeriesIndex::default());
        metrics.shard(0).host_request(&h0, "t", "n1", 1);
        metrics.shard(1).host_request(&h1, "t", "n1", 1);

        // Initiator: a responder cluster on both shards is one series, a second one past the
        // cap is the overflow; a cluster with nothing counted yet still shows (0 tunnels).
        let (d0, d1) = (SeriesIndex::default(), SeriesIndex::default());
        let r0 = metrics.shard(0).dialed_slot(&d0, "r");
        let r1 = metrics.shard(1).dialed_slot(&d1, "r");
        let q1 = metrics.shard(1).dialed_slot(&d1, "q");
        metrics.shard(0).dialed_opened(r0);
        metrics.shard(1).dialed_opened(r1);
        metrics.shard(1).dialed_closed(r1, &End::Closed);
        metrics
            .shard(1)
            .dial_failed(q1, &crate::initiator::dialer::DialError::Closed);
        let idle = SeriesIndex::default();
        let metrics_idle = Metrics::new(1);
        metrics_idle.shard(0).dialed_slot(&idle, "idle");

        let s = metrics.snapshot();
        assert_eq!(s.requests[ok.index()], 2);
        assert_eq!(s.requests[failed.index()], 1);
        assert_eq!(s.latency[0].count(), 2);
        assert_eq!(s.latency[1].count(), 0);
        assert_eq!(s.counter("egress_cross_shard"), Some(2));
        assert_eq!(s.tls_failures[TlsSide::Egress.index()][0], 2);
        let key = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let tc = s.tunnels[&key("t", "c")];
        assert_eq!((tc.opened, tc.live(), tc.closed[1]), (3, 2, 1));
        assert_eq!(
            s.tunnels[&key(series::OVERFLOW, series::OVERFLOW)].live(),
            1
        );
        assert_eq!(s.hosts[&key("t", "n1")], [0, 2, 0, 0, 0]);
        let r = s.dialed["r"];
        assert_eq!((r.tunnels.opened, r.tunnels.live()), (2, 1));
        let closed_at = crate::initiator::dialer::DialError::LABELS
            .iter()
            .position(|l| *l == "closed")
            .expect("closed");
        assert_eq!(s.dialed[series::OVERFLOW].failures[closed_at], 1);
        assert_eq!(s.counter("series_overflow"), Some(2), "a tunnel pair and q");
        let idle = metrics_idle.snapshot();
        assert_eq!(idle.dialed["idle"], Default::default());
        assert!(!idle.dialed.contains_key(series::OVERFLOW));
    }
}
