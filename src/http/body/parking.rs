//! Connection-level flow control that slow readers cannot hold (docs/ARCHITECTURE.md §7,
//! "Head-of-line isolation").
//!
//! h2 0.4 ties the two levels of receive flow control together: `FlowControl::release_capacity`
//! gives capacity back to the stream *and* the connection, and nothing else gives back the
//! connection capacity that data held by a stream occupies (h2 does so by itself only for data
//! no one can read: a dropped stream, an ignored frame). So a stream whose consumer does not read
//! holds up to its stream window of the connection window, and a handful of them hold all of it:
//! every other stream of the tunnel stalls.
//!
//! What h2 does let us move independently is the connection's *target* window
//! (`Connection::set_target_window_size`, absolute: h2 announces the difference with a
//! connection WINDOW_UPDATE at once). So:
//!
//! - every tunnel stream's body is taken off the connection eagerly into a buffer of its own
//!   (`RecvBody`), and each byte taken is **parked** in the tunnel's [`ParkingLot`];
//! - the tunnel's driver keeps the connection target at `base + min(parked, budget)`
//!   ([`WindowTarget`]): a parked byte no longer occupies the connection window;
//! - the consumer's read releases the byte's capacity with `release_capacity` (stream and
//!   connection) and unparks it (the target falls by as much), so the stream window reopens
//!   only as the consumer reads: the **stream** window (`STREAM_WINDOW`) bounds each stream's
//!   buffer, the **budget** bounds the tunnel's parked bytes.
//!
//! Past the budget, parked bytes would start to occupy the connection window again. Then the
//! stream whose consumer has gone longest without reading — at least [`SHED_AFTER`] — is reset
//! to make room (shed), so no set of slow readers holds the window; streams whose consumers are
//! reading are never shed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

/// How long a consumer must have left its data unread before its stream may be shed to keep
/// the tunnel within its parking budget.
pub const SHED_AFTER: Duration = Duration::from_secs(2);

/// Changes of the parked total smaller than this do not wake the driver on their own; it
/// applies them the next time it runs. Keeps fast streams from waking the connection task at
/// every chunk.
const WAKE_STEP: usize = 128 * 1024;

/// The largest window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// What the lot needs to know about, and do to, a stream with parked bytes. Implemented by the
/// body bridge's per-stream state.
pub(super) trait Parked: Send + Sync {
    /// Since when the consumer has left data unread, if it has any.
    fn stalled_since(&self) -> Option<Instant>;
    /// Bytes parked for this stream.
    fn parked(&self) -> usize;
    /// Resets the stream and drops its parked bytes (the lot needs room).
    fn shed(&self);
}

/// One tunnel's parked bytes: taken off the connection by its streams' bodies and not yet read
/// by their consumers. Cheap to clone (shared); bodies may travel to other shards with it.
#[derive(Clone)]
pub struct ParkingLot {
    lot: Arc<Lot>,
}

struct Lot {
    /// Parked bytes, over all streams.
    parked: AtomicUsize,
    /// At most this many parked bytes are given back to the connection.
    budget: usize,
    /// `min(parked, budget)` as the driver last applied it.
    applied: AtomicUsize,
    /// How long a consumer may leave data unread before its stream is reset.
    stall_timeout: Duration,
    /// The tunnel's driver, to wake when the target should move.
    driver: Mutex<Option<Waker>>,
    /// The streams that may park bytes, for shedding.
    streams: Mutex<Streams>,
}

#[derive(Default)]
struct Streams {
    next: u64,
    by_id: HashMap<u64, Weak<dyn Parked>>,
}

impl std::fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot")
            .field("parked", &self.parked())
            .field("budget", &self.lot.budget)
            .finish()
    }
}

impl ParkingLot {
    /// A lot that gives back at most `budget` parked bytes to the connection, for streams
    /// whose consumers are reset after `stall_timeout` without reading.
    pub fn new(budget: usize, stall_timeout: Duration) -> Self {
        Self {
            lot: Arc::new(Lot {
                parked: AtomicUsize::new(0),
                budget,
                applied: AtomicUsize::new(0),
                stall_timeout,
                driver: Mutex::new(None),
                streams: Mutex::new(Streams::default()),
            }),
        }
    }

