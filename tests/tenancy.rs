//! Tenant isolation and admin security with the real binary: two initiators of tenants `a` and
//! `b` (tokens bound to their tenant), an egress listener that takes each request's tenant from
//! an API key or from the listener itself, and the admin endpoint's bearer token.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);
const KEY_HEADER: &str = "x-rtun-api-key";

/// The hex SHA-256 of a secret, as an operator writes it in the configuration.
fn hash(secret: &str) -> String {
    rtun::auth::tokens::sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A two-shard responder whose tunnel listener takes `tok-a` (tenant `a`) and `tok-b` (tenant
/// `b`), any node and cluster each, with `tenant` (a YAML flow mapping) on its egress listener.
fn responder(tenant: &str) -> ResponderOpts {
    ResponderOpts {
        shards: 2,
        tunnel_extra: format!(
            "    auth:\n\
             \x20     tokens:\n\
             \x20       - {{ sha256: {a}, tenant: a, nodes: [\"*\"], clusters: [\"*\"] }}\n\
             \x20       - {{ sha256: {b}, tenant: b, nodes: [\"*\"], clusters: [\"*\"] }}\n",
            a = hash("tok-a"),
            b = hash("tok-b"),
        ),
        egress_extra: format!("    tenant: {tenant}\n"),
        ..ResponderOpts::new()
    }
}

/// The egress listener of `responder` taking API keys `key-a` and `key-b`.
fn api_key_responder() -> ResponderOpts {
    responder(&format!(
        "{{ api_keys: [{{ sha256: {}, tenant: a }}, {{ sha256: {}, tenant: b }}] }}",
        hash("key-a"),
        hash("key-b")
    ))
}

/// Tenant `t`'s initiator (token `tok-t`): node `node-t` in cluster `edge`, so both tenants
/// have a cluster of the same id.
fn start_initiator(dir: &TempDir, r: &ResponderOpts, t: &str) -> (Proc, Proc) {
    let svc = port();
    let service = spawn_service(dir, &format!("svc-{t}"), svc);
    let mut i = InitiatorOpts::new(&format!("node-{t}"), "edge", r.tunnel, svc);
    i.tenant = t.into();
    i.initiator_extra = format!("  auth: {{ token: tok-{t} }}\n");
    (service, i.spawn(dir, &format!("initiator-{t}")))
}

/// Sends a request for `host` with `headers` to the egress listener.
fn ask(r: &ResponderOpts, path: &str, host: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("x-node-id", host)];
    all.extend_from_slice(headers);
    get(r.egress, path, &all).unwrap_or_else(|e| panic!("request for {host}: {e}"))
}

/// Waits until the directory lists `a/node-a` and `b/node-b` and each node answers a request
/// sent with `headers(tenant)`.
fn wait_both(r: &ResponderOpts, headers: impl Fn(&str) -> Vec<(&'static str, String)>) {
    let up = wait_until(WAIT, || {
        ["a", "b"].iter().all(|t| {
            let extra = headers(t);
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            tunnels_of(r.admin, &format!("{t}/node-{t}")) >= 1
                && ask(r, "/probe", &format!("node-{t}"), &extra).status == 200
        })
    });
    assert!(up, "tunnels did not come up: {:?}", admin_tunnels(r.admin));
}

/// What a client can compare of a local reply: status, header names, the headers that do not
/// vary per request, and the body with the host id put back to a placeholder.
fn shape(resp: &Response, host: &str) -> (u16, BTreeSet<String>, Vec<String>, String) {
    let names = resp.headers.iter().map(|(k, _)| k.clone()).collect();
    let fixed = ["content-type", "x-rtun-local-reply"]
        .iter()
        .map(|n| format!("{n}: {}", resp.header(n).unwrap_or("-")))
        .collect();
    (resp.status, names, fixed, resp.text().replace(host, "HOST"))
}

#[test]
fn api_keys_keep_each_tenant_to_its_own_nodes() {
    let dir = TempDir::new("tenancy-api-keys");
    let r = api_key_responder();
    let responder = r.spawn(&dir, "responder");
    let _a = start_initiator(&dir, &r, "a");
    let _b = start_initiator(&dir, &r, "b");
    wait_both(&r, |t| vec![(KEY_HEADER, format!("key-{t}"))]);
    let (key_a, key_b) = ([(KEY_HEADER, "key-a")], [(KEY_HEADER, "key-b")]);

    // Each key reaches its own tenant's node, and its own tenant's `edge` cluster only.
    for n in 0..6 {
        let path = format!("/who/{n}");
        let a = ask(&r, &path, "node-a", &key_a);
        assert_eq!((a.status, a.header("x-served-by")), (200, Some("svc-a")));
        let b = ask(&r, &path, "node-b", &key_b);
        assert_eq!((b.status, b.header("x-served-by")), (200, Some("svc-b")));
        assert_eq!(
            ask(&r, &path, "edge", &key_a).header("x-served-by"),
            Some("svc-a")
        );
        assert_eq!(
            ask(&r, &path, "edge", &key_b).header("x-served-by"),
            Some("svc-b")
        );
    }

    // Another tenant's node answers exactly as a host nobody registered.
    let cross_503 = admin_stat(r.admin, "egress_503_no_tunnel");
    for (key, other) in [(&key_a, "node-b"), (&key_b, "node-a")] {
        let theirs = ask(&r, "/who", other, key);
        let unknown = ask(&r, "/who", "node-nobody", key);
        assert_eq!(theirs.status, 503, "{}", theirs.text());
        assert_eq!(
            shape(&theirs, other),
            shape(&unknown, "node-nobody"),
            "{} vs {}",
            theirs.text(),
            unknown.text()
        );
        assert_eq!(theirs.text(), format!("No tunnel for host id '{other}'\n"));
    }
    assert_eq!(admin_stat(r.admin, "egress_503_no_tunnel"), cross_503 + 4);

    // No key, an unknown key, two keys: 401 with a short reason, counted.
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[],
            "Unauthenticated: Missing API key: send the `x-rtun-api-key` header",
        ),
        (&[(KEY_HEADER, "key-c")], "Unauthenticated: Unknown API key"),
        (
            &[(KEY_HEADER, "key-a"), (KEY_HEADER, "key-b")],
            "Unauthenticated: More than one `x-rtun-api-key` header",
        ),
    ];
    for (headers, reason) in cases {
        let resp = ask(&r, "/who", "node-a", headers);
        assert_eq!((resp.status, resp.text().trim_end()), (401, reason));
        assert_eq!(resp.header("x-rtun-local-reply"), Some("1"));
        assert!(resp.header("x-request-id").is_some());
    }
    assert_eq!(admin_stat(r.admin, "egress_401_unauthenticated"), 3);
    // A client-set tenant header means nothing to an API key listener.
    let spoofed = ask(
        &r,
        "/who",
        "node-b",
        &[(KEY_HEADER, "key-a"), ("x-tenant-id", "b")],
    );
    assert_eq!(spoofed.status, 503);

    // The key never reaches the service.
    let seen = ask(&r, "/headers", "node-a", &key_a);
    assert_eq!(seen.status, 200);
    let echoed = seen.text().to_ascii_lowercase();
    assert!(echoed.contains("x-node-id: node-a"), "{echoed}");
    assert!(
        !echoed.contains(KEY_HEADER) && !echoed.contains("key-a"),
        "{echoed}"
    );

    // The admin endpoint lists one tenant's hosts on request.
    let listed = |query: &str| -> Vec<String> {
        let json = admin_tunnels_json(r.admin, query);
        let hosts = json["responder"]["hosts"].as_array().cloned();
        hosts
            .unwrap_or_default()
            .iter()
            .map(|h| {
                format!(
                    "{}/{}",
                    h["tenant"].as_str().unwrap_or("?"),
                    h["host"].as_str().unwrap_or("?")
                )
            })
            .collect()
    };
    assert_eq!(listed("?tenant=a"), ["a/edge", "a/node-a"]);
    assert_eq!(listed("?tenant=b"), ["b/edge", "b/node-b"]);
    assert!(listed("?tenant=c").is_empty());
    assert_eq!(listed("").len(), 4);
    let bad = get(r.admin, "/tunnels?tenant=a&x=1", &[]).expect("admin");
    assert_eq!(bad.status, 400, "{}", bad.text());

    assert!(
        !responder.log_text().contains("key-a"),
        "keys never reach the log"
    );
    let summary = validate(&dir, "api-keys.yaml", &r.yaml());
    assert!(
        summary.contains("tenant isolation: on, API keys (2) in header x-rtun-api-key"),
        "{summary}"
    );
}

