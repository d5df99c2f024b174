//! Process-wide shutdown: one trigger, any number of waiters on any shard.
//!
//! Built on a channel that is never sent on: dropping (or explicitly closing) the sender closes
//! it, which wakes every receiver on every thread at once.

/// Fires the shutdown when [`Shutdown::trigger`] is called or the value is dropped.
#[derive(Debug)]
pub struct Shutdown(async_channel::Sender<()>);

/// A cheap, cloneable view of the shutdown state.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(async_channel::Receiver<()>);

impl Shutdown {
    pub fn new() -> (Shutdown, ShutdownSignal) {
        let (tx, rx) = async_channel::bounded(1);
        (Shutdown(tx), ShutdownSignal(rx))
    }

    pub fn trigger(&self) {
        self.0.close();
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        // Nothing is ever sent: recv only returns when the channel closes.
        let _ = self.0.recv().await;
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_closed()
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
    }
}
