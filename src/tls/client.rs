//! The client side of TLS (the initiator's dialer): a rustls `ClientConfig` and the server name
//! to verify, built from [`ClientTlsConfig`].
//!
//! The responder is verified against the CA bundle in `ca` only: rtun has no built-in or system
//! roots, so `ca` is required (a tunnel endpoint is the operator's own service, and trusting
//! every public CA for it would be the wrong default). Chain, validity and name are checked by
//! WebPKI; when `spki_pins` is non-empty the leaf key must also match one of them
//! ([`PinnedVerifier`]). With `cert` and `key`, the client certificate is presented for mutual
//! TLS.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::error::TlsLoadError;
use super::pin::{parse_pins, PinnedVerifier};
use super::provider::provider;
use super::reload::Reloadable;
use super::{pem, ClientStream};
use crate::config::ClientTlsConfig;

/// A loaded client TLS configuration with the name the server must prove, cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    pinned: bool,
}

impl ClientTls {
    /// Reads the CA, optional client certificate and key named by `cfg` and builds the rustls
    /// config. The server name is `cfg.sni`, or `default_sni_host` (the endpoint's host; IPv6
    /// brackets are removed) when absent; an IP address is verified against IP SANs and sends
    /// no SNI.
    pub fn load(
        cfg: &ClientTlsConfig,
        default_sni_host: &str,
        alpn: &[&[u8]],
    ) -> Result<Self, TlsLoadError> {
        let provider = provider();
        let ca = cfg.ca.as_ref().ok_or(TlsLoadError::MissingCa)?;
        let pins = parse_pins(&cfg.spki_pins)?;
        let server_name = server_name(cfg.sni.as_deref().unwrap_or(default_sni_host))?;
        let roots = Arc::new(pem::roots(ca)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsLoadError::BadCa {
                path: ca.clone(),
                detail: e.to_string(),
            })?;
        let pinned = !pins.is_empty();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsLoadError::Rustls {
                what: "TLS protocol versions",
                source,
            })?;
        let builder = if pinned {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(webpki, pins)))
        } else {
            builder.with_webpki_verifier(webpki)
        };
        let mut config = match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => {
                let certified = pem::certified_key(cert, key, &provider)?;
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsLoadError::IncompleteClientCert),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            config: Arc::new(config),
            server_name,
            pinned,
        })
    }

    /// Like [`load`](Self::load), kept in a [`Reloadable`] that re-reads the same files.
    pub fn reloadable(
        cfg: &ClientTlsConfig,
        default_sni_host: &str,
        alpn: &[&[u8]],
    ) -> Result<Reloadable<ClientTls>, TlsLoadError> {
        let cfg = cfg.clone();
        let host = default_sni_host.to_owned();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        Reloadable::new(move || {
            let alpn: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
            ClientTls::load(&cfg, &host, &alpn)
        })
    }

    /// The rustls configuration, for `tokio_rustls::TlsConnector` or a `ClientConnection`.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The name sent as SNI and verified against the server's certificate.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Whether the server's key is pinned (`spki_pins` non-empty).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// TLS handshake as the client on `stream`; see [`connect`](super::connect).
    pub async fn connect<T>(&self, stream: T) -> Result<ClientStream<T>, super::HandshakeError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        super::connect(self, stream).await
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, TlsLoadError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsLoadError::InvalidServerName {
        name: host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::Pki;

    #[test]
    fn server_name_from_sni_or_endpoint_host() {
        let pki = Pki::new("client CA");
        let mut cfg = pki.client_cfg(None, vec![]);
        let tls = ClientTls::load(&cfg, "responder.test", &[]).unwrap();
        assert_eq!(tls.server_name().to_str(), "responder.test");
        assert!(!tls.pinned());

        let tls = ClientTls::load(&cfg, "[::1]", &[]).unwrap();
        assert!(matches!(tls.server_name(), ServerName::IpAddress(_)));

        cfg.sni = Some("sni.test".into());
        let tls = ClientTls::load(&cfg, "10.0.0.1", &[b"h2"]).unwrap();
        assert_eq!(tls.server_name().to_str(), "sni.test");
        assert_eq!(tls.config().alpn_protocols, vec![b"h2".to_vec()]);

        cfg.sni = Some("not a name!".into());
        let err = ClientTls::load(&cfg, "responder.test", &[]).unwrap_err();
        assert!(
            matches!(err, TlsLoadError::InvalidServerName { .. }),
            "{err}"
        );
    }

    #[test]
    fn ca_is_required() {
        let pki = Pki::new("client CA");
        let mut cfg = pki.client_cfg(None, vec![]);
        cfg.ca = None;
        let err = ClientTls::load(&cfg, "responder.test", &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::MissingCa), "{err}");
        assert!(err.to_string().contains("tls.ca is required"), "{err}");
    }

    #[test]
    fn client_cert_needs_key_and_loads() {
        let pki = Pki::new("client CA");
        let edge = pki.client("edge", "spiffe://acme/node/edge-42", "edge-42.acme.test");
        let cfg = pki.client_cfg(Some(&edge), vec![]);
        let tls = ClientTls::load(&cfg, "responder.test", &[]).unwrap();
        assert!(tls.config().client_auth_cert_resolver.has_certs());

        let mut half = cfg.clone();
        half.key = None;
        let err = ClientTls::load(&half, "responder.test", &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::IncompleteClientCert), "{err}");

        let mut wrong = cfg.clone();
        wrong.key = Some(pki.server("srv", &["x.test"]).key);
        let err = ClientTls::load(&wrong, "responder.test", &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn bad_ca_and_pins_are_reported() {
        let pki = Pki::new("client CA");
        let mut cfg = pki.client_cfg(None, vec!["nope".into()]);
        let err = ClientTls::load(&cfg, "responder.test", &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::BadPin { .. }), "{err}");

        cfg.spki_pins.clear();
        cfg.ca = Some(pki.write("empty-ca.pem", "just text\n"));
        let err = ClientTls::load(&cfg, "responder.test", &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("empty-ca.pem"), "{err}");
    }
}
