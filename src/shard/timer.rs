//! Deadlines on a shard: one ordered queue per shard thread, driven by one monoio timer.
//!
//! A monoio `Sleep` is 128-byte aligned (its timer entry is cache-padded). Every one a request
//! boxed, or carried inline in a boxed future, cost an aligned allocation (glibc's
//! `posix_memalign`, about 1k instructions) plus a timer-wheel entry, and the request path armed
//! several per request: the route timeout, the idle timeouts of both bodies, the wait for
//! tunnel stream capacity, hyper's header timer. Together about 4k instructions per request on
//! the responder (bench/instructions.sh).
//!
//! A [`Timer`] is instead a key in this shard's queue (a `BTreeMap` ordered by deadline): no
//! allocation of its own, removed when it is dropped or moved. The queue's driver task sleeps
//! until the earliest deadline and wakes the timers that expired, so deadlines stay as exact as
//! monoio's (millisecond ticks). Requests that end in time only ever insert and remove a key.
//! The driver is spawned on the thread's first timer. monoio does not drop the tasks left
//! when a runtime ends, so a thread that starts a second runtime calls [`reset_thread`] first
//! (`shard::runtime::block_on` does): the next timer then spawns a driver on the new runtime.
//!
//! Timers are not `Send`: a timer belongs to the queue of the thread that armed it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// This thread's timers, by deadline (and arming order among equal deadlines).
#[derive(Default)]
struct Queue {
    entries: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The deadline the driver sleeps until; `None` while it waits for a first entry.
    armed: Option<Instant>,
    /// The driver's waker, to wake it when an entry earlier than `armed` arrives.
    driver: Option<Waker>,
    /// A driver task was spawned on this thread's runtime.
    driving: bool,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// One deadline in this shard's timer queue. Poll it with [`Timer::poll_until`]; it leaves
/// the queue when it fires, when it is dropped, or when it is moved to another deadline.
#[derive(Debug, Default)]
pub struct Timer {
    key: Option<(Instant, u64)>,
    /// Not `Send`: the key belongs to this thread's queue.
    _shard: PhantomData<Rc<()>>,
}

impl Timer {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ready` once `at` has passed; otherwise `Pending`, with this task woken at `at`.
    pub fn poll_until(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_until_at(at, Instant::now(), cx)
    }

    /// As [`Timer::poll_until`], but a deadline already armed between now and `at` is kept:
    /// the task is then woken at that earlier deadline, and its next poll arms `at`. For a
    /// deadline recomputed on every poll that mostly moves later (an idle timeout pushed back
    /// by activity), the queue then sees an entry per period instead of a removal and an
    /// insertion per poll. The caller must tolerate the early wakeup: it recomputes `at`.
    pub fn poll_by(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        let Some(key) = self.key.filter(|key| now < key.0 && key.0 < at) else {
            return self.poll_until_at(at, now, cx);
        };
        QUEUE.with(|queue| {
            let mut q = queue.borrow_mut();
            match q.entries.get_mut(&key) {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                Some(waker) => *waker = cx.waker().clone(),
                // Only expired entries leave the queue, and `key` is still ahead.
                None => {
                    q.entries.insert(key, cx.waker().clone());
                }
            }
        });
        Poll::Pending
    }

    fn poll_until_at(&mut self, at: Instant, now: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if now >= at {
            self.cancel();
            return Poll::Ready(());
        }
        let driver = QUEUE.with(|queue| {
            let mut q = queue.borrow_mut();
            if let Some(key) = self.key.filter(|key| key.0 == at) {
                match q.entries.get_mut(&key) {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    Some(waker) => *waker = cx.waker().clone(),
                    // Only expired entries leave the queue, and `at` is still ahead.
                    None => {
                        q.entries.insert(key, cx.waker().clone());
                    }
                }
                return None;
            }
            if let Some(old) = self.key.take() {
                q.entries.remove(&old);
            }
            q.next_id += 1;
            let key = (at, q.next_id);
            q.entries.insert(key, cx.waker().clone());
            self.key = Some(key);
            if !q.driving {
                q.driving = true;
                drop(monoio::spawn(drive()));
            }
            // Earlier than the driver sleeps: it must re-arm (woken outside the borrow).
            q.armed
                .is_none_or(|armed| at < armed)
                .then(|| q.driver.take())
                .flatten()
        });
        if let Some(driver) = driver {
            driver.wake();
        }
        Poll::Pending
    }

    /// Leaves the queue (nothing happens if the timer is not armed).
    pub fn cancel(&mut self) {
        if let Some(key) = self.key.take() {
            // At thread exit the queue may be gone already, and with it the entry.
            let _ = QUEUE.try_with(|queue| queue.borrow_mut().entries.remove(&key));
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A timeout expired (see [`timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// `future`, unless `duration` passes first.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let at = Instant::now() + duration;
    let mut future = pin!(future);
    let mut timer = Timer::new();
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        timer.poll_until(at, cx).map(|()| Err(Elapsed))
    })
    .await
}

/// Waits `duration` on this shard's timer queue.
pub async fn sleep(duration: Duration) {
    let at = Instant::now() + duration;
    let mut timer = Timer::new();
    poll_fn(|cx| timer.poll_until(at, cx)).await
}

