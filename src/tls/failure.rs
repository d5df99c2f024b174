//! Why a TLS handshake failed, in a few stable classes ([`TlsFailure`]) that logs, metrics and
//! operators can rely on, derived from the rustls error that tokio-rustls wraps in an
//! `io::Error` (or from plain I/O conditions).
//!
//! The same class is used on both sides where it makes sense: a client that does not trust the
//! server's CA fails with `unknown_ca`, and the server, receiving the client's `unknown_ca`
//! alert, reports `unknown_ca` too. The error's own text (kept in
//! [`HandshakeError`](super::HandshakeError)) says which side found the problem.

use std::fmt;
use std::io;

use rustls::{AlertDescription, CertificateError, InvalidMessage};

use super::pin::SpkiPinMismatch;

/// Class of a failed TLS handshake (or of a TLS error on an established session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The peer's certificate does not chain to a trusted CA (or the peer said so of ours).
    UnknownCa,
    /// A client certificate is required and the client presented none.
    NoClientCert,
    /// The server's key matches none of the configured `spki_pins`.
    SpkiPinMismatch,
    /// The server's certificate is not valid for the name we dialed / set as SNI.
    NameMismatch,
    /// A certificate has expired.
    Expired,
    /// A certificate is not valid yet (often a clock problem).
    NotYetValid,
    /// Any other certificate rejection (wrong key usage, bad signature, the peer's generic
    /// `bad_certificate` alert…).
    BadCertificate,
    /// No TLS version, cipher suite, signature scheme or ALPN protocol in common.
    Incompatible,
    /// The peer does not speak TLS: plaintext on a TLS port, or a TLS client on a plaintext port.
    PlaintextPeer,
    /// Any other TLS protocol violation.
    Protocol,
    /// The peer closed or reset the connection during the handshake.
    Closed,
    /// An I/O error that is not about TLS.
    Io,
}

impl TlsFailure {
    /// Every class, for metrics that pre-register their labels.
    pub const ALL: [TlsFailure; 12] = [
        Self::UnknownCa,
        Self::NoClientCert,
        Self::SpkiPinMismatch,
        Self::NameMismatch,
        Self::Expired,
        Self::NotYetValid,
        Self::BadCertificate,
        Self::Incompatible,
        Self::PlaintextPeer,
        Self::Protocol,
        Self::Closed,
        Self::Io,
    ];

    /// Stable snake_case name for logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::NoClientCert => "no_client_cert",
            Self::SpkiPinMismatch => "spki_pin_mismatch",
            Self::NameMismatch => "name_mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadCertificate => "bad_certificate",
            Self::Incompatible => "incompatible",
            Self::PlaintextPeer => "plaintext_peer",
            Self::Protocol => "protocol",
            Self::Closed => "closed",
            Self::Io => "io",
        }
    }

    /// Classifies a rustls error.
    pub fn from_rustls(err: &rustls::Error) -> Self {
        use rustls::Error as E;
        match err {
            E::InvalidCertificate(cert) => Self::from_certificate_error(cert),
            E::NoCertificatesPresented => Self::NoClientCert,
            E::AlertReceived(alert) => Self::from_alert(*alert),
            E::InvalidMessage(InvalidMessage::InvalidContentType) => Self::PlaintextPeer,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => Self::Incompatible,
            _ => Self::Protocol,
        }
    }

    fn from_certificate_error(err: &CertificateError) -> Self {
        use CertificateError as C;
        match err {
            C::UnknownIssuer => Self::UnknownCa,
            C::Expired | C::ExpiredContext { .. } => Self::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => Self::NotYetValid,
            C::NotValidForName | C::NotValidForNameContext { .. } => Self::NameMismatch,
            C::Other(other) if other.0.downcast_ref::<SpkiPinMismatch>().is_some() => {
                Self::SpkiPinMismatch
            }
            _ => Self::BadCertificate,
        }
    }

    /// A fatal alert from the peer: its verdict on our certificate or our parameters.
    fn from_alert(alert: AlertDescription) -> Self {
        use AlertDescription as A;
        match alert {
            A::UnknownCA => Self::UnknownCa,
            A::CertificateRequired => Self::NoClientCert,
            A::CertificateExpired => Self::Expired,
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::AccessDenied => Self::BadCertificate,
            A::HandshakeFailure
            | A::ProtocolVersion
            | A::InsufficientSecurity
            | A::NoApplicationProtocol => Self::Incompatible,
            _ => Self::Protocol,
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownCa => "certificate not issued by a trusted CA",
            Self::NoClientCert => "no client certificate presented, and this listener requires one",
            Self::SpkiPinMismatch => "server key matches none of the configured spki_pins",
            Self::NameMismatch => "certificate not valid for the requested server name",
            Self::Expired => "certificate expired",
            Self::NotYetValid => "certificate not valid yet (check the clocks)",
            Self::BadCertificate => "certificate rejected",
            Self::Incompatible => "no TLS version, cipher suite or ALPN protocol in common",
            Self::PlaintextPeer => {
                "peer does not speak TLS (plaintext on a TLS port, or TLS to a plaintext port)"
            }
            Self::Protocol => "TLS protocol error",
            Self::Closed => "connection closed during the TLS handshake",
            Self::Io => "I/O error during the TLS handshake",
        })
    }
}

