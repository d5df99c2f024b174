//! The responder: accepts tunnels that initiators dial, keeps them in per-shard registries, and
//! serves the egress listener whose requests travel through those tunnels.
//!
//! Modules: `acceptor` (tunnel listener, handshake), `admission` (the handshake's stages),
//! `tunnel` (a registered tunnel on its shard), `registry` (a shard's tunnels by tenant and
//! host id), `egress` (the egress listener's driver), `reverse_cluster` (host id → tunnel,
//! across shards), `settings` (a shard's snapshot of the configuration, swapped on reload).
//!
//! Reload (`crate::shard::reload`): each shard registers an applier that builds a new
//! [`settings::Settings`] from the generation and swaps it in; new handshakes, connections and
//! requests read it, work in flight keeps the snapshot it started with. The process side first
//! installs what every shard shares: certificates from possibly new files
//! ([`Responder::prepare_certificates`], [`Responder::install_certificates`]) and the
//! process-wide limits ([`Responder::apply_limits`]). The listen addresses and the tenancy
//! (whether `egress_listener.tenant` is set) are fixed at start.

pub mod acceptor;
pub mod admission;
pub mod egress;
pub mod registry;
pub mod reverse_cluster;
pub mod settings;
pub mod tunnel;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::{AccessLog, ShardLog};
use crate::auth::TenantSource;
use crate::config::{Config, ResponderConfig};
use crate::metrics::{inc, Metrics, SeriesIndex, ShardMetrics};
use crate::protocol::{AcceptedHandshake, TunnelIdentity};
use crate::shard::balance::ShardLoad;
use crate::shard::directory::{Directory, Slot};
use crate::shard::mesh::{Inbox, Mesh};
use crate::shard::reload::{Generation, ShardReload};
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::tracker::Tracker;
use crate::shard::{bind_group, shard_listener, CapPermit, ConnectionCap, PortClaim, ShardId};
use crate::tls::{Reloadable, Replacement, ServerTls};
use crate::tunnel::info::TunnelBoard;

use registry::{Registry, Tenancy};
use reverse_cluster::ForwardedRequest;
use settings::Settings;

/// Messages between responder shards.
pub enum ShardMsg {
    /// Take over a tunnel whose handshake another shard accepted (placement by node).
    Adopt {
        stream: std::net::TcpStream,
        handshake: AcceptedHandshake,
    },
    /// Serve an egress request on one of this shard's tunnels (boxed: a request head is large
    /// and the channel's slots are sized by the largest message).
    Forward(Box<ForwardedRequest>),
    /// Serve a client connection another shard accepted (`connection_balance: exact`).
    Serve(Box<egress::HandedConnection>),
}

/// What one responder shard starts with: its inbox and its sockets of the two listeners,
/// bound for every shard before the shards start (`crate::shard`, "Listeners").
pub struct ShardStart {
    inbox: Inbox<ShardMsg>,
    tunnel_listener: std::net::TcpListener,
    egress_listener: std::net::TcpListener,
}

/// A new responder's shared state and what each shard starts with.
pub type WithInboxes = (Arc<Responder>, Vec<ShardStart>);

/// State shared by all responder shards (read-mostly).
pub struct Responder {
    /// The responder section the process started with. Shards read their own
    /// [`Settings`]; only what a reload cannot change is read here (listen addresses, the
    /// TLS on/off choice of each listener, the tenancy).
    cfg: ResponderConfig,
    /// `drain_timeout` at start (each shard's settings carry the current one).
    drain_timeout: Duration,
    directory: Directory,
    mesh: Mesh<ShardMsg>,
    stats: Metrics,
    shutdown: ShutdownSignal,
    tenancy: Tenancy,
    /// The tunnel listener's TLS (reloaded on SIGHUP); plaintext when `None`.
    tunnel_tls: Option<Reloadable<ServerTls>>,
    next_tunnel_id: AtomicU64,
    /// Its live tunnels as `/tunnels` lists them (`tunnel::info`).
    tunnels: TunnelBoard,
    /// The egress listener's server TLS (`egress_listener.tls`), loaded once for every shard.
    egress_tls: Option<Reloadable<ServerTls>>,
    /// Client connections open on the egress listener (`egress_listener.max_connections`).
    egress_connections: ConnectionCap,
    /// The same connections per shard (`egress_listener.connection_balance`).
    egress_load: Arc<ShardLoad>,
    /// Tunnel connections in their TLS or handshake phase (`max_handshakes_in_progress`).
    handshakes: ConnectionCap,
    shards: usize,
    /// Shards whose accept loops run: the responder is ready when all do (`/ready`).
    accepting: AtomicUsize,
    /// Keeps other rtun processes off both listeners' addresses for the process's life.
    _claims: [Option<PortClaim>; 2],
    /// The access log (`access_log:`), shared with the initiator in one process.
    access_log: Option<AccessLog>,
}

