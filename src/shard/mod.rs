//! Thread-per-core: shard threads and their runtimes, `SO_REUSEPORT` listeners, cross-shard
//! channels, the shared tunnel directory and the shutdown signal.
//!
//! Everything a shard mutates on the request path is its own (`Rc`, `Cell`, `RefCell`); the
//! only shared, locked structure is the [`directory::Directory`], written when tunnels come and
//! go, read when a request lands on a shard that holds no tunnel for its host.

pub mod directory;
pub mod mesh;
pub mod runtime;
pub mod shutdown;
pub mod tracker;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};

use shutdown::ShutdownSignal;

/// Index of a shard, `0..shards`.
pub type ShardId = usize;

/// Binds `addr` for this shard with `SO_REUSEPORT`, so every shard holds its own accept queue
/// and the kernel spreads connections.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<monoio::net::TcpListener> {
    let opts = monoio::net::ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    monoio::net::TcpListener::bind_with_config(addr, &opts)
}

/// Accepts on `listener` until shutdown, handing each connection to `on_accept`. Accept errors
/// (out of descriptors, aborted handshakes) are logged and briefly backed off, never fatal.
pub async fn accept_loop(
    listener: TcpListener,
    shutdown: &ShutdownSignal,
    what: &str,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                on_accept(stream, peer);
            }
            Err(e) => {
                tracing::warn!("{what} accept: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
