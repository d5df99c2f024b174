//! Process-wide shutdown: one trigger, any number of waiters on any shard, and the fatal path
//! by which a shard that cannot run (a listener that cannot bind) stops everything.
//!
//! Built on a channel that is never sent on: dropping (or explicitly closing) the sender closes
//! it, which wakes every receiver on every thread at once. Either end may close it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Fires the shutdown when [`Shutdown::trigger`] is called or the value is dropped.
#[derive(Debug)]
pub struct Shutdown {
    sender: async_channel::Sender<()>,
    failed: Arc<AtomicBool>,
}

/// A cheap, cloneable view of the shutdown state.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    receiver: async_channel::Receiver<()>,
    failed: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> (Shutdown, ShutdownSignal) {
        let (sender, receiver) = async_channel::bounded(1);
        let failed = Arc::new(AtomicBool::new(false));
        let signal = ShutdownSignal {
            receiver,
            failed: failed.clone(),
        };
        (Shutdown { sender, failed }, signal)
    }

    pub fn trigger(&self) {
        self.sender.close();
    }

    /// True when a shard called [`ShutdownSignal::fatal`].
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        // Nothing is ever sent: recv only returns when the channel closes.
        let _ = self.receiver.recv().await;
    }

    pub fn is_triggered(&self) -> bool {
        self.receiver.is_closed()
    }

    /// Stops every shard because something the process cannot run without failed; the exit
    /// status says so ([`Shutdown::failed`]). Half a responder is worse than a clear failure.
    pub fn fatal(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.receiver.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test(timer_enabled = true)]
    async fn trigger_wakes_waiters() {
        let (shutdown, signal) = Shutdown::new();
        assert!(!signal.is_triggered());
        let waiter = monoio::spawn({
            let signal = signal.clone();
            async move { signal.wait().await }
        });
        shutdown.trigger();
        waiter.await;
        assert!(signal.is_triggered());
        assert!(!shutdown.failed());
    }

    #[monoio::test(timer_enabled = true)]
    async fn fatal_from_a_shard_stops_all_and_marks_failure() {
        let (shutdown, signal) = Shutdown::new();
        let other = signal.clone();
        let waiter = monoio::spawn(async move { other.wait().await });
        signal.fatal();
        waiter.await;
        assert!(signal.is_triggered());
        assert!(shutdown.failed());
    }
}
