//! The request pipeline: the phases every proxied request passes through, on both roles.
//!
//! A role's driver (`responder::egress::handle`, `initiator::forward::handle`) owns the work
//! only it can do — pick a route, find the upstream (a tunnel, a local service), move bytes —
//! and calls the pipeline at fixed points. Everything else is a [`Stage`]: a unit that hooks
//! one or more phases and is listed once, in [`Pipeline::for_role`]. Adding authentication, a
//! tenant check, a rate limit, an access log or metrics means writing a stage and adding one
//! line there; the drivers do not change.
//!
//! The phases, in order (docs/ARCHITECTURE.md, "The request pipeline"):
//!
//! 1. `request_filter` — continue, or stop with a [`ProxyError`] that becomes the response.
//! 2. upstream selection — the driver's: the request target checked and its path normalized
//!    (`crate::http::target`), then route, host id, tunnel or local cluster.
//! 3. `upstream_request_filter` — adjust the request that goes upstream.
//! 4. `response_filter` — adjust the response head, whether it came from upstream or is a
//!    local reply made from a [`ProxyError`] (the only place that happens is [`respond`]).
//! 5. `logging` — once the response body has ended (or the client went away), with the
//!    final status, duration, bytes both ways and failure reason in the [`RequestCtx`].
//!
//! Stages run in list order in every phase. They are built per shard and never shared across
//! threads, so they may keep shard-local state without locks.

pub mod context;
pub mod deadline;
pub mod error;
pub mod logged;
pub mod respond;
mod stages;

use std::rc::Rc;
use std::sync::Arc;

use http::{request, response};

use crate::auth::TenantSource;
use crate::metrics::Metrics;
use crate::shard::ShardId;

pub use context::{BodyTally, ConnectionInfo, RequestCtx, RequestId, Role, REQUEST_ID_HEADER};
pub use deadline::{Deadlines, StreamClock};
pub use error::ProxyError;
pub use logged::Logged;
pub use respond::respond;
pub use stages::RouteRewrites;

/// The most a future that a driver boxes per request may take, in bytes: glibc serves blocks
/// up to 1032 bytes from a per-thread cache, and a larger one costs about 1.4k instructions to
/// allocate (docs/ARCHITECTURE.md §5, "Allocation on the request path"). Tests hold the drivers'
/// futures to it.
pub const BOXED_FUTURE_MAX: usize = 1024;

/// One unit of request handling. Every phase has a default that does nothing, so a stage
/// implements only the phases it needs.
pub trait Stage {
    /// Phase 1: inspect the request before anything is chosen for it. `Err` stops the request
    /// and answers with that failure ("continue or respond"). The request target is still as
    /// the client sent it (the path is normalized in phase 2): decide nothing by path here.
    fn request_filter(
        &self,
        _ctx: &mut RequestCtx,
        _request: &mut request::Parts,
    ) -> Result<(), ProxyError> {
        Ok(())
    }

    /// Phase 3: adjust the request head that goes upstream (headers, path).
    fn upstream_request_filter(&self, _ctx: &RequestCtx, _request: &mut request::Parts) {}

    /// Phase 4: adjust the response head sent to the client. `ctx.outcome` already holds the
    /// status and, for a local reply, the failure.
    fn response_filter(&self, _ctx: &RequestCtx, _response: &mut response::Parts) {}

    /// Phase 5: the request is over; `ctx.outcome` is final.
    fn logging(&self, _ctx: &RequestCtx) {}
}

/// What the stages take from the configuration.
#[derive(Debug, Clone, Default)]
pub struct StageSettings {
    /// `egress_listener.xff_num_trusted_hops`: proxies in front of the egress whose
    /// `x-forwarded-*` headers are kept (0: rtun is the edge).
    pub xff_num_trusted_hops: u32,
    /// `egress_listener.tenant`: where each request's tenant comes from; `None` when tenants
    /// are not isolated (no tenant stage).
    pub tenant: Option<Arc<TenantSource>>,
    /// `access_log:`: the process's access log; `None` when it is off (no access log stage).
    pub access_log: Option<crate::access_log::AccessLog>,
}

/// A role's stages on one shard.
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    /// Builds a pipeline from stages, in the order they run.
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Rc<Self> {
        Rc::new(Self { stages })
    }

    /// The stages each role runs on `shard`: the one list to extend with a new stage.
    pub fn for_role(
        role: Role,
        settings: &StageSettings,
        stats: &Metrics,
        shard: ShardId,
    ) -> Rc<Self> {
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        // First, so that phase 1 captures the request as it arrived even when a later stage
        // refuses it.
        if let Some(log) = &settings.access_log {
            stages.push(Box::new(stages::AccessLog {
                log: log.shard(shard),
            }));
        }
        if role == Role::Egress {
            stages.push(Box::new(stages::ProxyHeaders {
                trusted_hops: settings.xff_num_trusted_hops,
            }));
        }
        stages.push(Box::new(stages::Counting::new(stats.clone(), shard)));
        // After `Counting`, so a request refused for want of a tenant is still counted as a
        // request (`egress_requests`) and, as it ends, by its 401.
        if let (Role::Egress, Some(source)) = (role, &settings.tenant) {
            stages.push(Box::new(stages::Tenant {
                source: source.clone(),
            }));
        }
        // Last: the route's own header rules see, and may override, what the stages above
        // wrote (`x-forwarded-*`, `via`).
        stages.push(Box::new(stages::RouteHeaders));
        Self::new(stages)
    }

    pub fn request_filter(
        &self,
        ctx: &mut RequestCtx,
        request: &mut request::Parts,
    ) -> Result<(), ProxyError> {
        self.stages
            .iter()
            .try_for_each(|s| s.request_filter(ctx, request))
    }

    pub fn upstream_request_filter(&self, ctx: &RequestCtx, request: &mut request::Parts) {
        for s in &self.stages {
            s.upstream_request_filter(ctx, request);
        }
    }

    /// Records the response status in `ctx`, then runs every stage's response filter.
    pub fn response_filter(&self, ctx: &mut RequestCtx, response: &mut response::Parts) {
        ctx.outcome.status = Some(response.status);
        for s in &self.stages {
            s.response_filter(ctx, response);
        }
    }

    pub fn logging(&self, ctx: &RequestCtx) {
        for s in &self.stages {
            s.logging(ctx);
        }
    }
}
