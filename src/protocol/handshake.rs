//! The reverse-tunnel handshake (ARCHITECTURE.md §3): one HTTP/1.1 `GET` from the initiator carrying its
//! identity, one reply from the responder; after a `200` the same connection carries HTTP/2.
//!
//! This module owns both sides of that exchange as pure, sans-IO functions over byte slices:
//!
//! - initiator: [`HandshakeRequest::encode`] and [`parse_response`];
//! - responder: [`parse_request`] and [`encode_response`] (or [`Rejection::encode`]).
//!
//! The parsers are incremental in the simplest way: call them again on the whole buffer
//! accumulated so far. `Ok(None)` means "need more bytes"; the returned `usize` is how many bytes
//! of the buffer belong to the handshake. Bytes after that belong to HTTP/2 and are never consumed.
//! Everything here comes from the network: no input makes these functions panic, and nothing
//! beyond [`MAX_HANDSHAKE_BYTES`] is ever looked at.

use std::borrow::Cow;
use std::time::Duration;

use thiserror::Error;

use super::ids::{validate_id, IdError};

/// Path of the handshake request unless `request_path` says otherwise.
pub const DEFAULT_REQUEST_PATH: &str = "/reverse_connections/request";
/// Upper bound of a handshake message (request or response), head and body together.
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// Most headers a handshake message may carry; more is malformed.
pub const MAX_HEADERS: usize = 64;
/// Upper bound of a `Retry-After` the initiator honours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Header carrying the initiator's node id.
pub const NODE_ID_HEADER: &str = "x-envoy-reverse-tunnel-node-id";
/// Header carrying the initiator's cluster id.
pub const CLUSTER_ID_HEADER: &str = "x-envoy-reverse-tunnel-cluster-id";
/// Header carrying the initiator's tenant id (may be empty).
pub const TENANT_ID_HEADER: &str = "x-envoy-reverse-tunnel-tenant-id";
/// Header naming the responder cluster in the initiator's configuration (informational).
pub const UPSTREAM_CLUSTER_HEADER: &str = "x-envoy-reverse-tunnel-upstream-cluster-name";

/// Who an initiator says it is: the keys under which the responder registers its tunnels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelIdentity {
    pub node_id: String,
    pub cluster_id: String,
    pub tenant_id: String,
}

// ---------------------------------------------------------------------------------------------
// Initiator side
// ---------------------------------------------------------------------------------------------

/// The handshake request an initiator writes right after connecting.
///
/// `encode` does not validate: the identity, host, path and extra headers come from a validated
/// configuration (no CR/LF in them), not from the network.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeRequest<'a> {
    /// The responder address as dialed (`Host` header).
    pub host: &'a str,
    /// The request path, usually [`DEFAULT_REQUEST_PATH`].
    pub path: &'a str,
    pub identity: &'a TunnelIdentity,
    /// Name of the responder cluster in the initiator's configuration.
    pub upstream_cluster: &'a str,
    /// Extra headers written after the identity, in order (for example `authorization`).
    pub extra_headers: &'a [(String, String)],
}

impl HandshakeRequest<'_> {
    /// The request bytes, exactly as Envoy's initiator writes them, with CRLF line ends.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str("GET ");
        out.push_str(self.path);
        out.push_str(" HTTP/1.1\r\n");
        push_header(&mut out, "Host", self.host);
        push_header(&mut out, NODE_ID_HEADER, &self.identity.node_id);
        push_header(&mut out, CLUSTER_ID_HEADER, &self.identity.cluster_id);
        push_header(&mut out, TENANT_ID_HEADER, &self.identity.tenant_id);
        push_header(&mut out, UPSTREAM_CLUSTER_HEADER, self.upstream_cluster);
        for (name, value) in self.extra_headers {
            push_header(&mut out, name, value);
        }
        out.push_str("content-length: 0\r\n\r\n");
        out.into_bytes()
    }
}

fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// The responder's answer, as the initiator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub status: u16,
    /// `Retry-After` in seconds (the HTTP-date form is ignored), capped at [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
    /// The body delimited by `content-length` (lossy UTF-8, for logs); empty without one.
    pub body: String,
}

