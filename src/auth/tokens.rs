//! Static bearer tokens. The responder stores only the SHA-256 of each token (what
//! `printf %s "$TOKEN" | sha256sum` prints), never the token: a leaked configuration does not
//! leak credentials. A presented token is hashed and compared with every stored hash in constant
//! time ([`subtle`]), so the comparison's timing says nothing about how close a guess was.
//!
//! The same hashing and comparison serve the egress listener's API keys
//! (`crate::auth::tenant`) and the admin token ([`hash_matches`]).

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::grant::Grant;

/// One configured token: its hash and what it allows.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// SHA-256 of the token bytes.
    pub sha256: [u8; 32],
    /// What the token may claim.
    pub grant: Grant,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough of the hash to tell entries apart in a dump, not a full hash to brute-force.
        let short: String = self.sha256[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        f.debug_struct("TokenGrant")
            .field("sha256", &format_args!("{short}…"))
            .field("grant", &self.grant)
            .finish()
    }
}

/// `sha256:` as written: 64 hexadecimal digits (either case).
pub fn parse_sha256_hex(text: &str) -> Result<[u8; 32], String> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "sha256 must be 64 hexadecimal digits (the SHA-256 of the token, as `sha256sum` \
             prints it), got {} characters",
            text.chars().count()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]);
        let lo = hex_value(pair[1]);
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit
            .to_ascii_lowercase()
            .wrapping_sub(b'a')
            .wrapping_add(10),
    }
}

/// The SHA-256 of `token`.
pub fn sha256(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Sha256::digest(token).as_slice());
    out
}

/// The configured tokens, looked up by the hash of a presented token.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    entries: Vec<TokenGrant>,
}

impl TokenTable {
    pub fn new(entries: Vec<TokenGrant>) -> Self {
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The grant of `token`, if it is one of the configured tokens (see [`find_hashed`]).
    pub fn find(&self, token: &[u8]) -> Option<&Grant> {
        find_hashed(self.entries.iter().map(|e| (&e.sha256, &e.grant)), token)
    }
}

/// Whether `secret` hashes to `stored`, compared in constant time (the admin token).
pub fn hash_matches(stored: &[u8; 32], secret: &[u8]) -> bool {
    stored.ct_eq(&sha256(secret)).into()
}

/// The value stored under the hash of `secret`, if any. Every stored hash is compared, each in
/// constant time, whether or not an earlier one matched, so the time taken says nothing about
/// which entry (if any) is close. Shared by the handshake's tokens and the egress API keys.
pub fn find_hashed<'a, T>(
    entries: impl IntoIterator<Item = (&'a [u8; 32], &'a T)>,
    secret: &[u8],
) -> Option<&'a T> {
    let digest = sha256(secret);
    let mut found = None;
    for (hash, value) in entries {
        let equal: bool = hash.ct_eq(&digest).into();
        if equal && found.is_none() {
            found = Some(value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::IdPattern;

    /// sha256("test")
    const TEST_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn entry(hash: &str, tenant: &str) -> TokenGrant {
        TokenGrant {
            sha256: parse_sha256_hex(hash).expect("hash"),
            grant: Grant {
                tenant: tenant.into(),
                nodes: vec![IdPattern::Any],
                clusters: vec![IdPattern::Any],
            },
        }
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_sha256_hex(TEST_HASH), Ok(sha256(b"test")));
        assert_eq!(
            parse_sha256_hex(&TEST_HASH.to_ascii_uppercase()),
            Ok(sha256(b"test"))
        );
        for bad in ["", "abc", &TEST_HASH[1..], &format!("{TEST_HASH}0")] {
            assert!(parse_sha256_hex(bad).is_err(), "{bad}");
        }
        let mut not_hex = TEST_HASH.to_owned();
        not_hex.replace_range(0..1, "g");
        assert!(parse_sha256_hex(&not_hex).is_err());
        let multibyte = format!("\u{e9}{}", &TEST_HASH[2..]);
        assert!(parse_sha256_hex(&multibyte).is_err());
    }

    #[test]
    fn finds_by_hash_only() {
        let other = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";
        let table = TokenTable::new(vec![entry(other, "b"), entry(TEST_HASH, "a")]);
        assert_eq!(table.find(b"test").map(|g| g.tenant.as_str()), Some("a"));
        assert!(table.find(b"Test").is_none());
        assert!(table.find(b"").is_none());
        assert!(
            table.find(TEST_HASH.as_bytes()).is_none(),
            "the hash is not the token"
        );
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn hash_helpers() {
        let stored = sha256(b"admin-secret");
        assert!(hash_matches(&stored, b"admin-secret"));
        assert!(!hash_matches(&stored, b"admin-secreT"));
        assert!(!hash_matches(&stored, b""));
        let entries = [(sha256(b"k1"), 1), (sha256(b"k2"), 2)];
        let find = |s: &[u8]| find_hashed(entries.iter().map(|(h, v)| (h, v)), s).copied();
        assert_eq!(
            (find(b"k1"), find(b"k2"), find(b"k3")),
            (Some(1), Some(2), None)
        );
    }

    #[test]
    fn debug_shows_no_full_hash() {
        let dump = format!("{:?}", entry(TEST_HASH, "a"));
        assert!(dump.contains("9f86d081…"), "{dump}");
        assert!(!dump.contains(TEST_HASH), "{dump}");
    }
}
