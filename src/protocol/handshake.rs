//! The reverse-tunnel handshake (ARCHITECTURE.md §3): one HTTP/1.1 `GET` from the initiator
//! carrying its identity, one reply from the responder; after the acceptance the same connection
//! carries HTTP/2.
//!
//! The handshake has two forms ([`HandshakeForm`]), both Envoy's:
//!
//! - **plain**: the `GET` is answered `200 OK`;
//! - **upgrade** (Envoy's `use_http_upgrade`): the `GET` also carries `connection: upgrade` and
//!   `upgrade: reverse-tunnel` and is answered `101 Switching Protocols` with the same two
//!   headers, so that an HTTP proxy between the two ends splices the connection the way it does
//!   for WebSockets.
//!
//! Rejections are the same ordinary status replies in both forms. The initiator may also send
//! `x-envoy-reverse-tunnel-initiation-time` (milliseconds since the Unix epoch, in decimal); the
//! responder reads it as information only and ignores a malformed value, as Envoy does.
//!
//! This module owns both sides of that exchange as pure, sans-IO functions over byte slices:
//!
//! - initiator: [`HandshakeRequest::encode`] and [`parse_response`];
//! - responder: [`parse_request`] and [`encode_accept`] (or [`Rejection::encode`]).
//!
//! The parsers are incremental in the simplest way: call them again on the whole buffer
//! accumulated so far. `Ok(None)` means "need more bytes"; the returned `usize` is how many bytes
//! of the buffer belong to the handshake. Bytes after that belong to HTTP/2 and are never consumed.
//! Everything here comes from the network: no input makes these functions panic, and nothing
//! beyond [`MAX_HANDSHAKE_BYTES`] is ever looked at.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
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
/// Header carrying when the initiator first wanted this tunnel: milliseconds since the Unix
/// epoch, in decimal (informational; Envoy's responder reports it as the tunnel's creation time).
pub const INITIATION_TIME_HEADER: &str = "x-envoy-reverse-tunnel-initiation-time";
/// The `Upgrade` protocol token of the upgrade form.
pub const UPGRADE_PROTOCOL: &str = "reverse-tunnel";

/// Which form of the handshake an initiator uses (`initiator.handshake`); a responder accepts
/// both and answers in the form of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandshakeForm {
    /// `GET`, accepted with `200 OK` (Envoy's default).
    #[default]
    Plain,
    /// `GET` with `connection: upgrade` and `upgrade: reverse-tunnel`, accepted with
    /// `101 Switching Protocols` (Envoy's `use_http_upgrade: true`).
    Upgrade,
}

impl HandshakeForm {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeForm::Plain => "plain",
            HandshakeForm::Upgrade => "upgrade",
        }
    }

    /// The status that accepts a handshake of this form.
    pub fn accept_status(self) -> u16 {
        match self {
            HandshakeForm::Plain => 200,
            HandshakeForm::Upgrade => 101,
        }
    }
}

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
    /// Plain, or the HTTP Upgrade form (`connection: upgrade`, `upgrade: reverse-tunnel`).
    pub form: HandshakeForm,
    /// When this tunnel was first wanted, sent as [`INITIATION_TIME_HEADER`]; `None` (or a time
    /// before the Unix epoch) sends no such header.
    pub initiation_time: Option<SystemTime>,
    /// Extra headers written after the identity, in order (for example `authorization`).
    pub extra_headers: &'a [(String, String)],
}

impl HandshakeRequest<'_> {
    /// The request bytes, with CRLF line ends, in the order Envoy's initiator writes them:
    /// `Host`, the upgrade pair (upgrade form only), the identity, the upstream cluster, the
    /// initiation time, the extra headers, `content-length: 0`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str("GET ");
        out.push_str(self.path);
        out.push_str(" HTTP/1.1\r\n");
        push_header(&mut out, "Host", self.host);
        if self.form == HandshakeForm::Upgrade {
            push_header(&mut out, "connection", "upgrade");
            push_header(&mut out, "upgrade", UPGRADE_PROTOCOL);
        }
        push_header(&mut out, NODE_ID_HEADER, &self.identity.node_id);
        push_header(&mut out, CLUSTER_ID_HEADER, &self.identity.cluster_id);
        push_header(&mut out, TENANT_ID_HEADER, &self.identity.tenant_id);
        push_header(&mut out, UPSTREAM_CLUSTER_HEADER, self.upstream_cluster);
        if let Some(ms) = self.initiation_time.and_then(epoch_millis) {
            push_header(&mut out, INITIATION_TIME_HEADER, &ms.to_string());
        }
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

