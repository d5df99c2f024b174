//! Test PKI: a CA, server and client certificates generated with rcgen into a temporary
//! directory, config shapes pointing at them, and an in-memory handshake driver.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use tempfile::TempDir;
use tokio::io::DuplexStream;

use super::{ClientStream, ClientTls, HandshakeError, ServerStream, ServerTls};
use crate::config::{ClientTlsConfig, ServerTlsConfig};

/// A CA in a temporary directory that issues leaf certificates into the same directory.
pub(crate) struct Pki {
    pub dir: TempDir,
    pub ca_path: PathBuf,
    pub ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and key on disk.
pub(crate) struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub der: CertificateDer<'static>,
    pub spki_der: Vec<u8>,
}

impl Leaf {
    /// A server config presenting this leaf.
    pub fn server_cfg(&self, client_ca: Option<&Path>) -> ServerTlsConfig {
        ServerTlsConfig {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: client_ca.map(Path::to_path_buf),
        }
    }
}

impl Pki {
    pub fn new(ca_name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, cert.pem()).unwrap();
        Self {
            dir,
            ca_path,
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes `contents` to `name` in the directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Issues a leaf with a fresh key into `{stem}.pem` / `{stem}-key.pem` (overwriting).
    pub fn issue(&self, stem: &str, edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // `new` starts with a default CN; the callers choose the subject in push order.
        params.distinguished_name = DistinguishedName::new();
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.write(&format!("{stem}.pem"), &cert.pem());
        let key_path = self.write(&format!("{stem}-key.pem"), &key.serialize_pem());
        Leaf {
            cert: cert_path,
            key: key_path,
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            spki_der: key.subject_public_key_info(),
        }
    }

    /// A server certificate for `names` (DNS SANs).
    pub fn server(&self, stem: &str, names: &[&str]) -> Leaf {
        self.issue(stem, |p| {
            p.distinguished_name.push(DnType::CommonName, names[0]);
            p.subject_alt_names = dns_sans(names);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        })
    }

    /// A server certificate that expired in 2021.
    pub fn expired_server(&self, stem: &str, names: &[&str]) -> Leaf {
        self.issue(stem, |p| {
            p.distinguished_name.push(DnType::CommonName, names[0]);
            p.subject_alt_names = dns_sans(names);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    /// A client certificate for an edge node: subject `O=acme, OU=edge-west, CN=edge-42`,
    /// one URI SAN and one DNS SAN.
    pub fn client(&self, stem: &str, uri: &str, dns: &str) -> Leaf {
        self.issue(stem, |p| {
            p.distinguished_name.push(DnType::OrganizationName, "acme");
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, "edge-west");
            p.distinguished_name.push(DnType::CommonName, "edge-42");
            p.subject_alt_names = vec![
                SanType::URI(uri.try_into().unwrap()),
                SanType::DnsName(dns.try_into().unwrap()),
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        })
    }

    /// A client config trusting this CA, optionally presenting `cert`.
    pub fn client_cfg(&self, cert: Option<&Leaf>, spki_pins: Vec<String>) -> ClientTlsConfig {
        ClientTlsConfig {
            cert: cert.map(|l| l.cert.clone()),
            key: cert.map(|l| l.key.clone()),
            ca: Some(self.ca_path.clone()),
            spki_pins,
            sni: None,
        }
    }
}

fn dns_sans(names: &[&str]) -> Vec<SanType> {
    names
        .iter()
        .map(|n| SanType::DnsName((*n).try_into().unwrap()))
        .collect()
}

/// Both sides of a handshake over an in-memory pipe, driven concurrently.
pub(crate) async fn handshake(
    server: &ServerTls,
    client: &ClientTls,
) -> (
    Result<ServerStream<DuplexStream>, HandshakeError>,
    Result<ClientStream<DuplexStream>, HandshakeError>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    futures_util::future::join(super::accept(server, a), super::connect(client, b)).await
}
