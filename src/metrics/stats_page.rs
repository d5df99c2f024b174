//! `/stats`: the same snapshot for humans, one `name value` line each: every plain counter,
//! the labelled families under the flat names operators and tests have always read
//! (`egress_503_no_tunnel`, `handshake_rejected_401`, `tunnel_tls_failed_unknown_ca`, …),
//! the initiator's (`initiator_tunnels_up`, `initiator_dial_failures`, …), then the
//! per-tenant and per-responder-cluster tunnel series and, with detailed stats, the per-host
//! ones.

use super::counters::Counters;
use super::labels::{self, RequestLabels, TlsSide};
use super::Snapshot;
use crate::initiator::dialer::DialError;
use crate::pipeline::Role;
use crate::protocol::Rejection;
use crate::tls::TlsFailure;
use crate::tunnel::End;

/// The handshake outcomes behind each flat name.
const HANDSHAKES: &[(&str, &[&str])] = &[
    ("handshake_accepted", &["accepted"]),
    (
        "handshake_rejected_400",
        &["malformed", "too_large", "tls_required"],
    ),
    (
        "handshake_rejected_400_wrong_cluster_name",
        &["wrong_cluster_name"],
    ),
    ("handshake_rejected_404", &["not_tunnel_request"]),
    ("handshake_rejected_401", &["unauthenticated"]),
    ("handshake_rejected_403", &["forbidden"]),
    ("handshake_rejected_403_collision", &["collision"]),
    ("handshake_rejected_403_node_limit", &["node_limit"]),
    ("handshake_rejected_429", &["tunnel_limit"]),
    ("handshake_rejected_503", &["shutting_down"]),
    ("handshake_timeout", &["timeout"]),
];

/// The requests behind each flat name: listener, status class (`None`: any) and reasons.
/// A class keeps a name to local replies (a body that fails after a 200 is not a 400).
#[allow(clippy::type_complexity)]
const REQUESTS: &[(&str, Role, Option<&str>, &[&str])] = &[
    (
        "egress_400_bad_request",
        Role::Egress,
        Some("4xx"),
        &["bad_request"],
    ),
    (
        "egress_400_client_body",
        Role::Egress,
        Some("4xx"),
        &["client_body"],
    ),
    (
        "egress_400_no_host_id",
        Role::Egress,
        Some("4xx"),
        &["no_host_id"],
    ),
    (
        "egress_401_unauthenticated",
        Role::Egress,
        Some("4xx"),
        &["unauthenticated"],
    ),
    (
        "egress_404_no_route",
        Role::Egress,
        Some("4xx"),
        &["no_route"],
    ),
    (
        "egress_502_tunnel_error",
        Role::Egress,
        Some("5xx"),
        &["tunnel_error"],
    ),
    (
        "egress_503_no_tunnel",
        Role::Egress,
        Some("5xx"),
        &["no_tunnel", "tunnels_busy"],
    ),
    (
        "egress_504_timeout",
        Role::Egress,
        Some("5xx"),
        &["timeout"],
    ),
    (
        "egress_stream_idle_timeout",
        Role::Egress,
        None,
        &["stream_idle_timeout"],
    ),
    (
        "egress_client_cancelled",
        Role::Egress,
        None,
        &["client_closed"],
    ),
    (
        "initiator_404_no_route",
        Role::Initiator,
        Some("4xx"),
        &["no_route"],
    ),
    (
        "initiator_502_local_error",
        Role::Initiator,
        Some("5xx"),
        &["local_unreachable", "local_error"],
    ),
    (
        "initiator_503_local_overloaded",
        Role::Initiator,
        Some("5xx"),
        &["local_overloaded"],
    ),
    (
        "initiator_503_queue_timeout",
        Role::Initiator,
        Some("5xx"),
        &["queue_timeout"],
    ),
    (
        "initiator_504_timeout",
        Role::Initiator,
        Some("5xx"),
        &["timeout"],
    ),
    (
        "initiator_stream_idle_timeout",
        Role::Initiator,
        None,
        &["stream_idle_timeout"],
    ),
    (
        "initiator_cancelled",
        Role::Initiator,
        None,
        &["client_closed"],
    ),
];

