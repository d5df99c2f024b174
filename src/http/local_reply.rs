//! Local replies: responses rtun writes itself (errors, admin pages), always `text/plain` with a
//! message that says what went wrong in the operator's words.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Marks a response as written by rtun rather than the service.
pub const LOCAL_REPLY_HEADER: &str = "x-rtun-local-reply";

/// A `text/plain` response with `message` (a newline is appended), as a hyper body.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    text_bytes(status, message).map(Full::new)
}

/// The same response with its body as plain bytes (for an h2 `SendStream`).
pub fn text_bytes(status: StatusCode, message: impl Into<String>) -> Response<Bytes> {
    let mut body = message.into();
    body.push('\n');
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(LOCAL_REPLY_HEADER, HeaderValue::from_static("1"));
    resp
}
