//! Facts about the verified peer certificate, for mTLS identity binding (DESIGN §10): the
//! values behind Envoy's `%DOWNSTREAM_PEER_URI_SAN%`, `%DOWNSTREAM_PEER_DNS_SAN%`,
//! `%DOWNSTREAM_PEER_SUBJECT%` and `%DOWNSTREAM_PEER_FINGERPRINT_256%`, which the handshake's
//! identity headers must equal.
//!
//! Only the leaf certificate is read, and only after rustls has verified the chain (the
//! listener has `client_ca` set); without a client certificate there are no facts. The subject
//! is written as OpenSSL's `XN_FLAG_RFC2253` does (what Envoy shows): RDNs last-to-first,
//! separated by `,`, multi-valued RDNs joined by `+`, OpenSSL short names (`CN`, `O`, `OU`,
//! `DC`, `emailAddress`…) or the dotted OID, RFC 2253 escaping, bytes outside printable ASCII
//! as `\XX`, and values that are not strings as `#` and the hex of their DER.

use std::fmt::Write as _;

use rustls::CommonState;
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Tag, ToDer};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::ServerStream;

/// Identity facts of a peer's leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// URI subject alternative names (for example SPIFFE ids), in certificate order.
    pub uri_sans: Vec<String>,
    /// DNS subject alternative names, in certificate order.
    pub dns_sans: Vec<String>,
    /// The subject distinguished name, RFC 2253 style (`CN=edge-42,O=acme`).
    pub subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex without separators (`openssl x509
    /// -fingerprint -sha256`, lowercased, colons removed).
    pub fingerprint_sha256: String,
}

/// The peer's certificate could not be read (it was verified by rustls, so this means the
/// certificate uses encodings rustls accepts and x509-parser does not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer certificate could not be parsed: {0}")]
pub struct PeerCertError(String);

impl PeerCertificate {
    /// Facts of one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PeerCertError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| PeerCertError(e.to_string()))?;
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| PeerCertError(e.to_string()))?;
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::URI(uri) => uri_sans.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => dns_sans.push((*dns).to_owned()),
                _ => {}
            }
        }
        Ok(Self {
            uri_sans,
            dns_sans,
            subject: rfc2253(cert.subject()),
            fingerprint_sha256: fingerprint_sha256(der),
        })
    }

    /// Facts of the peer's leaf certificate on an established connection (a
    /// `rustls::ServerConnection` or `ClientConnection` dereferences to `CommonState`);
    /// `Ok(None)` if the peer presented none.
    pub fn from_connection(conn: &CommonState) -> Result<Option<Self>, PeerCertError> {
        match conn.peer_certificates().and_then(|chain| chain.first()) {
            Some(leaf) => Self::from_der(leaf).map(Some),
            None => Ok(None),
        }
    }

    /// Facts of the client's certificate on a server-side tokio-rustls stream.
    pub fn from_stream<T>(stream: &ServerStream<T>) -> Result<Option<Self>, PeerCertError> {
        Self::from_connection(stream.get_ref().1)
    }
}

/// Lowercase hex SHA-256 of `der`, no separators.
pub(crate) fn fingerprint_sha256(der: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(der) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A distinguished name as OpenSSL prints it with `XN_FLAG_RFC2253`.
fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| format!("{}={}", attribute_name(atv), attribute_value(atv)))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// OpenSSL's short name for the attribute type, or its dotted OID.
fn attribute_name(atv: &AttributeTypeAndValue<'_>) -> String {
    let oid = atv.attr_type().to_id_string();
    let short = match oid.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return oid,
    };
    short.to_owned()
}

/// The attribute's value, decoded and escaped, or `#hex` of its DER if it is not a string.
fn attribute_value(atv: &AttributeTypeAndValue<'_>) -> String {
    let any = atv.attr_value();
    let text: Option<String> = match any.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(any.data).ok().map(str::to_owned),
        // Latin-1 in practice.
        Tag::T61String => Some(any.data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = any
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => any
            .data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    };
    match text {
        Some(text) => escape_rfc2253(&text),
        None => {
            let der = any.to_der_vec().unwrap_or_default();
            let mut out = String::with_capacity(1 + 2 * der.len());
            out.push('#');
            for b in der {
                let _ = write!(out, "{b:02X}");
            }
            out
        }
    }
}

