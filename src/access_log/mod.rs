//! Access logs: one line per request and one per tunnel event, written off the request path
//! (README, "Access logs"; ARCHITECTURE.md §4, "The access log").
//!
//! - `format`: the line format (`json`, or an Envoy-style format string), parsed at load.
//! - `render`: a finished request ([`crate::pipeline::RequestCtx`]) or a [`TunnelEvent`] → one
//!   line, escaped so that nothing a client sends can break it.
//! - here: the sink. Each shard formats its own lines and hands them to its own bounded
//!   channel (`std::sync::mpsc::sync_channel`, `access_log.buffer_lines` lines; lock-free, and
//!   written only by that shard and read only by the writer), so no lock or atomic is shared
//!   across shards on the request path. A full channel drops the line and counts it
//!   (`access_log_dropped`): a slow disk never blocks a shard. One writer thread drains every
//!   channel into the file (or stdout) through a buffer, flushed whenever the channels run
//!   dry; when there is nothing to write it sleeps [`IDLE_WAIT`] (no shard ever wakes it, which
//!   would be a cross-shard write per line). SIGUSR1 ([`AccessLogWriter::reopen`]) makes it
//!   reopen the file at its path (logrotate's rename-then-signal rotation); at shutdown
//!   ([`AccessLogWriter::finish`], after the shards have stopped) it drains every channel and
//!   flushes, so no accepted line is lost.

pub mod format;
pub mod render;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderName;

pub use format::Format;
pub use render::{TunnelEvent, TunnelEventKind};

use crate::config::{AccessLogConfig, AccessLogPath};
use crate::metrics::{inc, Metrics};

/// How long the writer sleeps when every channel is empty: the most a line waits before it is
/// written.
pub const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Lines the writer takes from one channel before it looks at the next, so one busy shard
/// cannot starve the others' channels.
const BATCH: usize = 1024;

/// The process's access log: what each shard needs to write to it. Cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    format: Arc<Format>,
    /// The request headers the format reads, captured in phase 1.
    headers: Arc<[HeaderName]>,
    senders: Arc<[SyncSender<String>]>,
    stats: Metrics,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .field("shards", &self.senders.len())
            .finish()
    }
}

impl AccessLog {
    /// Opens the sink and starts the writer thread; `shards` channels of
    /// `cfg.buffer_lines` lines each.
    pub fn start(
        cfg: &AccessLogConfig,
        shards: usize,
        stats: Metrics,
    ) -> io::Result<(AccessLog, AccessLogWriter)> {
        let out = Output::open(&cfg.path)?;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards.max(1))
            .map(|_| sync_channel(cfg.buffer_lines))
            .unzip();
        let flags = Arc::new(Flags::default());
        let writer = Writer {
            receivers,
            out,
            flags: flags.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("rtun-access-log".into())
            .spawn(move || writer.run())?;
        let log = AccessLog {
            headers: cfg.format.headers().into(),
            format: Arc::new(cfg.format.clone()),
            senders: senders.into(),
            stats,
        };
        Ok((log, AccessLogWriter { thread, flags }))
    }

    /// Shard `shard`'s handle.
    pub fn shard(&self, shard: usize) -> ShardLog {
        ShardLog {
            sender: self.senders[shard % self.senders.len()].clone(),
            log: self.clone(),
            shard,
        }
    }
}

/// One shard's access log: its channel to the writer. Lives on that shard only.
pub struct ShardLog {
    sender: SyncSender<String>,
    log: AccessLog,
    shard: usize,
}

impl ShardLog {
    pub fn format(&self) -> &Format {
        &self.log.format
    }

    /// The request headers the format reads.
    pub fn headers(&self) -> &[HeaderName] {
        &self.log.headers
    }

    /// Queues one line (without its newline); drops and counts it when the channel is full.
    pub fn write(&self, mut line: String) {
        line.push('\n');
        match self.sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                inc(&self.log.stats.shard(self.shard).access_log_dropped)
            }
        }
    }

    /// Writes one tunnel event.
    pub fn tunnel(&self, event: &TunnelEvent<'_>) {
        self.write(event.line(&self.log.format, self.shard, SystemTime::now()));
    }
}

/// What the main thread tells the writer.
#[derive(Default)]
struct Flags {
    reopen: AtomicBool,
    stop: AtomicBool,
}

/// The writer thread, owned by the main thread (`app::Running`).
pub struct AccessLogWriter {
    thread: JoinHandle<()>,
    flags: Arc<Flags>,
}

impl AccessLogWriter {
    /// Reopens the file at its configured path (SIGUSR1): after logrotate renamed it, new
    /// lines go to a new file. Lines already buffered go to the old one.
    pub fn reopen(&self) {
        self.flags.reopen.store(true, Ordering::Release);
        self.thread.thread().unpark();
    }

    /// Drains every channel, flushes and stops the writer; waits at most `timeout`. Call once
    /// the shards have stopped writing.
    pub fn finish(self, timeout: Duration) {
        self.flags.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::warn!("access log: the writer did not finish in time; lines may be lost");
        }
    }
}

