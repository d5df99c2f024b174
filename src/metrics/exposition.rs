//! The Prometheus text exposition format (version 0.0.4): every family with its HELP and
//! TYPE, label values escaped (`\`, `"`, newline), families in a fixed order.
//!
//! Families (all prefixed `rtun_`):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `requests_total` | counter | `listener`, `code_class`, `reason` |
//! | `request_duration_seconds` | histogram | `listener` |
//! | `handshakes_total` | counter | `outcome` |
//! | `tls_failures_total` | counter | `side`, `reason` |
//! | `tunnels` | gauge | `tenant`, `cluster` |
//! | `tunnels_opened_total` | counter | `tenant`, `cluster` |
//! | `tunnels_closed_total` | counter | `tenant`, `cluster`, `reason` |
//! | `initiator_tunnels` | gauge | `cluster` |
//! | `initiator_tunnels_opened_total` | counter | `cluster` |
//! | `initiator_tunnels_closed_total` | counter | `cluster`, `reason` |
//! | `initiator_dial_failures_total` | counter | `cluster`, `reason` |
//! | `host_requests_total` | counter | `tenant`, `host_id`, `code_class` (detailed stats) |
//! | `<counter>_total` | counter | — (every plain counter) |
//! | gauges the admin endpoint adds (`directory_tunnels`, …) | gauge | — |

use std::fmt::Write;

use super::counters::Counters;
use super::histogram::HistogramSnapshot;
use super::labels::{self, RequestLabels, TlsSide};
use super::Snapshot;
use crate::initiator::dialer::DialError;
use crate::tls::TlsFailure;
use crate::tunnel::End;

