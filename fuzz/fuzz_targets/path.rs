//! `rtun::http::path`: request path normalization.
//!
//! Input layout: byte 0 picks the escaped-slash mode (even: `Reject`, odd: `Keep`); the rest is
//! the path (lossy UTF-8).
//!
//! Asserts, for an accepted path:
//! - the result starts with `/`, has no `//`, and no `.` or `..` segment;
//! - every `%` in it starts an uppercase `%XX` that does not encode an unreserved character, and
//!   in `Reject` mode there is no `%2F`, `%5C` or `\`;
//! - normalization is idempotent: normalizing the result again gives the result;
//! - a path `Reject` accepts normalizes the same in `Keep` mode;
//! - `normalize_uri` on the path as a URI (when `http` takes it) gives the same path and keeps
//!   the query.
//!
//! And for a rejected path, that the error's byte offset points at the `%` or `\` it names.
#![no_main]

use http::Uri;
use libfuzzer_sys::fuzz_target;
use rtun::http::path::{normalize, normalize_uri, EscapedSlashes, PathError};

fn check_normalized(out: &str, mode: EscapedSlashes, input: &str) {
    assert!(out.starts_with('/'), "{input:?} -> {out:?}");
    assert!(!out.contains("//"), "{input:?} -> {out:?}");
    for segment in out.split('/') {
        assert!(segment != "." && segment != "..", "{input:?} -> {out:?}");
    }
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).expect("truncated %XX");
            assert!(
                hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')),
                "{input:?} -> {out:?}: %XX not in uppercase hex"
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !(value.is_ascii_alphanumeric() || b"-._~".contains(&value)),
                "{input:?} -> {out:?}: an encoded unreserved character"
            );
            if mode == EscapedSlashes::Reject {
                assert!(value != b'/' && value != b'\\', "{input:?} -> {out:?}");
            }
        }
        if mode == EscapedSlashes::Reject {
            assert!(b != b'\\', "{input:?} -> {out:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mode = if mode % 2 == 0 {
        EscapedSlashes::Reject
    } else {
        EscapedSlashes::Keep
    };
    let path = String::from_utf8_lossy(rest);
    let out = match normalize(&path, mode) {
        Err(PathError::NotAbsolute) => {
            assert!(!path.starts_with('/'));
            return;
        }
        Err(PathError::BadPercent(i)) => {
            assert_eq!(path.as_bytes().get(i), Some(&b'%'), "{path:?}");
            return;
        }
        Err(PathError::EscapedSlash(i)) => {
            assert_eq!(mode, EscapedSlashes::Reject);
            assert!(
                matches!(path.as_bytes().get(i), Some(b'%' | b'\\')),
                "{path:?}"
            );
            return;
        }
        Ok(out) => out,
    };
    check_normalized(&out, mode, &path);
    assert_eq!(
        normalize(&out, mode).as_ref(),
        Ok(&out),
        "not idempotent on {path:?}"
    );
    if mode == EscapedSlashes::Reject {
        assert_eq!(normalize(&path, EscapedSlashes::Keep).as_ref(), Ok(&out));
    }

    // As a request target: the same path, the query untouched.
    if let Ok(uri) = path.parse::<Uri>() {
        if uri.scheme().is_none() && uri.path().starts_with('/') {
            let expected = normalize(uri.path(), mode);
            match (normalize_uri(&uri, mode), expected) {
                (Ok(normalized), Ok(expected)) => {
                    assert_eq!(normalized.path(), expected, "{path:?}");
                    assert_eq!(normalized.query(), uri.query(), "{path:?}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("normalize_uri {a:?} but normalize {b:?} on {path:?}"),
            }
        }
    }
});