#[test]
fn a_fixed_tenant_listener_reaches_only_that_tenant() {
    let dir = TempDir::new("tenancy-fixed");
    let r = responder("{ fixed: a }");
    let _responder = r.spawn(&dir, "responder");
    let _a = start_initiator(&dir, &r, "a");
    let _b = start_initiator(&dir, &r, "b");
    // Tenant b's node is up once the directory lists it; a request cannot tell.
    let up = wait_until(WAIT, || tunnels_of(r.admin, "b/node-b") >= 1);
    assert!(up, "{:?}", admin_tunnels(r.admin));
    let up = wait_until(WAIT, || {
        tunnels_of(r.admin, "a/node-a") >= 1 && ask(&r, "/probe", "node-a", &[]).status == 200
    });
    assert!(up, "{:?}", admin_tunnels(r.admin));

    for n in 0..4 {
        let resp = ask(&r, &format!("/who/{n}"), "edge", &[("x-tenant-id", "b")]);
        assert_eq!(
            (resp.status, resp.header("x-served-by")),
            (200, Some("svc-a"))
        );
    }
    let theirs = ask(&r, "/who", "node-b", &[]);
    let unknown = ask(&r, "/who", "node-nobody", &[]);
    assert_eq!(theirs.status, 503);
    assert_eq!(shape(&theirs, "node-b"), shape(&unknown, "node-nobody"));
    assert_eq!(admin_stat(r.admin, "egress_401_unauthenticated"), 0);
}