impl Responder {
    /// Builds the shared state, binds both listeners, and returns what each shard starts
    /// with; `None` when the configuration has no responder. Fails when the TLS files the
    /// configuration names do not load, or a listener's port is taken (the error names it).
    pub fn new(
        config: &Config,
        shards: usize,
        stats: Metrics,
        shutdown: ShutdownSignal,
        access_log: Option<AccessLog>,
    ) -> std::io::Result<Option<WithInboxes>> {
        let Some(cfg) = config.responder.clone() else {
            return Ok(None);
        };
        let tunnel_group = bind_group(
            cfg.tunnel_listener.listen,
            "responder.tunnel_listener.listen",
            shards,
        )?;
        let egress_group = bind_group(
            cfg.egress_listener.listen,
            "responder.egress_listener.listen",
            shards,
        )?;
        let egress_tls = egress::tls::load(&cfg.egress_listener)?;
        // No ALPN: the tunnel speaks HTTP/1.1 for the handshake, then HTTP/2, on one session.
        let tunnel_tls = match &cfg.tunnel_listener.tls {
            Some(tls) => Some(ServerTls::reloadable(tls, &[]).map_err(|e| {
                std::io::Error::other(format!("responder.tunnel_listener.tls: {e}"))
            })?),
            None => None,
        };
        if !cfg.tunnel_listener.auth.authenticates() {
            tracing::warn!(
                listen = %cfg.tunnel_listener.listen,
                "SECURITY: no handshake authentication (responder.tunnel_listener.auth): anyone \
                 who reaches the tunnel listener can register tunnels as any node, cluster and \
                 tenant, and receive their traffic; configure tokens, jwt or mtls (README, \
                 \"Authentication\")"
            );
        }
        warn_about_tenant_source(cfg.egress_listener.tenant.as_ref(), &cfg);
        let directory = Directory::new(
            shards,
            cfg.tunnel_listener.max_tunnels,
            cfg.tunnel_listener.max_tunnels_per_node,
        );
        let (mesh, inboxes) = Mesh::new(shards, 1024);
        let starts = inboxes
            .into_iter()
            .zip(tunnel_group.sockets)
            .zip(egress_group.sockets)
            .map(|((inbox, tunnel_listener), egress_listener)| ShardStart {
                inbox,
                tunnel_listener,
                egress_listener,
            })
            .collect();
        let responder = Responder {
            drain_timeout: config.drain_timeout,
            directory,
            mesh,
            stats,
            shutdown,
            // A tenant source isolates tenants for the whole responder: tunnels are keyed by
            // their handshake's tenant, requests by the one the source gives (ARCHITECTURE.md
            // §6). Without one every tunnel shares one namespace.
            tenancy: match cfg.egress_listener.tenant {
                Some(_) => Tenancy::Isolated,
                None => Tenancy::Shared,
            },
            tunnel_tls,
            next_tunnel_id: AtomicU64::new(1),
            tunnels: TunnelBoard::default(),
            egress_tls,
            egress_connections: ConnectionCap::new(cfg.egress_listener.max_connections),
            egress_load: ShardLoad::new(shards),
            handshakes: ConnectionCap::new(cfg.tunnel_listener.max_handshakes_in_progress),
            shards,
            accepting: AtomicUsize::new(0),
            _claims: [tunnel_group.claim, egress_group.claim],
            access_log,
            cfg,
        };
        Ok(Some((Arc::new(responder), starts)))
    }

    /// The egress listener's TLS configuration, `None` when it serves plaintext.
    pub fn egress_tls(&self) -> Option<&Reloadable<ServerTls>> {
        self.egress_tls.as_ref()
    }

