//! Counters, one block per shard.
//!
//! Each shard writes only its own block (relaxed atomics on an uncontended cache line, no lock on
//! the request path); the admin endpoint sums the blocks when asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::tls::TlsFailure;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// One shard's counters.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// TLS handshakes the tunnel listener refused or lost, by reason.
            pub tunnel_tls_failed: TlsFailureCounts,
            /// TLS handshakes the initiator's dialer refused or lost, by reason.
            pub initiator_tls_failed: TlsFailureCounts,
            /// TLS handshakes the egress listener (HTTPS) refused or lost, by reason.
            pub egress_tls_failed: TlsFailureCounts,
        }

        impl ShardStats {
            /// (name, value) of every counter.
            pub fn values(&self) -> Vec<(&'static str, u64)> {
                let mut values = vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*];
                values.extend(self.tunnel_tls_failed.values(TlsSide::Tunnel));
                values.extend(self.initiator_tls_failed.values(TlsSide::Initiator));
                values.extend(self.egress_tls_failed.values(TlsSide::Egress));
                values
            }
        }
    };
}

/// Where a TLS failure was seen: either end of a tunnel, or the egress listener.
#[derive(Debug, Clone, Copy)]
enum TlsSide {
    Tunnel,
    Initiator,
    Egress,
}

macro_rules! tls_failure_counters {
    ($($label:ident => $variant:ident),* $(,)?) => {
        /// TLS failures by [`TlsFailure`] class, named `<side>_tls_failed_<label>`.
        #[derive(Debug, Default)]
        pub struct TlsFailureCounts {
            $(pub $label: AtomicU64,)*
        }

        impl TlsFailureCounts {
            /// Counts one failure of class `failure`.
            pub fn count(&self, failure: TlsFailure) {
                inc(self.counter(failure));
            }

            /// The counter of class `failure`.
            pub fn counter(&self, failure: TlsFailure) -> &AtomicU64 {
                match failure {
                    $(TlsFailure::$variant => &self.$label,)*
                }
            }

            fn values(&self, side: TlsSide) -> Vec<(&'static str, u64)> {
                let names: &[&'static str] = match side {
                    TlsSide::Tunnel => &[$(concat!("tunnel_tls_failed_", stringify!($label)),)*],
                    TlsSide::Initiator => {
                        &[$(concat!("initiator_tls_failed_", stringify!($label)),)*]
                    }
                    TlsSide::Egress => &[$(concat!("egress_tls_failed_", stringify!($label)),)*],
                };
                let counts = [$(self.$label.load(Ordering::Relaxed),)*];
                names.iter().copied().zip(counts).collect()
            }
        }
    };
}

tls_failure_counters! {
    unknown_ca => UnknownCa,
    no_client_cert => NoClientCert,
    spki_pin_mismatch => SpkiPinMismatch,
    name_mismatch => NameMismatch,
    expired => Expired,
    not_yet_valid => NotYetValid,
    bad_certificate => BadCertificate,
    incompatible => Incompatible,
    plaintext_peer => PlaintextPeer,
    protocol => Protocol,
    closed => Closed,
    io => Io,
}

