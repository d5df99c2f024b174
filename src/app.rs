//! Process lifecycle: start the shards for whatever roles the configuration holds, wait for
//! SIGINT/SIGTERM, drain, exit. SIGHUP reloads certificates (new TLS handshakes use the new
//! files; live tunnels keep their sessions).
//!
//! Every listener (admin, tunnel, egress) is bound here before any shard starts
//! (`crate::shard`, "Listeners"): a port another process holds fails the start with an error
//! naming it. Signals are blocked in every thread and collected by the main thread, so no
//! shard is ever interrupted. A shard that hits a fatal error stops every shard through the
//! shutdown signal (`shard::shutdown`); the main thread notices, and the exit code says it
//! failed. The admin endpoint outlives the drain: it stops once the roles on shard 0 have.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admin::AdminState;
use crate::config::Config;
use crate::initiator::tunnel_tls::TunnelTls;
use crate::initiator::tunnels_up::TunnelsUp;
use crate::initiator::InitiatorTls;
use crate::responder::{self, Responder};
use crate::shard::bind_listener;
use crate::shard::runtime::spawn_shards;
use crate::shard::shutdown::{Shutdown, ShutdownSignal};
use crate::stats::Stats;

/// Loads every certificate, key and CA file the configuration names, as `rtun run` will, so
/// that `rtun validate` reports a missing or broken file (with the key that names it).
pub fn check_tls_files(config: &Config) -> std::io::Result<()> {
    if let Some(r) = &config.responder {
        if let Some(tls) = &r.tunnel_listener.tls {
            crate::tls::ServerTls::load(tls, &[]).map_err(|e| {
                std::io::Error::other(format!("responder.tunnel_listener.tls: {e}"))
            })?;
        }
        crate::responder::egress::tls::load(&r.egress_listener)?;
    }
    TunnelTls::load(config).map_err(std::io::Error::other)?;
    crate::initiator::pool::load_local_tls(config)?;
    Ok(())
}

