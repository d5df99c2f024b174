//! The per-request context: what is known about one request as it moves through the phases,
//! and its outcome once it is over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{request, Method, StatusCode, Version};

use super::ProxyError;
use crate::shard::ShardId;

/// The request id header: set on every request sent upstream and on every local reply.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a request; longer values are replaced by a generated one.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Which role's listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The responder's egress listener: a client's request bound for a tunnel.
    Egress,
    /// The initiator: a stream from a tunnel bound for a local service.
    Initiator,
}

impl Role {
    pub fn label(&self) -> &'static str {
        match self {
            Role::Egress => "egress",
            Role::Initiator => "initiator",
        }
    }
}

/// A request's id, as carried in `x-request-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh id: 16 lowercase hex digits.
    pub fn generate() -> Self {
        let mut hex = [0u8; 16];
        let mut n = fastrand::u64(..);
        for digit in hex.iter_mut().rev() {
            *digit = b"0123456789abcdef"[(n & 0xf) as usize];
            n >>= 4;
        }
        let mut value = HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0"));
        // Every id is new: HPACK must not index it, or each request would push a useless
        // entry into the tunnel's dynamic table and evict the ones that repeat (host ids).
        value.set_sensitive(true);
        Self(value)
    }

    /// The id in `headers`, if it is printable ASCII of a sane length.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let value = headers.get(&REQUEST_ID_HEADER)?;
        let bytes = value.as_bytes();
        let printable = bytes.iter().all(|b| (0x21..0x7f).contains(b));
        (printable && !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN).then(|| {
            let mut value = value.clone();
            value.set_sensitive(true); // as in `generate`
            Self(value)
        })
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from printable ASCII.
        self.0.to_str().unwrap_or("-")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client's request body reports as it moves: the bytes it carried and, if it broke
/// off (a bad chunk, a short body), why. Shared with the body, which may travel to another
/// shard (a request handed over for a tunnel there); nothing is allocated for a body that is
/// empty from the start (most requests), since such a body can neither carry nor fail.
#[derive(Debug, Clone, Default)]
pub struct BodyTally(Option<Arc<Tally>>);

#[derive(Debug, Default)]
struct Tally {
    bytes: AtomicU64,
    fault: OnceLock<String>,
}

impl BodyTally {
    /// The tally a body shares with its context: a real one unless the body is empty.
    pub fn for_body(&mut self, body_is_empty: bool) -> BodyTally {
        if !body_is_empty && self.0.is_none() {
            self.0 = Some(Arc::default());
        }
        self.clone()
    }

    pub fn add(&self, n: usize) {
        if let Some(tally) = &self.0 {
            tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Bytes the body carried so far.
    pub fn bytes(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |t| t.bytes.load(Ordering::Relaxed))
    }

    /// Records why the body failed; the first failure wins.
    pub fn set_fault(&self, detail: String) {
        if let Some(tally) = &self.0 {
            let _ = tally.fault.set(detail);
        }
    }

    pub fn fault(&self) -> Option<&str> {
        self.0
            .as_ref()
            .and_then(|t| t.fault.get())
            .map(String::as_str)
    }
}

/// When things happened.
#[derive(Debug, Clone)]
pub struct Timings {
    /// The request head arrived.
    pub start: Instant,
    /// The request was sent upstream (a tunnel stream opened, a local request sent).
    pub upstream_start: Option<Instant>,
    /// The response head was ready to send to the client.
    pub response_start: Option<Instant>,
    /// The logging phase ran.
    pub end: Option<Instant>,
}

/// How the request ended; final in the logging phase.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Status sent to the client (`None` until the response head is ready).
    pub status: Option<StatusCode>,
    /// Why the request failed, if it did: a local reply's cause, or what cut the body short.
    pub failure: Option<ProxyError>,
    /// The client's request body: bytes received, and why it broke off if it did.
    pub request_body: BodyTally,
    /// When body bytes last moved and when the request ended: the route and stream idle
    /// timeouts' clock (`pipeline::deadline`), started when the request goes upstream.
    pub stream: super::StreamClock,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// The response body was sent whole.
    pub completed: bool,
}