    /// Bytes parked now, over all streams.
    pub fn parked(&self) -> usize {
        self.lot.parked.load(Ordering::Relaxed)
    }

    /// How long a consumer may leave data unread before its stream is reset.
    pub fn stall_timeout(&self) -> Duration {
        self.lot.stall_timeout
    }

    /// The driver's side: the connection target for a connection whose window for data in
    /// motion is `base`.
    pub fn window_target(&self, base: u32) -> WindowTarget {
        WindowTarget {
            lot: self.lot.clone(),
            base,
            applied: base,
            shed_timer: None,
        }
    }

    /// Counts `n` bytes a stream took off the connection.
    pub(super) fn park(&self, n: usize) {
        let before = self.lot.parked.fetch_add(n, Ordering::Relaxed);
        self.lot.after_change(before, before + n);
    }

    /// Counts `n` parked bytes its consumer read or that were dropped.
    pub(super) fn unpark(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.lot.parked.fetch_sub(n, Ordering::Relaxed);
        self.lot.after_change(before, before.saturating_sub(n));
    }

    /// Registers a stream for shedding until the returned ticket drops.
    pub(super) fn register(&self, stream: Weak<dyn Parked>) -> Ticket {
        let mut streams = lock(&self.lot.streams);
        let id = streams.next;
        streams.next += 1;
        streams.by_id.insert(id, stream);
        Ticket {
            lot: self.lot.clone(),
            id,
        }
    }
}

/// Keeps a stream registered in its lot.
pub(super) struct Ticket {
    lot: Arc<Lot>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.lot.streams).by_id.remove(&self.id);
    }
}

/// A poisoned lock only means another thread panicked holding it; the data (counters, wakers)
/// stays meaningful.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lot {
    fn after_change(&self, before: usize, after: usize) {
        let target = after.min(self.budget);
        let applied = self.applied.load(Ordering::Relaxed);
        let crossed_budget = before <= self.budget && after > self.budget;
        if target.abs_diff(applied) >= WAKE_STEP || crossed_budget {
            if let Some(waker) = lock(&self.driver).as_ref() {
                waker.wake_by_ref();
            }
        }
    }

    /// Resets the longest-stalled streams (stalled at least [`SHED_AFTER`]) until `excess`
    /// bytes are freed. Returns when the next stream becomes eligible, if one may.
    fn shed(&self, excess: usize, now: Instant) -> Option<Instant> {
        let streams: Vec<Arc<dyn Parked>> = lock(&self.streams)
            .by_id
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut stalled: Vec<(Instant, usize, &Arc<dyn Parked>)> = streams
            .iter()
            .filter_map(|s| Some((s.stalled_since()?, s.parked(), s)))
            .collect();
        stalled.sort_by_key(|(since, _, _)| *since);
        let mut freed = 0;
        for (since, parked, stream) in stalled {
            if freed >= excess {
                return None;
            }
            if now.duration_since(since) < SHED_AFTER {
                return Some(since + SHED_AFTER);
            }
            stream.shed();
            freed += parked;
        }
        None
    }
}

/// The tunnel driver's side of a [`ParkingLot`]: what the connection's target window should be.
pub struct WindowTarget {
    lot: Arc<Lot>,
    base: u32,
    applied: u32,
    shed_timer: Option<Pin<Box<monoio::time::Sleep>>>,
}

