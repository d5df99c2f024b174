//! Durations in the configuration: `250ms`, `2s`, `1.5s`, `1m`, `1h`.
//!
//! This module owns the duration syntax and its serde glue. A bare number is an error ("durations
//! need a unit"), as is a negative one. Whether zero is allowed is decided per setting by the
//! deserializer it uses: [`positive`] for timeouts and intervals where zero would mean "fail at
//! once" or "spin" (connect, handshake and header read timeouts, the initiator's pre-HTTP/2
//! idle timeout, ping and cleanup intervals, backoffs), [`any`] where zero has a clear meaning
//! (`drain_timeout: 0s` closes at once, `pending_timeout: 0s` does not wait for a tunnel),
//! [`off_or_any`] for the request and connection timeouts that `0` turns off (route, response,
//! stream idle and egress connection idle timeouts, HTTP/2 keepalive, as in Envoy): there a
//! bare `0` is accepted too, and the value is [`Duration::ZERO`] (see [`enabled`]).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// The route timeout where a route and its listener set none (Envoy's 15 s): the time from the
/// end of the request to the response head.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// The stream idle timeout where none is set (Envoy's `stream_idle_timeout`, 5 min): no body
/// bytes in either direction for this long ends the request.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a duration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration; write for example `2s` or `250ms`")]
    Empty,
    /// A number without unit.
    #[error("durations need a unit: ms, s, m, h (got `{0}`; write for example `{0}s`)")]
    NoUnit(String),
    /// A unit other than ms, s, m, h.
    #[error("unknown unit in duration `{0}`: durations need a unit: ms, s, m, h")]
    UnknownUnit(String),
    /// Not a number followed by a unit.
    #[error("`{0}` is not a duration: write a number and a unit (ms, s, m, h), for example `2s` or `1.5s`")]
    Malformed(String),
    /// A negative duration.
    #[error("duration `{0}` is negative")]
    Negative(String),
    /// Too large to represent.
    #[error("duration `{0}` is too large")]
    TooLarge(String),
    /// Zero where zero makes no sense.
    #[error("duration `{0}` must be greater than zero here")]
    Zero(String),
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h` (surrounding whitespace is ignored).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (number, None),
    };
    let digits_ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if !digits_ok {
        return Err(DurationError::Malformed(s.to_owned()));
    }
    let unit_nanos: u128 = match unit {
        "" => return Err(DurationError::NoUnit(s.to_owned())),
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(DurationError::UnknownUnit(s.to_owned())),
    };
    let too_large = || DurationError::TooLarge(s.to_owned());
    if int.len() > 20 {
        return Err(too_large());
    }
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let mut nanos = int.checked_mul(unit_nanos).ok_or_else(too_large)?;
    if let Some(frac) = frac {
        // Digits beyond the 18th are below a nanosecond for every unit.
        let frac = &frac[..frac.len().min(18)];
        let value: u128 = frac.parse().map_err(|_| too_large())?;
        nanos += value * unit_nanos / 10u128.pow(frac.len() as u32);
    }
    let nanos = u64::try_from(nanos).map_err(|_| too_large())?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration the way the configuration writes it (`250ms`, `2s`, `1m`, `1h`,
/// `1500ms`), falling back to Rust's debug form below a millisecond.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if !nanos.is_multiple_of(1_000_000) {
        return format!("{d:?}");
    }
    let ms = nanos / 1_000_000;
    match ms {
        0 => "0s".to_owned(),
        ms if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        ms if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        ms if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// Reads a duration and runs `check` on it inside the visitor, so that a failed check is
/// reported at the value's line and column.
struct DurationVisitor<F> {
    allow_zero: bool,
    /// A bare `0` means "off" (and is accepted without a unit).
    zero_is_off: bool,
    check: F,
}

fn unchecked(_: Duration) -> Result<(), String> {
    Ok(())
}

impl<F: FnOnce(Duration) -> Result<(), String>> Visitor<'_> for DurationVisitor<F> {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as `250ms`, `2s`, `1m`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let d = parse_duration(v).map_err(E::custom)?;
        if d.is_zero() && !self.allow_zero {
            return Err(E::custom(DurationError::Zero(v.trim().to_owned())));
        }
        (self.check)(d).map_err(E::custom)?;
        Ok(d)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        if v == 0 && self.zero_is_off {
            return Ok(Duration::ZERO);
        }
        Err(E::custom(DurationError::NoUnit(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        if v == 0 && self.zero_is_off {
            return Ok(Duration::ZERO);
        }
        Err(E::custom(DurationError::NoUnit(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(DurationError::NoUnit(v.to_string())))
    }
}

/// [`DEFAULT_ROUTE_TIMEOUT`], for `#[serde(default = …)]`.
pub(crate) fn default_route_timeout() -> Duration {
    DEFAULT_ROUTE_TIMEOUT
}

