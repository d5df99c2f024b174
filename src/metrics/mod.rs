//! Metrics: what rtun counts, recorded per shard and merged when the admin endpoint is asked
//! (`/metrics` in the Prometheus text format, `/stats` for humans).
//!
//! Thread-per-core: each shard records into its own [`ShardMetrics`] block, written by that
//! shard only — relaxed atomics on memory no other thread writes, so no lock and no contended
//! cache line on the request path. The scrape ([`Metrics::snapshot`], on the admin's shard)
//! reads every block and adds them up.
//!
//! - [`counters`]: plain counters, one line each to declare.
//! - [`labels`]: the typed label sets of the labelled families, each a fixed index.
//! - [`histogram`]: latency histograms with fixed buckets.
//! - [`series`]: bounded tables for label values that come from peers (tenant, cluster,
//!   host id), with an overflow series past `admin.max_series`.
//! - [`snapshot`]: every shard's blocks merged.
//! - [`exposition`]: the Prometheus text format (HELP and TYPE on every family).
//! - [`stats_page`]: `/stats`, the human view, which keeps the counter names of old.
//!
//! Why no metrics crate: prometheus-client's metric types are shared atomics meant to be
//! written from any thread (a per-shard copy of each and a merge would still be ours to
//! write), and its text encoder writes OpenMetrics (a counter's family is named without
//! `_total`, `# EOF` ends the page), which Prometheus 2.x's `promtool check metrics` (Debian
//! 12's 2.42) rejects for every counter ("no help text"). The Prometheus text format is a few
//! dozen lines (`exposition`), escaping included.

pub mod counters;
pub mod exposition;
pub mod histogram;
pub mod labels;
pub mod series;
pub mod snapshot;
pub mod stats_page;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::AdminConfig;

use crate::initiator::dialer::DialError;
use crate::tls::TlsFailure;
use crate::tunnel::End;

pub use counters::Counters;
pub use histogram::Histogram;
pub use labels::{HandshakeOutcome, RequestLabels, TlsSide};
pub use series::{SeriesIndex, SeriesSlot, SeriesTable};
pub use snapshot::Snapshot;

/// What the configuration says about metrics (`admin:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// `admin.detailed_stats`: count requests per (tenant, host id) too.
    pub detailed_stats: bool,
    /// `admin.max_series`: label pairs each dynamic family keeps per shard.
    pub max_series: usize,
}

/// `admin.max_series`'s default.
pub const DEFAULT_MAX_SERIES: usize = 1000;

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            detailed_stats: false,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

impl MetricsSettings {
    pub fn from_admin(admin: Option<&AdminConfig>) -> Self {
        admin.map_or_else(Self::default, |a| Self {
            detailed_stats: a.detailed_stats,
            max_series: a.max_series,
        })
    }
}

/// Tunnels of one (tenant, cluster) on one shard. Live = opened − closed.
#[derive(Debug, Default)]
pub struct TunnelCounts {
    pub opened: AtomicU64,
    /// By [`End`], in [`End::LABELS`] order.
    pub closed: [AtomicU64; End::LABELS.len()],
}

/// Initiator: the tunnels to one responder cluster on one shard, and the dial attempts that
/// failed, by [`DialError::LABELS`].
#[derive(Debug, Default)]
pub struct DialedCounts {
    pub tunnels: TunnelCounts,
    pub failures: [AtomicU64; DialError::LABELS.len()],
}

/// Requests to one (tenant, host id) on one shard, by status class (detailed stats).
#[derive(Debug, Default)]
pub struct HostCounts {
    pub requests: [AtomicU64; labels::CODE_CLASSES.len()],
}

/// One shard's block. Dereferences to its plain [`Counters`], so a plain counter is
/// `inc(&shard.egress_cross_shard)`.
#[derive(Debug)]
pub struct ShardMetrics {
    counters: Counters,
    /// By [`RequestLabels::index`].
    requests: [AtomicU64; labels::REQUEST_SERIES],
    /// By listener ([`labels::listener_index`]).
    latency: [Histogram; labels::LISTENERS.len()],
    /// By [`HandshakeOutcome::index`].
    handshakes: [AtomicU64; labels::HANDSHAKE_OUTCOMES],
    /// By [`TlsSide`], then [`TlsFailure::ALL`] order.
    tls_failures: [[AtomicU64; TlsFailure::ALL.len()]; TlsSide::ALL.len()],
    /// Responder: tunnels by (tenant, cluster id).
    pub tunnels: SeriesTable<TunnelCounts>,
    /// Initiator: tunnels and failed dials by responder cluster (keyed `(cluster, "")`: one
    /// label).
    pub dialed: SeriesTable<DialedCounts>,
    /// Egress requests by (tenant, host id), with detailed stats only (else no room).
    pub hosts: SeriesTable<HostCounts>,
}

