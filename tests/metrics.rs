//! `/metrics` end to end: the real rtun binary (responder with an admin token and detailed
//! stats, initiator, service), a real Prometheus server (Debian's `prometheus`) scraping both
//! admin endpoints, the responder's with an `authorization` scrape config, and series read
//! back through Prometheus' HTTP API. `promtool check metrics` checks the real pages.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);
/// Prometheus starts, scrapes every second and answers queries; generous on a busy machine.
const SCRAPED: Duration = Duration::from_secs(90);
const TOKEN: &str = "metrics-admin-token";

/// GET an admin path with the bearer token.
fn admin_text(port: u16, path: &str) -> (u16, String) {
    let bearer = format!("Bearer {TOKEN}");
    let resp = get(port, path, &[("authorization", &bearer)]).expect("admin answers");
    (resp.status, resp.text())
}

/// A sample's value on a `/metrics` page (exact series text, labels in rtun's order).
fn sample(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on `page`: it must print nothing and succeed.
fn promtool_check(page: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(page.as_bytes()).expect("write page");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "promtool: {said}\n{page}"
    );
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query's single series, if Prometheus has it.
fn query(prometheus: u16, promql: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let resp = get(prometheus, &path, &[]).ok()?;
    let json: serde_json::Value = serde_json::from_str(&resp.text()).ok()?;
    let result = json["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Waits until Prometheus answers `expected` for `promql`; panics with what it last saw.
fn assert_query(prometheus: u16, promql: &str, expected: f64, logs: &[&Proc]) {
    let mut last = None;
    let seen = wait_until(SCRAPED, || {
        last = query(prometheus, promql);
        last == Some(expected)
    });
    if !seen {
        for p in logs {
            eprintln!("--- {} ---\n{}", p.name, p.log_text());
        }
        panic!("Prometheus: {promql} = {last:?}, expected {expected}");
    }
}

#[test]
fn prometheus_scrapes_rtun_and_reads_requests_latency_and_tunnels() {
    let dir = TempDir::new("metrics-prometheus");
    let token_file = dir.write("admin.token", TOKEN);
    let svc_port = port();
    let _service = spawn_service(&dir, "svc-1", svc_port);

    // The responder: two shards (the scrape merges them), an admin token, detailed stats.
    let r = ResponderOpts {
        shards: 2,
        ..ResponderOpts::new()
    };
    let admin_line = format!("admin: {{ listen: 127.0.0.1:{} }}\n", r.admin);
    assert!(r.yaml().contains(&admin_line));
    let yaml = r.yaml().replace(
        &admin_line,
        &format!(
            "admin: {{ listen: 127.0.0.1:{}, token_file: {}, detailed_stats: true }}\n",
            r.admin,
            token_file.display()
        ),
    );
    let responder = spawn_rtun(&dir, "responder", &yaml);
    for port in [r.tunnel, r.egress, r.admin] {
        assert!(wait_for_port(port, WAIT), "{}", responder.log_text());
    }
    let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, svc_port);
    i.admin = Some(port());
    let initiator = i.spawn(&dir, "initiator");
    let i_admin = i.admin.unwrap_or_default();
    let up = wait_until(WAIT, || {
        get(r.egress, "/up", &[("x-node-id", "n1")]).is_ok_and(|resp| resp.status == 200)
    });
    assert!(up, "the tunnel came up\n{}", responder.log_text());

    // The admin token guards /metrics like /stats.
    let (status, _) = admin_text(r.admin, "/stats");
    assert_eq!(status, 200);
    assert_eq!(get(r.admin, "/metrics", &[]).expect("admin").status, 401);

    // Traffic: successes, and failures of a known reason (counted from here: the probes
    // above may have met a 503 before the tunnel was up).
    let ok_series = r#"rtun_requests_total{listener="egress",code_class="2xx",reason="none"}"#;
    let no_tunnel = r#"rtun_requests_total{listener="egress",code_class="5xx",reason="no_tunnel"}"#;
    let egress_count = r#"rtun_request_duration_seconds_count{listener="egress"}"#;
    let (_, before) = admin_text(r.admin, "/metrics");
    let ok_before = sample(&before, ok_series).unwrap_or_else(|| panic!("{before}"));
    let no_tunnel_before = sample(&before, no_tunnel).unwrap_or(0);
    const OK: u64 = 7;
    const NO_TUNNEL: u64 = 3;
    for k in 0..OK {
        let resp = get(r.egress, &format!("/k/{k}"), &[("x-node-id", "n1")]).expect("egress");
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    for _ in 0..NO_TUNNEL {
        let resp = get(r.egress, "/x", &[("x-node-id", "nobody")]).expect("egress");
        assert_eq!(resp.status, 503);
    }

    // The page itself: every request counted once, in both shards' sum; promtool-clean.
    let (status, page) = admin_text(r.admin, "/metrics");
    assert_eq!(status, 200);
    promtool_check(&page);
    let egress_ok = sample(&page, ok_series).unwrap_or_else(|| panic!("{page}"));
    assert_eq!(egress_ok, ok_before + OK, "{page}");
    let egress_no_tunnel = sample(&page, no_tunnel).unwrap_or(0);
    assert_eq!(egress_no_tunnel, no_tunnel_before + NO_TUNNEL, "{page}");
    let egress_all = egress_ok + egress_no_tunnel;
    assert_eq!(sample(&page, egress_count), Some(egress_all), "{page}");
    let host = r#"rtun_host_requests_total{tenant="",host_id="n1",code_class="2xx"}"#;
    assert_eq!(sample(&page, host), Some(egress_ok), "{page}");
    assert_eq!(
        sample(&page, r#"rtun_tunnels{tenant="t",cluster="c1"}"#),
        Some(1)
    );
    assert_eq!(
        sample(&page, r#"rtun_handshakes_total{outcome="accepted"}"#),
        Some(1)
    );
    // /stats says the same under its flat names.
    let (_, stats) = admin_text(r.admin, "/stats");
    assert!(
        stats
            .lines()
            .any(|l| l == format!("egress_503_no_tunnel {egress_no_tunnel}")),
        "{stats}"
    );
    let i_page = admin_get(i_admin, "/metrics").expect("initiator /metrics");
    promtool_check(&i_page);
    // The initiator's side of the tunnel, by responder cluster (the tunnels entry's).
    let i_tunnels = r#"rtun_initiator_tunnels{cluster="responder"}"#;
    assert_eq!(sample(&i_page, i_tunnels), Some(1), "{i_page}");
    let i_opened = r#"rtun_initiator_tunnels_opened_total{cluster="responder"}"#;
    assert_eq!(sample(&i_page, i_opened), Some(1), "{i_page}");
    assert_eq!(admin_stat(i_admin, "initiator_tunnels_up"), 1);

    // A real Prometheus scrapes both (the responder with its token) and answers queries.
    let prom_port = port();
    let prom_config = dir.write(
        "prometheus.yml",
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n\
             \x20 - job_name: responder\n\
             \x20   authorization: {{ type: Bearer, credentials_file: {token} }}\n\
             \x20   static_configs: [{{ targets: ['127.0.0.1:{r_admin}'] }}]\n\
             \x20 - job_name: initiator\n\
             \x20   static_configs: [{{ targets: ['127.0.0.1:{i_admin}'] }}]\n",
            token = token_file.display(),
            r_admin = r.admin,
        ),
    );
    let tsdb = dir.join("tsdb");
    let prometheus = Proc::spawn(
        &dir,
        "prometheus",
        "prometheus",
        &[
            &format!("--config.file={}", prom_config.display()),
            &format!("--storage.tsdb.path={}", tsdb.display()),
            &format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );
    let logs = [&prometheus, &responder, &initiator];
    assert_query(prom_port, r#"up{job="responder"}"#, 1.0, &logs);
    assert_query(prom_port, r#"up{job="initiator"}"#, 1.0, &logs);
    assert_query(
        prom_port,
        r#"sum(rtun_requests_total{job="responder",listener="egress"})"#,
        egress_all as f64,
        &logs,
    );
    assert_query(
        prom_port,
        r#"rtun_requests_total{job="responder",listener="egress",code_class="2xx",reason="none"}"#,
        egress_ok as f64,
        &logs,
    );
    assert_query(
        prom_port,
        r#"rtun_request_duration_seconds_count{job="responder",listener="egress"}"#,
        egress_all as f64,
        &logs,
    );
    assert_query(
        prom_port,
        r#"rtun_host_requests_total{job="responder",tenant="",host_id="n1",code_class="2xx"}"#,
        egress_ok as f64,
        &logs,
    );
    assert_query(
        prom_port,
        r#"rtun_tunnels{job="responder",tenant="t",cluster="c1"}"#,
        1.0,
        &logs,
    );
    assert_query(
        prom_port,
        r#"rtun_initiator_tunnels{job="initiator",cluster="responder"}"#,
        1.0,
        &logs,
    );
    // The initiator served every request that reached n1, and timed its local service.
    assert_query(
        prom_port,
        r#"rtun_requests_total{job="initiator",listener="initiator",code_class="2xx",reason="none"}"#,
        egress_ok as f64,
        &logs,
    );
    assert_query(
        prom_port,
        r#"rtun_request_duration_seconds_count{job="initiator",listener="initiator"}"#,
        egress_ok as f64,
        &logs,
    );
}

/// A responder's tunnel listener that takes only the bearer token `tok` (tenant `t`).
fn responder_requiring_a_token() -> ResponderOpts {
    let sha: String = rtun::auth::tokens::sha256(b"tok")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ResponderOpts {
        tunnel_extra: format!(
            "    auth:\n\
             \x20     tokens:\n\
             \x20       - {{ sha256: {sha}, tenant: t, nodes: [\"*\"], clusters: [\"*\"] }}\n"
        ),
        ..ResponderOpts::new()
    }
}

#[test]
fn failed_dials_are_counted_by_responder_cluster_and_reason() {
    let dir = TempDir::new("metrics-dial-failures");
    let svc = port();
    let _service = spawn_service(&dir, "svc-1", svc);
    // `locked` wants a token the initiator does not send (401); nothing listens at `closed`.
    let locked = responder_requiring_a_token();
    let locked_proc = locked.spawn(&dir, "locked");
    let closed = port();
    let admin = port();
    let yaml = format!(
        "shards: 2\n\
         admin: {{ listen: 127.0.0.1:{admin} }}\n\
         drain_timeout: 1s\n\
         clusters:\n\
         \x20 local-app: {{ endpoints: [\"127.0.0.1:{svc}\"] }}\n\
         \x20 locked: {{ endpoints: [\"127.0.0.1:{tunnel}\"], connect_timeout: 1s }}\n\
         \x20 closed: {{ endpoints: [\"127.0.0.1:{closed}\"], connect_timeout: 1s }}\n\
         initiator:\n\
         \x20 tunnels: [\"rc://n1:c1:t@locked:2\", \"rc://n1:c1:t@closed:2\"]\n\
         \x20 routes: [{{ prefix: /, cluster: local-app }}]\n\
         \x20 initial_reconnect_backoff: 100ms\n\
         \x20 max_reconnect_backoff: 300ms\n",
        tunnel = locked.tunnel,
    );
    let initiator = spawn_rtun(&dir, "initiator", &yaml);
    assert!(wait_for_port(admin, WAIT), "{}", initiator.log_text());

    let rejected = r#"rtun_initiator_dial_failures_total{cluster="locked",reason="rejected_401"}"#;
    let refused = r#"rtun_initiator_dial_failures_total{cluster="closed",reason="connect"}"#;
    let mut page = String::new();
    let counted = wait_until(WAIT, || {
        page = admin_get(admin, "/metrics").unwrap_or_default();
        sample(&page, rejected) >= Some(3) && sample(&page, refused) >= Some(3)
    });
    assert!(
        counted,
        "{page}\n--- initiator ---\n{}\n--- locked ---\n{}",
        initiator.log_text(),
        locked_proc.log_text()
    );
    promtool_check(&page);
    // Each failure under its own cluster and reason only; no tunnel is up.
    let failures: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("rtun_initiator_dial_failures_total{"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series))
        .collect();
    assert_eq!(failures, [refused, rejected], "{page}");
    for cluster in ["locked", "closed"] {
        let live = format!("rtun_initiator_tunnels{{cluster=\"{cluster}\"}}");
        assert_eq!(sample(&page, &live), Some(0), "{page}");
        let opened = format!("rtun_initiator_tunnels_opened_total{{cluster=\"{cluster}\"}}");
        assert_eq!(sample(&page, &opened), Some(0), "{page}");
    }
    // The responder saw the same refusals; /stats keeps the flat names.
    let outcome = r#"rtun_handshakes_total{outcome="unauthenticated"}"#;
    let r_page = admin_get(locked.admin, "/metrics").expect("responder /metrics");
    assert!(sample(&r_page, outcome) >= Some(3), "{r_page}");
    let stats = admin_stats(admin);
    let stat = |name: &str| {
        stats
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name} in /stats: {stats:?}"))
    };
    assert!(stat("initiator_handshake_rejected") >= 3);
    assert!(stat("initiator_dial_failures") >= 6);
    assert_eq!(stat("initiator_tunnels_up"), 0);
    assert_eq!(stat("initiator_credential_errors"), 0);
}
