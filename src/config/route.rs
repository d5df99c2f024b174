//! What a route does to a request besides choosing where it goes: Envoy's `prefix_rewrite`
//! and its header rules (`request_headers_to_add`, `request_headers_to_remove`,
//! `response_headers_to_add`, `response_headers_to_remove`). One type, [`RouteRewrite`],
//! embedded in both roles' routes (`EgressRoute`, `InitiatorRoute`) as their `rewrite`; the
//! keys are written flat on the route, as in README's "Routes".
//!
//! Everything is checked here at load, with the offending value's line and column: a header
//! that is not a valid name or value, or one a route must not touch ([`forbidden`]: pseudo
//! headers, `host`, hop-by-hop and framing headers, `x-request-id`; on the egress, adding a
//! header `host_id_format` reads), and a `prefix_rewrite` that is not a normalized path.
//! Applying the rules is the driver's (the path: `crate::http::route::rewrite_prefix`) and
//! the `RouteHeaders` stage's (the headers) business.

use std::fmt;

use http::header::{self, HeaderName, HeaderValue};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::de::with_str;
use super::xref;
use crate::http::path::{self, EscapedSlashes};
use crate::http::proxy_headers;

/// A route's rewrite and header rules; the default changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteRewrite {
    /// Replaces the matched prefix of the (normalized) path sent upstream; the query is kept.
    pub prefix_rewrite: Option<String>,
    /// Applied to the request sent upstream.
    pub request_headers: HeaderRules,
    /// Applied to the response sent back, local replies included once the route matched.
    pub response_headers: HeaderRules,
}

impl RouteRewrite {
    /// True when the route changes nothing (no stage work for its requests).
    pub fn is_empty(&self) -> bool {
        self.prefix_rewrite.is_none()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
    }

    /// Builds the rules from the route's flat keys.
    pub(crate) fn from_keys(
        prefix_rewrite: Option<String>,
        request_headers_to_add: Vec<HeaderToAdd>,
        request_headers_to_remove: Vec<HeaderName>,
        response_headers_to_add: Vec<HeaderToAdd>,
        response_headers_to_remove: Vec<HeaderName>,
    ) -> Self {
        Self {
            prefix_rewrite,
            request_headers: HeaderRules {
                add: request_headers_to_add,
                remove: request_headers_to_remove,
            },
            response_headers: HeaderRules {
                add: response_headers_to_add,
                remove: response_headers_to_remove,
            },
        }
    }
}

/// Headers removed, then added (Envoy's order: removing and adding one name replaces it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// `*_headers_to_add`, in file order.
    pub add: Vec<HeaderToAdd>,
    /// `*_headers_to_remove`.
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Removes, then adds.
    pub fn apply(&self, headers: &mut header::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for h in &self.add {
            if h.append {
                headers.append(h.name.clone(), h.value.clone());
            } else {
                headers.insert(h.name.clone(), h.value.clone());
            }
        }
    }
}

/// One entry of `*_headers_to_add`: `{ name, value, append }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderToAdd {
    pub name: HeaderName,
    pub value: HeaderValue,
    /// `true` (default, Envoy's `append`): one more value besides any the message has;
    /// `false`: replaces them.
    pub append: bool,
}

/// Why a route may not add or remove `name` (lowercase), if it may not.
fn forbidden(name: &str) -> Option<&'static str> {
    if name == "host" {
        return Some(
            "`host` is the request's authority, which a route does not change (as in Envoy)",
        );
    }
    if name == "x-request-id" {
        return Some(
            "`x-request-id` is rtun's: set on every request sent upstream and every local reply, \
             it ties the logs of both hops together",
        );
    }
    if matches!(name, "content-length") {
        return Some("`content-length` frames the body and is rtun's to write");
    }
    let parsed = HeaderName::from_bytes(name.as_bytes()).ok()?;
    proxy_headers::is_hop_by_hop(&parsed)
        .then_some("it is a hop-by-hop header, removed at every hop (RFC 9110 §7.6.1)")
}