/// The content type of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A gauge read outside the shards' blocks (the directory, the listener caps).
#[derive(Debug, Clone, Copy)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// Writes the page.
pub fn render(s: &Snapshot, gauges: &[Gauge]) -> String {
    let mut out = Page(String::with_capacity(16 * 1024));
    out.family(
        "rtun_requests_total",
        "counter",
        "Requests that ended, by listener (egress: clients of the responder; initiator: \
         streams from tunnels), status class sent and failure reason (none, or the ProxyError \
         label). Counted once, when the request ends.",
    );
    for (i, n) in s.requests.iter().enumerate().filter(|(_, n)| **n > 0) {
        let l = RequestLabels::from_index(i);
        out.sample(
            "rtun_requests_total",
            &[
                ("listener", l.listener.label()),
                ("code_class", labels::CODE_CLASSES[l.code_class]),
                ("reason", labels::reason_label(l.reason)),
            ],
            *n,
        );
    }

    out.family(
        "rtun_request_duration_seconds",
        "histogram",
        "Request latency. egress: from the request head to the end of the response body \
         (every request); initiator: the local service's time, from sending it the request \
         (queueing for a connection included) to its response head.",
    );
    for (role, h) in labels::LISTENERS.iter().zip(&s.latency) {
        out.histogram("rtun_request_duration_seconds", role.label(), h);
    }

    out.family(
        "rtun_handshakes_total",
        "counter",
        "Tunnel handshakes on the tunnel listener by outcome: accepted, or the rejection's \
         reason (timeout includes TLS handshakes not done within handshake_timeout).",
    );
    for (i, n) in s.handshakes.iter().enumerate().filter(|(_, n)| **n > 0) {
        let outcome = labels::handshake_outcome_label(i);
        out.sample("rtun_handshakes_total", &[("outcome", outcome)], *n);
    }

    out.family(
        "rtun_tls_failures_total",
        "counter",
        "TLS handshakes refused or lost, by side (tunnel listener, initiator dialer, egress \
         listener) and failure class.",
    );
    for side in TlsSide::ALL {
        for (failure, n) in TlsFailure::ALL.iter().zip(&s.tls_failures[side.index()]) {
            if *n > 0 {
                let labels = [("side", side.label()), ("reason", failure.label())];
                out.sample("rtun_tls_failures_total", &labels, *n);
            }
        }
    }

    out.family(
        "rtun_tunnels",
        "gauge",
        "Live tunnels on the responder, by tenant and cluster id (tenant is empty when \
         tenants are not configured).",
    );
    for ((tenant, cluster), t) in &s.tunnels {
        let labels = [("tenant", tenant.as_str()), ("cluster", cluster.as_str())];
        out.sample("rtun_tunnels", &labels, t.live());
    }
    out.family(
        "rtun_tunnels_opened_total",
        "counter",
        "Tunnels registered on the responder, by tenant and cluster id.",
    );
    for ((tenant, cluster), t) in &s.tunnels {
        let labels = [("tenant", tenant.as_str()), ("cluster", cluster.as_str())];
        out.sample("rtun_tunnels_opened_total", &labels, t.opened);
    }
    out.family(
        "rtun_tunnels_closed_total",
        "counter",
        "Tunnels that ended on the responder, by tenant, cluster id and reason (closed by \
         the peer, dead: PINGs unanswered, drained, failed).",
    );
    for ((tenant, cluster), t) in &s.tunnels {
        for (reason, n) in End::LABELS.iter().zip(t.closed) {
            let labels = [
                ("tenant", tenant.as_str()),
                ("cluster", cluster.as_str()),
                ("reason", reason),
            ];
            out.sample("rtun_tunnels_closed_total", &labels, n);
        }
    }

    out.family(
        "rtun_initiator_tunnels",
        "gauge",
        "Initiator: live tunnels, by responder cluster (the tunnels entry's remote cluster).",
    );
    for (cluster, d) in &s.dialed {
        out.sample(
            "rtun_initiator_tunnels",
            &[("cluster", cluster)],
            d.tunnels.live(),
        );
    }
    out.family(
        "rtun_initiator_tunnels_opened_total",
        "counter",
        "Initiator: tunnels established (handshake accepted), by responder cluster.",
    );
    for (cluster, d) in &s.dialed {
        let labels = [("cluster", cluster.as_str())];
        out.sample(
            "rtun_initiator_tunnels_opened_total",
            &labels,
            d.tunnels.opened,
        );
    }
    out.family(
        "rtun_initiator_tunnels_closed_total",
        "counter",
        "Initiator: tunnels that ended, by responder cluster and reason (closed by the \
         peer, dead: PINGs unanswered, drained, failed).",
    );
    for (cluster, d) in &s.dialed {
        for (reason, n) in End::LABELS.iter().zip(d.tunnels.closed) {
            let labels = [("cluster", cluster.as_str()), ("reason", reason)];
            out.sample("rtun_initiator_tunnels_closed_total", &labels, n);
        }
    }
    out.family(
        "rtun_initiator_dial_failures_total",
        "counter",
        "Initiator: dial attempts that failed, by responder cluster and reason: connect, \
         connect_timeout, tls (its class in rtun_tls_failures_total), tls_timeout, \
         tls_unavailable, credential (no bearer token), io, timeout (no handshake answer), \
         closed, malformed_response, rejected_<status> (the responder refused the \
         handshake: 400, 401, 403, 404, 429, 503, other); and resolve: a re-resolution of an \
         endpoint's name failed (its last known addresses are still dialed).",
    );
    for (cluster, d) in &s.dialed {
        for (reason, n) in DialError::LABELS.iter().zip(d.failures) {
            if n > 0 {
                let labels = [("cluster", cluster.as_str()), ("reason", reason)];
                out.sample("rtun_initiator_dial_failures_total", &labels, n);
            }
        }
    }

    if s.settings.detailed_stats {
        out.family(
            "rtun_host_requests_total",
            "counter",
            "Egress requests that ended, by tenant, host id (the node or cluster id the \
             request was routed by) and status class (admin.detailed_stats).",
        );
        for ((tenant, host), counts) in &s.hosts {
            for (class, n) in labels::CODE_CLASSES.iter().zip(counts) {
                if *n > 0 {
                    let labels = [
                        ("tenant", tenant.as_str()),
                        ("host_id", host.as_str()),
                        ("code_class", class),
                    ];
                    out.sample("rtun_host_requests_total", &labels, *n);
                }
            }
        }
    }

    for ((name, help), value) in Counters::DESCRIPTIONS.iter().zip(&s.counters) {
        let name = format!("rtun_{name}_total");
        out.family(&name, "counter", help);
        out.sample(&name, &[], *value);
    }
    for gauge in gauges {
        let name = format!("rtun_{}", gauge.name);
        out.family(&name, "gauge", gauge.help);
        out.sample(&name, &[], gauge.value);
    }
    out.0
}

