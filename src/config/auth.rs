//! `responder.tunnel_listener.auth:` (who may open a tunnel and what it may claim) and
//! `initiator.auth:` (the bearer token an initiator sends). README, "Authentication".
//!
//! Files named here (`tokens_file`, `jwt.jwks_file`) are read while the configuration loads,
//! so `rtun validate` checks them too; a problem in one is reported at the key that names it,
//! with the file's own `FILE:LINE:COLUMN` in the message. Paths are used as written (relative to
//! the working directory). The initiator's `token_file` and `token_env` are read at each dial
//! instead, so a rotated token is picked up without a restart.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use super::de::{checked_map, with_str, NonEmpty};
use super::duration::{self, secs};
use super::xref;
use crate::auth::jwt::{parse_jwks, ClaimNames};
use crate::auth::{
    parse_sha256_hex, Grant, IdPattern, JwtRules, MtlsBinding, PeerFormat, TokenGrant,
};
use crate::protocol::validate_id;

/// `responder.tunnel_listener.auth`: every part optional; all configured parts must pass.
/// Empty (the default) means no authentication: the responder warns at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelAuthConfig {
    /// Bearer tokens by hash: `tokens:` first, then the entries of `tokens_file`.
    pub tokens: Vec<TokenGrant>,
    /// Where the file tokens came from, if any.
    pub tokens_file: Option<PathBuf>,
    /// JWT verification, if configured.
    pub jwt: Option<JwtConfig>,
    /// mTLS identity binding, if configured.
    pub mtls: Option<MtlsBinding>,
    /// The `x-envoy-reverse-tunnel-upstream-cluster-name` every handshake must carry.
    pub required_cluster_name: Option<String>,
}

impl TunnelAuthConfig {
    /// True when bearer credentials (tokens or JWTs) are required.
    pub fn bearer(&self) -> bool {
        !self.tokens.is_empty() || self.tokens_file.is_some() || self.jwt.is_some()
    }

    /// True when some credential is required: tokens, JWT or an mTLS binding.
    pub fn authenticates(&self) -> bool {
        self.bearer() || self.mtls.is_some()
    }

    /// The posture line of `rtun validate`: `none`, or the configured kinds.
    pub fn describe(&self) -> String {
        let mut kinds = Vec::new();
        if !self.tokens.is_empty() || self.tokens_file.is_some() {
            let file = self
                .tokens_file
                .as_ref()
                .map(|p| format!(", file {}", p.display()))
                .unwrap_or_default();
            kinds.push(format!("tokens ({}{file})", self.tokens.len()));
        }
        if let Some(jwt) = &self.jwt {
            kinds.push(format!(
                "jwt (issuer {}, {} keys from {})",
                jwt.rules.issuer,
                jwt.rules.keys.len(),
                jwt.jwks_file.display()
            ));
        }
        if let Some(m) = &self.mtls {
            let bound: Vec<&str> = [
                m.node_id_format.as_ref().map(|_| "node"),
                m.cluster_id_format.as_ref().map(|_| "cluster"),
                m.tenant_id_format.as_ref().map(|_| "tenant"),
            ]
            .into_iter()
            .flatten()
            .collect();
            kinds.push(format!("mtls binding ({})", bound.join(", ")));
        }
        match kinds.is_empty() {
            true => "none".into(),
            false => kinds.join(" + "),
        }
    }
}

/// `auth.jwt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The JWKS file the keys were read from.
    pub jwks_file: PathBuf,
    /// Issuer, audiences, leeway, claim names and keys.
    pub rules: JwtRules,
}

/// `responder.tunnel_listener.auth` as read, then checked as a whole.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an auth mapping with `tokens:`, `tokens_file:`, `jwt:`, `mtls:` and/or \
                 `required_cluster_name:`"
)]
struct RawAuth {
    #[serde(default, deserialize_with = "inline_tokens")]
    tokens: Vec<TokenGrant>,
    #[serde(default, deserialize_with = "tokens_file")]
    tokens_file: Option<(PathBuf, Vec<TokenGrant>)>,
    #[serde(default, deserialize_with = "jwt")]
    jwt: Option<JwtConfig>,
    #[serde(default, deserialize_with = "mtls")]
    mtls: Option<MtlsBinding>,
    #[serde(default, deserialize_with = "cluster_name")]
    required_cluster_name: Option<String>,
}

