//! Who may use the admin endpoint: with `admin.token_sha256` or `admin.token_file` set, every
//! request must carry `authorization: Bearer <token>`; the token's SHA-256 is compared with the
//! configured one in constant time (`crate::auth::tokens::hash_matches`). Anything else is a 401
//! that says what to send, never why a given token was wrong.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::auth::bearer_of;
use crate::auth::tokens::hash_matches;
use crate::config::AdminToken;
use crate::http::local_reply::text_bytes;

/// Whether a request with `headers` may use the endpoint.
pub(super) fn admitted(token: Option<&AdminToken>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let values = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(HeaderValue::as_bytes);
    bearer_of(values).is_ok_and(|presented| hash_matches(&token.sha256, presented))
}

/// The 401 for a request that was not [`admitted`]: what to send, not what was wrong.
pub(super) fn refusal() -> Response<Bytes> {
    let mut reply = text_bytes(
        StatusCode::UNAUTHORIZED,
        "The admin endpoint needs `authorization: Bearer <admin token>`",
    );
    reply.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"rtun-admin\""),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::sha256;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn a_token_is_required_only_when_configured() {
        assert!(admitted(None, &with(&[])));
        let token = AdminToken {
            sha256: sha256(b"s3cret"),
            file: None,
        };
        assert!(admitted(Some(&token), &with(&["Bearer s3cret"])));
        assert!(admitted(Some(&token), &with(&["bearer   s3cret "])));
        for bad in [
            &[][..],
            &["Bearer wrong"],
            &["Basic czNjcmV0"],
            &["Bearer s3cret", "Bearer s3cret"],
            &["s3cret"],
        ] {
            assert!(!admitted(Some(&token), &with(bad)), "{bad:?}");
        }
        let reply = refusal();
        assert_eq!(reply.status(), 401);
        assert!(reply.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
