//! mTLS identity binding, as Envoy's `ReverseTunnel.validation`: formats evaluated over the
//! verified client certificate must equal the handshake's identity headers.
//!
//! A format is literal text mixed with the operators `%DOWNSTREAM_PEER_URI_SAN%`,
//! `%DOWNSTREAM_PEER_DNS_SAN%`, `%DOWNSTREAM_PEER_SUBJECT%` and
//! `%DOWNSTREAM_PEER_FINGERPRINT_256%` (lowercase hex, no colons); `%%` is a literal `%`.
//! Formats are parsed once, at configuration load.
//!
//! SAN operators stand for a list: the format matches when ANY SAN of that list, put in place of
//! the operator, yields the header's value (every occurrence of one operator takes the same SAN;
//! two different list operators are tried in every combination). A certificate without such
//! SANs yields nothing, which matches nothing.
//!
//! No certificate while a binding is configured is 401; a certificate whose values do not
//! match is 403.

use std::fmt;

use super::Denial;
use crate::protocol::TunnelIdentity;
use crate::tls::PeerCertificate;

/// SANs of one kind considered per certificate; a certificate with more is not sensible.
const MAX_SANS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    UriSan,
    DnsSan,
    Subject,
    Fingerprint,
}

/// A parsed identity format.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerFormat {
    text: String,
    parts: Vec<Part>,
}

/// Why a format does not parse; `column` is 1-based, in characters of the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column} of the format: {message}")]
pub struct PeerFormatError {
    pub column: usize,
    pub message: String,
}

impl PeerFormat {
    /// Parses `text`; an empty format (the empty literal) is allowed.
    pub fn parse(text: &str) -> Result<Self, PeerFormatError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let column = text.len() - rest.len() + start;
            let column = text[..column].chars().count() + 1;
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
                continue;
            }
            let Some(end) = after.find('%') else {
                return Err(PeerFormatError {
                    column,
                    message: "`%` opens an operator that is never closed (write `%%` for a \
                              literal `%`)"
                        .into(),
                });
            };
            let part = match &after[..end] {
                "DOWNSTREAM_PEER_URI_SAN" => Part::UriSan,
                "DOWNSTREAM_PEER_DNS_SAN" => Part::DnsSan,
                "DOWNSTREAM_PEER_SUBJECT" => Part::Subject,
                "DOWNSTREAM_PEER_FINGERPRINT_256" => Part::Fingerprint,
                other => {
                    return Err(PeerFormatError {
                        column,
                        message: format!(
                            "unknown operator `%{other}%`: use %DOWNSTREAM_PEER_URI_SAN%, \
                             %DOWNSTREAM_PEER_DNS_SAN%, %DOWNSTREAM_PEER_SUBJECT% or \
                             %DOWNSTREAM_PEER_FINGERPRINT_256%"
                        ),
                    })
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    /// The format as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether some evaluation of this format over `cert` equals `value`.
    pub fn matches(&self, cert: &PeerCertificate, value: &str) -> bool {
        self.any_value(cert, |v| v == value)
    }

    /// Every value this format yields over `cert`, in certificate order, without repeats: one
    /// per choice of SAN for each list operator. Empty when a list operator has no SAN. The
    /// egress listener takes a request's tenant from here (`crate::auth::tenant`).
    pub fn values(&self, cert: &PeerCertificate) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        self.any_value(cert, |v| {
            if seen.insert(v.clone()) {
                out.push(v);
            }
            false
        });
        out
    }

    /// Calls `found` with each evaluation until it returns true; whether one did.
    fn any_value(&self, cert: &PeerCertificate, mut found: impl FnMut(String) -> bool) -> bool {
        let uses = |kind: &Part| self.parts.contains(kind);
        // One SAN per list operator per evaluation; `None` for an operator not used.
        let choices = |used: bool, sans: &[String]| -> Vec<Option<usize>> {
            match used {
                true => (0..sans.len().min(MAX_SANS)).map(Some).collect(),
                false => vec![None],
            }
        };
        let uris = choices(uses(&Part::UriSan), &cert.uri_sans);
        let dns = choices(uses(&Part::DnsSan), &cert.dns_sans);
        uris.iter().any(|&uri| {
            dns.iter()
                .any(|&dns| self.render(cert, uri, dns).is_some_and(&mut found))
        })
    }

    fn render(
        &self,
        cert: &PeerCertificate,
        uri: Option<usize>,
        dns: Option<usize>,
    ) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::UriSan => out.push_str(cert.uri_sans.get(uri?)?),
                Part::DnsSan => out.push_str(cert.dns_sans.get(dns?)?),
                Part::Subject => out.push_str(&cert.subject),
                Part::Fingerprint => out.push_str(&cert.fingerprint_sha256),
            }
        }
        Some(out)
    }
}

impl fmt::Debug for PeerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// Which identity headers the client certificate must vouch for (at least one is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsBinding {
    pub node_id_format: Option<PeerFormat>,
    pub cluster_id_format: Option<PeerFormat>,
    pub tenant_id_format: Option<PeerFormat>,
}

