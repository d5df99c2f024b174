//! Failures as values: every way a proxied request can fail, on either role, with the status
//! it answers, a stable label for counters and logs, and a public message.
//!
//! The public message is what a client may see: a short reason in the operator's words,
//! never an internal address or an error chain. The details (`detail` fields) go to the log,
//! under the request id, through `Display`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// Why a request did not get a normal response. `Send`: a failure on a shard that served a
/// handed-over request travels back to the shard that accepted it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request cannot be served as sent: a path that cannot be normalized, an escaped
    /// slash, a duplicate or disagreeing `Host` (egress; the path also on the initiator).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong, in words fit for the client (no internal detail).
        reason: String,
    },
    /// The request carries no credential the listener accepts, so it has no tenant (egress,
    /// with `egress_listener.tenant`): no API key or an unknown one, no client certificate.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why, in words fit for the client (never the credential).
        reason: Cow<'static, str>,
    },
    /// The client's request body was malformed or cut short (a bad chunk, a body shorter
    /// than its content-length). A 400 when the response head has not been sent; after it,
    /// the connection is closed and the logging phase records this.
    #[error("request body malformed or cut short: {detail}")]
    ClientBodyFailed { detail: String },
    /// No route matches the path.
    #[error("no route for path '{path}'")]
    NoRoute { path: String },
    /// No host id could be computed from the request (egress).
    #[error("no host id in the request (expected one of the headers {expected})")]
    NoHostId {
        /// The headers `host_id_format` looks at, comma-separated.
        expected: Arc<str>,
    },
    /// No tunnel is registered for the host id (egress).
    #[error("no tunnel for host id '{host_id}'")]
    NoTunnel { host_id: String },
    /// Tunnels exist for the host id but every one is at `max_concurrent_streams` (egress).
    #[error("every tunnel for host id '{host_id}' is at max_concurrent_streams")]
    TunnelsBusy { host_id: String },
    /// The tunnel failed before the response head arrived (egress).
    #[error("tunnel to node '{node}' failed: {detail}")]
    TunnelFailed { node: String, detail: String },
    /// The local service could not be reached (initiator).
    #[error("local cluster '{cluster}' is unreachable: {detail}")]
    LocalUnreachable { cluster: String, detail: String },
    /// The local service failed mid-exchange (initiator).
    #[error("local cluster '{cluster}' failed: {detail}")]
    LocalFailed { cluster: String, detail: String },
    /// The local cluster's queue of pending requests is full (`max_pending`, initiator).
    #[error("local cluster '{cluster}' is overloaded: {reason}")]
    LocalOverloaded {
        cluster: String,
        /// Which limit, in words fit for the client.
        reason: String,
    },
    /// No connection to the local cluster became free within `queue_timeout` (initiator).
    #[error("local cluster '{cluster}': no connection became free within {timeout:?}")]
    QueueTimeout { cluster: String, timeout: Duration },
    /// The route timeout elapsed before the response head.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// No body bytes moved, in either direction, for the stream idle timeout. A 408 (as
    /// Envoy's `stream_idle_timeout`) when the response head has not been sent; after it
    /// (`response_started`), the response is cut short and the logging phase records this.
    #[error("no body bytes moved for {timeout:?} (stream idle timeout)")]
    StreamIdleTimeout {
        timeout: Duration,
        /// The response head had already been sent.
        response_started: bool,
    },
    /// The response body broke off after its head was sent (the client sees a reset or a
    /// short body, never this status).
    #[error("response body cut short: {detail}")]
    UpstreamBodyFailed { detail: String },
    /// The client went away before the response was sent whole.
    #[error("the client closed the connection before the response ended")]
    ClientClosed,
}

