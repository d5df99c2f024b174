//! Whole-file tests: examples, defaults, both tunnel forms, and located errors.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;

const MINIMAL_RESPONDER: &str = "\
responder:
  tunnel_listener:
    listen: 127.0.0.1:9000
  egress_listener:
    listen: 127.0.0.1:8085
";

fn ok(source: &str) -> Config {
    match parse(source, "t.yaml") {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// The diagnostics of an invalid source.
fn errors(source: &str) -> Vec<Diagnostic> {
    match parse(source, "t.yaml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(e) => {
            let diagnostics = e.diagnostics().to_vec();
            assert!(!diagnostics.is_empty(), "{e}");
            diagnostics
        }
    }
}

/// The single diagnostic of an invalid source, as (line, column, message).
fn error(source: &str) -> (usize, usize, String) {
    let diagnostics = errors(source);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.file, "t.yaml");
    (d.line, d.column, d.message.clone())
}

fn assert_contains(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
}

/// An initiator config with `tunnels` and `routes` bodies spliced in.
fn initiator(extra_top: &str, tunnels: &str, routes: &str) -> String {
    format!(
        "{extra_top}clusters:
  app:
    endpoints: [\"127.0.0.1:8080\"]
  cloud:
    endpoints: [\"cloud.example.com:9000\"]
initiator:
  tunnels:
{tunnels}  routes:
{routes}"
    )
}

#[test]
fn example_files_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.summary().is_empty());
            count += 1;
        }
    }
    assert!(
        count >= 3,
        "expected the example files in {}",
        dir.display()
    );
}

#[test]
fn demo_config_matches_the_demo() {
    let config = ok(include_str!("../../config/demo.yaml"));
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(config.admin.unwrap().listen, addr("127.0.0.1:19901"));
    assert_eq!(config.clusters["local-app"].endpoints, ["127.0.0.1:18080"]);
    assert_eq!(config.clusters["local-app"].protocol, Protocol::Http1);
    assert_eq!(config.clusters["responder"].endpoints, ["127.0.0.1:19000"]);
    let initiator = config.initiator.unwrap();
    assert_eq!(
        initiator.tunnels,
        [parse_rc_address("rc://demo-node:demo-cluster:demo@responder:2").unwrap()]
    );
    assert_eq!(initiator.routes[0].prefix, "/");
    assert_eq!(initiator.routes[0].cluster, "local-app");
    let responder = config.responder.unwrap();
    assert_eq!(responder.tunnel_listener.listen, addr("127.0.0.1:19000"));
    assert_eq!(responder.egress_listener.listen, addr("127.0.0.1:18085"));
}

