//! The matched route's header rules (`request_headers_to_add`/`_remove`,
//! `response_headers_to_add`/`_remove`; `crate::config::RouteRewrite`), on both roles: phase 3
//! on the request sent upstream (after rtun's own headers, so a route may replace
//! `x-forwarded-*` or `via`), phase 4 on the response head — a local reply's too, once a route
//! has matched (as Envoy; a request no route matched has no rules). Removing comes before
//! adding, so removing and adding one name replaces it.
//!
//! The rules reach the stage through `RequestCtx::route_rewrite`, which the driver sets from
//! its shard's [`RouteRewrites`] when the route matches.

use std::rc::Rc;

use http::{request, response};

use crate::config::RouteRewrite;
use crate::pipeline::{RequestCtx, Stage};

pub(in crate::pipeline) struct RouteHeaders;

impl Stage for RouteHeaders {
    fn upstream_request_filter(&self, ctx: &RequestCtx, request: &mut request::Parts) {
        if let Some(rewrite) = &ctx.route_rewrite {
            rewrite.request_headers.apply(&mut request.headers);
        }
    }

    fn response_filter(&self, ctx: &RequestCtx, response: &mut response::Parts) {
        if let Some(rewrite) = &ctx.route_rewrite {
            rewrite.response_headers.apply(&mut response.headers);
        }
    }
}

/// One shard's copy of its role's route rules, in route order: a request takes its route's by
/// reference count, which stays on the shard (the configuration's own copy is shared by every
/// shard, and counting references to it per request would write one cache line from all of
/// them). Routes without rules have none, and cost a request nothing. Built with the shard
/// from the same configuration as the route table it is indexed by, and replaced with it.
#[derive(Debug, Default)]
pub struct RouteRewrites(Vec<Option<Rc<RouteRewrite>>>);

impl RouteRewrites {
    /// The rules of each route, in route order.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a RouteRewrite>) -> Self {
        Self(
            routes
                .into_iter()
                .map(|r| (!r.is_empty()).then(|| Rc::new(r.clone())))
                .collect(),
        )
    }

    /// The rules of route `index`; `None` when it has none.
    pub fn get(&self, index: usize) -> Option<Rc<RouteRewrite>> {
        self.0.get(index).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderRules, HeaderToAdd};
    use crate::pipeline::{ProxyError, Role};
    use http::{HeaderName, HeaderValue};

    fn rules() -> RouteRewrite {
        let add = |name: &'static str, value: &'static str| HeaderToAdd {
            name: HeaderName::from_static(name),
            value: HeaderValue::from_static(value),
            append: false,
        };
        RouteRewrite {
            prefix_rewrite: None,
            request_headers: HeaderRules {
                add: vec![add("x-added", "req")],
                remove: vec![HeaderName::from_static("x-secret")],
            },
            response_headers: HeaderRules {
                add: vec![add("x-served-by", "rtun")],
                remove: vec![HeaderName::from_static("server")],
            },
        }
    }

    #[test]
    fn applies_the_matched_routes_rules_to_both_heads() {
        let (mut req, ()) = http::Request::get("/")
            .header("x-secret", "1")
            .body(())
            .unwrap()
            .into_parts();
        let mut ctx = RequestCtx::new(Role::Initiator, 0, None, &req, true);
        let table = RouteRewrites::new([&RouteRewrite::default(), &rules()]);
        assert!(table.get(0).is_none() && table.get(7).is_none());
        ctx.route_rewrite = table.get(1);
        RouteHeaders.upstream_request_filter(&ctx, &mut req);
        assert_eq!(req.headers["x-added"], "req");
        assert!(!req.headers.contains_key("x-secret"));

        let reply = crate::pipeline::respond(
            &ProxyError::Timeout(std::time::Duration::from_secs(1)),
            &ctx,
        );
        let (mut head, _) = reply.into_parts();
        head.headers.insert("server", HeaderValue::from_static("x"));
        RouteHeaders.response_filter(&ctx, &mut head);
        assert_eq!(head.headers["x-served-by"], "rtun");
        assert!(!head.headers.contains_key("server"));
    }

    #[test]
    fn no_route_no_rules() {
        let (mut req, ()) = http::Request::get("/")
            .header("x-secret", "1")
            .body(())
            .unwrap()
            .into_parts();
        let ctx = RequestCtx::new(Role::Egress, 0, None, &req, false);
        RouteHeaders.upstream_request_filter(&ctx, &mut req);
        assert!(req.headers.contains_key("x-secret"));
    }
}
