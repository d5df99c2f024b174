//! A human-readable description of a [`Config`]: what `rtun validate` prints.

use std::fmt::Write;

use std::time::Duration;

use super::duration::format_duration as dur;
use super::schema::{Config, Shards};
use crate::http::path::EscapedSlashes;
use crate::shard::balance::Balance;

impl Config {
    /// Describes, in a few lines, what this configuration would run: shards, roles, listeners,
    /// clusters, tunnels with counts, routes.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        let roles: Vec<&str> = [
            self.initiator.as_ref().map(|_| "initiator"),
            self.responder.as_ref().map(|_| "responder"),
        ]
        .into_iter()
        .flatten()
        .collect();
        writeln!(out, "roles: {}", roles.join(" + "))?;
        match self.shards {
            Shards::Auto => writeln!(
                out,
                "shards: auto ({} on this machine)",
                self.shards.resolve()
            )?,
            Shards::Count(n) => writeln!(out, "shards: {n}")?,
        }
        writeln!(out, "drain timeout: {}", dur(self.drain_timeout))?;
        match &self.admin {
            Some(admin) => {
                writeln!(
                    out,
                    "admin: http://{} ({})",
                    admin.listen,
                    admin.describe_token()
                )?;
                if admin.detailed_stats {
                    writeln!(
                        out,
                        "metrics: detailed (per-host series), at most {} series per family and shard",
                        admin.max_series
                    )?;
                }
            }
            None => writeln!(out, "admin: off")?,
        }
        if let Some(log) = &self.access_log {
            let format = match log.format {
                crate::access_log::Format::Json => "json",
                crate::access_log::Format::Template(_) => "format string",
            };
            writeln!(
                out,
                "access log: {} ({format}, {} lines buffered per shard)",
                log.path, log.buffer_lines
            )?;
        }
        if let Some(node) = &self.node {
            writeln!(
                out,
                "node: {} (cluster {}, tenant {:?})",
                node.id, node.cluster, node.tenant
            )?;
        }
        if !self.clusters.is_empty() {
            writeln!(out, "clusters:")?;
        }
        for (name, c) in &self.clusters {
            let tls = match &c.tls {
                Some(t) if t.cert.is_some() => ", mTLS",
                Some(_) => ", TLS",
                None => "",
            };
            writeln!(
                out,
                "  {name}: {} {} (connect timeout {}, {} idle per shard{tls}{})",
                c.protocol.as_str(),
                c.endpoints.join(", "),
                dur(c.connect_timeout),
                c.max_idle_per_shard,
                match c.response_timeout.is_zero() {
                    true => String::new(),
                    false => format!(", response timeout {}", dur(c.response_timeout)),
                }
            )?;
            let local = self
                .initiator
                .as_ref()
                .is_some_and(|i| i.routes.iter().any(|r| &r.cluster == name));
            if local {
                writeln!(
                    out,
                    "    per shard: {} connections ({} connecting per endpoint), {} requests, \
                     queue {} for {}; eject after {} failures for {} (up to {})",
                    c.max_connections,
                    c.max_connecting,
                    c.max_requests,
                    c.max_pending,
                    dur(c.queue_timeout),
                    c.consecutive_failures,
                    dur(c.ejection_time),
                    dur(c.max_ejection_time)
                )?;
            }
        }
        if let Some(i) = &self.initiator {
            writeln!(out, "initiator:")?;
            let total: u64 = i.tunnels.iter().map(|t| u64::from(t.connections)).sum();
            writeln!(out, "  tunnels ({total} connections):")?;
            for t in &i.tunnels {
                let id = &t.identity;
                writeln!(
                    out,
                    "    {}:{}:{} -> {} x{}{}",
                    id.id,
                    id.cluster,
                    id.tenant,
                    t.remote_cluster,
                    t.connections,
                    if t.connections == 0 {
                        " (dials nothing)"
                    } else {
                        ""
                    }
                )?;
            }
            writeln!(out, "  routes:")?;
            for r in &i.routes {
                let timeout = off_or(r.effective_timeout(i.request_timeout));
                let rewritten = match &r.rewrite.prefix_rewrite {
                    Some(to) => format!(", rewritten to {to}"),
                    None => String::new(),
                };
                writeln!(
                    out,
                    "    {}* -> {}{rewritten} (timeout {timeout})",
                    r.prefix, r.cluster
                )?;
                for line in header_rules(&r.rewrite) {
                    writeln!(out, "      {line}")?;
                }
            }
            writeln!(
                out,
                "  stream idle timeout {}",
                off_or(super::enabled(i.stream_idle_timeout))
            )?;
            writeln!(
                out,
                "  handshake: GET {} ({}{}, timeout {}{}), redial backoff {}..{}, idle timeout {}",
                i.request_path,
                i.handshake.as_str(),
                if i.send_initiation_time {
                    ", initiation time sent"
                } else {
                    ""
                },
                dur(i.handshake_timeout),
                if i.extra_handshake_headers.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = i
                        .extra_handshake_headers
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect();
                    format!(", extra headers: {}", names.join(", "))
                },
                dur(i.initial_reconnect_backoff),
                dur(i.max_reconnect_backoff),
                dur(i.idle_timeout)
            )?;
            writeln!(
                out,
                "  keepalive: ping every {}, dead after {} missed; {} streams per tunnel",
                dur(i.ping_interval),
                i.ping_failure_threshold,
                i.max_concurrent_streams
            )?;
            writeln!(
                out,
                "  credential: {}",
                i.auth
                    .as_ref()
                    .map_or("none".to_owned(), |a| format!("bearer {}", a.describe()))
            )?;
        }
        if let Some(r) = &self.responder {
            let t = &r.tunnel_listener;
            writeln!(out, "responder:")?;
            writeln!(
                out,
                "  tunnel listener: {} ({}), path {}, handshake timeout {}",
                t.listen,
                match &t.tls {
                    Some(tls) if tls.client_ca.is_some() => "mTLS",
                    Some(_) => "TLS",
                    None => "plaintext",
                },
                t.request_path,
                dur(t.handshake_timeout)
            )?;
            writeln!(
                out,
                "    ping every {}, dead after {} missed; max {} tunnels, {} per node, {} streams per tunnel, {} handshakes in progress",
                dur(t.ping_interval),
                t.ping_failure_threshold,
                t.max_tunnels,
                t.max_tunnels_per_node,
                t.max_concurrent_streams,
                t.max_handshakes_in_progress
            )?;
            writeln!(
                out,
                "    unhealthy after {}, probed every {}",
                match t.unhealthy_after_timeouts {
                    0 => "never (off)".to_owned(),
                    n => format!("{n} route timeouts in a row"),
                },
                dur(t.unhealthy_probe_interval)
            )?;
            let e = &r.egress_listener;
            let formats: Vec<&str> = e.host_id_format.iter().map(|f| f.as_str()).collect();
            let prefixes: Vec<String> = e
                .routes
                .iter()
                .map(|r| {
                    let timeout = off_or(r.effective_timeout(e.request_timeout));
                    let rewritten = match &r.rewrite.prefix_rewrite {
                        Some(to) => format!(" -> {to}"),
                        None => String::new(),
                    };
                    format!("{}*{rewritten} (timeout {timeout})", r.prefix)
                })
                .collect();
            writeln!(
                out,
                "  egress listener: {}{}, max {} connections, {}",
                e.listen,
                match &e.tls {
                    Some(tls) if tls.client_ca.is_some() => {
                        " (HTTPS, client certificates required)"
                    }
                    Some(_) => " (HTTPS)",
                    None => "",
                },
                e.max_connections,
                match e.connection_balance {
                    Balance::Kernel => "spread over shards by the kernel",
                    Balance::Exact => "balanced over shards exactly",
                }
            )?;
            writeln!(
                out,
                "    host_id: first non-empty of {}",
                formats.join(", ")
            )?;
            writeln!(out, "    routes: {}", prefixes.join(", "))?;
            for r in &e.routes {
                for line in header_rules(&r.rewrite) {
                    writeln!(out, "      {}*: {line}", r.prefix)?;
                }
            }
            writeln!(
                out,
                "    unknown host: {}; request headers up to {} KiB",
                match e.pending_timeout {
                    Some(p) if !p.is_zero() => format!("wait up to {} for a tunnel", dur(p)),
                    _ => "503 at once".to_owned(),
                },
                e.max_request_headers_kb,
            )?;
            writeln!(
                out,
                "    timeouts: stream idle {}, request head {}, connection idle {}, HTTP/2 \
                 keepalive {}",
                off_or(super::enabled(e.stream_idle_timeout)),
                dur(e.header_read_timeout),
                off_or(super::enabled(e.idle_timeout)),
                match super::enabled(e.http2_keepalive_interval) {
                    Some(i) => format!(
                        "PING every {}, closed after {}",
                        dur(i),
                        dur(e.http2_keepalive_timeout)
                    ),
                    None => "off".to_owned(),
                }
            )?;
            writeln!(
                out,
                "    client x-forwarded-*: {}; x-request-id: {}; escaped slashes in paths: {}",
                match e.xff_num_trusted_hops {
                    0 => "dropped (rtun is the edge)".to_owned(),
                    n => format!("kept ({n} trusted hops)"),
                },
                if e.trust_request_id {
                    "the client's kept"
                } else {
                    "generated"
                },
                match e.path_with_escaped_slashes_action {
                    EscapedSlashes::Reject => "rejected",
                    EscapedSlashes::Keep => "kept",
                }
            )?;
            writeln!(out, "  cleanup every {}", dur(r.cleanup_interval))?;
            let auth = &t.auth;
            writeln!(out, "  security:")?;
            match auth.authenticates() {
                true => writeln!(out, "    authentication: {}", auth.describe())?,
                false => writeln!(
                    out,
                    "    authentication: none (WARNING: anyone who reaches the tunnel listener \
                     can register any node id)"
                )?,
            }
            if let Some(name) = &auth.required_cluster_name {
                writeln!(out, "    required cluster name: {name}")?;
            }
            writeln!(
                out,
                "    TLS: {}",
                match &t.tls {
                    Some(tls) if tls.client_ca.is_some() => "on (client certificates required)",
                    Some(_) => "on",
                    None => "off",
                }
            )?;
            match &e.tenant {
                Some(source) => writeln!(out, "    tenant isolation: on, {}", source.describe())?,
                None => writeln!(
                    out,
                    "    tenant isolation: off (every tenant's nodes and clusters share one \
                     namespace; set egress_listener.tenant)"
                )?,
            }
            if let Some(admin) = &self.admin {
                writeln!(out, "    admin: {}", admin.describe_token())?;
            }
        }
        Ok(())
    }
}

/// A timeout as the summary shows it: its duration, or `off`.
/// A route's header rules, one line per side that has any: `-name` removed, then `+name: value`
/// appended or `=name: value` set.
fn header_rules(rewrite: &super::RouteRewrite) -> Vec<String> {
    let sides = [
        ("request headers", &rewrite.request_headers),
        ("response headers", &rewrite.response_headers),
    ];
    sides
        .into_iter()
        .filter(|(_, rules)| !rules.is_empty())
        .map(|(side, rules)| {
            let removed = rules.remove.iter().map(|name| format!("-{name}"));
            let added = rules.add.iter().map(|h| {
                let op = if h.append { '+' } else { '=' };
                format!(
                    "{op}{}: {}",
                    h.name,
                    String::from_utf8_lossy(h.value.as_bytes())
                )
            });
            let all: Vec<String> = removed.chain(added).collect();
            format!("{side}: {}", all.join(" "))
        })
        .collect()
}

fn off_or(timeout: Option<Duration>) -> String {
    timeout.map_or_else(|| "off".to_owned(), dur)
}
