//! `rtun::config::parse_duration` on any text (bytes decoded as lossy UTF-8).
//!
//! Asserts:
//! - no panic (no overflow: the fuzz build has overflow checks on);
//! - an accepted duration was written as digits (with an optional `.fraction`) and a unit
//!   `ms`/`s`/`m`/`h`, surrounding whitespace aside; a bare number is `NoUnit`, a leading `-`
//!   is `Negative`;
//! - the value is exact: it equals a reference computed in 128-bit integers from the digits
//!   (leading zeros ignored; the fraction's first 18 digits, truncated to whole nanoseconds);
//! - whole milliseconds round-trip through `format_duration`; surrounding whitespace changes
//!   nothing.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rtun::config::{format_duration, parse_duration, DurationError};

/// Nanoseconds of `int[.frac]` × `unit`, or `None` past `u64` (the reference). As documented,
/// fraction digits past the 18th are ignored.
fn reference(number: &str, unit_nanos: u128) -> Option<u64> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int = int.trim_start_matches('0');
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos = int.checked_mul(unit_nanos)?;
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let value: u128 = frac.parse().ok()?;
        nanos = nanos.checked_add(value * unit_nanos / 10u128.pow(frac.len() as u32))?;
    }
    u64::try_from(nanos).ok()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let result = parse_duration(&text);
    let s = text.trim();
    if s.starts_with('-') {
        assert!(
            matches!(result, Err(DurationError::Negative(_))),
            "{result:?}"
        );
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        assert!(
            matches!(result, Err(DurationError::NoUnit(_))),
            "{result:?}"
        );
    }
    let Ok(duration) = result else {
        return;
    };
    let (number, unit_nanos) = [
        ("ms", 1_000_000u128),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ]
    .into_iter()
    .find_map(|(unit, nanos)| {
        let number = s.strip_suffix(unit)?;
        let digits = number.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        (digits && !number.is_empty()).then_some((number, nanos))
    })
    .unwrap_or_else(|| panic!("accepted {s:?}, which is not a number and a unit"));
    assert!(number.matches('.').count() <= 1);
    assert!(!number.starts_with('.') && !number.ends_with('.'));
    assert_eq!(
        Some(duration),
        reference(number, unit_nanos).map(Duration::from_nanos),
        "{s:?}"
    );
    if duration.as_nanos() % 1_000_000 == 0 {
        let written = format_duration(duration);
        assert_eq!(parse_duration(&written), Ok(duration), "{written}");
    }
    assert_eq!(parse_duration(&format!(" \t{s}\n")), Ok(duration));
});
