//! Route rewrites end to end, through both hops with the real binary: `prefix_rewrite` on an
//! egress route and again on an initiator route, request headers added and removed as the
//! service sees them (`rtun service`'s `/headers`), response headers added and removed as curl
//! sees them, the rules on local replies, a hostile path refused, and `rtun validate`'s summary.

mod common;

use std::process::Command;

use common::*;

/// Egress: `/ext/` and `/raw` are rewritten to `/svc/`, with header rules; `/` is plain.
const EGRESS_ROUTES: &str = "
      - prefix: /ext/
        prefix_rewrite: /svc/
        request_headers_to_add:
          - { name: x-edge, value: e1 }
          - { name: x-multi, value: egress }
        request_headers_to_remove: [x-client-secret]
        response_headers_to_add:
          - { name: x-edge-resp, value: r1 }
        response_headers_to_remove: [x-internal]
      - { prefix: /raw, prefix_rewrite: /svc/ }
      - { prefix: / }";

/// Initiator: `/svc/` is rewritten to the service's `/headers/`, with header rules.
const INITIATOR_ROUTES: &str = "
    - prefix: /svc/
      cluster: local-app
      prefix_rewrite: /headers/
      request_headers_to_add:
        - { name: x-initiator, value: i1 }
        - { name: x-multi, value: initiator }
        - { name: x-replaced, value: by-route, append: false }
      request_headers_to_remove: [x-edge-drop]
      response_headers_to_add:
        - { name: x-init-resp, value: r2 }
        - { name: x-internal, value: secret }
      response_headers_to_remove: [x-served-by]
    - { prefix: /in, cluster: local-app, prefix_rewrite: /headers/ }
    - { prefix: /, cluster: local-app }";

fn stack(name: &str) -> Stack {
    let r = ResponderOpts {
        routes: EGRESS_ROUTES.into(),
        ..ResponderOpts::new()
    };
    Stack::start(name, r, 1, |i| i.routes = INITIATOR_ROUTES.into())
}

/// The request line and header lines `/headers` echoed.
fn seen(body: &str) -> (String, Vec<&str>) {
    let mut lines = body.lines();
    let request_line = lines.next().unwrap_or_default().to_owned();
    (request_line, lines.collect())
}

#[test]
fn rewrites_and_header_rules_on_both_hops() {
    let s = stack("route-rewrites");
    let url = format!("http://127.0.0.1:{}/ext/a/b?q=1&r=%2F", s.r.egress);
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let out = curl(&[
            proto,
            "-H",
            "x-node-id: n1",
            "-H",
            "x-client-secret: hunter2",
            "-H",
            "x-edge-drop: 1",
            "-H",
            "x-replaced: by-client",
            "-H",
            "x-kept: yes",
            &url,
        ]);
        assert_eq!(out.status, 200, "{proto}: {out:?}");
        let body = out.text();
        let (request_line, headers) = seen(&body);
        // `/ext/` → `/svc/` on the responder, `/svc/` → `/headers/` on the initiator; the
        // query (and its escapes) kept.
        assert_eq!(
            request_line, "GET /headers/a/b?q=1&r=%2F",
            "{proto}: {body}"
        );
        for line in [
            "x-edge: e1",
            "x-initiator: i1",
            "x-multi: egress",
            "x-multi: initiator",
            "x-replaced: by-route",
            "x-kept: yes",
            "x-node-id: n1",
        ] {
            assert!(headers.contains(&line), "{proto}: {line:?} not in\n{body}");
        }
        for gone in ["x-client-secret", "x-edge-drop", "x-replaced: by-client"] {
            assert!(
                !headers.iter().any(|h| h.starts_with(gone)),
                "{proto}: {gone:?} reached the service:\n{body}"
            );
        }
        assert!(
            headers.iter().any(|h| h.starts_with("x-request-id: ")),
            "{proto}: {body}"
        );
        // Responses: the initiator's rules, then the egress's.
        assert_eq!(out.header("x-edge-resp"), Some("r1"), "{proto}: {out:?}");
        assert_eq!(out.header("x-init-resp"), Some("r2"), "{proto}: {out:?}");
        assert_eq!(
            out.header("x-internal"),
            None,
            "removed by the egress: {out:?}"
        );
        assert_eq!(
            out.header("x-served-by"),
            None,
            "removed by the initiator: {out:?}"
        );
    }

    // A route without rules changes nothing.
    let plain = get(
        s.r.egress,
        "/headers/x?y",
        &[("x-node-id", "n1"), ("x-edge-drop", "1")],
    )
    .unwrap();
    assert_eq!(plain.status, 200, "{}", plain.text());
    let body = plain.text();
    assert_eq!(seen(&body).0, "GET /headers/x?y");
    assert!(
        body.contains("x-edge-drop: 1") && !body.contains("x-edge:"),
        "{body}"
    );
    assert_eq!(plain.header("x-served-by"), Some("svc-1"));
    assert_eq!(plain.header("x-edge-resp"), None);
}