#[test]
fn defaults() {
    let config = ok(MINIMAL_RESPONDER);
    assert_eq!(config.shards, Shards::Auto);
    assert!(config.shards.resolve() >= 1);
    assert_eq!(config.admin, None);
    assert_eq!(config.drain_timeout, Duration::from_secs(10));
    let r = config.responder.unwrap();
    assert_eq!(r.cleanup_interval, Duration::from_secs(60));
    let t = r.tunnel_listener;
    assert_eq!(t.request_path, "/reverse_connections/request");
    assert_eq!(t.ping_interval, Duration::from_secs(2));
    assert_eq!(t.ping_failure_threshold, 3);
    assert_eq!(t.handshake_timeout, Duration::from_secs(10));
    assert_eq!(t.max_tunnels, 10_000);
    assert_eq!(t.max_tunnels_per_node, 64);
    assert_eq!(t.max_concurrent_streams, 1_000);
    assert_eq!(t.max_handshakes_in_progress, 256);
    assert_eq!(t.unhealthy_after_timeouts, 3);
    assert_eq!(t.unhealthy_probe_interval, Duration::from_secs(30));
    assert_eq!(t.tls, None);
    let e = r.egress_listener;
    let formats: Vec<&str> = e.host_id_format.iter().map(|f| f.as_str()).collect();
    assert_eq!(formats, ["%REQ(x-node-id)%", "%REQ(x-cluster-id)%"]);
    assert_eq!(e.routes.len(), 1);
    assert_eq!(e.routes[0].prefix, "/");
    assert_eq!(e.pending_timeout, None);
    assert_eq!(e.max_request_headers_kb, 60);
    assert_eq!(
        e.request_timeout,
        Duration::from_secs(15),
        "Envoy's route timeout"
    );
    assert_eq!(
        e.routes[0].effective_timeout(e.request_timeout),
        Some(Duration::from_secs(15))
    );
    assert_eq!(e.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(e.header_read_timeout, Duration::from_secs(30));
    assert_eq!(e.max_connections, 10_000);
    assert_eq!(e.idle_timeout, Duration::from_secs(60));
    assert_eq!(e.http2_keepalive_interval, Duration::from_secs(30));
    assert_eq!(e.http2_keepalive_timeout, Duration::from_secs(20));
    assert_eq!(e.xff_num_trusted_hops, 0);
    assert!(!e.trust_request_id);
    assert_eq!(
        e.path_with_escaped_slashes_action,
        crate::http::path::EscapedSlashes::Reject
    );
    assert_eq!(e.tls, None);

    let config = ok(&initiator(
        "",
        "    - rc://n:c:@cloud:1\n",
        "    - { prefix: /, cluster: app }\n",
    ));
    let i = config.initiator.unwrap();
    assert_eq!(i.max_reconnect_backoff, Duration::from_secs(30));
    assert_eq!(i.initial_reconnect_backoff, Duration::from_millis(250));
    assert_eq!(i.request_path, "/reverse_connections/request");
    assert_eq!(i.handshake_timeout, Duration::from_secs(10));
    assert_eq!(i.idle_timeout, Duration::from_secs(30));
    assert_eq!(i.ping_interval, Duration::from_secs(10));
    assert_eq!(i.ping_failure_threshold, 3);
    assert_eq!(i.max_concurrent_streams, 1024);
    assert_eq!(i.request_timeout, Duration::from_secs(15));
    assert_eq!(i.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(
        i.routes[0].effective_timeout(i.request_timeout),
        Some(Duration::from_secs(15))
    );
    assert!(i.extra_handshake_headers.is_empty());
    assert_eq!(i.handshake, crate::protocol::HandshakeForm::Plain);
    assert!(i.send_initiation_time);
    let app = &config.clusters["app"];
    assert_eq!(app.protocol, Protocol::Http1);
    assert_eq!(app.connect_timeout, Duration::from_secs(5));
    assert_eq!(app.max_idle_per_shard, 64);
    assert_eq!(app.response_timeout, Duration::ZERO, "off");
    assert_eq!(app.tls, None);
    assert_eq!(app.dns_refresh_rate, Duration::from_secs(5));
    assert_eq!(
        (app.max_connections, app.max_connecting, app.max_pending),
        (1024, 8, 1024)
    );
    assert_eq!(app.queue_timeout, Duration::from_secs(5));
    assert_eq!(app.max_requests, 1024);
    assert_eq!(app.consecutive_failures, 5);
    assert_eq!(app.ejection_time, Duration::from_secs(30));
    assert_eq!(app.max_ejection_time, Duration::from_secs(300));
}

#[test]
fn dns_refresh_rate_is_a_positive_duration() {
    let with = |rate: &str| {
        initiator(
            "",
            "    - rc://n:c:@cloud:1\n",
            "    - { prefix: /, cluster: app }\n",
        )
        .replace(
            "cloud.example.com:9000\"]\n",
            &format!("cloud.example.com:9000\"]\n    dns_refresh_rate: {rate}\n"),
        )
    };
    let config = ok(&with("250ms"));
    assert_eq!(
        config.clusters["cloud"].dns_refresh_rate,
        Duration::from_millis(250)
    );
    let (_, _, message) = error(&with("0s"));
    assert_contains(&message, &["greater than zero"]);
}

#[test]
fn timeouts_are_on_by_default_and_zero_turns_them_off() {
    let with = |extra: &str| {
        MINIMAL_RESPONDER.replace(
            "    listen: 127.0.0.1:8085\n",
            &format!("    listen: 127.0.0.1:8085\n{extra}"),
        )
    };
    // `0` (no unit needed) and `0s` both mean off; a route's own timeout wins, `0` included.
    let config = ok(&with(
        "    request_timeout: 0\n    stream_idle_timeout: 0s\n    idle_timeout: 0\n    \
         http2_keepalive_interval: 0ms\n    \
         routes: [{ prefix: /slow, timeout: 0 }, { prefix: /fast, timeout: 2s }, { prefix: / }]\n",
    ));
    let e = config.responder.clone().unwrap().egress_listener;
    assert_eq!(e.request_timeout, Duration::ZERO);
    assert_eq!(e.stream_idle_timeout, Duration::ZERO);
    assert_eq!(e.idle_timeout, Duration::ZERO);
    assert_eq!(e.http2_keepalive_interval, Duration::ZERO);
    let timeouts: Vec<_> = e
        .routes
        .iter()
        .map(|r| r.effective_timeout(e.request_timeout))
        .collect();
    assert_eq!(timeouts, [None, Some(Duration::from_secs(2)), None]);
    assert_contains(
        &config.summary(),
        &[
            "routes: /slow* (timeout off), /fast* (timeout 2s), /* (timeout off)",
            "timeouts: stream idle off, request head 30s, connection idle off, HTTP/2 keepalive off",
        ],
    );
    let e = ok(&with("    routes: [{ prefix: /, timeout: 0s }]\n"))
        .responder
        .unwrap()
        .egress_listener;
    assert_eq!(e.routes[0].effective_timeout(e.request_timeout), None);
    assert_contains(
        &ok(MINIMAL_RESPONDER).summary(),
        &[
            "routes: /* (timeout 15s)",
            "timeouts: stream idle 5m, request head 30s, connection idle 1m, HTTP/2 keepalive \
             PING every 30s, closed after 20s",
            "unhealthy after 3 route timeouts in a row, probed every 30s",
        ],
    );
    // Other numbers still need a unit; the head bound and the keepalive timeout stay > 0.
    let (_, _, message) = error(&with("    request_timeout: 15\n"));
    assert_contains(&message, &["durations need a unit"]);
    let (_, _, message) = error(&with("    header_read_timeout: 0s\n"));
    assert_contains(&message, &["greater than zero"]);
    let (_, _, message) = error(&with("    http2_keepalive_timeout: 0s\n"));
    assert_contains(&message, &["greater than zero"]);

    let config = ok(&MINIMAL_RESPONDER.replace(
        "    listen: 127.0.0.1:9000\n",
        "    listen: 127.0.0.1:9000\n    unhealthy_after_timeouts: 0\n    \
         unhealthy_probe_interval: 5s\n",
    ));
    let t = config.responder.clone().unwrap().tunnel_listener;
    assert_eq!(t.unhealthy_after_timeouts, 0);
    assert_eq!(t.unhealthy_probe_interval, Duration::from_secs(5));
    assert_contains(&config.summary(), &["unhealthy after never (off)"]);

    let config = ok(&initiator(
        "",
        "    - rc://n:c:@cloud:1\n",
        "    - { prefix: /a, cluster: app, timeout: 0 }\n    - { prefix: /, cluster: app }\n",
    )
    .replace(
        "  routes:\n",
        "  request_timeout: 3s\n  stream_idle_timeout: 0\n  routes:\n",
    )
    .replace(
        "    endpoints: [\"127.0.0.1:8080\"]\n",
        "    endpoints: [\"127.0.0.1:8080\"]\n    response_timeout: 1s\n",
    ));
    let i = config.initiator.clone().unwrap();
    assert_eq!(i.stream_idle_timeout, Duration::ZERO);
    let timeouts: Vec<_> = i
        .routes
        .iter()
        .map(|r| r.effective_timeout(i.request_timeout))
        .collect();
    assert_eq!(timeouts, [None, Some(Duration::from_secs(3))]);
    assert_eq!(
        config.clusters["app"].response_timeout,
        Duration::from_secs(1)
    );
    assert_contains(
        &config.summary(),
        &[
            "/a* -> app (timeout off)",
            "/* -> app (timeout 3s)",
            "stream idle timeout off",
            "response timeout 1s",
        ],
    );
}

#[test]
fn local_service_protection_keys() {
    let with = |keys: &str| {
        initiator(
            "",
            "    - rc://n:c:@cloud:1\n",
            "    - { prefix: /, cluster: app }\n",
        )
        .replace(
            "    endpoints: [\"127.0.0.1:8080\"]\n",
            &format!("    endpoints: [\"127.0.0.1:8080\"]\n{keys}"),
        )
    };
    let config = ok(&with(
        "    max_connections: 4\n    max_connecting: 2\n    max_pending: 10\n    queue_timeout: 250ms\n    max_requests: 8\n    consecutive_failures: 3\n    ejection_time: 1s\n    max_ejection_time: 4s\n",
    ));
    let app = &config.clusters["app"];
    assert_eq!(
        (
            app.max_connections,
            app.max_connecting,
            app.max_pending,
            app.max_requests
        ),
        (4, 2, 10, 8)
    );
    assert_eq!(app.queue_timeout, Duration::from_millis(250));
    assert_eq!(app.consecutive_failures, 3);
    assert_eq!(
        (app.ejection_time, app.max_ejection_time),
        (Duration::from_secs(1), Duration::from_secs(4))
    );
    for bad in [
        "max_connections: 0",
        "max_connecting: 0",
        "max_pending: 0",
        "max_requests: 0",
        "consecutive_failures: 0",
    ] {
        let (_, _, message) = error(&with(&format!("    {bad}\n")));
        assert_contains(&message, &["out of range", "from 1"]);
    }
    let (_, _, message) = error(&with("    queue_timeout: 0s\n"));
    assert_contains(&message, &["queue_timeout", "greater than zero"]);
}

#[test]
fn admin_without_listen_uses_default() {
    for admin in ["admin:\n", "admin: {}\n"] {
        let config = ok(&format!("{admin}{MINIMAL_RESPONDER}"));
        assert_eq!(
            config.admin.unwrap().listen,
            "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
        );
    }
}

#[test]
fn shards_auto_or_count() {
    let config = ok(&format!("shards: 3\n{MINIMAL_RESPONDER}"));
    assert_eq!(config.shards.resolve(), 3);
    let config = ok(&format!("shards: auto\n{MINIMAL_RESPONDER}"));
    assert_eq!(config.shards, Shards::Auto);
    for bad in ["0", "-1", "many", "1.5"] {
        let (line, column, message) = error(&format!("shards: {bad}\n{MINIMAL_RESPONDER}"));
        assert_eq!((line, column), (1, 9), "{bad}: {message}");
        assert_contains(&message, &["shards"]);
    }
}

#[test]
fn both_tunnel_forms() {
    let config = ok(&initiator(
        "node: { id: edge-42, cluster: edge-west }\n",
        "    - rc://edge-1:edge-east:acme@cloud:2\n    - { cluster: cloud, connections: 3 }\n    - cluster: cloud\n",
        "    - { prefix: /, cluster: app }\n",
    ));
    let tunnels = config.initiator.unwrap().tunnels;
    let node = NodeIdentity {
        id: "edge-42".into(),
        cluster: "edge-west".into(),
        tenant: String::new(),
    };
    assert_eq!(
        tunnels,
        [
            TunnelSpec {
                identity: NodeIdentity {
                    id: "edge-1".into(),
                    cluster: "edge-east".into(),
                    tenant: "acme".into()
                },
                remote_cluster: "cloud".into(),
                connections: 2,
            },
            TunnelSpec {
                identity: node.clone(),
                remote_cluster: "cloud".into(),
                connections: 3,
            },
            TunnelSpec {
                identity: node,
                remote_cluster: "cloud".into(),
                connections: 1,
            },
        ]
    );
}

#[test]
fn map_form_tunnel_without_node() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n    - { cluster: cloud, connections: 3 }\n",
        "    - { prefix: /, cluster: app }\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (9, 7), "{message}");
    assert_contains(&message, &["initiator.tunnels[1]", "node:"]);
}

#[test]
fn unknown_key_at_nested_level() {
    let source = "\
responder:
  tunnel_listener:
    listen: 127.0.0.1:9000
    ping_intervall: 2s
  egress_listener:
    listen: 127.0.0.1:8085
";
    let (line, column, message) = error(source);
    assert_eq!((line, column), (4, 5), "{message}");
    assert_contains(
        &message,
        &[
            "responder.tunnel_listener",
            "unknown field `ping_intervall`",
            "ping_interval",
        ],
    );
}

#[test]
fn unknown_key_in_flow_mapping() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n",
        "    - { prefix: /, cluster: app, timout: 1s }\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (10, 34), "{message}");
    assert_contains(&message, &["unknown field `timout`"]);
}

