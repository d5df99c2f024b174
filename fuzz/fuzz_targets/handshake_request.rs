//! `rtun::protocol::parse_request`, the responder's parse of a handshake (plain and upgrade form).
//!
//! Asserts, on any bytes:
//! - no panic, and nothing past `MAX_HANDSHAKE_BYTES` matters: the result on the input equals the
//!   result on its first `MAX_HANDSHAKE_BYTES` bytes;
//! - an accepted head has a length within the buffer and the limit, and is complete in itself:
//!   parsing exactly those bytes gives the same result (the bytes after belong to HTTP/2), and so
//!   does parsing them followed by an HTTP/2 preface;
//! - a strict prefix of an accepted head is never accepted (it is `Ok(None)` or rejected);
//! - the accepted identity obeys the id rule, the form matches the `upgrade` header, and the
//!   headers are all recorded with lowercase names;
//! - re-encoding the accepted identity in the same form with `HandshakeRequest::encode` parses
//!   back to the same identity, form and upstream cluster (encoder and parser agree).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtun::protocol::{
    parse_request, validate_id, HandshakeForm, HandshakeRequest, DEFAULT_REQUEST_PATH,
    MAX_HANDSHAKE_BYTES,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let result = parse_request(data, DEFAULT_REQUEST_PATH);
    if data.len() > MAX_HANDSHAKE_BYTES {
        assert_eq!(
            result,
            parse_request(&data[..MAX_HANDSHAKE_BYTES], DEFAULT_REQUEST_PATH),
            "bytes past MAX_HANDSHAKE_BYTES changed the result"
        );
    }
    let Ok(Some((accepted, len))) = result else {
        return;
    };
    assert!(len > 0 && len <= data.len() && len <= MAX_HANDSHAKE_BYTES);
    let head = &data[..len];
    assert_eq!(
        parse_request(head, DEFAULT_REQUEST_PATH),
        Ok(Some((accepted.clone(), len))),
        "the accepted head is not complete in itself"
    );
    let with_h2 = [head, PREFACE].concat();
    assert_eq!(
        parse_request(&with_h2, DEFAULT_REQUEST_PATH),
        Ok(Some((accepted.clone(), len))),
        "HTTP/2 bytes after the head changed the result"
    );
    // A few strict prefixes (all of them would make this quadratic).
    for cut in [len - 1, len / 2, len.saturating_sub(3)] {
        if cut < len {
            assert!(
                !matches!(
                    parse_request(&head[..cut], DEFAULT_REQUEST_PATH),
                    Ok(Some(_))
                ),
                "a strict prefix ({cut} of {len} bytes) was accepted"
            );
        }
    }

    let identity = &accepted.identity;
    assert_eq!(validate_id(&identity.node_id, false), Ok(()));
    assert_eq!(validate_id(&identity.cluster_id, false), Ok(()));
    assert_eq!(validate_id(&identity.tenant_id, true), Ok(()));
    let has_upgrade = accepted.headers.iter().any(|(name, _)| name == "upgrade");
    if accepted.form == HandshakeForm::Upgrade {
        assert!(has_upgrade, "upgrade form without an upgrade header");
    }
    for (name, _) in &accepted.headers {
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    }

    // Encoder and parser agree on what was accepted. `encode` takes configuration values (no
    // CR/LF); header values from httparse never contain them.
    let upstream = accepted.upstream_cluster.clone().unwrap_or_default();
    let bytes = HandshakeRequest {
        host: "fuzz.example:9000",
        path: DEFAULT_REQUEST_PATH,
        identity,
        upstream_cluster: &upstream,
        form: accepted.form,
        initiation_time: accepted.initiation_time(),
        extra_headers: &[],
    }
    .encode();
    let (again, again_len) = parse_request(&bytes, DEFAULT_REQUEST_PATH)
        .unwrap_or_else(|r| panic!("re-encoded handshake rejected: {r:?}"))
        .expect("re-encoded handshake is incomplete");
    assert_eq!(again_len, bytes.len());
    assert_eq!(&again.identity, identity);
    assert_eq!(again.form, accepted.form);
    assert_eq!(again.upstream_cluster.unwrap_or_default(), upstream);
    assert_eq!(again.initiation_time_ms, accepted.initiation_time_ms);
});