/// Milliseconds since the Unix epoch; `None` before it (or absurdly far after it).
fn epoch_millis(time: SystemTime) -> Option<u64> {
    let ms = time.duration_since(UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// The responder's answer, as the initiator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// `200` (plain form) or `101` (upgrade form) accepts; anything else is a rejection.
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
    #[error(
        "handshake response 101 Switching Protocols to a handshake that did not ask to upgrade"
    )]
    UnexpectedSwitch,
    #[error("handshake response 101 upgrades to {0}, not `{UPGRADE_PROTOCOL}`")]
    WrongUpgrade(String),
    #[error(
        "handshake response 200 to an upgrade handshake: the responder (or a proxy) ignored \
         `upgrade: {UPGRADE_PROTOCOL}`"
    )]
    NotUpgraded,
}

impl HandshakeResponse {
    /// Whether the responder accepted: [`parse_response`] only returns `101` to an upgrade
    /// handshake and `200` to a plain one.
    pub fn accepted(&self) -> bool {
        matches!(self.status, 101 | 200)
    }
}

/// Parses the responder's answer to a handshake of `form` from the start of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, else the response and the number of bytes it
/// occupies: the head plus a `content-length` body. After the acceptance (`200`, or `101` with
/// no body at all) the bytes that follow are HTTP/2 and are not consumed. A response without
/// `content-length` has an empty body (a rejection is followed by a close; the initiator does
/// not wait for it).
///
/// The acceptance must match the form, as in Envoy's initiator: a `101` to a plain handshake is
/// [`HandshakeError::UnexpectedSwitch`], a `200` to an upgrade handshake is
/// [`HandshakeError::NotUpgraded`], and a `101` must carry `upgrade: reverse-tunnel` (RFC 9110
/// §15.2.2; ASCII case ignored), else [`HandshakeError::WrongUpgrade`]. Any other status is
/// returned as a rejection in both forms.
pub fn parse_response(
    buf: &[u8],
    form: HandshakeForm,
) -> Result<Option<(HandshakeResponse, usize)>, HandshakeError> {
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
    let mut upgrade: Option<&[u8]> = None;
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
        } else if header.name.eq_ignore_ascii_case("upgrade") && upgrade.is_none() {
            upgrade = Some(header.value);
        }
    }
    match (status, form) {
        (101, HandshakeForm::Plain) => return Err(HandshakeError::UnexpectedSwitch),
        (101, HandshakeForm::Upgrade) => {
            let token = upgrade.map(<[u8]>::trim_ascii);
            if !token.is_some_and(|t| t.eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes())) {
                return Err(HandshakeError::WrongUpgrade(describe_token(token)));
            }
            // A 1xx response ends with its head (RFC 9112 §6.3): the next byte is HTTP/2.
            let response = HandshakeResponse {
                status,
                retry_after: None,
                body: String::new(),
            };
            return Ok(Some((response, head_len)));
        }
        (200, HandshakeForm::Upgrade) => return Err(HandshakeError::NotUpgraded),
        _ => {}
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