#[test]
fn unknown_top_level_key() {
    let (line, column, message) = error(&format!("{MINIMAL_RESPONDER}respnder: {{}}\n"));
    assert_eq!((line, column), (6, 1), "{message}");
    assert_contains(&message, &["unknown field `respnder`"]);
}

#[test]
fn bad_duration() {
    let source = format!("{MINIMAL_RESPONDER}  cleanup_interval: 10\n");
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (6, 21), "{message}");
    assert_contains(
        &message,
        &[
            "responder.cleanup_interval",
            "durations need a unit: ms, s, m, h",
        ],
    );

    let source = format!("{MINIMAL_RESPONDER}  cleanup_interval: 10d\n");
    let (_, _, message) = error(&source);
    assert_contains(&message, &["unknown unit", "10d"]);

    let source = format!("{MINIMAL_RESPONDER}  cleanup_interval: 0s\n");
    let (_, _, message) = error(&source);
    assert_contains(&message, &["greater than zero"]);

    let config = ok(&format!("drain_timeout: 0s\n{MINIMAL_RESPONDER}"));
    assert_eq!(config.drain_timeout, Duration::ZERO);
    let config = ok(&format!("drain_timeout: 1.5s\n{MINIMAL_RESPONDER}"));
    assert_eq!(config.drain_timeout, Duration::from_millis(1500));
}

