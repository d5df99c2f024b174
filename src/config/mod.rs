//! Configuration: the YAML schema, `rc://` parsing, durations, and errors with file, line
//! and column (README, "Configuration reference").
//!
//! This module owns turning a file into a validated, immutable [`Config`] that every shard shares
//! read-only. [`load`] reads a file, [`parse`] checks text; both return every problem they can
//! find as `FILE:LINE:COLUMN: message` lines ([`ConfigError`]).
//!
//! Syntax, type and value errors stop deserialization, so only the first of those is reported
//! (a serde limitation); once the file deserializes, every cross-reference error is reported.
//!
//! Layout, each module importing only the ones after it in this list: `summary`; `schema` (the
//! top level: `shards` and the whole file as read); the sections `access_log`, `admin` (listener and token),
//! `initiator`, `responder`, `route` (what a route rewrites, both roles), `tenant` (the egress listener's tenant source), `cluster`, `auth`
//! (credentials of both roles); `rc` (the `rc://` address); `node`; then the generic pieces `de`
//! (validating deserializers), `duration`, `xref` (cross-reference checks and how they keep
//! locations), `error`. The id rule comes from [`crate::protocol::ids`].

mod access_log;
mod admin;
mod auth;
mod cluster;
mod de;
mod duration;
mod error;
mod initiator;
mod node;
mod rc;
mod responder;
mod route;
mod schema;
mod summary;
mod tenant;
mod xref;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tenancy_tests;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::rc::Rc;

pub use access_log::{AccessLogConfig, AccessLogPath, DEFAULT_BUFFER_LINES};
pub use admin::{AdminConfig, AdminToken, ReadyWhen};
pub use auth::{token_problem, JwtConfig, Secret, TokenSource, TunnelAuthConfig};
pub use cluster::{ClientTlsConfig, ClusterConfig, Protocol};
pub use duration::{
    enabled, format_duration, parse_duration, DurationError, DEFAULT_ROUTE_TIMEOUT,
    DEFAULT_STREAM_IDLE_TIMEOUT,
};
pub use error::{ConfigError, Diagnostic};
pub use initiator::{InitiatorConfig, InitiatorRoute, DEFAULT_INITIAL_RECONNECT_BACKOFF};
pub use node::NodeIdentity;
pub use rc::{parse_rc_address, RcAddressError, RcReason, TunnelSpec, RC_SCHEME};
pub use responder::{
    EgressListenerConfig, EgressRoute, ResponderConfig, ServerTlsConfig, TunnelListenerConfig,
};
pub use route::{HeaderRules, HeaderToAdd, RouteRewrite};
pub use schema::{Config, Shards};

use schema::RawConfig;

/// Most errors reported for one file.
const MAX_ERRORS: usize = 32;

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    parse(&source, &file)
}

/// Parses and validates configuration text; `file_name` is used in error messages.
pub fn parse(source: &str, file_name: &str) -> Result<Config, ConfigError> {
    let invalid = |d: Diagnostic| ConfigError::Invalid(vec![d]);
    if is_empty_document(source) {
        return Err(invalid(Diagnostic::at_start(
            file_name,
            "the configuration is empty: it needs an `initiator:` and/or a `responder:` section",
        )));
    }

    // Pass 1: syntax, types, values.
    let first: RawConfig =
        serde_yaml::from_str(source).map_err(|e| invalid(Diagnostic::from_yaml(file_name, &e)))?;
    let first_pass = Rc::new(first.first_pass());

    // Pass 2 (repeated): cross-references, each error at its value (see `xref`).
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    for skip in 0..MAX_ERRORS {
        let pass = xref::run(Rc::clone(&first_pass), skip, || {
            serde_yaml::from_str::<RawConfig>(source)
        });
        match pass {
            Ok(_) => break,
            Err(e) => {
                let d = Diagnostic::from_yaml(file_name, &e);
                if diagnostics.last() == Some(&d) {
                    break;
                }
                diagnostics.push(d);
            }
        }
    }

    if first.initiator.is_none() && first.responder.is_none() {
        diagnostics.push(Diagnostic::at_start(
            file_name,
            "nothing to run: the configuration needs an `initiator:` and/or a `responder:` section",
        ));
    }
    if !diagnostics.is_empty() {
        return Err(ConfigError::Invalid(diagnostics));
    }
    first.into_config().ok_or_else(|| {
        invalid(Diagnostic::at_start(
            file_name,
            "a tunnel `{ cluster: ... }` needs the top-level `node:` identity",
        ))
    })
}

/// True for text with no YAML content (only whitespace, comments, `---`, or `null`).
fn is_empty_document(source: &str) -> bool {
    matches!(
        serde_yaml::from_str::<serde_yaml::Value>(source),
        Ok(serde_yaml::Value::Null)
    )
}
