//! Id patterns: the node ids and cluster ids a credential may claim.
//!
//! A pattern is an exact id (`edge-42`), a prefix glob (`edge-*`: ids starting with `edge-`), a
//! suffix glob (`*-west`: ids ending with `-west`), or `*` (any id). One `*`, first or last, is
//! the whole syntax: no `*` in the middle, no `?`, no character classes. Matching is
//! case-sensitive, byte for byte, as ids are compared everywhere else. The text around the `*`
//! follows the id rule (visible ASCII, no `:`, at most 255 bytes).

use std::fmt;

use crate::protocol::{validate_id, IdError};

/// One node or cluster id pattern.
#[derive(Clone, PartialEq, Eq)]
pub enum IdPattern {
    /// `*`: any id.
    Any,
    /// An exact id.
    Exact(String),
    /// `PREFIX*`: ids that start with `PREFIX`.
    Prefix(String),
    /// `*SUFFIX`: ids that end with `SUFFIX`.
    Suffix(String),
}

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty: write an id, `prefix*`, `*suffix` or `*`")]
    Empty,
    #[error(
        "pattern `{0}` has `*` in the middle or twice: only one leading or trailing `*` is allowed"
    )]
    Wildcard(String),
    #[error("pattern `{pattern}` {error}")]
    Id { pattern: String, error: IdError },
}

impl IdPattern {
    /// Parses one pattern.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text == "*" {
            return Ok(IdPattern::Any);
        }
        let (kind, fixed): (fn(String) -> IdPattern, &str) =
            if let Some(prefix) = text.strip_suffix('*') {
                (IdPattern::Prefix, prefix)
            } else if let Some(suffix) = text.strip_prefix('*') {
                (IdPattern::Suffix, suffix)
            } else {
                (IdPattern::Exact, text)
            };
        if fixed.contains('*') {
            return Err(PatternError::Wildcard(text.to_owned()));
        }
        validate_id(fixed, false).map_err(|error| PatternError::Id {
            pattern: text.to_owned(),
            error,
        })?;
        Ok(kind(fixed.to_owned()))
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            IdPattern::Any => true,
            IdPattern::Exact(exact) => id == exact,
            IdPattern::Prefix(prefix) => id.starts_with(prefix.as_str()),
            IdPattern::Suffix(suffix) => id.ends_with(suffix.as_str()),
        }
    }
}

/// Whether any of `patterns` matches `id`.
pub fn any_matches(patterns: &[IdPattern], id: &str) -> bool {
    patterns.iter().any(|p| p.matches(id))
}

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdPattern::Any => f.write_str("*"),
            IdPattern::Exact(id) => f.write_str(id),
            IdPattern::Prefix(prefix) => write!(f, "{prefix}*"),
            IdPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl fmt::Debug for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IdPattern {
        IdPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn shapes_and_matching() {
        assert_eq!(p("*"), IdPattern::Any);
        assert!(p("*").matches("anything"));
        assert!(p("edge-42").matches("edge-42"));
        assert!(!p("edge-42").matches("edge-420"));
        assert!(!p("edge-42").matches("Edge-42"), "case-sensitive");
        assert!(p("edge-*").matches("edge-42"));
        assert!(p("edge-*").matches("edge-"), "an empty rest matches");
        assert!(!p("edge-*").matches("edg"));
        assert!(p("*-west").matches("edge-west"));
        assert!(!p("*-west").matches("edge-west2"));
        assert_eq!(p("edge-*").to_string(), "edge-*");
        assert_eq!(p("*-west").to_string(), "*-west");
    }

    #[test]
    fn invalid_patterns() {
        assert_eq!(IdPattern::parse(""), Err(PatternError::Empty));
        for bad in ["a*b", "**", "*a*", "a**", "**a"] {
            assert!(
                matches!(IdPattern::parse(bad), Err(PatternError::Wildcard(_))),
                "{bad}"
            );
        }
        for bad in ["a:b*", "a b", "*\u{e9}", "x:"] {
            assert!(
                matches!(IdPattern::parse(bad), Err(PatternError::Id { .. })),
                "{bad}"
            );
        }
        let long = format!("{}*", "a".repeat(256));
        assert!(IdPattern::parse(&long).is_err());
    }
}