#[test]
fn bad_rc_address_points_at_the_list_item() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n    - rc://n:c@cloud:1\n",
        "    - { prefix: /, cluster: app }\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (9, 7), "{message}");
    assert_contains(
        &message,
        &["initiator.tunnels[1]", "rc://n:c@cloud:1", "three"],
    );
}

#[test]
fn tunnel_to_unknown_cluster() {
    let source = initiator(
        "",
        "    - rc://n:c:t@clod:1\n",
        "    - { prefix: /, cluster: app }\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (8, 7), "{message}");
    assert_contains(&message, &["unknown cluster `clod`", "app, cloud"]);
}

#[test]
fn route_to_unknown_cluster() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n",
        "    - prefix: /a\n      cluster: ap\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (11, 16), "{message}");
    assert_contains(
        &message,
        &["initiator.routes[0].cluster", "unknown cluster `ap`"],
    );
}

#[test]
fn several_cross_reference_errors_are_all_reported() {
    let source = initiator(
        "",
        "    - rc://n:c:t@nope:1\n    - { cluster: cloud }\n",
        "    - { prefix: /, cluster: gone }\n",
    );
    let found: Vec<(usize, usize)> = errors(&source).iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(found, [(8, 7), (9, 7), (11, 29)]);
    let text = parse(&source, "t.yaml").unwrap_err().to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().all(|l| l.starts_with("t.yaml:")), "{text}");
}

#[test]
fn type_errors() {
    let source = format!("shards: [1]\n{MINIMAL_RESPONDER}");
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (1, 9), "{message}");
    assert_contains(&message, &["shards", "invalid type"]);

    let source = "\
responder:
  tunnel_listener:
    listen: 127.0.0.1:9000
    max_tunnels: lots
  egress_listener:
    listen: 127.0.0.1:8085
";
    let (line, column, message) = error(source);
    assert_eq!((line, column), (4, 18), "{message}");
    assert_contains(&message, &["max_tunnels", "invalid type"]);

    let (line, column, message) = error("responder: 5\n");
    assert_eq!((line, column), (1, 12), "{message}");
    assert_contains(&message, &["invalid type", "responder mapping"]);

    let (line, column, message) = error("- a\n- b\n");
    assert_eq!((line, column), (1, 1), "{message}");
    assert_contains(&message, &["invalid type"]);
}

#[test]
fn missing_required_key() {
    let source = "responder:\n  tunnel_listener:\n    listen: 127.0.0.1:9000\n";
    let (line, column, message) = error(source);
    assert_eq!((line, column), (2, 3), "{message}");
    assert_contains(&message, &["missing field `egress_listener`"]);
}

