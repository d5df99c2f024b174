//! `rtun::protocol::parse_response`, the initiator's parse of the responder's answer, for both
//! `HandshakeForm`s.
//!
//! Asserts, on any bytes and for each form:
//! - no panic; the consumed length is within the buffer and `MAX_HANDSHAKE_BYTES`, and parsing
//!   exactly those bytes, or those bytes followed by an HTTP/2 preface, gives the same result;
//! - a strict prefix of a complete response is never complete;
//! - the acceptance matches the form: a plain handshake never gets `101`, an upgrade handshake
//!   never gets `200`; a `101` consumes only its head and carries no body nor `retry-after`;
//! - `retry-after` never exceeds `MAX_RETRY_AFTER`;
//! - a status other than `101`/`200` parses the same in both forms (rejections do not depend on
//!   the form);
//! - `encode_response` of a parsed rejection parses back to the same status and retry-after,
//!   with the body ending in a newline (encoder and parser agree).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtun::protocol::{
    encode_response, parse_response, HandshakeForm, MAX_HANDSHAKE_BYTES, MAX_RETRY_AFTER,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let plain = parse_response(data, HandshakeForm::Plain);
    let upgrade = parse_response(data, HandshakeForm::Upgrade);
    for (form, result) in [
        (HandshakeForm::Plain, &plain),
        (HandshakeForm::Upgrade, &upgrade),
    ] {
        let Ok(Some((response, len))) = result else {
            continue;
        };
        let len = *len;
        assert!(len > 0 && len <= data.len() && len <= MAX_HANDSHAKE_BYTES);
        let whole = &data[..len];
        assert_eq!(
            &parse_response(whole, form),
            result,
            "{form:?}: not complete in itself"
        );
        let with_h2 = [whole, PREFACE].concat();
        assert_eq!(
            &parse_response(&with_h2, form),
            result,
            "{form:?}: h2 bytes after it count"
        );
        for cut in [len - 1, len / 2] {
            assert!(
                !matches!(parse_response(&whole[..cut], form), Ok(Some(_))),
                "{form:?}: a strict prefix ({cut} of {len} bytes) is complete"
            );
        }
        match (form, response.status) {
            (HandshakeForm::Plain, 101) => panic!("101 accepted for a plain handshake"),
            (HandshakeForm::Upgrade, 200) => panic!("200 accepted for an upgrade handshake"),
            (_, 101) => {
                assert!(response.body.is_empty() && response.retry_after.is_none());
            }
            _ => {}
        }
        if let Some(after) = response.retry_after {
            assert!(after <= MAX_RETRY_AFTER, "{after:?}");
        }
        assert_eq!(response.accepted(), matches!(response.status, 101 | 200));
    }

    // Rejections are read the same whatever the form.
    let is_rejection = |r: &Result<Option<(rtun::protocol::HandshakeResponse, usize)>, _>| matches!(r, Ok(Some((resp, _))) if !resp.accepted());
    if is_rejection(&plain) || is_rejection(&upgrade) {
        assert_eq!(plain, upgrade, "a rejection depends on the form");
    }

    // The responder's encoder and the initiator's parser agree on a rejection.
    if let Ok(Some((response, _))) = &plain {
        if !response.accepted() && (100..=999).contains(&response.status) {
            let secs = response.retry_after.map(|d| d.as_secs());
            let bytes = encode_response(response.status, &response.body, secs);
            if bytes.len() > MAX_HANDSHAKE_BYTES {
                // A lossy body (U+FFFD for each bad byte) can outgrow the limit.
                return;
            }
            let (back, back_len) = parse_response(&bytes, HandshakeForm::Plain)
                .unwrap_or_else(|e| panic!("encoded rejection unreadable: {e}"))
                .expect("encoded rejection incomplete");
            assert_eq!(back_len, bytes.len());
            assert_eq!(back.status, response.status);
            assert_eq!(back.retry_after, response.retry_after);
            assert!(back.body.starts_with(&response.body) && back.body.ends_with('\n'));
        }
    }
});
