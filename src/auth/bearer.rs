//! The bearer credential of a handshake: `authorization: Bearer <token>` (RFC 6750).
//!
//! The scheme is matched case-insensitively; one or more spaces separate it from the token;
//! surrounding whitespace is ignored. Exactly one `authorization` header: none is "missing", two
//! are refused rather than guessed between. The token is returned as bytes and never logged.

use super::Denial;

/// The token of the handshake's single `authorization: Bearer` header.
pub fn bearer_token(headers: &[(String, Vec<u8>)]) -> Result<&[u8], Denial> {
    bearer_of(
        headers
            .iter()
            .filter(|(name, _)| name == "authorization")
            .map(|(_, value)| value.as_slice()),
    )
}

/// The token of the single `authorization: Bearer` value among `values` (every value of the
/// `authorization` header, in order): the same rules for any request (the admin endpoint).
pub fn bearer_of<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<&'a [u8], Denial> {
    let Some(value) = values.next() else {
        return Err(Denial::unauthenticated(
            "Missing credentials: send `authorization: Bearer <token>`",
        ));
    };
    if values.next().is_some() {
        return Err(Denial::unauthenticated(
            "More than one authorization header",
        ));
    }
    let value = value.trim_ascii();
    let scheme_len = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_len);
    let token = rest.trim_ascii();
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(Denial::unauthenticated(
            "The authorization header is not `Bearer <token>`",
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> Vec<(String, Vec<u8>)> {
        let mut h = vec![("host".to_owned(), b"x".to_vec())];
        h.extend(
            values
                .iter()
                .map(|v| ("authorization".to_owned(), v.as_bytes().to_vec())),
        );
        h
    }

    #[test]
    fn reads_the_token() {
        for value in ["Bearer abc", "bearer abc", "BEARER   abc  ", " Bearer\tabc"] {
            assert_eq!(bearer_token(&headers(&[value])), Ok(&b"abc"[..]), "{value}");
        }
    }

    #[test]
    fn refuses_what_is_not_one_bearer_token() {
        for h in [
            headers(&[]),
            headers(&["Bearer a", "Bearer b"]),
            headers(&["Basic YTpi"]),
            headers(&["Bearer"]),
            headers(&["Bearer   "]),
            headers(&["Bearerabc"]),
            headers(&[""]),
        ] {
            assert!(
                matches!(bearer_token(&h), Err(Denial::Unauthenticated(_))),
                "{h:?}"
            );
        }
    }
}
