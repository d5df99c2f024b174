//! Thread-per-core: shard threads and their runtimes, the listeners every shard accepts on,
//! connection caps, cross-shard channels, the shared tunnel directory and the shutdown signal.
//!
//! Everything a shard mutates on the request path is its own (`Rc`, `Cell`, `RefCell`); the
//! only shared, locked structure is the [`directory::Directory`], written when tunnels come and
//! go, read when a request lands on a shard that holds no tunnel for its host.
//!
//! # Listeners: a reuseport group that no one else may join
//!
//! Every shard holds its own socket on each listener's port (`SO_REUSEPORT`), so each has its
//! own accept queue and the kernel spreads connections by a hash of their addresses. A port
//! already held by another process must still be an error at start that names it (DESIGN.md
//! §11), and `SO_REUSEPORT` alone does not give that: Linux lets any socket of the same
//! effective user join the group, so a second `rtun run` with the same configuration used to
//! start silently and take a share of the connections without holding any of the tunnels.
//!
//! [`bind_group`] therefore binds a listener's sockets for every shard at once, in the main
//! thread before the shards start, after two checks:
//!
//! 1. **A claim** ([`PortClaim`]): an abstract Unix socket named after the address
//!    (`@rtun-listen:127.0.0.1:9000`), which only one process in the network namespace can hold
//!    and which the kernel releases when the process exits, however it exits. A second rtun for
//!    the same address fails here, even when both start in the same instant.
//! 2. **A probe**: a bind of the address *without* `SO_REUSEPORT` (with `SO_REUSEADDR`, so
//!    `TIME_WAIT` leftovers of an earlier run do not count). The kernel refuses it when any
//!    socket listens on the port — any process, any user, reuseport or not, a wildcard address
//!    covering ours or the reverse. The probe is closed before the group is bound.
//!
//! Either failure is [`ListenError::InUse`], naming the configuration key and the port. What
//! remains open is a foreign program that itself sets `SO_REUSEPORT`, runs as the same user and
//! binds after rtun: it asked to share, and the kernel allows it. (One socket shared by every
//! shard, bound without `SO_REUSEPORT`, would shut that out too, but then whichever shard wakes
//! first takes the connection: bursts of 64 connections split 63/1 between two shards in
//! measurements, where the reuseport hash splits them evenly.) Over a few long-lived
//! connections the hash is uneven too; the egress listener can correct that at accept
//! ([`balance`], `connection_balance: exact`).
//!
//! Port `0` binds the first socket to a free port and the others to that same port; a claim
//! or probe would be meaningless there and is skipped.
//!
//! # Caps
//!
//! [`ConnectionCap`] counts a listener's connections (or handshakes in progress) for the whole
//! process; beyond its limit a new connection is closed at once and counted by the caller.

pub mod balance;
pub mod directory;
pub mod mesh;
pub mod rare;
pub mod reload;
pub mod runtime;
pub mod shutdown;
pub mod timer;
pub mod tracker;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};

use shutdown::ShutdownSignal;

/// Index of a shard, `0..shards`.
pub type ShardId = usize;

/// Accept queue length of every listener socket.
const BACKLOG: i32 = 4096;

/// A listener that could not be bound at start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another process (possibly another rtun) holds the port.
    #[error(
        "{key}: port {port} ({addr}) is already in use by {holder}",
        port = .addr.port()
    )]
    InUse {
        key: &'static str,
        addr: SocketAddr,
        holder: Holder,
    },
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// Who holds a port rtun wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Another rtun process listens on the same address (its [`PortClaim`]).
    Rtun,
    /// Some process listens on the port (the probe bind was refused).
    Other,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Holder::Rtun => "another rtun process (running with this configuration?)",
            Holder::Other => "another process",
        })
    }
}

