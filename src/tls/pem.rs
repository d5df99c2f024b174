//! Reading PEM files: certificate chains, private keys and CA bundles, each error naming the
//! file. Parsing is rustls-pki-types' own PEM support, so no second PEM crate is needed.
//!
//! The private key is checked against the leaf certificate here ([`certified_key`]) because a
//! mismatched pair otherwise only shows up as failing handshakes on the peer's side.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TlsLoadError;

fn read(path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    std::fs::read(path).map_err(|source| TlsLoadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn bad_pem(path: &Path, err: pem::Error) -> TlsLoadError {
    TlsLoadError::BadPem {
        path: path.to_owned(),
        detail: err.to_string(),
    }
}

/// All certificates in a PEM file, in file order (leaf first for a chain). At least one.
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if certs.is_empty() {
        return Err(TlsLoadError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a PEM file.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if contains(&bytes, b"ENCRYPTED PRIVATE KEY") => {
            Err(TlsLoadError::UnsupportedKey {
                path: path.to_owned(),
                detail: "the key is encrypted; rtun needs an unencrypted key \
                         (`openssl pkey -in KEY -out PLAIN`)"
                    .into(),
            })
        }
        Err(pem::Error::NoItemsFound) => Err(TlsLoadError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(bad_pem(path, e)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A certificate chain and its private key, loaded by `provider` and checked to belong
/// together (the key's public half must equal the leaf's SubjectPublicKeyInfo).
pub(crate) fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsLoadError> {
    let chain = certs(cert)?;
    let key_der = private_key(key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsLoadError::UnsupportedKey {
            path: key.to_owned(),
            detail: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot tell its public half; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsLoadError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        // The leaf itself did not parse.
        Err(e) => Err(TlsLoadError::BadCertificate {
            path: cert.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Trust anchors from a CA bundle; every certificate in it must be usable.
pub(crate) fn roots(path: &Path) -> Result<RootCertStore, TlsLoadError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| TlsLoadError::BadCa {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(store)
}
