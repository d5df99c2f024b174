//! The URL under load: parsing, checking what loadgen can speak, and resolving the
//! address to connect to.

use std::net::{SocketAddr, ToSocketAddrs};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("malformed URL {url:?}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url}: https is not supported yet (loadgen has no TLS support); use http://")]
    HttpsUnsupported { url: String },
    #[error("{url}: unsupported scheme {scheme:?}; use http://")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// A parsed `http://host[:port]/path?query` target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Full absolute URI (used for HTTP/2 `:scheme`/`:authority`).
    pub uri: Uri,
    pub authority: Authority,
    pub path_and_query: PathAndQuery,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let malformed = |reason: &str| TargetError::Malformed {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| malformed(&e.to_string()))?;
        let scheme = uri
            .scheme()
            .ok_or_else(|| malformed("missing scheme (expected http://)"))?;
        if *scheme == Scheme::HTTPS {
            return Err(TargetError::HttpsUnsupported {
                url: url.to_string(),
            });
        }
        if *scheme != Scheme::HTTP {
            return Err(TargetError::UnsupportedScheme {
                url: url.to_string(),
                scheme: scheme.as_str().to_string(),
            });
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| malformed("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(malformed("user info is not supported"));
        }
        let host = authority
            .host()
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        if host.is_empty() {
            return Err(malformed("missing host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let path_and_query = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query(path_and_query.clone())
            .build()
            .map_err(|e| malformed(&e.to_string()))?;
        Ok(Target {
            uri,
            authority,
            path_and_query,
            host,
            port,
        })
    }

    /// Resolves the host, preferring IPv4 addresses.
    pub fn resolve(&self) -> Result<SocketAddr, TargetError> {
        let resolve_err = |reason: String| TargetError::Resolve {
            host: self.host.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| resolve_err(crate::outcome::describe_io_error(&e)))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| resolve_err("no addresses".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_path() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?x=1").expect("valid");
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 8080);
        assert_eq!(t.path_and_query.as_str(), "/a/b?x=1");
        assert_eq!(t.uri.to_string(), "http://127.0.0.1:8080/a/b?x=1");
    }

    #[test]
    fn defaults_port_and_path() {
        let t = Target::parse("http://localhost").expect("valid");
        assert_eq!(t.port, 80);
        assert_eq!(t.path_and_query.as_str(), "/");
    }

    #[test]
    fn rejects_https_and_garbage() {
        assert!(matches!(
            Target::parse("https://127.0.0.1/"),
            Err(TargetError::HttpsUnsupported { .. })
        ));
        assert!(matches!(
            Target::parse("ftp://127.0.0.1/"),
            Err(TargetError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            Target::parse("not a url"),
            Err(TargetError::Malformed { .. })
        ));
        assert!(matches!(
            Target::parse("/just/a/path"),
            Err(TargetError::Malformed { .. })
        ));
        assert!(matches!(
            Target::parse("http://u@h/"),
            Err(TargetError::Malformed { .. })
        ));
    }

    #[test]
    fn resolves_loopback() {
        let t = Target::parse("http://127.0.0.1:1/").expect("valid");
        assert_eq!(t.resolve().expect("resolves").to_string(), "127.0.0.1:1");
    }
}