/// `responder.tunnel_listener.auth`: absent or empty is no authentication.
pub(crate) fn tunnel_auth<'de, D: Deserializer<'de>>(d: D) -> Result<TunnelAuthConfig, D::Error> {
    let raw = checked_map(d, "an auth mapping", |raw: &RawAuth| {
        let file_tokens = raw.tokens_file.iter().flat_map(|(_, t)| t.iter());
        let mut seen = HashSet::new();
        for (i, token) in raw.tokens.iter().chain(file_tokens).enumerate() {
            if !seen.insert(token.sha256) {
                let inline = raw.tokens.len();
                let which = match i < inline {
                    true => format!("tokens entry #{}", i + 1),
                    false => format!("tokens_file entry #{}", i - inline + 1),
                };
                return Err(format!(
                    "{which} repeats the sha256 of an earlier token: each token must have one \
                     binding"
                ));
            }
        }
        Ok(())
    })?;
    let Some(raw) = raw else {
        return Ok(TunnelAuthConfig::default());
    };
    let (tokens_file, file_tokens) = match raw.tokens_file {
        Some((path, tokens)) => (Some(path), tokens),
        None => (None, Vec::new()),
    };
    let mut tokens = raw.tokens;
    tokens.extend(file_tokens);
    Ok(TunnelAuthConfig {
        tokens,
        tokens_file,
        jwt: raw.jwt,
        mtls: raw.mtls,
        required_cluster_name: raw.required_cluster_name,
    })
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// One token entry, inline or in the tokens file.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a token `{ sha256: HEX, tenant: ID, nodes: [PATTERN, ...], clusters: [PATTERN, ...] }`"
)]
struct RawToken {
    #[serde(deserialize_with = "sha256")]
    sha256: [u8; 32],
    #[serde(deserialize_with = "tenant")]
    tenant: String,
    #[serde(deserialize_with = "patterns")]
    nodes: Vec<IdPattern>,
    #[serde(deserialize_with = "patterns")]
    clusters: Vec<IdPattern>,
}

impl From<RawToken> for TokenGrant {
    fn from(raw: RawToken) -> Self {
        TokenGrant {
            sha256: raw.sha256,
            grant: Grant {
                tenant: raw.tenant,
                nodes: raw.nodes,
                clusters: raw.clusters,
            },
        }
    }
}

fn sha256<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    with_str(d, "the token's SHA-256 in hex", parse_sha256_hex)
}

pub(crate) fn tenant<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a tenant id (\"\" for the empty tenant)", |s| {
        validate_id(s, true).map_err(|e| format!("tenant id `{s}` {e}"))?;
        Ok(s.to_owned())
    })
}

impl<'de> Deserialize<'de> for IdPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_str(d, "an id pattern: ID, PREFIX*, *SUFFIX or *", |s| {
            IdPattern::parse(s).map_err(|e| e.to_string())
        })
    }
}

/// `nodes:` / `clusters:` of a token: at least one pattern.
fn patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IdPattern>, D::Error> {
    d.deserialize_seq(NonEmpty::new("id patterns (ID, PREFIX*, *SUFFIX or *)"))
}

fn inline_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TokenGrant>, D::Error> {
    let raw = Vec::<RawToken>::deserialize(d)?;
    Ok(raw.into_iter().map(TokenGrant::from).collect())
}

/// `tokens_file:` a YAML file holding a list of token entries, the same shape as `tokens:`
/// (flow style keeps one entry per line); empty is no tokens.
fn tokens_file<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<(PathBuf, Vec<TokenGrant>)>, D::Error> {
    with_str(d, "the path of a tokens file", |s| {
        let path = PathBuf::from(s);
        let tokens = load_tokens_file(&path)?;
        Ok(Some((path, tokens)))
    })
}

