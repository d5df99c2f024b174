//! glibc's per-thread cache of freed blocks, sized for a proxy's concurrency.
//!
//! glibc keeps at most 7 freed blocks per size class per thread (`tcache_count`); past that a
//! free goes to the shared bins and the next allocations of that size take the slow path
//! (`_int_malloc`). A shard with dozens of requests in flight holds more than 7 blocks of the
//! same small sizes at once (header names and values, ids, `Bytes` headers, futures). With the
//! default, about 9 of the 64 allocations per request (responder and initiator together)
//! missed the cache, and `_int_malloc` was the top user-space symbol after `memmove` in both
//! processes' profiles. With 64 the misses fall to about 3 per request (two are hyper's 8 KiB
//! read buffers, too large for any cache) and CPU per request at saturation by 3–4 %
//! (bench/README.md, "Finding: glibc's per-thread cache"). The cache holds at most 64 blocks of
//! each of glibc's 64 small size classes per thread, about 2.1 MiB; measured peak RSS moved
//! within the runs' spread (bench/results/REPORT-2026-11-24-tcache.md).
//!
//! The count is a glibc tunable: glibc reads it from `GLIBC_TUNABLES` as the process starts
//! and nothing can change it later. So [`ensure`], the first thing `main` does, executes the
//! binary again, once, with the tunable added to the environment, unless the environment
//! names it already: an operator's own setting wins (`glibc.malloc.tcache_count=7` restores
//! glibc's default). `exec` keeps the process id, its open files and its arguments. The new
//! image finds [`REEXECUTED`] set and never executes again, whatever glibc made of the
//! variable (it drops tunables in setuid processes, and ends each tunable it parsed with a NUL
//! in the original environment block, which is what `/proc/PID/environ` shows).

use std::ffi::{OsStr, OsString};

/// The tunable, and the count rtun runs with.
pub const TUNABLE: &str = "glibc.malloc.tcache_count";
pub const COUNT: u32 = 64;

/// Set in the environment of the image [`ensure`] executes: one `exec` at most.
pub const REEXECUTED: &str = "RTUN_GLIBC_TUNABLES_SET";

/// The `GLIBC_TUNABLES` value to run with, given the current one; `None` when it names the
/// cache count already (or is not text, and so is left alone).
pub fn tunables_with_count(current: Option<&OsStr>) -> Option<OsString> {
    let setting = format!("{TUNABLE}={COUNT}");
    let Some(current) = current else {
        return Some(setting.into());
    };
    let current = current.to_str()?;
    let named = current
        .split(':')
        .any(|t| t.split_once('=').is_some_and(|(name, _)| name == TUNABLE));
    match (named, current.is_empty()) {
        (true, _) => None,
        (false, true) => Some(setting.into()),
        (false, false) => Some(format!("{current}:{setting}").into()),
    }
}

/// Re-executes this binary with the cache count in `GLIBC_TUNABLES` when the environment
/// lacks it (see the module docs). Returns only when nothing was to be done or the `exec`
/// failed (the binary replaced on disk, say): the process then runs with glibc's default.
/// Call it before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn ensure() {
    use std::os::unix::process::CommandExt;

    // Under valgrind `/proc/self/exe` is valgrind's tool, and an `exec` would leave it: give
    // the tunable to valgrind's command line instead (bench/instructions.sh does).
    if std::env::var_os(REEXECUTED).is_some() || std::env::var_os("VALGRIND_LAUNCHER").is_some() {
        return;
    }
    let Some(tunables) = tunables_with_count(std::env::var_os("GLIBC_TUNABLES").as_deref()) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Only returns on failure.
    let _ = command
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(REEXECUTED, "1")
        .exec();
}

/// Other C libraries have no such cache to size.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn ensure() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(current: Option<&str>) -> Option<String> {
        tunables_with_count(current.map(OsStr::new)).map(|v| v.into_string().unwrap())
    }

    #[test]
    fn the_count_is_added_unless_the_environment_names_it() {
        let set = "glibc.malloc.tcache_count=64";
        assert_eq!(with(None).as_deref(), Some(set));
        assert_eq!(with(Some("")).as_deref(), Some(set));
        assert_eq!(
            with(Some("glibc.malloc.mxfast=0")).as_deref(),
            Some("glibc.malloc.mxfast=0:glibc.malloc.tcache_count=64")
        );
        assert_eq!(with(Some("glibc.malloc.tcache_count=7")), None);
        assert_eq!(
            with(Some("glibc.malloc.mxfast=0:glibc.malloc.tcache_count=0")),
            None
        );
        // A longer tunable that starts with the same name is another tunable.
        assert_eq!(
            with(Some("glibc.malloc.tcache_count_x=1")).as_deref(),
            Some("glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=64")
        );
    }
}