impl Outcome {
    /// [`ProxyError::ClientBodyFailed`] if the client's request body failed: whatever went
    /// wrong upstream after that is the client's doing, not the tunnel's or the service's.
    pub fn client_body_failure(&self) -> Option<ProxyError> {
        self.request_body
            .fault()
            .map(|detail| ProxyError::ClientBodyFailed {
                detail: detail.to_owned(),
            })
    }

    /// [`ProxyError::StreamIdleTimeout`] (after the response head) if the stream idle timeout
    /// ended this request.
    pub fn stream_idle_failure(&self) -> Option<ProxyError> {
        self.stream
            .idle_fired()
            .map(|timeout| ProxyError::StreamIdleTimeout {
                timeout,
                response_started: true,
            })
    }
}

/// What the listener knows of the client connection a request arrived on. The egress
/// listener puts it in each request's extensions on TLS connections; [`RequestCtx::new`] copies
/// it into the context. Absent: plaintext, no client certificate.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// `https` on a TLS connection.
    pub scheme: Scheme,
    /// The client's verified certificate (listeners with `tls.client_ca`).
    pub peer_certificate: Option<Arc<crate::tls::PeerCertificate>>,
}

/// One request's context.
#[derive(Debug)]
pub struct RequestCtx {
    pub role: Role,
    pub shard: ShardId,
    pub request_id: RequestId,
    /// The client's address (egress); `None` on the initiator, whose peer is the tunnel.
    pub peer: Option<SocketAddr>,
    /// How the client reached the listener: `https` over TLS, else `http` (`x-forwarded-proto`).
    pub scheme: Scheme,
    /// The client's verified TLS certificate (egress with `client_ca`): read once per
    /// connection, shared by its requests; the tenant stage's `client_certificate` source.
    pub peer_certificate: Option<Arc<crate::tls::PeerCertificate>>,
    pub method: Method,
    pub path: http::uri::PathAndQuery,
    /// The HTTP version the request arrived in.
    pub version: Version,
    /// Request header values a logging stage captured in phase 1, in its own layout (the
    /// access log's: `crate::access_log::render::Captured`); empty without one.
    pub captured: Vec<Option<HeaderValue>>,
    /// Index of the matched route in the role's route table.
    pub route: Option<usize>,
    /// The matched route's rewrite and header rules, when it has any (the driver sets it from
    /// its shard's `RouteRewrites`; the `RouteHeaders` stage applies the header rules).
    pub route_rewrite: Option<std::rc::Rc<crate::config::RouteRewrite>>,
    /// The host id the request was routed by (egress).
    pub host_id: Option<String>,
    /// The tenant the request belongs to (set by the stage that authenticates it: the egress
    /// tenant stage, when `egress_listener.tenant` is configured).
    pub tenant: Option<String>,
    /// The tunnel that carried the request.
    pub tunnel_id: Option<u64>,
    /// The local cluster that served it (initiator).
    pub cluster: Option<std::rc::Rc<str>>,
    pub timings: Timings,
    pub outcome: Outcome,
}

impl RequestCtx {
    /// A context for a request whose head just arrived. The request id is taken from the
    /// request when `trust_request_id` (the initiator trusts its tunnel; the egress when
    /// `egress_listener.trust_request_id` is set) and valid, else generated.
    pub fn new(
        role: Role,
        shard: ShardId,
        peer: Option<SocketAddr>,
        request: &request::Parts,
        trust_request_id: bool,
    ) -> Self {
        let request_id = trust_request_id
            .then(|| RequestId::from_headers(&request.headers))
            .flatten()
            .unwrap_or_else(RequestId::generate);
        let connection = request.extensions.get::<ConnectionInfo>();
        Self {
            role,
            shard,
            request_id,
            peer,
            scheme: connection.map_or(Scheme::HTTP, |c| c.scheme.clone()),
            peer_certificate: connection.and_then(|c| c.peer_certificate.clone()),
            method: request.method.clone(),
            path: request
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            version: request.version,
            captured: Vec::new(),
            route: None,
            route_rewrite: None,
            host_id: None,
            tenant: None,
            tunnel_id: None,
            cluster: None,
            timings: Timings {
                start: Instant::now(),
                upstream_start: None,
                response_start: None,
                end: None,
            },
            outcome: Outcome::default(),
        }
    }

