//! Request headers given with `-H 'name: value'`, including templated values that
//! spread requests over many ids: `edge-{0..9999}` yields `edge-0` … `edge-9999`
//! (both ends inclusive), picked round-robin (default; each thread starts at a
//! different offset) or uniformly at random (`--pick random`).

use http::{HeaderName, HeaderValue};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("malformed header {0:?}: expected 'name: value'")]
    MissingColon(String),
    #[error("malformed header {0:?}: invalid header name")]
    BadName(String),
    #[error("malformed header {0:?}: invalid header value")]
    BadValue(String),
    #[error("malformed header {0:?}: range {{A..B}} needs integers with A <= B")]
    BadRange(String),
}

/// How templated values choose their id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pick {
    RoundRobin,
    Random,
}

#[derive(Clone, Debug)]
enum Value {
    Fixed(HeaderValue),
    Range {
        prefix: String,
        suffix: String,
        lo: u64,
        hi: u64,
    },
}

/// One `-H` header.
#[derive(Clone, Debug)]
pub struct HeaderSpec {
    pub name: HeaderName,
    value: Value,
}

impl HeaderSpec {
    pub fn parse(raw: &str) -> Result<Self, HeaderError> {
        let (name, value) = raw
            .split_once(':')
            .ok_or_else(|| HeaderError::MissingColon(raw.to_string()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(HeaderError::BadName(raw.to_string()));
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HeaderError::BadName(raw.to_string()))?;
        let value = value.trim();
        let value = match find_range(value) {
            Some(Ok((start, end, lo, hi))) => {
                let prefix = value[..start].to_string();
                let suffix = value[end..].to_string();
                // Check that every value of the range is a valid header value.
                HeaderValue::from_str(&format!("{prefix}{hi}{suffix}"))
                    .map_err(|_| HeaderError::BadValue(raw.to_string()))?;
                Value::Range {
                    prefix,
                    suffix,
                    lo,
                    hi,
                }
            }
            Some(Err(())) => return Err(HeaderError::BadRange(raw.to_string())),
            None => Value::Fixed(
                HeaderValue::from_str(value).map_err(|_| HeaderError::BadValue(raw.to_string()))?,
            ),
        };
        Ok(HeaderSpec { name, value })
    }

    /// Number of distinct values (1 for a fixed value).
    pub fn span(&self) -> u64 {
        match &self.value {
            Value::Fixed(_) => 1,
            Value::Range { lo, hi, .. } => hi - lo + 1,
        }
    }

    /// The value for choice `i` (taken modulo the span).
    pub fn value(&self, i: u64) -> HeaderValue {
        match &self.value {
            Value::Fixed(v) => v.clone(),
            Value::Range {
                prefix,
                suffix,
                lo,
                hi,
            } => {
                let id = lo + i % (hi - lo + 1);
                // Validity of every id was checked in `parse` (digits only vary).
                HeaderValue::from_str(&format!("{prefix}{id}{suffix}"))
                    .unwrap_or_else(|_| HeaderValue::from_static(""))
            }
        }
    }
}

/// Finds `{A..B}` in `value`: Some(Ok((start, end, A, B))) for a well-formed range,
/// Some(Err) for something that looks like a range but is not, None for no range.
fn find_range(value: &str) -> Option<Result<(usize, usize, u64, u64), ()>> {
    let start = value.find('{')?;
    let rel_end = value[start..].find('}')?;
    let end = start + rel_end + 1;
    let inner = &value[start + 1..end - 1];
    let (a, b) = inner.split_once("..")?;
    let parsed = (a.trim().parse::<u64>(), b.trim().parse::<u64>());
    match parsed {
        (Ok(lo), Ok(hi)) if lo <= hi && hi < u64::MAX => Some(Ok((start, end, lo, hi))),
        _ => Some(Err(())),
    }
}

/// Produces the header values of successive requests on one thread.
#[derive(Debug)]
pub struct HeaderSource {
    specs: Vec<HeaderSpec>,
    pick: Pick,
    counter: u64,
    rng: fastrand::Rng,
}

impl HeaderSource {
    /// `thread`/`threads` spread the round-robin starting points over the range.
    pub fn new(specs: Vec<HeaderSpec>, pick: Pick, thread: usize, threads: usize) -> Self {
        let max_span = specs.iter().map(HeaderSpec::span).max().unwrap_or(1);
        let counter = (max_span / threads.max(1) as u64) * thread as u64;
        HeaderSource {
            specs,
            pick,
            counter,
            rng: fastrand::Rng::with_seed(0x5eed ^ thread as u64),
        }
    }

    /// Appends the headers of the next request to `map`.
    pub fn apply(&mut self, map: &mut http::HeaderMap) {
        let i = match self.pick {
            Pick::RoundRobin => {
                let i = self.counter;
                self.counter = self.counter.wrapping_add(1);
                i
            }
            Pick::Random => self.rng.u64(..),
        };
        for spec in &self.specs {
            map.append(spec.name.clone(), spec.value(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_header() {
        let h = HeaderSpec::parse("Content-Type:  text/plain ").expect("valid");
        assert_eq!(h.name.as_str(), "content-type");
        assert_eq!(h.value(7), "text/plain");
        assert_eq!(h.span(), 1);
    }

    #[test]
    fn range_header_round_robin() {
        let h = HeaderSpec::parse("x-node-id: edge-{0..2}.x").expect("valid");
        assert_eq!(h.span(), 3);
        let vals: Vec<_> = (0..4).map(|i| h.value(i)).collect();
        assert_eq!(vals, ["edge-0.x", "edge-1.x", "edge-2.x", "edge-0.x"]);
    }

    #[test]
    fn source_spreads_threads_and_walks() {
        let spec = HeaderSpec::parse("x-node-id: edge-{0..9999}").expect("valid");
        let mut src = HeaderSource::new(vec![spec], Pick::RoundRobin, 1, 2);
        let mut map = http::HeaderMap::new();
        src.apply(&mut map);
        src.apply(&mut map);
        let got: Vec<_> = map.get_all("x-node-id").iter().collect();
        assert_eq!(got, ["edge-5000", "edge-5001"]);
    }

    #[test]
    fn random_pick_stays_in_range() {
        let spec = HeaderSpec::parse("x-id: {10..12}").expect("valid");
        let mut src = HeaderSource::new(vec![spec], Pick::Random, 0, 1);
        for _ in 0..100 {
            let mut map = http::HeaderMap::new();
            src.apply(&mut map);
            let v: u64 = map["x-id"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("number");
            assert!((10..=12).contains(&v));
        }
    }

    #[test]
    fn malformed_headers() {
        assert!(matches!(
            HeaderSpec::parse("novalue"),
            Err(HeaderError::MissingColon(_))
        ));
        assert!(matches!(
            HeaderSpec::parse(": v"),
            Err(HeaderError::BadName(_))
        ));
        assert!(matches!(
            HeaderSpec::parse("bad name: v"),
            Err(HeaderError::BadName(_))
        ));
        assert!(matches!(
            HeaderSpec::parse("x: a\nb"),
            Err(HeaderError::BadValue(_))
        ));
        assert!(matches!(
            HeaderSpec::parse("x: {9..1}"),
            Err(HeaderError::BadRange(_))
        ));
        assert!(matches!(
            HeaderSpec::parse("x: {a..1}"),
            Err(HeaderError::BadRange(_))
        ));
        // Braces without a range are literal.
        assert!(HeaderSpec::parse("x: {json}").is_ok());
    }
}
