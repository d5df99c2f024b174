//! `rtun::http::h1::chunked::ChunkedDecoder::decode` over arbitrary chunkings of arbitrary
//! bytes.
//!
//! Input layout: byte 0's low four bits are how many chunk lengths follow (each one byte), its
//! high four bits bound one Data piece (`decode`'s `max`; 0 for no bound); the remaining bytes
//! are the received stream, cut into reads of those lengths (mod what is left), the last read
//! taking the rest.
//!
//! Asserts:
//! - no panic; every Data piece is non-empty, within `max`, and no longer than what its call
//!   consumed; `Ok(None)` leaves nothing unconsumed;
//! - the chunking and `max` do not matter: the data, the outcome (end with its trailers, error,
//!   or more needed) and what is left after the end equal a one-shot decode of the stream;
//! - the body ends exactly where a reference decoder written from RFC 9112 §7.1 (whole-buffer,
//!   line by line) says it does, with the same data and trailers, and nowhere else: the decoder
//!   ends iff the reference finds a complete, valid body, and what follows stays unconsumed;
//! - once ended, the decoder consumes nothing more; once failed, it keeps failing.
#![no_main]

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use rtun::http::h1::chunked::{ChunkedDecoder, Decoded, MAX_LINE, MAX_TRAILERS};

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    More,
    End(HeaderMap),
    Err(&'static str),
}

/// Feeds `reads` in order: (data, outcome, bytes consumed in all).
fn run(reads: &[&[u8]], max: usize) -> (Vec<u8>, Outcome, usize) {
    let mut decoder = ChunkedDecoder::new();
    let mut src = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    for read in reads {
        src.extend_from_slice(read);
        fed += read.len();
        loop {
            let before = src.len();
            let result = decoder.decode(&mut src, max);
            let consumed = before - src.len();
            match result {
                Ok(Some(Decoded::Data(d))) => {
                    assert!(
                        !d.is_empty() && d.len() <= max,
                        "{} bytes, max {max}",
                        d.len()
                    );
                    assert!(
                        d.len() <= consumed,
                        "{} bytes from {consumed} consumed",
                        d.len()
                    );
                    data.extend_from_slice(&d);
                }
                Ok(None) => {
                    assert!(src.is_empty(), "more needed with {} bytes left", src.len());
                    break;
                }
                Ok(Some(Decoded::End(trailers))) => {
                    assert!(decoder.is_done());
                    let left = src.len();
                    assert_eq!(
                        decoder.decode(&mut src, max),
                        Ok(Some(Decoded::End(HeaderMap::new())))
                    );
                    assert_eq!(src.len(), left, "consumed after the end");
                    return (data, Outcome::End(trailers), fed - left);
                }
                Err(e) => {
                    assert_eq!(decoder.decode(&mut src, max), Err(e.clone()));
                    return (data, Outcome::Err(e.label()), 0);
                }
            }
        }
    }
    (data, Outcome::More, fed)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// HTAB, SP, VCHAR, obs-text.
fn is_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// The line starting at `pos`, without its CRLF, if it ends in CRLF and holds no other CR.
fn line(input: &[u8], pos: usize) -> Option<&[u8]> {
    let rest = input.get(pos..)?;
    let lf = rest.iter().position(|&b| b == b'\n')?;
    let line = rest[..lf].strip_suffix(b"\r")?;
    (!line.contains(&b'\r')).then_some(line)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn valid_extensions(ext: &[u8]) -> bool {
    let mut i = 0;
    let ws = |i: &mut usize| {
        while matches!(ext.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while ext.get(*i).is_some_and(|&b| is_tchar(b)) {
            *i += 1;
        }
        *i > start
    };
    loop {
        ws(&mut i);
        if i == ext.len() {
            return true;
        }
        if ext[i] != b';' {
            return false;
        }
        i += 1;
        ws(&mut i);
        if !token(&mut i) {
            return false;
        }
        ws(&mut i);
        if ext.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        ws(&mut i);
        if ext.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match ext.get(i) {
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if ext.get(i + 1).is_some_and(|&b| is_text(b)) => i += 2,
                    Some(&b) if is_text(b) && b != b'\\' => i += 1,
                    _ => return false,
                }
            }
        } else if !token(&mut i) {
            return false;
        }
    }
}

/// The reference: a complete, valid chunked body at the start of `input` as (data, trailers,
/// length), or `None`.
fn reference(input: &[u8]) -> Option<(Vec<u8>, HeaderMap, usize)> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let size_line = line(input, pos)?;
        if size_line.len() + 2 > MAX_LINE {
            return None;
        }
        pos += size_line.len() + 2;
        let split = size_line
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(size_line.len());
        let (hex, ext) = size_line.split_at(split);
        if hex.is_empty() || !hex.iter().all(u8::is_ascii_hexdigit) || !valid_extensions(ext) {
            return None;
        }
        let significant = std::str::from_utf8(hex).ok()?.trim_start_matches('0');
        if significant.len() > 16 {
            return None;
        }
        let size = if significant.is_empty() {
            0
        } else {
            u64::from_str_radix(significant, 16).ok()?
        };
        if size == 0 {
            break;
        }
        let end = pos.checked_add(usize::try_from(size).ok()?)?;
        data.extend_from_slice(input.get(pos..end)?);
        if input.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        pos = end + 2;
    }
    let start = pos;
    let mut trailers = HeaderMap::new();
    loop {
        let field = line(input, pos)?;
        pos += field.len() + 2;
        if pos - start > MAX_TRAILERS {
            return None;
        }
        if field.is_empty() {
            return Some((data, trailers, pos));
        }
        let colon = field.iter().position(|&b| b == b':')?;
        let (name, value) = (&field[..colon], &field[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        let ows = |b: &u8| *b == b' ' || *b == b'\t';
        let from = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
        let to = value.iter().rposition(|b| !ows(b)).map_or(from, |i| i + 1);
        let raw = &value[from..to];
        if !raw.iter().all(|&b| is_text(b)) {
            return None;
        }
        trailers.append(
            HeaderName::from_bytes(name).ok()?,
            HeaderValue::from_bytes(raw).ok()?,
        );
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let count = usize::from(control & 0x0f).min(rest.len());
    let max = match control >> 4 {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let (lengths, stream) = rest.split_at(count);
    let mut reads: Vec<&[u8]> = Vec::with_capacity(count + 1);
    let mut left = stream;
    for &len in lengths {
        let (read, tail) = left.split_at(usize::from(len) % (left.len() + 1));
        reads.push(read);
        left = tail;
    }
    reads.push(left);

    let (data, outcome, used) = run(&reads, max);

    // The chunking and the bound do not matter.
    let one = run(&[stream], usize::MAX);
    assert_eq!(
        (&data, &outcome, used),
        (&one.0, &one.1, one.2),
        "reads {reads:?}"
    );

    // The reference.
    match (reference(stream), &outcome) {
        (Some((want_data, want_trailers, want_used)), Outcome::End(trailers)) => {
            assert_eq!(data, want_data);
            assert_eq!(trailers, &want_trailers);
            assert_eq!(used, want_used);
        }
        (None, Outcome::End(_)) => panic!("ended a body the reference refuses"),
        (Some(_), other) => panic!("the reference ends the body, the decoder says {other:?}"),
        (None, Outcome::More) => {
            // Whatever the decoder took so far was data of a body still going on.
            assert!(data.len() <= stream.len());
        }
        (None, Outcome::Err(_)) => {}
    }
});
