//! hyper's runtime hooks on a monoio shard: an executor that spawns on the current shard and a
//! timer built on monoio's timer wheel.
//!
//! hyper asks for `Send` sleeps; monoio's are thread-local. Every hyper connection lives and dies
//! on the shard that accepted it, so the sleeps never leave their thread: `SendWrapper` states
//! that and would panic (never corrupt) if it were ever broken.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use send_wrapper::SendWrapper;

/// Spawns hyper's background futures (h2 streams) on the current shard.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardExecutor;

impl<F> hyper::rt::Executor<F> for ShardExecutor
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        monoio::spawn(fut);
    }
}

/// hyper timer backed by the shard's monoio timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardTimer;

struct ShardSleep(SendWrapper<Pin<Box<monoio::time::Sleep>>>);

impl Future for ShardSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for ShardSleep {}

impl hyper::rt::Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ShardSleep(SendWrapper::new(Box::pin(monoio::time::sleep(
            duration,
        )))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}
