//! What an operator sees of one live tunnel (`GET /tunnels`, `crate::admin`), on either end.
//!
//! A tunnel lives on one shard in `Rc`s nobody else may touch, while the admin endpoint runs on
//! shard 0. So each tunnel end publishes a [`TunnelInfo`] behind an `Arc`: facts fixed at the
//! handshake (ids, shard, peer, TLS, when it opened) and counters that only the owning shard
//! writes, with relaxed atomics, and that the admin endpoint reads at a scrape:
//!
//! - [`Meter`]: bytes of HTTP/2 the tunnel carried each way, counted by [`Metered`] around the
//!   tunnel's connection (after the handshake, below HTTP/2 and above TLS: frames of every
//!   stream, headers, bodies, PINGs and window updates; TLS records and the handshake are not
//!   counted), and the last PING round trip, recorded by `tunnel::keepalive`;
//! - the streams in flight, counted by [`StreamGuard`]s;
//! - whether it drains, and (responder) whether its registry marks it unhealthy ([`Health`]).
//!
//! The infos are listed on a [`TunnelBoard`], one per role and process, whose lock is taken
//! when a tunnel starts or ends and at a scrape, never per request. Nothing here is written
//! per request from another shard (the responder's stream count is the registry's, which a
//! stream handed over to another shard gives back from there).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocol::TunnelIdentity;
use crate::shard::ShardId;

/// A tunnel's traffic, written by its own shard only.
#[derive(Debug, Default)]
pub struct Meter {
    sent: AtomicU64,
    received: AtomicU64,
    /// The last PING round trip in microseconds, plus one (0: no PONG yet).
    rtt_micros: AtomicU64,
}

impl Meter {
    /// Bytes written to the tunnel's connection (above TLS).
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes read from the tunnel's connection (above TLS).
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The last PING round trip; `None` before the first PONG.
    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_micros(n - 1)),
        }
    }

    /// A PONG came back `rtt` after its PING.
    pub fn record_rtt(&self, rtt: Duration) {
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX - 1);
        self.rtt_micros
            .store(micros.saturating_add(1), Ordering::Relaxed);
    }

    /// Single writer: a load and a store, no read-modify-write.
    fn add(counter: &AtomicU64, n: usize) {
        let total = counter.load(Ordering::Relaxed).wrapping_add(n as u64);
        counter.store(total, Ordering::Relaxed);
    }
}

/// Where a dialed tunnel leads (the initiator's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialed {
    /// The `initiator.tunnels` entry's responder cluster.
    pub remote_cluster: String,
    /// The endpoint (`host:port`) as configured; [`TunnelInfo::peer`] is the address it
    /// resolved to.
    pub endpoint: String,
}

/// A tunnel's health as its end judges it, read at a scrape.
pub trait Health: Send + Sync + std::fmt::Debug {
    /// Marked unhealthy (the responder's registry: its streams time out).
    fn is_unhealthy(&self) -> bool;
}

/// One live tunnel, as the admin endpoint lists it.
#[derive(Debug)]
pub struct TunnelInfo {
    /// The tunnel's id in this process (the responder's log field `id`).
    pub id: u64,
    pub shard: ShardId,
    /// The handshake's ids: the initiator's own on a dialed tunnel.
    pub identity: TunnelIdentity,
    /// The other end's address: the initiator's on the responder, the responder's on the
    /// initiator.
    pub peer: SocketAddr,
    pub tls: bool,
    /// The initiator's end: where it leads. `None` on the responder.
    pub dialed: Option<Dialed>,
    /// When HTTP/2 started on it.
    pub opened: SystemTime,
    started: Instant,
    pub meter: Arc<Meter>,
    streams: Arc<AtomicUsize>,
    health: Option<Arc<dyn Health>>,
    draining: AtomicBool,
}

impl TunnelInfo {
    /// A tunnel that has just started HTTP/2. `streams` is its count of streams in flight
    /// (kept by [`StreamGuard`]s); `health`, where the end judges it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        shard: ShardId,
        identity: TunnelIdentity,
        peer: SocketAddr,
        tls: bool,
        dialed: Option<Dialed>,
        meter: Arc<Meter>,
        streams: Arc<AtomicUsize>,
        health: Option<Arc<dyn Health>>,
    ) -> Self {
        Self {
            id,
            shard,
            identity,
            peer,
            tls,
            dialed,
            opened: SystemTime::now(),
            started: Instant::now(),
            meter,
            streams,
            health,
            draining: AtomicBool::new(false),
        }
    }

    /// How long it has been up.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn active_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Counts a stream as in flight until the guard drops.
    pub fn stream_guard(&self) -> StreamGuard {
        StreamGuard::new(&self.streams)
    }

    /// `None` where the end does not judge health (the initiator).
    pub fn unhealthy(&self) -> Option<bool> {
        self.health.as_ref().map(|h| h.is_unhealthy())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The tunnel drains: GOAWAY sent, in-flight streams finishing.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Keeps a stream counted as in flight on its tunnel until dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<AtomicUsize>);

