//! Tests of the routes' rewrite keys (`prefix_rewrite`, `*_headers_to_add`,
//! `*_headers_to_remove`) on both roles: valid shapes and every refusal with its location.

use http::{HeaderName, HeaderValue};

use super::*;

/// A responder whose one egress route is `- prefix: /api` followed by `route` (lines from 8,
/// indented 8).
fn egress(route: &str) -> String {
    format!(
        "responder:
  tunnel_listener:
    listen: 127.0.0.1:9000
  egress_listener:
    listen: 127.0.0.1:8085
    routes:
      - prefix: /api
{route}"
    )
}

/// An initiator whose one route is `- prefix: /api, cluster: app` followed by `route` (lines
/// from 9, indented 6).
fn initiator(route: &str) -> String {
    format!(
        "clusters:
  app:
    endpoints: [\"127.0.0.1:8080\"]
initiator:
  tunnels: [\"rc://n:c:t@app:1\"]
  routes:
    - prefix: /api
      cluster: app
{route}"
    )
}

fn ok(source: &str) -> Config {
    parse(source, "t.yaml").unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

fn error(source: &str) -> (usize, usize, String) {
    match parse(source, "t.yaml") {
        Ok(_) => panic!("expected an error:\n{source}"),
        Err(e) => {
            let d = e.diagnostics();
            assert_eq!(d.len(), 1, "{e}");
            (d[0].line, d[0].column, d[0].message.clone())
        }
    }
}

fn egress_rewrite(config: &Config) -> &RouteRewrite {
    &config.responder.as_ref().unwrap().egress_listener.routes[0].rewrite
}

fn initiator_rewrite(config: &Config) -> &RouteRewrite {
    &config.initiator.as_ref().unwrap().routes[0].rewrite
}

const RULES: &str = "        prefix_rewrite: /v2/
        request_headers_to_add:
          - { name: X-Env, value: prod }
          - { name: x-tag, value: \"50%% off\", append: false }
        request_headers_to_remove: [cookie, x-node-id]
        response_headers_to_add:
          - name: cache-control
            value: no-store
        response_headers_to_remove: [server]
";

#[test]
fn every_key_on_an_egress_route() {
    let config = ok(&egress(RULES));
    let rewrite = egress_rewrite(&config);
    assert_eq!(rewrite.prefix_rewrite.as_deref(), Some("/v2/"));
    let add = &rewrite.request_headers.add;
    assert_eq!(
        add.iter()
            .map(|h| (h.name.as_str(), h.value.to_str().unwrap(), h.append))
            .collect::<Vec<_>>(),
        [("x-env", "prod", true), ("x-tag", "50% off", false)],
        "names lowercased, append defaults to true (Envoy), `%%` is a literal `%`"
    );
    assert_eq!(
        rewrite.request_headers.remove,
        [
            HeaderName::from_static("cookie"),
            HeaderName::from_static("x-node-id")
        ],
        "removing a routing header upstream is allowed"
    );
    assert_eq!(
        rewrite.response_headers.add[0].value,
        HeaderValue::from_static("no-store")
    );
    assert_eq!(
        rewrite.response_headers.remove,
        [HeaderName::from_static("server")]
    );
}

#[test]
fn every_key_on_an_initiator_route() {
    let config = ok(&initiator(&RULES.replace("        ", "      ")));
    let rewrite = initiator_rewrite(&config);
    assert_eq!(rewrite.prefix_rewrite.as_deref(), Some("/v2/"));
    assert_eq!(rewrite.request_headers.add.len(), 2);
    assert_eq!(rewrite.response_headers.remove.len(), 1);
}

#[test]
fn routes_rewrite_nothing_by_default() {
    let config = ok(&egress(""));
    assert!(egress_rewrite(&config).is_empty());
    let config = ok(&initiator(""));
    assert!(initiator_rewrite(&config).is_empty());
    assert_eq!(
        config.initiator.unwrap().routes[0],
        InitiatorRoute::new("/api", "app")
    );
}

#[test]
fn prefix_rewrite_must_be_a_normalized_path() {
    for (bad, needle) in [
        ("v2", "must start with `/`"),
        ("/v2?x=1", "plain path"),
        ("/v2#top", "plain path"),
        ("/a/../b", "write `/b`"),
        ("/a//b", "write `/a/b`"),
        ("/a/./", "write `/a/`"),
        ("/%2e%2e/x", "not a normalized path"),
        ("/a%2Fb", "not a valid path"),
        ("/a%zz", "not a valid path"),
        ("\"/a b\"", "0x20"),
        ("\"/caf\u{e9}\"", "0xc3"),
    ] {
        let (line, column, message) = error(&egress(&format!("        prefix_rewrite: {bad}\n")));
        assert_eq!((line, column), (8, 25), "{bad}: {message}");
        assert!(message.contains(needle), "{bad}: {message}");
    }
    let (line, column, message) = error(&initiator("      prefix_rewrite: x\n"));
    assert_eq!((line, column), (9, 23), "{message}");
}

#[test]
fn headers_a_route_may_not_touch() {
    for (name, needle) in [
        (":path", "pseudo-header"),
        ("\":authority\"", "pseudo-header"),
        ("host", "authority"),
        ("Host", "authority"),
        ("x-request-id", "ties the logs"),
        ("content-length", "frames the body"),
        ("connection", "hop-by-hop"),
        ("transfer-encoding", "hop-by-hop"),
        ("upgrade", "hop-by-hop"),
        ("te", "hop-by-hop"),
        ("keep-alive", "hop-by-hop"),
        ("\"bad name\"", "not a valid header name"),
        ("\"x-caf\u{e9}\"", "not a valid header name"),
    ] {
        for key in ["request_headers_to_remove", "response_headers_to_remove"] {
            let (line, column, message) =
                error(&egress(&format!("        {key}:\n          - {name}\n")));
            assert_eq!((line, column), (9, 13), "{key} {name}: {message}");
            assert!(message.contains(needle), "{key} {name}: {message}");
        }
        for key in ["request_headers_to_add", "response_headers_to_add"] {
            let (line, column, message) = error(&initiator(&format!(
                "      {key}:\n        - name: {name}\n          value: v\n"
            )));
            assert_eq!((line, column), (10, 11), "{key} {name}: {message}");
            assert!(message.contains(needle), "{key} {name}: {message}");
        }
    }
}

#[test]
fn header_values_are_checked_literals() {
    for (value, needle) in [
        ("\"\"", "empty"),
        ("\" padded\"", "whitespace"),
        ("\"%DOWNSTREAM_REMOTE_ADDRESS%\"", "%VARIABLE%"),
        ("\"100%\"", "`%%`"),
        ("\"a\\x7fb\"", "not allowed"),
        ("\"caf\u{e9}\"", "not allowed"),
    ] {
        let (line, _, message) = error(&egress(&format!(
            "        response_headers_to_add:\n          - {{ name: x-a, value: {value} }}\n"
        )));
        assert_eq!(line, 9, "{value}: {message}");
        assert!(
            message.contains(needle) && message.contains("x-a"),
            "{value}: {message}"
        );
    }
}

#[test]
fn header_entries_are_closed_mappings() {
    let (line, column, message) = error(&egress(
        "        request_headers_to_add:\n          - { name: x-a, value: v, key: k }\n",
    ));
    assert_eq!((line, column), (9, 36), "{message}");
    assert!(message.contains("unknown field `key`"), "{message}");
    let (line, _, message) = error(&egress(
        "        request_headers_to_add:\n          - { name: x-a }\n",
    ));
    assert_eq!(line, 9, "{message}");
    assert!(message.contains("missing field `value`"), "{message}");
    let (line, column, message) = error(&egress("        request_headers_to_add: x-a\n"));
    assert_eq!((line, column), (8, 33), "{message}");
    assert!(message.contains("a list of headers"), "{message}");
    let (line, column, message) = error(&egress("        request_headers_to_remove: [x-a, X-A]\n"));
    assert_eq!((line, column), (8, 42), "{message}");
    assert!(message.contains("listed twice"), "{message}");
    let (line, column, message) = error(&egress("        prefix_rewrites: /\n"));
    assert_eq!((line, column), (8, 9), "{message}");
    assert!(
        message.contains("unknown field `prefix_rewrites`"),
        "{message}"
    );
}

#[test]
fn egress_routes_may_not_add_the_headers_that_route_them() {
    let (line, _, message) = error(&egress(
        "        request_headers_to_add:\n          - { name: x-cluster-id, value: c }\n",
    ));
    assert_eq!(line, 9, "{message}");
    assert!(message.contains("host_id_format"), "{message}");
    // The headers the configured formats read, not a fixed list.
    let custom =
        egress("        request_headers_to_add:\n          - { name: x-node-id, value: n }\n")
            .replace(
                "    routes:",
                "    host_id_format: \"%REQ(x-target)%\"\n    routes:",
            );
    ok(&custom);
    let (line, _, message) = error(&custom.replace("x-node-id", "x-target"));
    assert_eq!(line, 10, "{message}");
    // Responses, and the initiator's requests, are not routed by them.
    ok(&egress(
        "        response_headers_to_add:\n          - { name: x-node-id, value: n }\n",
    ));
    ok(&initiator(
        "      request_headers_to_add:\n        - { name: x-node-id, value: n }\n",
    ));
}

#[test]
fn summary_shows_each_routes_rules() {
    let summary = ok(&egress(RULES)).summary();
    for needle in [
        "/api* -> /v2/ (timeout 15s)",
        "request headers: -cookie -x-node-id +x-env: prod =x-tag: 50% off",
        "response headers: -server +cache-control: no-store",
    ] {
        assert!(summary.contains(needle), "{needle:?} in\n{summary}");
    }
    let summary = ok(&initiator(&RULES.replace("        ", "      "))).summary();
    assert!(
        summary.contains("/api* -> app, rewritten to /v2/"),
        "{summary}"
    );
    assert!(summary.contains("response headers: -server"), "{summary}");
}