impl ProxyError {
    /// The status of the local reply (or, for failures after the response head, the status
    /// the access log reports them under).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::BadRequest { .. }
            | ProxyError::ClientBodyFailed { .. }
            | ProxyError::NoHostId { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::NoTunnel { .. }
            | ProxyError::TunnelsBusy { .. }
            | ProxyError::LocalUnreachable { .. }
            | ProxyError::LocalOverloaded { .. }
            | ProxyError::QueueTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TunnelFailed { .. }
            | ProxyError::LocalFailed { .. }
            | ProxyError::UpstreamBodyFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::StreamIdleTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            // nginx's "client closed request".
            ProxyError::ClientClosed => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    /// Every [`label`](Self::label), in declaration order: the `reason` values of
    /// `rtun_requests_total` (`crate::metrics`).
    pub const LABELS: [&'static str; 16] = [
        "bad_request",
        "unauthenticated",
        "client_body",
        "no_route",
        "no_host_id",
        "no_tunnel",
        "tunnels_busy",
        "tunnel_error",
        "local_unreachable",
        "local_error",
        "local_overloaded",
        "queue_timeout",
        "timeout",
        "stream_idle_timeout",
        "upstream_body",
        "client_closed",
    ];

    /// A stable, machine-friendly reason (counter labels, access logs).
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::Unauthenticated { .. } => "unauthenticated",
            ProxyError::ClientBodyFailed { .. } => "client_body",
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::NoHostId { .. } => "no_host_id",
            ProxyError::NoTunnel { .. } => "no_tunnel",
            ProxyError::TunnelsBusy { .. } => "tunnels_busy",
            ProxyError::TunnelFailed { .. } => "tunnel_error",
            ProxyError::LocalUnreachable { .. } => "local_unreachable",
            ProxyError::LocalFailed { .. } => "local_error",
            ProxyError::LocalOverloaded { .. } => "local_overloaded",
            ProxyError::QueueTimeout { .. } => "queue_timeout",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::StreamIdleTimeout { .. } => "stream_idle_timeout",
            ProxyError::UpstreamBodyFailed { .. } => "upstream_body",
            ProxyError::ClientClosed => "client_closed",
        }
    }

    /// What the client is told: no internal addresses, endpoints or error chains.
    pub fn public_message(&self) -> String {
        match self {
            ProxyError::BadRequest { reason } => format!("Bad request: {reason}"),
            ProxyError::Unauthenticated { reason } => format!("Unauthenticated: {reason}"),
            ProxyError::ClientBodyFailed { .. } => {
                "The request body was malformed or cut short".into()
            }
            ProxyError::NoRoute { path } => format!("No route for path '{path}'"),
            ProxyError::NoHostId { expected } => {
                format!("No host id in the request: expected one of the headers {expected}")
            }
            ProxyError::NoTunnel { host_id } => format!("No tunnel for host id '{host_id}'"),
            ProxyError::TunnelsBusy { host_id } => {
                format!("Every tunnel for host id '{host_id}' is at max_concurrent_streams")
            }
            ProxyError::TunnelFailed { node, .. } => format!("Tunnel to node '{node}' failed"),
            ProxyError::LocalUnreachable { .. } => "The local service is unreachable".into(),
            ProxyError::LocalFailed { .. } => "The local service failed".into(),
            ProxyError::LocalOverloaded { reason, .. } => {
                format!("The local service is overloaded: {reason}")
            }
            ProxyError::QueueTimeout { timeout, .. } => format!(
                "The local service is overloaded: no connection to it became free within {timeout:?}"
            ),
            ProxyError::Timeout(t) => format!("No response within {t:?}"),
            ProxyError::StreamIdleTimeout { timeout, .. } => {
                format!("Stream idle timeout: nothing moved for {timeout:?}")
            }
            ProxyError::UpstreamBodyFailed { .. } => "The response was cut short".into(),
            ProxyError::ClientClosed => "Client closed the request".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_a_status_label_and_public_text() {
        let all = [
            ProxyError::BadRequest {
                reason: "duplicate Host header".into(),
            },
            ProxyError::ClientBodyFailed {
                detail: "invalid chunk size line from 10.1.2.3".into(),
            },
            ProxyError::NoRoute { path: "/x".into() },
            ProxyError::NoHostId {
                expected: "x-node-id".into(),
            },
            ProxyError::NoTunnel {
                host_id: "h".into(),
            },
            ProxyError::TunnelsBusy {
                host_id: "h".into(),
            },
            ProxyError::TunnelFailed {
                node: "n".into(),
                detail: "stream reset".into(),
            },
            ProxyError::LocalUnreachable {
                cluster: "app".into(),
                detail: "connect to 10.1.2.3:8080: refused".into(),
            },
            ProxyError::LocalFailed {
                cluster: "app".into(),
                detail: "connection reset".into(),
            },
            ProxyError::Timeout(Duration::from_secs(15)),
            ProxyError::UpstreamBodyFailed {
                detail: "reset".into(),
            },
            ProxyError::ClientClosed,
            ProxyError::Unauthenticated {
                reason: "Unknown API key".into(),
            },
            ProxyError::StreamIdleTimeout {
                timeout: Duration::from_secs(300),
                response_started: false,
            },
            ProxyError::LocalOverloaded {
                cluster: "app".into(),
                reason: "its queue of pending requests is full (max_pending 1024)".into(),
            },
            ProxyError::QueueTimeout {
                cluster: "app".into(),
                timeout: Duration::from_secs(5),
            },
        ];
        let statuses: Vec<u16> = all.iter().map(|e| e.status().as_u16()).collect();
        assert_eq!(
            statuses,
            [400, 400, 404, 400, 503, 503, 502, 503, 502, 504, 502, 499, 401, 408, 503, 503]
        );
        let mut labels: Vec<&str> = all.iter().map(ProxyError::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len(), "labels are distinct");
        let mut listed = ProxyError::LABELS.to_vec();
        listed.sort_unstable();
        assert_eq!(labels, listed, "LABELS lists every label once");
        for e in &all {
            let public = e.public_message();
            assert!(!public.contains("10.1.2.3"), "{public}");
            assert!(
                !public.contains("refused") && !public.contains("reset"),
                "{public}"
            );
        }
        // The log gets the details.
        assert!(all[7].to_string().contains("10.1.2.3:8080"));
        assert!(all[1].to_string().contains("invalid chunk size"));
        // A bad request says why, in its own words.
        assert_eq!(
            all[0].public_message(),
            "Bad request: duplicate Host header"
        );
        assert_eq!(all[0].label(), "bad_request");
        assert_eq!(all[1].label(), "client_body");
        assert_eq!(all[12].label(), "unauthenticated");
        assert_eq!(all[12].public_message(), "Unauthenticated: Unknown API key");
        assert_eq!(all[13].label(), "stream_idle_timeout");
        assert_eq!(
            all[13].public_message(),
            "Stream idle timeout: nothing moved for 300s"
        );
        // Overload says which limit, never the cluster's endpoints.
        assert_eq!(all[14].label(), "local_overloaded");
        assert_eq!(
            all[14].public_message(),
            "The local service is overloaded: its queue of pending requests is full (max_pending 1024)"
        );
        assert_eq!(all[15].label(), "queue_timeout");
        assert!(all[15].public_message().contains("within 5s"));
    }
}
