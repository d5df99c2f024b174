//! `host_id_format`: how the responder's egress listener derives a host_id from a request
//! (ARCHITECTURE.md §4).
//!
//! This module owns the format language, a subset of Envoy's substitution formatter:
//!
//! | operator | value |
//! |---|---|
//! | `%REQ(name)%` | first value of request header `name` (case-insensitive), `""` if absent |
//! | `%REQ(name?alt)%` | header `name`, else header `alt` (Envoy's alternative header) |
//! | `%REQ(name):N%` | the same, truncated to `N` bytes |
//! | `%DOWNSTREAM_REMOTE_ADDRESS%` | client address as `ip:port` (`[v6]:port`) |
//! | `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%` | client IP |
//! | `%DYNAMIC_METADATA(ns:key)%` | `""`: rtun has no dynamic metadata (yet) |
//! | `%FILTER_STATE(key)%` | `""`: rtun has no filter state (yet) |
//! | `%%` | a literal `%` |
//!
//! Anything else between `%` signs, or a `%` that is never closed, is a parse error giving the
//! byte offset. Unlike Envoy's access logs, a missing value is the empty string, not `-`; a
//! result that is empty or `-` is "no host_id" ([`first_host_id`]).
//!
//! Formats are parsed once into segments with header names already converted to
//! [`HeaderName`], so evaluating one costs a few map lookups and one `String`.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName};

/// A parsed host_id format string.
#[derive(Debug, Clone)]
pub struct HostIdFormat {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Header {
        name: HeaderName,
        alternative: Option<HeaderName>,
        max_len: Option<usize>,
    },
    RemoteAddress,
    RemoteAddressWithoutPort,
    /// `%DYNAMIC_METADATA(..)%` / `%FILTER_STATE(..)%`: parsed, evaluates to "".
    Unavailable,
}

/// A rejected format string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host_id_format `{format}` at byte offset {offset}: {reason}")]
pub struct HostIdFormatError {
    /// The format string as written.
    pub format: String,
    /// Byte offset of the `%` that starts the bad operator.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

const SUPPORTED: &str = "supported: %REQ(header)%, %DOWNSTREAM_REMOTE_ADDRESS%, \
     %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, %DYNAMIC_METADATA(ns:key)%, %FILTER_STATE(key)%, %%";

impl HostIdFormat {
    /// Parses a format string.
    pub fn parse(format: &str) -> Result<Self, HostIdFormatError> {
        let err = |offset: usize, reason: String| HostIdFormatError {
            format: format.to_owned(),
            offset,
            reason,
        };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = format;
        let mut offset = 0;
        while let Some(pct) = rest.find('%') {
            literal.push_str(&rest[..pct]);
            let start = offset + pct;
            let after = &rest[pct + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                offset = start + 2;
                rest = tail;
                continue;
            }
            let Some(end) = after.find('%') else {
                return Err(err(
                    start,
                    "`%` is not closed; write `%%` for a literal percent sign".to_owned(),
                ));
            };
            let command = &after[..end];
            let segment = parse_command(command).map_err(|reason| err(start, reason))?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(segment);
            offset = start + 1 + end + 1;
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(HostIdFormat {
            source: format.to_owned(),
            segments,
        })
    }

    /// The format string as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Evaluates the format for one request. A missing header, or a remote address that is not
    /// known, contributes `""`.
    pub fn evaluate(&self, headers: &HeaderMap, remote: Option<SocketAddr>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Header {
                    name,
                    alternative,
                    max_len,
                } => {
                    let value = header_str(headers, name)
                        .or_else(|| {
                            alternative
                                .as_ref()
                                .and_then(|alt| header_str(headers, alt))
                        })
                        .unwrap_or("");
                    let value = match max_len {
                        Some(max) => truncate(value, *max),
                        None => value,
                    };
                    out.push_str(value);
                }
                // Writing to a String cannot fail.
                Segment::RemoteAddress => {
                    if let Some(addr) = remote {
                        let _ = write!(out, "{addr}");
                    }
                }
                Segment::RemoteAddressWithoutPort => {
                    if let Some(addr) = remote {
                        let _ = write!(out, "{}", addr.ip());
                    }
                }
                Segment::Unavailable => {}
            }
        }
        out
    }

    /// Header names this format reads, in order of appearance.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.segments
            .iter()
            .flat_map(|segment| match segment {
                Segment::Header {
                    name, alternative, ..
                } => [Some(name), alternative.as_ref()],
                _ => [None, None],
            })
            .flatten()
    }
}

