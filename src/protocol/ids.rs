//! Identity ids: the node, cluster and tenant ids an initiator announces in its handshake.
//!
//! This module owns the single rule for what an id may contain (ARCHITECTURE.md §3): 1..=255 bytes of
//! visible ASCII (0x21..=0x7e) without `:`; the tenant id may also be empty. It is a rule of the
//! wire protocol: the handshake checks the headers it receives with it, and the configuration
//! checks `node:` ids, cluster names and `rc://` ids with it.

/// Longest id, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// Why an id was rejected. The messages are predicates ("must not be empty"); callers prefix
/// them with what the id is, for example "node id `a b` contains ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty where an empty id is not allowed.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("is {len} bytes long; at most 255 are allowed")]
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
    },
    /// The id contains `:`, which separates the fields of an `rc://` address.
    #[error("contains `:` at byte {index}; `:` separates the fields of an rc:// address")]
    Colon {
        /// Byte offset of the `:`.
        index: usize,
    },
    /// The id contains a byte outside visible ASCII (space, control, non-ASCII).
    #[error(
        "contains byte 0x{byte:02x} at byte {index}; only visible ASCII (0x21..=0x7e) is allowed"
    )]
    InvalidByte {
        /// The offending byte.
        byte: u8,
        /// Its byte offset.
        index: usize,
    },
}

/// Checks one id: 1..=255 bytes of visible ASCII without `:` (0 bytes allowed when
/// `allow_empty`, which is the case for tenant ids).
pub fn validate_id(value: &str, allow_empty: bool) -> Result<(), IdError> {
    if value.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(IdError::Empty)
        };
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: value.len() });
    }
    for (index, &byte) in value.as_bytes().iter().enumerate() {
        match byte {
            b':' => return Err(IdError::Colon { index }),
            0x21..=0x7e => {}
            _ => return Err(IdError::InvalidByte { byte, index }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ascii() {
        assert_eq!(validate_id("edge-42", false), Ok(()));
        assert_eq!(validate_id("!~a.b_c/d@e", false), Ok(()));
        assert_eq!(validate_id(&"x".repeat(255), false), Ok(()));
    }

    #[test]
    fn empty_only_when_allowed() {
        assert_eq!(validate_id("", false), Err(IdError::Empty));
        assert_eq!(validate_id("", true), Ok(()));
    }

    #[test]
    fn rejects_too_long() {
        assert_eq!(
            validate_id(&"x".repeat(256), true),
            Err(IdError::TooLong { len: 256 })
        );
    }

    #[test]
    fn rejects_colon_space_control_and_non_ascii() {
        assert_eq!(validate_id("a:b", false), Err(IdError::Colon { index: 1 }));
        assert_eq!(
            validate_id("a b", false),
            Err(IdError::InvalidByte {
                byte: b' ',
                index: 1
            })
        );
        assert_eq!(
            validate_id("a\tb", true),
            Err(IdError::InvalidByte {
                byte: b'\t',
                index: 1
            })
        );
        assert_eq!(
            validate_id("é", false),
            Err(IdError::InvalidByte {
                byte: 0xc3,
                index: 0
            })
        );
        assert_eq!(
            validate_id("a\x7f", false),
            Err(IdError::InvalidByte {
                byte: 0x7f,
                index: 1
            })
        );
    }

    #[test]
    fn messages_explain_the_rule() {
        let msg = validate_id("a b", false).unwrap_err().to_string();
        assert!(msg.contains("visible ASCII"), "{msg}");
    }
}
