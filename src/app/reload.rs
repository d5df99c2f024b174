//! The process side of a configuration reload (SIGHUP, `POST /reload`, `rtun reload`):
//! prepare, then commit (`crate::shard::reload`, DESIGN.md §12).
//!
//! **Prepare** (on the thread that asked, never a shard): read the whole file again
//! (`config::load`: errors are `FILE:LINE:COLUMN`), load every TLS file it names
//! (`check_tls_files`), compare it with the running configuration ([`diff`]) and load the
//! responder's certificates from the paths it gives. Anything that fails refuses the reload:
//! the running configuration stays in force, untouched, and the error is returned (and logged
//! by the caller).
//!
//! **Commit**: the certificates go in force for new handshakes, the process-wide limits are
//! set, and the configuration *as applied* is published to every shard, whose roles swap the
//! snapshots new work reads. Nothing here rebuilds the counters: they live as long as the
//! process.
//!
//! **What needs a restart** ([`Change::restart_required`]): what was bound or keyed at start.
//! Those keys keep their running values in the configuration as applied, and the report names
//! them:
//! - `shards` (threads, and the sockets of each listener per shard);
//! - a role or the admin endpoint added or removed (`responder`, `initiator`, `admin`);
//! - listen addresses: `admin.listen`, `responder.tunnel_listener.listen`,
//!   `responder.egress_listener.listen`;
//! - TLS turned on or off on a responder listener (`responder.*_listener.tls`): a listener
//!   is plaintext or TLS for its life; new certificate and CA files apply live;
//! - the tenancy, `responder.egress_listener.tenant` set or removed: the registry and the
//!   directory key every live tunnel by tenant or not at all (ARCHITECTURE.md §6); changing
//!   one source for another (a fixed tenant, API keys, ...) applies live;
//! - `admin.token*` and `admin.ready_when`: the admin endpoint keeps its start settings.
//!
//! Only one reload runs at a time ([`Reloader::reload`] answers [`ReloadError::Busy`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::{Config, ResponderConfig};
use crate::initiator::InitiatorTls;
use crate::metrics::{inc, Metrics};
use crate::responder::Responder;
use crate::shard::reload::{PublishError, Publisher};
use crate::shard::shutdown::ShutdownSignal;

/// How long the shards get to apply a generation.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// What a new file changes, by configuration key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    /// Keys whose new values are applied.
    pub applied: Vec<String>,
    /// Keys whose new values need a restart; their running values are kept.
    pub restart_required: Vec<String>,
}

/// The configuration to put in force, and what it changes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The new file's configuration with the restart-only keys at their running values.
    pub config: Config,
    pub change: Change,
}

/// A reload that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The generation the shards applied (the start configuration is 0).
    pub generation: u64,
    pub change: Change,
}

/// Why a reload did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate, or a TLS file it names does not load: the running
    /// configuration is kept.
    #[error("{0}")]
    Invalid(String),
    /// Another reload is running.
    #[error("a reload is already running")]
    Busy,
    /// The process is shutting down.
    #[error("the process is draining")]
    Draining,
    /// The process was started from a configuration in memory, not from a file.
    #[error("no configuration file to reload (started without one)")]
    NoFile,
    /// Some shards did not apply the generation in time (those that did keep it).
    #[error("{0}")]
    Incomplete(#[from] PublishError),
}

impl Report {
    /// The one info line a reload logs.
    pub fn summary(&self) -> String {
        let mut out = format!("configuration reloaded (generation {})", self.generation);
        match self.change.applied.as_slice() {
            [] => out.push_str(": no key changed, certificates re-read"),
            keys => out.push_str(&format!(": {}", keys.join(", "))),
        }
        if !self.change.restart_required.is_empty() {
            let keys = self.change.restart_required.join(", ");
            out.push_str(&format!("; restart needed for: {keys}"));
        }
        out
    }

    /// The admin endpoint's answer: `{"generation": N, "applied": [...],
    /// "restart_required": [...]}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "generation": self.generation,
            "applied": self.change.applied,
            "restart_required": self.change.restart_required,
        })
        .to_string()
    }
}

