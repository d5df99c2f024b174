//! HTTP/1.1 message heads on the local hop: request heads written, response heads parsed, and
//! the response body's framing decided (RFC 9112 §6.3).
//!
//! This module owns the one decision that request smuggling and response splitting attack:
//! where a message body ends. Whatever is ambiguous is refused, not guessed: a response with
//! both `content-length` and `transfer-encoding`, a transfer coding other than a lone
//! `chunked`, disagreeing or malformed lengths, bare LF line ends, obs-fold, a space before a
//! colon. Parsing is httparse's (in its strict configuration) plus these checks on top; the
//! connection (`client`) does the I/O.
//!
//! Requests are written by us, so their framing is ours too: the framing and connection fields
//! a caller left in the header map are dropped and the framing header is written from
//! [`Framing`] alone.

use std::io::Write as _;
use std::mem::MaybeUninit;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Most bytes a response head may take (status line, headers, final CRLF), interim 1xx heads
/// counted separately.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one response head.
pub const MAX_HEADERS: usize = 128;

/// Longest offending value quoted in an error message.
const SHOWN: usize = 64;

/// How a message body is delimited on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (`content-length`); `Length(0)` is a body of zero bytes.
    Length(u64),
    /// The chunked transfer coding (see `chunked`).
    Chunked,
    /// Everything until the connection closes (a response with neither length nor coding).
    UntilClose,
}

/// Whether a request field is left out of the head: the framing is written from [`Framing`],
/// and the hop-by-hop fields describe the previous hop's connection, not this one
/// (`proxy_headers::is_hop_by_hop`, RFC 9110 §7.6.1; `te: trailers`, which the previous hop
/// keeps for h2, stops here).
fn not_copied(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH || crate::http::proxy_headers::is_hop_by_hop(name)
}

/// Writes a request head: `METHOD SP request-target SP HTTP/1.1 CRLF`, every header of
/// `head.headers` but `content-length` and the hop-by-hop fields ([`not_copied`]: the caller
/// stripped most of them already; the framing is ours to write), then the framing header for
/// `body`, then CRLF.
///
/// - The version is always HTTP/1.1, whatever `head.version` says.
/// - request-target: `head.uri.path_and_query()` as is (origin-form; `*` stays `*`, the
///   asterisk-form of `OPTIONS *`), `/` when the URI has none (an authority-form URI), and a
///   `/` put before a bare query (`http://a?x` has the path-and-query `?x`).
/// - Framing: `Empty` → no framing header, except `content-length: 0` for POST, PUT and PATCH
///   (RFC 9110 §8.6: a user agent should send it when such a request has no body, and some
///   services answer 411 without it); `Length(n)` → `content-length: n`; `Chunked` →
///   `transfer-encoding: chunked`. `UntilClose` is not a request framing (a request cannot be
///   delimited by closing the connection: the response must come back on it): it is written
///   like `Chunked`, and the body must then be sent chunked.
/// - Header names are written lowercase as `http::HeaderName` stores them; repeated fields are
///   written as separate lines, in order. No `host` is added: the caller's map must hold one.
/// - A value holding CR, LF or NUL (which only `HeaderValue`'s unchecked constructors can
///   build) is not written: it would split the head.
pub fn encode_request_head(head: &http::request::Parts, body: Framing, dst: &mut Vec<u8>) {
    dst.extend_from_slice(head.method.as_str().as_bytes());
    dst.push(b' ');
    match head.uri.path_and_query().map(|pq| pq.as_str()) {
        None | Some("") => dst.push(b'/'),
        Some(pq) => {
            if pq.starts_with('?') {
                dst.push(b'/');
            }
            dst.extend_from_slice(pq.as_bytes());
        }
    }
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        if not_copied(name) {
            continue;
        }
        write_field(name, value, dst);
    }
    match body {
        Framing::Empty => {
            if [Method::POST, Method::PUT, Method::PATCH].contains(&head.method) {
                dst.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Framing::Length(n) => {
            // Written in place: no allocation per request.
            let _ = write!(dst, "content-length: {n}\r\n");
        }
        Framing::Chunked | Framing::UntilClose => {
            dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
    }
    dst.extend_from_slice(b"\r\n");
}

/// Writes `name: value CRLF`, unless the value could split the message (CR, LF, NUL).
pub(crate) fn write_field(name: &HeaderName, value: &HeaderValue, dst: &mut Vec<u8>) {
    if value
        .as_bytes()
        .iter()
        .any(|&b| matches!(b, b'\r' | b'\n' | 0))
    {
        return;
    }
    dst.extend_from_slice(name.as_str().as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version (`HTTP_10` or `HTTP_11`) and every header field as received, including
    /// `content-length`, `transfer-encoding` and `connection`.
    pub parts: http::response::Parts,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response's body: not after
    /// a body delimited by the close, not after `connection: close`, and after an HTTP/1.0
    /// response only with `connection: keep-alive`.
    pub keep_alive: bool,
}

/// What [`parse_response_head`] found.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed (buf is shorter than a complete head and still within MAX_HEAD).
    Partial,
    /// An interim 1xx response (100, 102, 103, or any 1xx but 101) of `len` bytes: the caller
    /// drops those bytes and parses again.
    Interim { len: usize },
    /// A final response head of `len` bytes; the body starts at `buf[len..]`.
    Head { head: ResponseHead, len: usize },
}

/// Why a response head was refused. Display messages are for logs; [`HeadError::label`] is
/// for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("response head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
    #[error("unsupported HTTP version {0:?}")]
    UnsupportedVersion(String),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    SwitchingProtocols,
    #[error("both content-length and transfer-encoding")]
    ContentLengthAndTransferEncoding,
    #[error("unsupported transfer-encoding {0:?}")]
    UnsupportedTransferEncoding(String),
    #[error("bad content-length {0:?}")]
    BadContentLength(String),
}

impl HeadError {
    /// A short snake_case reason, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "head_too_large",
            HeadError::TooManyHeaders => "too_many_headers",
            HeadError::Malformed(_) => "malformed_head",
            HeadError::UnsupportedVersion(_) => "unsupported_version",
            HeadError::SwitchingProtocols => "switching_protocols",
            HeadError::ContentLengthAndTransferEncoding => "content_length_and_transfer_encoding",
            HeadError::UnsupportedTransferEncoding(_) => "unsupported_transfer_encoding",
            HeadError::BadContentLength(_) => "bad_content_length",
        }
    }
}

