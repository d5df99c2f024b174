//! Counting a shard's in-flight work so that a drain can wait for it.
//!
//! Connection and tunnel tasks are spawned detached; when the shard's main future returns, the
//! runtime drops whatever is left. A [`Tracker`] lets the shard wait, bounded by the drain
//! timeout, until every tracked task has finished.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A spawned task and its guard: the task counts as active until it completes or is dropped.
struct TrackedTask<F> {
    fut: std::pin::Pin<Box<F>>,
    _guard: Tracked,
}

impl<F: Future<Output = ()>> Future for TrackedTask<F> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

/// Single-shard task counter (never crosses threads).
#[derive(Debug, Default)]
pub struct Tracker {
    active: Cell<usize>,
    idle_waiters: RefCell<Vec<Waker>>,
}

/// Keeps one task counted until dropped.
#[derive(Debug)]
pub struct Tracked(Rc<Tracker>);

impl Drop for Tracked {
    fn drop(&mut self) {
        let left = self.0.active.get() - 1;
        self.0.active.set(left);
        if left == 0 {
            for waker in self.0.idle_waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }
}

impl Tracker {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Counts the caller's task until the returned guard drops.
    pub fn enter(self: &Rc<Self>) -> Tracked {
        self.active.set(self.active.get() + 1);
        Tracked(self.clone())
    }

    /// Spawns `fut` on this shard, counted while it runs.
    pub fn spawn<F: Future<Output = ()> + 'static>(self: &Rc<Self>, fut: F) {
        // A struct rather than `async move { fut.await; drop(guard) }`: an async block keeps
        // both the captured future and the one it awaits, doubling the task's size and the
        // bytes copied when it is spawned.
        monoio::spawn(TrackedTask {
            fut: Box::pin(fut),
            _guard: self.enter(),
        });
    }

    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// Waits up to `grace` for every tracked task to finish (a drain); what is left after that
    /// is logged and dropped with the runtime.
    pub async fn drain(&self, grace: std::time::Duration, shard: super::ShardId) {
        if monoio::time::timeout(grace, self.idle()).await.is_err() {
            tracing::warn!(
                shard,
                left = self.active(),
                "drain timeout: dropping what is left"
            );
        }
    }

    /// Resolves when no tracked task is running.
    pub async fn idle(&self) {
        poll_fn(|cx| {
            if self.active.get() == 0 {
                return Poll::Ready(());
            }
            self.idle_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[monoio::test(timer_enabled = true)]
    async fn idle_waits_for_spawned_tasks() {
        let tracker = Tracker::new();
        let done = Rc::new(Cell::new(false));
        let flag = done.clone();
        tracker.spawn(async move {
            monoio::time::sleep(Duration::from_millis(20)).await;
            flag.set(true);
        });
        assert_eq!(tracker.active(), 1);
        tracker.idle().await;
        assert!(done.get());
        assert_eq!(tracker.active(), 0);
    }
}
