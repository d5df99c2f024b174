//! Path-prefix routing, first match wins (as Envoy's route table).
//!
//! Route types implement [`Prefixed`] where they are defined (the configuration's routes do so
//! in `config`), so this module depends on none of them.

/// Anything with a path prefix can be routed.
pub trait Prefixed {
    fn prefix(&self) -> &str;
}

/// The first route whose prefix starts the request path, with its index in `routes`.
pub fn match_route<'r, R: Prefixed>(routes: &'r [R], path: &str) -> Option<(usize, &'r R)> {
    routes
        .iter()
        .enumerate()
        .find(|(_, r)| path.starts_with(r.prefix()))
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
        let matched = |path| match_route(&routes, path).map(|(i, r)| (i, r.0));
        assert_eq!(matched("/api/v2/x"), Some((0, "/api/v2")));
        assert_eq!(matched("/api/v1"), Some((1, "/api")));
        assert_eq!(matched("/other"), Some((2, "/")));
        assert!(match_route(&routes[..2], "/other").is_none());
    }
}