/// RFC 2253 escaping as OpenSSL does it (`ASN1_STRFLGS_RFC2253`): `,+"\<>;` get a backslash,
/// so do a leading `#` or space and a trailing space; control characters and every byte of a
/// non-ASCII character become `\XX`.
fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, ch) in value.chars().enumerate() {
        match ch {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(ch);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            ' '..='~' => out.push(ch),
            _ => {
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rcgen::{DnType, DnValue, SanType};

    use super::*;
    use crate::tls::testing::{handshake, Pki};
    use crate::tls::{ClientTls, ServerTls};

    #[test]
    fn facts_of_an_edge_certificate() {
        let pki = Pki::new("facts CA");
        let edge = pki.client("edge", "spiffe://acme/node/edge-42", "edge-42.acme.test");
        let facts = PeerCertificate::from_der(&edge.der).unwrap();
        assert_eq!(facts.uri_sans, vec!["spiffe://acme/node/edge-42"]);
        assert_eq!(facts.dns_sans, vec!["edge-42.acme.test"]);
        // DER order is O, OU, CN; RFC 2253 writes the last RDN first.
        assert_eq!(facts.subject, "CN=edge-42,OU=edge-west,O=acme");
        assert_eq!(facts.fingerprint_sha256.len(), 64);
        assert!(facts
            .fingerprint_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(PeerCertificate::from_der(b"junk").is_err());
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            fingerprint_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fingerprint_matches_openssl_when_available() {
        let pki = Pki::new("facts CA");
        let edge = pki.client("edge", "spiffe://acme/node/edge-42", "edge-42.acme.test");
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&edge.cert)
            .output();
        let Ok(out) = out.map_err(|e| eprintln!("skipped: openssl not available: {e}")) else {
            return;
        };
        assert!(out.status.success());
        // "sha256 Fingerprint=AB:CD:…" (the prefix's case varies between versions).
        let text = String::from_utf8_lossy(&out.stdout);
        let (_, hex) = text.trim().split_once('=').unwrap();
        let openssl = hex.replace(':', "").to_ascii_lowercase();
        let facts = PeerCertificate::from_der(&edge.der).unwrap();
        assert_eq!(facts.fingerprint_sha256, openssl);
    }

    #[test]
    fn subject_matches_openssl_rfc2253_when_available() {
        let pki = Pki::new("facts CA");
        let odd = pki.issue("odd", |p| {
            p.distinguished_name.push(DnType::CountryName, "DE");
            p.distinguished_name
                .push(DnType::OrganizationName, "Acme, Inc.");
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, " lead+trail ");
            p.distinguished_name.push(
                DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                "acme",
            );
            p.distinguished_name.push(DnType::CommonName, "#Müller;<x>");
            p.subject_alt_names = vec![SanType::DnsName("odd.test".try_into().unwrap())];
        });
        let facts = PeerCertificate::from_der(&odd.der).unwrap();
        assert_eq!(
            facts.subject,
            "CN=\\#M\\C3\\BCller\\;\\<x\\>,DC=acme,OU=\\ lead\\+trail\\ ,O=Acme\\, Inc.,C=DE"
        );
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(&odd.cert)
            .output();
        let Ok(out) = out.map_err(|e| eprintln!("skipped: openssl not available: {e}")) else {
            return;
        };
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let openssl = text.trim().strip_prefix("subject=").unwrap();
        assert_eq!(facts.subject, openssl);
    }

    #[test]
    fn bmp_strings_and_control_characters() {
        let pki = Pki::new("facts CA");
        let bmp = pki.issue("bmp", |p| {
            p.distinguished_name.push(
                DnType::CommonName,
                DnValue::BmpString("bmp".try_into().unwrap()),
            );
        });
        assert_eq!(
            PeerCertificate::from_der(&bmp.der).unwrap().subject,
            "CN=bmp"
        );
        assert_eq!(escape_rfc2253("a\u{1}b"), "a\\01b");
    }

    #[test]
    fn non_string_values_are_dumped_as_der() {
        use x509_parser::asn1_rs::Any;
        use x509_parser::oid_registry::{OID_PKCS9_EMAIL_ADDRESS, OID_X509_COMMON_NAME};
        let int = AttributeTypeAndValue::new(
            OID_X509_COMMON_NAME,
            Any::from_tag_and_data(Tag::Integer, &[0x05]),
        );
        assert_eq!(attribute_name(&int), "CN");
        assert_eq!(attribute_value(&int), "#020105");
        let unknown = AttributeTypeAndValue::new(
            x509_parser::der_parser::oid!(1.2.3 .4),
            Any::from_tag_and_data(Tag::Utf8String, b"x"),
        );
        assert_eq!(attribute_name(&unknown), "1.2.3.4");
        let email = AttributeTypeAndValue::new(
            OID_PKCS9_EMAIL_ADDRESS,
            Any::from_tag_and_data(Tag::Ia5String, b"ops@acme.test"),
        );
        assert_eq!(
            format!("{}={}", attribute_name(&email), attribute_value(&email)),
            "emailAddress=ops@acme.test"
        );
    }

    #[monoio::test]
    async fn facts_from_a_real_mtls_handshake() {
        let pki = Pki::new("facts CA");
        let srv = pki.server("srv", &["responder.test"]);
        let server = ServerTls::load(&srv.server_cfg(Some(&pki.ca_path)), &[]).unwrap();
        let edge = pki.client("edge", "spiffe://acme/node/edge-42", "edge-42.acme.test");
        let client =
            ClientTls::load(&pki.client_cfg(Some(&edge), vec![]), "responder.test", &[]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        let (s, c) = (s.unwrap(), c.unwrap());
        let facts = PeerCertificate::from_stream(&s).unwrap().unwrap();
        assert_eq!(facts, PeerCertificate::from_der(&edge.der).unwrap());
        assert_eq!(facts.subject, "CN=edge-42,OU=edge-west,O=acme");
        // The client side can read the server's facts the same way.
        let server_facts = PeerCertificate::from_connection(c.get_ref().1)
            .unwrap()
            .unwrap();
        assert_eq!(server_facts.dns_sans, vec!["responder.test"]);
    }
}
