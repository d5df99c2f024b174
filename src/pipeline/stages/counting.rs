//! Counts requests and their failures into the shard's counters (`stats`).

use http::response;

use crate::pipeline::{ProxyError, RequestCtx, Role, Stage};
use crate::shard::ShardId;
use crate::stats::{inc, ShardStats, Stats};

pub(in crate::pipeline) struct Counting {
    stats: Stats,
    shard: ShardId,
}

impl Counting {
    pub(in crate::pipeline) fn new(stats: Stats, shard: ShardId) -> Self {
        Self { stats, shard }
    }

    fn stats(&self) -> &ShardStats {
        self.stats.shard(self.shard)
    }
}

impl Stage for Counting {
    fn request_filter(
        &self,
        ctx: &mut RequestCtx,
        _request: &mut http::request::Parts,
    ) -> Result<(), ProxyError> {
        let s = self.stats();
        inc(match ctx.role {
            Role::Egress => &s.egress_requests,
            Role::Initiator => &s.initiator_requests,
        });
        Ok(())
    }

    /// Local replies are counted as their head leaves, so a client that reads the counters
    /// after its answer sees them.
    fn response_filter(&self, ctx: &RequestCtx, _response: &mut response::Parts) {
        let Some(failure) = &ctx.outcome.failure else {
            return;
        };
        let s = self.stats();
        let counter = match (ctx.role, failure) {
            (Role::Egress, ProxyError::BadRequest { .. }) => &s.egress_400_bad_request,
            (Role::Egress, ProxyError::ClientBodyFailed { .. }) => &s.egress_400_client_body,
            (Role::Egress, ProxyError::Unauthenticated { .. }) => &s.egress_401_unauthenticated,
            (Role::Egress, ProxyError::NoRoute { .. }) => &s.egress_404_no_route,
            (Role::Egress, ProxyError::NoHostId { .. }) => &s.egress_400_no_host_id,
            (Role::Egress, ProxyError::NoTunnel { .. } | ProxyError::TunnelsBusy { .. }) => {
                &s.egress_503_no_tunnel
            }
            (Role::Egress, ProxyError::TunnelFailed { .. }) => &s.egress_502_tunnel_error,
            (Role::Egress, ProxyError::Timeout(_)) => &s.egress_504_timeout,
            (
                Role::Egress,
                ProxyError::StreamIdleTimeout {
                    response_started: false,
                    ..
                },
            ) => &s.egress_stream_idle_timeout,
            (Role::Initiator, ProxyError::NoRoute { .. }) => &s.initiator_404_no_route,
            (
                Role::Initiator,
                ProxyError::LocalUnreachable { .. } | ProxyError::LocalFailed { .. },
            ) => &s.initiator_502_local_error,
            (Role::Initiator, ProxyError::Timeout(_)) => &s.initiator_504_timeout,
            (
                Role::Initiator,
                ProxyError::StreamIdleTimeout {
                    response_started: false,
                    ..
                },
            ) => &s.initiator_stream_idle_timeout,
            (Role::Initiator, ProxyError::LocalOverloaded { .. }) => {
                &s.initiator_503_local_overloaded
            }
            (Role::Initiator, ProxyError::QueueTimeout { .. }) => &s.initiator_503_queue_timeout,
            _ => return,
        };
        inc(counter);
    }