    /// The prepare step of a reload: loads the certificates, keys and client CAs that `cfg`
    /// names for both listeners (possibly other files than the running ones), changing
    /// nothing. A listener started in plaintext stays so (a restart turns TLS on or off);
    /// the error names the key and the file.
    pub fn prepare_certificates(&self, cfg: &ResponderConfig) -> Result<Certificates, String> {
        fn load(
            running: &Option<Reloadable<ServerTls>>,
            tls: &Option<crate::config::ServerTlsConfig>,
            alpn: &[&[u8]],
            key: &str,
        ) -> Result<Option<Replacement<ServerTls>>, String> {
            match (running, tls) {
                (Some(_), Some(tls)) => ServerTls::replacement(tls, alpn)
                    .map(Some)
                    .map_err(|e| format!("{key}: {e}")),
                _ => Ok(None),
            }
        }
        Ok(Certificates {
            tunnel: load(
                &self.tunnel_tls,
                &cfg.tunnel_listener.tls,
                &[],
                "responder.tunnel_listener.tls",
            )?,
            egress: load(
                &self.egress_tls,
                &cfg.egress_listener.tls,
                &egress::tls::ALPN,
                "responder.egress_listener.tls",
            )?,
        })
    }

    /// Puts prepared certificates in force: new handshakes on both listeners use them; live
    /// tunnels and connections keep their sessions.
    pub fn install_certificates(&self, prepared: Certificates) {
        let pairs = [
            (&self.tunnel_tls, prepared.tunnel),
            (&self.egress_tls, prepared.egress),
        ];
        for (running, next) in pairs {
            if let (Some(running), Some(next)) = (running, next) {
                running.replace(next);
            }
        }
    }

    /// Sets the process-wide limits `cfg` gives: `max_tunnels`, `max_tunnels_per_node` (the
    /// directory), `max_handshakes_in_progress`, `egress_listener.max_connections`. What is
    /// held above a lowered limit is kept; new tunnels or connections are refused until
    /// enough have ended.
    pub fn apply_limits(&self, cfg: &ResponderConfig) {
        let tunnels = &cfg.tunnel_listener;
        self.directory
            .set_limits(tunnels.max_tunnels, tunnels.max_tunnels_per_node);
        self.handshakes
            .set_limit(tunnels.max_handshakes_in_progress);
        self.egress_connections
            .set_limit(cfg.egress_listener.max_connections);
    }

    /// Which shards hold which tunnels (the admin page reads it).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Its live tunnels, with their traffic (the admin page reads it).
    pub fn tunnels(&self) -> &TunnelBoard {
        &self.tunnels
    }

    pub fn shutdown(&self) -> &ShutdownSignal {
        &self.shutdown
    }

    pub fn tenancy(&self) -> Tenancy {
        self.tenancy
    }

    /// The directory slot of a tunnel of `identity`: its namespace is the registry's tenant
    /// key; the per-node cap counts its own tenant's tunnels.
    pub fn slot<'a>(&self, identity: &'a TunnelIdentity) -> Slot<'a> {
        Slot {
            namespace: self.tenancy.registry_tenant(Some(&identity.tenant_id)),
            tenant: &identity.tenant_id,
            node: &identity.node_id,
            cluster: &identity.cluster_id,
        }
    }

    fn next_tunnel_id(&self) -> u64 {
        self.next_tunnel_id.fetch_add(1, Ordering::Relaxed)
    }

    /// (shards whose listeners accept, shards): `/ready` wants them equal.
    pub fn accepting_shards(&self) -> (usize, usize) {
        (self.accepting.load(Ordering::Relaxed), self.shards)
    }

    /// Egress connections open and tunnel handshakes in progress, process-wide (`/stats`).
    pub fn open_connections(&self) -> (usize, usize) {
        (self.egress_connections.held(), self.handshakes.held())
    }
}

/// Start-time warnings about the egress listener's tenant source.
fn warn_about_tenant_source(source: Option<&TenantSource>, cfg: &ResponderConfig) {
    let listen = cfg.egress_listener.listen;
    match source {
        Some(TenantSource::TrustedHeader(name)) => tracing::warn!(
            %listen,
            header = %name,
            "SECURITY: each egress request's tenant is the `{name}` header as sent \
             (responder.egress_listener.tenant.trusted_header): anyone who reaches the egress \
             listener directly can pick any tenant; expose it only behind a proxy that sets \
             that header on every request"
        ),
        Some(TenantSource::ClientCertificate { .. })
            if cfg
                .egress_listener
                .tls
                .as_ref()
                .is_none_or(|tls| tls.client_ca.is_none()) =>
        {
            tracing::warn!(
                %listen,
                "the egress listener takes tenants from client certificates, but it does not \
                 require them (egress_listener.tls.client_ca): every request will be refused \
                 with 401"
            )
        }
        _ => {}
    }
}

