//! Process lifecycle: start the shards for whatever roles the configuration holds, wait for
//! SIGINT/SIGTERM, drain, exit. SIGHUP reloads the configuration file (`reload`: prepare, then
//! commit to every shard; live tunnels and in-flight requests keep theirs). SIGUSR1 reopens the
//! access log file.
//!
//! Every listener (admin, tunnel, egress) is bound here before any shard starts
//! (`crate::shard`, "Listeners"): a port another process holds fails the start with an error
//! naming it. Signals are blocked in every thread and collected by the main thread, so no
//! shard is ever interrupted. A shard that hits a fatal error stops every shard through the
//! shutdown signal (`shard::shutdown`); the main thread notices, and the exit code says it
//! failed. The admin endpoint outlives the drain: it stops once the roles on shard 0 have.

pub mod reload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access_log::{AccessLog, AccessLogWriter};
use crate::admin::AdminState;
use crate::config::Config;
use crate::initiator::tunnel_tls::TunnelTls;
use crate::initiator::tunnels_up::TunnelsUp;
use crate::initiator::InitiatorTls;
use crate::metrics::{Metrics, MetricsSettings};
use crate::responder::{self, Responder};
use crate::shard::bind_listener;
use crate::shard::reload::{Publisher, Receiver as ReloadReceiver, ShardReload};
use crate::shard::runtime::spawn_shards;
use crate::shard::shutdown::{Shutdown, ShutdownSignal};
use crate::tunnel::info::TunnelBoard;
use reload::Reloader;

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
    stats: Metrics,
    shutdown: Shutdown,
    signal: ShutdownSignal,
    threads: Vec<JoinHandle<()>>,
    /// Reloads the configuration (SIGHUP, the admin's `POST /reload`); holds the one in force.
    reloader: Arc<Reloader>,
    /// The access log's writer thread (`access_log:`).
    access_log: Option<AccessLogWriter>,
}

/// The signals the main thread collects: blocked everywhere, awaited by `wait_for_stop`.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1];

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR1 in the calling thread and every thread it spawns
/// afterwards.
pub fn block_signals() {
    // SAFETY: plain sigset manipulation on a zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
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
    /// reloads the configuration on each SIGHUP (an invalid file is logged and refused; the
    /// running configuration stays) and reopens the access log on each SIGUSR1 meanwhile.
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
                for sig in SIGNALS {
                    libc::sigaddset(&mut set, sig);
                }
                libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout)
            };
            match sig {
                libc::SIGINT => return StopReason::Signal("SIGINT"),
                libc::SIGTERM => return StopReason::Signal("SIGTERM"),
                libc::SIGHUP => {
                    let _ = self.reloader.reload_logged("SIGHUP");
                }
                libc::SIGUSR1 => match &self.access_log {
                    Some(writer) => writer.reopen(),
                    None => tracing::info!("SIGUSR1: no access log to reopen"),
                },
                _ => {} // timeout or EINTR: look again
            }
        }
    }

    /// Reads the configuration file again and applies it (`reload`); what SIGHUP does.
    pub fn reload(&self) -> Result<reload::Report, reload::ReloadError> {
        self.reloader.reload_logged("reload")
    }

    /// The counters of every shard.
    pub fn stats(&self) -> &Metrics {
        &self.stats
    }

    /// True when a shard stopped the process with a fatal error.
    pub fn failed(&self) -> bool {
        self.shutdown.failed()
    }
}

/// Binds the listeners and starts the shards. Call [`block_signals`] first if the process
/// should own SIGINT/SIGTERM. Without a file, a reload is refused ([`start_file`]).
pub fn start(config: Arc<Config>) -> std::io::Result<Running> {
    start_with(config, None)
}

/// [`start`] for a configuration loaded from `path`, which SIGHUP and `POST /reload` read
/// again.
pub fn start_file(config: Arc<Config>, path: PathBuf) -> std::io::Result<Running> {
    start_with(config, Some(path))
}