#[test]
fn yaml_syntax_error() {
    let source = "responder:\n  tunnel_listener: [\n";
    let (line, _, message) = error(source);
    assert!(line >= 2, "{message}");
    let text = parse(source, "t.yaml").unwrap_err().to_string();
    assert!(text.starts_with(&format!("t.yaml:{line}:")), "{text}");
}

#[test]
fn empty_file() {
    for source in ["", "\n\n", "# only a comment\n", "---\n"] {
        let (line, column, message) = error(source);
        assert_eq!((line, column), (1, 1));
        assert_contains(&message, &["empty"]);
    }
}

#[test]
fn neither_role() {
    let (line, column, message) = error("shards: 2\n");
    assert_eq!((line, column), (1, 1));
    assert_contains(&message, &["initiator", "responder"]);
}

#[test]
fn bad_addresses() {
    let source = "\
responder:
  tunnel_listener:
    listen: localhost:9000
  egress_listener:
    listen: 127.0.0.1:8085
";
    let (line, column, message) = error(source);
    assert_eq!((line, column), (3, 13), "{message}");
    assert_contains(&message, &["localhost:9000", "listen address"]);

    for endpoint in [
        "127.0.0.1",
        "::1:80",
        "host:0",
        "host:99999",
        ":80",
        "a b:80",
    ] {
        let source = initiator(
            "",
            "    - rc://n:c:t@cloud:1\n",
            "    - { prefix: /, cluster: app }\n",
        )
        .replace("127.0.0.1:8080", endpoint);
        let (line, column, message) = error(&source);
        assert_eq!((line, column), (3, 17), "{endpoint}: {message}");
        assert_contains(&message, &[endpoint]);
    }
}

#[test]
fn listeners_must_not_overlap() {
    let source = "\
admin: { listen: 127.0.0.1:9000 }
responder:
  tunnel_listener:
    listen: 0.0.0.0:9000
  egress_listener:
    listen: 0.0.0.0:9000
";
    let found: Vec<(usize, usize)> = errors(source).iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(found, [(4, 13), (6, 13)]);
}

#[test]
fn node_ids_are_validated() {
    let source = format!("node: {{ id: \"a:b\", cluster: c }}\n{MINIMAL_RESPONDER}");
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (1, 13), "{message}");
    assert_contains(&message, &["node.id", "node id `a:b`", "`:`"]);

    let source = format!("node: {{ id: a, cluster: \"\" }}\n{MINIMAL_RESPONDER}");
    let (_, _, message) = error(&source);
    assert_contains(&message, &["cluster id", "empty"]);

    let config = ok(&format!(
        "node: {{ id: a, cluster: c, tenant: \"\" }}\n{MINIMAL_RESPONDER}"
    ));
    assert_eq!(config.node.unwrap().tenant, "");
}

#[test]
fn host_id_format_string_or_list() {
    let source = MINIMAL_RESPONDER.replace(
        "    listen: 127.0.0.1:8085\n",
        "    listen: 127.0.0.1:8085\n    host_id_format: \"%REQ(x-tenant)%/%REQ(x-node-id)%\"\n",
    );
    let config = ok(&source);
    let formats = &config.responder.unwrap().egress_listener.host_id_format;
    assert_eq!(formats.len(), 1);
    assert_eq!(formats[0].as_str(), "%REQ(x-tenant)%/%REQ(x-node-id)%");

    let source = MINIMAL_RESPONDER.replace(
        "    listen: 127.0.0.1:8085\n",
        "    listen: 127.0.0.1:8085\n    host_id_format: [\"%REQ(x-node-id)%\", \"%BOGUS%\"]\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (6, 42), "{message}");
    assert_contains(&message, &["unknown operator `%BOGUS%`"]);
}

#[test]
fn edge_settings() {
    let with = |extra: &str| {
        MINIMAL_RESPONDER.replace(
            "    listen: 127.0.0.1:8085\n",
            &format!("    listen: 127.0.0.1:8085\n{extra}"),
        )
    };
    let config = ok(&with(
        "    xff_num_trusted_hops: 2\n    trust_request_id: true\n    \
         path_with_escaped_slashes_action: keep_unchanged\n    connection_balance: kernel\n",
    ));
    let e = config.responder.clone().unwrap().egress_listener;
    assert_eq!(e.xff_num_trusted_hops, 2);
    assert!(e.trust_request_id);
    assert_eq!(
        e.path_with_escaped_slashes_action,
        crate::http::path::EscapedSlashes::Keep
    );
    assert_eq!(e.connection_balance, crate::shard::balance::Balance::Kernel);
    assert_contains(
        &config.summary(),
        &[
            "client x-forwarded-*: kept (2 trusted hops)",
            "x-request-id: the client's kept",
            "spread over shards by the kernel",
        ],
    );
    assert_contains(
        &ok(MINIMAL_RESPONDER).summary(),
        &[
            "client x-forwarded-*: dropped (rtun is the edge)",
            "x-request-id: generated",
            "escaped slashes in paths: rejected",
            "balanced over shards exactly",
        ],
    );

    let (line, column, message) = error(&with("    path_with_escaped_slashes_action: decode\n"));
    assert_eq!((line, column), (6, 39), "{message}");
    assert_contains(&message, &["decode", "reject_request", "keep_unchanged"]);
    let (line, _, message) = error(&with("    xff_num_trusted_hops: -1\n"));
    assert_eq!(line, 6, "{message}");
    let (line, _, message) = error(&with("    trust_request_id: maybe\n"));
    assert_eq!(line, 6, "{message}");
    let (line, column, message) = error(&with("    connection_balance: round_robin\n"));
    assert_eq!((line, column), (6, 25), "{message}");
    assert_contains(&message, &["round_robin", "`kernel` or `exact`"]);
}

#[test]
fn empty_lists_are_rejected() {
    let source = initiator("", "    []\n", "    - { prefix: /, cluster: app }\n")
        .replace("  tunnels:\n    []", "  tunnels: []");
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (7, 12), "{message}");
    assert_contains(&message, &["initiator.tunnels", "empty"]);
}

