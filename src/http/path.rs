//! Request path normalization (ARCHITECTURE.md §4): the one form of a path that routes match
//! and that is forwarded, so that rtun, the route table and the service behind the tunnel can
//! never disagree about which resource a request names ("path confusion").
//!
//! This module owns the rules, as Envoy's `normalize_path` + `merge_slashes` +
//! `path_with_escaped_slashes_action` apply them at an edge:
//!
//! 1. **Percent-encodings** (RFC 3986 §6.2.2.1–2): an encoded unreserved character
//!    (`ALPHA DIGIT - . _ ~`) is decoded (`%2E` → `.`, `%41` → `A`), so `/%2e%2e/` is a dot
//!    segment like `/../`; every other encoding is kept with uppercase hex (`%3f` → `%3F`).
//!    A `%` not followed by two hex digits cannot be normalized: [`PathError::BadPercent`].
//! 2. **Escaped slashes** — `%2F`, `%5C` and a literal `\`, which some services take for a
//!    separator and others do not — follow [`EscapedSlashes`]. The default is
//!    [`EscapedSlashes::Reject`] (Envoy's `REJECT_REQUEST`, its advice for clients that send
//!    RFC 3986 paths): a path whose segments the two sides could split differently is refused
//!    with 400 rather than guessed at. [`EscapedSlashes::Keep`] (`KEEP_UNCHANGED`, for
//!    services that need encoded slashes) keeps them as data inside a segment, `%2F`/`%5C` in
//!    uppercase. Envoy's `UNESCAPE_AND_REDIRECT` needs a redirect round trip and
//!    `UNESCAPE_AND_FORWARD` invites exactly the confusion this module exists to prevent; rtun
//!    offers neither.
//! 3. **Dot segments** are removed (RFC 3986 §5.2.4): `.` goes, `..` removes the segment
//!    before it and never climbs above the root; a path ending in a dot segment ends in `/`.
//! 4. **Consecutive slashes** are merged into one (`merge_slashes`), after dot segments, as
//!    Envoy orders them.
//!
//! The query is never touched. The result is idempotent: normalizing a normalized path changes
//! nothing, which is why the initiator may normalize again what the responder already did.

use http::uri::{PathAndQuery, Uri};

/// What to do with `%2F`, `%5C` and `\` in a path (`egress_listener.path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request (400). Envoy's `REJECT_REQUEST`.
    #[default]
    Reject,
    /// Keep them as data within a segment (hex uppercased). Envoy's `KEEP_UNCHANGED`.
    Keep,
}

/// A path that cannot be normalized; the request is answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path (`*`, a CONNECT authority, an empty path).
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits, at this byte offset.
    #[error("invalid percent-encoding at byte {0} of the path")]
    BadPercent(usize),
    /// `%2F`, `%5C` or `\` at this byte offset while escaped slashes are rejected.
    #[error("escaped slash or backslash at byte {0} of the path")]
    EscapedSlash(usize),
}

/// True for RFC 3986 `unreserved` bytes.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Step 1 and 2: percent-encodings in canonical form, escaped slashes per `escaped`.
fn canonical_escapes(path: &str, escaped: EscapedSlashes) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let decoded = bytes
                    .get(i + 1)
                    .and_then(|&h| hex_value(h))
                    .zip(bytes.get(i + 2).and_then(|&l| hex_value(l)))
                    .map(|(h, l)| (h << 4) | l)
                    .ok_or(PathError::BadPercent(i))?;
                if is_unreserved(decoded) {
                    out.push(char::from(decoded));
                } else if matches!(decoded, b'/' | b'\\') && escaped == EscapedSlashes::Reject {
                    return Err(PathError::EscapedSlash(i));
                } else {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(decoded >> 4)]));
                    out.push(char::from(HEX[usize::from(decoded & 0xf)]));
                }
                i += 3;
            }
            b'\\' if escaped == EscapedSlashes::Reject => return Err(PathError::EscapedSlash(i)),
            _ => {
                // Copy up to the next `%` or `\` whole, so multi-byte characters stay intact.
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'%' || b == b'\\')
                    .map_or(bytes.len(), |n| i + n.max(1));
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

