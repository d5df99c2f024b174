//! A TCP relay for fault tests: it sits on the tunnel path and can blackhole the path (bytes
//! are read and dropped, new connections are accepted and never connected onward, as when a
//! route vanishes) or degrade it (every chunk delayed, some held longer, as a lossy link whose
//! TCP retransmits). `netem` is not available in this sandbox; this is the userspace stand-in.
//! It can also record the bytes of its first connection, to look at what the peers put on the
//! wire.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the relay treats the bytes it carries.
#[derive(Default)]
struct Mode {
    blackhole: AtomicBool,
    /// Added to every chunk, in ms.
    delay_ms: AtomicU64,
    /// One chunk in this many is held `HOLD` longer (0: none).
    hold_one_in: AtomicU64,
    /// Record the next connection's bytes.
    record: AtomicBool,
    /// A connection is being recorded (only one ever is).
    recording: AtomicBool,
    /// The recorded bytes: `[to upstream, from upstream]`, each up to `RECORD_CAP`.
    recorded: [Mutex<Vec<u8>>; 2],
}

/// The most a recording keeps per direction.
const RECORD_CAP: usize = 8 * 1024 * 1024;

/// How long a "lost" chunk is held: about one retransmission timeout.
const HOLD: Duration = Duration::from_millis(200);

/// A relay from a local port to `upstream`; runs until the process ends.
pub struct Relay {
    pub port: u16,
    mode: Arc<Mode>,
}

impl Relay {
    pub fn start(port: u16, upstream: u16) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("relay bind");
        let mode = Arc::new(Mode::default());
        let m = mode.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let m = m.clone();
                std::thread::spawn(move || connect(client, upstream, m));
            }
        });
        Relay { port, mode }
    }

    /// Bytes vanish both ways; new connections hang.
    pub fn blackhole(&self, on: bool) {
        self.mode.blackhole.store(on, Ordering::SeqCst);
    }

    /// Every chunk waits `delay`; one in `hold_one_in` (0: none) waits 200 ms more.
    pub fn degrade(&self, delay: Duration, hold_one_in: u64) {
        self.mode
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.mode.hold_one_in.store(hold_one_in, Ordering::SeqCst);
    }

    /// Records the bytes of the next connection (the first `RECORD_CAP` each way).
    pub fn record(&self) {
        self.mode.record.store(true, Ordering::SeqCst);
    }

    /// What the recorded connection carried so far: (to upstream, from upstream).
    pub fn recorded(&self) -> (Vec<u8>, Vec<u8>) {
        let [up, down] = &self.mode.recorded;
        let copy = |m: &Mutex<Vec<u8>>| m.lock().map(|v| v.clone()).unwrap_or_default();
        (copy(up), copy(down))
    }
}

fn connect(client: TcpStream, upstream: u16, mode: Arc<Mode>) {
    if mode.blackhole.load(Ordering::SeqCst) {
        // Accepted, never answered: hold it until the peer gives up.
        let mut sink = [0u8; 4096];
        let mut client = client;
        while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let record = mode.record.load(Ordering::SeqCst) && !mode.recording.swap(true, Ordering::SeqCst);
    let m2 = mode.clone();
    std::thread::spawn(move || pump(c2, s2, m2, record.then_some(0)));
    pump(server, client, mode, record.then_some(1));
}

/// Copies `from` → `to` under the relay's mode until either side closes, recording into
/// `mode.recorded[k]` when `record` is `Some(k)`.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: Arc<Mode>, record: Option<usize>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut chunk = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mode.blackhole.load(Ordering::SeqCst) {
            continue; // dropped on the floor
        }
        if let Some(Ok(mut kept)) = record.map(|k| mode.recorded[k].lock()) {
            let room = RECORD_CAP.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        chunk += 1;
        let mut wait = Duration::from_millis(mode.delay_ms.load(Ordering::SeqCst));
        let one_in = mode.hold_one_in.load(Ordering::SeqCst);
        if one_in > 0 && chunk.is_multiple_of(one_in) {
            wait += HOLD;
        }
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
