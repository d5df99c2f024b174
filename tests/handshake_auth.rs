//! Handshake authentication and authorization with the real binary: bearer tokens on both
//! ends, tenant binding, slot squatting, node id / cluster id collisions, and the initiator's
//! token sources.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const PATH: &str = "/reverse_connections/request";
const WAIT: Duration = Duration::from_secs(10);

/// The hex SHA-256 of a token, as an operator writes it in `tokens:`.
fn hash(token: &str) -> String {
    rtun::auth::tokens::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A responder whose tunnel listener takes `tok-a` (tenant `a`, nodes `n*` and `evil`, any
/// cluster) and `tok-b` (tenant `b`, any node and cluster), and requires the initiator to call
/// it `responder`.
fn responder_with_tokens(max_per_node: u32) -> ResponderOpts {
    ResponderOpts {
        tunnel_extra: format!(
            "    max_tunnels_per_node: {max_per_node}\n\
             \x20   auth:\n\
             \x20     tokens:\n\
             \x20       - {{ sha256: {a}, tenant: a, nodes: [\"n*\", evil], clusters: [\"*\"] }}\n\
             \x20       - {{ sha256: {b}, tenant: b, nodes: [\"*\"], clusters: [\"*\"] }}\n\
             \x20     required_cluster_name: responder\n",
            a = hash("tok-a"),
            b = hash("tok-b"),
        ),
        ..ResponderOpts::new()
    }
}

/// An initiator of tenant `a` sending `auth` (YAML flow mapping).
fn initiator(node: &str, cluster: &str, r: &ResponderOpts, svc: u16, auth: &str) -> InitiatorOpts {
    let mut i = InitiatorOpts::new(node, cluster, r.tunnel, svc);
    i.tenant = "a".into();
    i.initiator_extra = format!("  auth: {auth}\n");
    i
}

/// A raw handshake's status (the connection is closed after a rejection).
fn handshake_status(port: u16, ids: (&str, &str, &str), extra: &[(&str, &str)]) -> Option<u16> {
    let (tenant, node, cluster) = ids;
    let mut req = format!(
        "GET {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         x-envoy-reverse-tunnel-node-id: {node}\r\n\
         x-envoy-reverse-tunnel-cluster-id: {cluster}\r\n\
         x-envoy-reverse-tunnel-tenant-id: {tenant}\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("content-length: 0\r\n\r\n");
    status_of(&raw_exchange(port, req.as_bytes(), Duration::from_secs(3)))
}

/// `x-served-by` of `n` requests for `host`; panics on a non-200.
fn served_by(r: &ResponderOpts, host: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            let resp = get(r.egress, &format!("/who/{k}"), &[("x-node-id", host)])
                .unwrap_or_else(|e| panic!("request {k} for {host}: {e}"));
            assert_eq!(resp.status, 200, "request {k} for {host}: {}", resp.text());
            resp.header("x-served-by").unwrap_or("").to_owned()
        })
        .collect()
}

/// What a raw handshake tries: a description, (tenant, node, cluster), extra headers, and
/// the status it must get.
type Case<'a> = (
    &'a str,
    (&'a str, &'a str, &'a str),
    Vec<(&'a str, &'a str)>,
    u16,
);

#[test]
fn tokens_authenticate_and_bind_the_tenant() {
    let dir = TempDir::new("auth-tokens");
    let r = responder_with_tokens(64);
    let responder = r.spawn(&dir, "responder");
    let svc = port();
    let _service = spawn_service(&dir, "svc-a", svc);
    let _initiator = initiator("n1", "c1", &r, svc, "{ token: tok-a }").spawn(&dir, "initiator");
    assert!(
        wait_tunnels(&r, "n1", 1, WAIT),
        "the right token registers: {:?}",
        admin_tunnels(r.admin)
    );
    assert!(served_by(&r, "n1", 5).iter().all(|s| s == "svc-a"));

    let tunnel = r.tunnel;
    let upstream = ("x-envoy-reverse-tunnel-upstream-cluster-name", "responder");
    let (before_401, before_403) = (
        admin_stat(r.admin, "handshake_rejected_401"),
        admin_stat(r.admin, "handshake_rejected_403"),
    );
    let cases: &[Case] = &[
        ("no token", ("a", "n2", "c1"), vec![upstream], 401),
        (
            "wrong token",
            ("a", "n2", "c1"),
            vec![upstream, ("authorization", "Bearer tok-wrong")],
            401,
        ),
        (
            "not a bearer token",
            ("a", "n2", "c1"),
            vec![upstream, ("authorization", "Basic dG9rLWE=")],
            401,
        ),
        (
            "tenant a's token claiming tenant b",
            ("b", "n2", "c1"),
            vec![upstream, ("authorization", "Bearer tok-a")],
            403,
        ),
        (
            "tenant a's token claiming a node it is not granted",
            ("a", "x1", "c1"),
            vec![upstream, ("authorization", "Bearer tok-a")],
            403,
        ),
        (
            "the wrong upstream cluster name",
            ("a", "n2", "c1"),
            vec![
                ("x-envoy-reverse-tunnel-upstream-cluster-name", "elsewhere"),
                ("authorization", "Bearer tok-a"),
            ],
            400,
        ),
    ];
    for (what, ids, extra, expected) in cases {
        assert_eq!(
            handshake_status(tunnel, *ids, extra),
            Some(*expected),
            "{what}"
        );
    }
    assert_eq!(
        admin_stat(r.admin, "handshake_rejected_401"),
        before_401 + 3
    );
    assert_eq!(
        admin_stat(r.admin, "handshake_rejected_403"),
        before_403 + 2
    );
    assert_eq!(
        admin_stat(r.admin, "handshake_rejected_400_wrong_cluster_name"),
        1
    );
    assert_eq!(tunnels_of(r.admin, "n2"), 0);
    assert_eq!(tunnels_of(r.admin, "x1"), 0);
    assert_eq!(tunnels_of(r.admin, "n1"), 1, "{:?}", admin_tunnels(r.admin));
    assert!(
        !responder.log_text().contains("tok-"),
        "tokens never reach the log"
    );
    assert!(
        !responder.log_text().contains("SECURITY"),
        "an authenticating responder does not warn"
    );
}

#[test]
fn a_fake_initiator_cannot_take_the_real_nodes_slots() {
    let dir = TempDir::new("auth-squat");
    let r = responder_with_tokens(2);
    let _responder = r.spawn(&dir, "responder");
    let (real_svc, fake_svc) = (port(), port());
    let _real_service = spawn_service(&dir, "svc-real", real_svc);
    let _fake_service = spawn_service(&dir, "svc-fake", fake_svc);

    // The impostor comes first, with more connections than the cap, and keeps redialing.
    let mut fake = initiator("n1", "c1", &r, fake_svc, "{ token: not-the-token }");
    fake.count = 4;
    let fake = fake.spawn(&dir, "fake");
    assert!(
        wait_until(WAIT, || admin_stat(r.admin, "handshake_rejected_401") >= 4),
        "the impostor is refused"
    );
    let mut real = initiator("n1", "c1", &r, real_svc, "{ token: tok-a }");
    real.count = 2;
    let mut real_proc = real.spawn(&dir, "real");
    assert!(
        wait_tunnels(&r, "n1", 2, WAIT),
        "{:?}",
        admin_tunnels(r.admin)
    );
    assert!(served_by(&r, "n1", 10).iter().all(|s| s == "svc-real"));

    // The real node goes away and comes back: its slots are still its own.
    real_proc.kill();
    assert!(
        wait_until(WAIT, || tunnels_of(r.admin, "n1") == 0),
        "{:?}",
        admin_tunnels(r.admin)
    );
    let rejected = admin_stat(r.admin, "handshake_rejected_401");
    let _real_again = real.spawn(&dir, "real-again");
    assert!(
        wait_tunnels(&r, "n1", 2, WAIT),
        "{:?}",
        admin_tunnels(r.admin)
    );
    assert!(
        wait_until(WAIT, || admin_stat(r.admin, "handshake_rejected_401")
            > rejected),
        "the impostor keeps trying and keeps failing"
    );
    assert_eq!(tunnels_of(r.admin, "n1"), 2);
    assert!(served_by(&r, "n1", 10).iter().all(|s| s == "svc-real"));
    assert_eq!(admin_stat(r.admin, "handshake_rejected_403_node_limit"), 0);
    assert!(fake.log_text().contains("401"), "the impostor sees 401");
}

#[test]
fn a_cluster_id_equal_to_a_live_node_id_is_refused() {
    let dir = TempDir::new("auth-collision");
    let r = responder_with_tokens(64);
    let _responder = r.spawn(&dir, "responder");
    let (real_svc, evil_svc) = (port(), port());
    let _real_service = spawn_service(&dir, "svc-real", real_svc);
    let _evil_service = spawn_service(&dir, "svc-evil", evil_svc);
    let _real = initiator("n1", "c1", &r, real_svc, "{ token: tok-a }").spawn(&dir, "real");
    assert!(
        wait_tunnels(&r, "n1", 1, WAIT),
        "{:?}",
        admin_tunnels(r.admin)
    );

    // A credential that may claim any cluster names its cluster after the live node n1:
    // requests for n1 would be routed to it (cluster ids are looked up first).
    let _evil = initiator("evil", "n1", &r, evil_svc, "{ token: tok-a }").spawn(&dir, "evil");
    assert!(
        wait_until(WAIT, || admin_stat(
            r.admin,
            "handshake_rejected_403_collision"
        ) >= 2),
        "the colliding initiator is refused"
    );
    assert!(served_by(&r, "n1", 30).iter().all(|s| s == "svc-real"));
    assert_eq!(
        tunnels_of(r.admin, "evil"),
        0,
        "{:?}",
        admin_tunnels(r.admin)
    );

    // And a node id equal to the live cluster id c1 (tenant b's token may claim any node;
    // while tenants share one namespace their ids collide too).
    let collisions = admin_stat(r.admin, "handshake_rejected_403_collision");
    let token_b = [
        ("x-envoy-reverse-tunnel-upstream-cluster-name", "responder"),
        ("authorization", "Bearer tok-b"),
    ];
    assert_eq!(
        handshake_status(r.tunnel, ("b", "c1", "other"), &token_b),
        Some(403)
    );
    assert!(admin_stat(r.admin, "handshake_rejected_403_collision") > collisions);
    assert!(served_by(&r, "n1", 5).iter().all(|s| s == "svc-real"));
}

#[test]
fn the_initiator_reads_its_token_from_env_and_file_at_dial_time() {
    let dir = TempDir::new("auth-sources");
    let r = responder_with_tokens(64);
    let _responder = r.spawn(&dir, "responder");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);

    let mut from_env = initiator("n-env", "c1", &r, svc, "{ token_env: RTUN_E2E_TOKEN }");
    from_env.env = vec![("RTUN_E2E_TOKEN".into(), "tok-a\n".into())];
    let _env = from_env.spawn(&dir, "from-env");
    assert!(
        wait_tunnels(&r, "n-env", 1, WAIT),
        "{:?}",
        admin_tunnels(r.admin)
    );

    // The file does not exist yet: a credential error per dial, then it appears.
    let token_file = dir.join("token");
    let mut from_file = initiator(
        "n-file",
        "c1",
        &r,
        svc,
        &format!("{{ token_file: {} }}", token_file.display()),
    );
    let admin = port();
    from_file.admin = Some(admin);
    let file_proc = from_file.spawn(&dir, "from-file");
    assert!(
        wait_until(WAIT, || admin_stat(admin, "initiator_credential_errors")
            >= 2),
        "missing token_file is counted"
    );
    assert_eq!(tunnels_of(r.admin, "n-file"), 0);
    assert!(file_proc.log_text().contains("cannot read token_file"));
    std::fs::write(&token_file, "  tok-a\n").expect("write token");
    assert!(
        wait_tunnels(&r, "n-file", 1, WAIT),
        "{:?}",
        admin_tunnels(r.admin)
    );
    assert!(
        !file_proc.log_text().contains("tok-a"),
        "the token is never logged"
    );
}

#[test]
fn posture_is_printed_and_an_open_responder_warns() {
    let dir = TempDir::new("auth-posture");
    let open = ResponderOpts::new();
    let validate = |name: &str, yaml: &str| {
        let cfg = dir.write(name, yaml);
        let out = Command::new(RTUN)
            .args(["validate", "-c", cfg.to_str().expect("path")])
            .output()
            .expect("run rtun validate");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let summary = validate("open.yaml", &open.yaml());
    for line in [
        "authentication: none (WARNING",
        "TLS: off",
        "tenant isolation: off",
    ] {
        assert!(summary.contains(line), "{line:?} not in\n{summary}");
    }
    let summary = validate("tokens.yaml", &responder_with_tokens(64).yaml());
    assert!(summary.contains("authentication: tokens (2)"), "{summary}");
    assert!(
        summary.contains("required cluster name: responder"),
        "{summary}"
    );
    assert!(!summary.contains(&hash("tok-a")), "{summary}");

    let responder = open.spawn(&dir, "open");
    assert!(
        wait_until(WAIT, || responder
            .log_text()
            .contains("SECURITY: no handshake authentication")),
        "{}",
        responder.log_text()
    );
}
