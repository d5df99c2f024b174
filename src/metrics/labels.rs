//! The label sets of the labelled families, as types: each set maps to a fixed index into a
//! shard's array of counters, so recording is an index computation and a relaxed add, and
//! the exposition turns the index back into label values.
//!
//! The values come from the one place that names each concept: [`ProxyError::LABELS`] (a
//! request's failure reason), [`Rejection::LABELS`] (a handshake's), [`TlsFailure::ALL`],
//! [`End::LABELS`] (why a tunnel ended), [`DialError::LABELS`] (why an initiator's dial
//! failed). Dynamic values (tenant, cluster, host id) are not here: they live in bounded
//! per-shard tables (`series`).

use crate::initiator::dialer::DialError;
use crate::pipeline::{ProxyError, Role};
use crate::protocol::Rejection;
use crate::tls::TlsFailure;
use crate::tunnel::End;

/// The listener a request arrived on (`listener` label): the pipeline's [`Role`].
pub const LISTENERS: [Role; 2] = [Role::Egress, Role::Initiator];

pub fn listener_index(role: Role) -> usize {
    match role {
        Role::Egress => 0,
        Role::Initiator => 1,
    }
}

/// The `code_class` label values.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The class of a status code (anything outside 100..=599 is clamped into the nearest class).
pub fn code_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// `reason` values of requests: `none`, then every [`ProxyError`] label.
pub const REASONS: usize = 1 + ProxyError::LABELS.len();

pub fn reason_index(failure: Option<&ProxyError>) -> usize {
    failure.map_or(0, |f| 1 + position(&ProxyError::LABELS, f.label()))
}

pub fn reason_label(index: usize) -> &'static str {
    match index {
        0 => "none",
        i => ProxyError::LABELS[i - 1],
    }
}

/// A request's label set: `{listener, code_class, reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLabels {
    pub listener: Role,
    pub code_class: usize,
    pub reason: usize,
}

/// Every request label set, as a flat index.
pub const REQUEST_SERIES: usize = LISTENERS.len() * CODE_CLASSES.len() * REASONS;

impl RequestLabels {
    /// The labels of a request that ended with `status` (the one sent, or its failure's when
    /// no head was sent) and `failure`.
    pub fn of(listener: Role, status: Option<u16>, failure: Option<&ProxyError>) -> Self {
        let status = status
            .or_else(|| failure.map(|f| f.status().as_u16()))
            .unwrap_or(500);
        Self {
            listener,
            code_class: code_class(status),
            reason: reason_index(failure),
        }
    }

    pub fn index(&self) -> usize {
        (listener_index(self.listener) * CODE_CLASSES.len() + self.code_class) * REASONS
            + self.reason
    }

    pub fn from_index(index: usize) -> Self {
        let reason = index % REASONS;
        let rest = index / REASONS;
        Self {
            listener: LISTENERS[rest / CODE_CLASSES.len()],
            code_class: rest % CODE_CLASSES.len(),
            reason,
        }
    }
}

/// How a tunnel handshake ended (`outcome` label of `rtun_handshakes_total`).
#[derive(Debug, Clone, Copy)]
pub enum HandshakeOutcome<'a> {
    /// Answered 200 (or 101) and HTTP/2 started.
    Accepted,
    Rejected(&'a Rejection),
    /// The TLS handshake did not finish within `handshake_timeout` (no reply is possible):
    /// counted under the `timeout` rejection.
    TlsTimeout,
}

/// `accepted`, then every [`Rejection`] label.
pub const HANDSHAKE_OUTCOMES: usize = 1 + Rejection::LABELS.len();

impl HandshakeOutcome<'_> {
    pub fn index(&self) -> usize {
        match self {
            HandshakeOutcome::Accepted => 0,
            HandshakeOutcome::Rejected(r) => 1 + position(&Rejection::LABELS, r.label()),
            HandshakeOutcome::TlsTimeout => 1 + position(&Rejection::LABELS, "timeout"),
        }
    }
}

pub fn handshake_outcome_label(index: usize) -> &'static str {
    match index {
        0 => "accepted",
        i => Rejection::LABELS[i - 1],
    }
}

/// Where a TLS failure was seen (`side` label): either end of a tunnel, or the egress listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    /// The responder's tunnel listener.
    Tunnel,
    /// The initiator's dialer.
    Initiator,
    /// The responder's egress listener (HTTPS).
    Egress,
}

impl TlsSide {
    pub const ALL: [TlsSide; 3] = [TlsSide::Tunnel, TlsSide::Initiator, TlsSide::Egress];

