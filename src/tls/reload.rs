//! Certificate reload without dropping tunnels (DESIGN §10): a [`Reloadable`] holds the current
//! loaded configuration and the recipe to load it again from the same files.
//!
//! [`reload`](Reloadable::reload) swaps the configuration only if the new files load; otherwise
//! the old one stays in force and the error is returned for the log. Each handshake takes
//! [`current`](Reloadable::current) when it starts, so new handshakes use the new certificates
//! while sessions already established keep theirs for as long as they live. A plain `RwLock`
//! suffices: readers hold it only to clone an `Arc`, and reloads are rare.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use super::error::TlsLoadError;

type Loader<T> = Box<dyn Fn() -> Result<T, TlsLoadError> + Send + Sync>;

/// A loaded TLS configuration (`ServerTls`, `ClientTls`) that can be reloaded from its files.
/// Share it across shards in an `Arc`.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
    load: Loader<T>,
}

impl<T> Reloadable<T> {
    /// Loads once with `load` (failing if that fails) and keeps `load` for [`reload`](Self::reload).
    pub fn new(
        load: impl Fn() -> Result<T, TlsLoadError> + Send + Sync + 'static,
    ) -> Result<Self, TlsLoadError> {
        let first = load()?;
        Ok(Self {
            current: RwLock::new(Arc::new(first)),
            load: Box::new(load),
        })
    }

    /// The configuration new handshakes should use.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files. On success the new configuration replaces the old one; on failure
    /// the old one is kept and the error says which file is wrong.
    pub fn reload(&self) -> Result<(), TlsLoadError> {
        let next = Arc::new((self.load)()?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }
}

impl<T: fmt::Debug> fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloadable")
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::tls::testing::{handshake, Pki};
    use crate::tls::{ClientTls, ServerTls};

    fn leaf_der<T>(client: &crate::tls::ClientStream<T>) -> Vec<u8> {
        client.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    #[monoio::test]
    async fn reload_swaps_certificate_and_keeps_old_on_bad_files() {
        let pki = Pki::new("reload CA");
        let first = pki.server("srv", &["responder.test"]);
        let server_cfg = first.server_cfg(None);
        let reloadable = ServerTls::reloadable(&server_cfg, &[]).unwrap();
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();

        // A live session on the first certificate.
        let (s, c) = handshake(&reloadable.current(), &client).await;
        let (mut live_server, mut live_client) = (s.unwrap(), c.unwrap());
        assert_eq!(leaf_der(&live_client), first.der.to_vec());

        // New files in place (same paths, new key); reload picks them up.
        let second = pki.server("srv", &["responder.test"]);
        assert_ne!(second.der, first.der);
        reloadable.reload().unwrap();
        let (s, c) = handshake(&reloadable.current(), &client).await;
        s.unwrap();
        assert_eq!(leaf_der(&c.unwrap()), second.der.to_vec());

        // The session from before the reload is untouched.
        live_client.write_all(b"still here").await.unwrap();
        live_client.flush().await.unwrap();
        let mut buf = [0u8; 10];
        live_server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still here");

        // A broken certificate file: reload fails naming it, the second cert stays in force.
        pki.write("srv.pem", "garbage\n");
        let err = reloadable.reload().unwrap_err();
        assert!(matches!(err, TlsLoadError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("srv.pem"), "{err}");
        let (s, c) = handshake(&reloadable.current(), &client).await;
        s.unwrap();
        assert_eq!(leaf_der(&c.unwrap()), second.der.to_vec());

        // A key that does not match the certificate is refused too.
        std::fs::write(&second.cert, first.cert_pem.as_bytes()).unwrap();
        let err = reloadable.reload().unwrap_err();
        assert!(matches!(err, TlsLoadError::KeyMismatch { .. }), "{err}");
        let (s, c) = handshake(&reloadable.current(), &client).await;
        s.unwrap();
        assert_eq!(leaf_der(&c.unwrap()), second.der.to_vec());
    }

    #[test]
    fn first_load_must_succeed() {
        let pki = Pki::new("reload CA");
        let leaf = pki.server("srv", &["responder.test"]);
        let mut cfg = leaf.server_cfg(None);
        cfg.key = pki.dir.path().join("missing.pem");
        let err = ServerTls::reloadable(&cfg, &[]).unwrap_err();
        assert!(matches!(err, TlsLoadError::Read { .. }), "{err}");
    }

    #[test]
    fn client_side_reloads_too() {
        let pki = Pki::new("reload CA");
        let cfg = pki.client_cfg(None, vec![]);
        let r = ClientTls::reloadable(&cfg, "responder.test", &[b"h2"]).unwrap();
        assert_eq!(r.current().server_name().to_str(), "responder.test");
        r.reload().unwrap();
        pki.write("ca.pem", "");
        assert!(matches!(
            r.reload(),
            Err(TlsLoadError::NoCertificate { .. })
        ));
        assert_eq!(r.current().config().alpn_protocols, vec![b"h2".to_vec()]);
        assert!(format!("{r:?}").contains("Reloadable"));
    }
}