/// An `Upgrade` value for an error message: quoted, lossy, at most 64 bytes.
fn describe_token(token: Option<&[u8]>) -> String {
    match token {
        None => "nothing (no upgrade header)".to_owned(),
        Some(t) => format!("{:?}", String::from_utf8_lossy(&t[..t.len().min(64)])),
    }
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
    /// The form of the request; the acceptance ([`encode_accept`]) answers in the same form.
    pub form: HandshakeForm,
    /// [`INITIATION_TIME_HEADER`] in milliseconds since the Unix epoch, when sent in the form
    /// Envoy writes it (see [`parse_request`]); informational, never trusted for decisions.
    pub initiation_time_ms: Option<u64>,
    /// Every header of the request in order, names lowercased, values as sent (for auth).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl AcceptedHandshake {
    /// The initiation time as a [`SystemTime`], when one was sent.
    pub fn initiation_time(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_millis(self.initiation_time_ms?))
    }
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

    /// Every [`label`](Self::label), in declaration order: the rejection `outcome` values of
    /// `rtun_handshakes_total` (`crate::metrics`).
    pub const LABELS: [&'static str; 12] = [
        "not_tunnel_request",
        "malformed",
        "too_large",
        "tls_required",
        "timeout",
        "unauthenticated",
        "forbidden",
        "collision",
        "wrong_cluster_name",
        "node_limit",
        "tunnel_limit",
        "shutting_down",
    ];

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
/// - `400` a body (`content-length` other than 0, or any `transfer-encoding`), in both forms;
/// - `400` an `upgrade` header (the upgrade form) that is repeated, is not `reverse-tunnel`
///   (ASCII case ignored), or comes without the `upgrade` option in `connection`; on an
///   HTTP/1.0 request `upgrade` is ignored (RFC 9110 §7.8) and the handshake is plain;
/// - `400` node or cluster id missing, repeated, not UTF-8 or invalid ([`validate_id`]); tenant
///   id repeated or invalid (absent means empty); upstream cluster repeated or not UTF-8.
///
/// `connection: upgrade` without an `upgrade` header is a plain handshake.
/// [`INITIATION_TIME_HEADER`] never rejects: like Envoy's responder (which logs and treats it
/// as absent), a value that is not 1 to 19 ASCII digits (surrounding blanks aside) of a
/// positive number no larger than `i64::MAX` is ignored, and only the first one counts.
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
    let mut connection_upgrade = false;
    let mut upgrade: Option<&[u8]> = None;
    let mut initiation_time: Option<Option<u64>> = None;
    let mut all = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            "connection" => connection_upgrade |= has_token(header.value, "upgrade"),
            "upgrade" if upgrade.is_some() => {
                return Err(Rejection::bad_request("Repeated upgrade header"));
            }
            "upgrade" => upgrade = Some(header.value),
            INITIATION_TIME_HEADER if initiation_time.is_none() => {
                initiation_time = Some(parse_initiation_time(header.value));
            }
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

    // An HTTP/1.0 request's `upgrade` is ignored (RFC 9110 §7.8): a plain handshake.
    let form = match upgrade {
        Some(_) if request.version == Some(0) => HandshakeForm::Plain,
        None => HandshakeForm::Plain,
        Some(_) if !connection_upgrade => {
            return Err(Rejection::bad_request(
                "An upgrade header needs `connection: upgrade`",
            ));
        }
        Some(token)
            if token
                .trim_ascii()
                .eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes()) =>
        {
            HandshakeForm::Upgrade
        }
        Some(_) => {
            return Err(Rejection::bad_request(
                "A reverse tunnel upgrades only to `reverse-tunnel`",
            ));
        }
    };

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
        form,
        initiation_time_ms: initiation_time.flatten(),
        headers: all,
    };
    Ok(Some((accepted, head_len)))
}