    /// Failures after the response head (no local reply) are counted when the request ends:
    /// the stream idle timeout, and cancellations (the client — for the initiator, the
    /// responder — went away before the response ended, before its head or during its body).
    fn logging(&self, ctx: &RequestCtx) {
        let s = self.stats();
        let counter = match (&ctx.outcome.failure, ctx.role) {
            (
                Some(ProxyError::StreamIdleTimeout {
                    response_started: true,
                    ..
                }),
                Role::Egress,
            ) => &s.egress_stream_idle_timeout,
            (
                Some(ProxyError::StreamIdleTimeout {
                    response_started: true,
                    ..
                }),
                Role::Initiator,
            ) => &s.initiator_stream_idle_timeout,
            (Some(ProxyError::ClientClosed), Role::Egress) => &s.egress_client_cancelled,
            (Some(ProxyError::ClientClosed), Role::Initiator) => &s.initiator_cancelled,
            _ => return,
        };
        inc(counter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters a local reply made from `failure` moves (none other moves).
    fn count(role: Role, failure: ProxyError) -> Vec<(&'static str, u64)> {
        let stats = Stats::new(1);
        let counting = Counting::new(stats.clone(), 0);
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let mut ctx = RequestCtx::new(role, 0, None, &parts, false);
        ctx.outcome.failure = Some(failure);
        let (mut head, ()) = http::Response::new(()).into_parts();
        counting.response_filter(&ctx, &mut head);
        stats.totals().into_iter().filter(|(_, v)| *v > 0).collect()
    }

    #[test]
    fn client_errors_have_their_own_counters() {
        let bad = || ProxyError::BadRequest {
            reason: "duplicate Host header".into(),
        };
        let body = || ProxyError::ClientBodyFailed {
            detail: "invalid chunk size line".into(),
        };
        assert_eq!(count(Role::Egress, bad()), [("egress_400_bad_request", 1)]);
        assert_eq!(count(Role::Egress, body()), [("egress_400_client_body", 1)]);
        assert_eq!(count(Role::Initiator, bad()), []);
        let unauthenticated = ProxyError::Unauthenticated {
            reason: "Unknown API key".into(),
        };
        assert_eq!(
            count(Role::Egress, unauthenticated),
            [("egress_401_unauthenticated", 1)]
        );
    }

    #[test]
    fn a_stream_idle_timeout_is_counted_once_before_or_after_the_head() {
        let idle = |response_started| ProxyError::StreamIdleTimeout {
            timeout: std::time::Duration::from_secs(300),
            response_started,
        };
        // Before the head: a local reply, counted as its head leaves.
        assert_eq!(
            count(Role::Egress, idle(false)),
            [("egress_stream_idle_timeout", 1)]
        );
        assert_eq!(count(Role::Egress, idle(true)), [], "not a local reply");
        // After the head: counted when the request ends.
        let stats = Stats::new(1);
        let counting = Counting::new(stats.clone(), 0);
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        for (role, started) in [(Role::Initiator, true), (Role::Initiator, false)] {
            let mut ctx = RequestCtx::new(role, 0, None, &parts, false);
            ctx.outcome.failure = Some(idle(started));
            counting.logging(&ctx);
        }
        let moved: Vec<_> = stats.totals().into_iter().filter(|(_, v)| *v > 0).collect();
        assert_eq!(moved, [("initiator_stream_idle_timeout", 1)]);
    }

    #[test]
    fn overload_has_its_counters() {
        let overloaded = ProxyError::LocalOverloaded {
            cluster: "app".into(),
            reason: "full".into(),
        };
        assert_eq!(
            count(Role::Initiator, overloaded),
            [("initiator_503_local_overloaded", 1)]
        );
        let expired = ProxyError::QueueTimeout {
            cluster: "app".into(),
            timeout: std::time::Duration::from_secs(5),
        };
        assert_eq!(
            count(Role::Initiator, expired),
            [("initiator_503_queue_timeout", 1)]
        );
    }

    #[test]
    fn cancellations_are_counted_on_both_sides() {
        for (role, name) in [
            (Role::Egress, "egress_client_cancelled"),
            (Role::Initiator, "initiator_cancelled"),
        ] {
            let stats = Stats::new(1);
            let counting = Counting::new(stats.clone(), 0);
            let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
            let mut ctx = RequestCtx::new(role, 0, None, &parts, false);
            counting.logging(&ctx);
            ctx.outcome.failure = Some(ProxyError::ClientClosed);
            counting.logging(&ctx);
            let moved: Vec<_> = stats.totals().into_iter().filter(|(_, v)| *v > 0).collect();
            assert_eq!(moved, [(name, 1)]);
        }
    }
}