/// `bytes` for an error message: lossy UTF-8, at most [`SHOWN`] bytes of it.
fn shown(bytes: &[u8]) -> String {
    match bytes.get(..SHOWN) {
        Some(cut) if cut.len() < bytes.len() => format!("{}…", String::from_utf8_lossy(cut)),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// httparse in its strict configuration, spelled out rather than left to its defaults: no
/// obs-fold (RFC 9112 §5.2: a proxy must refuse or replace it; we refuse), no space between a
/// field name and its colon (§5.1: a response with one must be refused or the space removed:
/// refusing is the choice that cannot desynchronise), no whitespace before the first field
/// (§2.2), single spaces in the status line, no invalid field silently skipped.
fn parser_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_obsolete_multiline_headers_in_responses(false)
        .allow_spaces_after_header_name_in_responses(false)
        .allow_space_before_first_header_name(false)
        .allow_multiple_spaces_in_response_status_delimiters(false)
        .ignore_invalid_headers_in_responses(false);
    config
}

/// Parses a response head at the start of `buf`, for a request with method `method`.
///
/// Only the first [`MAX_HEAD`] bytes of `buf` are looked at: what lies beyond cannot change
/// the result. Refused besides httparse's own errors: an empty line before the status line (a
/// stray CRLF after the previous body means its length was wrong), any LF not preceded by CR
/// (RFC 9112 §2.2 lets a recipient accept a bare LF; we do not, so that no two readings of a
/// line end exist), a status below 100, and `101`.
pub fn parse_response_head(buf: &[u8], method: &Method) -> Result<Parsed, HeadError> {
    let window = buf.get(..MAX_HEAD).unwrap_or(buf);
    // httparse skips empty lines before the status line; we refuse them.
    if matches!(window.first(), Some(b'\r' | b'\n')) {
        return Err(HeadError::Malformed("empty line before the status line"));
    }
    // Uninitialised: filling 128 empty fields first would cost more than parsing a head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        parser_config().parse_response_with_uninit_headers(&mut response, window, &mut fields);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(from_httparse(e, window)),
    };
    let head_bytes = window.get(..len).unwrap_or(window);
    if has_bare_lf(head_bytes) {
        return Err(HeadError::Malformed("bare LF line end"));
    }

    let version = match response.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        // httparse reads only "HTTP/1.0" and "HTTP/1.1"; anything else is its `Version` error.
        _ => return Err(HeadError::UnsupportedVersion(shown(version_bytes(window)))),
    };
    let code = response.code.unwrap_or(0);
    if code == 101 {
        return Err(HeadError::SwitchingProtocols);
    }
    // httparse reads exactly three digits, so only 000..=099 is out of range here.
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Malformed("status code below 100"))?;
    if status.is_informational() {
        return Ok(Parsed::Interim { len });
    }

    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid field name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| HeadError::Malformed("invalid field value"))?;
        headers.append(name, value);
    }

    let framing = framing(method, status, version, &headers)?;
    let keep_alive = keep_alive(version, framing, &headers);
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Parsed::Head {
        head: ResponseHead {
            parts,
            framing,
            keep_alive,
        },
        len,
    })
}