/// Every line of `/stats` but the admin endpoint's own gauges.
pub fn lines(s: &Snapshot) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Counters::DESCRIPTIONS
        .iter()
        .zip(&s.counters)
        .map(|((name, _), v)| (name.to_string(), *v))
        .collect();
    for (name, outcomes) in HANDSHAKES {
        let n = (0..labels::HANDSHAKE_OUTCOMES)
            .filter(|i| outcomes.contains(&labels::handshake_outcome_label(*i)))
            .map(|i| s.handshakes[i])
            .sum();
        out.push((name.to_string(), n));
    }
    for side in TlsSide::ALL {
        for (failure, n) in TlsFailure::ALL.iter().zip(s.tls_failures[side.index()]) {
            out.push((
                format!("{}_tls_failed_{}", side.label(), failure.label()),
                n,
            ));
        }
    }
    for (name, role, class, reasons) in REQUESTS {
        let n = s
            .requests
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let l = RequestLabels::from_index(*i);
                l.listener == *role
                    && class.is_none_or(|c| labels::CODE_CLASSES[l.code_class] == c)
                    && reasons.contains(&labels::reason_label(l.reason))
            })
            .map(|(_, n)| n)
            .sum();
        out.push((name.to_string(), n));
    }
    let dead = End::LABELS.iter().position(|l| *l == "dead").unwrap_or(0);
    let tunnels = s.tunnels.values();
    out.push((
        "tunnels_active".into(),
        tunnels.clone().map(|t| t.live()).sum(),
    ));
    let closed = tunnels.clone().map(|t| t.closed.iter().sum::<u64>()).sum();
    out.push(("tunnels_closed".into(), closed));
    out.push((
        "tunnels_dead_ping".into(),
        tunnels.map(|t| t.closed[dead]).sum(),
    ));
    out.extend(initiator_lines(s));
    for ((tenant, cluster), t) in &s.tunnels {
        out.push((
            format!("tunnels{{tenant={tenant:?},cluster={cluster:?}}}"),
            t.live(),
        ));
    }
    for ((tenant, host), counts) in &s.hosts {
        for (class, n) in labels::CODE_CLASSES.iter().zip(counts) {
            if *n > 0 {
                let line = format!(
                    "host_requests{{tenant={tenant:?},host_id={host:?},code_class={class}}}"
                );
                out.push((line, *n));
            }
        }
    }
    debug_assert_eq!(Rejection::LABELS.len() + 1, labels::HANDSHAKE_OUTCOMES);
    out
}

