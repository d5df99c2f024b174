//! Path-prefix routing, first match wins (as Envoy's route table), and what a matched route
//! does to the path: Envoy's `prefix_rewrite` ([`rewrite_prefix`]).
//!
//! Route types implement [`Prefixed`] where they are defined (the configuration's routes do so
//! in `config`), so this module depends on none of them.

use http::uri::{PathAndQuery, Uri};

use super::path::{self, EscapedSlashes};

/// Anything with a path prefix can be routed.
pub trait Prefixed {
    fn prefix(&self) -> &str;
}

/// The first route whose prefix starts the request path, with its index in `routes`.
pub fn match_route<'r, R: Prefixed>(routes: &'r [R], path: &str) -> Option<(usize, &'r R)> {
    routes
        .iter()
        .enumerate()
        .find(|(_, r)| path.starts_with(r.prefix()))
}

/// A rewrite that would not yield a normalized path; the request is answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The rest of the path after the prefix begins with a dot segment (`/api..` under prefix
    /// `/api` and `prefix_rewrite: /v2/` would be `/v2/..`, which names `/`).
    #[error("the rewritten path would climb out of the route's prefix_rewrite")]
    DotSegment,
}

/// Envoy's `prefix_rewrite`: in `uri`, whose normalized path starts with `prefix` (the matched
/// route's), that prefix is replaced with `rewrite`; the query, scheme and authority are kept.
///
/// As in Envoy the prefix is replaced as text, so a prefix without a trailing `/` also matches
/// mid-segment (`/api` → `/v2` turns `/apix` into `/v2x`). Unlike Envoy, where `rewrite` ends
/// with `/` and the rest starts with one they are merged: `/api` → `/` turns `/api/x` into
/// `/x` (Envoy sends `//x`, which the next hop's normalization would merge anyway), so one
/// route strips a prefix with or without a trailing slash. The result is a normalized
/// origin-form path, like every path rtun forwards (`path`): if joining made a dot segment
/// (`/v2/` + `..`) the request is refused ([`RewriteError`]) rather than let it escape the
/// rewrite's target.
pub fn rewrite_prefix(uri: &Uri, prefix: &str, rewrite: &str) -> Result<Uri, RewriteError> {
    let rest = uri.path().strip_prefix(prefix).unwrap_or(uri.path());
    let rest = match rewrite.ends_with('/') {
        true => rest.strip_prefix('/').unwrap_or(rest),
        false => rest,
    };
    let mut rewritten = String::with_capacity(rewrite.len() + rest.len());
    rewritten.push_str(rewrite);
    rewritten.push_str(rest);
    // Escaped slashes were settled when the path was normalized: keep what is left of them.
    if path::normalize(&rewritten, EscapedSlashes::Keep).as_deref() != Ok(rewritten.as_str()) {
        return Err(RewriteError::DotSegment);
    }
    if let Some(query) = uri.query() {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    // Both halves are valid path bytes and the query is the request's own: this cannot fail,
    // but a failure is still an answer, not a panic.
    let path_and_query = PathAndQuery::try_from(rewritten).map_err(|_| RewriteError::DotSegment)?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| RewriteError::DotSegment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(uri: &str, prefix: &str, to: &str) -> Result<String, RewriteError> {
        rewrite_prefix(&uri.parse().unwrap(), prefix, to).map(|u| u.to_string())
    }

    #[test]
    fn prefix_is_replaced_and_query_kept() {
        let cases = [
            // (uri, prefix, rewrite, result)
            (
                "/api/users?id=1&x=%2F",
                "/api/",
                "/v2/",
                "/v2/users?id=1&x=%2F",
            ),
            ("/api/users", "/api", "/v2", "/v2/users"),
            ("/api", "/api", "/v2", "/v2"),
            ("/api?q", "/api", "/v2", "/v2?q"),
            // Envoy's `/prefix/` and `/prefix` → `/` pair, and one route doing both.
            ("/api/users", "/api/", "/", "/users"),
            ("/api/", "/api/", "/", "/"),
            ("/api", "/api", "/", "/"),
            ("/api/users", "/api", "/", "/users"),
            ("/api/?a=b", "/api", "/", "/?a=b"),
            // Text replacement, as in Envoy: mid-segment prefixes, missing slashes.
            ("/apix", "/api", "/v2", "/v2x"),
            ("/api/x", "/api/", "/v2", "/v2x"),
            // Empty remainder; a rewrite deeper than the prefix.
            ("/", "/", "/srv/", "/srv/"),
            ("/a/b", "/", "/srv/", "/srv/a/b"),
            ("/a/b", "/", "/srv", "/srva/b"),
            // Absolute form keeps scheme and authority.
            ("http://h:80/api/x?y", "/api", "/", "http://h:80/x?y"),
            // Escaped data in the rest is kept as it is.
            ("/api/a%2Fb", "/api", "/v2", "/v2/a%2Fb"),
        ];
        for (uri, prefix, to, want) in cases {
            assert_eq!(
                rewrite(uri, prefix, to).as_deref(),
                Ok(want),
                "{uri} {prefix} -> {to}"
            );
        }
    }

    #[test]
    fn joins_never_make_double_slashes() {
        assert_eq!(rewrite("/api/x", "/api", "/v2/").as_deref(), Ok("/v2/x"));
        assert_eq!(rewrite("/api/x/", "/api", "/").as_deref(), Ok("/x/"));
    }

    #[test]
    fn a_join_that_makes_a_dot_segment_is_refused() {
        for (uri, prefix, to) in [
            ("/api..", "/api", "/v2/"),
            ("/api../etc", "/api", "/v2/"),
            ("/api.", "/api", "/v2/"),
            ("/api./x", "/api", "/"),
            ("/api..?q", "/api", "/"),
        ] {
            assert_eq!(
                rewrite(uri, prefix, to),
                Err(RewriteError::DotSegment),
                "{uri} {prefix} -> {to}"
            );
        }
        // Without a slash at the join, dots are part of a segment.
        assert_eq!(rewrite("/api..", "/api", "/v2").as_deref(), Ok("/v2.."));
        assert_eq!(rewrite("/api...x", "/api", "/").as_deref(), Ok("/...x"));
    }

    struct R(&'static str);
    impl Prefixed for R {
        fn prefix(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn first_match_wins() {
        let routes = [R("/api/v2"), R("/api"), R("/")];
        let matched = |path| match_route(&routes, path).map(|(i, r)| (i, r.0));
        assert_eq!(matched("/api/v2/x"), Some((0, "/api/v2")));
        assert_eq!(matched("/api/v1"), Some((1, "/api")));
        assert_eq!(matched("/other"), Some((2, "/")));
        assert!(match_route(&routes[..2], "/other").is_none());
    }
}
