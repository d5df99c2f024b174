//! Sending a request once more: the copy of its head that a second attempt is built from.
//!
//! Two places send a request again, each under its own rule: the responder, when the tunnel
//! refused a bodiless stream without processing it (`responder::reverse_cluster`), and the
//! initiator's pool, when an idempotent bodiless request broke before any response byte on a
//! local HTTP/2 connection (hyper keeps the request it was given; `http::h1` gives the head back
//! with its error, so the pool copies nothing for HTTP/1.1).

/// A copy of a request head. Extensions are not carried over: nothing after the copy is made
/// reads them.
pub fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_has_the_head_and_no_extensions() {
        let (mut parts, ()) = http::Request::builder()
            .method(http::Method::PUT)
            .uri("http://svc/a?b")
            .version(http::Version::HTTP_2)
            .header("x-a", "1")
            .header("x-a", "2")
            .extension(7u32)
            .body(())
            .unwrap()
            .into_parts();
        let copy = copy_head(&parts);
        assert_eq!(copy.method, http::Method::PUT);
        assert_eq!(copy.uri, "http://svc/a?b");
        assert_eq!(copy.version, http::Version::HTTP_2);
        assert_eq!(
            copy.headers.get_all("x-a").iter().collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(copy.extensions.get::<u32>().is_none());
        parts.headers.clear();
        assert_eq!(copy.headers.len(), 2, "a copy, not a view");
    }
}