/// Names `prefix.FIELD` for each listed field that differs; the whole `prefix` when the
/// values differ in a field not listed (a key added later still shows up, by its section).
macro_rules! changed_fields {
    ($out:expr, $prefix:expr, $a:expr, $b:expr, [$($field:ident),* $(,)?]) => {{
        let before = $out.len();
        $(
            if $a.$field != $b.$field {
                $out.push(format!("{}.{}", $prefix, stringify!($field)));
            }
        )*
        if $out.len() == before && $a != $b {
            $out.push($prefix.to_string());
        }
    }};
}

/// Compares the running configuration with a new one: what applies, what needs a restart,
/// and the configuration to put in force.
pub fn diff(running: &Config, next: &Config) -> Plan {
    let mut config = next.clone();
    let mut change = Change::default();
    let restart = &mut change.restart_required;

    if running.shards != next.shards {
        restart.push("shards".into());
        config.shards = running.shards;
    }
    match (&running.admin, &next.admin) {
        (Some(a), Some(b)) => {
            let mut keys = Vec::new();
            changed_fields!(keys, "admin", a, b, [listen, token, ready_when]);
            restart.extend(keys);
            config.admin = running.admin.clone();
        }
        (None, None) => {}
        _ => {
            restart.push("admin".into());
            config.admin = running.admin.clone();
        }
    }
    if running.initiator.is_some() != next.initiator.is_some() {
        restart.push("initiator".into());
        config.initiator = running.initiator.clone();
    }
    match (&running.responder, &mut config.responder) {
        (Some(a), Some(b)) => keep_start_only(a, b, restart),
        (None, None) => {}
        (_, kept) => {
            restart.push("responder".into());
            *kept = running.responder.clone();
        }
    }

    // What applies: compared on the configuration as applied, so the restart-only keys kept
    // above do not show up again.
    let applied = &mut change.applied;
    if running.drain_timeout != config.drain_timeout {
        applied.push("drain_timeout".into());
    }
    if running.node != config.node {
        applied.push("node".into());
    }
    let names = running.clusters.keys().chain(config.clusters.keys());
    let mut names: Vec<&String> = names.collect();
    names.sort();
    names.dedup();
    for name in names {
        if running.clusters.get(name) != config.clusters.get(name) {
            applied.push(format!("clusters.{name}"));
        }
    }
    if let (Some(a), Some(b)) = (&running.initiator, &config.initiator) {
        changed_fields!(
            applied,
            "initiator",
            a,
            b,
            [
                tunnels,
                routes,
                request_timeout,
                stream_idle_timeout,
                max_reconnect_backoff,
                initial_reconnect_backoff,
                request_path,
                handshake_timeout,
                handshake,
                send_initiation_time,
                idle_timeout,
                ping_interval,
                ping_failure_threshold,
                max_concurrent_streams,
                extra_handshake_headers,
                auth,
            ]
        );
    }
    if let (Some(a), Some(b)) = (&running.responder, &config.responder) {
        responder_changes(a, b, applied);
    }
    Plan { config, change }
}

/// Restores in `next` the responder keys only a restart changes, naming each.
fn keep_start_only(
    running: &ResponderConfig,
    next: &mut ResponderConfig,
    restart: &mut Vec<String>,
) {
    let (t0, t1) = (&running.tunnel_listener, &mut next.tunnel_listener);
    if t0.listen != t1.listen {
        restart.push("responder.tunnel_listener.listen".into());
        t1.listen = t0.listen;
    }
    if t0.tls.is_some() != t1.tls.is_some() {
        restart.push("responder.tunnel_listener.tls".into());
        t1.tls = t0.tls.clone();
    }
    let (e0, e1) = (&running.egress_listener, &mut next.egress_listener);
    if e0.listen != e1.listen {
        restart.push("responder.egress_listener.listen".into());
        e1.listen = e0.listen;
    }
    if e0.tls.is_some() != e1.tls.is_some() {
        restart.push("responder.egress_listener.tls".into());
        e1.tls = e0.tls.clone();
    }
    if e0.tenant.is_some() != e1.tenant.is_some() {
        restart.push("responder.egress_listener.tenant".into());
        e1.tenant = e0.tenant.clone();
    }
}