/// Certificates loaded for a reload, not yet in force ([`Responder::prepare_certificates`]).
pub struct Certificates {
    tunnel: Option<Replacement<ServerTls>>,
    egress: Option<Replacement<ServerTls>>,
}

/// One shard's view of the responder.
pub struct ResponderShard {
    shard: ShardId,
    shared: Arc<Responder>,
    registry: RefCell<Registry>,
    /// What new work reads (`settings`): swapped whole by a reload.
    settings: RefCell<Rc<Settings>>,
    /// Connections, tunnels and forwarded requests in flight: the drain waits for them.
    tasks: Rc<Tracker>,
    /// This shard's tunnel series (tenant, cluster) in its metrics block.
    tunnel_series: SeriesIndex,
    /// This shard's access log, for tunnel events (`None`: off).
    access_log: Option<ShardLog>,
}

impl ResponderShard {
    pub fn new(shared: Arc<Responder>, shard: ShardId) -> Rc<Self> {
        let settings = Settings::build(
            &shared.cfg,
            shared.drain_timeout,
            &shared.stats,
            shard,
            &shared.shutdown,
            shared.access_log.as_ref(),
        );
        Rc::new(ResponderShard {
            shard,
            registry: RefCell::new(Registry::default()),
            settings: RefCell::new(Rc::new(settings)),
            tasks: Tracker::new(),
            tunnel_series: SeriesIndex::default(),
            access_log: shared.access_log.as_ref().map(|log| log.shard(shard)),
            shared,
        })
    }

    /// The settings new work reads; keep the clone for the work's whole life.
    pub fn settings(&self) -> Rc<Settings> {
        self.settings.borrow().clone()
    }

    /// Applies a configuration generation on this shard (its applier): new settings for new
    /// work. A generation without a responder section changes nothing (the process side
    /// never publishes one while the responder runs: removing a role needs a restart).
    fn apply(&self, generation: &Generation) {
        let Some(cfg) = &generation.config.responder else {
            return;
        };
        let next = Settings::build(
            cfg,
            generation.config.drain_timeout,
            &self.shared.stats,
            self.shard,
            &self.shared.shutdown,
            self.shared.access_log.as_ref(),
        );
        *self.settings.borrow_mut() = Rc::new(next);
    }

    pub fn stats(&self) -> &ShardMetrics {
        self.shared.stats.shard(self.shard)
    }

    /// Takes `tunnel` out of this shard's registry at once: it refuses new streams (its
    /// initiator sent GOAWAY). Its driver still runs its streams in flight to their end, and
    /// removes it again (a no-op) when the connection ends.
    pub fn forget_tunnel(&self, tunnel: &registry::TunnelHandle) {
        let tenant = self
            .shared
            .tenancy()
            .registry_tenant(Some(&tunnel.identity.tenant_id));
        self.registry
            .borrow_mut()
            .remove(tenant, tunnel.id, &tunnel.identity);
    }

    /// Writes a tunnel event to the access log, if there is one.
    fn tunnel_event(&self, event: crate::access_log::TunnelEvent<'_>) {
        if let Some(log) = &self.access_log {
            log.tunnel(&event);
        }
    }

    /// A place for a new connection under `cap`, or `None`: the caller drops (closes) the
    /// connection at once, and `refused` counts it. Logged at 1, 2, 4, 8, … refusals per
    /// shard, so a flood cannot flood the log.
    fn admit(
        &self,
        cap: impl Fn(&Responder) -> &ConnectionCap,
        refused: impl Fn(&ShardMetrics) -> &AtomicU64,
        what: &str,
    ) -> Option<CapPermit> {
        let permit = cap(&self.shared).try_acquire();
        if permit.is_none() {
            let counter = refused(self.stats());
            inc(counter);
            let n = counter.load(Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(shard = self.shard, refused = n, "{what}: closed at once");
            }
        }
        permit
    }
}

