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

    /// Sends `msg` to `shard`'s inbox, waiting while it is full.
    pub async fn send(&self, shard: ShardId, msg: M) -> Result<(), ShardGone> {
        match self.senders.get(shard) {
            Some(tx) => tx.send(msg).await.map_err(|_| ShardGone(shard)),
            None => Err(ShardGone(shard)),
        }
    }

    /// Sends `msg` to `shard`'s inbox if it has room now; a full inbox gives the message back,
    /// for the caller to wait with [`Mesh::send`].
    pub fn try_send(&self, shard: ShardId, msg: M) -> Result<(), TrySendError<M>> {
        match self.senders.get(shard) {
            Some(tx) => tx.try_send(msg).map_err(|e| match e {
                async_channel::TrySendError::Full(msg) => TrySendError::Full(msg),
                async_channel::TrySendError::Closed(_) => TrySendError::Gone(ShardGone(shard)),
            }),
            None => Err(TrySendError::Gone(ShardGone(shard))),
        }
    }
}

/// Why [`Mesh::try_send`] did not send.
#[derive(Debug)]
pub enum TrySendError<M> {
    /// The inbox is full; the message, back.
    Full(M),
    /// The target shard has stopped (or never ran); the message is dropped.
    Gone(ShardGone),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_send_fills_then_gives_the_message_back() {
        let (mesh, inboxes) = Mesh::<u32>::new(2, 1);
        assert!(mesh.try_send(1, 7).is_ok());
        match mesh.try_send(1, 8) {
            Err(TrySendError::Full(8)) => {}
            other => panic!("expected Full(8), got {other:?}"),
        }
        assert_eq!(inboxes[1].try_recv().ok(), Some(7));
        assert!(inboxes[0].is_empty());
    }

    #[test]
    fn try_send_to_a_stopped_or_unknown_shard_is_gone() {
        let (mesh, mut inboxes) = Mesh::<u32>::new(2, 4);
        drop(inboxes.pop());
        assert!(matches!(
            mesh.try_send(1, 1),
            Err(TrySendError::Gone(ShardGone(1)))
        ));
        assert!(matches!(
            mesh.try_send(5, 1),
            Err(TrySendError::Gone(ShardGone(5)))
        ));
    }
}