/// Reads a tokens file; errors are `tokens_file PATH: PATH:LINE:COLUMN: message`.
pub(crate) fn load_tokens_file(path: &Path) -> Result<Vec<TokenGrant>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("tokens_file {shown}: cannot read: {e}"))?;
    let raw: Option<Vec<RawToken>> = serde_yaml::from_str(&text).map_err(|e| {
        let d = super::Diagnostic::from_yaml(&shown.to_string(), &e);
        format!("tokens_file {shown}: {d}")
    })?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(TokenGrant::from)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// JWT

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a jwt mapping with `issuer:`, `audiences:` and `jwks_file:`"
)]
struct RawJwt {
    #[serde(deserialize_with = "non_empty")]
    issuer: String,
    #[serde(deserialize_with = "audiences")]
    audiences: Vec<String>,
    #[serde(deserialize_with = "jwks_file")]
    jwks_file: (PathBuf, Vec<crate::auth::JwtKey>),
    #[serde(default = "secs::<60>", deserialize_with = "duration::any")]
    clock_skew: Duration,
    #[serde(default = "tenant_claim", deserialize_with = "non_empty")]
    tenant_claim: String,
    #[serde(default = "nodes_claim", deserialize_with = "non_empty")]
    nodes_claim: String,
    #[serde(default = "clusters_claim", deserialize_with = "non_empty")]
    clusters_claim: String,
    #[serde(default, deserialize_with = "some_non_empty")]
    node_claim: Option<String>,
    #[serde(default, deserialize_with = "some_non_empty")]
    cluster_claim: Option<String>,
}

fn tenant_claim() -> String {
    ClaimNames::default().tenant
}

fn nodes_claim() -> String {
    ClaimNames::default().nodes
}

fn clusters_claim() -> String {
    ClaimNames::default().clusters
}

fn jwt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JwtConfig>, D::Error> {
    let Some(raw) = Option::<RawJwt>::deserialize(d)? else {
        return Err(D::Error::custom(
            "jwt needs `issuer:`, `audiences:` and `jwks_file:`",
        ));
    };
    let (jwks_file, keys) = raw.jwks_file;
    Ok(Some(JwtConfig {
        jwks_file,
        rules: JwtRules {
            issuer: raw.issuer,
            audiences: raw.audiences,
            clock_skew: raw.clock_skew,
            claims: ClaimNames {
                tenant: raw.tenant_claim,
                nodes: raw.nodes_claim,
                clusters: raw.clusters_claim,
                node: raw.node_claim,
                cluster: raw.cluster_claim,
            },
            keys,
        },
    }))
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a non-empty string", |s| match s.is_empty() {
        true => Err("must not be empty".into()),
        false => Ok(s.to_owned()),
    })
}

fn some_non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_empty(d).map(Some)
}

struct Audience(String);

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        non_empty(d).map(Audience)
    }
}

fn audiences<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list: Vec<Audience> = d.deserialize_seq(NonEmpty::new("audiences"))?;
    Ok(list.into_iter().map(|a| a.0).collect())
}

/// `jwt.jwks_file`: a JWKS document (`{"keys": [...]}`) of RS256, ES256 or EdDSA keys.
fn jwks_file<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<(PathBuf, Vec<crate::auth::JwtKey>), D::Error> {
    with_str(d, "the path of a JWKS file", |s| {
        let path = PathBuf::from(s);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("jwks_file {s}: cannot read: {e}"))?;
        let keys = parse_jwks(&text).map_err(|e| format!("jwks_file {s}: {s}:{e}"))?;
        Ok((path, keys))
    })
}

// ---------------------------------------------------------------------------------------------
// mTLS binding and the required cluster name

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an mtls mapping with `node_id_format:`, `cluster_id_format:` and/or \
                 `tenant_id_format:`"
)]
struct RawMtls {
    #[serde(default, deserialize_with = "peer_format")]
    node_id_format: Option<PeerFormat>,
    #[serde(default, deserialize_with = "peer_format")]
    cluster_id_format: Option<PeerFormat>,
    #[serde(default, deserialize_with = "peer_format")]
    tenant_id_format: Option<PeerFormat>,
}

