//! `rtun::http::host_id::HostIdFormat`: parsing a `host_id_format` and evaluating it over
//! arbitrary headers and remote addresses.
//!
//! Input layout (bytes, lossy UTF-8 where text is needed): `FORMAT \0 HEADERS \0 REMOTE`.
//! HEADERS is lines of `name:value` (lines whose name or value `http` refuses are skipped);
//! REMOTE is 6 bytes (IPv4 and port) or 18 (IPv6 and port), anything else meaning no address.
//!
//! Asserts:
//! - no panic in parsing or evaluating;
//! - a rejected format is named in full, and its offset points at a `%` of it;
//! - an accepted format prints as written (`as_str`, `Display`) and parses again;
//! - with no headers and no address, the result is the format's literal text alone (`%%` read as
//!   `%`, every operator as nothing), computed independently here;
//! - with headers, evaluating is deterministic, and `first_host_id` agrees with `evaluate`
//!   (empty and `-` mean none);
//! - the header names it reads are lowercase, named in the format (ASCII case aside), and
//!   `expected_headers` lists them without duplicates.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rtun::http::host_id::{expected_headers, first_host_id, HostIdFormat};

/// The literal text of an accepted format: `%%` is `%`, `%...%` is nothing.
fn literal_text(format: &str) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some(pct) = rest.find('%') {
        out.push_str(&rest[..pct]);
        let after = &rest[pct + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
        } else {
            let end = after
                .find('%')
                .expect("accepted format with an unclosed `%`");
            rest = &after[end + 1..];
        }
    }
    out.push_str(rest);
    out
}

fn remote(bytes: &[u8]) -> Option<SocketAddr> {
    match bytes.len() {
        6 => {
            let ip: [u8; 4] = bytes[..4].try_into().unwrap();
            let port = u16::from_be_bytes([bytes[4], bytes[5]]);
            Some(SocketAddr::from((Ipv4Addr::from(ip), port)))
        }
        18 => {
            let ip: [u8; 16] = bytes[..16].try_into().unwrap();
            let port = u16::from_be_bytes([bytes[16], bytes[17]]);
            Some(SocketAddr::from((Ipv6Addr::from(ip), port)))
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let format = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header_text = parts.next().unwrap_or_default();
    let remote = remote(parts.next().unwrap_or_default());

    let parsed = match HostIdFormat::parse(&format) {
        Err(err) => {
            assert_eq!(err.format, format);
            assert_eq!(format.as_bytes().get(err.offset), Some(&b'%'), "{err}");
            return;
        }
        Ok(parsed) => parsed,
    };
    assert_eq!(parsed.as_str(), format);
    assert_eq!(parsed.to_string(), format);
    assert_eq!(HostIdFormat::parse(&format).as_ref(), Ok(&parsed));

    let empty = HeaderMap::new();
    assert_eq!(parsed.evaluate(&empty, None), literal_text(&format));

    let mut headers = HeaderMap::new();
    for line in header_text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let value = parsed.evaluate(&headers, remote);
    assert_eq!(
        value,
        parsed.evaluate(&headers, remote),
        "not deterministic"
    );
    let first = first_host_id(std::slice::from_ref(&parsed), &headers, remote);
    let expected = (!value.is_empty() && value != "-").then_some(value);
    assert_eq!(first, expected);

    let lower = format.to_ascii_lowercase();
    for name in parsed.header_names() {
        let name = name.as_str();
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(lower.contains(name), "{name} is not in {format:?}");
    }
    let expected = expected_headers(std::slice::from_ref(&parsed));
    for (i, name) in expected.iter().enumerate() {
        assert!(!expected[..i].contains(name), "{name} listed twice");
    }
});
