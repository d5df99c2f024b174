//! `rtun::config::parse(text, "fuzz.yaml")`: configuration loading from any text (bytes decoded
//! as lossy UTF-8).
//!
//! Asserts:
//! - no panic, whatever the YAML (syntax errors, wrong types, bad values, cross-references);
//! - a failure is `ConfigError::Invalid` (never `Io`: text is not read from a file) with at least
//!   one diagnostic, each naming `fuzz.yaml` at a 1-based line and column, the line within the
//!   text (YAML's line breaks: LF, CR, NEL, LS, PS) or at its end, with a non-empty message, and
//!   printed as
//!   `fuzz.yaml:LINE:COLUMN: message`;
//! - an accepted configuration has a summary (`rtun validate`'s output) without panicking.
//!
//! Some settings name files (`token_file`, `tokens_file`, `jwks_file`) that the parser reads;
//! `run.sh` runs this target in an empty scratch directory, and inputs naming `/dev/`, `/proc/` or
//! `/sys/` are skipped so that a read of an endless device cannot pass for a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtun::config::{parse, ConfigError};

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if ["/dev/", "/proc/", "/sys/"]
        .iter()
        .any(|p| text.contains(p))
    {
        return;
    }
    match parse(&text, FILE) {
        Ok(config) => {
            let _ = config.summary();
        }
        Err(ConfigError::Io { .. }) => panic!("parsing text reported an I/O error"),
        Err(err @ ConfigError::Invalid(_)) => {
            let diagnostics = err.diagnostics();
            assert!(!diagnostics.is_empty(), "an error without a diagnostic");
            // YAML's line breaks (libyaml's): LF, CR (CRLF counts twice here: an upper bound),
            // NEL, LS and PS. The end of an input without a final break is placed at the
            // start of the line after it, hence `lines + 1`.
            let breaks = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
            let lines = 1 + text.chars().filter(|c| breaks.contains(c)).count();
            let printed = err.to_string();
            for d in diagnostics {
                assert_eq!(d.file, FILE);
                assert!(d.line >= 1 && d.column >= 1, "{d}");
                assert!(d.line <= lines + 1, "{d}: past the end of {lines} lines");
                assert!(!d.message.trim().is_empty(), "{d}");
                let head = format!("{FILE}:{}:{}: ", d.line, d.column);
                assert!(printed.contains(&head), "{printed:?} lacks {head:?}");
            }
        }
    }
});