fn responder_changes(a: &ResponderConfig, b: &ResponderConfig, out: &mut Vec<String>) {
    let (t0, t1) = (&a.tunnel_listener, &b.tunnel_listener);
    changed_fields!(
        out,
        "responder.tunnel_listener",
        t0,
        t1,
        [
            listen,
            request_path,
            ping_interval,
            ping_failure_threshold,
            handshake_timeout,
            max_tunnels,
            max_tunnels_per_node,
            max_concurrent_streams,
            max_handshakes_in_progress,
            unhealthy_after_timeouts,
            unhealthy_probe_interval,
            tls,
            auth,
        ]
    );
    let (e0, e1) = (&a.egress_listener, &b.egress_listener);
    changed_fields!(
        out,
        "responder.egress_listener",
        e0,
        e1,
        [
            listen,
            host_id_format,
            routes,
            pending_timeout,
            max_request_headers_kb,
            request_timeout,
            stream_idle_timeout,
            header_read_timeout,
            max_connections,
            idle_timeout,
            http2_keepalive_interval,
            http2_keepalive_timeout,
            xff_num_trusted_hops,
            trust_request_id,
            path_with_escaped_slashes_action,
            connection_balance,
            tenant,
            tls,
        ]
    );
    if a.cleanup_interval != b.cleanup_interval {
        out.push("responder.cleanup_interval".into());
    }
}

/// The process's reload: one at a time, from the file the process started with.
pub struct Reloader {
    path: Option<PathBuf>,
    /// The configuration in force; held for the whole prepare and commit, so reloads never
    /// overlap.
    current: Mutex<Arc<Config>>,
    responder: Option<Arc<Responder>>,
    initiator_tls: InitiatorTls,
    publisher: Publisher,
    process: ShutdownSignal,
    /// Counts reloads (`config_reloads`, `config_reloads_refused`) in shard 0's block: reloads
    /// run one at a time, and no shard writes those two counters, so there is one writer.
    stats: Metrics,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        config: Arc<Config>,
        responder: Option<Arc<Responder>>,
        initiator_tls: InitiatorTls,
        publisher: Publisher,
        process: ShutdownSignal,
        stats: Metrics,
    ) -> Self {
        Reloader {
            path,
            current: Mutex::new(config),
            responder,
            initiator_tls,
            publisher,
            process,
            stats,
        }
    }

    /// The configuration in force (the start one until a reload commits).
    pub fn current(&self) -> Arc<Config> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again and applies it: blocks (a plain thread, never a shard) until
    /// every shard has applied it. Refused, with the running configuration kept, when the
    /// file is invalid or another reload runs.
    pub fn reload(&self) -> Result<Report, ReloadError> {
        let mut current = match self.current.try_lock() {
            Ok(current) => current,
            Err(std::sync::TryLockError::WouldBlock) => return Err(ReloadError::Busy),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if self.process.is_triggered() {
            return Err(ReloadError::Draining);
        }
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;

        // Prepare: nothing below changes anything until every step has passed.
        let next = crate::config::load(path).map_err(|e| ReloadError::Invalid(e.to_string()))?;
        super::check_tls_files(&next)
            .map_err(|e| ReloadError::Invalid(format!("{}: {e}", path.display())))?;
        let plan = diff(&current, &next);
        let certificates = match (&self.responder, &plan.config.responder) {
            (Some(r), Some(cfg)) => Some(
                r.prepare_certificates(cfg)
                    .map_err(|e| ReloadError::Invalid(format!("{}: {e}", path.display())))?,
            ),
            _ => None,
        };

        // Commit.
        if let (Some(r), Some(cfg)) = (&self.responder, &plan.config.responder) {
            if let Some(certificates) = certificates {
                r.install_certificates(certificates);
            }
            r.apply_limits(cfg);
        }
        // The initiator's TLS files at their running paths (its applier takes new ones).
        for e in self.initiator_tls.tunnel.reload() {
            tracing::error!("certificate reload: {e}; keeping the loaded one");
        }
        for e in crate::initiator::pool::reload_local_tls(&self.initiator_tls.local) {
            tracing::error!("certificate reload: {e}; keeping the loaded one");
        }
        let config = Arc::new(plan.config);
        *current = config.clone();
        let generation = self.publisher.publish(config, PUBLISH_DEADLINE)?;
        Ok(Report {
            generation,
            change: plan.change,
        })
    }

    /// [`reload`](Self::reload), logged: the summary at info, each restart-only key at warn,
    /// a refusal at error. `origin` says who asked (`SIGHUP`, `admin`).
    pub fn reload_logged(&self, origin: &str) -> Result<Report, ReloadError> {
        let result = self.reload();
        let counters = self.stats.shard(0);
        inc(match &result {
            Ok(_) => &counters.config_reloads,
            Err(_) => &counters.config_reloads_refused,
        });
        match &result {
            Ok(report) => {
                for key in &report.change.restart_required {
                    tracing::warn!(
                        key = %key,
                        "{origin}: `{key}` changed, but only a restart applies it; its running \
                         value is kept"
                    );
                }
                tracing::info!("{origin}: {}", report.summary());
            }
            Err(ReloadError::Invalid(e)) => {
                tracing::error!("{origin}: configuration refused, the running one is kept:\n{e}")
            }
            Err(e) => tracing::error!("{origin}: reload failed: {e}"),
        }
        result
    }
}