impl std::ops::Deref for ShardMetrics {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        &self.counters
    }
}

impl ShardMetrics {
    fn new(settings: &MetricsSettings) -> Self {
        Self {
            counters: Counters::default(),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Default::default(),
            handshakes: Default::default(),
            tls_failures: Default::default(),
            tunnels: SeriesTable::new(settings.max_series),
            dialed: SeriesTable::new(settings.max_series),
            hosts: SeriesTable::new(match settings.detailed_stats {
                true => settings.max_series,
                false => 0,
            }),
        }
    }

    /// A request that ended (the logging phase): its labels, and its latency if the role
    /// measures one for it.
    pub fn request(&self, labels: RequestLabels, latency: Option<Duration>) {
        inc(&self.requests[labels.index()]);
        if let Some(latency) = latency {
            self.latency[labels::listener_index(labels.listener)].observe(latency);
        }
    }

    pub fn handshake(&self, outcome: HandshakeOutcome<'_>) {
        inc(&self.handshakes[outcome.index()]);
    }

    pub fn tls_failed(&self, side: TlsSide, failure: TlsFailure) {
        inc(&self.tls_failures[side.index()][labels::tls_failure_index(failure)]);
    }

    /// The slot of a tunnel's (tenant, cluster), found once when it registers; an overflow
    /// is counted.
    pub fn tunnel_slot(&self, index: &SeriesIndex, tenant: &str, cluster: &str) -> SeriesSlot {
        self.slot(&self.tunnels, index, tenant, cluster)
    }

    pub fn tunnel_opened(&self, slot: SeriesSlot) {
        inc(&self.tunnels.get(slot).opened);
    }

    pub fn tunnel_closed(&self, slot: SeriesSlot, end: &End) {
        inc(&self.tunnels.get(slot).closed[labels::end_index(end)]);
    }

    /// Initiator: the slot of a responder cluster, found once per tunnel keeper (and endpoint
    /// set); an overflow is counted.
    pub fn dialed_slot(&self, index: &SeriesIndex, cluster: &str) -> SeriesSlot {
        self.slot(&self.dialed, index, cluster, "")
    }

    /// Initiator: a tunnel to the slot's cluster came up (its handshake was accepted).
    pub fn dialed_opened(&self, slot: SeriesSlot) {
        inc(&self.dialed.get(slot).tunnels.opened);
    }

    /// Initiator: a tunnel to the slot's cluster ended.
    pub fn dialed_closed(&self, slot: SeriesSlot, end: &End) {
        inc(&self.dialed.get(slot).tunnels.closed[labels::end_index(end)]);
    }

    /// Initiator: a dial attempt to the slot's cluster failed (or its endpoint did not
    /// resolve). A refused TLS handshake is counted by class too
    /// (`rtun_tls_failures_total{side="initiator"}`).
    pub fn dial_failed(&self, slot: SeriesSlot, error: &DialError) {
        inc(&self.dialed.get(slot).failures[labels::dial_failure_index(error)]);
        if let DialError::Tls { failure, .. } = error {
            self.tls_failed(TlsSide::Initiator, *failure);
        }
    }

    /// Detailed stats: one request to `host` (of `tenant`) with status class `code_class`.
    pub fn host_request(&self, index: &SeriesIndex, tenant: &str, host: &str, code_class: usize) {
        let slot = self.slot(&self.hosts, index, tenant, host);
        inc(&self.hosts.get(slot).requests[code_class]);
    }

    fn slot<C>(&self, table: &SeriesTable<C>, index: &SeriesIndex, a: &str, b: &str) -> SeriesSlot {
        let slot = index.slot(table, a, b);
        if slot == SeriesSlot::Overflow {
            inc(&self.series_overflow);
        }
        slot
    }
}

/// Every shard's block.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    shards: Box<[ShardMetrics]>,
    settings: MetricsSettings,
}

impl Metrics {
    /// Blocks for `shards` shards, with the default settings.
    pub fn new(shards: usize) -> Self {
        Self::with_settings(shards, MetricsSettings::default())
    }

    pub fn with_settings(shards: usize, settings: MetricsSettings) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| ShardMetrics::new(&settings))
            .collect();
        Metrics(Arc::new(Inner { shards, settings }))
    }

    /// The block that `shard` writes.
    pub fn shard(&self, shard: usize) -> &ShardMetrics {
        &self.0.shards[shard % self.0.shards.len()]
    }

    pub fn settings(&self) -> MetricsSettings {
        self.0.settings
    }

    /// Every shard's blocks, merged.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::merge(self.0.shards.iter(), self.0.settings)
    }

    /// `/stats`'s `(name, value)` lines (the human view).
    pub fn totals(&self) -> Vec<(String, u64)> {
        stats_page::lines(&self.snapshot())
    }
}

/// Increments a counter.
#[inline]
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