/// Why the responder's answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("handshake response exceeds {MAX_HANDSHAKE_BYTES} bytes")]
    TooLarge,
    #[error("malformed handshake response: {0}")]
    Malformed(httparse::Error),
    #[error("handshake response has an invalid content-length")]
    InvalidContentLength,
    #[error(
        "handshake response 200 uses transfer-encoding; its end cannot be found before HTTP/2"
    )]
    TransferEncodingOn200,
}

/// Parses the responder's answer from the start of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, else the response and the number of bytes it
/// occupies: the head plus a `content-length` body. After a `200` the bytes that follow are
/// HTTP/2 and are not consumed. A response without `content-length` has an empty body (a
/// rejection is followed by a close; the initiator does not wait for it).
pub fn parse_response(buf: &[u8]) -> Result<Option<(HandshakeResponse, usize)>, HandshakeError> {
    let window = &buf[..buf.len().min(MAX_HANDSHAKE_BYTES)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() >= MAX_HANDSHAKE_BYTES => {
            return Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e)),
    };
    let status = response
        .code
        .ok_or(HandshakeError::Malformed(httparse::Error::Status))?;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut retry_after = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let n =
                parse_content_length(header.value).ok_or(HandshakeError::InvalidContentLength)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HandshakeError::InvalidContentLength);
            }
            content_length = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if header.name.eq_ignore_ascii_case("retry-after") {
            retry_after = parse_retry_after(header.value);
        }
    }
    if chunked && status == 200 {
        return Err(HandshakeError::TransferEncodingOn200);
    }
    let body_len = if chunked {
        0
    } else {
        content_length.unwrap_or(0)
    };
    let total = head_len
        .checked_add(body_len)
        .filter(|&t| t <= MAX_HANDSHAKE_BYTES)
        .ok_or(HandshakeError::TooLarge)?;
    let Some(body) = buf.get(head_len..total) else {
        return Ok(None);
    };
    let response = HandshakeResponse {
        status,
        retry_after,
        body: String::from_utf8_lossy(body).into_owned(),
    };
    Ok(Some((response, total)))
}

/// A `content-length` value: ASCII digits only (no sign, no list), not absurdly large.
fn parse_content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// `Retry-After: <seconds>`, capped; huge digit strings cap rather than fail.
fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    let capped = secs.map_or(MAX_RETRY_AFTER, |s| {
        Duration::from_secs(s).min(MAX_RETRY_AFTER)
    });
    Some(capped)
}

// ---------------------------------------------------------------------------------------------
// Responder side
// ---------------------------------------------------------------------------------------------

/// A handshake request the responder accepts (before authentication and authorisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedHandshake {
    pub identity: TunnelIdentity,
    /// The initiator's name for this responder cluster, if sent (UTF-8, not otherwise checked).
    pub upstream_cluster: Option<String>,
    /// Every header of the request in order, names lowercased, values as sent (for auth).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Why the responder refuses a handshake: one value per reason, each with its status
