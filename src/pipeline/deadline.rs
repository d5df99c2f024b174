//! A request's deadlines: the route timeout and the stream idle timeout (ARCHITECTURE.md §7).
//!
//! Both are measured on a [`StreamClock`] the request's bodies share with its context:
//! - the **route timeout** runs from the end of the request (its body's last byte, or the head
//!   for a request without a body, as Envoy's route `timeout`) to the response head;
//! - the **stream idle timeout** runs from the last body byte that moved, in either direction
//!   (Envoy's `stream_idle_timeout`), for the whole life of the request.
//!
//! Before the response head, the driver races the upstream trip against [`Deadlines::bound`]:
//! a route timeout is a [`ProxyError::Timeout`] (504), an idle timeout a
//! [`ProxyError::StreamIdleTimeout`] (408, as Envoy). After it, the response body
//! (`pipeline::Logged`) watches the idle timeout itself and ends with an error when it fires:
//! hyper then resets the client's stream (HTTP/2) or closes its connection (HTTP/1.1), and the
//! initiator's pump resets the tunnel stream.
//!
//! The clock is a few atomics behind an `Arc`: the request body may be read on another shard
//! (a request handed over to a tunnel there). Times are milliseconds since the clock started;
//! a timer is armed only while something waits, and re-armed only when it fires.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::ProxyError;
use crate::shard::timer::Timer;

/// `request_end` before the request has ended.
const NOT_YET: u64 = u64::MAX;

/// When a request's body bytes last moved and when its request ended; shared by its bodies
/// and its context. The default clock (a request that never went upstream) is inert.
#[derive(Debug, Clone, Default)]
pub struct StreamClock(Option<Arc<Clock>>);

#[derive(Debug)]
struct Clock {
    start: Instant,
    /// The stream idle timeout in milliseconds, 0 when off.
    idle_ms: u64,
    /// Milliseconds since `start` when body bytes last moved (or the clock started).
    last_activity: AtomicU64,
    /// Milliseconds since `start` when the request ended, [`NOT_YET`] before.
    request_end: AtomicU64,
    /// The idle timeout that fired, in milliseconds; 0 while none has.
    idle_fired: AtomicU64,
}

impl StreamClock {
    /// Starts the clock of a request going upstream (once: later calls return the same clock).
    /// `idle`: the stream idle timeout (`None`: off); `request_ended`: the request has no body.
    pub fn start(&mut self, idle: Option<Duration>, request_ended: bool) -> StreamClock {
        if self.0.is_none() {
            self.0 = Some(Arc::new(Clock {
                start: Instant::now(),
                idle_ms: idle.map_or(0, |d| millis(d).max(1)),
                last_activity: AtomicU64::new(0),
                request_end: AtomicU64::new(if request_ended { 0 } else { NOT_YET }),
                idle_fired: AtomicU64::new(0),
            }));
        }
        self.clone()
    }

    /// Body bytes moved.
    pub fn touch(&self) {
        if let Some(c) = &self.0 {
            c.last_activity.store(c.now(), Ordering::Relaxed);
        }
    }

    /// The request's body ended (the route timeout starts now).
    pub fn end_request(&self) {
        if let Some(c) = &self.0 {
            let now = c.now();
            let _ =
                c.request_end
                    .compare_exchange(NOT_YET, now, Ordering::Relaxed, Ordering::Relaxed);
            c.last_activity.store(now, Ordering::Relaxed);
        }
    }

    /// The stream idle timeout, when on.
    pub fn idle_timeout(&self) -> Option<Duration> {
        let c = self.0.as_ref()?;
        (c.idle_ms > 0).then(|| Duration::from_millis(c.idle_ms))
    }

