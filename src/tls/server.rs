//! The server side of TLS (the responder's tunnel listener, later the egress listener): a rustls
//! `ServerConfig` built from [`ServerTlsConfig`].
//!
//! TLS 1.2 and 1.3 only. With `client_ca` set, every client must present a certificate that
//! chains to it (mutual TLS); without it, no client certificate is requested. The caller gives
//! the ALPN list because it depends on the listener (the tunnel listener speaks HTTP/1.1 for the
//! handshake and then h2 on the same session; an egress listener may offer `h2` and
//! `http/1.1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;

use super::error::TlsLoadError;
use super::provider::provider;
use super::reload::{Reloadable, Replacement};
use super::{pem, ServerStream};
use crate::config::ServerTlsConfig;

/// A loaded server TLS configuration, cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Reads the certificate chain, key and optional client CA named by `cfg` and builds the
    /// rustls config. Fails with the file and the problem if anything does not load.
    pub fn load(cfg: &ServerTlsConfig, alpn: &[&[u8]]) -> Result<Self, TlsLoadError> {
        let provider = provider();
        let certified = pem::certified_key(&cfg.cert, &cfg.key, &provider)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsLoadError::Rustls {
                what: "TLS protocol versions",
                source,
            })?;
        let builder = match &cfg.client_ca {
            Some(ca) => {
                let roots = pem::roots(ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsLoadError::BadCa {
                            path: ca.clone(),
                            detail: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            config: Arc::new(config),
            client_ca: cfg.client_ca.clone(),
        })
    }

    /// Like [`load`](Self::load), kept in a [`Reloadable`] that re-reads the same files.
    pub fn reloadable(
        cfg: &ServerTlsConfig,
        alpn: &[&[u8]],
    ) -> Result<Reloadable<ServerTls>, TlsLoadError> {
        Reloadable::new(Self::recipe(cfg, alpn))
    }

    /// Loads `cfg`'s files for [`Reloadable::replace`]: a reload that names other files.
    pub fn replacement(
        cfg: &ServerTlsConfig,
        alpn: &[&[u8]],
    ) -> Result<Replacement<ServerTls>, TlsLoadError> {
        Reloadable::prepare(Self::recipe(cfg, alpn))
    }

    fn recipe(
        cfg: &ServerTlsConfig,
        alpn: &[&[u8]],
    ) -> impl Fn() -> Result<ServerTls, TlsLoadError> + Send + Sync + 'static {
        let cfg = cfg.clone();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        move || {
            let alpn: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
            ServerTls::load(&cfg, &alpn)
        }
    }

    /// The rustls configuration, for `tokio_rustls::TlsAcceptor` or a `ServerConnection`.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// The CA file client certificates are verified against; `Some` means clients must
    /// present a certificate (mutual TLS).
    pub fn client_ca(&self) -> Option<&Path> {
        self.client_ca.as_deref()
    }

    /// TLS handshake as the server on `stream`; see [`accept`](super::accept).
    pub async fn accept<T>(&self, stream: T) -> Result<ServerStream<T>, super::HandshakeError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        super::accept(self, stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::Pki;

    #[test]
    fn loads_with_and_without_client_ca() {
        let pki = Pki::new("server CA");
        let leaf = pki.server("srv", &["responder.test"]);
        let plain = ServerTls::load(&leaf.server_cfg(None), &[b"h2"]).unwrap();
        assert!(plain.client_ca().is_none());
        assert_eq!(plain.config().alpn_protocols, vec![b"h2".to_vec()]);
        let mtls = ServerTls::load(&leaf.server_cfg(Some(&pki.ca_path)), &[]).unwrap();
        assert_eq!(mtls.client_ca(), Some(pki.ca_path.as_path()));
        assert!(mtls.config().alpn_protocols.is_empty());
    }

    #[test]
    fn missing_files_are_named() {
        let pki = Pki::new("server CA");
        let leaf = pki.server("srv", &["responder.test"]);
        let missing = pki.dir.path().join("nope.pem");

        let mut cfg = leaf.server_cfg(None);
        cfg.cert = missing.clone();
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(&err, TlsLoadError::Read { path, .. } if *path == missing));
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let mut cfg = leaf.server_cfg(None);
        cfg.key = missing.clone();
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(&err, TlsLoadError::Read { path, .. } if *path == missing));

        let cfg = leaf.server_cfg(Some(&missing));
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(&err, TlsLoadError::Read { path, .. } if *path == missing));
    }

    #[test]
    fn wrong_contents_are_explained() {
        let pki = Pki::new("server CA");
        let leaf = pki.server("srv", &["responder.test"]);
        let other = pki.server("other", &["responder.test"]);

        // The key file given as the certificate: no certificate in it.
        let mut cfg = leaf.server_cfg(None);
        cfg.cert = leaf.key.clone();
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("srv-key.pem"), "{err}");
        assert!(err.to_string().contains("no certificate"), "{err}");

        // The certificate given as the key: no key in it.
        let mut cfg = leaf.server_cfg(None);
        cfg.key = leaf.cert.clone();
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::NoPrivateKey { .. }), "{err}");
        assert!(err.to_string().contains("srv.pem"), "{err}");

        // Another certificate's key.
        let mut cfg = leaf.server_cfg(None);
        cfg.key = other.key.clone();
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");

        // Broken PEM.
        let broken = pki.write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let mut cfg = leaf.server_cfg(None);
        cfg.cert = broken;
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::BadPem { .. }), "{err}");

        // A well-formed PEM block that is not a certificate inside.
        let junk = pki.write(
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let mut cfg = leaf.server_cfg(None);
        cfg.cert = junk.clone();
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::BadCertificate { .. }), "{err}");
        assert!(err.to_string().contains("junk.pem"), "{err}");
        let cfg = leaf.server_cfg(Some(&junk));
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::BadCa { .. }), "{err}");

        // An encrypted key is named as such.
        let enc = pki.write(
            "enc-key.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let mut cfg = leaf.server_cfg(None);
        cfg.key = enc;
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::UnsupportedKey { .. }), "{err}");
        assert!(err.to_string().contains("encrypted"), "{err}");

        // A key the provider cannot parse.
        let junk = pki.write(
            "junk-key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let mut cfg = leaf.server_cfg(None);
        cfg.key = junk;
        let err = ServerTls::load(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::UnsupportedKey { .. }), "{err}");
    }
}