/// [`DEFAULT_STREAM_IDLE_TIMEOUT`], for `#[serde(default = …)]`.
pub(crate) fn default_stream_idle_timeout() -> Duration {
    DEFAULT_STREAM_IDLE_TIMEOUT
}

/// `N` seconds, for `#[serde(default = "secs::<N>")]`.
pub(crate) fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// A duration that may be zero.
pub(crate) fn any<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    checked(d, true, unchecked)
}

/// A duration that must be greater than zero.
pub(crate) fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    checked(d, false, unchecked)
}

/// A duration that passes `check` (its error is the message).
pub(crate) fn checked<'de, D, F>(d: D, allow_zero: bool, check: F) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(Duration) -> Result<(), String>,
{
    d.deserialize_any(DurationVisitor {
        allow_zero,
        zero_is_off: false,
        check,
    })
}

/// A timeout that `0` (or `0s`, `0ms`, …) turns off: [`Duration::ZERO`] then means "no
/// timeout". A bare `0` needs no unit; any other number does.
pub(crate) fn off_or_any<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor {
        allow_zero: true,
        zero_is_off: true,
        check: unchecked,
    })
}

/// An optional [`off_or_any`] timeout: absent (or `null`) is `None` (inherit a default),
/// `0` is `Some(Duration::ZERO)` (off).
pub(crate) fn option_off_or_any<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    struct OffVisitor;
    impl<'de> Visitor<'de> for OffVisitor {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as `250ms`, `2s`, `1m`, `0` (off), or nothing")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            off_or_any(d).map(Some)
        }
    }
    d.deserialize_option(OffVisitor)
}

/// `Some(d)` for a timeout that is on, `None` for one that `0` turned off.
pub fn enabled(timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then_some(timeout)
}

struct OptionVisitor {
    allow_zero: bool,
}

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as `250ms`, `2s`, `1m`, or nothing")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        checked(d, self.allow_zero, unchecked).map(Some)
    }
}

/// An optional duration that may be zero (`null` or absent is `None`).
pub(crate) fn option_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_option(OptionVisitor { allow_zero: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("2s"), Ok(ms(2_000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration(" 0s "), Ok(ms(0)));
    }

    #[test]
    fn parses_fractions() {
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.25m"), Ok(ms(15_000)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1_500)));
    }

    #[test]
    fn bare_number_needs_a_unit() {
        let err = parse_duration("10").unwrap_err();
        assert_eq!(err, DurationError::NoUnit("10".into()));
        assert!(err
            .to_string()
            .contains("durations need a unit: ms, s, m, h"));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
        assert_eq!(
            parse_duration("2d"),
            Err(DurationError::UnknownUnit("2d".into()))
        );
        assert_eq!(
            parse_duration("2 s"),
            Err(DurationError::UnknownUnit("2 s".into()))
        );
        for bad in ["s", ".5s", "1.s", "1.2.3s", "abc"] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Malformed(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::TooLarge("99999999999999999999h".into()))
        );
    }

    #[test]
    fn formats_like_the_config() {
        assert_eq!(format_duration(ms(250)), "250ms");
        assert_eq!(format_duration(ms(2_000)), "2s");
        assert_eq!(format_duration(ms(1_500)), "1500ms");
        assert_eq!(format_duration(ms(120_000)), "2m");
        assert_eq!(format_duration(ms(7_200_000)), "2h");
        assert_eq!(format_duration(ms(0)), "0s");
    }
}