/// Classifies an error returned by tokio-rustls (handshake or later reads and writes): the
/// rustls error it carries if any, otherwise the I/O condition.
pub fn classify(err: &io::Error) -> TlsFailure {
    if let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return TlsFailure::from_rustls(tls);
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TlsFailure::Closed,
        _ => TlsFailure::Io,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use rustls::{Error as E, OtherError};

    use super::*;

    fn io_of(err: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }

    #[test]
    fn labels_are_unique_and_snake_case() {
        let labels: HashSet<_> = TlsFailure::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(labels.len(), TlsFailure::ALL.len());
        for l in labels {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
        }
        for f in TlsFailure::ALL {
            assert!(!f.to_string().is_empty());
        }
    }

    #[test]
    fn rustls_errors_are_classified() {
        let pin =
            CertificateError::Other(OtherError(Arc::new(SpkiPinMismatch { actual: "x".into() })));
        let cases = [
            (
                E::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown_ca",
            ),
            (E::InvalidCertificate(CertificateError::Expired), "expired"),
            (
                E::InvalidCertificate(CertificateError::NotValidYet),
                "not_yet_valid",
            ),
            (
                E::InvalidCertificate(CertificateError::NotValidForName),
                "name_mismatch",
            ),
            (E::InvalidCertificate(pin), "spki_pin_mismatch"),
            (
                E::InvalidCertificate(CertificateError::BadSignature),
                "bad_certificate",
            ),
            (E::NoCertificatesPresented, "no_client_cert"),
            (E::AlertReceived(AlertDescription::UnknownCA), "unknown_ca"),
            (
                E::AlertReceived(AlertDescription::CertificateRequired),
                "no_client_cert",
            ),
            (
                E::AlertReceived(AlertDescription::CertificateExpired),
                "expired",
            ),
            (
                E::AlertReceived(AlertDescription::BadCertificate),
                "bad_certificate",
            ),
            (
                E::AlertReceived(AlertDescription::ProtocolVersion),
                "incompatible",
            ),
            (E::AlertReceived(AlertDescription::DecodeError), "protocol"),
            (E::NoApplicationProtocol, "incompatible"),
            (
                E::InvalidMessage(InvalidMessage::InvalidContentType),
                "plaintext_peer",
            ),
            (
                E::InvalidMessage(InvalidMessage::UnknownProtocolVersion),
                "protocol",
            ),
            (E::DecryptError, "protocol"),
        ];
        for (err, label) in cases {
            let text = err.to_string();
            assert_eq!(TlsFailure::from_rustls(&err).label(), label, "{text}");
            assert_eq!(classify(&io_of(err)).label(), label, "{text}");
        }
    }

    #[test]
    fn plain_io_errors_are_classified() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(classify(&eof), TlsFailure::Closed);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&reset), TlsFailure::Closed);
        let other = io::Error::other("something else");
        assert_eq!(classify(&other), TlsFailure::Io);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(classify(&timeout), TlsFailure::Io);
    }
}
