//! `access_log:` where request and tunnel event lines go, in what format, and how many lines
//! each shard may hold for the writer (README, "Access logs"). Absent: no access log.
//!
//! ```yaml
//! access_log:
//!   path: /var/log/rtun/access.log   # or `stdout` (default)
//!   format: json                     # default; or an Envoy-style format string
//!   buffer_lines: 4096               # per shard; a line past it is dropped and counted
//! ```
//!
//! The format string is compiled here ([`crate::access_log::Format::parse`]): an unknown
//! operator is an error at the format's line and column, naming the character within it.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::de::{checked_map, ranged, with_str};
use crate::access_log::Format;

/// Most lines a shard's buffer may hold (the default is [`DEFAULT_BUFFER_LINES`]).
const MAX_BUFFER_LINES: u64 = 1 << 20;

/// Lines each shard may hold for the writer by default.
pub const DEFAULT_BUFFER_LINES: usize = 4096;

/// The access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `path:` stdout (default) or a file, opened for appending (created if missing).
    pub path: AccessLogPath,
    /// `format:` `json` (default) or a format string.
    pub format: Format,
    /// `buffer_lines:` lines each shard may hold for the writer (default 4096).
    pub buffer_lines: usize,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogPath {
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for AccessLogPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogPath::Stdout => f.write_str("stdout"),
            AccessLogPath::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an access_log mapping such as `{ path: stdout, format: json }`"
)]
struct RawAccessLog {
    #[serde(default = "stdout", deserialize_with = "path")]
    path: AccessLogPath,
    #[serde(default = "json", deserialize_with = "format")]
    format: Format,
    #[serde(default = "default_buffer_lines", deserialize_with = "buffer_lines")]
    buffer_lines: usize,
}

fn stdout() -> AccessLogPath {
    AccessLogPath::Stdout
}

fn json() -> Format {
    Format::Json
}

fn default_buffer_lines() -> usize {
    DEFAULT_BUFFER_LINES
}

/// `access_log:` — present but empty (`access_log:` or `access_log: {}`) means stdout, JSON.
pub(crate) fn access_log<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<AccessLogConfig>, D::Error> {
    let raw = checked_map(d, "an access_log mapping", |_: &RawAccessLog| Ok(()))?;
    let Some(raw) = raw else {
        return Ok(Some(AccessLogConfig {
            path: AccessLogPath::Stdout,
            format: Format::Json,
            buffer_lines: DEFAULT_BUFFER_LINES,
        }));
    };
    Ok(Some(AccessLogConfig {
        path: raw.path,
        format: raw.format,
        buffer_lines: raw.buffer_lines,
    }))
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<AccessLogPath, D::Error> {
    with_str(d, "`stdout` or a file path", |s| match s {
        "stdout" => Ok(AccessLogPath::Stdout),
        "" => Err("the access log path is empty: give `stdout` or a file path".into()),
        _ => Ok(AccessLogPath::File(PathBuf::from(s))),
    })
}

fn format<'de, D: Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
    with_str(d, "`json` or an Envoy-style format string", |s| {
        Format::parse(s).map_err(|e| format!("access_log.format: {e}"))
    })
}

fn buffer_lines<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1, MAX_BUFFER_LINES).map(|n| n as usize)
}