#[test]
fn handshake_headers_keep_order_and_reject_reserved() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n",
        "    - { prefix: /, cluster: app }\n  handshake_headers:\n    Authorization: \"Bearer x\"\n    x-extra: y\n",
    );
    let config = ok(&source);
    assert_eq!(
        config.initiator.unwrap().extra_handshake_headers,
        [
            ("authorization".to_owned(), "Bearer x".to_owned()),
            ("x-extra".to_owned(), "y".to_owned())
        ]
    );
    let source = source.replace("x-extra", "x-envoy-reverse-tunnel-node-id");
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (13, 5), "{message}");
    assert_contains(&message, &["written by the handshake"]);
}

#[test]
fn handshake_form_and_initiation_time() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n",
        "    - { prefix: /, cluster: app }\n  handshake: upgrade\n  send_initiation_time: false\n",
    );
    let config = ok(&source);
    assert!(config
        .summary()
        .contains("handshake: GET /reverse_connections/request (upgrade, timeout 10s)"));
    let i = config.initiator.unwrap();
    assert_eq!(i.handshake, crate::protocol::HandshakeForm::Upgrade);
    assert!(!i.send_initiation_time);
    let plain = ok(&source
        .replace("upgrade\n", "plain\n")
        .replace("false", "true"));
    assert!(plain
        .summary()
        .contains("(plain, initiation time sent, timeout 10s)"));

    let (line, _, message) = error(&source.replace("handshake: upgrade", "handshake: websocket"));
    assert_eq!(line, 11, "{message}");
    assert_contains(&message, &["websocket", "plain", "upgrade"]);
    let (_, _, message) = error(&source.replace("false", "sometimes"));
    assert_contains(&message, &["send_initiation_time"]);
}

#[test]
fn backoffs_must_be_ordered() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n",
        "    - { prefix: /, cluster: app }\n  initial_reconnect_backoff: 1m\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (11, 30), "{message}");
    assert_contains(
        &message,
        &["initial_reconnect_backoff 1m", "max_reconnect_backoff 30s"],
    );

    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n",
        "    - { prefix: /, cluster: app }\n  max_reconnect_backoff: 100ms\n",
    );
    let (_, _, message) = error(&source);
    assert_contains(&message, &["max_reconnect_backoff 100ms"]);
}

#[test]
fn initiator_keepalive() {
    let with = |keys: &str| {
        initiator(
            "",
            "    - rc://n:c:t@cloud:1\n",
            &format!("    - {{ prefix: /, cluster: app }}\n{keys}"),
        )
    };
    let config = ok(&with(
        "  ping_interval: 1500ms\n  ping_failure_threshold: 5\n  max_concurrent_streams: 1\n",
    ));
    let i = config.initiator.unwrap();
    assert_eq!(i.ping_interval, Duration::from_millis(1500));
    assert_eq!(i.ping_failure_threshold, 5);
    assert_eq!(i.max_concurrent_streams, 1);

    let (line, column, message) = error(&with("  ping_interval: 0s\n"));
    assert_eq!((line, column), (11, 18), "{message}");
    assert_contains(&message, &["initiator.ping_interval", "greater than zero"]);

    let (line, column, message) = error(&with("  ping_interval: 10\n"));
    assert_eq!((line, column), (11, 18), "{message}");
    assert_contains(&message, &["durations need a unit"]);

    let (line, column, message) = error(&with("  ping_failure_threshold: 0\n"));
    assert_eq!((line, column), (11, 27), "{message}");
    assert_contains(
        &message,
        &["initiator.ping_failure_threshold", "0 is out of range"],
    );

    let (line, column, message) = error(&with("  max_concurrent_streams: -1\n"));
    assert_eq!((line, column), (11, 27), "{message}");
    assert_contains(
        &message,
        &["initiator.max_concurrent_streams", "-1 is negative"],
    );
}

#[test]
fn io_error() {
    let err = load(std::path::Path::new("/nonexistent/rtun.yaml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/rtun.yaml: cannot read: "),
        "{err}"
    );
}

