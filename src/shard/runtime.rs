//! Shard threads: one per core, pinned, each with its own monoio runtime.
//!
//! io_uring is preferred; where it cannot start (old kernel, seccomp) monoio's legacy epoll
//! driver takes over, logged once per process.

use std::cell::Cell;
use std::future::Future;
use std::sync::Once;
use std::thread::JoinHandle;

use monoio::time::TimeDriver;

use super::ShardId;

static FALLBACK_LOGGED: Once = Once::new();

thread_local! {
    /// True on a thread whose runtime is the legacy epoll driver (set by [`block_on`]).
    static ON_EPOLL: Cell<bool> = const { Cell::new(false) };
}

/// True when the calling thread's runtime (started by [`block_on`]) is the epoll driver: a
/// socket handed to it must then be non-blocking (`super::shard_listener`).
pub fn on_epoll() -> bool {
    ON_EPOLL.with(Cell::get)
}

/// io_uring submission queue size per shard.
const URING_ENTRIES: u32 = 1024;

/// How a shard's io_uring instance is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RingSetup {
    /// `IORING_SETUP_COOP_TASKRUN`: completions are run as task work when the shard next enters
    /// the kernel (it does, every loop turn) instead of interrupting it with an inter-processor
    /// interrupt and a forced kernel exit each time a socket becomes ready. Sound because each
    /// ring is submitted to and reaped by its one shard thread. Measured with `bench/ab.sh`
    /// (6 rounds): 0.92× the CPU per request on HTTP/1.1 keep-alive, neutral on h2.
    /// `DEFER_TASKRUN` was measured too and lost on HTTP/1.1: monoio's loop reaps completions
    /// without `GETEVENTS` between task batches, so deferred work waits for the next park.
    CoopTaskrun,
    /// The kernel's defaults (kernels before 5.19).
    Plain,
}

fn build_uring(
    setup: RingSetup,
) -> std::io::Result<
    monoio::FusionRuntime<TimeDriver<monoio::IoUringDriver>, TimeDriver<monoio::LegacyDriver>>,
> {
    let mut urb = io_uring::IoUring::builder();
    if setup == RingSetup::CoopTaskrun {
        urb.setup_coop_taskrun();
    }
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(URING_ENTRIES)
        .uring_builder(urb)
        .enable_timer()
        .build()
}

/// Spawns `count` shard threads. `body(shard)` builds the future each shard runs to completion.
pub fn spawn_shards<F, Fut>(count: usize, body: F) -> std::io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(ShardId) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    (0..count)
        .map(|shard| {
            let body = body.clone();
            let core = (!cores.is_empty()).then(|| cores[shard % cores.len()]);
            std::thread::Builder::new()
                .name(format!("rtun-shard-{shard}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::debug!(shard, "could not pin shard to core {}", core.id);
                        }
                    }
                    block_on(shard, body(shard));
                })
        })
        .collect()
}

/// Environment variable that forces the epoll driver (`RTUN_IO_DRIVER=epoll`), for hosts whose
/// io_uring misbehaves and for testing the fallback path.
pub const DRIVER_ENV: &str = "RTUN_IO_DRIVER";

/// Runs `fut` on a fresh monoio runtime on the current thread: io_uring when it starts, else
/// (or when forced by [`DRIVER_ENV`]) the legacy epoll driver.
pub fn block_on<Fut: Future<Output = ()>>(shard: ShardId, fut: Fut) {
    // A runtime started earlier on this thread left its timer driver behind.
    super::timer::reset_thread();
    if std::env::var(DRIVER_ENV).is_ok_and(|v| v == "epoll") {
        FALLBACK_LOGGED
            .call_once(|| tracing::info!("{DRIVER_ENV}=epoll: shards run on the epoll driver"));
        ON_EPOLL.with(|e| e.set(true));
        return match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
        {
            Ok(mut rt) => rt.block_on(fut),
            Err(e) => tracing::error!(shard, "cannot start a runtime: {e}"),
        };
    }
    // Cooperative task running first; a kernel older than 5.19 refuses the flag (EINVAL), and
    // the ring is then built the plain way.
    let runtime = build_uring(RingSetup::CoopTaskrun).or_else(|e| {
        tracing::debug!(
            shard,
            "io_uring with COOP_TASKRUN: {e}; building a plain ring"
        );
        build_uring(RingSetup::Plain)
    });
    let mut runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(shard, "cannot start a runtime: {e}");
            return;
        }
    };
    if matches!(runtime, monoio::FusionRuntime::Legacy(_)) {
        ON_EPOLL.with(|e| e.set(true));
        FALLBACK_LOGGED.call_once(|| {
            tracing::warn!("io_uring is unavailable here; shards run on the epoll driver");
        });
    }
    runtime.block_on(fut);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ring setups start on this kernel and complete real I/O: a loopback connection
    /// accepted, written and read through io_uring.
    #[test]
    fn each_ring_setup_runs_io() {
        for setup in [RingSetup::CoopTaskrun, RingSetup::Plain] {
            crate::shard::timer::reset_thread();
            let mut rt = build_uring(setup).expect("io_uring starts");
            let monoio::FusionRuntime::Uring(rt) = &mut rt else {
                panic!("{setup:?}: expected io_uring, got the epoll driver");
            };
            let echoed = rt.block_on(async {
                use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
                let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let client = monoio::spawn(async move {
                    let mut c = monoio::net::TcpStream::connect(addr).await.unwrap();
                    let (r, _) = c.write_all(b"ping").await;
                    r.unwrap();
                });
                let (mut s, _) = listener.accept().await.unwrap();
                let (r, buf) = s.read_exact(vec![0u8; 4]).await;
                r.unwrap();
                client.await;
                buf
            });
            assert_eq!(echoed, b"ping", "{setup:?}");
        }
    }
}