struct Page(String);

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help.trim()));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        write_labels(&mut self.0, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, listener: &str, h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, n) in h.cumulative() {
            let le = bound.to_string();
            self.sample(&bucket, &[("listener", listener), ("le", &le)], n);
        }
        let count = h.count();
        self.sample(&bucket, &[("listener", listener), ("le", "+Inf")], count);
        self.sample(
            &format!("{name}_sum"),
            &[("listener", listener)],
            h.sum_seconds(),
        );
        self.sample(&format!("{name}_count"), &[("listener", listener)], count);
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// HELP text: backslash and newline escaped; doc comments' line breaks become spaces.
fn escape_help(help: &str) -> String {
    help.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\\', "\\\\")
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::pipeline::Role;
    use std::time::Duration;

    fn page() -> String {
        let metrics = Metrics::with_settings(
            2,
            MetricsSettings {
                detailed_stats: true,
                max_series: 10,
            },
        );
        let ok = RequestLabels::of(Role::Egress, Some(200), None);
        metrics.shard(0).request(ok, Some(Duration::from_millis(3)));
        metrics
            .shard(1)
            .request(ok, Some(Duration::from_millis(30)));
        let index = SeriesIndex::default();
        let slot = metrics.shard(1).tunnel_slot(&index, "te\"n\\ant\n", "c1");
        metrics.shard(1).tunnel_opened(slot);
        metrics.shard(0).handshake(HandshakeOutcome::Accepted);
        let hosts = SeriesIndex::default();
        metrics.shard(0).host_request(&hosts, "", "node-1", 1);
        // Initiator: two tunnels to `resp` (one on each shard), one ended; failed dials.
        let (d0, d1) = (SeriesIndex::default(), SeriesIndex::default());
        let (r0, r1) = (
            metrics.shard(0).dialed_slot(&d0, "resp"),
            metrics.shard(1).dialed_slot(&d1, "resp"),
        );
        metrics.shard(0).dialed_opened(r0);
        metrics.shard(1).dialed_opened(r1);
        metrics.shard(1).dialed_closed(r1, &End::Dead);
        let rejected = crate::initiator::dialer::DialError::Rejected {
            status: 401,
            body: String::new(),
            retry_after: None,
        };
        metrics.shard(0).dial_failed(r0, &rejected);
        metrics.shard(1).dial_failed(r1, &rejected);
        let gauge = Gauge {
            name: "directory_tunnels",
            help: "Tunnels in the directory.",
            value: 1,
        };
        render(&metrics.snapshot(), &[gauge])
    }

    #[test]
    fn families_carry_help_type_and_merged_samples() {
        let page = page();
        let has = |line: &str| page.lines().any(|l| l == line);
        assert!(
            has(r#"rtun_requests_total{listener="egress",code_class="2xx",reason="none"} 2"#),
            "{page}"
        );
        assert!(has(
            r#"rtun_request_duration_seconds_bucket{listener="egress",le="0.005"} 1"#
        ));
        assert!(has(
            r#"rtun_request_duration_seconds_bucket{listener="egress",le="+Inf"} 2"#
        ));
        assert!(has(
            r#"rtun_request_duration_seconds_count{listener="egress"} 2"#
        ));
        assert!(has(
            r#"rtun_request_duration_seconds_count{listener="initiator"} 0"#
        ));
        assert!(has(r#"rtun_handshakes_total{outcome="accepted"} 1"#));
        assert!(
            has(r#"rtun_tunnels{tenant="te\"n\\ant\n",cluster="c1"} 1"#),
            "{page}"
        );
        assert!(has(
            r#"rtun_host_requests_total{tenant="",host_id="node-1",code_class="2xx"} 1"#
        ));
        assert!(has(r#"rtun_initiator_tunnels{cluster="resp"} 1"#), "{page}");
        assert!(has(
            r#"rtun_initiator_tunnels_opened_total{cluster="resp"} 2"#
        ));
        assert!(has(
            r#"rtun_initiator_tunnels_closed_total{cluster="resp",reason="dead"} 1"#
        ));
        assert!(has(
            r#"rtun_initiator_dial_failures_total{cluster="resp",reason="rejected_401"} 2"#
        ));
        assert!(
            !page.contains(r#"reason="rejected_403""#),
            "only series seen"
        );
        assert!(has("rtun_egress_cross_shard_total 0"));
        assert!(has("rtun_directory_tunnels 1"));
        // Every sample's family was introduced by HELP and TYPE.
        let mut typed = std::collections::HashSet::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap_or_default().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{line} has no TYPE");
            }
        }
    }

    #[test]
    fn host_series_only_with_detailed_stats() {
        let metrics = Metrics::new(1);
        let hosts = SeriesIndex::default();
        metrics.shard(0).host_request(&hosts, "", "node-1", 1);
        let page = render(&metrics.snapshot(), &[]);
        assert!(!page.contains("rtun_host_requests_total"), "{page}");
        assert!(
            page.contains("rtun_series_overflow_total 1"),
            "no room: {page}"
        );
    }

    /// `promtool check metrics` (Debian's `prometheus` package) accepts the page; the end to
    /// end test (tests/metrics.rs) checks a real one too.
    #[test]
    fn promtool_accepts_the_page() {
        use std::io::Write as _;
        let mut child = match std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("promtool (Debian package prometheus) must be installed: {e}"),
        };
        let page = page();
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(page.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}\n{page}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