fn peer_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PeerFormat>, D::Error> {
    with_str(d, "a format such as \"%DOWNSTREAM_PEER_DNS_SAN%\"", |s| {
        PeerFormat::parse(s)
            .map(Some)
            .map_err(|e| format!("format `{s}`: {e}"))
    })
}

fn mtls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MtlsBinding>, D::Error> {
    let raw = checked_map(d, "an mtls mapping", |raw: &RawMtls| {
        if raw.node_id_format.is_none()
            && raw.cluster_id_format.is_none()
            && raw.tenant_id_format.is_none()
        {
            return Err(
                "mtls binds nothing: set node_id_format, cluster_id_format and/or \
                        tenant_id_format"
                    .into(),
            );
        }
        xref::check(|first| {
            (!first.tunnel_client_ca).then(|| {
                "mtls binds the identity to the client certificate, so \
                 responder.tunnel_listener.tls needs `client_ca:` (client certificates required)"
                    .to_owned()
            })
        })
    })?;
    Ok(raw.map(|raw| MtlsBinding {
        node_id_format: raw.node_id_format,
        cluster_id_format: raw.cluster_id_format,
        tenant_id_format: raw.tenant_id_format,
    }))
}

fn cluster_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    with_str(d, "a cluster name", |s| {
        validate_id(s, false).map_err(|e| format!("required_cluster_name `{s}` {e}"))?;
        Ok(Some(s.to_owned()))
    })
}

// ---------------------------------------------------------------------------------------------
// The initiator's credential

/// `initiator.auth`: where the bearer token of every handshake comes from (exactly one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token:` written in the configuration.
    Inline(Secret),
    /// `token_file:` read at each dial, surrounding whitespace trimmed.
    File(PathBuf),
    /// `token_env:` the environment variable read at each dial, trimmed.
    Env(String),
}

impl TokenSource {
    /// Where the token comes from, for summaries and errors (never the token).
    pub fn describe(&self) -> String {
        match self {
            TokenSource::Inline(_) => "inline token".into(),
            TokenSource::File(path) => format!("token_file {}", path.display()),
            TokenSource::Env(name) => format!("token_env {name}"),
        }
    }
}

/// A credential written in the configuration; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an auth mapping with one of `token:`, `token_file:` or `token_env:`"
)]
struct RawInitiatorAuth {
    #[serde(default, deserialize_with = "inline_token")]
    token: Option<Secret>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "env_name")]
    token_env: Option<String>,
}

/// Whether `token` (already trimmed) can follow `Bearer ` in a header: visible ASCII only.
pub fn token_problem(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some("the token is empty".into());
    }
    token
        .bytes()
        .position(|b| !(0x21..=0x7e).contains(&b))
        .map(|i| format!("the token has a space, control or non-ASCII byte at byte {i}"))
}

fn inline_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    with_str(d, "a bearer token", |s| match token_problem(s.trim()) {
        Some(problem) => Err(problem),
        None => Ok(Some(Secret(s.trim().to_owned()))),
    })
}

fn env_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    with_str(d, "an environment variable name", |s| {
        match s.is_empty() || s.contains(['=', '\0']) {
            true => Err(format!("`{s}` is not an environment variable name")),
            false => Ok(Some(s.to_owned())),
        }
    })
}

/// `initiator.auth`.
pub(crate) fn initiator_auth<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<TokenSource>, D::Error> {
    let raw = checked_map(d, "an initiator auth mapping", |raw: &RawInitiatorAuth| {
        let given = [
            raw.token.is_some(),
            raw.token_file.is_some(),
            raw.token_env.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            1 => Ok(()),
            _ => Err("give exactly one of `token:`, `token_file:` or `token_env:`".into()),
        }
    })?;
    Ok(raw.and_then(|raw| {
        raw.token
            .map(TokenSource::Inline)
            .or(raw.token_file.map(TokenSource::File))
            .or(raw.token_env.map(TokenSource::Env))
    }))
}
