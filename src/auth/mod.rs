//! Credentials (DESIGN §10, ARCHITECTURE.md §3, §6): who may open a tunnel (authentication,
//! 401) and which identity it may claim (authorization, 403); and which tenant an egress
//! request belongs to.
//!
//! Pure and synchronous, no I/O: the configuration loads the files and builds these values
//! once; the responder's admission stages (`responder::admission`) call them for every
//! handshake and turn a [`Denial`] into a `protocol::Rejection`; the egress pipeline's tenant
//! stage turns a [`NoTenant`] into a 401.
//!
//! - `patterns`: the node and cluster ids a credential may claim (`edge-*`, `*-west`, `*`).
//! - `grant`: what one credential allows (a tenant, node patterns, cluster patterns).
//! - `bearer`: the `authorization: Bearer …` header of a handshake (and of an admin request).
//! - `tokens`: static bearer tokens, stored only as SHA-256 hashes, compared in constant time.
//! - `jwt`: JSON Web Tokens checked against a local JWKS (RS256, ES256, EdDSA).
//! - `mtls`: identity formats evaluated over the TLS peer certificate.
//! - `tenant`: the tenant of an egress request (a fixed tenant, an API key by hash, the client
//!   certificate, or a header the operator trusts); the egress pipeline's tenant stage calls it.
//!
//! Nothing here logs or returns a token: denials carry short public reasons only.

pub mod bearer;
pub mod grant;
pub mod jwt;
pub mod mtls;
pub mod patterns;
pub mod tenant;
pub mod tokens;

use std::borrow::Cow;

pub use bearer::{bearer_of, bearer_token};
pub use grant::Grant;
pub use jwt::{JwtKey, JwtRules};
pub use mtls::{MtlsBinding, PeerFormat, PeerFormatError};
pub use patterns::{IdPattern, PatternError};
pub use tenant::{ApiKey, ApiKeys, NoTenant, TenantSource};
pub use tokens::{parse_sha256_hex, TokenGrant, TokenTable};

/// Why a handshake's credentials do not admit it. The text is the public reason of the local
/// reply: short, and never containing the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// 401: no credential, or one that is not valid.
    #[error("{0}")]
    Unauthenticated(Cow<'static, str>),
    /// 403: a valid credential that does not allow the identity claimed.
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
}

impl Denial {
    pub(crate) fn unauthenticated(reason: impl Into<Cow<'static, str>>) -> Self {
        Denial::Unauthenticated(reason.into())
    }

    pub(crate) fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Denial::Forbidden(reason.into())
    }
}