impl From<ListenError> for io::Error {
    fn from(e: ListenError) -> io::Error {
        let kind = match &e {
            ListenError::InUse { .. } => io::ErrorKind::AddrInUse,
            ListenError::Bind { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// This process's exclusive right to listen on an address among rtun processes: an abstract
/// Unix socket named after it, released by the kernel when the process ends. Keep it for as
/// long as the listener's sockets are open.
#[derive(Debug)]
pub struct PortClaim {
    _socket: UnixListener,
}

impl PortClaim {
    /// The abstract socket name for `addr`.
    fn name(addr: SocketAddr) -> String {
        format!("rtun-listen:{addr}")
    }

    fn take(addr: SocketAddr, key: &'static str) -> Result<PortClaim, ListenError> {
        let claim = std::os::unix::net::SocketAddr::from_abstract_name(Self::name(addr))
            .and_then(|name| UnixListener::bind_addr(&name));
        match claim {
            Ok(socket) => Ok(PortClaim { _socket: socket }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(ListenError::InUse {
                key,
                addr,
                holder: Holder::Rtun,
            }),
            Err(source) => Err(ListenError::Bind { key, addr, source }),
        }
    }
}

/// A listener's sockets, one per shard, and the claim that keeps other rtun processes off its
/// address (`None` for port 0).
#[derive(Debug)]
pub struct ListenerGroup {
    /// One per shard, all on the same address; hand each to its shard ([`shard_listener`]).
    pub sockets: Vec<std::net::TcpListener>,
    /// Held while the sockets may be open; dropping it early lets another rtun in.
    pub claim: Option<PortClaim>,
}

/// Binds `addr` for `shards` shards with `SO_REUSEPORT`, after the claim and the probe of the
/// module docs: fails with [`ListenError::InUse`] when anyone already listens there. `key`
/// names the setting in errors (`responder.egress_listener.listen`).
pub fn bind_group(
    addr: SocketAddr,
    key: &'static str,
    shards: usize,
) -> Result<ListenerGroup, ListenError> {
    let bind_error = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse {
            key,
            addr,
            holder: Holder::Other,
        },
        _ => ListenError::Bind { key, addr, source },
    };
    let claim = match addr.port() {
        0 => None,
        _ => {
            let claim = PortClaim::take(addr, key)?;
            drop(socket(addr, false, false).map_err(bind_error)?);
            Some(claim)
        }
    };
    let mut sockets: Vec<std::net::TcpListener> = Vec::with_capacity(shards);
    let mut at = addr;
    for _ in 0..shards.max(1) {
        let socket = socket(at, true, true).map_err(bind_error)?;
        // Port 0: every shard joins the port the first one got.
        at = socket.local_addr().map_err(bind_error)?;
        sockets.push(socket);
    }
    Ok(ListenerGroup { sockets, claim })
}

/// Binds `addr` once for the whole process, without `SO_REUSEPORT`: the kernel refuses it
/// when anyone listens there. For a listener one shard serves alone (admin).
pub fn bind_listener(
    addr: SocketAddr,
    key: &'static str,
) -> Result<std::net::TcpListener, ListenError> {
    socket(addr, false, true).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse {
            key,
            addr,
            holder: Holder::Other,
        },
        _ => ListenError::Bind { key, addr, source },
    })
}

/// A TCP socket bound to `addr` (`SO_REUSEADDR` always: `TIME_WAIT` leftovers do not block a
/// restart, and on Linux it never lets two listeners share a port), with `SO_REUSEPORT` when
/// `reuse_port`, listening when `listen`. A listening socket has `TCP_NODELAY`, which Linux
/// copies to every connection it accepts: no `setsockopt` per connection.
fn socket(addr: SocketAddr, reuse_port: bool, listen: bool) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    if listen {
        socket.set_nodelay(true)?;
        socket.listen(BACKLOG)?;
    }
    Ok(socket.into())
}

/// Turns one socket of a [`ListenerGroup`] (or [`bind_listener`]'s) into this shard's
/// listener, non-blocking when the shard runs the epoll driver (io_uring accepts on a
/// blocking one). Call it on the shard's own thread.
pub fn shard_listener(own: std::net::TcpListener) -> io::Result<TcpListener> {
    if runtime::on_epoll() {
        own.set_nonblocking(true)?;
    }
    TcpListener::from_std(own)
}

/// Detaches an accepted connection from this shard's runtime so that another shard can adopt
/// it (`TcpStream::from_std` there): a tunnel placed on another shard, or a client connection
/// moved by `connection_balance: exact`. The new descriptor shares the socket, its options and
/// its flags; the original closes when `stream` drops here.
pub fn detach(stream: TcpStream) -> io::Result<std::net::TcpStream> {
    // SAFETY: `stream` owns a valid descriptor for the duration of the call.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { std::net::TcpStream::from_raw_fd(fd) })
}

/// Binds `addr` for this thread with `SO_REUSEPORT`, so several threads each hold an accept
/// queue on one port. Only for the small test service (`rtun service`); rtun's own listeners
/// use [`bind_group`], which refuses a port someone else holds.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<monoio::net::TcpListener> {
    let opts = monoio::net::ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(BACKLOG);
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
            // `TCP_NODELAY` comes from the listener (`socket`).
            Ok((stream, peer)) => on_accept(stream, peer),
            Err(e) => {
                tracing::warn!("{what} accept: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// At most `limit` of something (connections of a listener, handshakes in progress) at once,
/// across every shard of the process: one relaxed atomic, touched when a connection starts
/// and when it ends, never per request.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    held: Arc<AtomicUsize>,
    /// Changed by a configuration reload ([`ConnectionCap::set_limit`]); read per connection.
    limit: Arc<AtomicUsize>,
}

/// One counted connection; dropping it frees the place.
#[derive(Debug)]
pub struct CapPermit {
    held: Arc<AtomicUsize>,
}

impl ConnectionCap {
    pub fn new(limit: u32) -> Self {
        ConnectionCap {
            held: Arc::new(AtomicUsize::new(0)),
            limit: Arc::new(AtomicUsize::new(limit as usize)),
        }
    }

    /// A new limit (a reload): connections held above a lowered one stay open; new ones are
    /// refused until enough have closed.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit as usize, Ordering::Relaxed);
    }

    /// A place, or `None` when `limit` are held: the caller closes the connection and counts
    /// the refusal.
    pub fn try_acquire(&self) -> Option<CapPermit> {
        let before = self.held.fetch_add(1, Ordering::Relaxed);
        if before >= self.limit.load(Ordering::Relaxed) {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(CapPermit {
            held: self.held.clone(),
        })
    }

    /// Places held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn in_use_by(result: Result<ListenerGroup, ListenError>) -> Holder {
        match result {
            Err(ListenError::InUse { holder, .. }) => holder,
            other => panic!("not refused as in use: {other:?}"),
        }
    }

    /// A detached connection is the same connection: what its peer sends arrives on the new
    /// descriptor after the shard's stream is gone, and what is written there reaches the peer.
    #[test]
    fn a_detached_connection_outlives_the_shard_stream() {
        use std::io::{Read, Write};
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime");
        let (mut peer, mut moved) = rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let peer = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            (peer, detach(stream).expect("dup"))
        });
        moved.set_nonblocking(false).expect("blocking");
        peer.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        moved.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
        moved.write_all(b"pong").expect("write back");
        peer.read_exact(&mut got).expect("read back");
        assert_eq!(&got, b"pong");
    }

    /// Accepted connections inherit `TCP_NODELAY` from the listener, which is why the accept
    /// loop does not set it per connection.
    #[test]
    fn accepted_connections_have_nodelay() {
        for listener in [
            bind_group(loopback(0), "test", 1)
                .expect("bind")
                .sockets
                .remove(0),
            bind_listener(loopback(0), "admin.listen").expect("bind"),
        ] {
            let addr = listener.local_addr().expect("addr");
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            assert!(accepted.nodelay().expect("getsockopt"), "{addr}");
        }
    }

    #[test]
    fn a_group_shares_one_port_and_keeps_everyone_else_out() {
        let group = bind_group(loopback(0), "test", 3).expect("bind");
        let port = group.sockets[0].local_addr().expect("addr").port();
        assert!(group.claim.is_none(), "port 0 takes no claim");
        for s in &group.sockets {
            assert_eq!(s.local_addr().expect("addr").port(), port);
        }
        // The group is some other process's now: nothing joins it.
        let err =
            bind_group(loopback(port), "responder.egress_listener.listen", 2).expect_err("in use");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "responder.egress_listener.listen: port {port} (127.0.0.1:{port}) is already in use by another process"
            )),
            "{text}"
        );
        assert!(bind_listener(loopback(port), "admin.listen").is_err());
        drop(group);

        let first = bind_group(loopback(port), "first", 2).expect("free again");
        assert!(first.claim.is_some());
        assert_eq!(
            in_use_by(bind_group(loopback(port), "second", 2)),
            Holder::Rtun
        );
        // A wildcard address over ours is caught by the probe.
        assert_eq!(
            in_use_by(bind_group(
                SocketAddr::from(([0, 0, 0, 0], port)),
                "wildcard",
                1
            )),
            Holder::Other
        );
        drop(first);
        let single = bind_listener(loopback(port), "admin.listen").expect("exclusive");
        assert_eq!(
            in_use_by(bind_group(loopback(port), "behind admin", 1)),
            Holder::Other
        );
        drop(single);
    }

    #[test]
    fn a_cap_refuses_beyond_its_limit_and_frees_on_drop() {
        let cap = ConnectionCap::new(2);
        let a = cap.try_acquire().expect("first");
        let _b = cap.try_acquire().expect("second");
        assert!(cap.try_acquire().is_none());
        assert_eq!(cap.held(), 2);
        drop(a);
        assert!(cap.try_acquire().is_some());
        assert_eq!(cap.held(), 1);
    }

    #[test]
    fn a_lowered_cap_keeps_what_it_holds() {
        let cap = ConnectionCap::new(3);
        let held: Vec<_> = (0..3).filter_map(|_| cap.try_acquire()).collect();
        cap.set_limit(1);
        assert_eq!(cap.held(), 3, "nothing closed");
        assert!(cap.try_acquire().is_none());
        drop(held);
        let one = cap.try_acquire().expect("under the new limit");
        assert!(cap.try_acquire().is_none());
        cap.set_limit(2);
        assert!(cap.try_acquire().is_some());
        drop(one);
    }
}