fn start_with(config: Arc<Config>, path: Option<PathBuf>) -> std::io::Result<Running> {
    let shards = config.shards.resolve();
    let stats = Metrics::with_settings(shards, MetricsSettings::from_admin(config.admin.as_ref()));
    let (shutdown, signal) = Shutdown::new();
    let (access_log, access_log_writer) = match &config.access_log {
        Some(cfg) => {
            let (log, writer) = AccessLog::start(cfg, shards, stats.clone())?;
            (Some(log), Some(writer))
        }
        None => (None, None),
    };
    let admin = match &config.admin {
        Some(admin) => Some(bind_listener(admin.listen, "admin.listen")?),
        None => None,
    };
    let admin = Arc::new(Mutex::new(admin));
    let responder = Responder::new(
        &config,
        shards,
        stats.clone(),
        signal.clone(),
        access_log.clone(),
    )?;
    let (responder, inboxes) = match responder {
        Some((r, inboxes)) => (Some(r), inboxes.into_iter().map(Some).collect()),
        None => (None, Vec::new()),
    };
    let tunnels_up = Arc::new(match &config.initiator {
        Some(initiator) => TunnelsUp::new(&initiator.tunnels),
        None => TunnelsUp::default(),
    });
    // The initiator's live tunnels, for `/tunnels` (the responder keeps its own).
    let dialed = Arc::new(TunnelBoard::default());
    let initiator_tls = InitiatorTls {
        tunnel: TunnelTls::load(&config).map_err(std::io::Error::other)?,
        local: Arc::new(crate::initiator::pool::load_local_tls(&config)?),
    };
    let inboxes = Arc::new(Mutex::new(inboxes));
    let (publisher, reload_receivers) = Publisher::new(shards);
    let reloader = Arc::new(Reloader::new(
        path,
        config.clone(),
        responder.clone(),
        initiator_tls.clone(),
        publisher,
        signal.clone(),
        stats.clone(),
    ));
    let reload_receivers = Arc::new(Mutex::new(
        reload_receivers.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    // The admin endpoint stops once every shard's roles have drained.
    let drained = Arc::new(Drained::new(shards));
    let body = {
        let (config, stats, responder) = (config.clone(), stats.clone(), responder.clone());
        let (signal, initiator_tls) = (signal.clone(), initiator_tls.clone());
        let (drained, reloader) = (drained.clone(), reloader.clone());
        move |shard: usize| {
            let inbox = inboxes
                .lock()
                .ok()
                .and_then(|mut v| v.get_mut(shard).and_then(Option::take));
            // Shard 0 serves the admin endpoint (shards may start in any order).
            let reload_receiver = reload_receivers
                .lock()
                .ok()
                .and_then(|mut v| v.get_mut(shard).and_then(Option::take));
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
                    dialed: config.initiator.as_ref().map(|_| dialed.clone()),
                    process: signal.clone(),
                    reloader: Some(reloader.clone()),
                };
                (listener, state)
            });
            let parts = ShardParts {
                config: config.clone(),
                shard,
                shards,
                stats: stats.clone(),
                signal: signal.clone(),
                responder: responder.clone().zip(inbox),
                initiator: InitiatorParts {
                    tls: initiator_tls.clone(),
                    tunnels_up: tunnels_up.clone(),
                    dialed: dialed.clone(),
                    access_log: access_log.clone(),
                },
                admin,
                drained: drained.clone(),
            };
            run_shard(parts, reload_receiver)
        }
    };
    let threads = spawn_shards(shards, body)?;
    tracing::info!(shards, "rtun started");
    Ok(Running {
        stats,
        shutdown,
        signal,
        threads,
        reloader,
        access_log: access_log_writer,
    })
}

/// What one shard starts with.
struct ShardParts {
    config: Arc<Config>,
    shard: usize,
    shards: usize,
    stats: Metrics,
    signal: ShutdownSignal,
    responder: Option<(Arc<Responder>, responder::ShardStart)>,
    initiator: InitiatorParts,
    /// Shard 0's: the admin listener and what the endpoint reads.
    admin: Option<(std::net::TcpListener, AdminState)>,
    drained: Arc<Drained>,
}

/// What every shard's initiator shares with the others.
struct InitiatorParts {
    tls: InitiatorTls,
    tunnels_up: Arc<TunnelsUp>,
    dialed: Arc<TunnelBoard>,
    access_log: Option<AccessLog>,
}

async fn run_shard(parts: ShardParts, reload_receiver: Option<ReloadReceiver>) {
    // Every role on this shard registers its applier before the first reload can arrive.
    let reload = ShardReload::new();
    // The pump runs beside the roles and is dropped here, on the shard, once they have
    // drained: a pump left behind in a finished runtime would be woken from another thread
    // when the publisher goes (dropping its listener inside the channel's notify, a deadlock).
    let pump = reload_receiver.map(|receiver| reload.clone().run(receiver, parts.shard));
    let mut roles = std::pin::pin!(run_roles(parts, reload));
    let mut pump = std::pin::pin!(pump);
    std::future::poll_fn(|cx| {
        if roles.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(());
        }
        if let Some(p) = pump.as_mut().as_pin_mut() {
            if p.poll(cx).is_ready() {
                pump.set(None); // the publisher is gone: no more reloads
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

async fn run_roles(parts: ShardParts, reload: std::rc::Rc<ShardReload>) {
    let ShardParts {
        config,
        shard,
        shards,
        stats,
        signal,
        responder,
        initiator,
        admin,
        drained,
    } = parts;
    // The admin endpoint stops after every shard's roles have drained, not at the shutdown
    // signal, so `/healthz` answers while any shard still drains.
    let admin = admin.map(|(listener, state)| {
        monoio::spawn(crate::admin::run(listener, state, drained.signal()))
    });
    let responder = responder
        .map(|(r, start)| monoio::spawn(responder::run_shard(r, shard, start, reload.clone())));
    crate::initiator::run_shard(
        config,
        shard,
        shards,
        stats,
        signal,
        initiator.tls,
        (initiator.tunnels_up, initiator.dialed, initiator.access_log),
        reload,
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
        let drain_timeout = self.reloader.current().drain_timeout;
        let deadline = Instant::now() + drain_timeout + Duration::from_secs(2);
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
        // The shards wrote their last lines; the writer drains and flushes them.
        if let Some(writer) = self.access_log {
            writer.finish(Duration::from_secs(5));
        }
    }
}