/// First header value as text; a value that is not visible ASCII counts as absent.
fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Parses the text between two `%`: `NAME`, `NAME(ARGS)` or `NAME(ARGS):N`.
fn parse_command(command: &str) -> Result<Segment, String> {
    let (name, args, max_len) = match command.find('(') {
        None => (command, None, None),
        Some(open) => {
            let Some(close) = command.rfind(')').filter(|&c| c > open) else {
                return Err(format!("`%{command}%` has no closing `)`"));
            };
            let tail = &command[close + 1..];
            let max_len =
                match tail {
                    "" => None,
                    _ => {
                        let digits = tail.strip_prefix(':').unwrap_or("");
                        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(format!(
                                "`%{command}%`: after `)` only `:N` (a maximum length) may follow"
                            ));
                        }
                        Some(digits.parse::<usize>().map_err(|_| {
                            format!("`%{command}%`: length `{digits}` is too large")
                        })?)
                    }
                };
            (&command[..open], Some(&command[open + 1..close]), max_len)
        }
    };
    let no_args = |segment: Segment| match args {
        None => Ok(segment),
        Some(_) => Err(format!("`%{name}%` takes no arguments")),
    };
    let needs_args = || match args {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(format!("`%{name}(...)%` needs an argument")),
    };
    let segment = match name {
        "REQ" => {
            let args = needs_args()?;
            let (first, alternative) = match args.split_once('?') {
                Some((a, b)) => (a, Some(b)),
                None => (args, None),
            };
            Segment::Header {
                name: header_name(first)?,
                alternative: alternative.map(header_name).transpose()?,
                max_len,
            }
        }
        "DOWNSTREAM_REMOTE_ADDRESS" => no_args(Segment::RemoteAddress)?,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => no_args(Segment::RemoteAddressWithoutPort)?,
        "DYNAMIC_METADATA" => {
            let args = needs_args()?;
            match args.split_once(':') {
                Some((ns, key)) if !ns.is_empty() && !key.is_empty() => Segment::Unavailable,
                _ => {
                    return Err(format!(
                        "`%DYNAMIC_METADATA({args})%` needs a namespace and a key: (ns:key)"
                    ))
                }
            }
        }
        "FILTER_STATE" => {
            needs_args()?;
            Segment::Unavailable
        }
        other => return Err(format!("unknown operator `%{other}%`; {SUPPORTED}")),
    };
    if max_len.is_some() && !matches!(segment, Segment::Header { .. }) {
        return Err(format!(
            "`%{command}%`: only %REQ(..)% takes a maximum length"
        ));
    }
    Ok(segment)
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    if name.starts_with(':') {
        return Err(format!(
            "pseudo-header `{name}` is not supported; use a regular header such as `host`"
        ));
    }
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

impl FromStr for HostIdFormat {
    type Err = HostIdFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostIdFormat::parse(s)
    }
}