/// Step 3: RFC 3986 §5.2.4 on a path that starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            s => {
                kept.push(s);
                continue;
            }
        }
        if i == last {
            // `/a/.` and `/a/b/..` name a directory: `/a/`.
            kept.push("");
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Step 4: runs of `/` become one.
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// The normalized form of `path` (no query: the part before `?`).
pub fn normalize(path: &str, escaped: EscapedSlashes) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let canonical = canonical_escapes(path, escaped)?;
    Ok(merge_slashes(&remove_dot_segments(&canonical)))
}

/// True when `path` is certainly in normal form: absolute, with no `%`, no `\\`, no empty
/// segment (`//`) and no dot segment. Most paths are, and need neither a copy nor a check
/// byte by byte again. (A false answer only means "run the full rules".)
fn is_plainly_normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.bytes().any(|b| b == b'%' || b == b'\\')
        && !path.contains("//")
        && path[1..].split('/').all(|s| s != "." && s != "..")
}

/// `uri` with its path normalized and its query (and scheme, authority) untouched.
pub fn normalize_uri(uri: &Uri, escaped: EscapedSlashes) -> Result<Uri, PathError> {
    if is_plainly_normal(uri.path()) {
        return Ok(uri.clone());
    }
    let path = normalize(uri.path(), escaped)?;
    if path == uri.path() {
        return Ok(uri.clone());
    }
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    // Every byte comes from a valid path or is unreserved or `%XX`: this cannot fail, but a
    // failure is still an answer, not a panic.
    let path_and_query =
        PathAndQuery::try_from(path_and_query).map_err(|_| PathError::NotAbsolute)?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| PathError::NotAbsolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path, EscapedSlashes::Reject)
    }

    fn keep(path: &str) -> Result<String, PathError> {
        normalize(path, EscapedSlashes::Keep)
    }

    #[test]
    fn the_fast_path_only_takes_paths_the_rules_leave_alone() {
        let paths = [
            "/",
            "/a",
            "/a/",
            "/a/b/c",
            "/a.b/c..d/.e/..f",
            "/~user/x-y_z",
            "/a?b",
            "/é/ü",
            "//",
            "/a//b",
            "/a/",
            "/./",
            "/a/.",
            "/a/..",
            "/..",
            "/a/%41",
            "/a%2fb",
            "/a\\b",
            "/%2e%2e/x",
            "a",
            "",
            "*",
        ];
        for path in paths {
            if is_plainly_normal(path) {
                assert_eq!(norm(path).as_deref(), Ok(path), "{path:?}");
                assert_eq!(keep(path).as_deref(), Ok(path), "{path:?}");
            }
        }
        for plain in ["/", "/a", "/a/", "/a.b/c..d/.e/..f", "/é/ü"] {
            assert!(is_plainly_normal(plain), "{plain:?}");
        }
        for not in ["//", "/a//b", "/a/.", "/a/../b", "/a/%41", "/a\\b", "a", ""] {
            assert!(!is_plainly_normal(not), "{not:?}");
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        let cases = [
            ("/", "/"),
            ("/a", "/a"),
            ("/a/b/", "/a/b/"),
            ("/public/../admin", "/admin"),
            ("/public/./x", "/public/x"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/.", "/"),
            ("/..", "/"),
            ("/./", "/"),
            ("/../", "/"),
            ("/../../../etc/passwd", "/etc/passwd"),
            ("/a/../../b", "/b"),
            // Only whole segments are dot segments.
            ("/a/.b/..c/d..", "/a/.b/..c/d.."),
            ("/a/.../b", "/a/.../b"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn slashes_are_merged() {
        let cases = [
            ("//", "/"),
            ("/a//b", "/a/b"),
            ("///a///b///", "/a/b/"),
            ("/public/./x//y", "/public/x/y"),
            // Dot segments first (an empty segment is a segment), then merging: Envoy's order.
            ("/a//../b", "/a/b"),
            ("//../a", "/a"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        let cases = [
            ("/%2e%2e/x", "/x"),
            ("/%2E%2E/x", "/x"),
            ("/a/%2E%2E/b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a/.%2e/b", "/b"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/a/%2e%2e", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn percent_encodings_are_canonical() {
        let cases = [
            // Unreserved characters are decoded.
            ("/%61dmin", "/admin"),
            ("/%7euser/%2D%5f", "/~user/-_"),
            ("/%30%39", "/09"),
            // Others keep their encoding, with uppercase hex.
            ("/a%3fb", "/a%3Fb"),
            ("/a%20b", "/a%20b"),
            ("/a%2a%3d", "/a%2A%3D"),
            ("/%e2%82%ac", "/%E2%82%AC"),
            ("/%25", "/%25"),
            ("/%252e%252e/x", "/%252e%252e/x"),
            // Literal characters the URI grammar allows are left alone.
            ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="),
            ("/caf\u{e9}", "/caf\u{e9}"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn invalid_percent_encodings_are_errors() {
        assert_eq!(norm("/%zz"), Err(PathError::BadPercent(1)));
        assert_eq!(norm("/a/%"), Err(PathError::BadPercent(3)));
        assert_eq!(norm("/a%2"), Err(PathError::BadPercent(2)));
        assert_eq!(norm("/a%g0"), Err(PathError::BadPercent(2)));
        assert_eq!(keep("/%2x"), Err(PathError::BadPercent(1)));
    }

    #[test]
    fn not_origin_form_is_an_error() {
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn escaped_slashes_are_rejected_by_default() {
        assert_eq!(EscapedSlashes::default(), EscapedSlashes::Reject);
        assert_eq!(norm("/a%2Fb"), Err(PathError::EscapedSlash(2)));
        assert_eq!(norm("/a%2fb"), Err(PathError::EscapedSlash(2)));
        assert_eq!(norm("/public/..%2Fadmin"), Err(PathError::EscapedSlash(10)));
        assert_eq!(norm("/a%5cb"), Err(PathError::EscapedSlash(2)));
        assert_eq!(norm("/a\\b"), Err(PathError::EscapedSlash(2)));
    }

    #[test]
    fn escaped_slashes_can_be_kept_as_data() {
        let cases = [
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/../c", "/c"),
            // Not a dot segment: `..%2F` stays one segment, `/public` keeps it.
            ("/public/..%2fadmin", "/public/..%2Fadmin"),
            ("/a%5cb", "/a%5Cb"),
            ("/a\\..\\b", "/a\\..\\b"),
        ];
        for (input, want) in cases {
            assert_eq!(keep(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let inputs = [
            "/public/../admin",
            "/a//b/./c/../",
            "/%2e%2e/%61%3f%7E",
            "/a/b/..",
            "/x%2fy//..",
            "/caf\u{e9}/./%e2%82%ac",
        ];
        for input in inputs {
            let once = keep(input).expect(input);
            assert_eq!(keep(&once).as_deref(), Ok(once.as_str()), "{input}");
        }
    }

    #[test]
    fn the_query_is_untouched() {
        let uri: Uri = "/a/../b//c?x=/../y&z=%2f%zz".parse().unwrap();
        let out = normalize_uri(&uri, EscapedSlashes::Reject).unwrap();
        assert_eq!(
            out.path_and_query().unwrap().as_str(),
            "/b/c?x=/../y&z=%2f%zz"
        );

        let uri: Uri = "http://example.com:8080/./p?q".parse().unwrap();
        let out = normalize_uri(&uri, EscapedSlashes::Reject).unwrap();
        assert_eq!(out.to_string(), "http://example.com:8080/p?q");

        let uri: Uri = "/already/normal?k=v".parse().unwrap();
        assert_eq!(normalize_uri(&uri, EscapedSlashes::Reject).unwrap(), uri);

        let uri: Uri = "*".parse().unwrap();
        assert_eq!(
            normalize_uri(&uri, EscapedSlashes::Reject),
            Err(PathError::NotAbsolute)
        );
    }
}