/// Where lines go.
enum Output {
    Stdout(BufWriter<io::Stdout>),
    File { path: PathBuf, out: BufWriter<File> },
}

impl Output {
    fn open(path: &AccessLogPath) -> io::Result<Output> {
        Ok(match path {
            AccessLogPath::Stdout => Output::Stdout(BufWriter::new(io::stdout())),
            AccessLogPath::File(path) => Output::File {
                out: BufWriter::new(open_append(path)?),
                path: path.clone(),
            },
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File { out, .. } => out,
        }
    }

    /// Flushes to the old file and opens the path anew.
    fn reopen(&mut self) -> io::Result<()> {
        let Output::File { path, out } = self else {
            return Ok(());
        };
        let _ = out.flush();
        *out = BufWriter::new(open_append(path)?);
        Ok(())
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access_log.path {}: {e}", path.display())))
}

struct Writer {
    receivers: Vec<Receiver<String>>,
    out: Output,
    flags: Arc<Flags>,
}

impl Writer {
    fn run(mut self) {
        let mut failing = false;
        loop {
            // Read before draining: lines sent before the stop are all in the channels.
            let stopping = self.flags.stop.load(Ordering::Acquire);
            let mut wrote = 0;
            for rx in &self.receivers {
                for _ in 0..BATCH {
                    let line = match rx.try_recv() {
                        Ok(line) => line,
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    };
                    wrote += 1;
                    let written = self.out.writer().write_all(line.as_bytes());
                    report(&mut failing, written);
                }
            }
            if wrote > 0 {
                continue;
            }
            let flushed = self.out.writer().flush();
            report(&mut failing, flushed);
            if self.flags.reopen.swap(false, Ordering::AcqRel) {
                match self.out.reopen() {
                    Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                    Err(e) => tracing::error!(
                        "SIGUSR1: cannot reopen the access log: {e}; writing to the old file"
                    ),
                }
            }
            if stopping {
                return;
            }
            std::thread::park_timeout(IDLE_WAIT);
        }
    }
}

/// Logs a write failure once per run of failures.
fn report(failing: &mut bool, result: io::Result<()>) {
    match result {
        Err(e) if !*failing => {
            *failing = true;
            tracing::error!("access log: cannot write: {e}; lines are lost until it works again");
        }
        Err(_) => {}
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!("access log: writing again");
        }
        Ok(()) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: AccessLogPath, buffer_lines: usize) -> AccessLogConfig {
        AccessLogConfig {
            path,
            format: Format::Json,
            buffer_lines,
        }
    }

    #[test]
    fn a_full_buffer_drops_and_counts_without_blocking() {
        // No writer: channels that nobody drains.
        let stats = Metrics::new(2);
        let (senders, _receivers): (Vec<_>, Vec<_>) = (0..2).map(|_| sync_channel(3)).unzip();
        let log = AccessLog {
            format: Arc::new(Format::Json),
            headers: Arc::from([]),
            senders: senders.into(),
            stats: stats.clone(),
        };
        let shard1 = log.shard(1);
        for i in 0..10 {
            shard1.write(format!("line {i}"));
        }
        let dropped = |s: usize| {
            stats
                .shard(s)
                .access_log_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!((dropped(0), dropped(1)), (0, 7), "3 buffered, 7 dropped");
        let totals = stats.totals();
        assert!(totals.contains(&("access_log_dropped".to_string(), 7)));
        // The other shard's buffer is its own.
        log.shard(0).write("other".into());
        assert_eq!(dropped(0), 0);
    }

    #[test]
    fn the_writer_drains_every_shard_and_flushes_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let cfg = config(AccessLogPath::File(path.clone()), 100);
        let stats = Metrics::new(2);
        let (log, writer) = AccessLog::start(&cfg, 2, stats).unwrap();
        for i in 0..50 {
            log.shard(i % 2).write(format!("line {i}"));
        }
        writer.finish(Duration::from_secs(10));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 50);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn reopen_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let cfg = config(AccessLogPath::File(path.clone()), 100);
        let (log, writer) = AccessLog::start(&cfg, 1, Metrics::new(1)).unwrap();
        log.shard(0).write("before".into());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "first line never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::rename(&path, &rotated).unwrap();
        writer.reopen();
        while !path.exists() {
            assert!(Instant::now() < deadline, "never reopened");
            std::thread::sleep(Duration::from_millis(10));
        }
        log.shard(0).write("after".into());
        writer.finish(Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[test]
    fn an_unwritable_path_fails_the_start() {
        let cfg = config(
            AccessLogPath::File("/nonexistent-dir/rtun/access.log".into()),
            10,
        );
        let e = AccessLog::start(&cfg, 1, Metrics::new(1))
            .err()
            .expect("fails");
        assert!(e.to_string().contains("access_log.path"), "{e}");
    }
}