    /// Time from the request head to the logging phase (or to now, before it).
    pub fn duration(&self) -> Duration {
        self.timings
            .end
            .unwrap_or_else(Instant::now)
            .duration_since(self.timings.start)
    }

    /// The failure's stable label, `"-"` when the request did not fail.
    pub fn failure_label(&self) -> &'static str {
        self.outcome.failure.as_ref().map_or("-", ProxyError::label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_hex_and_distinct() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn request_id_from_headers_only_when_sane() {
        let mut h = http::HeaderMap::new();
        assert!(RequestId::from_headers(&h).is_none());
        h.insert(&REQUEST_ID_HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(
            RequestId::from_headers(&h).map(|r| r.to_string()),
            Some("abc-123".into())
        );
        h.insert(&REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert!(RequestId::from_headers(&h).is_none());
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        h.insert(&REQUEST_ID_HEADER, HeaderValue::from_str(&long).unwrap());
        assert!(RequestId::from_headers(&h).is_none());
    }

    #[test]
    fn context_trusts_a_request_id_only_when_asked() {
        let (mut parts, ()) = http::Request::get("/a?b=1").body(()).unwrap().into_parts();
        parts
            .headers
            .insert(&REQUEST_ID_HEADER, HeaderValue::from_static("from-client"));
        let trusted = RequestCtx::new(Role::Initiator, 0, None, &parts, true);
        assert_eq!(trusted.request_id.as_str(), "from-client");
        assert_eq!(trusted.path.as_str(), "/a?b=1");
        let fresh = RequestCtx::new(Role::Egress, 0, None, &parts, false);
        assert_ne!(fresh.request_id.as_str(), "from-client");
        assert_eq!(fresh.failure_label(), "-");
    }

    #[test]
    fn context_takes_scheme_and_certificate_from_the_connection() {
        let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let plain = RequestCtx::new(Role::Egress, 0, None, &parts, false);
        assert_eq!(plain.scheme, Scheme::HTTP);
        assert!(plain.peer_certificate.is_none());

        let cert = Arc::new(crate::tls::PeerCertificate {
            uri_sans: vec![],
            dns_sans: vec!["client.test".into()],
            subject: "CN=client".into(),
            fingerprint_sha256: "00".into(),
        });
        parts.extensions.insert(ConnectionInfo {
            scheme: Scheme::HTTPS,
            peer_certificate: Some(cert.clone()),
        });
        let tls = RequestCtx::new(Role::Egress, 0, None, &parts, false);
        assert_eq!(tls.scheme, Scheme::HTTPS);
        assert_eq!(tls.peer_certificate, Some(cert));
    }

    #[test]
    fn an_empty_body_shares_nothing() {
        let mut outcome = Outcome::default();
        let tally = outcome.request_body.for_body(true);
        tally.add(5);
        tally.set_fault("cannot happen".into());
        assert_eq!(
            (outcome.request_body.bytes(), outcome.request_body.fault()),
            (0, None)
        );
        let tally = outcome.request_body.for_body(false);
        tally.add(5);
        assert_eq!(outcome.request_body.bytes(), 5);
    }

    #[test]
    fn a_body_fault_is_the_first_one_and_blames_the_client() {
        let mut outcome = Outcome::default();
        assert!(outcome.client_body_failure().is_none());
        let shared = outcome.request_body.for_body(false);
        shared.set_fault("invalid chunk size line".into());
        shared.set_fault("later".into());
        let failure = outcome.client_body_failure().expect("a failure");
        assert_eq!(failure.label(), "client_body");
        assert!(failure.to_string().contains("invalid chunk size line"));
    }
}
