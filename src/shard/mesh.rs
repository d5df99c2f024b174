//! Cross-shard channels: every shard can send a message to every other shard's inbox.
//!
//! Inboxes are bounded (backpressure, not growth): a sender waits while the target is full.
//! Wakeups across threads rely on monoio's `sync` feature.

use super::ShardId;

/// The sending half: one sender per shard.
#[derive(Debug)]
pub struct Mesh<M> {
    senders: Vec<async_channel::Sender<M>>,
}

impl<M> Clone for Mesh<M> {
    fn clone(&self) -> Self {
        Self {
            senders: self.senders.clone(),
        }
    }
}

/// One shard's inbox.
pub type Inbox<M> = async_channel::Receiver<M>;

/// Error when the target shard has stopped.
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub ShardId);

impl<M> Mesh<M> {
    /// Builds `shards` inboxes of `capacity` messages each.
    pub fn new(shards: usize, capacity: usize) -> (Mesh<M>, Vec<Inbox<M>>) {
        let (senders, inboxes) = (0..shards)
            .map(|_| async_channel::bounded(capacity))
            .unzip();
        (Mesh { senders }, inboxes)
    }

    pub async fn send(&self, shard: ShardId, msg: M) -> Result<(), ShardGone> {
        match self.senders.get(shard) {
            Some(tx) => tx.send(msg).await.map_err(|_| ShardGone(shard)),
            None => Err(ShardGone(shard)),
        }
    }
}