/// Maps httparse's error to ours. Its `Version` error covers both another version
/// (`HTTP/2.0 200`) and no HTTP at all (an HTML page, a TLS alert): only the first is
/// `UnsupportedVersion`.
fn from_httparse(e: httparse::Error, window: &[u8]) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => {
            let v = version_bytes(window);
            let looks_like_version = v.len() > 5
                && v.starts_with(b"HTTP/")
                && v.iter().skip(5).all(|b| b.is_ascii_digit() || *b == b'.');
            if looks_like_version && v != b"HTTP/1.0" && v != b"HTTP/1.1" {
                HeadError::UnsupportedVersion(shown(v))
            } else {
                HeadError::Malformed("bad status line")
            }
        }
        httparse::Error::Status => HeadError::Malformed("bad status line"),
        httparse::Error::HeaderName | httparse::Error::Token => {
            HeadError::Malformed("invalid field name")
        }
        httparse::Error::HeaderValue => HeadError::Malformed("invalid field value"),
        httparse::Error::NewLine => HeadError::Malformed("bad line end"),
    }
}

/// The status line's first word (what should be the HTTP version).
fn version_bytes(window: &[u8]) -> &[u8] {
    let end = window
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(window.len());
    window.get(..end).unwrap_or(window)
}

/// Whether some LF in `bytes` is not preceded by a CR.
fn has_bare_lf(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|i| i == 0 || bytes.get(i - 1) != Some(&b'\r'))
}

/// The body's framing (RFC 9112 §6.3), for a final (non-1xx) response.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, HeadError> {
    // §6.3 ¶1: no body, whatever the fields say (a HEAD response's content-length is the GET
    // one's; 1xx cannot reach here but is listed for completeness).
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    // (A 2xx to CONNECT would be a tunnel (¶2): the local hop never sends CONNECT.)
    let codings = headers.get_all(header::TRANSFER_ENCODING);
    if codings.iter().next().is_some() {
        // ¶3: both "ought to be handled as an error"; a proxy must not pick one.
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(HeadError::ContentLengthAndTransferEncoding);
        }
        // §6.1: a transfer-encoding in an HTTP/1.0 message is faulty framing.
        let only_chunked = version == Version::HTTP_11 && is_lone_chunked(codings.iter());
        if !only_chunked {
            let all: Vec<&[u8]> = codings.iter().map(|v| v.as_bytes()).collect();
            return Err(HeadError::UnsupportedTransferEncoding(shown(
                &all.join(&b", "[..]),
            )));
        }
        return Ok(Framing::Chunked);
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter().peekable();
    if lengths.peek().is_some() {
        return content_length(lengths).map(Framing::Length);
    }
    Ok(Framing::UntilClose)
}

/// Whether the transfer codings listed over all these fields are exactly one `chunked`
/// (case-insensitive, surrounding whitespace aside). Anything else is refused, as nginx does
/// for its upstreams: a coding we cannot undo (`gzip`), `chunked` twice or not last, a
/// parameter (`chunked;x`), and empty list elements too (RFC 9110 §5.6.1 has recipients ignore
/// them; refusing is stricter and costs nothing from a sane service).
fn is_lone_chunked<'a>(fields: impl Iterator<Item = &'a HeaderValue>) -> bool {
    let mut count = 0usize;
    for field in fields {
        for coding in field.as_bytes().split(|&b| b == b',') {
            count += 1;
            if count > 1 || !trim_ows(coding).eq_ignore_ascii_case(b"chunked") {
                return false;
            }
        }
    }
    count == 1
}

