//! `rtun::config::parse_rc_address` on any text (bytes decoded as lossy UTF-8).
//!
//! Asserts:
//! - no panic; an error names the whole address as written, and its message contains it;
//! - an accepted address starts with `rc://`, its node and cluster ids obey the id rule (tenant
//!   may be empty), its remote cluster is non-empty without `@` or `:`, and its count is the
//!   decimal number written (leading zeros aside);
//! - the canonical spelling `rc://node:cluster:tenant@remote:count` parses to the same spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtun::config::{parse_rc_address, RC_SCHEME};
use rtun::protocol::validate_id;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_rc_address(&text) {
        Err(err) => {
            assert_eq!(err.address, text);
            assert!(err.to_string().contains(&*text));
        }
        Ok(spec) => {
            assert!(text.starts_with(RC_SCHEME));
            let id = &spec.identity;
            assert_eq!(validate_id(&id.id, false), Ok(()));
            assert_eq!(validate_id(&id.cluster, false), Ok(()));
            assert_eq!(validate_id(&id.tenant, true), Ok(()));
            let remote = &spec.remote_cluster;
            assert!(!remote.is_empty() && !remote.contains(['@', ':']));
            let count = text.rsplit(':').next().unwrap();
            assert!(count.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(count.parse::<u32>(), Ok(spec.connections));
            let canonical = format!(
                "{RC_SCHEME}{}:{}:{}@{remote}:{}",
                id.id, id.cluster, id.tenant, spec.connections
            );
            assert_eq!(parse_rc_address(&canonical), Ok(spec), "{canonical}");
        }
    }
});
