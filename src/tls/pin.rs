//! SPKI pins: base64 SHA-256 digests of a certificate's SubjectPublicKeyInfo, the form Envoy's
//! `verify_certificate_spki` and HPKP use (`openssl x509 -pubkey -noout | openssl pkey -pubin
//! -outform der | openssl dgst -sha256 -binary | base64`).
//!
//! [`PinnedVerifier`] checks the responder's leaf key against `tls.spki_pins` *after* the usual
//! chain and name verification has passed: a pin narrows which of the CA's certificates are
//! accepted, it never replaces the CA. A mismatch is reported as [`SpkiPinMismatch`] inside
//! `CertificateError::Other`, so that [`classify`](super::classify) can tell it apart from
//! every other certificate error.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::error::TlsLoadError;

/// The server's leaf key matched none of the configured pins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server key matches none of the configured spki_pins (its pin is {actual})")]
pub struct SpkiPinMismatch {
    /// The pin of the key the server presented, to compare with the config.
    pub actual: String,
}

/// SHA-256 of the certificate's DER-encoded SubjectPublicKeyInfo; `None` if the certificate
/// does not parse.
pub(crate) fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(Sha256::digest(cert.public_key().raw).into())
}

/// The SPKI pin of a DER certificate, as written in `tls.spki_pins`; `None` if the certificate
/// does not parse.
pub fn spki_pin(cert_der: &[u8]) -> Option<String> {
    spki_sha256(cert_der).map(|d| BASE64.encode(d))
}

/// Decodes `tls.spki_pins`; each must be base64 of exactly 32 bytes.
pub(crate) fn parse_pins(pins: &[String]) -> Result<Vec<[u8; 32]>, TlsLoadError> {
    pins.iter()
        .map(|pin| {
            BASE64
                .decode(pin.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| TlsLoadError::BadPin { pin: pin.clone() })
        })
        .collect()
}

/// WebPKI verification of the server (chain to the configured CA, validity, name), then the
/// leaf's SPKI digest must be one of `pins`.
#[derive(Debug)]
pub(crate) struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl PinnedVerifier {
    pub(crate) fn new(inner: Arc<WebPkiServerVerifier>, pins: Vec<[u8; 32]>) -> Self {
        Self { inner, pins }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let digest = spki_sha256(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        if self.pins.contains(&digest) {
            return Ok(verified);
        }
        let mismatch = SpkiPinMismatch {
            actual: BASE64.encode(digest),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::Pki;

    #[test]
    fn pins_must_be_base64_sha256() {
        let good = BASE64.encode([7u8; 32]);
        assert_eq!(
            parse_pins(std::slice::from_ref(&good)).unwrap(),
            vec![[7u8; 32]]
        );
        for bad in ["", "not base64!", &BASE64.encode([1u8; 20])] {
            let err = parse_pins(&[bad.to_string()]).unwrap_err();
            assert!(
                matches!(&err, TlsLoadError::BadPin { pin } if pin == bad),
                "{err}"
            );
            assert!(err.to_string().contains("spki_pins"), "{err}");
        }
    }

    #[test]
    fn pin_is_base64_sha256_of_the_spki() {
        let pki = Pki::new("pin CA");
        let leaf = pki.server("srv", &["responder.test"]);
        let pin = spki_pin(&leaf.der).unwrap();
        // rcgen's view of the same SPKI, hashed independently.
        let expected = BASE64.encode(Sha256::digest(&leaf.spki_der));
        assert_eq!(pin, expected);
        assert_eq!(BASE64.decode(&pin).unwrap().len(), 32);
        assert_eq!(spki_pin(b"not a certificate"), None);
    }

    #[test]
    fn pin_matches_openssl_when_available() {
        let pki = Pki::new("pin CA");
        let leaf = pki.server("srv", &["responder.test"]);
        let script = format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | openssl base64 -A",
            leaf.cert.display()
        );
        let Ok(out) = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
        else {
            eprintln!("skipped: no sh");
            return;
        };
        if !out.status.success() || out.stdout.is_empty() {
            eprintln!("skipped: openssl not available");
            return;
        }
        let openssl = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(spki_pin(&leaf.der).unwrap(), openssl);
    }
}