impl WindowTarget {
    /// A new target for the connection, when it changed since the last call; the caller hands
    /// it to h2 (`set_target_window_size`) before polling the connection. Registers the task to
    /// be woken when the target should move, and sheds streams when the lot is over budget.
    pub fn poll_target(&mut self, cx: &mut Context<'_>) -> Option<u32> {
        {
            let mut driver = lock(&self.lot.driver);
            if !driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *driver = Some(cx.waker().clone());
            }
        }
        let parked = self.lot.parked.load(Ordering::Relaxed);
        if parked > self.lot.budget {
            self.poll_shed(cx, parked - self.lot.budget);
        }
        let given = parked.min(self.lot.budget);
        self.lot.applied.store(given, Ordering::Relaxed);
        let target = u32::try_from(given)
            .unwrap_or(u32::MAX)
            .saturating_add(self.base)
            .min(MAX_WINDOW);
        (target != self.applied).then(|| {
            self.applied = target;
            target
        })
    }

    /// Over budget: shed now, then again whenever the timer says the next candidate may be
    /// eligible. Scans are at least [`SHED_AFTER`] / 4 apart, even when the lot goes over and
    /// back under its budget at every chunk, so a busy connection does not rescan its streams
    /// at every poll.
    fn poll_shed(&mut self, cx: &mut Context<'_>, excess: usize) {
        loop {
            if let Some(timer) = self.shed_timer.as_mut() {
                if timer.as_mut().poll(cx).is_pending() {
                    return;
                }
            }
            let now = Instant::now();
            let next = self.lot.shed(excess, now).unwrap_or(now + SHED_AFTER);
            let next = next.max(now + SHED_AFTER / 4);
            let deadline = monoio::time::Instant::from_std(next);
            match self.shed_timer.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.shed_timer = Some(Box::pin(monoio::time::sleep_until(deadline))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct Fake {
        since: Option<Instant>,
        parked: usize,
        shed: AtomicBool,
    }

    impl Parked for Fake {
        fn stalled_since(&self) -> Option<Instant> {
            self.since
        }
        fn parked(&self) -> usize {
            self.parked
        }
        fn shed(&self) {
            self.shed.store(true, Ordering::Relaxed);
        }
    }

    fn fake(since: Option<Instant>, parked: usize) -> Arc<Fake> {
        Arc::new(Fake {
            since,
            parked,
            shed: AtomicBool::new(false),
        })
    }

    #[monoio::test(timer_enabled = true)]
    async fn the_target_follows_parked_bytes_up_to_the_budget() {
        let lot = ParkingLot::new(1000, Duration::from_secs(300));
        let mut target = lot.window_target(100);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(target.poll_target(&mut cx), None, "starts at the base");
        lot.park(300);
        assert_eq!(target.poll_target(&mut cx), Some(400));
        assert_eq!(target.poll_target(&mut cx), None, "unchanged");
        lot.unpark(200);
        assert_eq!(target.poll_target(&mut cx), Some(200));
        lot.park(5000);
        assert_eq!(
            target.poll_target(&mut cx),
            Some(1100),
            "capped by the budget"
        );
        lot.unpark(5100);
        assert_eq!(target.poll_target(&mut cx), Some(100));
    }

    #[test]
    fn over_budget_the_longest_stalled_streams_go_first() {
        let lot = ParkingLot::new(1000, Duration::from_secs(300));
        let now = Instant::now();
        let long_ago = now - Duration::from_secs(60);
        let a_while_ago = now - SHED_AFTER - Duration::from_secs(1);
        let oldest = fake(Some(long_ago), 600);
        let older = fake(Some(a_while_ago), 600);
        let reading = fake(Some(now), 600);
        let empty = fake(None, 0);
        let _tickets: Vec<Ticket> = [&oldest, &older, &reading, &empty]
            .into_iter()
            .map(|s| lot.register(Arc::downgrade(s) as Weak<dyn Parked>))
            .collect();

        assert_eq!(lot.lot.shed(500, now), None, "one stream frees enough");
        assert!(oldest.shed.load(Ordering::Relaxed));
        assert!(!older.shed.load(Ordering::Relaxed));

        let next = lot.lot.shed(1500, now);
        assert!(older.shed.load(Ordering::Relaxed));
        assert!(
            !reading.shed.load(Ordering::Relaxed),
            "a stream read a moment ago is never shed"
        );
        assert_eq!(
            next,
            Some(now + SHED_AFTER),
            "eligible later, if still unread"
        );
    }

    #[test]
    fn a_dropped_ticket_unregisters() {
        let lot = ParkingLot::new(0, Duration::from_secs(300));
        let s = fake(Some(Instant::now() - Duration::from_secs(60)), 10);
        drop(lot.register(Arc::downgrade(&s) as Weak<dyn Parked>));
        assert_eq!(lot.lot.shed(10, Instant::now()), None);
        assert!(!s.shed.load(Ordering::Relaxed));
    }
}