/// A running rtun: its shards and how to stop them.
pub struct Running {
    config: Arc<Config>,
    responder: Option<Arc<Responder>>,
    initiator_tls: InitiatorTls,
    stats: Stats,
    shutdown: Shutdown,
    signal: ShutdownSignal,
    threads: Vec<JoinHandle<()>>,
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread it spawns
/// afterwards.
pub fn block_signals() {
    // SAFETY: plain sigset manipulation on a zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
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
    /// Waits for SIGINT or SIGTERM (blocked by [`block_signals`]) or for a shard's fatal error;
    /// reloads certificates on each SIGHUP meanwhile.
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
                libc::sigaddset(&mut set, libc::SIGHUP);
                libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout)
            };
            match sig {
                libc::SIGINT => return StopReason::Signal("SIGINT"),
                libc::SIGTERM => return StopReason::Signal("SIGTERM"),
                libc::SIGHUP => self.reload_certificates(),
                _ => {} // timeout or EINTR: look again
            }
        }
    }

    /// Re-reads every certificate, key and CA file; a file that does not load is reported and
    /// its old version kept.
    pub fn reload_certificates(&self) {
        let mut failed = 0;
        for e in self.responder.iter().flat_map(|r| r.reload_certificates()) {
            tracing::error!("certificate reload: {e}; keeping the loaded one");
            failed += 1;
        }
        for e in self.initiator_tls.tunnel.reload() {
            tracing::error!("certificate reload: {e}; keeping the loaded one");
            failed += 1;
        }
        for e in crate::initiator::pool::reload_local_tls(&self.initiator_tls.local) {
            tracing::error!("certificate reload: {e}; keeping the loaded one");
            failed += 1;
        }
        match failed {
            0 => tracing::info!("SIGHUP: certificates reloaded"),
            n => tracing::warn!(failed = n, "SIGHUP: some certificates were not reloaded"),
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

/// Binds the listeners and starts the shards. Call [`block_signals`] first if the process
/// should own SIGINT/SIGTERM.
pub fn start(config: Arc<Config>) -> std::io::Result<Running> {
    let shards = config.shards.resolve();
    let stats = Stats::new(shards);
    let (shutdown, signal) = Shutdown::new();
    let admin = match &config.admin {
        Some(admin) => Some(bind_listener(admin.listen, "admin.listen")?),
        None => None,
    };
    let admin = Arc::new(Mutex::new(admin));
    let responder = Responder::new(&config, shards, stats.clone(), signal.clone())?;
    let (responder, inboxes) = match responder {
        Some((r, inboxes)) => (Some(r), inboxes.into_iter().map(Some).collect()),
        None => (None, Vec::new()),
    };
    let tunnels_up = Arc::new(match &config.initiator {
        Some(initiator) => TunnelsUp::new(&initiator.tunnels),
        None => TunnelsUp::default(),
    });
    let initiator_tls = InitiatorTls {
        tunnel: TunnelTls::load(&config).map_err(std::io::Error::other)?,
        local: Arc::new(crate::initiator::pool::load_local_tls(&config)?),
    };
    let inboxes = Arc::new(Mutex::new(inboxes));
    // The admin endpoint stops once every shard's roles have drained.
    let drained = Arc::new(Drained::new(shards));
    let body = {
        let (config, stats, responder) = (config.clone(), stats.clone(), responder.clone());
        let (signal, initiator_tls) = (signal.clone(), initiator_tls.clone());
        let drained = drained.clone();
        move |shard: usize| {
            let inbox = inboxes
                .lock()
                .ok()
                .and_then(|mut v| v.get_mut(shard).and_then(Option::take));
            // Shard 0 serves the admin endpoint (shards may start in any order).
            let admin = match shard {
                0 => admin.lock().ok().and_then(|mut a| a.take()),
                _ => None,
            };
            let admin = admin.zip(config.admin.clone()).map(|(listener, cfg)| {
                let state = AdminState {
                    cfg,
                    stats: stats.clone(),
                    responder: responder.clone(),
                    tunnels_up: config.initiator.as_ref().map(|_| tunnels_up.clone()),
                    process: signal.clone(),
                };
                (listener, state)
            });
            run_shard(
                config.clone(),
                shard,
                shards,
                stats.clone(),
                signal.clone(),
                responder.clone().zip(inbox),
                (initiator_tls.clone(), tunnels_up.clone()),
                admin,
                drained.clone(),
            )
        }
    };
    let threads = spawn_shards(shards, body)?;
    tracing::info!(shards, "rtun started");
    Ok(Running {
        config,
        responder,
        initiator_tls,
        stats,
        shutdown,
        signal,
        threads,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    config: Arc<Config>,
    shard: usize,
    shards: usize,
    stats: Stats,
    signal: ShutdownSignal,
    responder: Option<(Arc<Responder>, responder::ShardStart)>,
    (initiator_tls, tunnels_up): (InitiatorTls, Arc<TunnelsUp>),
    admin: Option<(std::net::TcpListener, AdminState)>,
    drained: Arc<Drained>,
) {
    // The admin endpoint stops after every shard's roles have drained, not at the shutdown
    // signal, so `/healthz` answers while any shard still drains.
    let admin = admin.map(|(listener, state)| {
        monoio::spawn(crate::admin::run(listener, state, drained.signal()))
    });
    let responder =
        responder.map(|(r, start)| monoio::spawn(responder::run_shard(r, shard, start)));
    crate::initiator::run_shard(
        config,
        shard,
        shards,
        stats,
        signal,
        initiator_tls,
        tunnels_up,
    )
    .await;
    if let Some(r) = responder {
        r.await;
    }
    drained.shard_done();
    if let Some(a) = admin {
        a.await;
    }
}

/// Fires once every shard has drained its roles.
struct Drained {
    left: std::sync::atomic::AtomicUsize,
    stop: Shutdown,
    signal: ShutdownSignal,
}

impl Drained {
    fn new(shards: usize) -> Self {
        let (stop, signal) = Shutdown::new();
        Self {
            left: std::sync::atomic::AtomicUsize::new(shards),
            stop,
            signal,
        }
    }

    fn signal(&self) -> ShutdownSignal {
        self.signal.clone()
    }

    fn shard_done(&self) {
        use std::sync::atomic::Ordering;
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stop.trigger();
        }
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