#[test]
fn summary_describes_what_runs() {
    let summary = ok(include_str!("../../config/demo.yaml")).summary();
    assert_contains(
        &summary,
        &[
            "roles: initiator + responder",
            "shards: auto",
            "admin: http://127.0.0.1:19901",
            "demo-node:demo-cluster:demo -> responder x2",
            "/* -> local-app",
            "tunnel listener: 127.0.0.1:19000",
            "egress listener: 127.0.0.1:18085",
            "%REQ(x-node-id)%, %REQ(x-cluster-id)%",
        ],
    );
}

#[test]
fn client_tls_cert_and_key_go_together() {
    let source = initiator(
        "",
        "    - rc://n:c:t@cloud:1\n",
        "    - { prefix: /, cluster: app }\n",
    )
    .replace(
        "cloud.example.com:9000\"]\n",
        "cloud.example.com:9000\"]\n    tls: { ca: ca.pem, cert: a.pem }\n",
    );
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (6, 10), "{message}");
    assert_contains(&message, &["clusters.cloud.tls", "`cert` and `key`"]);
}

#[test]
fn client_tls_needs_a_ca() {
    let with_tls = |tls: &str| {
        initiator(
            "",
            "    - rc://n:c:t@cloud:1\n",
            "    - { prefix: /, cluster: app }\n",
        )
        .replace(
            "127.0.0.1:8080\"]\n",
            &format!("127.0.0.1:8080\"]\n    tls: {tls}\n"),
        )
    };
    let (line, column, message) = error(&with_tls("{ sni: app.internal }"));
    assert_eq!((line, column), (4, 10), "{message}");
    assert_contains(&message, &["clusters.app.tls", "`ca` is required"]);

    let config = ok(&with_tls(
        "{ ca: ca.pem, cert: c.pem, key: k.pem, sni: app.internal }",
    ));
    let tls = config.clusters["app"].tls.clone().expect("tls");
    assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert_eq!(tls.sni.as_deref(), Some("app.internal"));
}

#[test]
fn egress_listener_tls() {
    let with = |tls: &str| {
        MINIMAL_RESPONDER.replace(
            "    listen: 127.0.0.1:8085\n",
            &format!("    listen: 127.0.0.1:8085\n    tls: {tls}\n"),
        )
    };
    let config = ok(&with("{ cert: s.pem, key: s-key.pem }"));
    let tls = config.responder.unwrap().egress_listener.tls.expect("tls");
    assert_eq!(tls.cert, std::path::PathBuf::from("s.pem"));
    assert_eq!(tls.client_ca, None);

    let config = ok(&with("{ cert: s.pem, key: s-key.pem, client_ca: ca.pem }"));
    let tls = config.responder.unwrap().egress_listener.tls.expect("tls");
    assert_eq!(tls.client_ca, Some(std::path::PathBuf::from("ca.pem")));

    let (_, _, message) = error(&with("{ cert: s.pem }"));
    assert_contains(&message, &["key"]);
    let (_, _, message) = error(&with("{ cert: s.pem, key: k.pem, ca: x.pem }"));
    assert_contains(&message, &["ca"]);
}

#[test]
fn config_can_be_shared_between_shards() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Config>();
}

#[test]
fn summary_of_an_initiator() {
    let summary = ok(include_str!("../../config/initiator.yaml")).summary();
    assert_contains(
        &summary,
        &[
            "roles: initiator\n",
            "shards: 2",
            "node: edge-42 (cluster edge-west",
            "tunnels (2 connections)",
            "edge-42:edge-west:acme -> cloud x2",
            "/downstream_service* -> local-app (timeout 30s)",
            "stream idle timeout 5m",
            "extra headers: authorization",
            "keepalive: ping every 10s, dead after 3 missed; 1024 streams per tunnel",
            "cloud: http1 127.0.0.1:9000 (connect timeout 30s, 64 idle per shard)",
            "per shard: 1024 connections (8 connecting per endpoint), 1024 requests, queue 1024 for 5s; eject after 5 failures for 30s (up to 5m)",
        ],
    );
    // Only local clusters (local-app, local-grpc) have the protection line.
    assert_eq!(summary.matches("per shard: ").count(), 2, "{summary}");
    assert!(
        !summary.contains("Bearer"),
        "secrets stay out of the summary"
    );
    let zero = ok(&initiator(
        "",
        "    - rc://n:c:t@cloud:0\n",
        "    - { prefix: /, cluster: app }\n",
    ))
    .summary();
    assert_contains(&zero, &["n:c:t -> cloud x0 (dials nothing)"]);
}