impl MtlsBinding {
    /// `Ok` when every configured format matches its header over `cert`.
    pub fn check(
        &self,
        cert: Option<&PeerCertificate>,
        identity: &TunnelIdentity,
    ) -> Result<(), Denial> {
        let Some(cert) = cert else {
            return Err(Denial::unauthenticated("A client certificate is required"));
        };
        let checks = [
            (&self.node_id_format, &identity.node_id, "node id"),
            (&self.cluster_id_format, &identity.cluster_id, "cluster id"),
            (&self.tenant_id_format, &identity.tenant_id, "tenant id"),
        ];
        for (format, value, what) in checks {
            if let Some(format) = format {
                if !format.matches(cert, value) {
                    return Err(Denial::forbidden(format!(
                        "The client certificate does not match the {what}"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> PeerCertificate {
        PeerCertificate {
            uri_sans: vec![
                "spiffe://acme.test/ns/edge".into(),
                "urn:node:edge-42".into(),
            ],
            dns_sans: vec!["edge-42.acme.test".into(), "edge-42".into()],
            subject: "CN=edge-42,O=acme".into(),
            fingerprint_sha256: "ab".repeat(32),
        }
    }

    fn f(s: &str) -> PeerFormat {
        PeerFormat::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn operators_and_literals() {
        let c = cert();
        assert!(
            f("%DOWNSTREAM_PEER_DNS_SAN%").matches(&c, "edge-42"),
            "any SAN"
        );
        assert!(f("%DOWNSTREAM_PEER_DNS_SAN%").matches(&c, "edge-42.acme.test"));
        assert!(!f("%DOWNSTREAM_PEER_DNS_SAN%").matches(&c, "edge-43"));
        assert!(f("%DOWNSTREAM_PEER_URI_SAN%").matches(&c, "urn:node:edge-42"));
        assert!(f("%DOWNSTREAM_PEER_SUBJECT%").matches(&c, "CN=edge-42,O=acme"));
        assert!(f("%DOWNSTREAM_PEER_FINGERPRINT_256%").matches(&c, &"ab".repeat(32)));
        assert!(f("acme").matches(&c, "acme"), "a literal");
        assert!(f("").matches(&c, ""), "the empty literal");
        assert!(f("x-%DOWNSTREAM_PEER_DNS_SAN%-y").matches(&c, "x-edge-42-y"));
        assert!(f("100%%").matches(&c, "100%"));
        assert!(
            f("%DOWNSTREAM_PEER_DNS_SAN%/%DOWNSTREAM_PEER_DNS_SAN%").matches(&c, "edge-42/edge-42")
        );
        assert!(
            !f("%DOWNSTREAM_PEER_DNS_SAN%/%DOWNSTREAM_PEER_DNS_SAN%")
                .matches(&c, "edge-42/edge-42.acme.test"),
            "one operator takes one SAN per evaluation"
        );
        assert!(f("%DOWNSTREAM_PEER_DNS_SAN%|%DOWNSTREAM_PEER_URI_SAN%")
            .matches(&c, "edge-42|urn:node:edge-42"));
        let bare = PeerCertificate {
            uri_sans: vec![],
            dns_sans: vec![],
            ..cert()
        };
        assert!(
            !f("%DOWNSTREAM_PEER_DNS_SAN%").matches(&bare, ""),
            "no SAN, no value"
        );
        assert!(!f("x%DOWNSTREAM_PEER_URI_SAN%").matches(&bare, "x"));
    }

    #[test]
    fn values_lists_every_evaluation_once() {
        let c = cert();
        assert_eq!(
            f("t-%DOWNSTREAM_PEER_DNS_SAN%").values(&c),
            ["t-edge-42.acme.test", "t-edge-42"]
        );
        assert_eq!(f("acme").values(&c), ["acme"]);
        assert_eq!(
            f("%DOWNSTREAM_PEER_SUBJECT%").values(&c),
            ["CN=edge-42,O=acme"]
        );
        let same = PeerCertificate {
            dns_sans: vec!["a".into(), "a".into()],
            ..cert()
        };
        assert_eq!(f("%DOWNSTREAM_PEER_DNS_SAN%").values(&same), ["a"]);
        let bare = PeerCertificate {
            uri_sans: vec![],
            ..cert()
        };
        assert!(f("%DOWNSTREAM_PEER_URI_SAN%").values(&bare).is_empty());
    }

    #[test]
    fn parse_errors_have_columns() {
        let e = PeerFormat::parse("ab%DOWNSTREAM_PEER_NOPE%").unwrap_err();
        assert_eq!(e.column, 3);
        assert!(e.message.contains("DOWNSTREAM_PEER_NOPE"), "{e}");
        let e = PeerFormat::parse("é%DOWNSTREAM").unwrap_err();
        assert_eq!(e.column, 2, "columns count characters");
        assert!(e.to_string().starts_with("column 2 of the format: "), "{e}");
        assert_eq!(
            f("a%%b%DOWNSTREAM_PEER_SUBJECT%").as_str(),
            "a%%b%DOWNSTREAM_PEER_SUBJECT%"
        );
    }

    #[test]
    fn binding_checks_every_configured_header() {
        let binding = MtlsBinding {
            node_id_format: Some(f("%DOWNSTREAM_PEER_DNS_SAN%")),
            cluster_id_format: None,
            tenant_id_format: Some(f("acme")),
        };
        let id = |node: &str, cluster: &str, tenant: &str| TunnelIdentity {
            node_id: node.into(),
            cluster_id: cluster.into(),
            tenant_id: tenant.into(),
        };
        let c = cert();
        assert_eq!(
            binding.check(Some(&c), &id("edge-42", "any", "acme")),
            Ok(())
        );
        assert!(matches!(
            binding.check(None, &id("edge-42", "any", "acme")),
            Err(Denial::Unauthenticated(_))
        ));
        for bad in [id("edge-43", "c", "acme"), id("edge-42", "c", "globex")] {
            assert!(matches!(
                binding.check(Some(&c), &bad),
                Err(Denial::Forbidden(_))
            ));
        }
    }
}
