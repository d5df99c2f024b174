//! Configuration generations, delivered to every shard: the commit half of a reload.
//!
//! A reload is prepare-then-commit (DESIGN.md §12). The process side prepares once, off the
//! shards: it loads and validates the new file and builds whatever can fail (certificates,
//! credentials). Only a configuration that passed is committed: [`Publisher::publish`] sends it
//! to every shard and waits until each has applied it.
//!
//! On a shard, [`ShardReload`] runs the roles' appliers in registration order, on the shard's
//! own thread, between two of its tasks: an applier swaps the shard-local state that new work
//! reads (an `Rc` snapshot), starts or retires tasks, and returns. Work already running keeps
//! the snapshot it started with, so an in-flight request finishes under the configuration it
//! began with and a tunnel is never dropped by a reload. Appliers must not fail: what can fail
//! belongs to the prepare step.
//!
//! Nothing here is on the request path: the channel is read by one task per shard, and the
//! appliers run once per reload.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::shard::ShardId;

/// One committed configuration, numbered from 1 (the configuration the process started with
/// is generation 0 and is never published).
#[derive(Clone)]
pub struct Generation {
    pub number: u64,
    pub config: Arc<Config>,
}

struct Update {
    generation: Generation,
    applied: std::sync::mpsc::Sender<ShardId>,
}

/// The process side: sends each committed generation to every shard.
pub struct Publisher {
    shards: Vec<async_channel::Sender<Update>>,
    next: std::sync::atomic::AtomicU64,
}

/// A shard's receiving end, handed to the shard at start ([`ShardReload::run`]).
pub struct Receiver {
    updates: async_channel::Receiver<Update>,
}

/// Why a publish did not reach every shard.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// Some shards did not apply the generation within the deadline (a shard stuck, or
    /// shutting down). The ones that did keep it.
    #[error("generation {generation}: {applied} of {shards} shards applied it in time")]
    Incomplete {
        generation: u64,
        applied: usize,
        shards: usize,
    },
}

impl Publisher {
    /// A publisher and one receiver per shard.
    pub fn new(shards: usize) -> (Publisher, Vec<Receiver>) {
        // A bound of 4: reloads are rare and each publish waits for the previous one's
        // appliers, so a shard never has more than one pending (a stuck shard is reported by
        // the deadline, not queued for).
        let (senders, receivers) = (0..shards)
            .map(|_| {
                let (tx, rx) = async_channel::bounded(4);
                (tx, Receiver { updates: rx })
            })
            .unzip();
        let publisher = Publisher {
            shards: senders,
            next: std::sync::atomic::AtomicU64::new(1),
        };
        (publisher, receivers)
    }

    /// Sends `config` to every shard and blocks (a plain thread, never a shard) until all have
    /// applied it or `deadline` passes. Returns the generation's number.
    pub fn publish(&self, config: Arc<Config>, deadline: Duration) -> Result<u64, PublishError> {
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let generation = Generation { number, config };
        let (applied_tx, applied_rx) = std::sync::mpsc::channel();
        let mut sent = 0;
        for shard in &self.shards {
            let update = Update {
                generation: generation.clone(),
                applied: applied_tx.clone(),
            };
            if shard.try_send(update).is_ok() {
                sent += 1;
            }
        }
        drop(applied_tx);
        let until = Instant::now() + deadline;
        let mut applied = 0;
        while applied < sent {
            let left = until.saturating_duration_since(Instant::now());
            match applied_rx.recv_timeout(left) {
                Ok(_) => applied += 1,
                Err(_) => break,
            }
        }
        if applied == self.shards.len() {
            Ok(number)
        } else {
            Err(PublishError::Incomplete {
                generation: number,
                applied,
                shards: self.shards.len(),
            })
        }
    }
}

type Applier = Box<dyn Fn(&Generation)>;

/// A shard's side: the roles register appliers; [`ShardReload::run`] calls them for each
/// generation the shard receives.
#[derive(Default)]
pub struct ShardReload {
    appliers: RefCell<Vec<Applier>>,
    current: RefCell<Option<Generation>>,
}

impl ShardReload {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Registers `apply`, called on this shard for every later generation, in registration
    /// order. Register when a role starts on the shard; an applier must not register another.
    /// A generation the shard applied before the role registered (a reload during start) is
    /// applied to it at once.
    pub fn on_reload(&self, apply: impl Fn(&Generation) + 'static) {
        if let Some(generation) = self.current() {
            apply(&generation);
        }
        self.appliers.borrow_mut().push(Box::new(apply));
    }

    /// The last generation this shard applied; `None` while it runs the start configuration.
    pub fn current(&self) -> Option<Generation> {
        self.current.borrow().clone()
    }

    /// Applies every generation `receiver` delivers until the publisher is gone. Spawn it once
    /// per shard; it ends with the process (or when the publisher is dropped).
    pub async fn run(self: Rc<Self>, receiver: Receiver, shard: ShardId) {
        while let Ok(update) = receiver.updates.recv().await {
            self.apply(&update.generation);
            tracing::debug!(
                shard,
                generation = update.generation.number,
                "configuration applied"
            );
            let _ = update.applied.send(shard);
        }
    }

    fn apply(&self, generation: &Generation) {
        *self.current.borrow_mut() = Some(generation.clone());
        // Appliers are registered when a role starts on the shard, never by an applier.
        for apply in self.appliers.borrow().iter() {
            apply(generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn every_shard_applies_each_generation_in_order() {
        let (publisher, receivers) = Publisher::new(2);
        let threads: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(shard, receiver)| {
                std::thread::spawn(move || {
                    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let reload = ShardReload::new();
                        let seen = Rc::new(Cell::new(0));
                        let s = seen.clone();
                        reload.on_reload(move |g| {
                            assert_eq!(g.number, s.get() + 1, "in order, none skipped");
                            s.set(g.number);
                        });
                        reload.clone().run(receiver, shard).await;
                        (seen.get(), reload.current().map(|g| g.number))
                    })
                })
            })
            .collect();
        let config = Arc::new(Config::empty());
        let wait = Duration::from_secs(10);
        assert_eq!(publisher.publish(config.clone(), wait), Ok(1));
        assert_eq!(publisher.publish(config, wait), Ok(2));
        drop(publisher);
        for t in threads {
            assert_eq!(t.join().expect("shard"), (2, Some(2)));
        }
    }

    #[test]
    fn a_shard_that_does_not_apply_is_reported() {
        let (publisher, receivers) = Publisher::new(2);
        // Shard 1 never runs its receiver.
        let mut receivers = receivers.into_iter();
        let first = receivers.next().expect("shard 0");
        let _idle = receivers.next();
        let shard0 = std::thread::spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .build()
                .expect("runtime");
            rt.block_on(ShardReload::new().run(first, 0));
        });
        let got = publisher.publish(Arc::new(Config::empty()), Duration::from_millis(300));
        assert_eq!(
            got,
            Err(PublishError::Incomplete {
                generation: 1,
                applied: 1,
                shards: 2
            })
        );
        drop(publisher);
        shard0.join().expect("shard 0");
    }
}