impl StreamGuard {
    /// Counts one more stream on `streams`.
    pub fn new(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        Self(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The live tunnels of one role in this process, by id. Bounded by the tunnels the role may
/// hold (`max_tunnels`; the initiator's configured connections).
#[derive(Debug, Default)]
pub struct TunnelBoard {
    tunnels: Mutex<BTreeMap<u64, Arc<TunnelInfo>>>,
    next_id: AtomicU64,
}

impl TunnelBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<TunnelInfo>>> {
        // A panic while holding the lock leaves a consistent map behind.
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh tunnel id, for a role that has no ids of its own (the initiator).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Lists `info` until the returned guard drops.
    pub fn list(&self, info: Arc<TunnelInfo>) -> Listed<'_> {
        let id = info.id;
        self.lock().insert(id, info);
        Listed { board: self, id }
    }

    /// The live tunnels, by id.
    pub fn snapshot(&self) -> Vec<Arc<TunnelInfo>> {
        self.lock().values().cloned().collect()
    }
}

/// A tunnel's place on its [`TunnelBoard`]; dropping it takes the tunnel off.
#[derive(Debug)]
pub struct Listed<'a> {
    board: &'a TunnelBoard,
    id: u64,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.board.lock().remove(&self.id);
    }
}

/// A tunnel's connection that counts the bytes moving through it into its [`Meter`]. Polled by
/// the tunnel's HTTP/2 connection only, on its own shard.
pub struct Metered<I> {
    inner: I,
    meter: Arc<Meter>,
}

impl<I> Metered<I> {
    pub fn new(inner: I, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            Meter::add(&self.meter.received, buf.filled().len() - before);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            Meter::add(&self.meter.sent, n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            Meter::add(&self.meter.sent, n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn info(id: u64, streams: Arc<AtomicUsize>) -> Arc<TunnelInfo> {
        Arc::new(TunnelInfo::new(
            id,
            0,
            TunnelIdentity {
                node_id: "n".into(),
                cluster_id: "c".into(),
                tenant_id: String::new(),
            },
            "127.0.0.1:1".parse().expect("addr"),
            false,
            None,
            Arc::default(),
            streams,
            None,
        ))
    }

    #[monoio::test]
    async fn metered_counts_both_ways() {
        let (a, mut b) = tokio::io::duplex(1024);
        let meter = Arc::new(Meter::default());
        let mut a = Metered::new(a, meter.clone());
        a.write_all(b"hello").await.expect("write");
        b.write_all(b"world!").await.expect("write back");
        let mut buf = [0u8; 6];
        a.read_exact(&mut buf).await.expect("read");
        assert_eq!((meter.bytes_sent(), meter.bytes_received()), (5, 6));
    }

    #[test]
    fn rtt_is_absent_until_the_first_pong() {
        let meter = Meter::default();
        assert_eq!(meter.rtt(), None);
        meter.record_rtt(Duration::ZERO);
        assert_eq!(
            meter.rtt(),
            Some(Duration::ZERO),
            "a zero round trip is one"
        );
        meter.record_rtt(Duration::from_micros(1500));
        assert_eq!(meter.rtt(), Some(Duration::from_micros(1500)));
    }

    #[test]
    fn the_board_lists_live_tunnels_and_guards_count_streams() {
        let board = TunnelBoard::default();
        let streams = Arc::new(AtomicUsize::new(0));
        let (one, two) = (info(1, streams.clone()), info(2, Arc::default()));
        let listed_two = board.list(two);
        {
            let _listed_one = board.list(one.clone());
            let ids: Vec<u64> = board.snapshot().iter().map(|t| t.id).collect();
            assert_eq!(ids, [1, 2]);
            let guard = StreamGuard::new(&streams);
            assert_eq!(one.active_streams(), 1);
            drop(guard);
            assert_eq!(one.active_streams(), 0);
        }
        assert_eq!(
            board.snapshot().len(),
            1,
            "off the board when its guard drops"
        );
        drop(listed_two);
        assert!(board.snapshot().is_empty());
        assert_eq!((board.next_id(), board.next_id()), (1, 2));
    }
}
