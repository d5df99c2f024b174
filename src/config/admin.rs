//! `admin:` the admin listener and its optional bearer token (README, "Admin endpoint").
//!
//! The token is given as its SHA-256 (`token_sha256:`, what `printf %s "$TOKEN" | sha256sum`
//! prints) or as a file holding the token itself (`token_file:`, read once at load, surrounding
//! whitespace trimmed); either way only the hash is kept. With a token, every admin request
//! but the probes (`/ready`, `/healthz`) needs `authorization: Bearer <token>`.
//! `ready_when:` (`all`, default, or `any`) is what the initiator's `/ready` needs: every
//! `initiator.tunnels` entry with a tunnel up, or one.
//! `detailed_stats:` (default false) adds per-host request series to `/metrics` (Envoy's
//! `enable_detailed_stats`); `max_series:` (default 1000, at most 100 000) bounds the label
//! sets each family with tenant, cluster or host id labels keeps per shard (`crate::metrics`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::auth::token_problem;
use super::de::{checked_map, parse_listen, with_str, LISTEN};
use crate::auth::parse_sha256_hex;
use crate::auth::tokens::sha256;

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to listen on (default 127.0.0.1:9901).
    pub listen: SocketAddr,
    /// The bearer token every request must carry; none when absent.
    pub token: Option<AdminToken>,
    /// What the initiator's `/ready` needs (default `all`).
    pub ready_when: ReadyWhen,
    /// Count egress requests per (tenant, host id) too (default off).
    pub detailed_stats: bool,
    /// Label sets each dynamic family keeps per shard; the rest count as overflow.
    pub max_series: usize,
}

/// `admin.max_series`'s bound: the series tables are allocated up front.
const MAX_SERIES: usize = 100_000;

/// `admin.ready_when`: which `initiator.tunnels` entries need a tunnel up for `/ready`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyWhen {
    /// Every entry that asks for tunnels has one up.
    #[default]
    All,
    /// At least one entry has one up.
    Any,
}

/// The admin token: only its hash, and the file it came from, if any.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// `token_file:`, when the token was read from a file.
    pub file: Option<PathBuf>,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("sha256", &"<redacted>")
            .field("file", &self.file)
            .finish()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token: None,
            ready_when: ReadyWhen::All,
            detailed_stats: false,
            max_series: crate::metrics::DEFAULT_MAX_SERIES,
        }
    }
}

impl AdminConfig {
    /// True when the endpoint listens beyond loopback and anyone reaching it may read it:
    /// the start warns loudly and `rtun validate` says so.
    pub fn exposed_without_token(&self) -> bool {
        self.token.is_none() && !self.listen.ip().is_loopback()
    }

    /// The posture line of `rtun validate`.
    pub fn describe_token(&self) -> String {
        match (&self.token, self.exposed_without_token()) {
            (Some(AdminToken { file: Some(f), .. }), _) => {
                format!("bearer token required (from {})", f.display())
            }
            (Some(_), _) => "bearer token required".into(),
            (None, false) => "no token (loopback only)".into(),
            (None, true) => format!(
                "no token (WARNING: listens on {} without one: anyone who reaches it reads the \
                 counters and the tunnel directory; set admin.token_sha256 or admin.token_file)",
                self.listen
            ),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9901))
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an admin mapping such as `{ listen: 127.0.0.1:9901 }`"
)]
struct RawAdmin {
    #[serde(default = "default_admin_listen", deserialize_with = "admin_listen")]
    listen: SocketAddr,
    #[serde(default, deserialize_with = "token_sha256")]
    token_sha256: Option<[u8; 32]>,
    #[serde(default, deserialize_with = "token_file")]
    token_file: Option<(PathBuf, [u8; 32])>,
    #[serde(default)]
    ready_when: ReadyWhen,
    #[serde(default)]
    detailed_stats: bool,
    #[serde(default = "default_max_series")]
    max_series: usize,
}

fn default_max_series() -> usize {
    crate::metrics::DEFAULT_MAX_SERIES
}

/// `admin:` — present but empty (`admin:` or `admin: {}`) means enabled with defaults.
pub(crate) fn admin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdminConfig>, D::Error> {
    let raw = checked_map(d, "an admin mapping", |raw: &RawAdmin| {
        if raw.token_sha256.is_some() && raw.token_file.is_some() {
            return Err("give one of `token_sha256:` or `token_file:`, not both".into());
        }
        match (1..=MAX_SERIES).contains(&raw.max_series) {
            true => Ok(()),
            false => Err(format!("`max_series:` must be between 1 and {MAX_SERIES}")),
        }
    })?;
    let Some(raw) = raw else {
        return Ok(Some(AdminConfig::default()));
    };
    let token = match (raw.token_sha256, raw.token_file) {
        (Some(hash), _) => Some(AdminToken {
            sha256: hash,
            file: None,
        }),
        (None, Some((path, hash))) => Some(AdminToken {
            sha256: hash,
            file: Some(path),
        }),
        (None, None) => None,
    };
    Ok(Some(AdminConfig {
        listen: raw.listen,
        token,
        ready_when: raw.ready_when,
        detailed_stats: raw.detailed_stats,
        max_series: raw.max_series,
    }))
}

/// `admin.listen`.
fn admin_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    with_str(d, LISTEN, parse_listen)
}

fn token_sha256<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
    with_str(d, "the admin token's SHA-256 in hex", |s| {
        parse_sha256_hex(s).map(Some)
    })
}

/// `token_file:` the token itself, read now; only its hash is kept.
fn token_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(PathBuf, [u8; 32])>, D::Error> {
    with_str(d, "the path of a file holding the admin token", |s| {
        let text =
            std::fs::read_to_string(s).map_err(|e| format!("token_file {s}: cannot read: {e}"))?;
        let token = text.trim();
        if let Some(problem) = token_problem(token) {
            return Err(format!("token_file {s}: {problem}"));
        }
        Ok(Some((PathBuf::from(s), sha256(token.as_bytes()))))
    })
}