impl fmt::Display for HostIdFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Two formats are equal when they were written the same.
impl PartialEq for HostIdFormat {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for HostIdFormat {}

/// Tries `formats` in order and returns the first result that is neither empty nor `-`.
pub fn first_host_id(
    formats: &[HostIdFormat],
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
) -> Option<String> {
    formats
        .iter()
        .map(|f| f.evaluate(headers, remote))
        .find(|id| !id.is_empty() && id != "-")
}

/// Header names the formats read, deduplicated, in order: for the `400` body
/// "expected one of the headers: x-node-id, x-cluster-id".
pub fn expected_headers(formats: &[HostIdFormat]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in formats.iter().flat_map(HostIdFormat::header_names) {
        if !names.iter().any(|n| n == name.as_str()) {
            names.push(name.as_str().to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn eval(format: &str, h: &HeaderMap) -> String {
        HostIdFormat::parse(format).unwrap().evaluate(h, None)
    }

    #[test]
    fn request_header_case_insensitive() {
        let h = headers(&[("x-node-id", "edge-42")]);
        assert_eq!(eval("%REQ(x-node-id)%", &h), "edge-42");
        assert_eq!(eval("%REQ(X-Node-ID)%", &h), "edge-42");
    }

    #[test]
    fn missing_header_is_empty() {
        assert_eq!(eval("%REQ(x-node-id)%", &HeaderMap::new()), "");
        assert_eq!(eval("n-%REQ(x-node-id)%", &HeaderMap::new()), "n-");
    }

    #[test]
    fn first_value_of_repeated_header() {
        let h = headers(&[("x-node-id", "a"), ("x-node-id", "b")]);
        assert_eq!(eval("%REQ(x-node-id)%", &h), "a");
    }

    #[test]
    fn alternative_header_and_max_len() {
        let h = headers(&[("x-cluster-id", "edge-west")]);
        assert_eq!(eval("%REQ(x-node-id?x-cluster-id)%", &h), "edge-west");
        assert_eq!(eval("%REQ(x-cluster-id):4%", &h), "edge");
        assert_eq!(eval("%REQ(x-cluster-id):100%", &h), "edge-west");
    }

    #[test]
    fn mixed_text_and_literal_percent() {
        let h = headers(&[("x-tenant", "acme"), ("x-node-id", "n1")]);
        assert_eq!(
            eval("%REQ(x-tenant)%/%REQ(x-node-id)% 100%%", &h),
            "acme/n1 100%"
        );
        assert_eq!(eval("plain", &h), "plain");
        assert_eq!(eval("", &h), "");
    }

    #[test]
    fn remote_address() {
        let f = HostIdFormat::parse("%DOWNSTREAM_REMOTE_ADDRESS%").unwrap();
        let g = HostIdFormat::parse("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%").unwrap();
        let v4: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(f.evaluate(&HeaderMap::new(), Some(v4)), "10.0.0.1:5555");
        assert_eq!(f.evaluate(&HeaderMap::new(), Some(v6)), "[::1]:80");
        assert_eq!(g.evaluate(&HeaderMap::new(), Some(v4)), "10.0.0.1");
        assert_eq!(g.evaluate(&HeaderMap::new(), Some(v6)), "::1");
        assert_eq!(f.evaluate(&HeaderMap::new(), None), "");
    }

    #[test]
    fn metadata_and_filter_state_are_empty() {
        assert_eq!(eval("%DYNAMIC_METADATA(ns:key)%", &HeaderMap::new()), "");
        assert_eq!(eval("%FILTER_STATE(some.key)%", &HeaderMap::new()), "");
    }

    #[test]
    fn parse_errors_give_offset() {
        let e = HostIdFormat::parse("ab%NOPE%").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.reason.contains("unknown operator `%NOPE%`"), "{e}");
        assert!(e.to_string().contains("ab%NOPE%"));

        let e = HostIdFormat::parse("%REQ(a)% x%REQ(b").unwrap_err();
        assert_eq!(e.offset, 10);
        assert!(e.reason.contains("not closed"), "{e}");

        for bad in [
            "%REQ()%",
            "%REQ%",
            "%REQ(a b)%",
            "%REQ(a)x%",
            "%REQ(a):%",
            "%REQ(a:1%",
            "%DOWNSTREAM_REMOTE_ADDRESS(x)%",
            "%DOWNSTREAM_REMOTE_ADDRESS:3%",
            "%DYNAMIC_METADATA(ns)%",
            "%FILTER_STATE()%",
            "%DYNAMIC_METADATA(ns:k):3%",
            "%REQ(:authority)%",
        ] {
            let e = HostIdFormat::parse(bad);
            assert!(e.is_err(), "{bad} was accepted");
            assert_eq!(e.unwrap_err().offset, 0, "{bad}");
        }
    }

    #[test]
    fn first_host_id_skips_empty_and_dash() {
        let formats: Vec<HostIdFormat> = ["%REQ(x-node-id)%", "%REQ(x-cluster-id)%"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let h = headers(&[("x-cluster-id", "edge-west")]);
        assert_eq!(
            first_host_id(&formats, &h, None).as_deref(),
            Some("edge-west")
        );
        let h = headers(&[("x-node-id", "-"), ("x-cluster-id", "c")]);
        assert_eq!(first_host_id(&formats, &h, None).as_deref(), Some("c"));
        let h = headers(&[("x-node-id", "n"), ("x-cluster-id", "c")]);
        assert_eq!(first_host_id(&formats, &h, None).as_deref(), Some("n"));
        assert_eq!(first_host_id(&formats, &HeaderMap::new(), None), None);
        assert_eq!(first_host_id(&[], &h, None), None);
    }

    #[test]
    fn expected_headers_in_order_without_duplicates() {
        let formats: Vec<HostIdFormat> = [
            "%REQ(X-Node-Id)%",
            "%REQ(x-cluster-id?x-node-id)%",
            "%DOWNSTREAM_REMOTE_ADDRESS%",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(expected_headers(&formats), ["x-node-id", "x-cluster-id"]);
    }

    #[test]
    fn display_and_eq_use_the_source() {
        let a = HostIdFormat::parse("%REQ(x-node-id)%").unwrap();
        assert_eq!(a.to_string(), "%REQ(x-node-id)%");
        assert_eq!(a.as_str(), "%REQ(x-node-id)%");
        assert_eq!(a, HostIdFormat::parse("%REQ(x-node-id)%").unwrap());
    }
}
