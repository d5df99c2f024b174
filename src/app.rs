//! Process lifecycle: start the shards for whatever roles the configuration holds, wait for
//! SIGINT/SIGTERM, drain, exit.
//!
//! Signals are blocked in every thread and collected by the main thread, so no shard is ever
//! interrupted. A shard that hits a fatal error (a listener that cannot bind) stops every shard
//! through the shutdown signal (`shard::shutdown`); the main thread notices, and the exit code
//! says it failed.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::responder::{self, Responder};
use crate::shard::runtime::spawn_shards;
use crate::shard::shutdown::{Shutdown, ShutdownSignal};
use crate::stats::Stats;

/// Refuses configurations that ask for what this build cannot do yet, rather than silently
/// running without it (a `tls:` section run as plaintext would be a security hole).
/// Supported: `responder.egress_listener.tls`, and `tls` on local clusters (those only
/// `initiator.routes` name). Refused: TLS on the tunnels, both ends.
pub fn check_supported(config: &Config) -> Result<(), String> {
    // Clusters the initiator dials tunnels to.
    let tunnel_clusters: std::collections::BTreeSet<&str> = config
        .initiator
        .iter()
        .flat_map(|i| &i.tunnels)
        .map(|t| t.remote_cluster.as_str())
        .collect();
    let mut unsupported: Vec<String> = config
        .clusters
        .iter()
        .filter(|(name, c)| c.tls.is_some() && tunnel_clusters.contains(name.as_str()))
        .map(|(name, _)| format!("clusters.{name}.tls"))
        .collect();
    if config
        .responder
        .as_ref()
        .is_some_and(|r| r.tunnel_listener.tls.is_some())
    {
        unsupported.push("responder.tunnel_listener.tls".into());
    }
    match unsupported.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "TLS is not supported by this build yet; remove {} to run in plaintext",
            unsupported.join(", ")
        )),
    }
}

/// A running rtun: its shards and how to stop them.
pub struct Running {
    config: Arc<Config>,
    stats: Stats,
    shutdown: Shutdown,
    signal: ShutdownSignal,
    threads: Vec<JoinHandle<()>>,
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it spawns afterwards.
pub fn block_signals() {
    // SAFETY: plain sigset manipulation on a zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Why the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(&'static str),
    /// A shard hit a fatal error and has already triggered the shutdown.
    Fatal,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Signal(name) => f.write_str(name),
            StopReason::Fatal => f.write_str("fatal error"),
        }
    }
}

/// How often the main thread looks at the shutdown state between signals.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

impl Running {
    /// Waits for SIGINT or SIGTERM (blocked by [`block_signals`]) or for a shard's fatal error.
    pub fn wait_for_stop(&self) -> StopReason {
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: SIGNAL_POLL.as_nanos() as libc::c_long,
        };
        loop {
            if self.signal.is_triggered() {
                return StopReason::Fatal;
            }
            // SAFETY: sigtimedwait on the set blocked by block_signals, with a valid timeout.
            let sig = unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGINT);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout)
            };
            match sig {
                libc::SIGINT => return StopReason::Signal("SIGINT"),
                libc::SIGTERM => return StopReason::Signal("SIGTERM"),
                _ => {} // timeout or EINTR: look again
            }
        }
    }

    /// The counters of every shard.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True when a shard stopped the process with a fatal error.
    pub fn failed(&self) -> bool {
        self.shutdown.failed()
    }
}

/// Starts the shards. Call [`block_signals`] first if the process should own SIGINT/SIGTERM.
pub fn start(config: Arc<Config>) -> std::io::Result<Running> {
    let shards = config.shards.resolve();
    let stats = Stats::new(shards);
    let (shutdown, signal) = Shutdown::new();
    let (responder, inboxes) = match Responder::new(&config, shards, stats.clone(), signal.clone())?
    {
        Some((r, inboxes)) => (Some(r), inboxes.into_iter().map(Some).collect()),
        None => (None, Vec::new()),
    };
    let local_tls = Arc::new(crate::initiator::pool::load_local_tls(&config)?);
    let inboxes = Arc::new(Mutex::new(inboxes));
    let body = {
        let (config, stats, responder) = (config.clone(), stats.clone(), responder.clone());
        let signal = signal.clone();
        move |shard: usize| {
            let inbox = inboxes
                .lock()
                .ok()
                .and_then(|mut v| v.get_mut(shard).and_then(Option::take));
            run_shard(
                config.clone(),
                shard,
                shards,
                stats.clone(),
                signal.clone(),
                responder.clone().zip(inbox),
                local_tls.clone(),
            )
        }
    };
    let threads = spawn_shards(shards, body)?;
    tracing::info!(shards, "rtun started");
    Ok(Running {
        config,
        stats,
        shutdown,
        signal,
        threads,
    })
}

async fn run_shard(
    config: Arc<Config>,
    shard: usize,
    shards: usize,
    stats: Stats,
    signal: ShutdownSignal,
    responder: Option<(
        Arc<Responder>,
        crate::shard::mesh::Inbox<responder::ShardMsg>,
    )>,
    local_tls: Arc<crate::initiator::pool::LocalTls>,
) {
    let admin = (shard == 0)
        .then(|| config.admin.clone())
        .flatten()
        .map(|admin| {
            monoio::spawn(crate::admin::run(
                admin,
                stats.clone(),
                responder.as_ref().map(|r| r.0.clone()),
                signal.clone(),
            ))
        });
    let responder =
        responder.map(|(r, inbox)| monoio::spawn(responder::run_shard(r, shard, inbox)));
    crate::initiator::run_shard(config, shard, shards, stats, signal, local_tls).await;
    if let Some(r) = responder {
        r.await;
    }
    if let Some(a) = admin {
        a.await;
    }
}

impl Running {
    /// Triggers the drain and waits for the shards (at most the drain timeout plus a margin).
    pub fn stop(self) {
        self.shutdown.trigger();
        let deadline = Instant::now() + self.config.drain_timeout + Duration::from_secs(2);
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("a shard did not finish draining in time");
            }
        }
    }
}
