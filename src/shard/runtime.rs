//! Shard threads: one per core, pinned, each with its own monoio runtime.
//!
//! io_uring is preferred; where it cannot start (old kernel, seccomp) monoio's legacy epoll
//! driver takes over, logged once per process.

use std::cell::Cell;
use std::future::Future;
use std::sync::Once;
use std::thread::JoinHandle;

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
    let runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(URING_ENTRIES)
        .enable_timer()
        .build();
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