counters! {
    /// Handshakes answered 200.
    handshake_accepted,
    /// TLS sessions the tunnel listener established (before the handshake request).
    tunnel_tls_accepted,
    /// Handshakes rejected with 400 (malformed, missing identity, body present, too large).
    handshake_rejected_400,
    /// Handshakes rejected with 400 because the upstream cluster name is not
    /// `auth.required_cluster_name`.
    handshake_rejected_400_wrong_cluster_name,
    /// Handshakes rejected with 404 (wrong method or path).
    handshake_rejected_404,
    /// Handshakes rejected with 401: missing, unknown or invalid credentials (token, JWT,
    /// client certificate).
    handshake_rejected_401,
    /// Handshakes rejected with 403: valid credentials that do not allow the identity claimed
    /// (tenant, node or cluster not granted; identity not matching the client certificate).
    handshake_rejected_403,
    /// Handshakes rejected with 403 because a cluster id would equal a live node id or a node
    /// id a live cluster id.
    handshake_rejected_403_collision,
    /// Handshakes rejected with 403 because the node (of that tenant) holds
    /// max_tunnels_per_node tunnels.
    handshake_rejected_403_node_limit,
    /// Handshakes rejected with 429 (responder tunnel cap).
    handshake_rejected_429,
    /// Handshakes rejected with 503 (shutting down, shard unavailable).
    handshake_rejected_503,
    /// Handshakes closed because they did not complete within handshake_timeout.
    handshake_timeout,
    /// Tunnel connections closed at once because max_handshakes_in_progress were in progress.
    handshakes_refused_busy,
    /// Tunnels live on this shard (gauge).
    tunnels_active,
    /// Tunnels closed after ping_failure_threshold missed PINGs.
    tunnels_dead_ping,
    /// Tunnels marked unhealthy: unhealthy_after_timeouts egress route timeouts in a row
    /// (requests then prefer the host's other tunnels and nodes).
    tunnels_marked_unhealthy,
    /// Unhealthy tunnels that answered in time again (a probe) and are healthy again.
    tunnels_healthy_again,
    /// Tunnels that ended (any reason).
    tunnels_closed,
    /// Requests received on the egress listener.
    egress_requests,
    /// Egress connections closed at once because max_connections were open.
    egress_connections_refused,
    /// Egress connections closed because a request head did not arrive within
    /// header_read_timeout (slow clients), or no first request did (an HTTP/2 connection
    /// without a stream).
    egress_header_timeout,
    /// Egress connections closed after idle_timeout with no request in flight.
    egress_idle_timeout,
    /// Egress requests ended by the stream idle timeout (408 before the response head, a
    /// reset after it).
    egress_stream_idle_timeout,
    /// Egress requests handed to another shard's tunnel.
    egress_cross_shard,
    /// Egress 400: the request cannot be served as sent (a path that cannot be normalized, an
    /// escaped slash, a duplicate, missing or disagreeing `Host`).
    egress_400_bad_request,
    /// Egress 400: the client's request body was malformed or cut short before the response
    /// started.
    egress_400_client_body,
    /// Egress 400: no host id could be computed.
    egress_400_no_host_id,
    /// Egress 401: no tenant for the request (`egress_listener.tenant`): a missing or unknown
    /// API key, no client certificate, a missing trusted header.
    egress_401_unauthenticated,
    /// Egress 404: no route matches the path.
    egress_404_no_route,
    /// Egress 502: the tunnel failed during the request.
    egress_502_tunnel_error,
    /// Egress 503: no tunnel for the host id.
    egress_503_no_tunnel,
    /// Egress 504: the route timeout elapsed.
    egress_504_timeout,
    /// Admin requests refused with 401: `admin.token_sha256` / `token_file` is set and the
    /// request did not carry that bearer token.
    admin_401_unauthenticated,
    /// Egress HTTPS: TLS handshakes completed (`egress_listener.tls`).
    egress_tls_handshakes,
    /// Egress HTTPS: connections closed because the TLS handshake did not complete within
    /// header_read_timeout.
    egress_tls_handshake_timeout,
    /// Initiator: tunnels established (handshake answered 200).
    initiator_tunnels_up,
    /// Initiator: dial or handshake attempts that failed.
    initiator_dial_failures,
    /// Initiator: handshakes the responder rejected (non-200).
    initiator_handshake_rejected,
    /// Initiator: dials not attempted because the bearer token could not be read
    /// (`token_file` or `token_env` missing, empty or unusable); also counted in
    /// initiator_dial_failures.
    initiator_credential_errors,
    /// Initiator: resolutions of a responder endpoint's name that failed (its last known
    /// addresses are kept).
    initiator_dns_failures,
    /// Initiator: responder hosts (resolved addresses) that joined an endpoint's set and got
    /// tunnels, counted once per shard that dials them.
    initiator_hosts_added,
    /// Initiator: responder hosts that left an endpoint's set; their tunnels were drained.
    initiator_hosts_removed,
    /// Initiator: requests received through tunnels.
    initiator_requests,
    /// Initiator: 404, no local route.
    initiator_404_no_route,
    /// Initiator: 502/503, the local service failed or could not be reached.
    initiator_502_local_error,
    /// Initiator: 504, the local route timeout (or the cluster's response_timeout) elapsed.
    initiator_504_timeout,
    /// Initiator: requests ended by the stream idle timeout (408 before the response head, a
    /// reset after it).
    initiator_stream_idle_timeout,
    /// Egress: requests whose client went away (an h2 RST_STREAM, an HTTP/1.1 connection
    /// closed) before the response ended; their tunnel stream is reset (CANCEL).
    egress_client_cancelled,
    /// Initiator: requests the responder cancelled (RST_STREAM) before the response ended;
    /// their local request is dropped (an HTTP/1.1 connection closed, an HTTP/2 stream reset).
    initiator_cancelled,
    /// Initiator: 503, the local cluster's queue of pending requests was full (max_pending).
    initiator_503_local_overloaded,
    /// Initiator: 503, no local connection became free within queue_timeout.
    initiator_503_queue_timeout,
    /// Initiator: connections opened to local services (attempts).
    initiator_local_connects,
    /// Initiator: connects to local services that failed (refused, timeout, TLS).
    initiator_local_connect_failures,
    /// Initiator: requests sent a second time on another local connection (sent on a
    /// connection closed meanwhile, or idempotent and reset before any response byte).
    initiator_local_retries,
    /// Initiator: local endpoints ejected after consecutive_failures failures in a row.
    initiator_local_ejections,
}

/// All shards' counters.
#[derive(Debug, Clone)]
pub struct Stats(Arc<[ShardStats]>);

impl Stats {
    pub fn new(shards: usize) -> Self {
        Stats((0..shards).map(|_| ShardStats::default()).collect())
    }

    /// The block that `shard` writes.
    pub fn shard(&self, shard: usize) -> &ShardStats {
        &self.0[shard % self.0.len()]
    }

    /// Sums over shards, in declaration order.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        let mut totals = self.0[0].values();
        for block in self.0.iter().skip(1) {
            for (total, (_, v)) in totals.iter_mut().zip(block.values()) {
                total.1 += v;
            }
        }
        totals
    }
}

/// Increments a counter.
#[inline]
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Decrements a gauge.
#[inline]
pub fn dec(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_shards() {
        let stats = Stats::new(2);
        inc(&stats.shard(0).egress_requests);
        inc(&stats.shard(1).egress_requests);
        inc(&stats.shard(1).egress_503_no_tunnel);
        let totals = stats.totals();
        let get = |n: &str| totals.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(get("egress_requests"), Some(2));
        assert_eq!(get("egress_503_no_tunnel"), Some(1));
    }
}