/// (ARCHITECTURE.md §3), a stable
/// label for counters and logs, and the text of the local reply. The codec produces the
/// parsing ones; the acceptor and its admission stages the others.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// 404: a method other than GET or another path.
    #[error("Not a reverse tunnel request")]
    NotTunnelRequest,
    /// 400: malformed HTTP, a body, or a missing, repeated or invalid identity header.
    #[error("{0}")]
    Malformed(Cow<'static, str>),
    /// 400: a plaintext request on a tunnel listener that requires TLS.
    #[error("This tunnel listener requires TLS")]
    TlsRequired,
    /// 400: the head does not end within [`MAX_HANDSHAKE_BYTES`].
    #[error("Handshake request too large")]
    TooLarge,
    /// 408: the handshake did not arrive within `handshake_timeout`.
    #[error("Handshake not received within handshake_timeout")]
    Timeout,
    /// 401: missing or invalid credentials.
    #[error("{0}")]
    Unauthenticated(Cow<'static, str>),
    /// 403: the credentials do not allow this identity (or it does not match the client
    /// certificate).
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    /// 403: within the tenant, the handshake's cluster id is a live node id or its node id a
    /// live cluster id (node and cluster ids share one namespace).
    #[error("{0}")]
    IdentityCollision(Cow<'static, str>),
    /// 400: `x-envoy-reverse-tunnel-upstream-cluster-name` is missing or is not the
    /// listener's `required_cluster_name`.
    #[error("x-envoy-reverse-tunnel-upstream-cluster-name does not name this responder's cluster")]
    WrongCluster,
    /// 403: the node already holds `max_tunnels_per_node` tunnels.
    #[error("node {node} already holds its maximum of {max} tunnels")]
    NodeLimit { node: String, max: u32 },
    /// 429: the responder holds `max_tunnels`; the initiator should retry after a while.
    #[error("the responder holds its maximum of {max} tunnels")]
    TunnelLimit { max: u32, retry_after_secs: u64 },
    /// 503: the responder is shutting down.
    #[error("The responder is shutting down")]
    ShuttingDown,
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::NotTunnelRequest => 404,
            Rejection::Malformed(_)
            | Rejection::TooLarge
            | Rejection::TlsRequired
            | Rejection::WrongCluster => 400,
            Rejection::Timeout => 408,
            Rejection::Unauthenticated(_) => 401,
            Rejection::Forbidden(_)
            | Rejection::IdentityCollision(_)
            | Rejection::NodeLimit { .. } => 403,
            Rejection::TunnelLimit { .. } => 429,
            Rejection::ShuttingDown => 503,
        }
    }

    /// A stable, machine-friendly reason.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::NotTunnelRequest => "not_tunnel_request",
            Rejection::Malformed(_) => "malformed",
            Rejection::TooLarge => "too_large",
            Rejection::TlsRequired => "tls_required",
            Rejection::Timeout => "timeout",
            Rejection::Unauthenticated(_) => "unauthenticated",
            Rejection::Forbidden(_) => "forbidden",
            Rejection::IdentityCollision(_) => "collision",
            Rejection::WrongCluster => "wrong_cluster_name",
            Rejection::NodeLimit { .. } => "node_limit",
            Rejection::TunnelLimit { .. } => "tunnel_limit",
            Rejection::ShuttingDown => "shutting_down",
        }
    }

    /// Seconds the initiator should wait before retrying (429 only).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Rejection::TunnelLimit {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The text of the local reply.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    fn bad_request(reason: impl Into<Cow<'static, str>>) -> Self {
        Rejection::Malformed(reason.into())
    }

    /// The local reply for this rejection (followed by a close).
    pub fn encode(&self) -> Vec<u8> {
        encode_response(self.status(), &self.reason(), self.retry_after())
    }
}