/// The one length that every `content-length` field and every comma-separated element of
/// each states (RFC 9112 §6.3 ¶5: a list of identical values may be taken as that value).
/// Each element is one or more ASCII digits, nothing else; disagreeing values, an empty
/// element and a value past `u64` are errors.
fn content_length<'a>(fields: impl Iterator<Item = &'a HeaderValue>) -> Result<u64, HeadError> {
    let mut length = None;
    for field in fields {
        let bad = || HeadError::BadContentLength(shown(field.as_bytes()));
        for element in field.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(element)).ok_or_else(bad)?;
            match length {
                Some(m) if m != n => return Err(bad()),
                _ => length = Some(n),
            }
        }
    }
    length.ok_or_else(|| HeadError::BadContentLength(String::new()))
}

/// One or more ASCII digits as a `u64`, `None` on anything else or on overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// `bytes` without leading and trailing optional whitespace (SP, HTAB).
pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Whether `headers` has a `connection` option `token` (comma list, case-insensitive).
fn has_connection_option(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|field| {
        field
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Whether the connection stays usable after this response (RFC 9112 §9.3).
fn keep_alive(version: Version, framing: Framing, headers: &HeaderMap) -> bool {
    if framing == Framing::UntilClose || has_connection_option(headers, "close") {
        return false;
    }
    if version == Version::HTTP_10 {
        return has_connection_option(headers, "keep-alive");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::h1::testing::Rng;

    fn parse(buf: &[u8]) -> Result<Parsed, HeadError> {
        parse_response_head(buf, &Method::GET)
    }

    /// The head of a final response, or a panic naming what came instead.
    fn head(buf: &[u8]) -> (ResponseHead, usize) {
        head_for(buf, &Method::GET)
    }

    fn head_for(buf: &[u8], method: &Method) -> (ResponseHead, usize) {
        match parse_response_head(buf, method) {
            Ok(Parsed::Head { head, len }) => (head, len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// The label of the error a head is refused with.
    fn refused(buf: &[u8]) -> &'static str {
        match parse(buf) {
            Err(e) => e.label(),
            other => panic!("{:?} accepted: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn framing_of(buf: &[u8]) -> Framing {
        head(buf).0.framing
    }

    fn with_fields(fields: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes()
    }

    fn request(method: Method, uri: &str, fields: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in fields {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn encoded(parts: &http::request::Parts, body: Framing) -> String {
        let mut dst = Vec::new();
        encode_request_head(parts, body, &mut dst);
        String::from_utf8(dst).unwrap()
    }

    // ---- encode_request_head ----

    #[test]
    fn encodes_request_line_and_fields_in_order() {
        let parts = request(
            Method::GET,
            "http://svc.local/a/b?c=d",
            &[
                ("host", "svc.local"),
                ("x-a", "1"),
                ("X-B", "2"),
                ("x-a", "3"),
            ],
        );
        assert_eq!(
            encoded(&parts, Framing::Empty),
            "GET /a/b?c=d HTTP/1.1\r\nhost: svc.local\r\nx-a: 1\r\nx-a: 3\r\nx-b: 2\r\n\r\n"
        );
    }

    #[test]
    fn encodes_http11_whatever_the_parts_version() {
        let mut parts = request(Method::GET, "/", &[]);
        parts.version = http::Version::HTTP_2;
        assert_eq!(encoded(&parts, Framing::Empty), "GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn encodes_request_targets() {
        let cases = [
            (Method::GET, "/", "/"),
            (Method::GET, "http://a", "/"),
            (Method::GET, "http://a?x=1", "/?x=1"),
            (Method::GET, "/p%20q?r", "/p%20q?r"),
            (Method::OPTIONS, "*", "*"),
            (Method::CONNECT, "a.example:443", "/"),
        ];
        for (method, uri, target) in cases {
            let parts = request(method.clone(), uri, &[]);
            let want = format!("{method} {target} HTTP/1.1\r\n");
            assert!(encoded(&parts, Framing::Empty).starts_with(&want), "{uri}");
        }
    }

    #[test]
    fn drops_framing_and_connection_fields() {
        let parts = request(
            Method::POST,
            "/",
            &[
                ("content-length", "99"),
                ("transfer-encoding", "gzip, chunked"),
                ("connection", "keep-alive, x-a"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("upgrade", "websocket"),
                ("proxy-connection", "keep-alive"),
                ("x-kept", "yes"),
            ],
        );
        assert_eq!(
            encoded(&parts, Framing::Length(5)),
            "POST / HTTP/1.1\r\nx-kept: yes\r\ncontent-length: 5\r\n\r\n"
        );
    }

    #[test]
    fn encodes_framing_headers() {
        for (method, body, framing) in [
            (Method::GET, Framing::Empty, ""),
            (Method::HEAD, Framing::Empty, ""),
            (Method::DELETE, Framing::Empty, ""),
            (Method::POST, Framing::Empty, "content-length: 0\r\n"),
            (Method::PUT, Framing::Empty, "content-length: 0\r\n"),
            (Method::PATCH, Framing::Empty, "content-length: 0\r\n"),
            (Method::POST, Framing::Length(0), "content-length: 0\r\n"),
            (Method::GET, Framing::Length(7), "content-length: 7\r\n"),
            (
                Method::PUT,
                Framing::Length(u64::MAX),
                "content-length: 18446744073709551615\r\n",
            ),
            (
                Method::POST,
                Framing::Chunked,
                "transfer-encoding: chunked\r\n",
            ),
            // Not a request framing: sent chunked.
            (
                Method::POST,
                Framing::UntilClose,
                "transfer-encoding: chunked\r\n",
            ),
        ] {
            let parts = request(method.clone(), "/", &[]);
            let want = format!("{method} / HTTP/1.1\r\n{framing}\r\n");
            assert_eq!(encoded(&parts, body), want, "{method} {body:?}");
        }
    }

    #[test]
    fn encoded_head_parses_back_with_httparse() {
        let parts = request(
            Method::PUT,
            "http://h/x?y",
            &[("host", "h"), ("x-list", "a, b"), ("x-empty", "")],
        );
        let bytes = {
            let mut dst = Vec::new();
            encode_request_head(&parts, Framing::Chunked, &mut dst);
            dst
        };
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut fields);
        assert_eq!(
            req.parse(&bytes).unwrap(),
            httparse::Status::Complete(bytes.len())
        );
        assert_eq!(
            (req.method, req.path, req.version),
            (Some("PUT"), Some("/x?y"), Some(1))
        );
        let got: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
        assert_eq!(
            got,
            [
                ("host", &b"h"[..]),
                ("x-list", b"a, b"),
                ("x-empty", b""),
                ("transfer-encoding", b"chunked"),
            ]
        );
    }

    // ---- parse_response_head: the head itself ----

    #[test]
    fn parses_a_simple_head() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello";
        let (head, len) = head(buf);
        assert_eq!(len, buf.len() - 5);
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.parts.headers["content-length"], "5");
        let xa: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
    }

    #[test]
    fn keeps_framing_fields_as_received() {
        let (head, _) =
            head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x\r\n\r\n");
        assert_eq!(head.parts.headers["transfer-encoding"], "chunked");
        assert_eq!(head.parts.headers["connection"], "x");
    }

    #[test]
    fn every_strict_prefix_is_partial() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: y\r\n\r\n";
        for end in 0..buf.len() {
            assert!(
                matches!(parse(&buf[..end]), Ok(Parsed::Partial)),
                "{:?}",
                String::from_utf8_lossy(&buf[..end])
            );
        }
        assert_eq!(head(buf).1, buf.len());
    }

    #[test]
    fn missing_reason_phrase_is_fine() {
        assert_eq!(
            head(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
                .0
                .parts
                .status,
            200
        );
        assert_eq!(
            head(b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n")
                .0
                .parts
                .status,
            404
        );
    }

    #[test]
    fn head_size_limit() {
        // A head of exactly MAX_HEAD bytes is accepted, one more byte is not.
        let fixed = "HTTP/1.1 200 OK\r\nx: \r\n\r\n".len();
        let exact = with_fields(&format!("x: {}\r\n", "a".repeat(MAX_HEAD - fixed)));
        assert_eq!(exact.len(), MAX_HEAD);
        assert_eq!(head(&exact).1, MAX_HEAD);
        let over = with_fields(&format!("x: {}\r\n", "a".repeat(MAX_HEAD - fixed + 1)));
        assert_eq!(refused(&over), "head_too_large");
        // Partial at MAX_HEAD bytes: too large, without waiting for more.
        assert_eq!(refused(&over[..MAX_HEAD]), "head_too_large");
        assert!(matches!(parse(&over[..MAX_HEAD - 1]), Ok(Parsed::Partial)));
        // Bytes past MAX_HEAD change nothing: a body after an exact head, or garbage.
        let mut longer = exact.clone();
        longer.extend_from_slice(b"\n\0garbage");
        assert_eq!(head(&longer).1, MAX_HEAD);
    }

    #[test]
    fn interim_heads_are_counted_separately() {
        let fixed = "HTTP/1.1 100 Continue\r\nx: \r\n\r\n".len();
        let big = "a".repeat(MAX_HEAD - fixed);
        let interim = format!("HTTP/1.1 100 Continue\r\nx: {big}\r\n\r\n");
        let mut buf = interim.clone().into_bytes();
        buf.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        match parse(&buf) {
            Ok(Parsed::Interim { len }) => assert_eq!(len, interim.len()),
            other => panic!("{other:?}"),
        }
        assert_eq!(head(&buf[interim.len()..]).0.parts.status, 204);
    }

    #[test]
    fn header_count_limit() {
        let fields = |n: usize| (0..n).map(|i| format!("x-{i}: v\r\n")).collect::<String>();
        let ok = with_fields(&format!("{}content-length: 0\r\n", fields(MAX_HEADERS - 1)));
        assert_eq!(head(&ok).0.parts.headers.len(), MAX_HEADERS);
        let over = with_fields(&format!("{}content-length: 0\r\n", fields(MAX_HEADERS)));
        assert_eq!(refused(&over), "too_many_headers");
    }

    #[test]
    fn refuses_malformed_heads() {
        let cases: &[&[u8]] = &[
            // obs-fold
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n",
            // whitespace between name and colon
            b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding\t: chunked\r\n\r\n",
            // whitespace before the first field
            b"HTTP/1.1 200 OK\r\n Content-Length: 5\r\n\r\nhello",
            // bare LF, anywhere
            b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n",
            b"HTTP/1.1 200 OK\n\n",
            // bare CR
            b"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\r\n\r\n",
            // empty lines before the status line
            b"\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"\nHTTP/1.1 200 OK\r\n\r\n",
            // bad field names and values
            b"HTTP/1.1 200 OK\r\nX Y: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX\"Y: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
            // status lines
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 000 Zero\r\n\r\n",
            b"HTTP/1.1 200 O\x01K\r\n\r\n",
            b" HTTP/1.1 200 OK\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1\t200 OK\r\n\r\n",
            b"<html><body>hello</body></html>\r\n\r\n",
            b"\x16\x03\x01\x00\x05hello",
        ];
        for buf in cases {
            assert_eq!(
                refused(buf),
                "malformed_head",
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn versions() {
        let (h10, _) = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h10.parts.version, Version::HTTP_10);
        for buf in [
            &b"HTTP/2.0 200 OK\r\n\r\n"[..],
            b"HTTP/1.2 200 OK\r\n\r\n",
            b"HTTP/0.9 200 OK\r\n\r\n",
            b"HTTP/3 200 OK\r\n\r\n",
        ] {
            assert_eq!(
                refused(buf),
                "unsupported_version",
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        match parse(b"HTTP/2.0 200 OK\r\n\r\n") {
            Err(e) => assert!(e.to_string().contains("HTTP/2.0"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(
            refused(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
            "switching_protocols"
        );
        for code in [100, 102, 103, 150, 199] {
            let buf = format!("HTTP/1.1 {code} Info\r\nX: y\r\n\r\nHTTP/1.1 200 OK\r\n");
            let want = buf.find("HTTP/1.1 200").unwrap();
            match parse(buf.as_bytes()) {
                Ok(Parsed::Interim { len }) => assert_eq!(len, want, "{code}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        // Interim for HEAD too.
        assert!(matches!(
            parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", &Method::HEAD),
            Ok(Parsed::Interim { len: 25 })
        ));
        for code in [200, 299, 404, 599, 999] {
            let buf = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(head(buf.as_bytes()).0.parts.status, code);
        }
    }

    // ---- framing ----

    #[test]
    fn no_body_whatever_the_fields_say() {
        let with_body = "Content-Length: 5\r\n";
        let chunked = "Transfer-Encoding: chunked\r\n";
        let both = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n";
        let bad = "Content-Length: x\r\nTransfer-Encoding: gzip\r\n";
        for fields in [with_body, chunked, both, bad, ""] {
            for status in ["204 No Content", "304 Not Modified"] {
                let buf = format!("HTTP/1.1 {status}\r\n{fields}\r\n");
                let (head, _) = head(buf.as_bytes());
                assert_eq!(head.framing, Framing::Empty, "{buf:?}");
                assert!(head.keep_alive, "{buf:?}");
            }
            let buf = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
            let (head, _) = head_for(buf.as_bytes(), &Method::HEAD);
            assert_eq!(head.framing, Framing::Empty, "{buf:?}");
            assert!(head.keep_alive, "{buf:?}");
        }
    }

    #[test]
    fn chunked_framing() {
        for te in [
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: Chunked",
            "transfer-encoding: CHUNKED",
            "Transfer-Encoding:  chunked \t",
        ] {
            assert_eq!(
                framing_of(&with_fields(&format!("{te}\r\n"))),
                Framing::Chunked,
                "{te}"
            );
        }
    }

    #[test]
    fn refuses_content_length_with_transfer_encoding() {
        for fields in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
            "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: \r\n",
        ] {
            assert_eq!(
                refused(&with_fields(fields)),
                "content_length_and_transfer_encoding",
                "{fields:?}"
            );
        }
        let http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(http10), "content_length_and_transfer_encoding");
    }

    #[test]
    fn refuses_transfer_codings_other_than_a_lone_chunked() {
        for fields in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: \r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: \r\n",
            "Transfer-Encoding: chunked,\r\n",
            "Transfer-Encoding: ,chunked\r\n",
            "Transfer-Encoding: chunked;x\r\n",
            "Transfer-Encoding: chunked ;q=1\r\n",
            "Transfer-Encoding: \"chunked\"\r\n",
            "Transfer-Encoding: chunk\r\n",
            "Transfer-Encoding: chunkedx\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding: chun ked\r\n",
        ] {
            assert_eq!(
                refused(&with_fields(fields)),
                "unsupported_transfer_encoding",
                "{fields:?}"
            );
        }
        // HTTP/1.0 has no transfer codings.
        let http10 = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(http10), "unsupported_transfer_encoding");
    }

    #[test]
    fn content_length_framing() {
        for (fields, n) in [
            ("Content-Length: 5\r\n", 5),
            ("Content-Length: 0\r\n", 0),
            ("Content-Length: 00007\r\n", 7),
            ("Content-Length:5\r\n", 5),
            ("Content-Length: \t5\t \r\n", 5),
            ("Content-Length: 5, 5\r\n", 5),
            ("Content-Length: 5,5 ,\t5\r\n", 5),
            ("Content-Length: 5\r\nContent-Length: 5\r\n", 5),
            ("Content-Length: 5\r\nContent-Length: 005\r\n", 5),
            ("Content-Length: 18446744073709551615\r\n", u64::MAX),
        ] {
            assert_eq!(
                framing_of(&with_fields(fields)),
                Framing::Length(n),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_content_lengths() {
        for fields in [
            "Content-Length: \r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -5\r\n",
            "Content-Length: -0\r\n",
            "Content-Length: 5 5\r\n",
            "Content-Length: 5.0\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length: 5a\r\n",
            "Content-Length: five\r\n",
            "Content-Length: 5,\r\n",
            "Content-Length: ,5\r\n",
            "Content-Length: 5,,5\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5\r\nContent-Length: \r\n",
            "Content-Length: 18446744073709551616\r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Content-Length: \"5\"\r\n",
            "Content-Length: \u{665}\r\n",
        ] {
            let buf = with_fields(fields);
            assert_eq!(refused(&buf), "bad_content_length", "{fields:?}");
        }
    }

    #[test]
    fn until_close_without_length_or_coding() {
        let (head, _) = head(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nbody...");
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);
        let (head, _) = head_for(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);
    }

    // ---- keep-alive ----

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&str, bool)] = &[
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", true),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: CLOSE\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x, close \r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x\r\nConnection: close\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: closed\r\n",
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x-close\r\n",
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Connection: close\r\n",
                true,
            ),
            ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n", false),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n",
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n",
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: x,keep-alive\r\n",
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n",
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\n",
                false,
            ),
            (
                "HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n",
                true,
            ),
            ("HTTP/1.0 204 No Content\r\n", false),
        ];
        for (head_text, keep) in cases {
            let buf = format!("{head_text}\r\n");
            assert_eq!(head(buf.as_bytes()).0.keep_alive, *keep, "{head_text:?}");
        }
    }

    // ---- errors ----

    #[test]
    fn labels_are_distinct_and_messages_bounded() {
        let all = [
            HeadError::TooLarge,
            HeadError::TooManyHeaders,
            HeadError::Malformed("x"),
            HeadError::UnsupportedVersion(String::new()),
            HeadError::SwitchingProtocols,
            HeadError::ContentLengthAndTransferEncoding,
            HeadError::UnsupportedTransferEncoding(String::new()),
            HeadError::BadContentLength(String::new()),
        ];
        let mut labels: Vec<_> = all.iter().map(HeadError::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
        let long = with_fields(&format!("Transfer-Encoding: {}\r\n", "x".repeat(1000)));
        match parse(&long) {
            Err(e @ HeadError::UnsupportedTransferEncoding(_)) => {
                assert!(e.to_string().len() < 200, "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(shown("é".repeat(40).as_bytes()).chars().last(), Some('…'));
    }

    // ---- fuzz-style ----

    const HEAD_PIECES: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b":",
        b",",
        b"HTTP/1.1 ",
        b"HTTP/1.0 ",
        b"100 ",
        b"101 ",
        b"204 ",
        b"Content-Length: ",
        b"Transfer-Encoding: ",
        b"Connection: ",
        b"chunked",
        b"close",
        b"keep-alive",
        b"18446744073709551616",
        b"0",
        b"5",
        b"\0",
        b"\xff",
    ];

    const HEAD_SEEDS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n",
    ];

    /// What must hold of any result: an accepted head lies within the buffer and the limit, is
    /// complete in itself, and no strict prefix of it is complete.
    fn check_head_properties(buf: &[u8], method: &Method) -> &'static str {
        let len = match parse_response_head(buf, method) {
            Ok(Parsed::Head { head, len }) => {
                if head.framing == Framing::UntilClose {
                    assert!(!head.keep_alive);
                }
                len
            }
            Ok(Parsed::Interim { len }) => len,
            Ok(Parsed::Partial) => {
                assert!(buf.len() < MAX_HEAD);
                return "partial";
            }
            Err(e) => return e.label(),
        };
        assert!(len > 0 && len <= buf.len() && len <= MAX_HEAD, "{len}");
        assert!(
            buf[..len].ends_with(b"\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
        let again = parse_response_head(&buf[..len], method);
        assert!(
            matches!(again, Ok(Parsed::Head { len: l, .. } | Parsed::Interim { len: l }) if l == len)
        );
        assert!(matches!(
            parse_response_head(&buf[..len - 1], method),
            Ok(Parsed::Partial)
        ));
        "accepted"
    }

    #[test]
    fn fuzz_random_and_mutated_heads() {
        let mut rng = Rng::new(0x5eed_0001);
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..20_000 {
            let buf = if i % 4 == 0 {
                // Random bytes, biased towards the pieces of a head.
                let mut buf = Vec::new();
                for _ in 0..rng.below(40) {
                    if rng.below(2) == 0 {
                        buf.extend_from_slice(rng.pick(HEAD_PIECES));
                    } else {
                        buf.push(rng.next() as u8);
                    }
                }
                buf
            } else {
                let seed = rng.pick(HEAD_SEEDS);
                rng.mutate(seed, HEAD_PIECES)
            };
            let method = if i % 7 == 0 {
                Method::HEAD
            } else {
                Method::GET
            };
            *seen
                .entry(check_head_properties(&buf, &method))
                .or_insert(0) += 1;
        }
        // The inputs reach both acceptance and the various refusals.
        for outcome in [
            "accepted",
            "partial",
            "malformed_head",
            "bad_content_length",
            "unsupported_transfer_encoding",
        ] {
            assert!(seen.get(outcome).copied().unwrap_or(0) > 20, "{seen:?}");
        }
    }
}
