//! The tunnel, as both roles see it: one TCP connection dialed by the initiator that carries the
//! handshake and then HTTP/2, with the responder as the h2 client and the initiator as the h2
//! server (docs/ARCHITECTURE.md, "The life of a tunnel").
//!
//! This module belongs to neither role. It owns what the two ends must agree on: the connection
//! type a tunnel runs on ([`TunnelIo`] over a plaintext or TLS [`TunnelStream`]), the HTTP/2 windows and stream limits, the PING keepalive
//! ([`keepalive`]), why a tunnel ended ([`End`]), and what an operator sees of a live tunnel
//! ([`info`]: ids, peer, age, streams, bytes, PING round trip). The role-specific halves live in
//! `responder::tunnel` (registration, adoption across shards) and `initiator::tunnel_server`
//! (serving streams, redialing).

pub mod info;
pub mod keepalive;
pub mod stream;

use std::time::Duration;

use crate::http::io::Rewind;

pub use keepalive::Keepalive;
pub use stream::TunnelStream;

/// The connection a tunnel runs on, after the handshake: its stream (plaintext or TLS) with any
/// bytes read past the handshake replayed first. Both ends run HTTP/2 over this one type.
pub type TunnelIo = Rewind<TunnelStream>;

/// Per-stream HTTP/2 window on tunnels (and on the h2 hops next to them): large enough to fill
/// loopback, and the most one stream can have in flight — and, on a tunnel, the most the
/// receiving end buffers for one stream whose reader does not read (`http::body::RecvBody`).
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// Per-connection HTTP/2 window on tunnels for data in motion: what the receiving end has not
/// yet taken off the connection into a stream's buffer. Data a stream has taken but its reader
/// has not read is parked and given back to the connection on top of this, up to
/// [`PARKED_BUDGET`] (`http::body::parking`; docs/ARCHITECTURE.md §7, "Limits").
pub const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// The largest HTTP/2 frame payload a tunnel end accepts (SETTINGS_MAX_FRAME_SIZE, RFC 9113
/// §6.5.2; the protocol's default is 16 KiB). h2 holds one DATA payload at a time in its
/// writer and writes it before framing the next, so the frame size is the size of a socket
/// write on a streaming transfer: 16 KiB frames cost one `sendmsg` per 16 KiB. At 256 KiB a
/// 1 GiB upload through both roles took about a third less CPU (bench/README.md, "Finding:
/// 256 KiB frames").
/// Streams still interleave frame by frame; on a 1 Gbit/s path a frame is 2 ms of wire time,
/// less than a filled socket send buffer already puts ahead of a new stream. The receiving end
/// buffers at most one frame per tunnel beyond its windows.
pub const MAX_FRAME: u32 = 256 * 1024;

/// Per tunnel and direction, the most data taken off the connection for streams whose readers
/// have not read it yet (parked) that is given back to the connection window. Past it, the
/// stream whose reader has gone longest without reading (at least
/// `http::body::parking::SHED_AFTER`) is reset, so slow readers never hold
/// [`CONNECTION_WINDOW`]. With it, a tunnel's receive buffers are bounded by
/// `CONNECTION_WINDOW + PARKED_BUDGET` (36 MiB).
pub const PARKED_BUDGET: usize = 32 * 1024 * 1024;

/// How long a reader may leave a tunnel stream's data unread before the stream is reset
/// (until the stream idle timeout is configurable, its default).
pub const STALL_TIMEOUT: Duration = crate::http::body::DEFAULT_STALL_TIMEOUT;

/// The receive side of a tunnel's flow control: what its streams' bodies park, and the
/// connection target its driver applies (`http::body::parking`).
pub fn parking_lot() -> crate::http::body::ParkingLot {
    crate::http::body::ParkingLot::new(PARKED_BUDGET, STALL_TIMEOUT)
}

/// Locally reset streams the responder's h2 client remembers per tunnel, so that frames still
/// arriving for them are ignored rather than treated as errors.
pub const MAX_CONCURRENT_RESET_STREAMS: usize = 1024;

/// How long a request may wait for stream capacity on a chosen tunnel before giving up on it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a tunnel ended. The same four reasons on both ends.
#[derive(Debug)]
pub enum End {
    /// The peer closed the connection (or sent GOAWAY and finished): likely alive, so the
    /// initiator redials at once.
    Closed,
    /// `ping_failure_threshold` PINGs in a row went unanswered.
    Dead,
    /// This side drained the tunnel: it shut down, or (initiator) the tunnel's host left its
    /// endpoint's set.
    Drained,
    /// The connection failed with an HTTP/2 or I/O error.
    Failed(h2::Error),
}

impl End {
    /// Every [`label`](Self::label), in declaration order.
    pub const LABELS: [&'static str; 4] = ["closed", "dead", "drained", "failed"];

    /// A stable label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Dead => "dead",
            End::Drained => "drained",
            End::Failed(_) => "failed",
        }
    }

    /// An orderly close: the peer is likely up, so redial without backoff.
    pub fn redial_now(&self) -> bool {
        matches!(self, End::Closed)
    }
}

impl From<keepalive::KeepaliveEnd> for End {
    fn from(end: keepalive::KeepaliveEnd) -> Self {
        match end {
            keepalive::KeepaliveEnd::Dead => End::Dead,
            keepalive::KeepaliveEnd::Closed => End::Closed,
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed by the peer"),
            End::Dead => f.write_str("dead: PINGs unanswered"),
            End::Drained => f.write_str("drained"),
            End::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_orderly_close_redials_at_once() {
        assert!(End::Closed.redial_now());
        assert!(!End::Dead.redial_now());
        assert!(!End::Drained.redial_now());
        let labels = [End::Closed, End::Dead, End::Drained].map(|e| e.label());
        assert_eq!(labels, ["closed", "dead", "drained"]);
    }
}