/// Parses a handshake request from the start of `buf`, on the responder.
///
/// Returns `Ok(None)` while the head is incomplete and still under [`MAX_HANDSHAKE_BYTES`], else
/// the accepted handshake and the length of its head (a handshake has no body; the bytes after
/// it are not consumed). Rejections, in the order they are checked:
///
/// - `400` malformed HTTP (including a version other than 1.0/1.1, more than [`MAX_HEADERS`]
///   headers, or a head that does not end within [`MAX_HANDSHAKE_BYTES`]);
/// - `404` a method other than `GET`, or a path (before any `?`) other than `expected_path`;
/// - `400` a body (`content-length` other than 0, or any `transfer-encoding`);
/// - `400` node or cluster id missing, repeated, not UTF-8 or invalid ([`validate_id`]); tenant
///   id repeated or invalid (absent means empty); upstream cluster repeated or not UTF-8.
pub fn parse_request(
    buf: &[u8],
    expected_path: &str,
) -> Result<Option<(AcceptedHandshake, usize)>, Rejection> {
    let window = &buf[..buf.len().min(MAX_HANDSHAKE_BYTES)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() >= MAX_HANDSHAKE_BYTES => {
            return Err(Rejection::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::bad_request("Too many headers"))
        }
        Err(_) => return Err(Rejection::bad_request("Malformed HTTP request")),
    };

    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Err(Rejection::bad_request("Malformed HTTP request"));
    };
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    if method != "GET" || path != expected_path {
        return Err(Rejection::NotTunnelRequest);
    }

    let mut fields = IdentityFields::default();
    let mut all = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" if parse_content_length(header.value) != Some(0) => {
                return Err(Rejection::bad_request(
                    "A handshake request must not have a body",
                ));
            }
            "transfer-encoding" => {
                return Err(Rejection::bad_request(
                    "A handshake request must not have a body",
                ));
            }
            NODE_ID_HEADER => set_once(&mut fields.node, NODE_ID_HEADER, header.value)?,
            CLUSTER_ID_HEADER => set_once(&mut fields.cluster, CLUSTER_ID_HEADER, header.value)?,
            TENANT_ID_HEADER => set_once(&mut fields.tenant, TENANT_ID_HEADER, header.value)?,
            UPSTREAM_CLUSTER_HEADER => {
                set_once(&mut fields.upstream, UPSTREAM_CLUSTER_HEADER, header.value)?
            }
            _ => {}
        }
        all.push((name, header.value.to_vec()));
    }

    let node_id = required_id(fields.node, NODE_ID_HEADER)?;
    let cluster_id = required_id(fields.cluster, CLUSTER_ID_HEADER)?;
    let tenant_id = fields.tenant.unwrap_or_default();
    validate_id(&tenant_id, true).map_err(|e| invalid_id(TENANT_ID_HEADER, &e))?;

    let accepted = AcceptedHandshake {
        identity: TunnelIdentity {
            node_id,
            cluster_id,
            tenant_id,
        },
        upstream_cluster: fields.upstream,
        headers: all,
    };
    Ok(Some((accepted, head_len)))
}

/// The handshake headers that must appear at most once, decoded as UTF-8.
#[derive(Default)]
struct IdentityFields {
    node: Option<String>,
    cluster: Option<String>,
    tenant: Option<String>,
    upstream: Option<String>,
}

fn set_once(slot: &mut Option<String>, name: &str, value: &[u8]) -> Result<(), Rejection> {
    if slot.is_some() {
        return Err(Rejection::bad_request(format!("Repeated {name} header")));
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| Rejection::bad_request(format!("Header {name} is not UTF-8")))?;
    *slot = Some(value.to_owned());
    Ok(())
}

fn required_id(value: Option<String>, name: &str) -> Result<String, Rejection> {
    let value = value.ok_or_else(|| Rejection::bad_request(format!("Missing {name} header")))?;
    validate_id(&value, false).map_err(|e| invalid_id(name, &e))?;
    Ok(value)
}

fn invalid_id(name: &str, error: &IdError) -> Rejection {
    Rejection::bad_request(format!("Invalid {name} header: {error}"))
}

