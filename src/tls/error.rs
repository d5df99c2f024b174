//! Errors from loading TLS material: each names the file (or config entry) and what is wrong, so
//! that `rtun validate`, startup and reload can print them as they are.

use std::io;
use std::path::PathBuf;

/// Why a TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    /// The file could not be read (missing, unreadable, a directory…).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid PEM.
    #[error("{}: malformed PEM: {detail}", path.display())]
    BadPem { path: PathBuf, detail: String },
    /// No `CERTIFICATE` block in a file that should hold certificates.
    #[error("{}: no certificate found (expected a PEM `BEGIN CERTIFICATE` block)", path.display())]
    NoCertificate { path: PathBuf },
    /// The leaf certificate could not be parsed.
    #[error("{}: unusable certificate: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    /// No private key block in the key file.
    #[error(
        "{}: no private key found (expected a PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` \
         or `BEGIN EC PRIVATE KEY` block)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    /// A private key the crypto provider cannot use (unsupported algorithm or curve, bad
    /// encoding).
    #[error("{}: unsupported or invalid private key: {detail}", path.display())]
    UnsupportedKey { path: PathBuf, detail: String },
    /// The private key is not the one the leaf certificate was issued for.
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A certificate in a CA file could not be used as a trust anchor.
    #[error("{}: unusable CA certificate: {detail}", path.display())]
    BadCa { path: PathBuf, detail: String },
    /// The client config has no `ca`: rtun does not fall back to system roots.
    #[error(
        "tls.ca is required: rtun verifies the responder only against the CA bundle given in \
         `ca` (system roots are not used)"
    )]
    MissingCa,
    /// `cert` given without `key`, or the other way round.
    #[error("tls.cert and tls.key must be given together")]
    IncompleteClientCert,
    /// An `spki_pins` entry that is not base64 of a 32-byte SHA-256 digest.
    #[error("tls.spki_pins entry {pin:?} is not a base64 SHA-256 digest (32 bytes)")]
    BadPin { pin: String },
    /// The SNI / verification name is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid TLS server name (DNS name or IP address)")]
    InvalidServerName { name: String },
    /// rustls refused the assembled configuration.
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
}
