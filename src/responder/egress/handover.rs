//! Exact connection balance on the egress listener (`connection_balance: exact`): a client
//! connection the kernel's reuseport hash gave to a shard that holds more open connections than
//! another moves, right after accept and before any byte is read, to the shard with the fewest
//! (`crate::shard::balance`). TLS, sniffing and every request of it then run there, as if that
//! shard had accepted it. The socket moves as a tunnel's does (`shard::detach`).

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;

use super::serve_connection;
use crate::metrics::inc;
use crate::responder::{ResponderShard, ShardMsg};
use crate::shard::balance::Placed;
use crate::shard::mesh::TrySendError;
use crate::shard::CapPermit;

/// A client connection on its way to the shard that serves it, with its places: one of the
/// listener's `max_connections` and one on that shard's count. Dropped on the way (the shard
/// stopped), the socket closes and both places free.
#[derive(Debug)]
pub struct HandedConnection {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    open: CapPermit,
    placed: Placed,
}

/// Sends a just-accepted connection to `placed.shard()`.
pub(super) fn hand_over(
    ctx: &Rc<ResponderShard>,
    stream: TcpStream,
    peer: SocketAddr,
    open: CapPermit,
    placed: Placed,
) {
    let target = placed.shard();
    let stream = match crate::shard::detach(stream) {
        Ok(stream) => stream,
        Err(e) => {
            // Out of descriptors, most likely: the client sees its connection closed.
            tracing::warn!(shard = ctx.shard, %peer, target, "egress: cannot move connection: {e}");
            return;
        }
    };
    inc(&ctx.stats().egress_connections_rebalanced);
    let handed = ShardMsg::Serve(Box::new(HandedConnection {
        stream,
        peer,
        open,
        placed,
    }));
    // Most moves find room in the target's inbox; only a full one costs a task that waits.
    let handed = match ctx.shared.mesh.try_send(target, handed) {
        Ok(()) => return,
        Err(TrySendError::Gone(_)) => {
            tracing::debug!(%peer, "egress: shard {target} stopped; connection closed");
            return;
        }
        Err(TrySendError::Full(handed)) => handed,
    };
    let mesh = ctx.shared.mesh.clone();
    ctx.tasks.spawn(async move {
        if mesh.send(target, handed).await.is_err() {
            tracing::debug!(%peer, "egress: shard {target} stopped; connection closed");
        }
    });
}

/// Serves a connection another shard accepted and handed to this one.
pub fn adopt(ctx: &Rc<ResponderShard>, handed: HandedConnection) {
    let HandedConnection {
        stream,
        peer,
        open,
        placed,
    } = handed;
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            let connection = serve_connection(ctx.clone(), stream, peer);
            ctx.tasks.spawn(async move {
                connection.await;
                drop((open, placed));
            });
        }
        Err(e) => {
            tracing::warn!(shard = ctx.shard, %peer, "egress: cannot adopt a connection: {e}")
        }
    }
}
