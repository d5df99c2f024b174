//! `rtun::http::h1::head::parse_response_head`, the local hop's parse of a service's response
//! head, for a GET and for a HEAD request.
//!
//! Asserts, on any bytes:
//! - no panic; a partial head is shorter than `MAX_HEAD`; an accepted head (final or interim)
//!   lies within the buffer and `MAX_HEAD`, ends in CRLF CRLF with no bare LF, parses the same on
//!   exactly its bytes and with an HTTP/2 preface after them, and no strict prefix of it is
//!   complete;
//! - an interim head is a 1xx other than 101; a final one is 200..=999, HTTP/1.0 or 1.1;
//! - the framing follows the fields, checked against a reference written from RFC 9112 §6.3:
//!   HEAD, 204 and 304 have no body; `Chunked` only with one `transfer-encoding: chunked`, no
//!   `content-length`, in HTTP/1.1; `Length(n)` only with no `transfer-encoding` and every
//!   `content-length` element equal to `n`; `UntilClose` only with neither, and never kept alive;
//!   a kept-alive connection has no `close` option;
//! - HEAD reads the same head as GET (status, fields, length) with an empty body, and a head
//!   GET refuses only for its framing fields is accepted for HEAD.
#![no_main]

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use rtun::http::h1::head::{parse_response_head, Framing, HeadError, Parsed, MAX_HEAD};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A comparable summary of a result.
#[derive(Debug, PartialEq)]
enum Summary {
    Partial,
    Interim(usize),
    Head {
        len: usize,
        status: StatusCode,
        version: Version,
        headers: HeaderMap,
        framing: Framing,
        keep_alive: bool,
    },
    Err(HeadError),
}

fn summary(buf: &[u8], method: &Method) -> Summary {
    match parse_response_head(buf, method) {
        Ok(Parsed::Partial) => Summary::Partial,
        Ok(Parsed::Interim { len }) => Summary::Interim(len),
        Ok(Parsed::Head { head, len }) => Summary::Head {
            len,
            status: head.parts.status,
            version: head.parts.version,
            headers: head.parts.headers,
            framing: head.framing,
            keep_alive: head.keep_alive,
        },
        Err(e) => Summary::Err(e),
    }
}

/// The comma-separated elements of every `name` field, trimmed of SP and HTAB.
fn elements(headers: &HeaderMap, name: http::header::HeaderName) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        for element in value.as_bytes().split(|&b| b == b',') {
            let s = String::from_utf8_lossy(element);
            out.push(s.trim_matches([' ', '\t']).as_bytes().to_vec());
        }
    }
    out
}

fn check(data: &[u8], method: &Method) -> Summary {
    let result = summary(data, method);
    let len = match &result {
        Summary::Partial => {
            assert!(data.len() < MAX_HEAD, "partial at {} bytes", data.len());
            return result;
        }
        Summary::Err(e) => {
            assert!(!e.label().is_empty() && !e.to_string().is_empty());
            return result;
        }
        Summary::Interim(len) => *len,
        Summary::Head { len, .. } => *len,
    };
    assert!(len > 0 && len <= data.len() && len <= MAX_HEAD, "{len}");
    let whole = &data[..len];
    assert!(
        whole.ends_with(b"\r\n\r\n"),
        "a head not ending in CRLF CRLF"
    );
    for (i, &b) in whole.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && whole[i - 1] == b'\r', "a bare LF accepted at {i}");
        }
    }
    assert_eq!(summary(whole, method), result, "not complete in itself");
    let with_h2 = [whole, PREFACE].concat();
    assert_eq!(summary(&with_h2, method), result, "bytes after it count");
    for cut in [len - 1, len / 2] {
        assert_eq!(
            summary(&whole[..cut], method),
            Summary::Partial,
            "a strict prefix ({cut} of {len}) is complete"
        );
    }

    match &result {
        Summary::Interim(_) => {
            // The status line is `HTTP/1.x 1yz`.
            let code = whole.get(9..12).expect("a status line");
            assert!(
                code[0] == b'1' && code != b"101",
                "{:?}",
                String::from_utf8_lossy(code)
            );
        }
        Summary::Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
            ..
        } => {
            assert!((200..=999).contains(&status.as_u16()), "{status}");
            assert!(*version == Version::HTTP_10 || *version == Version::HTTP_11);
            let te = elements(headers, TRANSFER_ENCODING);
            let cl = elements(headers, CONTENT_LENGTH);
            let no_body = *method == Method::HEAD
                || *status == StatusCode::NO_CONTENT
                || *status == StatusCode::NOT_MODIFIED;
            match framing {
                Framing::Empty => assert!(no_body),
                Framing::Chunked => {
                    assert!(!no_body && cl.is_empty() && *version == Version::HTTP_11);
                    assert_eq!(te.len(), 1);
                    assert!(te[0].eq_ignore_ascii_case(b"chunked"));
                }
                Framing::Length(n) => {
                    assert!(!no_body && te.is_empty() && !cl.is_empty());
                    let want = n.to_string();
                    for element in &cl {
                        let digits = String::from_utf8_lossy(element);
                        assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{digits:?}");
                        let trimmed = digits.trim_start_matches('0');
                        let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
                        assert_eq!(trimmed, want);
                    }
                }
                Framing::UntilClose => {
                    assert!(!no_body && te.is_empty() && cl.is_empty());
                    assert!(!keep_alive);
                }
            }
            if *keep_alive {
                let options = elements(headers, CONNECTION);
                assert!(!options.iter().any(|o| o.eq_ignore_ascii_case(b"close")));
                if *version == Version::HTTP_10 {
                    assert!(options
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case(b"keep-alive")));
                }
            }
        }
        _ => unreachable!(),
    }
    result
}

fuzz_target!(|data: &[u8]| {
    let get = check(data, &Method::GET);
    let head = check(data, &Method::HEAD);
    match (&get, &head) {
        (
            Summary::Head {
                len,
                status,
                version,
                headers,
                ..
            },
            Summary::Head {
                len: l2,
                status: s2,
                version: v2,
                headers: h2,
                framing,
                ..
            },
        ) => {
            assert_eq!((len, status, version, headers), (l2, s2, v2, h2));
            assert_eq!(*framing, Framing::Empty);
        }
        (Summary::Head { .. }, other) => panic!("GET accepted, HEAD got {other:?}"),
        (Summary::Err(e), Summary::Head { .. }) => assert!(
            matches!(
                e,
                HeadError::ContentLengthAndTransferEncoding
                    | HeadError::UnsupportedTransferEncoding(_)
                    | HeadError::BadContentLength(_)
            ),
            "HEAD accepted what GET refused with {e}"
        ),
        (Summary::Err(e), Summary::Err(e2)) => {
            let framing_only = matches!(
                e,
                HeadError::ContentLengthAndTransferEncoding
                    | HeadError::UnsupportedTransferEncoding(_)
                    | HeadError::BadContentLength(_)
            );
            assert!(
                !framing_only,
                "HEAD refused ({e2}) what GET refused only for framing ({e})"
            );
            assert_eq!(e, e2);
        }
        (a, b) => assert_eq!(a, b, "GET and HEAD disagree on an interim or partial head"),
    }
});
