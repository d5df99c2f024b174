//! Counters, one block per shard.
//!
//! Each shard writes only its own block (relaxed atomics on an uncontended cache line, no lock on
//! the request path); the admin endpoint sums the blocks when asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// One shard's counters.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl ShardStats {
            /// (name, value) of every counter.
            pub fn values(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Handshakes answered 200.
    handshake_accepted,
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
    /// Tunnels live on this shard (gauge).
    tunnels_active,
    /// Tunnels closed after ping_failure_threshold missed PINGs.
    tunnels_dead_ping,
    /// Tunnels that ended (any reason).
    tunnels_closed,
    /// Requests received on the egress listener.
    egress_requests,
    /// Egress connections closed because a request head did not arrive within
    /// header_read_timeout (slow clients).
    egress_header_timeout,
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
    /// Egress 404: no route matches the path.
    egress_404_no_route,
    /// Egress 502: the tunnel failed during the request.
    egress_502_tunnel_error,
    /// Egress 503: no tunnel for the host id.
    egress_503_no_tunnel,
    /// Egress 504: the route timeout elapsed.
    egress_504_timeout,
    /// Egress HTTPS: TLS handshakes completed (`egress_listener.tls`).
    egress_tls_handshakes,
    /// Egress HTTPS: connections closed because the TLS handshake did not complete within
    /// header_read_timeout.
    egress_tls_handshake_timeout,
    /// Egress HTTPS handshake failed, `unknown_ca`: the client's certificate does not chain to
    /// `client_ca` (or the client said so of ours).
    egress_tls_failed_unknown_ca,
    /// Egress HTTPS handshake failed, `no_client_cert`: `client_ca` is set and the client presented
    /// no certificate.
    egress_tls_failed_no_client_cert,
    /// Egress HTTPS handshake failed, `spki_pin_mismatch`: a pin mismatch (client side only; kept
    /// so that every failure class has a counter).
    egress_tls_failed_spki_pin_mismatch,
    /// Egress HTTPS handshake failed, `name_mismatch`: a certificate not valid for the name
    /// (reported by the client).
    egress_tls_failed_name_mismatch,
    /// Egress HTTPS handshake failed, `expired`: an expired certificate.
    egress_tls_failed_expired,
    /// Egress HTTPS handshake failed, `not_yet_valid`: a certificate not valid yet.
    egress_tls_failed_not_yet_valid,
    /// Egress HTTPS handshake failed, `bad_certificate`: any other certificate rejection, or a
    /// client certificate whose facts cannot be read.
    egress_tls_failed_bad_certificate,
    /// Egress HTTPS handshake failed, `incompatible`: no TLS version, cipher suite or ALPN protocol
    /// in common.
    egress_tls_failed_incompatible,
    /// Egress HTTPS handshake failed, `plaintext_peer`: a plaintext client on the HTTPS port (an
    /// HTTP/1 request is answered 400 first).
    egress_tls_failed_plaintext_peer,
    /// Egress HTTPS handshake failed, `protocol`: any other TLS protocol violation.
    egress_tls_failed_protocol,
    /// Egress HTTPS handshake failed, `closed`: the client closed or reset the connection before
    /// the handshake completed.
    egress_tls_failed_closed,
    /// Egress HTTPS handshake failed, `io`: an I/O error during the handshake.
    egress_tls_failed_io,
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
    /// Initiator: requests received through tunnels.
    initiator_requests,
    /// Initiator: 404, no local route.
    initiator_404_no_route,
    /// Initiator: 502/503, the local service failed or could not be reached.
    initiator_502_local_error,
    /// Initiator: 504, the local route timeout elapsed.
    initiator_504_timeout,
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