#[test]
fn built_in_code_equals_parsed_from_a_file() {
    let parsed = ok("\
clusters:
  app: { endpoints: [\"127.0.0.1:8080\"] }
  cloud: { endpoints: [\"127.0.0.1:9000\"] }
initiator:
  tunnels: [\"rc://n:c:t@cloud:2\"]
  routes: [{ prefix: /, cluster: app }]
responder:
  tunnel_listener: { listen: 127.0.0.1:9000 }
  egress_listener: { listen: 127.0.0.1:8085 }
");
    let mut built = Config::empty();
    for (name, endpoint) in [("app", "127.0.0.1:8080"), ("cloud", "127.0.0.1:9000")] {
        let cluster = ClusterConfig::new(vec![endpoint.to_owned()]);
        built.clusters.insert(name.to_owned(), cluster);
    }
    let tunnel = parse_rc_address("rc://n:c:t@cloud:2").expect("rc address");
    let route = InitiatorRoute::new("/", "app");
    built.initiator = Some(InitiatorConfig::new(vec![tunnel], vec![route]));
    let (tunnel_listen, egress_listen) = ("127.0.0.1:9000", "127.0.0.1:8085");
    built.responder = Some(ResponderConfig::new(
        tunnel_listen.parse().expect("address"),
        egress_listen.parse().expect("address"),
    ));
    assert_eq!(
        built, parsed,
        "a constructor's defaults drifted from the file's"
    );
}

#[test]
fn detailed_stats_and_the_series_cap() {
    let config = ok(&format!(
        "admin: {{ detailed_stats: true, max_series: 50 }}\n{MINIMAL_RESPONDER}"
    ));
    let admin = config.admin.clone().expect("admin");
    assert!(admin.detailed_stats);
    assert_eq!(admin.max_series, 50);
    assert!(config
        .summary()
        .contains("metrics: detailed (per-host series), at most 50 series"));
    let admin = ok(&format!("admin:\n{MINIMAL_RESPONDER}"))
        .admin
        .expect("admin");
    assert!(!admin.detailed_stats);
    assert_eq!(admin.max_series, crate::metrics::DEFAULT_MAX_SERIES);
    for bad in ["0", "100001"] {
        let (line, _, message) = error(&format!(
            "admin: {{ max_series: {bad} }}\n{MINIMAL_RESPONDER}"
        ));
        assert_eq!(line, 1, "{message}");
        assert_contains(&message, &["max_series", "100000"]);
    }
    let (_, _, message) = error(&format!(
        "admin: {{ detailed_stats: yes please }}\n{MINIMAL_RESPONDER}"
    ));
    assert_contains(&message, &["detailed_stats"]);
}

#[test]
fn probes_and_listener_caps() {
    let config = ok(&format!(
        "admin: {{ ready_when: any }}\n{MINIMAL_RESPONDER}    max_connections: 7\n"
    ));
    assert_eq!(config.admin.map(|a| a.ready_when), Some(ReadyWhen::Any));
    let r = config.responder.expect("responder");
    assert_eq!(r.egress_listener.max_connections, 7);
    let config = ok(&format!("admin:\n{MINIMAL_RESPONDER}"));
    assert_eq!(config.admin.map(|a| a.ready_when), Some(ReadyWhen::All));

    let (line, _, message) = error(&format!(
        "admin: {{ ready_when: most }}\n{MINIMAL_RESPONDER}"
    ));
    assert_eq!(line, 1);
    assert_contains(&message, &["most", "all", "any"]);
    let (line, _, message) = error(&format!("{MINIMAL_RESPONDER}    max_connections: 0\n"));
    assert_eq!(line, 6);
    assert_contains(&message, &["max_connections"]);
    let source = MINIMAL_RESPONDER.replace(
        "    listen: 127.0.0.1:9000\n",
        "    listen: 127.0.0.1:9000\n    max_handshakes_in_progress: 0\n",
    );
    let (line, _, message) = error(&source);
    assert_eq!(line, 4);
    assert_contains(&message, &["max_handshakes_in_progress"]);
}

#[test]
fn access_log_is_off_unless_configured_and_has_defaults() {
    assert_eq!(ok(MINIMAL_RESPONDER).access_log, None);
    for section in ["access_log:\n", "access_log: {}\n"] {
        let log = ok(&format!("{section}{MINIMAL_RESPONDER}"))
            .access_log
            .expect("on");
        assert_eq!(log.path, AccessLogPath::Stdout);
        assert_eq!(log.format, crate::access_log::Format::Json);
        assert_eq!(log.buffer_lines, DEFAULT_BUFFER_LINES);
    }
    let config = ok(&format!(
        "access_log:\n  path: /var/log/rtun/access.log\n  format: \"%REQ(:METHOD)% %RESPONSE_CODE%\"\n  buffer_lines: 16\n{MINIMAL_RESPONDER}"
    ));
    let log = config.access_log.clone().expect("on");
    assert_eq!(
        log.path,
        AccessLogPath::File("/var/log/rtun/access.log".into())
    );
    assert!(matches!(log.format, crate::access_log::Format::Template(_)));
    assert_eq!(log.buffer_lines, 16);
    assert_contains(
        &config.summary(),
        &["access log: /var/log/rtun/access.log (format string, 16 lines buffered per shard)"],
    );
}

#[test]
fn access_log_mistakes_are_located() {
    let (line, column, message) = error(&format!(
        "access_log:\n  format: \"%START_TIME% %NOPE%\"\n{MINIMAL_RESPONDER}"
    ));
    assert_eq!((line, column), (2, 11));
    assert_contains(
        &message,
        &[
            "access_log.format",
            "unknown operator `%NOPE%`",
            "at character 14",
        ],
    );
    let (line, _, message) = error(&format!(
        "access_log:\n  buffer_lines: 0\n{MINIMAL_RESPONDER}"
    ));
    assert_eq!(line, 2);
    assert_contains(&message, &["out of range"]);
    let (line, _, message) = error(&format!("access_log:\n  pth: stdout\n{MINIMAL_RESPONDER}"));
    assert_eq!(line, 2);
    assert_contains(&message, &["unknown field `pth`"]);
}