    /// The idle timeout that ended this request, if one did.
    pub fn idle_fired(&self) -> Option<Duration> {
        let c = self.0.as_ref()?;
        match c.idle_fired.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Where the stream idle timeout stands now: expired (and recorded as fired), or the
    /// instant it will expire unless bytes move first. `None`: off, or no clock.
    pub fn idle_deadline(&self) -> Option<Result<Instant, Duration>> {
        let c = self.0.as_ref()?;
        if c.idle_ms == 0 {
            return None;
        }
        let due = c.last_activity.load(Ordering::Relaxed) + c.idle_ms;
        if c.now() >= due {
            let _ =
                c.idle_fired
                    .compare_exchange(0, c.idle_ms, Ordering::Relaxed, Ordering::Relaxed);
            return Some(Err(Duration::from_millis(c.idle_ms)));
        }
        Some(Ok(c.start + Duration::from_millis(due)))
    }

    /// A snapshot for [`next_event`], in milliseconds since the clock started.
    fn reading(&self) -> Option<(Reading, Instant)> {
        let c = self.0.as_ref()?;
        let end = c.request_end.load(Ordering::Relaxed);
        let reading = Reading {
            now: c.now(),
            last_activity: c.last_activity.load(Ordering::Relaxed),
            request_end: (end != NOT_YET).then_some(end),
        };
        Some((reading, c.start))
    }

    fn fire_idle(&self, idle: Duration) {
        if let Some(c) = &self.0 {
            let _ = c.idle_fired.compare_exchange(
                0,
                millis(idle).max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

impl Clock {
    fn now(&self) -> u64 {
        millis(self.start.elapsed())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// The deadlines of a request before its response head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    /// The route timeout (from the end of the request), `None` when off.
    pub route: Option<Duration>,
    /// The stream idle timeout, `None` when off.
    pub idle: Option<Duration>,
}

/// What a clock reading means for [`Deadlines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    now: u64,
    last_activity: u64,
    request_end: Option<u64>,
}

/// What to do next, in milliseconds since the clock started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The route timeout elapsed.
    RouteTimeout,
    /// No body bytes moved for the idle timeout.
    Idle,
    /// Look again at this time (the earliest deadline; while the request has not ended, the
    /// route timeout's length from now, when it is looked at again).
    At(u64),
    /// Nothing to wait for.
    Never,
}

/// The pure part of [`Deadlines::bound`]: which deadline, if any, has passed at `r.now`.
fn next_event(d: Deadlines, r: Reading) -> Next {
    let mut next: Option<u64> = None;
    if let Some(idle) = d.idle {
        let due = r.last_activity.saturating_add(millis(idle).max(1));
        if r.now >= due {
            return Next::Idle;
        }
        next = Some(due);
    }
    if let Some(route) = d.route {
        let route = millis(route).max(1);
        let due = match r.request_end {
            Some(end) => {
                let due = end.saturating_add(route);
                if r.now >= due {
                    return Next::RouteTimeout;
                }
                due
            }
            // The route timeout has not started: look again a route timeout from now (when
            // the request ends meanwhile, the deadline is then still ahead, and exact).
            None => r.now.saturating_add(route),
        };
        next = Some(next.map_or(due, |n| n.min(due)));
    }
    next.map_or(Next::Never, Next::At)
}

impl Deadlines {
    /// Whether neither timeout is on.
    pub fn is_off(&self) -> bool {
        self.route.is_none() && self.idle.is_none()
    }

    /// Runs `upstream` (the trip to the response head) within these deadlines on `clock`. An
    /// idle timeout is recorded on the clock, so the logging phase sees it.
    pub async fn bound<T, F>(self, clock: &StreamClock, upstream: F) -> Result<T, ProxyError>
    where
        F: Future<Output = Result<T, ProxyError>>,
    {
        if self.is_off() || clock.0.is_none() {
            return upstream.await;
        }
        let mut upstream = pin!(upstream);
        let mut timer = Timer::new();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = upstream.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            loop {
                let Some((reading, start)) = clock.reading() else {
                    return Poll::Pending;
                };
                let at = match next_event(self, reading) {
                    Next::RouteTimeout => {
                        return Poll::Ready(Err(ProxyError::Timeout(
                            self.route.unwrap_or_default(),
                        )))
                    }
                    Next::Idle => {
                        let idle = self.idle.unwrap_or_default();
                        clock.fire_idle(idle);
                        return Poll::Ready(Err(ProxyError::StreamIdleTimeout {
                            timeout: idle,
                            response_started: false,
                        }));
                    }
                    Next::Never => return Poll::Pending,
                    Next::At(ms) => start + Duration::from_millis(ms),
                };
                if timer.poll_until(at, cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn both(route: u64, idle: u64) -> Deadlines {
        Deadlines {
            route: Some(Duration::from_secs(route)),
            idle: Some(Duration::from_secs(idle)),
        }
    }

    fn at(now: u64, last_activity: u64, request_end: Option<u64>) -> Reading {
        Reading {
            now,
            last_activity,
            request_end,
        }
    }

    #[test]
    fn the_route_timeout_starts_when_the_request_ends() {
        let d = both(15, 300);
        // A long upload: no route timeout while the body moves.
        assert_eq!(next_event(d, at(40 * S, 39 * S, None)), Next::At(55 * S));
        // It ended at 40 s: 504 at 55 s, not before.
        assert_eq!(
            next_event(d, at(54 * S, 40 * S, Some(40 * S))),
            Next::At(55 * S)
        );
        assert_eq!(
            next_event(d, at(55 * S, 40 * S, Some(40 * S))),
            Next::RouteTimeout
        );
    }

    #[test]
    fn the_idle_timeout_counts_from_the_last_byte() {
        let d = both(600, 300);
        assert_eq!(next_event(d, at(100 * S, 90 * S, None)), Next::At(390 * S));
        assert_eq!(next_event(d, at(390 * S, 90 * S, None)), Next::Idle);
        // Bytes moved at 380 s: the deadline moves with them.
        assert_eq!(next_event(d, at(390 * S, 380 * S, None)), Next::At(680 * S));
    }

    #[test]
    fn off_timeouts_never_fire() {
        let off = Deadlines::default();
        assert!(off.is_off());
        assert_eq!(next_event(off, at(1_000 * S, 0, Some(0))), Next::Never);
        let route_only = Deadlines {
            route: Some(Duration::from_secs(1)),
            idle: None,
        };
        assert_eq!(
            next_event(route_only, at(10 * S, 0, None)),
            Next::At(11 * S),
            "no idle timeout: only the route timeout's look-again"
        );
        assert_eq!(
            next_event(route_only, at(10 * S, 0, Some(0))),
            Next::RouteTimeout
        );
    }

    #[test]
    fn the_clock_records_activity_the_end_and_a_fired_idle_timeout() {
        let mut slot = StreamClock::default();
        assert!(slot.idle_deadline().is_none(), "no clock yet");
        let clock = slot.start(Some(Duration::from_secs(300)), false);
        assert_eq!(clock.idle_timeout(), Some(Duration::from_secs(300)));
        let (r, _) = clock.reading().expect("started");
        assert_eq!(r.request_end, None);
        clock.end_request();
        let (r, _) = clock.reading().expect("started");
        assert!(r.request_end.is_some());
        assert!(matches!(clock.idle_deadline(), Some(Ok(_))));
        assert_eq!(clock.idle_fired(), None);
        clock.fire_idle(Duration::from_secs(300));
        assert_eq!(slot.idle_fired(), Some(Duration::from_secs(300)), "shared");
        let off = StreamClock::default().start(None, true);
        assert!(off.idle_deadline().is_none());
        assert_eq!(off.reading().map(|(r, _)| r.request_end), Some(Some(0)));
    }

    #[monoio::test(timer_enabled = true)]
    async fn an_answer_before_the_deadlines_passes_through() {
        let clock = StreamClock::default().start(Some(Duration::from_secs(300)), true);
        let answered = both(15, 300)
            .bound(&clock, async { Ok::<_, ProxyError>(7) })
            .await;
        assert_eq!(answered.ok(), Some(7));
    }
}
