//! Generic deserializers that validate values as they are read.
//!
//! serde_yaml attaches a line and column only to errors raised *inside* a visitor (while the
//! value's YAML event is being consumed), not to errors raised after a nested `deserialize`
//! returned. So every check runs inside a visitor: [`with_str`] for scalars, small visitors for
//! lists and maps ([`NonEmpty`], [`checked_map`]). The schema modules (`schema`, `node`,
//! `cluster`, `initiator`, `responder`) build their field deserializers from these, next to the
//! types they fill; cross-reference checks (`xref`) run inside the same visitors.
//!
//! This module knows no schema type.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::protocol::DEFAULT_REQUEST_PATH;

/// Reads a scalar as text and converts it with `parse`; its error becomes the message.
pub(crate) fn with_str<'de, D, T, F>(d: D, expecting: &'static str, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct StrVisitor<F> {
        expecting: &'static str,
        parse: F,
    }
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(StrVisitor { expecting, parse })
}

/// An unsigned integer within `min..=max`.
pub(crate) fn ranged<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64) -> Result<u64, D::Error> {
    struct RangeVisitor {
        min: u64,
        max: u64,
    }
    impl Visitor<'_> for RangeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an integer from {} to {}", self.min, self.max)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if (self.min..=self.max).contains(&v) {
                Ok(v)
            } else {
                Err(E::custom(format!(
                    "{v} is out of range: expected an integer from {} to {}",
                    self.min, self.max
                )))
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "{v} is negative: expected an integer from {} to {}",
                    self.min, self.max
                ))),
            }
        }
    }
    d.deserialize_any(RangeVisitor { min, max })
}

/// A `u32` of at least 1.
pub(crate) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, 1, u32::MAX.into()).map(|v| v as u32)
}

/// What a listen address looks like, for `expecting`.
pub(crate) const LISTEN: &str = "a listen address IP:PORT";

/// A listen address: `IP:PORT`, no hostname.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "`{s}` is not a listen address: expected IP:PORT such as 0.0.0.0:9000 or [::]:9000 \
             (hostnames are not allowed here)"
        )
    })
}

/// A list with at least one element; `what` names it in the error.
pub(crate) struct NonEmpty<T> {
    what: &'static str,
    marker: PhantomData<T>,
}

impl<T> NonEmpty<T> {
    pub(crate) fn new(what: &'static str) -> Self {
        NonEmpty {
            what,
            marker: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for NonEmpty<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {}", self.what)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        if items.is_empty() {
            return Err(de::Error::custom(format!(
                "the list is empty: give at least one of {}",
                self.what
            )));
        }
        Ok(items)
    }
}

fn check_path(s: &str, what: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{what} `{s}` must start with `/`"));
    }
    if let Some(b) = s.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(format!(
            "{what} `{s}` contains byte 0x{b:02x}; only visible ASCII is allowed (percent-encode the rest)"
        ));
    }
    Ok(s.to_owned())
}

/// A route `prefix` (initiator and egress routes).
pub(crate) fn path_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a path prefix starting with `/`", |s| {
        check_path(s, "prefix")
    })
}

/// A handshake `request_path` (initiator and tunnel listener).
pub(crate) fn request_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    with_str(d, "a path starting with `/`", |s| {
        let path = check_path(s, "request_path")?;
        if path.contains(['?', '#']) {
            return Err(format!(
                "request_path `{s}` must be a plain path without `?` or `#`"
            ));
        }
        Ok(path)
    })
}

/// The default `request_path` (ARCHITECTURE.md §3).
pub(crate) fn default_request_path() -> String {
    DEFAULT_REQUEST_PATH.to_owned()
}

/// Deserializes a mapping as `T`, then runs `check` on it inside the visitor, so a failed check
/// is reported at the mapping's line and column. `null` is `None`.
pub(crate) fn checked_map<'de, D, T, F>(
    d: D,
    expecting: &'static str,
    check: F,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: FnOnce(&T) -> Result<(), String>,
{
    struct MapVisitor<T, F> {
        expecting: &'static str,
        check: F,
        marker: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, F: FnOnce(&T) -> Result<(), String>> Visitor<'de>
        for MapVisitor<T, F>
    {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let value = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.check)(&value).map_err(de::Error::custom)?;
            Ok(Some(value))
        }
    }
    d.deserialize_any(MapVisitor {
        expecting,
        check,
        marker: PhantomData,
    })
}
