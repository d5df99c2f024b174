//! Configuration errors. Every problem found in a file carries the file, line and column it was
//! found at; [`ConfigError`] prints one `FILE:LINE:COLUMN: message` per line.

use std::fmt;

/// One problem at one place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given to [`super::load`] or [`super::parse`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the key and/or value.
    pub message: String,
}

impl Diagnostic {
    /// Turns a serde_yaml error into a diagnostic, moving its location into `line`/`column`
    /// (errors without a location are placed at 1:1).
    pub(crate) fn from_yaml(file: &str, err: &serde_yaml::Error) -> Self {
        let text = err.to_string();
        let (line, column, message) = match err.location() {
            Some(loc) => {
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                (loc.line(), loc.column(), text.replacen(&suffix, "", 1))
            }
            None => (1, 1, text),
        };
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    }

    /// A diagnostic at the start of the file, for problems that belong to no single value.
    pub(crate) fn at_start(file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The path as given.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; at least one diagnostic.
    #[error("{}", Lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The problems found (empty for [`ConfigError::Io`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid(diagnostics) => diagnostics,
        }
    }
}

struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_one_diagnostic_per_line() {
        let err = ConfigError::Invalid(vec![
            Diagnostic::at_start("a.yaml", "first"),
            Diagnostic {
                file: "a.yaml".into(),
                line: 3,
                column: 7,
                message: "second".into(),
            },
        ]);
        assert_eq!(err.to_string(), "a.yaml:1:1: first\na.yaml:3:7: second");
        assert_eq!(err.diagnostics().len(), 2);
    }

    #[test]
    fn io_error_names_the_file() {
        let err = ConfigError::Io {
            file: "x.yaml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(err.to_string().starts_with("x.yaml: cannot read: "));
    }
}
