//! Certificate reload without dropping tunnels (DESIGN §10): a [`Reloadable`] holds the current
//! loaded configuration and the recipe to load it again.
//!
//! [`reload`](Reloadable::reload) re-reads the same files and swaps the configuration only if
//! they load; otherwise the old one stays in force and the error is returned for the log. A
//! configuration reload may name other files: [`Reloadable::prepare`] loads from the new recipe
//! without touching anything (the prepare step of a reload, which may still be refused), and
//! [`Reloadable::replace`] installs what it loaded, recipe included, so later reloads read the
//! new files. Each handshake takes
//! [`current`](Reloadable::current) when it starts, so new handshakes use the new certificates
//! while sessions already established keep theirs for as long as they live. A plain `RwLock`
//! suffices: readers hold it only to clone an `Arc`, and reloads are rare.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use super::error::TlsLoadError;

type Loader<T> = Arc<dyn Fn() -> Result<T, TlsLoadError> + Send + Sync>;

/// A loaded TLS configuration (`ServerTls`, `ClientTls`) that can be reloaded from its files.
/// Share it across shards in an `Arc`.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
    load: RwLock<Loader<T>>,
}

/// A configuration loaded from a new recipe, not yet in force ([`Reloadable::prepare`]).
pub struct Replacement<T> {
    value: T,
    load: Loader<T>,
}

impl<T> Reloadable<T> {
    /// Loads once with `load` (failing if that fails) and keeps `load` for [`reload`](Self::reload).
    pub fn new(
        load: impl Fn() -> Result<T, TlsLoadError> + Send + Sync + 'static,
    ) -> Result<Self, TlsLoadError> {
        let Replacement { value, load } = Self::prepare(load)?;
        Ok(Self {
            current: RwLock::new(Arc::new(value)),
            load: RwLock::new(load),
        })
    }

    /// Loads with `load` (possibly other files than this one's), for [`replace`](Self::replace).
    /// Nothing changes until then, so a reload that fails later leaves this one as it was.
    pub fn prepare(
        load: impl Fn() -> Result<T, TlsLoadError> + Send + Sync + 'static,
    ) -> Result<Replacement<T>, TlsLoadError> {
        let value = load()?;
        Ok(Replacement {
            value,
            load: Arc::new(load),
        })
    }

    /// Puts a prepared configuration in force for new handshakes; later
    /// [`reload`](Self::reload)s use its recipe (its files).
    pub fn replace(&self, replacement: Replacement<T>) {
        *self.load.write().unwrap_or_else(PoisonError::into_inner) = replacement.load;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(replacement.value);
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
        let load = self
            .load
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let next = Arc::new(load()?);
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

    #[monoio::test]
    async fn replace_takes_new_paths_and_later_reloads_read_them() {
        let pki = Pki::new("reload CA");
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let first = pki.server("first", &["responder.test"]);
        let reloadable = ServerTls::reloadable(&first.server_cfg(None), &[]).unwrap();
        let second = pki.server("second", &["responder.test"]);
        assert_ne!(second.cert, first.cert, "another file");

        // Prepared, not yet in force.
        let replacement = ServerTls::replacement(&second.server_cfg(None), &[]).unwrap();
        let (s, c) = handshake(&reloadable.current(), &client).await;
        s.unwrap();
        assert_eq!(leaf_der(&c.unwrap()), first.der.to_vec());

        reloadable.replace(replacement);
        let (s, c) = handshake(&reloadable.current(), &client).await;
        s.unwrap();
        assert_eq!(leaf_der(&c.unwrap()), second.der.to_vec());

        // A later reload reads the new files, not the first ones.
        let third = pki.server("second", &["responder.test"]);
        pki.write("first.pem", "garbage\n");
        reloadable.reload().unwrap();
        let (s, c) = handshake(&reloadable.current(), &client).await;
        s.unwrap();
        assert_eq!(leaf_der(&c.unwrap()), third.der.to_vec());

        // A recipe whose files do not load is refused before anything changes.
        let mut missing = first.server_cfg(None);
        missing.key = pki.dir.path().join("missing.pem");
        assert!(ServerTls::replacement(&missing, &[]).is_err());
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
