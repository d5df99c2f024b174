//! Process lifecycle: start the shards for whatever roles the configuration holds, wait for
//! SIGINT/SIGTERM, drain, exit.
//!
//! Signals are blocked in every thread and collected by the main thread with `sigwait`, so no
//! shard is ever interrupted; a shard that hits a fatal error (a listener that cannot bind)
//! raises SIGTERM on the process and the exit code says it failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::responder::{self, Responder};
use crate::shard::runtime::spawn_shards;
use crate::shard::shutdown::{Shutdown, ShutdownSignal};
use crate::stats::Stats;

static FATAL: AtomicBool = AtomicBool::new(false);

/// Asks the process to stop because something it cannot run without failed.
pub fn fatal() {
    FATAL.store(true, Ordering::SeqCst);
    // SAFETY: raising a signal on our own process; the main thread collects it in sigwait.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

/// True when a shard called [`fatal`].
pub fn failed() -> bool {
    FATAL.load(Ordering::SeqCst)
}

/// Refuses configurations that ask for what this build cannot do yet, rather than silently
/// running without it (a `tls:` section run as plaintext would be a security hole).
pub fn check_supported(config: &Config) -> Result<(), String> {
    let mut unsupported: Vec<String> = config
        .clusters
        .iter()
        .filter(|(_, c)| c.tls.is_some())
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
    shutdown: Shutdown,
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

/// Waits for SIGINT or SIGTERM (blocked by [`block_signals`]); returns the signal's name.
pub fn wait_for_signal() -> &'static str {
    // SAFETY: sigwait on the set blocked by block_signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig: libc::c_int = 0;
        libc::sigwait(&set, &mut sig);
        if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        }
    }
}

/// Starts the shards. Call [`block_signals`] first if the process should own SIGINT/SIGTERM.
pub fn start(config: Arc<Config>) -> std::io::Result<Running> {
    let shards = config.shards.resolve();
    let stats = Stats::new(shards);
    let (shutdown, signal) = Shutdown::new();
    let (responder, inboxes) =
        match Responder::new(config.clone(), shards, stats.clone(), signal.clone()) {
            Some((r, inboxes)) => (Some(r), inboxes.into_iter().map(Some).collect()),
            None => (None, Vec::new()),
        };
    let inboxes = Arc::new(Mutex::new(inboxes));
    let body = {
        let (config, stats, responder) = (config.clone(), stats.clone(), responder.clone());
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
            )
        }
    };
    let threads = spawn_shards(shards, body)?;
    tracing::info!(shards, "rtun started");
    Ok(Running {
        config,
        shutdown,
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
    crate::initiator::run_shard(config, shard, shards, stats, signal).await;
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
