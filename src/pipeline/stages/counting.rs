//! Counts requests into the shard's metrics block (`crate::metrics`): each request once, in
//! the logging phase, by listener, status class and failure reason, with its latency; with
//! `admin.detailed_stats`, egress requests per (tenant, host id) too.

use std::time::Duration;

use http::request;

use crate::metrics::{inc, Metrics, RequestLabels, SeriesIndex, ShardMetrics};
use crate::pipeline::{ProxyError, RequestCtx, Role, Stage};
use crate::shard::ShardId;

pub(in crate::pipeline) struct Counting {
    metrics: Metrics,
    shard: ShardId,
    /// This shard's per-host series (detailed stats): found by a shard-local lookup, no lock.
    /// Per request rather than per tunnel because the counting shard is the one that
    /// accepted the request, and its tunnel may live on another shard.
    hosts: SeriesIndex,
}

impl Counting {
    pub(in crate::pipeline) fn new(metrics: Metrics, shard: ShardId) -> Self {
        Self {
            metrics,
            shard,
            hosts: SeriesIndex::default(),
        }
    }

    fn stats(&self) -> &ShardMetrics {
        self.metrics.shard(self.shard)
    }
}

/// The latency a role measures: egress, the whole request (head to the response body's
/// end); initiator, the local service's (sent to it → its response head), when it was asked.
fn latency(ctx: &RequestCtx) -> Option<Duration> {
    let t = &ctx.timings;
    match ctx.role {
        Role::Egress => t.end.map(|end| end.saturating_duration_since(t.start)),
        Role::Initiator => match (t.upstream_start, t.response_start) {
            (Some(sent), Some(head)) => Some(head.saturating_duration_since(sent)),
            _ => None,
        },
    }
}

impl Stage for Counting {
    /// Requests as they arrive (`egress_requests`, `initiator_requests`).
    fn request_filter(
        &self,
        ctx: &mut RequestCtx,
        _request: &mut request::Parts,
    ) -> Result<(), ProxyError> {
        let s = self.stats();
        inc(match ctx.role {
            Role::Egress => &s.egress_requests,
            Role::Initiator => &s.initiator_requests,
        });
        Ok(())
    }

    /// Every request once, as it ends: a local reply's body ends before its last byte is
    /// written, so a client that reads the counters after its answer sees them.
    fn logging(&self, ctx: &RequestCtx) {
        let status = ctx.outcome.status.map(|s| s.as_u16());
        let labels = RequestLabels::of(ctx.role, status, ctx.outcome.failure.as_ref());
        let s = self.stats();
        s.request(labels, latency(ctx));
        if ctx.role == Role::Egress && self.metrics.settings().detailed_stats {
            if let Some(host) = &ctx.host_id {
                let tenant = ctx.tenant.as_deref().unwrap_or("");
                s.host_request(&self.hosts, tenant, host, labels.code_class);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsSettings;

    /// The `/stats` lines that moved when one request ended with `failure` (and the status
    /// its local reply has; `started`: a 200 went out before it failed).
    fn moved(metrics: &Metrics, role: Role, failure: ProxyError, started: bool) -> Vec<String> {
        let counting = Counting::new(metrics.clone(), 0);
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let mut ctx = RequestCtx::new(role, 0, None, &parts, false);
        ctx.outcome.status = Some(match started {
            true => http::StatusCode::OK,
            false => failure.status(),
        });
        ctx.outcome.failure = Some(failure);
        let before = metrics.totals();
        counting.logging(&ctx);
        let after = metrics.totals();
        after
            .into_iter()
            .zip(before)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect()
    }

    fn count(role: Role, failure: ProxyError) -> Vec<String> {
        moved(&Metrics::new(1), role, failure, false)
    }

    #[test]
    fn client_errors_have_their_own_counters() {
        let bad = || ProxyError::BadRequest {
            reason: "duplicate Host header".into(),
        };
        let body = || ProxyError::ClientBodyFailed {
            detail: "invalid chunk size line".into(),
        };
        assert_eq!(count(Role::Egress, bad()), ["egress_400_bad_request"]);
        assert_eq!(count(Role::Egress, body()), ["egress_400_client_body"]);
        assert_eq!(count(Role::Initiator, bad()), Vec::<String>::new());
        let unauthenticated = ProxyError::Unauthenticated {
            reason: "Unknown API key".into(),
        };
        assert_eq!(
            count(Role::Egress, unauthenticated),
            ["egress_401_unauthenticated"]
        );
        // A body that fails after the response started is not a 400.
        assert_eq!(
            moved(&Metrics::new(1), Role::Egress, body(), true),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_stream_idle_timeout_is_counted_once_before_or_after_the_head() {
        let idle = |response_started| ProxyError::StreamIdleTimeout {
            timeout: Duration::from_secs(300),
            response_started,
        };
        assert_eq!(
            count(Role::Egress, idle(false)),
            ["egress_stream_idle_timeout"]
        );
        let metrics = Metrics::new(1);
        assert_eq!(
            moved(&metrics, Role::Initiator, idle(true), true),
            ["initiator_stream_idle_timeout"]
        );
    }

    #[test]
    fn overload_has_its_counters() {
        let overloaded = ProxyError::LocalOverloaded {
            cluster: "app".into(),
            reason: "full".into(),
        };
        assert_eq!(
            count(Role::Initiator, overloaded),
            ["initiator_503_local_overloaded"]
        );
        let expired = ProxyError::QueueTimeout {
            cluster: "app".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            count(Role::Initiator, expired),
            ["initiator_503_queue_timeout"]
        );
    }

    #[test]
    fn cancellations_are_counted_on_both_sides() {
        for (role, name) in [
            (Role::Egress, "egress_client_cancelled"),
            (Role::Initiator, "initiator_cancelled"),
        ] {
            assert_eq!(count(role, ProxyError::ClientClosed), [name]);
        }
    }

    #[test]
    fn every_request_is_counted_once_with_its_latency() {
        let metrics = Metrics::with_settings(
            1,
            MetricsSettings {
                detailed_stats: true,
                max_series: 10,
            },
        );
        let counting = Counting::new(metrics.clone(), 0);
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let mut ctx = RequestCtx::new(Role::Egress, 0, None, &parts, false);
        ctx.host_id = Some("node-1".into());
        ctx.outcome.status = Some(http::StatusCode::OK);
        ctx.timings.end = Some(ctx.timings.start + Duration::from_millis(2));
        counting.logging(&ctx);
        // The initiator measures its local service only: a request never sent has none.
        let mut local = RequestCtx::new(Role::Initiator, 0, None, &parts, false);
        local.outcome.status = Some(http::StatusCode::NOT_FOUND);
        counting.logging(&local);
        let s = metrics.snapshot();
        let ok = RequestLabels::of(Role::Egress, Some(200), None);
        let not_found = RequestLabels::of(Role::Initiator, Some(404), None);
        assert_eq!(
            (s.requests[ok.index()], s.requests[not_found.index()]),
            (1, 1)
        );
        assert_eq!((s.latency[0].count(), s.latency[1].count()), (1, 0));
        assert_eq!(s.latency[0].cumulative()[3], (0.005, 1));
        assert_eq!(s.hosts[&(String::new(), "node-1".into())], [0, 1, 0, 0, 0]);
    }
}