    pub fn label(self) -> &'static str {
        match self {
            TlsSide::Tunnel => "tunnel",
            TlsSide::Initiator => "initiator",
            TlsSide::Egress => "egress",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

pub fn tls_failure_index(failure: TlsFailure) -> usize {
    TlsFailure::ALL
        .iter()
        .position(|f| *f == failure)
        .unwrap_or(0)
}

/// Why a tunnel ended (`reason` label of `rtun_tunnels_closed_total`).
pub fn end_index(end: &End) -> usize {
    position(&End::LABELS, end.label())
}

/// Why a dial failed (`reason` label of `rtun_initiator_dial_failures_total`).
pub fn dial_failure_index(error: &DialError) -> usize {
    position(&DialError::LABELS, error.label())
}

/// Where `label` is in `labels`; every label comes from the list it is looked up in (the
/// unit tests check each list is complete), so the fallback is never taken.
fn position(labels: &[&str], label: &str) -> usize {
    labels.iter().position(|l| *l == label).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_labels_round_trip_through_their_index() {
        let failure = ProxyError::NoTunnel {
            host_id: "h".into(),
        };
        for (role, status, failure) in [
            (Role::Egress, Some(200), None),
            (Role::Initiator, Some(404), None),
            (Role::Egress, None, Some(&failure)),
            (Role::Initiator, Some(999), None),
        ] {
            let labels = RequestLabels::of(role, status, failure);
            assert!(labels.index() < REQUEST_SERIES);
            assert_eq!(RequestLabels::from_index(labels.index()), labels);
        }
        let labels = RequestLabels::of(Role::Egress, None, Some(&failure));
        assert_eq!(CODE_CLASSES[labels.code_class], "5xx");
        assert_eq!(reason_label(labels.reason), "no_tunnel");
        assert_eq!(reason_label(reason_index(None)), "none");
        assert_eq!(CODE_CLASSES[code_class(99)], "1xx");
        assert_eq!(CODE_CLASSES[code_class(600)], "5xx");
    }

    #[test]
    fn every_rejection_has_its_own_outcome() {
        use std::borrow::Cow;
        let reason = || Cow::Borrowed("r");
        let all = [
            Rejection::NotTunnelRequest,
            Rejection::Malformed(reason()),
            Rejection::TlsRequired,
            Rejection::TooLarge,
            Rejection::Timeout,
            Rejection::Unauthenticated(reason()),
            Rejection::Forbidden(reason()),
            Rejection::IdentityCollision(reason()),
            Rejection::WrongCluster,
            Rejection::NodeLimit {
                node: "n".into(),
                max: 1,
            },
            Rejection::TunnelLimit {
                max: 1,
                retry_after_secs: 1,
            },
            Rejection::ShuttingDown,
        ];
        let mut seen: Vec<usize> = all
            .iter()
            .map(|r| HandshakeOutcome::Rejected(r).index())
            .collect();
        for (r, i) in all.iter().zip(&seen) {
            assert_eq!(handshake_outcome_label(*i), r.label());
        }
        seen.push(HandshakeOutcome::Accepted.index());
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            HANDSHAKE_OUTCOMES,
            "401 and 403 never share a series"
        );
        assert_eq!(
            HandshakeOutcome::TlsTimeout.index(),
            HandshakeOutcome::Rejected(&Rejection::Timeout).index()
        );
    }

    #[test]
    fn every_end_and_tls_failure_has_an_index() {
        let ends = [End::Closed, End::Dead, End::Drained];
        for (i, end) in ends.iter().enumerate() {
            assert_eq!(end_index(end), i);
        }
        for (i, failure) in TlsFailure::ALL.iter().enumerate() {
            assert_eq!(tls_failure_index(*failure), i);
        }
    }

    #[test]
    fn every_dial_error_has_its_own_reason() {
        use crate::initiator::dialer::DialError;
        use std::io::{Error, ErrorKind};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let connect = |kind| DialError::Connect {
            endpoint: "e".into(),
            addr,
            source: Error::new(kind, "x"),
        };
        let rejected = |status| DialError::Rejected {
            status,
            body: String::new(),
            retry_after: None,
        };
        let mut all = vec![
            DialError::Resolve {
                endpoint: "e".into(),
                source: Error::other("x"),
            },
            connect(ErrorKind::ConnectionRefused),
            connect(ErrorKind::TimedOut),
            DialError::Tls {
                failure: TlsFailure::UnknownCa,
                detail: String::new(),
            },
            DialError::TlsTimeout(Default::default()),
            DialError::TlsUnavailable,
            DialError::Credential(crate::initiator::credential::CredentialError::EnvMissing(
                "T".into(),
            )),
            DialError::Io(Error::other("x")),
            DialError::Timeout(Default::default()),
            DialError::Closed,
            DialError::Malformed(crate::protocol::HandshakeError::TooLarge),
        ];
        all.extend([400, 401, 403, 404, 429, 503, 502].map(rejected));
        let seen: Vec<&str> = all.iter().map(|e| e.label()).collect();
        assert_eq!(seen, DialError::LABELS, "one error per label, in order");
        for (i, e) in all.iter().enumerate() {
            assert_eq!(dial_failure_index(e), i);
        }
        assert_eq!(rejected(418).label(), "rejected_other");
    }
}
