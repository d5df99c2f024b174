//! TLS for rtun's tunnels: configuration loading, handshakes, failure classification, reload
//! and peer certificate facts, in one place so that every listener and dialer does TLS the same
//! way.
//!
//! Who uses it (DESIGN §10): the responder's tunnel listener ([`ServerTls`], optionally mutual),
//! the initiator's dialer ([`ClientTls`]: CA, SPKI pins, SNI, client certificate), the egress
//! listener (HTTPS, `responder::egress::tls`) and the initiator's local clusters
//! (`initiator::pool`). The egress listener and local clusters use it today.
//!
//! **Stack.** rustls 0.23 with the *ring* crypto provider only ([`provider()`]): ring builds with
//! nothing but a C compiler, whereas rustls' default provider, aws-lc-rs, needs cmake and takes
//! much longer to build. The provider is passed explicitly to every config builder, so no
//! process-wide default provider has to be installed. The streams come from tokio-rustls 0.26
//! because rtun's socket I/O is tokio `AsyncRead`/`AsyncWrite` (`net::completion::CompletionStream`), and h2
//! runs on top of that (DESIGN §8: monoio-rustls streams cannot carry h2). [`accept`] and
//! [`connect`] therefore wrap any `T: AsyncRead + AsyncWrite + Unpin`, including
//! [`crate::http::io::Rewind`] after [`peek_is_tls`].
//!
//! **Files.** Certificates, keys and CAs are PEM files named by the config
//! ([`ServerTlsConfig`](crate::config::ServerTlsConfig),
//! [`ClientTlsConfig`](crate::config::ClientTlsConfig)); every loading error names the
//! file and what is wrong with it ([`TlsLoadError`]). [`Reloadable`] re-reads them on demand and
//! swaps the config only when the new files load; live sessions keep the config they started
//! with.
//!
//! **Failures.** A failed handshake is a [`HandshakeError`] whose [`TlsFailure`] has a stable
//! [`label`](TlsFailure::label) for logs and metrics (`unknown_ca`, `spki_pin_mismatch`, …).
//! Handshake timeouts are the caller's (wrap [`accept`]/[`connect`] in `monoio::time::timeout`).
//!
//! Files: `provider` (crypto provider), `error` (loading errors), `pem` (reading PEM files),
//! `pin` (SPKI pins and the pinning verifier), `server` / `client` (config building), `reload`,
//! `handshake` (accept/connect), `failure` (classification), `sniff` (plaintext detection),
//! `peer` (peer certificate facts).

mod client;
mod error;
mod failure;
mod handshake;
mod peer;
mod pem;
mod pin;
mod provider;
mod reload;
mod server;
mod sniff;

#[cfg(test)]
pub(crate) mod testing;

pub use client::ClientTls;
pub use error::TlsLoadError;
pub use failure::{classify, TlsFailure};
pub use handshake::{accept, connect, ClientStream, HandshakeError, ServerStream};
pub use peer::{PeerCertError, PeerCertificate};
pub use pin::{spki_pin, SpkiPinMismatch};
pub use provider::provider;
pub use reload::{Reloadable, Replacement};
pub use server::ServerTls;
pub use sniff::{looks_like, peek_is_tls, Looks, Peek};