/// `rtun validate` on `yaml`; its standard output.
fn validate(dir: &TempDir, name: &str, yaml: &str) -> String {
    let cfg = dir.write(name, yaml);
    let out = Command::new(RTUN)
        .args(["validate", "-c", cfg.to_str().expect("path")])
        .output()
        .expect("run rtun validate");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `r`'s configuration with `admin` as its admin section.
fn with_admin(r: &ResponderOpts, admin: &str) -> String {
    r.yaml().replace(
        &format!("admin: {{ listen: 127.0.0.1:{} }}", r.admin),
        admin,
    )
}

#[test]
fn the_admin_token_is_required_when_set() {
    let dir = TempDir::new("tenancy-admin-token");
    let r = ResponderOpts::new();
    let yaml = with_admin(
        &r,
        &format!(
            "admin: {{ listen: 127.0.0.1:{}, token_sha256: {} }}",
            r.admin,
            hash("adm-tok")
        ),
    );
    let responder = spawn_rtun(&dir, "responder", &yaml);
    assert!(wait_for_port(r.admin, WAIT), "{}", responder.log_text());

    for path in ["/stats", "/tunnels", "/nope"] {
        for headers in [
            &[][..],
            &[("authorization", "Bearer wrong")],
            &[("authorization", "adm-tok")],
        ] {
            let resp = get(r.admin, path, headers).expect("admin");
            assert_eq!(resp.status, 401, "{path} {headers:?}");
            assert!(resp.header("www-authenticate").is_some());
            assert!(!resp.text().contains("adm-tok"));
        }
    }
    let bearer = [("authorization", "Bearer adm-tok")];
    // The probes need no token (a kubelet carries none; they name no identity).
    for headers in [&[][..], &[("authorization", "Bearer wrong")], &bearer] {
        let ready = get(r.admin, "/ready", headers).expect("admin");
        assert_eq!((ready.status, ready.text().trim_end()), (200, "ready"));
        let alive = get(r.admin, "/healthz", headers).expect("admin");
        assert_eq!((alive.status, alive.text().trim_end()), (200, "ok"));
    }
    let stats = get(r.admin, "/stats", &bearer).expect("admin").text();
    assert!(stats.contains("admin_401_unauthenticated 9"), "{stats}");
    // Without isolation there is no tenant to filter by.
    let filtered = get(r.admin, "/tunnels?tenant=a", &bearer).expect("admin");
    assert_eq!(filtered.status, 400, "{}", filtered.text());
    assert!(filtered.text().contains("Tenant isolation is off"));

    assert!(!responder
        .log_text()
        .contains("SECURITY: the admin endpoint"));
    let summary = validate(&dir, "token.yaml", &yaml);
    assert!(
        summary.contains("admin: bearer token required"),
        "{summary}"
    );
    assert!(!summary.contains(&hash("adm-tok")), "{summary}");
}

#[test]
fn an_exposed_admin_endpoint_without_a_token_warns() {
    let dir = TempDir::new("tenancy-admin-exposed");
    let r = ResponderOpts::new();
    let yaml = with_admin(&r, &format!("admin: {{ listen: 0.0.0.0:{} }}", r.admin));
    let summary = validate(&dir, "exposed.yaml", &yaml);
    assert!(
        summary.contains(&format!(
            "admin: no token (WARNING: listens on 0.0.0.0:{} without one",
            r.admin
        )),
        "{summary}"
    );
    let responder = spawn_rtun(&dir, "responder", &yaml);
    assert!(
        wait_until(WAIT, || responder.log_text().contains(
            "SECURITY: the admin endpoint listens beyond loopback without a token"
        )),
        "{}",
        responder.log_text()
    );
    // Still served: the warning is the operator's cue, not a refusal.
    assert!(wait_until(WAIT, || admin_get(r.admin, "/ready").is_some()));
}

#[test]
fn a_trusted_header_is_believed_and_warned_about() {
    let dir = TempDir::new("tenancy-trusted-header");
    let r = responder("{ trusted_header: x-tenant-id }");
    let responder = r.spawn(&dir, "responder");
    assert!(
        wait_until(WAIT, || responder.log_text().contains(
            "SECURITY: each egress request's tenant is the `x-tenant-id` header as sent"
        )),
        "{}",
        responder.log_text()
    );
    let _a = start_initiator(&dir, &r, "a");
    let up = wait_until(WAIT, || {
        ask(&r, "/probe", "node-a", &[("x-tenant-id", "a")]).status == 200
    });
    assert!(up, "{:?}", admin_tunnels(r.admin));
    let resp = ask(&r, "/who", "node-a", &[("x-tenant-id", "a")]);
    assert_eq!(resp.header("x-served-by"), Some("svc-a"));
    assert_eq!(
        ask(&r, "/who", "node-a", &[("x-tenant-id", "b")]).status,
        503
    );
    let missing = ask(&r, "/who", "node-a", &[]);
    assert_eq!(
        (missing.status, missing.text().trim_end()),
        (401, "Unauthenticated: Missing `x-tenant-id` header")
    );
    let summary = validate(&dir, "trusted.yaml", &r.yaml());
    assert!(
        summary.contains("tenant isolation: on, trusted header x-tenant-id (WARNING"),
        "{summary}"
    );
}
