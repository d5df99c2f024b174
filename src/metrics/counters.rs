//! Plain counters: one value each, no labels. Declaring one is one line (with its doc
//! comment, which becomes its HELP text) in [`counters!`] below; it then appears in
//! `/metrics` as `rtun_<name>_total` and in `/stats` as `<name>`.
//!
//! The initiator's tunnel and dial counters are not here: they are labelled families by
//! responder cluster (`rtun_initiator_*`, `ShardMetrics::dial_failed`), and `/stats` keeps
//! their flat names (`initiator_tunnels_up`, `initiator_dial_failures`, …) in `stats_page`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// One shard's plain counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        impl Counters {
            /// `(name, help)` of every counter, in declaration order.
            pub const DESCRIPTIONS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($name), concat!($($doc),*)),)*];

            /// Every counter's value, in declaration order.
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name.load(Ordering::Relaxed),)*]
            }
        }
    };
}

counters! {
    /// TLS sessions the tunnel listener established (before the handshake request).
    tunnel_tls_accepted,
    /// Tunnel connections closed at once because max_handshakes_in_progress were in progress.
    handshakes_refused_busy,
    /// Tunnels marked unhealthy: unhealthy_after_timeouts egress route timeouts in a row
    /// (requests then prefer the host's other tunnels and nodes).
    tunnels_marked_unhealthy,
    /// Unhealthy tunnels that answered in time again (a probe) and are healthy again.
    tunnels_healthy_again,
    /// Requests received on the egress listener, counted as their head arrives
    /// (rtun_requests_total counts them as they end, by status class and reason).
    egress_requests,
    /// Egress connections closed at once because max_connections were open.
    egress_connections_refused,
    /// Egress connections closed because a request head did not arrive within
    /// header_read_timeout (slow clients), or no first request did (an HTTP/2 connection
    /// without a stream).
    egress_header_timeout,
    /// Egress connections closed after idle_timeout with no request in flight.
    egress_idle_timeout,
    /// Egress requests handed to another shard's tunnel.
    egress_cross_shard,
    /// Egress connections moved at accept to the shard with the fewest open ones
    /// (egress_listener.connection_balance: exact).
    egress_connections_rebalanced,
    /// Egress requests a tunnel refused before their stream opened (its initiator had sent
    /// GOAWAY: it drains), sent again on another tunnel of the host; nothing had been sent.
    egress_tunnel_refused_retries,
    /// Admin requests refused with 401: `admin.token_sha256` / `token_file` is set and the
    /// request did not carry that bearer token.
    admin_401_unauthenticated,
    /// Egress HTTPS: TLS handshakes completed (`egress_listener.tls`).
    egress_tls_handshakes,
    /// Egress HTTPS: connections closed because the TLS handshake did not complete within
    /// header_read_timeout.
    egress_tls_handshake_timeout,
    /// Initiator: responder hosts (resolved addresses) that joined an endpoint's set and got
    /// tunnels, counted once per shard that dials them.
    initiator_hosts_added,
    /// Initiator: responder hosts that left an endpoint's set; their tunnels were drained.
    initiator_hosts_removed,
    /// Initiator: requests received through tunnels, counted as their head arrives.
    initiator_requests,
    /// Initiator: connections opened to local services (attempts).
    initiator_local_connects,
    /// Initiator: connects to local services that failed (refused, timeout, TLS).
    initiator_local_connect_failures,
    /// Initiator: requests sent a second time on another local connection (sent on a
    /// connection closed meanwhile, or idempotent and reset before any response byte).
    initiator_local_retries,
    /// Initiator: local endpoints ejected after consecutive_failures failures in a row.
    initiator_local_ejections,
    /// Records that went to an `__overflow__` series because a family with tenant, cluster
    /// or host id labels had admin.max_series label sets on that shard.
    series_overflow,
    /// Configuration reloads applied (SIGHUP, `POST /reload`, `rtun reload`).
    config_reloads,
    /// Configuration reloads refused or failed (an invalid file, another reload running, the
    /// process draining, a shard that did not apply in time); the running configuration stays.
    config_reloads_refused,
    /// Access log lines dropped because the shard's buffer (access_log.buffer_lines) was full.
    access_log_dropped,
}
