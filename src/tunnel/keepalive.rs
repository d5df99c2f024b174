//! HTTP/2 PING keepalive, shared by both ends of a tunnel.
//!
//! One PING is outstanding at a time (h2 allows no more for user pings). Each `interval` that
//! passes without its PONG is a miss; `threshold` consecutive misses declare the peer dead. After
//! a PONG the next PING waits `interval` plus 0–15 % jitter, so thousands of tunnels opened
//! together do not ping in lockstep. Each PONG's round trip (from its PING, misses included) is
//! recorded in the tunnel's [`Meter`] for `/tunnels`.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use h2::{Ping, PingPong};

use super::info::Meter;

/// A tunnel end's keepalive settings; both roles configure theirs with the same two keys,
/// `ping_interval` and `ping_failure_threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between PINGs (plus jitter), and how long each PONG may take.
    pub interval: Duration,
    /// Consecutive missed PONGs that declare the peer dead (at least 1).
    pub failure_threshold: u32,
}

/// How a keepalive watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum KeepaliveEnd {
    /// `threshold` intervals passed without a PONG.
    Dead,
    /// The connection is gone (PINGs can no longer be sent).
    Closed,
}

/// Adds 0–15 % jitter to `interval`.
pub fn jittered(interval: Duration) -> Duration {
    interval + interval.mul_f64(fastrand::f64() * 0.15)
}

/// Pings until the peer stops answering, recording each round trip in `meter`. The connection
/// must be polled concurrently.
pub async fn watch(
    mut ping_pong: PingPong,
    settings: Keepalive,
    meter: Arc<Meter>,
) -> KeepaliveEnd {
    let Keepalive {
        interval,
        failure_threshold,
    } = settings;
    let threshold = failure_threshold.max(1);
    loop {
        monoio::time::sleep(jittered(interval)).await;
        if ping_pong.send_ping(Ping::opaque()).is_err() {
            return KeepaliveEnd::Closed;
        }
        let sent = Instant::now();
        let mut misses = 0;
        loop {
            match monoio::time::timeout(interval, poll_fn(|cx| ping_pong.poll_pong(cx))).await {
                Ok(Ok(_pong)) => {
                    meter.record_rtt(sent.elapsed());
                    break;
                }
                Ok(Err(_)) => return KeepaliveEnd::Closed,
                Err(_elapsed) => {
                    misses += 1;
                    if misses >= threshold {
                        return KeepaliveEnd::Dead;
                    }
                }
            }
        }
    }
}
