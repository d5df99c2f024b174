//! The request target a client names, checked and put in its one form before anything is
//! routed by it (ARCHITECTURE.md §4, phase 2): the authority (`Host`) and the path.
//!
//! This module owns the `Host` rules of RFC 9112 §3.2 and RFC 9113 §8.3.1, as the egress
//! applies them:
//! - more than one `Host` field is an error ([`TargetError::DuplicateHost`]), and so is one
//!   whose value is not an authority ([`TargetError::InvalidHost`]);
//! - an HTTP/1.1 request must say which host it is for: a `Host` field or an absolute-form
//!   target ([`TargetError::MissingHost`]);
//! - when the target carries an authority too (HTTP/1.1 absolute form, HTTP/2 `:authority`),
//!   `Host` must name the same host and port ([`TargetError::HostMismatch`]). RFC 9112 lets a
//!   proxy ignore `Host` there instead; rtun refuses, because `host_id_format` may read `Host`
//!   while the authority is what goes upstream, and the two must not disagree.
//!
//! The path is normalized by [`super::path`]; the query is left as sent.

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{request, Version};

use super::path::{self, EscapedSlashes, PathError};

/// Why a request target is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("the Host header is not a valid authority")]
    InvalidHost,
    #[error("an HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("the Host header does not match the request target's authority")]
    HostMismatch,
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Checks the request's `Host` against its target and normalizes its path in place.
pub fn check_and_normalize(
    parts: &mut request::Parts,
    escaped: EscapedSlashes,
) -> Result<(), TargetError> {
    check_host(parts)?;
    parts.uri = path::normalize_uri(&parts.uri, escaped)?;
    Ok(())
}

/// The `Host` rules (module docs).
pub fn check_host(parts: &request::Parts) -> Result<(), TargetError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::DuplicateHost);
    }
    let host = match host {
        // RFC 9112 §3.2: empty when the target has no authority.
        Some(value) if !value.is_empty() => Some(parse_host(value)?),
        _ => None,
    };
    match (host, parts.uri.authority()) {
        (None, None) if parts.version == Version::HTTP_11 => Err(TargetError::MissingHost),
        (Some(host), Some(authority)) if !same_authority(&host, authority, parts) => {
            Err(TargetError::HostMismatch)
        }
        _ => Ok(()),
    }
}

/// A `Host` value: `host[:port]`, no user info.
fn parse_host(value: &HeaderValue) -> Result<Authority, TargetError> {
    let authority = Authority::try_from(value.as_bytes()).map_err(|_| TargetError::InvalidHost)?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(TargetError::InvalidHost);
    }
    Ok(authority)
}

/// Same host (case-insensitive) and same port, a missing port being the scheme's default.
fn same_authority(host: &Authority, target: &Authority, parts: &request::Parts) -> bool {
    let default_port = match parts.uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => 443,
        _ => 80,
    };
    host.host().eq_ignore_ascii_case(target.host())
        && host.port_u16().unwrap_or(default_port) == target.port_u16().unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, uri: &str, hosts: &[&'static str]) -> request::Parts {
        let mut builder = http::Request::builder().version(version).uri(uri);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn check(version: Version, uri: &str, hosts: &[&'static str]) -> Result<(), TargetError> {
        check_host(&parts(version, uri, hosts))
    }

    #[test]
    fn one_host_is_required_for_http11() {
        let h11 = Version::HTTP_11;
        assert_eq!(check(h11, "/a", &["example.com"]), Ok(()));
        assert_eq!(
            check(h11, "/a", &["a.example", "b.example"]),
            Err(TargetError::DuplicateHost)
        );
        assert_eq!(
            check(h11, "/a", &["a.example", "a.example"]),
            Err(TargetError::DuplicateHost)
        );
        assert_eq!(check(h11, "/a", &[]), Err(TargetError::MissingHost));
        assert_eq!(check(h11, "/a", &[""]), Err(TargetError::MissingHost));
        // HTTP/1.0 and HTTP/2 (`:authority`) need no Host field.
        assert_eq!(check(Version::HTTP_10, "/a", &[]), Ok(()));
        assert_eq!(check(Version::HTTP_2, "http://h2.example/a", &[]), Ok(()));
        // The absolute form carries its own authority.
        assert_eq!(check(h11, "http://example.com/a", &[]), Ok(()));
    }

    #[test]
    fn a_host_must_be_an_authority() {
        let h11 = Version::HTTP_11;
        assert_eq!(
            check(h11, "/a", &["user@example.com"]),
            Err(TargetError::InvalidHost)
        );
        assert_eq!(
            check(h11, "/a", &["exa mple.com"]),
            Err(TargetError::InvalidHost)
        );
        assert_eq!(check(h11, "/a", &["example.com:8080"]), Ok(()));
        assert_eq!(check(h11, "/a", &["[::1]:8080"]), Ok(()));
    }

    #[test]
    fn host_and_target_authority_must_agree() {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let agree = [
                ("http://example.com/a", "example.com"),
                ("http://Example.COM/a", "example.com"),
                ("http://example.com:80/a", "example.com"),
                ("http://example.com/a", "example.com:80"),
                ("https://example.com/a", "example.com:443"),
                ("http://example.com:8080/a", "EXAMPLE.com:8080"),
            ];
            for (uri, host) in agree {
                let p = parts(version, uri, &[]);
                let mut p2 = p;
                p2.headers
                    .insert(header::HOST, HeaderValue::from_static(host));
                assert_eq!(check_host(&p2), Ok(()), "{uri} / {host}");
            }
            let disagree = [
                ("http://example.com/a", "other.example"),
                ("http://example.com/a", "example.com:8080"),
                ("http://example.com:8080/a", "example.com"),
                ("https://example.com/a", "example.com:80"),
            ];
            for (uri, host) in disagree {
                let mut p = parts(version, uri, &[]);
                p.headers
                    .insert(header::HOST, HeaderValue::from_static(host));
                assert_eq!(
                    check_host(&p),
                    Err(TargetError::HostMismatch),
                    "{uri} / {host}"
                );
            }
        }
    }

    #[test]
    fn the_path_is_normalized_and_the_query_kept() {
        let mut p = parts(Version::HTTP_11, "/public/./x//y/../z?q=/../", &["h"]);
        check_and_normalize(&mut p, EscapedSlashes::Reject).unwrap();
        assert_eq!(p.uri, "/public/x/z?q=/../");

        let mut p = parts(Version::HTTP_11, "/a%2Fb", &["h"]);
        assert_eq!(
            check_and_normalize(&mut p, EscapedSlashes::Reject),
            Err(TargetError::Path(PathError::EscapedSlash(2)))
        );
        let mut p = parts(Version::HTTP_11, "/a%zz", &["h"]);
        let err = check_and_normalize(&mut p, EscapedSlashes::Keep).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid percent-encoding at byte 2 of the path"
        );
    }
}