/// Forgets this thread's driver, before a new runtime starts on the thread: the old one's
/// task never runs again. The next timer spawns a driver on the new runtime.
pub fn reset_thread() {
    let stale = QUEUE.with(|queue| {
        let mut q = queue.borrow_mut();
        q.driving = false;
        q.armed = None;
        q.driver.take()
    });
    // Dropped outside the borrow: the last reference to a task drops its future.
    drop(stale);
}

/// The driver: wakes expired timers, then sleeps until the earliest one left.
async fn drive() {
    let mut expired = Vec::new();
    let mut sleep: Option<Pin<Box<monoio::time::Sleep>>> = None;
    poll_fn(|cx| loop {
        let next = QUEUE.with(|queue| {
            let mut q = queue.borrow_mut();
            let now = Instant::now();
            while let Some(entry) = q.entries.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                expired.push(entry.remove());
            }
            let next = q.entries.first_key_value().map(|(key, _)| key.0);
            q.armed = next;
            if !q.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                q.driver = Some(cx.waker().clone());
            }
            next
        });
        // Woken outside the borrow: a wake may drop the last reference to a task.
        expired.drain(..).for_each(Waker::wake);
        let Some(at) = next else {
            return Poll::<()>::Pending;
        };
        let at = monoio::time::Instant::from_std(at);
        let sleep = sleep.get_or_insert_with(|| Box::pin(monoio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    fn entries() -> usize {
        QUEUE.with(|q| q.borrow().entries.len())
    }

    #[test]
    fn timers_fire_in_deadline_order_whatever_the_arming_order() {
        rt().block_on(async {
            let fired = Rc::new(RefCell::new(Vec::new()));
            let start = Instant::now();
            let mut tasks = Vec::new();
            // Armed late-first, so the driver must move its sleep earlier each time.
            for ms in [120u64, 60, 20, 90] {
                let fired = fired.clone();
                tasks.push(monoio::spawn(async move {
                    let mut timer = Timer::new();
                    let at = start + Duration::from_millis(ms);
                    poll_fn(|cx| timer.poll_until(at, cx)).await;
                    assert!(Instant::now() >= at);
                    fired.borrow_mut().push(ms);
                }));
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            for task in tasks {
                task.await;
            }
            assert_eq!(*fired.borrow(), vec![20, 60, 90, 120]);
            assert_eq!(entries(), 0);
        });
    }

    #[test]
    fn a_timer_moved_or_dropped_leaves_the_queue() {
        rt().block_on(async {
            let polled = Cell::new(false);
            let mut timer = Timer::new();
            let far = Instant::now() + Duration::from_secs(60);
            poll_fn(|cx| {
                if !polled.replace(true) {
                    assert!(timer.poll_until(far, cx).is_pending());
                    assert!(timer
                        .poll_until(far + Duration::from_secs(1), cx)
                        .is_pending());
                }
                Poll::Ready(())
            })
            .await;
            assert_eq!(entries(), 1, "moving the deadline replaces the entry");
            drop(timer);
            assert_eq!(entries(), 0);
        });
    }

    #[test]
    fn poll_by_keeps_an_earlier_deadline_and_wakes_there_first() {
        rt().block_on(async {
            let start = Instant::now();
            let (early, late) = (
                start + Duration::from_millis(30),
                start + Duration::from_millis(80),
            );
            let mut timer = Timer::new();
            let polls = Cell::new(0u32);
            poll_fn(|cx| {
                polls.set(polls.get() + 1);
                if polls.get() == 1 {
                    assert!(timer.poll_by(early, cx).is_pending());
                }
                // Later deadlines keep the armed entry: the task wakes at `early` first.
                let key = timer.key;
                let polled = timer.poll_by(late, cx);
                if polls.get() == 1 {
                    assert_eq!(timer.key, key, "the earlier entry was kept");
                    assert_eq!(entries(), 1);
                }
                polled
            })
            .await;
            let elapsed = start.elapsed();
            assert!(elapsed >= Duration::from_millis(80), "fired at {elapsed:?}");
            // First poll, the wakeup at `early` (which arms `late`), the wakeup at `late`.
            assert_eq!(polls.get(), 3);
            assert_eq!(entries(), 0);
        });
    }

    #[test]
    fn timeout_gives_the_output_or_elapsed() {
        rt().block_on(async {
            let start = Instant::now();
            sleep(Duration::from_millis(20)).await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            let quick = timeout(Duration::from_secs(5), async { 7 }).await;
            assert_eq!(quick, Ok(7));
            let slow = timeout(
                Duration::from_millis(30),
                monoio::time::sleep(Duration::from_secs(5)),
            )
            .await;
            assert_eq!(slow, Err(Elapsed));
            assert_eq!(entries(), 0);
        });
    }

    #[test]
    fn each_runtime_on_a_thread_gets_a_driver() {
        for _ in 0..2 {
            reset_thread();
            let out = rt().block_on(timeout(
                Duration::from_millis(20),
                std::future::pending::<()>(),
            ));
            assert_eq!(out, Err(Elapsed));
        }
    }
}
