//! What a panic does in rtun: it is logged as an error and the process aborts.
//!
//! A shard is one thread that alone owns its share of the listeners, its tunnels, its registry
//! and its connection pools; no other thread can take them over. With Rust's default, a panic
//! on a shard ends only that thread: the process would go on with a shard missing, its tunnels
//! gone without a GOAWAY, requests that other shards hand it over the mesh waiting for their
//! deadline, and nothing in `/ready` or the exit code saying so. So any panic, on any thread,
//! ends the process at once, as a crash of Envoy does: the supervisor starts it again (systemd's
//! `Restart=on-failure` in `contrib/rtun.service`) and the initiators redial.
//!
//! The release profile compiles with `panic = "abort"` (no unwinding to run, and no landing pads
//! on the request path); the hook installed here aborts after logging in every build, so debug
//! builds and the end-to-end tests behave as a release does. The log line goes through
//! `tracing` (text or JSON, as configured) when a subscriber is installed, else to stderr.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::panic::PanicHookInfo;

/// Installs the hook: every panic is logged (thread, location, message and, with
/// `RUST_BACKTRACE=1`, the backtrace) and then aborts the process. Called first in `main`.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        report(info);
        std::process::abort();
    }));
}

fn report(info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_else(|| "unknown".into());
    let message = message(info);
    let backtrace = Backtrace::capture();
    let backtrace = match backtrace.status() {
        BacktraceStatus::Captured => format!("\n{backtrace}"),
        _ => String::new(),
    };
    if tracing::dispatcher::has_been_set() {
        tracing::error!(
            thread,
            location,
            "panic: {message}; the process aborts (a shard's state cannot be taken over){backtrace}"
        );
    } else {
        eprintln!("rtun: panic on thread {thread} at {location}: {message}; the process aborts{backtrace}");
    }
}

/// The panic's message: `panic!` with a literal or with formatting, else a placeholder.
fn message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".into()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Set in the child process that [`a_panic_on_any_thread_aborts_the_process`] starts.
    const CHILD: &str = "RTUN_ABORT_ON_PANIC_CHILD";

    /// In the child: installs the hook (with a text subscriber, as `main` does) and panics on
    /// a thread named as a shard is. The test harness catches panics of its own test threads,
    /// so only a hook that aborts stops this process before `exit(0)`.
    fn child() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
        super::install();
        let shard = std::thread::Builder::new()
            .name("rtun-shard-7".into())
            .spawn(|| {
                let code = 42;
                panic!("an invariant broke: {code}");
            })
            .expect("spawn");
        let _ = shard.join();
        eprintln!("the process survived the panic");
        std::process::exit(0);
    }

    #[test]
    fn a_panic_on_any_thread_aborts_the_process() {
        if std::env::var_os(CHILD).is_some() {
            child();
        }
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "abort_on_panic::tests::a_panic_on_any_thread_aborts_the_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run the test binary again");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "the child should abort: {:?}\n{stderr}",
            out.status
        );
        assert!(!stderr.contains("survived"), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("panic: an invariant broke: 42"))
            .unwrap_or_else(|| panic!("no error line for the panic in:\n{stderr}"));
        assert!(line.contains("thread=\"rtun-shard-7\""), "{line}");
        assert!(line.contains("src/abort_on_panic.rs:"), "{line}");
        assert!(line.contains("the process aborts"), "{line}");
    }
}
