//! A TCP relay for fault tests: it sits on the tunnel path and can blackhole the path (bytes
//! are read and dropped, new connections are accepted and never connected onward, as when a
//! route vanishes) or degrade it (every chunk delayed, some held longer, as a lossy link whose
//! TCP retransmits). `netem` is not available in this sandbox; this is the userspace stand-in.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the relay treats the bytes it carries.
#[derive(Default)]
struct Mode {
    blackhole: AtomicBool,
    /// Added to every chunk, in ms.
    delay_ms: AtomicU64,
    /// One chunk in this many is held `HOLD` longer (0: none).
    hold_one_in: AtomicU64,
}

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
    let m2 = mode.clone();
    std::thread::spawn(move || pump(c2, s2, m2));
    pump(server, client, mode);
}

/// Copies `from` → `to` under the relay's mode until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: Arc<Mode>) {
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