/// The responder's reply to a handshake.
///
/// `200` is exactly `HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n` (HTTP/2 follows, so `body`
/// and `retry_after` are ignored). Any other status is a `text/plain` local reply with
/// `connection: close`, an optional `retry-after`, and `body` ending in a newline (one is
/// added when missing). A status outside `100..=999` is written as `500`.
pub fn encode_response(status: u16, body: &str, retry_after: Option<u64>) -> Vec<u8> {
    if status == 200 {
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec();
    }
    let code =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let reason = code.canonical_reason().unwrap_or("Unknown");
    let newline = if body.ends_with('\n') { "" } else { "\n" };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n",
        code.as_u16(),
        body.len() + newline.len(),
    );
    if let Some(secs) = retry_after {
        out.push_str(&format!("retry-after: {secs}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.push_str(newline);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn identity() -> TunnelIdentity {
        TunnelIdentity {
            node_id: "edge-42".into(),
            cluster_id: "edge-west".into(),
            tenant_id: "acme".into(),
        }
    }

    fn valid_request() -> Vec<u8> {
        let identity = identity();
        let extra = [("authorization".to_string(), "Bearer t0k3n".to_string())];
        HandshakeRequest {
            host: "responder.example.com:9000",
            path: DEFAULT_REQUEST_PATH,
            identity: &identity,
            upstream_cluster: "cloud",
            extra_headers: &extra,
        }
        .encode()
    }

    /// A request with the given request line and header lines (each without CRLF).
    fn request(line: &str, headers: &[&str]) -> Vec<u8> {
        let mut out = format!("{line}\r\n");
        for h in headers {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    const GET: &str = "GET /reverse_connections/request HTTP/1.1";
    const NODE: &str = "x-envoy-reverse-tunnel-node-id: n1";
    const CLUSTER: &str = "x-envoy-reverse-tunnel-cluster-id: c1";

    fn reject(buf: &[u8]) -> Rejection {
        match parse_request(buf, DEFAULT_REQUEST_PATH) {
            Err(r) => r,
            Ok(other) => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn accept(buf: &[u8]) -> (AcceptedHandshake, usize) {
        match parse_request(buf, DEFAULT_REQUEST_PATH) {
            Ok(Some(done)) => done,
            other => panic!("expected an accepted handshake, got {other:?}"),
        }
    }

    #[test]
    fn encode_request_exact_bytes() {
        let expected: &[u8] = b"GET /reverse_connections/request HTTP/1.1\r\n\
Host: responder.example.com:9000\r\n\
x-envoy-reverse-tunnel-node-id: edge-42\r\n\
x-envoy-reverse-tunnel-cluster-id: edge-west\r\n\
x-envoy-reverse-tunnel-tenant-id: acme\r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: cloud\r\n\
authorization: Bearer t0k3n\r\n\
content-length: 0\r\n\
\r\n";
        assert_eq!(valid_request(), expected);
    }

    #[test]
    fn encode_request_empty_tenant_no_extras() {
        let identity = TunnelIdentity {
            node_id: "n".into(),
            cluster_id: "c".into(),
            tenant_id: String::new(),
        };
        let bytes = HandshakeRequest {
            host: "h:1",
            path: "/p",
            identity: &identity,
            upstream_cluster: "u",
            extra_headers: &[],
        }
        .encode();
        assert_eq!(
            bytes,
            b"GET /p HTTP/1.1\r\nHost: h:1\r\nx-envoy-reverse-tunnel-node-id: n\r\n\
x-envoy-reverse-tunnel-cluster-id: c\r\nx-envoy-reverse-tunnel-tenant-id: \r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: u\r\ncontent-length: 0\r\n\r\n"
        );
        let (accepted, _) = parse_request(&bytes, "/p").unwrap().unwrap();
        assert_eq!(accepted.identity, identity);
    }

    #[test]
    fn roundtrip_encode_parse_request() {
        let bytes = valid_request();
        let mut with_h2 = bytes.clone();
        with_h2.extend_from_slice(PREFACE);
        let (accepted, consumed) = accept(&with_h2);
        assert_eq!(consumed, bytes.len());
        assert_eq!(accepted.identity, identity());
        assert_eq!(accepted.upstream_cluster.as_deref(), Some("cloud"));
        assert!(accepted
            .headers
            .contains(&("authorization".to_string(), b"Bearer t0k3n".to_vec())));
        assert!(accepted
            .headers
            .contains(&("host".to_string(), b"responder.example.com:9000".to_vec())));
        assert_eq!(accepted.headers.len(), 7);
    }

    #[test]
    fn accepts_query_http10_missing_tenant_and_mixed_case_names() {
        let (a, _) = accept(&request(
            "GET /reverse_connections/request?x=1 HTTP/1.0",
            &[
                "X-Envoy-Reverse-Tunnel-Node-Id: n1",
                "X-ENVOY-REVERSE-TUNNEL-CLUSTER-ID: c1",
            ],
        ));
        assert_eq!(a.identity.node_id, "n1");
        assert_eq!(a.identity.cluster_id, "c1");
        assert_eq!(a.identity.tenant_id, "");
        assert_eq!(a.upstream_cluster, None);
        assert_eq!(a.headers[0].0, NODE_ID_HEADER);
    }

    #[test]
    fn wrong_method_or_path_is_404() {
        for line in [
            "POST /reverse_connections/request HTTP/1.1",
            "get /reverse_connections/request HTTP/1.1",
            "GET /reverse_connections/request/ HTTP/1.1",
            "GET /other HTTP/1.1",
            "GET / HTTP/1.1",
            "GET * HTTP/1.1",
        ] {
            let r = reject(&request(line, &[NODE, CLUSTER]));
            assert_eq!(r.status(), 404, "{line}");
            assert_eq!(r.reason(), "Not a reverse tunnel request");
        }
    }

    #[test]
    fn identity_problems_are_400() {
        let long = format!("{NODE_ID_HEADER}: {}", "a".repeat(256));
        let colon = format!("{NODE_ID_HEADER}: a:b");
        let empty = format!("{NODE_ID_HEADER}:");
        let tenant_colon = format!("{TENANT_ID_HEADER}: t:1");
        let cases: &[(&str, Vec<&str>)] = &[
            ("missing node", vec![CLUSTER]),
            ("missing cluster", vec![NODE]),
            ("empty node", vec![&empty, CLUSTER]),
            ("colon in node", vec![&colon, CLUSTER]),
            ("256-byte node", vec![&long, CLUSTER]),
            ("duplicate node", vec![NODE, NODE, CLUSTER]),
            ("duplicate cluster", vec![NODE, CLUSTER, CLUSTER]),
            ("invalid tenant", vec![NODE, CLUSTER, &tenant_colon]),
        ];
        for (what, headers) in cases {
            let r = reject(&request(GET, headers));
            assert_eq!(r.status(), 400, "{what}: {r}");
        }
        // A byte that is not visible ASCII inside the value (obs-text is legal HTTP).
        let mut raw = request(GET, &["x-envoy-reverse-tunnel-node-id: a\u{e9}b", CLUSTER]);
        assert_eq!(reject(&raw).status(), 400);
        // And bytes that are not UTF-8 at all.
        let pos = raw.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
        raw[pos] = 0xff;
        let r = reject(&raw);
        assert_eq!(r.status(), 400);
        assert!(r.reason().contains("not UTF-8"), "{r}");
        // A control character inside the value is malformed HTTP already.
        let r = reject(&request(
            GET,
            &["x-envoy-reverse-tunnel-node-id: a\u{1}b", CLUSTER],
        ));
        assert_eq!(r.status(), 400);
    }

    #[test]
    fn body_is_400() {
        for extra in [
            "content-length: 5",
            "Content-Length: abc",
            "content-length: -1",
            "transfer-encoding: chunked",
            "Transfer-Encoding: identity",
        ] {
            let r = reject(&request(GET, &[NODE, CLUSTER, extra]));
            assert_eq!(r.status(), 400, "{extra}");
        }
        accept(&request(GET, &[NODE, CLUSTER, "content-length: 0"]));
    }

    #[test]
    fn malformed_http_is_400() {
        for garbage in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET /reverse_connections/request HTTP/2.0\r\n\r\n",
            b"GET /reverse_connections/request HTTP/1.1\r\nbad header\r\n\r\n",
            b"\r\n\r\nGET\r\n\r\n",
            b"GET  /reverse_connections/request HTTP/1.1\r\n\r\n",
            PREFACE,
        ] {
            let r = reject(garbage);
            assert_eq!(r.status(), 400, "{garbage:?}");
        }
    }

    #[test]
    fn truncated_is_incomplete() {
        let bytes = valid_request();
        for cut in [0, 1, 10, bytes.len() - 1] {
            assert_eq!(
                parse_request(&bytes[..cut], DEFAULT_REQUEST_PATH),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversized_head_is_400() {
        let mut bytes = format!("{GET}\r\n{NODE}\r\n{CLUSTER}\r\n").into_bytes();
        while bytes.len() <= MAX_HANDSHAKE_BYTES {
            bytes.extend_from_slice(format!("x-pad: {}\r\n", "a".repeat(1000)).as_bytes());
        }
        bytes.truncate(MAX_HANDSHAKE_BYTES + 1);
        let r = reject(&bytes);
        assert_eq!(r.status(), 400);
        assert!(r.reason().contains("too large"), "{r}");
    }

    #[test]
    fn size_limit_boundary() {
        // A complete head of exactly MAX_HANDSHAKE_BYTES is fine; one byte short of its end is not.
        let base = format!("{GET}\r\n{NODE}\r\n{CLUSTER}\r\nx-pad: ");
        let pad = MAX_HANDSHAKE_BYTES - base.len() - "\r\n\r\n".len();
        let bytes = format!("{base}{}\r\n\r\n", "a".repeat(pad)).into_bytes();
        assert_eq!(bytes.len(), MAX_HANDSHAKE_BYTES);
        let (_, consumed) = accept(&bytes);
        assert_eq!(consumed, MAX_HANDSHAKE_BYTES);
        let mut longer = bytes.clone();
        longer.extend_from_slice(PREFACE);
        assert_eq!(accept(&longer).1, MAX_HANDSHAKE_BYTES);

        let mut short = format!("{base}{}\r\n\r", "a".repeat(pad + 1)).into_bytes();
        assert_eq!(short.len(), MAX_HANDSHAKE_BYTES);
        assert_eq!(reject(&short).status(), 400);
        short.truncate(MAX_HANDSHAKE_BYTES - 1);
        assert_eq!(parse_request(&short, DEFAULT_REQUEST_PATH), Ok(None));
    }

    #[test]
    fn header_count_limit() {
        let pads: Vec<String> = (0..MAX_HEADERS - 2).map(|i| format!("x-h{i}: v")).collect();
        let mut headers: Vec<&str> = vec![NODE, CLUSTER];
        headers.extend(pads.iter().map(String::as_str));
        accept(&request(GET, &headers));
        headers.push("x-one-too-many: v");
        let r = reject(&request(GET, &headers));
        assert_eq!(r.status(), 400);
        assert_eq!(r.reason(), "Too many headers");
    }

    #[test]
    fn auth_rejections_have_their_status_and_label() {
        let cases = [
            (
                Rejection::Unauthenticated("no".into()),
                401,
                "unauthenticated",
            ),
            (Rejection::Forbidden("no".into()), 403, "forbidden"),
            (Rejection::IdentityCollision("no".into()), 403, "collision"),
            (Rejection::WrongCluster, 400, "wrong_cluster_name"),
        ];
        for (rejection, status, label) in cases {
            assert_eq!((rejection.status(), rejection.label()), (status, label));
            assert!(rejection
                .encode()
                .starts_with(format!("HTTP/1.1 {status} ").as_bytes()));
        }
    }

    #[test]
    fn encode_response_exact_bytes() {
        assert_eq!(
            encode_response(200, "ignored", Some(3)),
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            encode_response(404, "Not a reverse tunnel request", None),
            b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 29\r\n\
connection: close\r\n\r\nNot a reverse tunnel request\n"
        );
        assert_eq!(
            encode_response(429, "too many tunnels\n", Some(5)),
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\ncontent-length: 17\r\n\
connection: close\r\nretry-after: 5\r\n\r\ntoo many tunnels\n"
        );
        assert!(
            encode_response(7, "x", None).starts_with(b"HTTP/1.1 500 Internal Server Error\r\n")
        );
        assert!(encode_response(599, "x", None).starts_with(b"HTTP/1.1 599 Unknown\r\n"));
        let r = reject(b"POST / HTTP/1.1\r\n\r\n");
        assert_eq!(r.encode(), encode_response(404, &r.reason(), None));
    }

    #[test]
    fn parse_response_200_stops_before_h2() {
        let head = encode_response(200, "", None);
        let mut buf = head.clone();
        buf.extend_from_slice(PREFACE);
        let (resp, consumed) = parse_response(&buf).unwrap().unwrap();
        assert_eq!(consumed, head.len());
        assert_eq!(resp.status, 200);
        assert_eq!(resp.retry_after, None);
        assert_eq!(resp.body, "");

        // No content-length at all.
        let mut buf = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        buf.extend_from_slice(b"RPING");
        assert_eq!(parse_response(&buf).unwrap().unwrap().1, 19);

        // A content-length body is consumed with the head, and only once fully present.
        let buf = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokPRI";
        let (resp, consumed) = parse_response(buf).unwrap().unwrap();
        assert_eq!((resp.body.as_str(), consumed), ("ok", buf.len() - 3));
        assert_eq!(parse_response(&buf[..buf.len() - 4]), Ok(None));
    }

    #[test]
    fn parse_response_retry_after() {
        let resp = |secs: &str| {
            let bytes = format!("HTTP/1.1 429 Too Many Requests\r\nRetry-After: {secs}\r\ncontent-length: 0\r\n\r\n");
            parse_response(bytes.as_bytes()).unwrap().unwrap().0
        };
        let r = resp("5");
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after, Some(Duration::from_secs(5)));
        assert_eq!(resp("99999").retry_after, Some(MAX_RETRY_AFTER));
        assert_eq!(
            resp("99999999999999999999999").retry_after,
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(resp("Wed, 21 Oct 2015 07:28:00 GMT").retry_after, None);
        assert_eq!(resp("-1").retry_after, None);
        let ours = encode_response(429, "too many tunnels", Some(5));
        let (r, n) = parse_response(&ours).unwrap().unwrap();
        assert_eq!(
            (r.retry_after, r.body.as_str(), n),
            (
                Some(Duration::from_secs(5)),
                "too many tunnels\n",
                ours.len()
            )
        );
    }

    #[test]
    fn parse_response_503_with_body() {
        let bytes = encode_response(503, "responder is draining", None);
        let (r, n) = parse_response(&bytes).unwrap().unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "responder is draining\n");
        assert_eq!(n, bytes.len());
        // Incomplete body or head: need more.
        assert_eq!(parse_response(&bytes[..bytes.len() - 1]), Ok(None));
        assert_eq!(parse_response(&bytes[..10]), Ok(None));
        assert_eq!(parse_response(b""), Ok(None));
    }

    #[test]
    fn parse_response_errors() {
        assert!(matches!(
            parse_response(b"\x16\x03\x01\x00\x05hello"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(b"PRI * HTTP/2.0\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            Err(HandshakeError::InvalidContentLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Err(HandshakeError::InvalidContentLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(HandshakeError::TransferEncodingOn200)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 503 x\r\ncontent-length: 99999\r\n\r\n"),
            Err(HandshakeError::TooLarge)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 503 x\r\ncontent-length: 18446744073709551615\r\n\r\n"),
            Err(HandshakeError::InvalidContentLength)
        );
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.resize(MAX_HANDSHAKE_BYTES + 1, b'a');
        assert_eq!(parse_response(&big), Err(HandshakeError::TooLarge));
    }

    /// xorshift64: deterministic pseudo-random bytes without a crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn no_panic_on_prefixes_and_random_input() {
        let valid = valid_request();
        for cut in 0..valid.len() {
            assert_eq!(parse_request(&valid[..cut], DEFAULT_REQUEST_PATH), Ok(None));
        }
        let response = encode_response(429, "slow down", Some(7));
        for cut in 0..=response.len() {
            let _ = parse_response(&response[..cut]);
        }

        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"GET /:\r\n\x00\xffxRPING-0123456789content-length";
        for round in 0..4000 {
            let len = (rng.next() % 300) as usize;
            let input: Vec<u8> = match round % 3 {
                // Raw random bytes.
                0 => (0..len).map(|_| rng.next() as u8).collect(),
                // Random bytes from an HTTP-ish alphabet.
                1 => (0..len)
                    .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                    .collect(),
                // The valid request with a few bytes flipped.
                _ => {
                    let mut v = valid.clone();
                    for _ in 0..1 + rng.next() % 4 {
                        let i = (rng.next() as usize) % v.len();
                        v[i] = rng.next() as u8;
                    }
                    v
                }
            };
            let _ = parse_request(&input, DEFAULT_REQUEST_PATH);
            let _ = parse_response(&input);
            let mut status_line = b"HTTP/1.1 200 OK\r\n".to_vec();
            status_line.extend_from_slice(&input);
            let _ = parse_response(&status_line);
        }
    }
}