/// Whether a comma-separated header value (`connection`) lists `token`, ASCII case ignored.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// [`INITIATION_TIME_HEADER`] as Envoy writes it: decimal milliseconds since the Unix epoch,
/// positive and within `i64` (Envoy parses it into an `int64_t`, 0 meaning absent).
fn parse_initiation_time(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (ms > 0 && i64::try_from(ms).is_ok()).then_some(ms)
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

/// The responder's acceptance of a handshake of `form`, after which HTTP/2 starts:
///
/// - plain: `HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n`;
/// - upgrade: `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n`
///   `upgrade: reverse-tunnel\r\n\r\n` (no `content-length`: a 1xx response has no body).
pub fn encode_accept(form: HandshakeForm) -> Vec<u8> {
    match form {
        HandshakeForm::Plain => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        HandshakeForm::Upgrade => format!(
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {UPGRADE_PROTOCOL}\r\n\r\n"
        )
        .into_bytes(),
    }
}

/// The responder's reply to a handshake.
///
/// `200` and `101` are the acceptances of [`encode_accept`] (HTTP/2 follows, so `body` and
/// `retry_after` are ignored). Any other status is a `text/plain` local reply with
/// `connection: close`, an optional `retry-after`, and `body` ending in a newline (one is
/// added when missing), the same in both forms. A status outside `100..=999` is written as
/// `500`.
pub fn encode_response(status: u16, body: &str, retry_after: Option<u64>) -> Vec<u8> {
    match status {
        200 => return encode_accept(HandshakeForm::Plain),
        101 => return encode_accept(HandshakeForm::Upgrade),
        _ => {}
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

    /// The initiator's parse of an answer to a plain handshake.
    fn plain(buf: &[u8]) -> Result<Option<(HandshakeResponse, usize)>, HandshakeError> {
        parse_response(buf, HandshakeForm::Plain)
    }

    /// The initiator's parse of an answer to an upgrade handshake.
    fn upgraded(buf: &[u8]) -> Result<Option<(HandshakeResponse, usize)>, HandshakeError> {
        parse_response(buf, HandshakeForm::Upgrade)
    }

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
            form: HandshakeForm::Plain,
            initiation_time: None,
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
            form: HandshakeForm::Plain,
            initiation_time: None,
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
        let (resp, consumed) = plain(&buf).unwrap().unwrap();
        assert_eq!(consumed, head.len());
        assert_eq!(resp.status, 200);
        assert_eq!(resp.retry_after, None);
        assert_eq!(resp.body, "");

        // No content-length at all.
        let mut buf = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        buf.extend_from_slice(b"RPING");
        assert_eq!(plain(&buf).unwrap().unwrap().1, 19);

        // A content-length body is consumed with the head, and only once fully present.
        let buf = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokPRI";
        let (resp, consumed) = plain(buf).unwrap().unwrap();
        assert_eq!((resp.body.as_str(), consumed), ("ok", buf.len() - 3));
        assert_eq!(plain(&buf[..buf.len() - 4]), Ok(None));
    }

    #[test]
    fn parse_response_retry_after() {
        let resp = |secs: &str| {
            let bytes = format!("HTTP/1.1 429 Too Many Requests\r\nRetry-After: {secs}\r\ncontent-length: 0\r\n\r\n");
            plain(bytes.as_bytes()).unwrap().unwrap().0
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
        let (r, n) = plain(&ours).unwrap().unwrap();
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
        let (r, n) = plain(&bytes).unwrap().unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "responder is draining\n");
        assert_eq!(n, bytes.len());
        // Incomplete body or head: need more.
        assert_eq!(plain(&bytes[..bytes.len() - 1]), Ok(None));
        assert_eq!(plain(&bytes[..10]), Ok(None));
        assert_eq!(plain(b""), Ok(None));
    }

    #[test]
    fn parse_response_errors() {
        assert!(matches!(
            plain(b"\x16\x03\x01\x00\x05hello"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            plain(b"PRI * HTTP/2.0\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
        assert_eq!(
            plain(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            Err(HandshakeError::InvalidContentLength)
        );
        assert_eq!(
            plain(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Err(HandshakeError::InvalidContentLength)
        );
        assert_eq!(
            plain(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(HandshakeError::TransferEncodingOn200)
        );
        assert_eq!(
            plain(b"HTTP/1.1 503 x\r\ncontent-length: 99999\r\n\r\n"),
            Err(HandshakeError::TooLarge)
        );
        assert_eq!(
            plain(b"HTTP/1.1 503 x\r\ncontent-length: 18446744073709551615\r\n\r\n"),
            Err(HandshakeError::InvalidContentLength)
        );
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.resize(MAX_HANDSHAKE_BYTES + 1, b'a');
        assert_eq!(plain(&big), Err(HandshakeError::TooLarge));
    }

    /// 2025-06-15T15:06:40.123Z: a fixed initiation time.
    const INITIATED_MS: u64 = 1_750_000_000_123;

    fn initiated() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(INITIATED_MS)
    }

    fn upgrade_request() -> Vec<u8> {
        let identity = identity();
        let extra = [("authorization".to_string(), "Bearer t0k3n".to_string())];
        HandshakeRequest {
            host: "responder.example.com:9000",
            path: DEFAULT_REQUEST_PATH,
            identity: &identity,
            upstream_cluster: "cloud",
            form: HandshakeForm::Upgrade,
            initiation_time: Some(initiated()),
            extra_headers: &extra,
        }
        .encode()
    }

    #[test]
    fn encode_upgrade_request_exact_bytes() {
        let expected: &[u8] = b"GET /reverse_connections/request HTTP/1.1\r\n\
Host: responder.example.com:9000\r\n\
connection: upgrade\r\n\
upgrade: reverse-tunnel\r\n\
x-envoy-reverse-tunnel-node-id: edge-42\r\n\
x-envoy-reverse-tunnel-cluster-id: edge-west\r\n\
x-envoy-reverse-tunnel-tenant-id: acme\r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: cloud\r\n\
x-envoy-reverse-tunnel-initiation-time: 1750000000123\r\n\
authorization: Bearer t0k3n\r\n\
content-length: 0\r\n\
\r\n";
        assert_eq!(upgrade_request(), expected);
    }

    #[test]
    fn encode_plain_request_with_initiation_time_exact_bytes() {
        let identity = TunnelIdentity {
            node_id: "n".into(),
            cluster_id: "c".into(),
            tenant_id: "t".into(),
        };
        let request = |initiation_time| {
            HandshakeRequest {
                host: "h:1",
                path: "/p",
                identity: &identity,
                upstream_cluster: "u",
                form: HandshakeForm::Plain,
                initiation_time,
                extra_headers: &[],
            }
            .encode()
        };
        let bytes = request(Some(initiated()));
        assert_eq!(
            bytes,
            b"GET /p HTTP/1.1\r\nHost: h:1\r\nx-envoy-reverse-tunnel-node-id: n\r\n\
x-envoy-reverse-tunnel-cluster-id: c\r\nx-envoy-reverse-tunnel-tenant-id: t\r\n\
x-envoy-reverse-tunnel-upstream-cluster-name: u\r\n\
x-envoy-reverse-tunnel-initiation-time: 1750000000123\r\ncontent-length: 0\r\n\r\n"
        );
        let (accepted, consumed) = parse_request(&bytes, "/p").unwrap().unwrap();
        assert_eq!(consumed, bytes.len());
        assert_eq!(accepted.form, HandshakeForm::Plain);
        assert_eq!(accepted.initiation_time_ms, Some(INITIATED_MS));
        assert_eq!(accepted.initiation_time(), Some(initiated()));
        // A clock before the epoch sends no header at all; neither does `None`.
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(request(Some(before_epoch)), request(None));
        assert!(!String::from_utf8_lossy(&request(None)).contains(INITIATION_TIME_HEADER));
    }

    #[test]
    fn upgrade_request_roundtrip() {
        let bytes = upgrade_request();
        let mut with_h2 = bytes.clone();
        with_h2.extend_from_slice(PREFACE);
        let (accepted, consumed) = accept(&with_h2);
        assert_eq!(consumed, bytes.len());
        assert_eq!(accepted.form, HandshakeForm::Upgrade);
        assert_eq!(accepted.identity, identity());
        assert_eq!(accepted.upstream_cluster.as_deref(), Some("cloud"));
        assert_eq!(accepted.initiation_time_ms, Some(INITIATED_MS));
        assert!(accepted
            .headers
            .contains(&("upgrade".to_string(), b"reverse-tunnel".to_vec())));
        // The plain request of the same initiator stays plain, without an initiation time.
        let (plain, _) = accept(&valid_request());
        assert_eq!(plain.form, HandshakeForm::Plain);
        assert_eq!(plain.initiation_time_ms, None);
        assert_eq!(plain.initiation_time(), None);
    }

    #[test]
    fn encode_accept_exact_bytes() {
        assert_eq!(
            encode_accept(HandshakeForm::Upgrade),
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n"
        );
        assert_eq!(
            encode_accept(HandshakeForm::Plain),
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            encode_response(101, "ignored", Some(1)),
            encode_accept(HandshakeForm::Upgrade)
        );
        assert_eq!(
            encode_response(200, "", None),
            encode_accept(HandshakeForm::Plain)
        );
        assert_eq!(HandshakeForm::Upgrade.accept_status(), 101);
        assert_eq!(HandshakeForm::Plain.accept_status(), 200);
        assert_eq!(HandshakeForm::default(), HandshakeForm::Plain);
    }

    #[test]
    fn parse_101_stops_before_h2() {
        let head = encode_accept(HandshakeForm::Upgrade);
        let mut buf = head.clone();
        buf.extend_from_slice(b"RPING");
        buf.extend_from_slice(PREFACE);
        let (resp, consumed) = upgraded(&buf).unwrap().unwrap();
        assert_eq!(consumed, head.len());
        assert!(resp.accepted());
        assert_eq!(
            resp,
            HandshakeResponse {
                status: 101,
                retry_after: None,
                body: String::new()
            }
        );
        for cut in 0..head.len() {
            assert_eq!(upgraded(&head[..cut]), Ok(None), "cut {cut}");
        }
        // Names and the token in any case, blanks around the token; a 101 never has a body,
        // whatever it says.
        let other = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade:  Reverse-Tunnel \r\n\
Connection: Upgrade\r\ncontent-length: 5\r\n\r\nPRI";
        let (resp, consumed) = upgraded(other).unwrap().unwrap();
        assert_eq!((resp.status, consumed), (101, other.len() - 3));
    }

    #[test]
    fn acceptance_must_match_the_form() {
        let switch = encode_accept(HandshakeForm::Upgrade);
        let ok = encode_accept(HandshakeForm::Plain);
        // A 101 without having asked for it.
        assert_eq!(plain(&switch), Err(HandshakeError::UnexpectedSwitch));
        // A 200 to an upgrade: something ignored `upgrade`, HTTP/2 would not be spliced.
        assert_eq!(upgraded(&ok), Err(HandshakeError::NotUpgraded));
        // A 101 to another protocol, or to none.
        let websocket =
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
        assert_eq!(
            upgraded(websocket),
            Err(HandshakeError::WrongUpgrade("\"websocket\"".into()))
        );
        let listed = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: reverse-tunnel, h2c\r\n\r\n";
        assert!(matches!(
            upgraded(listed),
            Err(HandshakeError::WrongUpgrade(_))
        ));
        let bare = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n";
        let err = upgraded(bare).unwrap_err();
        assert_eq!(
            err.to_string(),
            "handshake response 101 upgrades to nothing (no upgrade header), not `reverse-tunnel`"
        );
        let long = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: {}\r\n\r\n",
            "x".repeat(1000)
        );
        let Err(HandshakeError::WrongUpgrade(token)) = upgraded(long.as_bytes()) else {
            panic!("expected WrongUpgrade");
        };
        assert!(token.len() < 80, "{token}");

        // Rejections are the same ordinary replies in both forms.
        let refused = encode_response(429, "too many tunnels", Some(5));
        for form in [HandshakeForm::Plain, HandshakeForm::Upgrade] {
            let (resp, n) = parse_response(&refused, form).unwrap().unwrap();
            assert!(!resp.accepted());
            assert_eq!(
                (resp.status, resp.retry_after, n),
                (429, Some(Duration::from_secs(5)), refused.len())
            );
        }
        let not_found = reject(&request(
            "GET /elsewhere HTTP/1.1",
            &[
                NODE,
                CLUSTER,
                "connection: upgrade",
                "upgrade: reverse-tunnel",
            ],
        ));
        assert_eq!(not_found.status(), 404);
        let (resp, _) = upgraded(&not_found.encode()).unwrap().unwrap();
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (404, "Not a reverse tunnel request\n")
        );
    }

    #[test]
    fn upgrade_request_variants() {
        let form = |headers: &[&str]| {
            let mut all = vec![NODE, CLUSTER];
            all.extend_from_slice(headers);
            accept(&request(GET, &all)).0.form
        };
        let upgrade = HandshakeForm::Upgrade;
        assert_eq!(
            form(&["Connection: Upgrade", "Upgrade: reverse-tunnel"]),
            upgrade
        );
        assert_eq!(
            form(&["connection: keep-alive, UPGRADE", "upgrade: Reverse-Tunnel"]),
            upgrade
        );
        assert_eq!(
            form(&[
                "connection: keep-alive",
                "upgrade: reverse-tunnel",
                "connection: upgrade"
            ]),
            upgrade
        );
        // `connection: upgrade` alone asks for nothing.
        assert_eq!(form(&["connection: upgrade"]), HandshakeForm::Plain);
        // HTTP/1.0 ignores `upgrade` (RFC 9110 §7.8).
        let http10 = request(
            "GET /reverse_connections/request HTTP/1.0",
            &[
                NODE,
                CLUSTER,
                "connection: upgrade",
                "upgrade: reverse-tunnel",
            ],
        );
        assert_eq!(accept(&http10).0.form, HandshakeForm::Plain);

        for (what, headers) in [
            ("no connection option", vec!["upgrade: reverse-tunnel"]),
            (
                "connection names another option",
                vec!["connection: keep-alive", "upgrade: reverse-tunnel"],
            ),
            (
                "another protocol",
                vec!["connection: upgrade", "upgrade: websocket"],
            ),
            (
                "a list of protocols",
                vec!["connection: upgrade", "upgrade: reverse-tunnel, h2c"],
            ),
            (
                "a versioned token",
                vec!["connection: upgrade", "upgrade: reverse-tunnel/1"],
            ),
            (
                "repeated upgrade",
                vec![
                    "connection: upgrade",
                    "upgrade: reverse-tunnel",
                    "upgrade: reverse-tunnel",
                ],
            ),
            ("empty upgrade", vec!["connection: upgrade", "upgrade:"]),
        ] {
            let mut all = vec![NODE, CLUSTER];
            all.extend_from_slice(&headers);
            let r = reject(&request(GET, &all));
            assert_eq!((r.status(), r.label()), (400, "malformed"), "{what}: {r}");
        }
    }

    #[test]
    fn upgrade_request_with_body_is_400() {
        let upgrade = ["connection: upgrade", "upgrade: reverse-tunnel"];
        for extra in [
            "content-length: 5",
            "transfer-encoding: chunked",
            "content-length: 0, 0",
        ] {
            let mut headers = vec![NODE, CLUSTER];
            headers.extend_from_slice(&upgrade);
            headers.push(extra);
            let r = reject(&request(GET, &headers));
            assert_eq!(r.status(), 400, "{extra}");
            assert_eq!(r.reason(), "A handshake request must not have a body");
        }
        let mut headers = vec![NODE, CLUSTER, "content-length: 0"];
        headers.extend_from_slice(&upgrade);
        assert_eq!(
            accept(&request(GET, &headers)).0.form,
            HandshakeForm::Upgrade
        );
    }

    #[test]
    fn initiation_time_is_read_as_envoy_writes_it_and_never_rejects() {
        let time = |values: &[&str]| {
            let lines: Vec<String> = values
                .iter()
                .map(|v| format!("{INITIATION_TIME_HEADER}: {v}"))
                .collect();
            let mut headers = vec![NODE, CLUSTER];
            headers.extend(lines.iter().map(String::as_str));
            accept(&request(GET, &headers)).0.initiation_time_ms
        };
        assert_eq!(time(&["1750000000123"]), Some(INITIATED_MS));
        assert_eq!(time(&["1"]), Some(1));
        assert_eq!(time(&["0001750000000123"]), Some(INITIATED_MS));
        assert_eq!(time(&["9223372036854775807"]), Some(i64::MAX as u64));
        assert_eq!(time(&["1750000000123 "]), Some(INITIATED_MS));
        // Malformed: ignored, the handshake goes on (Envoy logs it and treats it as absent).
        for bad in [
            "",
            "0",
            "-5",
            "+5",
            "1.5",
            "12 34",
            "0x10",
            "1750000000123ms",
            "9223372036854775808",
            "99999999999999999999",
            "Sun, 15 Jun 2025 15:06:40 GMT",
        ] {
            assert_eq!(time(&[bad]), None, "{bad:?}");
        }
        // Only the first one counts, as in Envoy.
        assert_eq!(time(&["5", "7"]), Some(5));
        assert_eq!(time(&["x", "7"]), None);
        // Bytes that are not UTF-8 at all.
        let mut raw = request(
            GET,
            &[
                NODE,
                CLUSTER,
                "x-envoy-reverse-tunnel-initiation-time: 1\u{e9}",
            ],
        );
        assert_eq!(accept(&raw).0.initiation_time_ms, None);
        let pos = raw.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
        raw[pos] = 0xff;
        assert_eq!(accept(&raw).0.initiation_time_ms, None);
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
            let _ = plain(&response[..cut]);
            let _ = upgraded(&response[..cut]);
        }
        let upgrade = upgrade_request();
        for cut in 0..upgrade.len() {
            assert_eq!(
                parse_request(&upgrade[..cut], DEFAULT_REQUEST_PATH),
                Ok(None)
            );
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
                // A valid request (plain or upgrade) with a few bytes flipped.
                _ => {
                    let mut v = if round % 2 == 0 {
                        valid.clone()
                    } else {
                        upgrade.clone()
                    };
                    for _ in 0..1 + rng.next() % 4 {
                        let i = (rng.next() as usize) % v.len();
                        v[i] = rng.next() as u8;
                    }
                    v
                }
            };
            let _ = parse_request(&input, DEFAULT_REQUEST_PATH);
            let _ = plain(&input);
            let _ = upgraded(&input);
            for head in [
                &b"HTTP/1.1 200 OK\r\n"[..],
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: reverse-tunnel\r\n",
            ] {
                let mut status_line = head.to_vec();
                status_line.extend_from_slice(&input);
                let _ = plain(&status_line);
                let _ = upgraded(&status_line);
            }
        }
    }
}