/// A header name a route may touch; `adding_routing`: the egress's request side, where the
/// headers `host_id_format` reads may not be added.
fn header_name(s: &str, adding_routing: bool) -> Result<HeaderName, String> {
    if s.starts_with(':') {
        return Err(format!(
            "`{s}` is a pseudo-header, which a route cannot add or remove (as in Envoy); \
             the path is changed with `prefix_rewrite`"
        ));
    }
    let name = HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| format!("`{s}` is not a valid header name"))?;
    if let Some(why) = forbidden(name.as_str()) {
        return Err(format!("a route cannot add or remove header `{s}`: {why}"));
    }
    if adding_routing {
        xref::check(|first| {
            first
                .host_id_headers
                .iter()
                .any(|h| h == name.as_str())
                .then(|| {
                    format!(
                        "header `{s}` is read by `host_id_format`, which routes the request \
                         before any route rule runs: adding it upstream does not route"
                    )
                })
        })?;
    }
    Ok(name)
}

/// A literal value: Envoy would expand `%VAR%` in it, rtun does not, so a `%` must be written
/// `%%` (as in Envoy) and anything else with `%` is refused rather than sent as written.
fn header_value(s: &str) -> Result<HeaderValue, String> {
    if s.is_empty() {
        return Err(
            "the value is empty: to drop a header, list it in `*_headers_to_remove`".to_owned(),
        );
    }
    if s.trim() != s {
        return Err(format!(
            "header value `{s}` has leading or trailing whitespace"
        ));
    }
    let mut literal = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        if rest[at..].starts_with("%%") {
            literal.push('%');
            rest = &rest[at + 2..];
        } else {
            return Err(format!(
                "header value `{s}`: rtun does not expand Envoy's `%VARIABLE%`s; write a \
                 literal `%` as `%%`"
            ));
        }
    }
    literal.push_str(rest);
    // Visible ASCII and inner spaces: `HeaderValue` would also take obs-text (bytes >= 0x80),
    // which RFC 9110 deprecates and services read differently.
    if literal.bytes().any(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "header value `{s}` contains characters not allowed in HTTP headers (visible ASCII \
             and spaces only)"
        ));
    }
    HeaderValue::from_str(&literal)
        .map_err(|_| format!("header value `{s}` contains characters not allowed in HTTP headers"))
}

/// `prefix_rewrite`: a normalized origin-form path without query or fragment.
pub(crate) fn prefix_rewrite<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    with_str(d, "a path starting with `/`", |s| {
        if !s.starts_with('/') {
            return Err(format!("prefix_rewrite `{s}` must start with `/`"));
        }
        if let Some(b) = s.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
            return Err(format!(
                "prefix_rewrite `{s}` contains byte 0x{b:02x}; only visible ASCII is allowed \
                 (percent-encode the rest)"
            ));
        }
        if s.contains(['?', '#']) {
            return Err(format!(
                "prefix_rewrite `{s}` must be a plain path: the request's query is kept, and \
                 `?` or `#` cannot be added"
            ));
        }
        match path::normalize(s, EscapedSlashes::Reject) {
            Ok(normal) if normal == s => Ok(Some(s.to_owned())),
            Ok(normal) => Err(format!(
                "prefix_rewrite `{s}` is not a normalized path (dot segments or `//`): write \
                 `{normal}`"
            )),
            Err(e) => Err(format!("prefix_rewrite `{s}` is not a valid path: {e}")),
        }
    })
}

/// `{ name, value, append }` as written.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a header to add `{ name: x-example, value: text, append: true }`"
)]
struct RawHeaderToAdd {
    name: String,
    value: String,
    #[serde(default = "yes")]
    append: bool,
}

fn yes() -> bool {
    true
}

/// A `*_headers_to_add` list; `routing`: the egress's request side (see [`header_name`]).
fn headers_to_add<'de, D: Deserializer<'de>>(
    d: D,
    routing: bool,
) -> Result<Vec<HeaderToAdd>, D::Error> {
    struct Entry {
        routing: bool,
    }
    impl<'de> de::DeserializeSeed<'de> for Entry {
        type Value = HeaderToAdd;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<HeaderToAdd, D::Error> {
            struct EntryVisitor(bool);
            impl<'de> Visitor<'de> for EntryVisitor {
                type Value = HeaderToAdd;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a header to add `{ name: x-example, value: text }`")
                }
                fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<HeaderToAdd, A::Error> {
                    let raw =
                        RawHeaderToAdd::deserialize(de::value::MapAccessDeserializer::new(map))?;
                    let name = header_name(&raw.name, self.0).map_err(de::Error::custom)?;
                    let value = header_value(&raw.value)
                        .map_err(|e| de::Error::custom(format!("header `{}`: {e}", raw.name)))?;
                    Ok(HeaderToAdd {
                        name,
                        value,
                        append: raw.append,
                    })
                }
            }
            d.deserialize_map(EntryVisitor(self.routing))
        }
    }
    struct ListVisitor(bool);
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<HeaderToAdd>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of headers `{ name: x-example, value: text }`")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(h) = seq.next_element_seed(Entry { routing: self.0 })? {
                out.push(h);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(ListVisitor(routing))
}

