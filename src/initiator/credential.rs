//! The initiator's bearer credential: the `authorization: Bearer <token>` header of each
//! handshake, from `initiator.auth` (an inline `token`, a `token_file` or a `token_env`).
//!
//! Files and environment variables are read at each dial, so a rotated token is used from
//! the next dial on; surrounding whitespace (a trailing newline) is trimmed. A token that
//! cannot be read is a dial error that names where it was looked for, never the token.

use std::path::PathBuf;

use crate::config::{token_problem, TokenSource};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read token_file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token_env {0} is not set")]
    EnvMissing(String),
    #[error("token_env {0} is not valid UTF-8")]
    EnvNotUnicode(String),
    #[error("the token from {from} is unusable: {problem}")]
    Unusable { from: String, problem: String },
}

/// The `authorization` header to send, read from `source` now.
pub fn authorization(source: &TokenSource) -> Result<(String, String), CredentialError> {
    let raw = match source {
        TokenSource::Inline(secret) => secret.expose().to_owned(),
        TokenSource::File(path) => {
            std::fs::read_to_string(path).map_err(|source| CredentialError::File {
                path: path.clone(),
                source,
            })?
        }
        TokenSource::Env(name) => match std::env::var(name) {
            Ok(value) => value,
            Err(std::env::VarError::NotPresent) => {
                return Err(CredentialError::EnvMissing(name.clone()))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(CredentialError::EnvNotUnicode(name.clone()))
            }
        },
    };
    let token = raw.trim();
    if let Some(problem) = token_problem(token) {
        return Err(CredentialError::Unusable {
            from: source.describe(),
            problem,
        });
    }
    Ok(("authorization".to_owned(), format!("Bearer {token}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_file_and_env_at_call_time_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let file = TokenSource::File(path.clone());
        assert!(matches!(
            authorization(&file),
            Err(CredentialError::File { .. })
        ));
        std::fs::write(&path, "  s3cret\n").expect("write");
        assert_eq!(authorization(&file).expect("token").1, "Bearer s3cret");
        std::fs::write(&path, "rotated\n").expect("write");
        assert_eq!(authorization(&file).expect("token").1, "Bearer rotated");
        std::fs::write(&path, "\n").expect("write");
        let empty = authorization(&file).expect_err("empty");
        assert!(empty.to_string().contains("is empty"), "{empty}");
        std::fs::write(&path, "two words").expect("write");
        let spaced = authorization(&file).expect_err("space");
        assert!(
            !spaced.to_string().contains("two words"),
            "never the token: {spaced}"
        );

        let name = format!("RTUN_TEST_TOKEN_{}", std::process::id());
        let env = TokenSource::Env(name.clone());
        assert!(matches!(
            authorization(&env),
            Err(CredentialError::EnvMissing(_))
        ));
        // SAFETY: a variable name of this test only; no other thread reads it.
        unsafe { std::env::set_var(&name, "from-env \n") };
        assert_eq!(authorization(&env).expect("token").1, "Bearer from-env");
        unsafe { std::env::remove_var(&name) };
    }
}
