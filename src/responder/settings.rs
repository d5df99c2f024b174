//! A responder shard's settings snapshot: what new handshakes, new connections and new egress
//! requests read, swapped whole on a reload (`crate::shard::reload`).
//!
//! [`Settings`] is built on the shard from one configuration generation: the responder
//! section as applied (routes with their rules, `host_id_format` and the headers it reads,
//! timeouts, limits, auth), the egress pipeline (`Pipeline::for_role`) and the tunnel
//! listener's admission stages (`Admission::for_listener`). The shard keeps it in an `Rc`;
//! work takes its own clone when it starts ([`ResponderShard::settings`]) and keeps it to the
//! end, so a reload reaches new work only: a request in flight finishes under the routes and
//! timeouts it started with, and a live tunnel keeps the keepalive and stream limits it was
//! opened with.
//!
//! What is read when:
//! - per egress request: routes, `host_id_format`, route and stream idle timeouts,
//!   `pending_timeout`, `trust_request_id`, the escaped-slashes action, the pipeline (proxy
//!   headers, tenant source), `unhealthy_after_timeouts`;
//! - per egress connection: `header_read_timeout`, `idle_timeout`, HTTP/2 keepalive,
//!   `max_request_headers_kb`, `drain_timeout`;
//! - per handshake: `handshake_timeout`, `request_path`, admission (tokens, JWT, mTLS binding,
//!   required cluster);
//! - per tunnel, when it opens: `ping_interval`, `ping_failure_threshold`,
//!   `max_concurrent_streams`, `unhealthy_probe_interval`, `drain_timeout`;
//! - by the shard's loops: `cleanup_interval` (next sweep), `drain_timeout` (the drain).
//!
//! Process-wide limits (`max_tunnels`, `max_tunnels_per_node`, `max_handshakes_in_progress`,
//! `egress_listener.max_connections`) and certificates are not here: every shard shares them,
//! and the process side sets them before it publishes ([`super::Responder::apply_limits`],
//! [`super::Responder::install_certificates`]).
//!
//! [`ResponderShard::settings`]: super::ResponderShard::settings

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::access_log::AccessLog;
use crate::config::ResponderConfig;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Role, RouteRewrites, StageSettings};
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::ShardId;

use super::admission::Admission;

/// One generation's responder settings on one shard.
pub struct Settings {
    /// The responder section as applied (start-only keys keep their running values).
    pub cfg: ResponderConfig,
    /// Grace period for in-flight streams on shutdown.
    pub drain_timeout: Duration,
    /// The headers `host_id_format` reads, for the 400 that names them.
    pub expected_host_headers: Arc<str>,
    /// The same headers, which a client's `Connection` header may not strip.
    pub routing_headers: Arc<[HeaderName]>,
    /// The egress listener's request pipeline.
    pub pipeline: Rc<Pipeline>,
    /// This shard's copy of the egress routes' rewrite rules, indexed like
    /// `cfg.egress_listener.routes` (built with them, so they always agree).
    pub route_rewrites: RouteRewrites,
    /// The stages every handshake passes.
    pub admission: Admission,
}

impl Settings {
    /// Builds the snapshot of `cfg` for `shard`. Cannot fail: everything that can was checked
    /// when the configuration was loaded.
    pub fn build(
        cfg: &ResponderConfig,
        drain_timeout: Duration,
        stats: &Metrics,
        shard: ShardId,
        shutdown: &ShutdownSignal,
        access_log: Option<&AccessLog>,
    ) -> Self {
        let stages = StageSettings {
            xff_num_trusted_hops: cfg.egress_listener.xff_num_trusted_hops,
            tenant: cfg.egress_listener.tenant.clone().map(Arc::new),
            access_log: access_log.cloned(),
        };
        let pipeline = Pipeline::for_role(Role::Egress, &stages, stats, shard);
        let admission = Admission::for_listener(&cfg.tunnel_listener, shutdown);
        let expected = crate::http::host_id::expected_headers(&cfg.egress_listener.host_id_format);
        let routing_headers = expected
            .iter()
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        Settings {
            cfg: cfg.clone(),
            drain_timeout,
            expected_host_headers: expected.join(", ").into(),
            routing_headers,
            route_rewrites: RouteRewrites::new(
                cfg.egress_listener.routes.iter().map(|r| &r.rewrite),
            ),
            pipeline,
            admission,
        }
    }
}
