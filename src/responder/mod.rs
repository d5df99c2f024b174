//! The responder: accepts tunnels that initiators dial, keeps them in per-shard registries, and
//! serves the egress listener whose requests travel through those tunnels.

pub mod acceptor;
pub mod egress;
pub mod registry;
pub mod reverse_cluster;
pub mod tunnel;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{Config, ResponderConfig};
use crate::protocol::AcceptedHandshake;
use crate::shard::directory::Directory;
use crate::shard::mesh::{Inbox, Mesh};
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::tracker::Tracker;
use crate::shard::ShardId;
use crate::stats::{ShardStats, Stats};

use registry::Registry;
use reverse_cluster::ForwardedRequest;

/// Messages between responder shards.
pub enum ShardMsg {
    /// Take over a tunnel whose handshake another shard accepted (placement by node).
    Adopt {
        stream: std::net::TcpStream,
        handshake: AcceptedHandshake,
    },
    /// Serve an egress request on one of this shard's tunnels.
    Forward(ForwardedRequest),
}

/// State shared by all responder shards (read-mostly).
pub struct Responder {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub mesh: Mesh<ShardMsg>,
    pub stats: Stats,
    pub shutdown: ShutdownSignal,
    next_tunnel_id: AtomicU64,
}

impl Responder {
    /// Builds the shared state and one inbox per shard.
    pub fn new(
        config: Arc<Config>,
        shards: usize,
        stats: Stats,
        shutdown: ShutdownSignal,
    ) -> Option<(Arc<Responder>, Vec<Inbox<ShardMsg>>)> {
        let cfg = config.responder.as_ref()?;
        let directory = Directory::new(
            shards,
            cfg.tunnel_listener.max_tunnels,
            cfg.tunnel_listener.max_tunnels_per_node,
        );
        let (mesh, inboxes) = Mesh::new(shards, 1024);
        let responder = Responder {
            config,
            directory,
            mesh,
            stats,
            shutdown,
            next_tunnel_id: AtomicU64::new(1),
        };
        Some((Arc::new(responder), inboxes))
    }

    pub fn cfg(&self) -> &ResponderConfig {
        self.config
            .responder
            .as_ref()
            .expect("Responder is only built from a config with a responder section")
    }

    fn next_tunnel_id(&self) -> u64 {
        self.next_tunnel_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// One shard's view of the responder.
pub struct ResponderShard {
    pub shard: ShardId,
    pub shared: Arc<Responder>,
    pub registry: RefCell<Registry>,
    /// Connections, tunnels and forwarded requests in flight: the drain waits for them.
    pub tasks: Rc<Tracker>,
}

impl ResponderShard {
    pub fn stats(&self) -> &ShardStats {
        self.shared.stats.shard(self.shard)
    }
}

/// Runs the responder on this shard until shutdown, then drains.
pub async fn run_shard(shared: Arc<Responder>, shard: ShardId, inbox: Inbox<ShardMsg>) {
    let ctx = Rc::new(ResponderShard {
        shard,
        shared,
        registry: RefCell::new(Registry::default()),
        tasks: Tracker::new(),
    });
    let cfg = ctx.shared.cfg();
    let tunnel_listener = match crate::shard::bind_reuseport(cfg.tunnel_listener.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                shard,
                "cannot bind tunnel listener {}: {e}",
                cfg.tunnel_listener.listen
            );
            ctx.shared.shutdown_on_fatal();
            return;
        }
    };
    let egress_listener = match crate::shard::bind_reuseport(cfg.egress_listener.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                shard,
                "cannot bind egress listener {}: {e}",
                cfg.egress_listener.listen
            );
            ctx.shared.shutdown_on_fatal();
            return;
        }
    };
    monoio::spawn(inbox_loop(ctx.clone(), inbox));
    monoio::spawn(cleanup_loop(ctx.clone()));
    let acceptor = monoio::spawn(acceptor::run(ctx.clone(), tunnel_listener));
    let egress = egress::run(ctx.clone(), egress_listener);
    egress.await;
    acceptor.await;
    // Listeners are closed; in-flight requests and tunnels finish within the grace period.
    let grace = ctx.shared.config.drain_timeout;
    if monoio::time::timeout(grace, ctx.tasks.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            shard,
            left = ctx.tasks.active(),
            "drain timeout: dropping what is left"
        );
    }
}

impl Responder {
    /// A listener that cannot bind makes the whole process stop: half a responder is worse
    /// than a clear failure.
    fn shutdown_on_fatal(&self) {
        crate::app::fatal();
    }
}

async fn inbox_loop(ctx: Rc<ResponderShard>, inbox: Inbox<ShardMsg>) {
    while let Ok(msg) = inbox.recv().await {
        match msg {
            ShardMsg::Adopt { stream, handshake } => {
                ctx.tasks
                    .spawn(tunnel::adopt(ctx.clone(), stream, handshake));
            }
            ShardMsg::Forward(forwarded) => {
                ctx.tasks
                    .spawn(reverse_cluster::serve_forwarded(ctx.clone(), forwarded));
            }
        }
    }
}

async fn cleanup_loop(ctx: Rc<ResponderShard>) {
    let interval = ctx.shared.cfg().cleanup_interval;
    loop {
        monoio::select! {
            _ = monoio::time::sleep(interval) => {}
            _ = ctx.shared.shutdown.wait() => return,
        }
        let swept = ctx.registry.borrow_mut().sweep();
        if swept > 0 {
            tracing::debug!(shard = ctx.shard, swept, "registry cleanup");
        }
    }
}