#[test]
fn prefix_without_trailing_slash_and_hostile_paths() {
    let s = stack("route-rewrite-edges");
    let e = s.r.egress;
    let node = [("x-node-id", "n1")];
    // `/raw` → `/svc/`: with or without the slash after the prefix, no `//`.
    for (path, want) in [
        ("/raw", "GET /headers/"),
        ("/raw/", "GET /headers/"),
        ("/raw/a", "GET /headers/a"),
        ("/raw//a/./b/../c", "GET /headers/a/c"),
        ("/rawx", "GET /headers/x"),
        ("/raw?only=query", "GET /headers/?only=query"),
        ("/a/../raw/%7Euser", "GET /headers/~user"),
    ] {
        let resp = get(e, path, &node).unwrap();
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(seen(&resp.text()).0, want, "{path}");
    }
    // A join that would make a dot segment would climb out of `/svc/`: refused.
    for path in ["/raw..", "/raw%2E%2E", "/raw../headers", "/raw.?x"] {
        let resp = get(e, path, &node).unwrap();
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
        assert!(
            resp.text().contains("rewritten path"),
            "{path}: {}",
            resp.text()
        );
    }
    assert!(admin_stat(s.r.admin, "egress_400_bad_request") >= 4);
    // The same on the initiator: `/in` → `/headers/` there, the egress forwards as is.
    let resp = get(e, "/in/z?k", &node).unwrap();
    assert_eq!(seen(&resp.text()).0, "GET /headers/z?k", "{}", resp.text());
    let resp = get(e, "/in..", &node).unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
    assert!(resp.text().contains("rewritten path"), "{}", resp.text());
}

#[test]
fn response_rules_apply_to_local_replies_of_a_matched_route() {
    let s = stack("route-rewrite-local-replies");
    let e = s.r.egress;
    // Matched `/ext/`, then no tunnel: the route's response rules apply (as in Envoy).
    let unknown = get(e, "/ext/x", &[("x-node-id", "nobody")]).unwrap();
    assert_eq!(unknown.status, 503, "{}", unknown.text());
    assert_eq!(unknown.header("x-rtun-local-reply"), Some("1"));
    assert_eq!(unknown.header("x-edge-resp"), Some("r1"));
    assert!(unknown.header("x-request-id").is_some());
    // The plain route has no rules.
    let plain = get(e, "/x", &[("x-node-id", "nobody")]).unwrap();
    assert_eq!(plain.status, 503);
    assert_eq!(plain.header("x-edge-resp"), None);
    // An initiator local reply on its `/svc/` route gets the initiator's rules, then the
    // egress's: stop the service, and the initiator answers 502 itself.
    let mut s = s;
    s.service.kill();
    let down = curl(&[
        "-H",
        "x-node-id: n1",
        &format!("http://127.0.0.1:{e}/ext/y"),
    ]);
    assert!(matches!(down.status, 502 | 503), "{down:?}");
    assert_eq!(down.header("x-init-resp"), Some("r2"), "{down:?}");
    assert_eq!(down.header("x-edge-resp"), Some("r1"), "{down:?}");
    assert_eq!(down.header("x-internal"), None, "{down:?}");
}

#[test]
fn validate_prints_each_routes_rules() {
    let dir = TempDir::new("route-rewrite-validate");
    let r = ResponderOpts {
        routes: EGRESS_ROUTES.into(),
        ..ResponderOpts::new()
    };
    let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, port());
    i.routes = INITIATOR_ROUTES.into();
    for (name, yaml, needles) in [
        (
            "responder",
            r.yaml(),
            &[
                "/ext/* -> /svc/",
                "/raw* -> /svc/",
                "/ext/*: request headers: -x-client-secret +x-edge: e1 +x-multi: egress",
                "/ext/*: response headers: -x-internal +x-edge-resp: r1",
            ][..],
        ),
        (
            "initiator",
            i.yaml(),
            &[
                "/svc/* -> local-app, rewritten to /headers/",
                "request headers: -x-edge-drop +x-initiator: i1 +x-multi: initiator =x-replaced: by-route",
                "response headers: -x-served-by +x-init-resp: r2 +x-internal: secret",
            ][..],
        ),
    ] {
        let path = dir.write(&format!("{name}.yaml"), yaml);
        let out = Command::new(RTUN)
            .args(["validate", "-c"])
            .arg(&path)
            .output()
            .expect("run rtun validate");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {text}{}", String::from_utf8_lossy(&out.stderr));
        for needle in needles {
            assert!(text.contains(needle), "{name}: {needle:?} not in\n{text}");
        }
    }
    // A bad rule is refused with its place in the file.
    let bad = r.yaml().replace("x-client-secret", "host");
    let path = dir.write("bad.yaml", bad.clone());
    let out = Command::new(RTUN)
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("run rtun validate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = bad.lines().position(|l| l.contains("[host]")).unwrap() + 1;
    assert!(
        err.contains(&format!("bad.yaml:{line}:"))
            && err.contains("cannot add or remove header `host`"),
        "{err}"
    );
}