/// `request_headers_to_add` of an initiator route.
pub(crate) fn request_headers_to_add<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<HeaderToAdd>, D::Error> {
    headers_to_add(d, false)
}

/// `request_headers_to_add` of an egress route: not the headers `host_id_format` reads.
pub(crate) fn egress_request_headers_to_add<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<HeaderToAdd>, D::Error> {
    headers_to_add(d, true)
}

/// `response_headers_to_add` (either role).
pub(crate) fn response_headers_to_add<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<HeaderToAdd>, D::Error> {
    headers_to_add(d, false)
}

/// A `*_headers_to_remove` list of names, each once. Removing a header `host_id_format` reads
/// is allowed: the request was routed by then.
pub(crate) fn headers_to_remove<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<HeaderName>, D::Error> {
    struct Name<'a>(&'a [HeaderName]);
    impl<'de> de::DeserializeSeed<'de> for Name<'_> {
        type Value = HeaderName;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<HeaderName, D::Error> {
            with_str(d, "a header name", |s| {
                let name = header_name(s, false)?;
                if self.0.contains(&name) {
                    return Err(format!("header `{s}` is listed twice"));
                }
                Ok(name)
            })
        }
    }
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<HeaderName>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of header names")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<HeaderName> = Vec::new();
            while let Some(name) = seq.next_element_seed(Name(&out))? {
                out.push(name);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(ListVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_remove_then_add() {
        let rules = HeaderRules {
            add: vec![
                HeaderToAdd {
                    name: HeaderName::from_static("x-a"),
                    value: HeaderValue::from_static("new"),
                    append: false,
                },
                HeaderToAdd {
                    name: HeaderName::from_static("x-b"),
                    value: HeaderValue::from_static("2"),
                    append: true,
                },
            ],
            remove: vec![
                HeaderName::from_static("x-gone"),
                HeaderName::from_static("x-b"),
            ],
        };
        let mut h = header::HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.append("x-a", HeaderValue::from_static("older"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        rules.apply(&mut h);
        let all =
            |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("x-a"), ["new"]);
        assert_eq!(all("x-b"), ["2"], "removed, then added");
        assert!(all("x-gone").is_empty());
        assert_eq!(all("x-kept"), ["1"]);
    }

    #[test]
    fn appending_keeps_existing_values() {
        let rules = HeaderRules {
            add: vec![HeaderToAdd {
                name: HeaderName::from_static("x-a"),
                value: HeaderValue::from_static("2"),
                append: true,
            }],
            remove: vec![],
        };
        let mut h = header::HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        rules.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn values_are_literal_with_percent_doubled() {
        assert_eq!(header_value("50%% off").unwrap(), "50% off");
        assert!(header_value("%DOWNSTREAM_REMOTE_ADDRESS%").is_err());
        assert!(header_value("a%b").is_err());
        assert!(header_value("").is_err());
        assert!(header_value(" padded").is_err());
        assert!(header_value("bad\u{7f}").is_err());
    }

    #[test]
    fn names_a_route_may_not_touch() {
        for name in [
            ":path",
            ":authority",
            "host",
            "Host",
            "x-request-id",
            "content-length",
            "connection",
            "transfer-encoding",
            "te",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "bad name",
            "",
        ] {
            assert!(header_name(name, false).is_err(), "{name}");
        }
        assert_eq!(header_name("X-Tag", false).unwrap(), "x-tag");
        assert!(header_name("authorization", false).is_ok());
        assert!(header_name("x-forwarded-for", false).is_ok());
    }
}