/// The initiator's flat names of old, from the per-cluster families: tunnels up (opened),
/// dial failures (every reason but `resolve`, which is `initiator_dns_failures`), handshakes
/// rejected (`rejected_*`), credential errors; then live tunnels per responder cluster.
fn initiator_lines(s: &Snapshot) -> Vec<(String, u64)> {
    let dialed = s.dialed.values();
    let failures = |keep: &dyn Fn(&str) -> bool| -> u64 {
        dialed
            .clone()
            .flat_map(|d| DialError::LABELS.iter().zip(d.failures))
            .filter(|(reason, _)| keep(reason))
            .map(|(_, n)| n)
            .sum()
    };
    let mut out = vec![
        (
            "initiator_tunnels_up".to_owned(),
            dialed.clone().map(|d| d.tunnels.opened).sum(),
        ),
        (
            "initiator_dial_failures".to_owned(),
            failures(&|r| r != "resolve"),
        ),
        (
            "initiator_handshake_rejected".to_owned(),
            failures(&|r| r.starts_with("rejected_")),
        ),
        (
            "initiator_credential_errors".to_owned(),
            failures(&|r| r == "credential"),
        ),
        (
            "initiator_dns_failures".to_owned(),
            failures(&|r| r == "resolve"),
        ),
    ];
    for (cluster, d) in &s.dialed {
        out.push((
            format!("initiator_tunnels{{cluster={cluster:?}}}"),
            d.tunnels.live(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::pipeline::ProxyError;
    use crate::pipeline::Role;
    use crate::protocol::Rejection;

    #[test]
    fn flat_names_add_up_their_labelled_series() {
        let metrics = Metrics::new(2);
        let busy = ProxyError::TunnelsBusy {
            host_id: "h".into(),
        };
        let none = ProxyError::NoTunnel {
            host_id: "h".into(),
        };
        let body = ProxyError::ClientBodyFailed { detail: "d".into() };
        let s0 = metrics.shard(0);
        s0.request(RequestLabels::of(Role::Egress, None, Some(&busy)), None);
        metrics
            .shard(1)
            .request(RequestLabels::of(Role::Egress, None, Some(&none)), None);
        // A body that failed after a 200 went out is not a 400.
        s0.request(
            RequestLabels::of(Role::Egress, Some(200), Some(&body)),
            None,
        );
        s0.request(RequestLabels::of(Role::Egress, None, Some(&body)), None);
        s0.handshake(HandshakeOutcome::Rejected(&Rejection::Unauthenticated(
            "x".into(),
        )));
        s0.handshake(HandshakeOutcome::Rejected(&Rejection::Forbidden(
            "x".into(),
        )));
        s0.handshake(HandshakeOutcome::TlsTimeout);
        s0.tls_failed(TlsSide::Tunnel, TlsFailure::PlaintextPeer);
        let lines = metrics.totals();
        let get = |n: &str| lines.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("egress_503_no_tunnel"), Some(2));
        assert_eq!(get("egress_400_client_body"), Some(1));
        assert_eq!(get("handshake_rejected_401"), Some(1), "a 401 is not a 403");
        assert_eq!(get("handshake_rejected_403"), Some(1));
        assert_eq!(get("handshake_timeout"), Some(1));
        assert_eq!(get("tunnel_tls_failed_plaintext_peer"), Some(1));
        assert_eq!(get("egress_requests"), Some(0));
        assert_eq!(get("tunnels_active"), Some(0));
    }

    #[test]
    fn the_initiators_flat_names_come_from_its_families() {
        use crate::initiator::dialer::DialError;
        let metrics = Metrics::new(2);
        let (i0, i1) = (SeriesIndex::default(), SeriesIndex::default());
        let (a, b) = (
            metrics.shard(0).dialed_slot(&i0, "a"),
            metrics.shard(1).dialed_slot(&i1, "b"),
        );
        let (s0, s1) = (metrics.shard(0), metrics.shard(1));
        s0.dialed_opened(a);
        s1.dialed_opened(b);
        s1.dialed_closed(b, &End::Closed);
        let rejected = |status| DialError::Rejected {
            status,
            body: String::new(),
            retry_after: None,
        };
        s0.dial_failed(a, &rejected(401));
        s1.dial_failed(b, &rejected(429));
        s1.dial_failed(b, &DialError::Closed);
        let io = || std::io::Error::other("x");
        s0.dial_failed(
            a,
            &DialError::Resolve {
                endpoint: "e".into(),
                source: io(),
            },
        );
        s0.dial_failed(
            a,
            &DialError::Tls {
                failure: TlsFailure::UnknownCa,
                detail: String::new(),
            },
        );
        let lines = metrics.totals();
        let get = |n: &str| lines.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("initiator_tunnels_up"), Some(2));
        assert_eq!(
            get("initiator_dial_failures"),
            Some(4),
            "resolve is not a dial"
        );
        assert_eq!(get("initiator_handshake_rejected"), Some(2));
        assert_eq!(get("initiator_credential_errors"), Some(0));
        assert_eq!(get("initiator_dns_failures"), Some(1));
        assert_eq!(get("initiator_tls_failed_unknown_ca"), Some(1));
        assert_eq!(get(r#"initiator_tunnels{cluster="a"}"#), Some(1));
        assert_eq!(get(r#"initiator_tunnels{cluster="b"}"#), Some(0));
    }
}