/// `rtun reload`: asks the admin endpoint at `admin` to reload (`POST /reload`, with the
/// bearer `token` when given) and returns its status and body. Blocking, with a deadline on
/// the connect and on the answer.
pub fn request(admin: std::net::SocketAddr, token: Option<&str>) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(5))?;
    // The server answers within its own deadline (30 s) plus the time to write it.
    stream.set_read_timeout(Some(Duration::from_secs(40)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /reload HTTP/1.1\r\nhost: {admin}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    // At most 1 MiB: the answer is a short JSON document.
    stream.take(1 << 20).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::other(format!("not an HTTP answer from {admin}"));
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((status, body.trim_end().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const BASE: &str = r#"
shards: 2
admin: { listen: "127.0.0.1:9901" }
responder:
  tunnel_listener:
    listen: "127.0.0.1:7000"
  egress_listener:
    listen: "127.0.0.1:8080"
    routes: [{ prefix: / }]
"#;

    fn plan(before: &str, after: &str) -> Plan {
        let a = parse(before, "before.yaml").expect("before");
        let b = parse(after, "after.yaml").expect("after");
        diff(&a, &b)
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let p = plan(BASE, BASE);
        assert_eq!(p.change, Change::default());
        assert_eq!(p.config, parse(BASE, "x").unwrap());
    }

    #[test]
    fn live_keys_are_applied_and_named() {
        let after = BASE
            .replace("routes: [{ prefix: / }]", "routes: [{ prefix: /api, timeout: 2s }]\n    request_timeout: 3s\n    host_id_format: \"%REQ(x-node)%\"")
            .replace("listen: \"127.0.0.1:7000\"", "listen: \"127.0.0.1:7000\"\n    max_tunnels: 5\n    ping_interval: 9s");
        let p = plan(BASE, &after);
        assert_eq!(
            p.change.applied,
            [
                "responder.tunnel_listener.ping_interval",
                "responder.tunnel_listener.max_tunnels",
                "responder.egress_listener.host_id_format",
                "responder.egress_listener.routes",
                "responder.egress_listener.request_timeout",
            ]
        );
        assert!(p.change.restart_required.is_empty());
        assert_eq!(p.config, parse(&after, "x").unwrap());
    }

    #[test]
    fn listen_addresses_and_shards_need_a_restart_and_keep_their_running_values() {
        let after = BASE
            .replace("shards: 2", "shards: 3")
            .replace("127.0.0.1:9901", "127.0.0.1:9902")
            .replace("127.0.0.1:8080", "127.0.0.1:8081")
            .replace("routes: [{ prefix: / }]", "routes: [{ prefix: /v2 }]");
        let p = plan(BASE, &after);
        assert_eq!(
            p.change.restart_required,
            ["shards", "admin.listen", "responder.egress_listener.listen"]
        );
        assert_eq!(p.change.applied, ["responder.egress_listener.routes"]);
        let before = parse(BASE, "x").unwrap();
        assert_eq!(p.config.shards, before.shards);
        assert_eq!(p.config.admin, before.admin);
        let r = p.config.responder.as_ref().unwrap();
        assert_eq!(r.egress_listener.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(r.egress_listener.routes[0].prefix, "/v2");
    }

    #[test]
    fn roles_added_or_removed_need_a_restart() {
        let with_initiator = format!(
            "{BASE}clusters:\n  app: {{ endpoints: [\"127.0.0.1:9000\"] }}\n  edge: {{ endpoints: [\"127.0.0.1:7000\"] }}\ninitiator:\n  tunnels: [\"rc://node1:c1:t1@edge:1\"]\n  routes: [{{ prefix: /, cluster: app }}]\n"
        );
        let p = plan(BASE, &with_initiator);
        assert_eq!(p.change.restart_required, ["initiator"]);
        assert!(p.config.initiator.is_none(), "the role is not started");
        assert_eq!(p.change.applied, ["clusters.app", "clusters.edge"]);

        let p = plan(&with_initiator, BASE);
        assert_eq!(p.change.restart_required, ["initiator"]);
        assert!(
            p.config.initiator.is_some(),
            "the running role keeps running"
        );

        let initiator_only = with_initiator.replace(
            "responder:\n  tunnel_listener:\n    listen: \"127.0.0.1:7000\"\n  egress_listener:\n    listen: \"127.0.0.1:8080\"\n    routes: [{ prefix: / }]\n",
            "",
        );
        let p = plan(&with_initiator, &initiator_only);
        assert_eq!(p.change.restart_required, ["responder"]);
        assert_eq!(p.config.responder, parse(BASE, "x").unwrap().responder);
    }

    #[test]
    fn tenancy_and_tls_on_or_off_need_a_restart_but_a_new_source_applies() {
        let fixed = BASE.replace(
            "routes: [{ prefix: / }]",
            "routes: [{ prefix: / }]\n    tenant: { fixed: acme }",
        );
        let p = plan(BASE, &fixed);
        assert_eq!(
            p.change.restart_required,
            ["responder.egress_listener.tenant"]
        );
        assert!(p.change.applied.is_empty());
        assert_eq!(p.config.responder.unwrap().egress_listener.tenant, None);

        let other = fixed.replace("fixed: acme", "fixed: other");
        let p = plan(&fixed, &other);
        assert!(p.change.restart_required.is_empty());
        assert_eq!(p.change.applied, ["responder.egress_listener.tenant"]);

        let tls = BASE.replace(
            "listen: \"127.0.0.1:7000\"",
            "listen: \"127.0.0.1:7000\"\n    tls: { cert: /c.pem, key: /k.pem }",
        );
        let p = plan(BASE, &tls);
        assert_eq!(p.change.restart_required, ["responder.tunnel_listener.tls"]);
        assert_eq!(p.config.responder.unwrap().tunnel_listener.tls, None);
        let moved = tls.replace("/c.pem", "/new/c.pem");
        let p = plan(&tls, &moved);
        assert_eq!(p.change.applied, ["responder.tunnel_listener.tls"]);
    }

    #[test]
    fn the_report_says_what_changed() {
        let report = Report {
            generation: 3,
            change: Change {
                applied: vec!["responder.egress_listener.routes".into()],
                restart_required: vec!["responder.egress_listener.listen".into()],
            },
        };
        assert_eq!(
            report.summary(),
            "configuration reloaded (generation 3): responder.egress_listener.routes; restart \
             needed for: responder.egress_listener.listen"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["generation"], 3);
        assert_eq!(json["applied"][0], "responder.egress_listener.routes");
        assert_eq!(
            json["restart_required"][0],
            "responder.egress_listener.listen"
        );
    }
}