/// Runs the responder on this shard until shutdown, then drains.
pub async fn run_shard(
    shared: Arc<Responder>,
    shard: ShardId,
    start: ShardStart,
    reload: Rc<ShardReload>,
) {
    let ctx = ResponderShard::new(shared, shard);
    let applier = Rc::downgrade(&ctx);
    reload.on_reload(move |generation| {
        if let Some(ctx) = applier.upgrade() {
            ctx.apply(generation);
        }
    });
    let ShardStart {
        inbox,
        tunnel_listener,
        egress_listener,
    } = start;
    let listeners = shard_listener(tunnel_listener).and_then(|tunnel| {
        let egress = shard_listener(egress_listener)?;
        Ok((tunnel, egress))
    });
    let (tunnel_listener, egress_listener) = match listeners {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::error!(shard, "cannot accept on the responder's listeners: {e}");
            return ctx.shared.shutdown.fatal();
        }
    };
    ctx.shared.accepting.fetch_add(1, Ordering::Relaxed);
    monoio::spawn(inbox_loop(ctx.clone(), inbox));
    monoio::spawn(cleanup_loop(ctx.clone()));
    let acceptor = monoio::spawn(acceptor::run(ctx.clone(), tunnel_listener));
    let egress = egress::run(ctx.clone(), egress_listener);
    egress.await;
    acceptor.await;
    // Listeners are closed; in-flight requests and tunnels finish within the grace period.
    let drain_timeout = ctx.settings().drain_timeout;
    ctx.tasks.drain(drain_timeout, shard).await;
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
                    .spawn(reverse_cluster::serve_forwarded(ctx.clone(), *forwarded));
            }
            ShardMsg::Serve(handed) => egress::adopt(&ctx, *handed),
        }
    }
}

async fn cleanup_loop(ctx: Rc<ResponderShard>) {
    loop {
        // Read each time: a reload's new period starts with the next sweep.
        let interval = ctx.settings().cfg.cleanup_interval;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::directory::{Collision, PlaceError, Placement};

    fn responder(tenant: Option<TenantSource>) -> Arc<Responder> {
        let mut config = Config::empty();
        let mut r = ResponderConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
        );
        r.tunnel_listener.max_tunnels_per_node = 1;
        r.egress_listener.tenant = tenant;
        config.responder = Some(r);
        let (_shutdown, signal) = crate::shard::shutdown::Shutdown::new();
        let built = Responder::new(&config, 1, Metrics::new(1), signal, None);
        built.ok().flatten().expect("a responder").0
    }

    fn id(tenant: &str, node: &str, cluster: &str) -> TunnelIdentity {
        TunnelIdentity {
            node_id: node.into(),
            cluster_id: cluster.into(),
            tenant_id: tenant.into(),
        }
    }

    #[test]
    fn a_tenant_source_isolates_placement_per_tenant() {
        let r = responder(Some(TenantSource::Fixed("a".into())));
        assert_eq!(r.tenancy(), Tenancy::Isolated);
        let (a, b) = (id("a", "n1", "c1"), id("b", "n1", "c1"));
        assert_eq!(r.slot(&a).namespace, "a");
        r.directory()
            .place(r.slot(&a), Placement::Spread { preferred: 0 })
            .expect("a's n1");
        r.directory()
            .place(r.slot(&b), Placement::Spread { preferred: 0 })
            .expect("b's n1: another namespace, its own per-node cap");
        assert!(matches!(
            r.directory()
                .place(r.slot(&a), Placement::Spread { preferred: 0 }),
            Err(PlaceError::TooManyForNode { .. })
        ));
        // A cluster named after a live node collides only within its tenant.
        r.directory()
            .place(
                r.slot(&id("b", "x", "n9")),
                Placement::Spread { preferred: 0 },
            )
            .expect("no node n9 anywhere");
        r.directory()
            .place(
                r.slot(&id("b", "y", "c1")),
                Placement::Spread { preferred: 0 },
            )
            .expect("b joins its own c1");
        assert_eq!(
            r.directory().place(
                r.slot(&id("a", "z", "n1")),
                Placement::Spread { preferred: 0 }
            ),
            Err(PlaceError::Collision(Collision::ClusterIsNode("n1".into())))
        );
        r.directory()
            .place(
                r.slot(&id("c", "z", "n1")),
                Placement::Spread { preferred: 0 },
            )
            .expect("tenant c has no node n1");
    }

    #[test]
    fn without_a_source_tenants_share_one_namespace() {
        let r = responder(None);
        assert_eq!(r.tenancy(), Tenancy::Shared);
        let (a, b) = (id("a", "n1", "c1"), id("b", "other", "n1"));
        assert_eq!(r.slot(&a).namespace, "");
        r.directory()
            .place(r.slot(&a), Placement::Spread { preferred: 0 })
            .expect("a's n1");
        assert!(matches!(
            r.directory()
                .place(r.slot(&b), Placement::Spread { preferred: 0 }),
            Err(PlaceError::Collision(_))
        ));
    }
}
