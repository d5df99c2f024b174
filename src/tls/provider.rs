//! The one crypto provider rtun's TLS uses: rustls' *ring* provider.
//!
//! ring builds with only a C compiler; aws-lc-rs (rustls' default) needs cmake and is slow to
//! build, which matters on small CI machines. Every config builder in this module takes the
//! provider explicitly, so the process never depends on a global default being installed (and
//! a second provider being linked in by another crate cannot make rustls panic over ambiguity).

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// rustls' ring provider with its default cipher suites and key exchange groups, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
