//! Path-prefix routing, first match wins (as Envoy's route table).
//!
//! Route types implement [`Prefixed`] where they are defined (the configuration's routes do so
//! in `config`), so this module depends on none of them.

/// Anything with a path prefix can be routed.
pub trait Prefixed {
    fn prefix(&self) -> &str;
}

/// The first route whose prefix starts the request path.
pub fn match_route<'r, R: Prefixed>(routes: &'r [R], path: &str) -> Option<&'r R> {
    routes.iter().find(|r| path.starts_with(r.prefix()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(&'static str);
    impl Prefixed for R {
        fn prefix(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn first_match_wins() {
        let routes = [R("/api/v2"), R("/api"), R("/")];
        assert_eq!(
            match_route(&routes, "/api/v2/x").map(|r| r.0),
            Some("/api/v2")
        );
        assert_eq!(match_route(&routes, "/api/v1").map(|r| r.0), Some("/api"));
        assert_eq!(match_route(&routes, "/other").map(|r| r.0), Some("/"));
        assert!(match_route(&routes[..2], "/other").is_none());
    }
}
