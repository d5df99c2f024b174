//! Local services behind the initiator: one pool per cluster per shard, protecting the service
//! as HAProxy's `maxconn` + queue and Envoy's circuit breakers do (ARCHITECTURE.md §7).
//!
//! Every request checks out a connection from its cluster's pool ([`queue::PoolState`], the
//! bookkeeping, pure): it waits in a bounded FIFO queue (`max_pending`, `queue_timeout`) for
//! the next connection that is free — it never opens one of its own — within `max_requests`
//! requests in flight. Connections are opened for demand, within `max_connections` open and
//! `max_connecting` connects in flight per endpoint; endpoints take turns, and one that keeps
//! failing is ejected for a while ([`outlier`]). A full queue is a 503 `local_overloaded`, a
//! wait beyond `queue_timeout` a 503 `queue_timeout`. **Every limit is per shard**: a cluster
//! sees at most `shards × max_connections` connections from one initiator (a tunnel's streams
//! are all served by the shard that holds the tunnel, so dividing by shards would starve it).
//!
//! HTTP/1.1 (`crate::http::h1::client`, no task per connection): a connection carries one
//! request at a time and goes back to the pool once its response body has been read in full
//! (at most `max_idle_per_shard` wait idle, each with a read pending that notices a close by
//! the service). A request abandoned before that — its client went away, its route timed out,
//! its body broke — closes its connection: it is never returned with a request in flight.
//! HTTP/2 (hyper): one multiplexed connection per endpoint; an abandoned request's stream is
//! reset (RST_STREAM CANCEL, by hyper and h2 when its handles are dropped).
//!
//! Retries on another connection: a request that found its idle connection closed by the
//! service goes to another one unsent (as often as that happens: each such connection is
//! closed); a request hyper hands back unsent (an HTTP/2 connection closing), and an
//! idempotent request without a body (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) that met a reset
//! or a close before any response byte, once. A connect that fails is retried on another
//! endpoint in service by the pool itself.
//!
//! With `clusters.NAME.tls` every connection is TLS ([`ClusterTls`]): the service is verified
//! against `ca` (and `spki_pins`) under the endpoint's host name or `sni`, the client
//! certificate is presented when configured, and ALPN offers `http/1.1` or `h2` as the
//! cluster's protocol says. The handshake is bounded by `connect_timeout`; a failure makes the
//! request `LocalUnreachable` (503) with the failure's label in the logged detail only.

#[cfg(test)]
mod io_tests;
mod outlier;
mod queue;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{ClientTlsConfig, ClusterConfig, Config, Protocol};
use crate::http::body::RecvBody;
use crate::http::h1::client as h1;
use crate::http::io::HyperIo;
use crate::http::replay::copy_head;
use crate::http::rt::{ShardExecutor, ShardTimer};
use crate::metrics::{inc, Metrics, ShardMetrics};
use crate::net::completion::CompletionStream;
use crate::pipeline::logged::Counted;
use crate::pipeline::ProxyError;
use crate::shard::ShardId;
use crate::tls::{ClientTls, HandshakeError, Reloadable, TlsLoadError};
use crate::tunnel::TunnelStream;

use outlier::{Ejection, OutlierSettings};
use queue::{Action, ConnId, Grant, Handle, Limits, PoolState, QueueFull, WaiterId};

/// The body of a request forwarded to a local service: the tunnel stream's body, counted; or
/// nothing, for the replay of a request that had no body.
pub struct LocalBody(Option<Counted<RecvBody<()>>>);

impl LocalBody {
    pub fn new(body: Counted<RecvBody<()>>) -> Self {
        Self(Some(body))
    }

    fn empty() -> Self {
        Self(None)
    }
}

impl Body for LocalBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        match self.0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Some(body) => body.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// Why a local service could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cluster has no endpoints")]
    NoEndpoints,
    #[error("connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("TLS to {endpoint} failed ({}): {source}", source.failure.label())]
    Tls {
        endpoint: String,
        source: HandshakeError,
    },
    #[error("TLS to {endpoint} failed (timeout): no handshake within {timeout:?}")]
    TlsTimeout { endpoint: String, timeout: Duration },
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP/1.1: {0}")]
    H1(#[from] h1::Error),
    /// Cannot happen: a lease sends once, before it is recycled.
    #[error("the connection was released before the request was sent")]
    Released,
}

impl UpstreamError {
    /// The request's failure: unreachable (503) when the service could not be reached at all,
    /// failed (502) when it broke off mid-exchange.
    fn into_proxy_error(self, cluster: &str) -> ProxyError {
        let (cluster, detail) = (cluster.to_owned(), self.to_string());
        match self {
            UpstreamError::NoEndpoints
            | UpstreamError::Connect { .. }
            | UpstreamError::Tls { .. }
            | UpstreamError::TlsTimeout { .. } => ProxyError::LocalUnreachable { cluster, detail },
            UpstreamError::Http(_) | UpstreamError::H1(_) | UpstreamError::Released => {
                ProxyError::LocalFailed { cluster, detail }
            }
        }
    }

    /// Whether the exchange broke — a reset, a close — before any response byte, so an
    /// idempotent request may be sent again. A malformed response, a body of ours that failed
    /// and a timeout are not such breaks.
    fn broke_before_response(&self) -> bool {
        match self {
            UpstreamError::Http(e) => !(e.is_parse() || e.is_user() || e.is_timeout()),
            UpstreamError::H1(e) => e.broke_before_response(),
            _ => false,
        }
    }
}

/// TLS to one local cluster (`clusters.NAME.tls`): a client configuration per endpoint, each
/// verifying that endpoint's host (or `sni`), with ALPN for the cluster's protocol. Loaded
/// once per process, shared by every shard, and reloaded from its files on SIGHUP
/// ([`reload_local_tls`]): new connections use the new files.
#[derive(Debug)]
pub struct ClusterTls {
    /// Index-aligned with the cluster's endpoints.
    endpoints: Vec<ClientTls>,
}

impl ClusterTls {
    /// Loads `cluster.tls`; `None` for a plaintext cluster. Endpoints that verify the same
    /// name share one configuration.
    pub fn load(cluster: &ClusterConfig) -> Result<Option<Self>, TlsLoadError> {
        match &cluster.tls {
            Some(tls) => Self::load_with(tls, cluster).map(Some),
            None => Ok(None),
        }
    }

    fn load_with(tls: &ClientTlsConfig, cluster: &ClusterConfig) -> Result<Self, TlsLoadError> {
        let alpn: &[&[u8]] = match cluster.protocol {
            Protocol::Http1 => &[b"http/1.1"],
            Protocol::Http2 => &[b"h2"],
        };
        let mut by_name: Vec<(&str, ClientTls)> = Vec::new();
        let mut endpoints = Vec::with_capacity(cluster.endpoints.len());
        for endpoint in &cluster.endpoints {
            let host = endpoint_host(endpoint);
            let name = tls.sni.as_deref().unwrap_or(host);
            let client = match by_name.iter().find(|(n, _)| *n == name) {
                Some((_, client)) => client.clone(),
                None => {
                    let client = ClientTls::load(tls, host, alpn)?;
                    by_name.push((name, client.clone()));
                    client
                }
            };
            endpoints.push(client);
        }
        Ok(Self { endpoints })
    }
}

/// The TLS of every local cluster that has `tls:`, by cluster name.
pub type LocalTls = HashMap<String, Arc<Reloadable<ClusterTls>>>;

/// Re-reads every local cluster's TLS files; returns the ones that failed (named), whose old
/// configuration stays in force.
pub fn reload_local_tls(tls: &LocalTls) -> Vec<String> {
    tls.iter()
        .filter_map(|(name, t)| {
            t.reload()
                .err()
                .map(|e| format!("clusters.{name}.tls: {e}"))
        })
        .collect()
}

/// Loads the TLS of every local cluster (the clusters `initiator.routes` name) once, for all
/// shards. The error names the cluster and the file.
pub fn load_local_tls(config: &Config) -> io::Result<LocalTls> {
    let mut loaded = LocalTls::new();
    let routes = config.initiator.iter().flat_map(|i| &i.routes);
    for name in routes.map(|r| &r.cluster) {
        let Some(cluster) = config.clusters.get(name) else {
            continue;
        };
        if loaded.contains_key(name) {
            continue;
        }
        if let Some(tls) = load_cluster_tls(name, cluster)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        {
            loaded.insert(name.clone(), tls);
        }
    }
    Ok(loaded)
}

/// Loads one local cluster's TLS (`None`: plaintext); the error names the cluster and file.
pub fn load_cluster_tls(
    name: &str,
    cluster: &ClusterConfig,
) -> Result<Option<Arc<Reloadable<ClusterTls>>>, String> {
    let Some(tls) = cluster.tls.clone() else {
        return Ok(None);
    };
    let cluster = cluster.clone();
    Reloadable::new(move || ClusterTls::load_with(&tls, &cluster))
        .map(|r| Some(Arc::new(r)))
        .map_err(|e| format!("clusters.{name}.tls: {e}"))
}

/// The host of a `host:port` endpoint (IPv6 keeps its brackets; `ClientTls` removes them).
fn endpoint_host(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host)
}

/// A connection to an endpoint, plain or TLS: the stream type tunnels run on
/// ([`TunnelStream`], its `Plain` and `Dialed` variants), which already carries both for the
/// HTTP libraries. Under HTTP/1.1 it is the connection for its whole life.
type Dialed = TunnelStream;

/// A connection's request handle.
enum Sender {
    /// An HTTP/1.1 connection itself, idle or checked out: dropping it closes the socket.
    H1(Box<h1::Conn<Dialed>>),
    /// An HTTP/1.1 connection out with its request (in the request's future or its response
    /// body): it comes back when the body ends whole, else it is closed where it is.
    Lent,
    H2(http2::SendRequest<LocalBody>),
}

impl Handle for Sender {
    fn share(&self) -> Option<Self> {
        match self {
            Sender::H1(_) | Sender::Lent => None,
            Sender::H2(s) => Some(Sender::H2(s.clone())),
        }
    }
}

/// A response body from a local service.
enum LocalResponse {
    H1(h1::ResponseBody<Dialed, LocalBody>),
    H2(Incoming),
}

/// Where a request waiting in the queue learns its fate: a connection, or the failure of the
/// connects made for it.
#[derive(Default)]
struct Slot {
    outcome: RefCell<Option<Result<Grant<Sender>, ProxyError>>>,
    waker: Cell<Option<Waker>>,
}

impl Slot {
    fn fill(&self, outcome: Result<Grant<Sender>, ProxyError>) {
        *self.outcome.borrow_mut() = Some(outcome);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn take(&self) -> Option<Result<Grant<Sender>, ProxyError>> {
        self.outcome.borrow_mut().take()
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<Grant<Sender>, ProxyError>> {
        match self.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

type Actions = Vec<Action<Sender, Rc<Slot>>>;

/// One local cluster on one shard: its connections, requests in flight and queue.
pub struct LocalCluster {
    pub name: Rc<str>,
    config: ClusterConfig,
    tls: Option<Arc<Reloadable<ClusterTls>>>,
    stats: Metrics,
    shard: ShardId,
    state: RefCell<PoolState<Sender, Rc<Slot>>>,
    /// The task driving each open connection closes it when its switch here is dropped.
    switches: RefCell<HashMap<ConnId, oneshot::Sender<()>>>,
    /// Per endpoint, its connects that failed in a row: the first of a run is a warning,
    /// the rest are debug lines until a connect succeeds (`note_connect`).
    failing: RefCell<Vec<u64>>,
    /// The task that looks for idle HTTP/1.1 connections closed by the service is running.
    watching_idle: Cell<bool>,
}

/// How often idle HTTP/1.1 connections are looked at for a close by the service, so that
/// their sockets do not linger half-closed until the next request finds them.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl LocalCluster {
    /// The cluster `config` on `shard`, over TLS when `tls` is given (from [`load_local_tls`]).
    pub fn new(
        name: Rc<str>,
        config: ClusterConfig,
        tls: Option<Arc<Reloadable<ClusterTls>>>,
        stats: Metrics,
        shard: ShardId,
    ) -> Self {
        let limits = Limits {
            max_connections: config.max_connections,
            max_connecting: config.max_connecting,
            max_pending: config.max_pending,
            max_requests: config.max_requests,
            max_idle: config.max_idle_per_shard,
            multiplexed: config.protocol == Protocol::Http2,
        };
        let outliers = OutlierSettings {
            consecutive_failures: config.consecutive_failures,
            ejection_time: config.ejection_time,
            max_ejection_time: config.max_ejection_time,
        };
        let state = PoolState::new(limits, config.endpoints.len(), outliers);
        Self {
            name,
            tls,
            stats,
            shard,
            state: RefCell::new(state),
            switches: RefCell::new(HashMap::new()),
            failing: RefCell::new(vec![0; config.endpoints.len()]),
            watching_idle: Cell::new(false),
            config,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.config.protocol
    }

    /// The settings this pool was built from: a reload keeps the pool while they stay equal.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Its TLS, shared with the pools of the same cluster on other generations and shards.
    pub fn tls(&self) -> Option<&Arc<Reloadable<ClusterTls>>> {
        self.tls.as_ref()
    }

    fn stats(&self) -> &ShardMetrics {
        self.stats.shard(self.shard)
    }

    /// Sends `req` (origin-form URI and `Host` for HTTP/1.1, absolute URI for HTTP/2) and
    /// returns the response head. Its body holds the connection (HTTP/1.1) or the request slot
    /// until it ends; dropping the future or the body first abandons the request.
    ///
    /// Not an `async fn`: one would keep the request twice, as its argument and as the local it
    /// moves into, and the future (boxed per request by the caller) would pass the sizes glibc
    /// serves from its per-thread cache. The block below captures it once.
    #[allow(clippy::manual_async_fn)]
    pub fn send(
        self: &Rc<Self>,
        mut req: Request<LocalBody>,
    ) -> impl Future<Output = Result<Response<PooledBody>, ProxyError>> + use<'_> {
        async move {
            // Sent once more if the first attempt broke before any response byte.
            let replayable = replayable(&req);
            // The request that asks for a connection names it in the log if the connect fails.
            let cause: Option<Rc<str>> = req
                .headers()
                .get(&crate::pipeline::REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(Rc::from);
            let mut retried = false;
            loop {
                let mut lease = self.checkout(cause.clone()).await?;
                // Boxed: inline it made this future (boxed by the caller) about 1.4 KiB, past the
                // sizes glibc serves from its per-thread cache.
                let failure = match Box::pin(lease.send(req, replayable && !retried)).await {
                    Ok(response) => {
                        self.state.borrow_mut().success(lease.endpoint());
                        return Ok(response.map(|body| PooledBody::new(body, lease)));
                    }
                    Err(failure) => failure,
                };
                let endpoint = lease.endpoint();
                drop(lease);
                let (error, again) = match failure {
                    // Not a failure of the request, nor of the endpoint: the service closed an
                    // idle connection. The lease closed it; the next one is tried.
                    SendFailure::Stale(unsent) => {
                        tracing::debug!(cluster = %self.name, "an idle connection was closed by the service; the request goes to another");
                        req = unsent;
                        continue;
                    }
                    SendFailure::Failed { error, again } => (error, again),
                };
                if !matches!(again, Some(Again::Unsent(_))) {
                    self.endpoint_failed(endpoint);
                }
                let again = match again {
                    _ if retried => None,
                    Some(Again::Unsent(unsent)) => Some(unsent),
                    Some(Again::Replay(replay)) => {
                        Some(replay).filter(|_| error.broke_before_response())
                    }
                    None => None,
                };
                let Some(again) = again else {
                    return Err(error.into_proxy_error(&self.name));
                };
                retried = true;
                inc(&self.stats().initiator_local_retries);
                tracing::debug!(cluster = %self.name, "retrying on another connection: {error}");
                req = again;
            }
        }
    }

    /// A connection for one request, after waiting in the queue if need be.
    async fn checkout(self: &Rc<Self>, cause: Option<Rc<str>>) -> Result<Lease, ProxyError> {
        let slot = Rc::new(Slot::default());
        let checked = self
            .state
            .borrow_mut()
            .checkout(slot.clone(), Instant::now());
        let (id, actions) = checked.map_err(|QueueFull| ProxyError::LocalOverloaded {
            cluster: self.name.to_string(),
            reason: format!(
                "its queue of pending requests is full (max_pending {})",
                self.config.max_pending
            ),
        })?;
        self.run_for(actions, None, cause);
        let mut waiting = Waiting {
            cluster: self,
            id,
            slot,
            done: false,
        };
        let outcome = match waiting.slot.take() {
            Some(outcome) => outcome,
            None => {
                let timeout = self.config.queue_timeout;
                let slot = waiting.slot.clone();
                match crate::shard::timer::timeout(timeout, poll_fn(|cx| slot.poll(cx))).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        return Err(ProxyError::QueueTimeout {
                            cluster: self.name.to_string(),
                            timeout,
                        })
                    }
                }
            }
        };
        waiting.done = true;
        outcome.map(|grant| Lease {
            cluster: self.clone(),
            grant: Some(grant),
            sent: false,
            closing: false,
        })
    }

    /// Carries out what the pool state asks for. `error`: why the connect whose failure
    /// produced these actions failed, for the requests it fails.
    fn run(self: &Rc<Self>, actions: Actions, error: Option<&UpstreamError>) {
        self.run_for(actions, error, None)
    }

    /// [`run`](Self::run) for the request whose id is `cause`: the connects it opens name it.
    fn run_for(
        self: &Rc<Self>,
        actions: Actions,
        error: Option<&UpstreamError>,
        cause: Option<Rc<str>>,
    ) {
        for action in actions {
            match action {
                Action::Grant { waiter, grant } => waiter.fill(Ok(grant)),
                Action::Fail { waiter } => waiter.fill(Err(ProxyError::LocalUnreachable {
                    cluster: self.name.to_string(),
                    detail: error.map_or_else(|| "connect failed".into(), |e| e.to_string()),
                })),
                Action::Connect { conn, endpoint } => {
                    monoio::spawn(self.clone().establish(conn, endpoint, cause.clone()));
                }
                Action::Close { conn, handle } => {
                    // An HTTP/1.1 connection's socket goes with its handle, and it has no task
                    // to report that.
                    let gone = !matches!(handle, Sender::H2(_));
                    drop(handle);
                    self.close(conn);
                    if gone {
                        self.gone(conn);
                    }
                }
            }
        }
    }

    /// Closes HTTP/2 connection `conn`: its task drops it (and the socket) when the switch
    /// goes, and then reports it gone.
    fn close(&self, conn: ConnId) {
        self.switches.borrow_mut().remove(&conn);
    }

    /// Starts the task that closes idle HTTP/1.1 connections the service closed, unless it
    /// runs. It looks every [`IDLE_CHECK`] and ends when no connection is idle.
    fn watch_idle(self: &Rc<Self>) {
        if self.watching_idle.replace(true) {
            return;
        }
        let cluster = Rc::downgrade(self);
        monoio::spawn(async move {
            loop {
                crate::shard::timer::sleep(IDLE_CHECK).await;
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                let stale = |handle: &mut Sender| match handle {
                    Sender::H1(conn) => conn.is_stale(),
                    _ => false,
                };
                let (idle, actions) = cluster.state.borrow_mut().prune(stale, Instant::now());
                cluster.run(actions, None);
                if idle == 0 {
                    cluster.watching_idle.set(false);
                    return;
                }
            }
        });
    }

    /// HTTP/1.1 connection `conn` was dropped, and its socket closed with it.
    fn gone(self: &Rc<Self>, conn: ConnId) {
        let actions = self.state.borrow_mut().closed(conn, Instant::now());
        self.run(actions, None);
    }

    /// Opens connection `conn` to endpoint `endpoint` and reports the outcome to the state.
    /// `cause`: the id of the request it was opened for, if any.
    async fn establish(self: Rc<Self>, conn: ConnId, endpoint: usize, cause: Option<Rc<str>>) {
        inc(&self.stats().initiator_local_connects);
        let started = match self.connect_to(endpoint).await {
            Ok(dialed) => self.start(conn, dialed).await,
            Err(e) => Err(e),
        };
        let now = Instant::now();
        match started {
            Ok(sender) => {
                self.note_connect(endpoint, None, cause.as_deref());
                let actions = self.state.borrow_mut().connected(conn, sender, now);
                self.run(actions, None);
            }
            Err(e) => {
                inc(&self.stats().initiator_local_connect_failures);
                self.note_connect(endpoint, Some(&e), cause.as_deref());
                let (actions, ejection) = self.state.borrow_mut().connect_failed(conn, now);
                if let Some(ejection) = ejection {
                    self.ejected(ejection);
                }
                self.run_for(actions, Some(&e), cause);
            }
        }
    }

    /// Logs a connect's outcome without flooding: the first failure of a run (refused, timed
    /// out, TLS refused) is a warning naming the cluster, the endpoint, the error and the
    /// request it was for; later ones in the same run are debug lines; the first success after
    /// a run says how many failed. Every failure is counted
    /// (`initiator_local_connect_failures`).
    fn note_connect(&self, endpoint: usize, error: Option<&UpstreamError>, cause: Option<&str>) {
        let mut failing = self.failing.borrow_mut();
        let Some(run) = failing.get_mut(endpoint) else {
            return;
        };
        let name = self
            .config
            .endpoints
            .get(endpoint)
            .map_or("?", String::as_str);
        let request_id = cause.unwrap_or("-");
        match error {
            Some(e) if *run == 0 => {
                *run = 1;
                tracing::warn!(cluster = %self.name, endpoint = %name, request_id = %request_id, error = %e, "cannot connect to the local service; further failures of this endpoint are logged at debug until it accepts a connection again");
            }
            Some(e) => {
                *run += 1;
                tracing::debug!(cluster = %self.name, endpoint = %name, request_id = %request_id, failures = *run, "cannot connect to the local service: {e}");
            }
            None if *run > 0 => {
                tracing::info!(cluster = %self.name, endpoint = %name, failures = *run, "local service accepts connections again");
                *run = 0;
            }
            None => {}
        }
    }

    /// A request to `endpoint` broke before its response head.
    fn endpoint_failed(self: &Rc<Self>, endpoint: usize) {
        let (actions, ejection) = self.state.borrow_mut().failure(endpoint, Instant::now());
        if let Some(ejection) = ejection {
            self.ejected(ejection);
        }
        self.run(actions, None);
    }

    fn ejected(&self, ejection: Ejection) {
        inc(&self.stats().initiator_local_ejections);
        let endpoint = self
            .config
            .endpoints
            .get(ejection.endpoint)
            .map_or("?", String::as_str);
        tracing::warn!(
            cluster = %self.name,
            endpoint,
            times = ejection.times,
            "local endpoint ejected for {:?} after {} failures in a row",
            ejection.duration,
            self.config.consecutive_failures
        );
    }

    /// HTTP on a new connection: HTTP/2 driven by a task of its own until it ends or the pool
    /// closes it; HTTP/1.1 driven by each request in turn.
    async fn start(self: &Rc<Self>, conn: ConnId, dialed: Dialed) -> Result<Sender, UpstreamError> {
        match (self.config.protocol, dialed) {
            (Protocol::Http1, dialed) => Ok(Sender::H1(h1::Conn::new(dialed))),
            (Protocol::Http2, io) => self.start_http2(conn, io).await,
        }
    }

    async fn start_http2<I>(self: &Rc<Self>, conn: ConnId, io: I) -> Result<Sender, UpstreamError>
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (sender, connection) = http2::Builder::new(ShardExecutor)
            .timer(ShardTimer)
            .initial_stream_window_size(crate::tunnel::STREAM_WINDOW)
            .initial_connection_window_size(crate::tunnel::CONNECTION_WINDOW)
            .handshake(HyperIo(io))
            .await?;
        self.drive(conn, connection);
        Ok(Sender::H2(sender))
    }

    /// Drives `connection` on a task until it ends or its switch is dropped, then tells the
    /// pool it is gone.
    fn drive<F>(self: &Rc<Self>, conn: ConnId, connection: F)
    where
        F: Future<Output = hyper::Result<()>> + 'static,
    {
        let (switch, mut off) = oneshot::channel::<()>();
        self.switches.borrow_mut().insert(conn, switch);
        let cluster = Rc::downgrade(self);
        monoio::spawn(async move {
            let ended = {
                let mut connection = pin!(connection);
                poll_fn(|cx| {
                    if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                        return Poll::Ready(Some(result));
                    }
                    Pin::new(&mut off).poll(cx).map(|_| None)
                })
                .await
            };
            match ended {
                Some(Err(e)) => tracing::debug!(conn, "local connection: {e}"),
                Some(Ok(())) => {}
                None => tracing::trace!(conn, "local connection closed by the pool"),
            }
            forget_connection(&cluster, conn);
        });
    }

    /// Connects to endpoint `endpoint`, with TLS when the cluster has it.
    async fn connect_to(&self, endpoint: usize) -> Result<Dialed, UpstreamError> {
        let i = endpoint;
        let Some(endpoint) = self.config.endpoints.get(i) else {
            return Err(UpstreamError::NoEndpoints);
        };
        let connect_err = |source| UpstreamError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let timeout = self.config.connect_timeout;
        let stream = crate::net::connect(endpoint, timeout)
            .await
            .map_err(connect_err)?;
        let io = CompletionStream::new(stream);
        let current = self.tls.as_ref().map(|t| t.current());
        let Some(tls) = current.as_ref().and_then(|t| t.endpoints.get(i)) else {
            return Ok(Dialed::Plain(io));
        };
        match monoio::time::timeout(timeout, tls.connect(io)).await {
            Ok(Ok(stream)) => Ok(Dialed::Dialed(Box::new(stream))),
            Ok(Err(source)) => Err(UpstreamError::Tls {
                endpoint: endpoint.clone(),
                source,
            }),
            Err(_) => Err(UpstreamError::TlsTimeout {
                endpoint: endpoint.clone(),
                timeout,
            }),
        }
    }
}

/// An HTTP/2 connection's task ended: the pool forgets it (if the pool is still there).
fn forget_connection(cluster: &Weak<LocalCluster>, conn: ConnId) {
    if let Some(cluster) = cluster.upgrade() {
        cluster.switches.borrow_mut().remove(&conn);
        let actions = cluster.state.borrow_mut().closed(conn, Instant::now());
        cluster.run(actions, None);
    }
}

/// A request in the queue; leaving it (a timeout, a client gone) takes it out, and gives back
/// a connection granted meanwhile.
struct Waiting<'a> {
    cluster: &'a Rc<LocalCluster>,
    id: WaiterId,
    slot: Rc<Slot>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let now = Instant::now();
        let mut actions = self.cluster.state.borrow_mut().cancel(self.id, now);
        if let Some(Ok(grant)) = self.slot.take() {
            actions.extend(self.cluster.state.borrow_mut().give_back(grant, now));
        }
        self.cluster.run(actions, None);
    }
}

/// Why sending on a connection failed.
enum SendFailure {
    /// The idle HTTP/1.1 connection was found closed by the service: nothing was written.
    Stale(Request<LocalBody>),
    /// `again`: the request, when it may be sent once more.
    Failed {
        error: UpstreamError,
        again: Option<Again>,
    },
}

/// A failed request that may be sent once more.
enum Again {
    /// hyper gave the request back: nothing of it was written.
    Unsent(Request<LocalBody>),
    /// A replayable request ([`replayable`]); something of it may have been written.
    Replay(Request<LocalBody>),
}

/// A connection checked out for one request, with its request slot. Dropped after the
/// request was sent and before [`recycle`](Self::recycle), it abandons the request: an
/// HTTP/1.1 connection is closed, never reused.
struct Lease {
    cluster: Rc<LocalCluster>,
    /// `None` once recycled.
    grant: Option<Grant<Sender>>,
    sent: bool,
    /// HTTP/2: hyper refused the request, the connection is closing; no new request may pick
    /// it (its streams in flight go on).
    closing: bool,
}

impl Lease {
    fn endpoint(&self) -> usize {
        self.grant.as_ref().map_or(0, |g| g.endpoint)
    }

    /// `replayable`: the request may be sent once more if this attempt fails (see
    /// [`replayable`]); the failure then carries it as `replay`.
    async fn send(
        &mut self,
        req: Request<LocalBody>,
        replayable: bool,
    ) -> Result<Response<LocalResponse>, SendFailure> {
        self.sent = true;
        let released = |req| SendFailure::Failed {
            error: UpstreamError::Released,
            again: Some(Again::Unsent(req)),
        };
        let Some(handle) = self.grant.as_mut().map(|g| &mut g.handle) else {
            return Err(released(req));
        };
        match handle {
            Sender::H1(_) => {
                let Sender::H1(mut conn) = std::mem::replace(handle, Sender::Lent) else {
                    return Err(released(req));
                };
                if conn.is_stale() {
                    return Err(SendFailure::Stale(req));
                }
                // The connection gives the head back on failure: no copy is kept.
                match conn.send(req).await {
                    Ok(response) => Ok(response.map(LocalResponse::H1)),
                    Err(h1::SendError { error, head }) => Err(SendFailure::Failed {
                        error: UpstreamError::H1(error),
                        again: replayable
                            .then(|| Again::Replay(Request::from_parts(head, LocalBody::empty()))),
                    }),
                }
            }
            Sender::H2(s) => {
                // hyper keeps the request: the head is copied first.
                let (head, body) = req.into_parts();
                let replay =
                    replayable.then(|| Request::from_parts(copy_head(&head), LocalBody::empty()));
                let req = Request::from_parts(head, body);
                match s.try_send_request(req).await {
                    Ok(response) => Ok(response.map(LocalResponse::H2)),
                    Err(mut e) => {
                        let unsent = e.take_message();
                        self.closing = unsent.is_some();
                        Err(SendFailure::Failed {
                            error: UpstreamError::Http(e.into_error()),
                            again: unsent.map(Again::Unsent).or(replay.map(Again::Replay)),
                        })
                    }
                }
            }
            Sender::Lent => Err(released(req)),
        }
    }

    /// The response ended whole: the request slot is free, and an HTTP/1.1 connection that
    /// came back from its body (`conn`) goes back to the pool; one that did not (the response
    /// asked for a close, or it is unusable) is closed.
    fn recycle(mut self, conn: Option<Box<h1::Conn<Dialed>>>) {
        let Some(mut grant) = self.grant.take() else {
            return;
        };
        if let Some(conn) = conn {
            grant.handle = Sender::H1(conn);
        }
        let cluster = self.cluster.clone();
        let id = grant.conn;
        let now = Instant::now();
        let reusable = !matches!(grant.handle, Sender::Lent);
        let actions = cluster.state.borrow_mut().finish(id, reusable, now);
        cluster.run(actions, None);
        match grant.handle {
            Sender::H1(mut conn) => {
                conn.park();
                let actions = cluster
                    .state
                    .borrow_mut()
                    .returned(id, Sender::H1(conn), now);
                cluster.run(actions, None);
                cluster.watch_idle();
            }
            Sender::Lent => cluster.gone(id),
            Sender::H2(_) => {}
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        let cluster = &self.cluster;
        let now = Instant::now();
        let id = grant.conn;
        let mut gone = false;
        let actions = if !self.sent {
            cluster.state.borrow_mut().give_back(grant, now)
        } else {
            match grant.handle {
                Sender::H1(_) | Sender::Lent => {
                    // Its request is unfinished (abandoned, or broken), or the connection was
                    // found closed: it is never reused, and its socket is closed by now.
                    tracing::debug!(cluster = %cluster.name, conn = grant.conn, "local connection closed with its request unfinished");
                    gone = true;
                    cluster.state.borrow_mut().finish(grant.conn, false, now)
                }
                // hyper resets the stream (RST_STREAM CANCEL) as its handles go.
                Sender::H2(_) => {
                    let mut state = cluster.state.borrow_mut();
                    let mut actions = Vec::new();
                    if self.closing {
                        actions.extend(state.closed(grant.conn, now));
                    }
                    actions.extend(state.finish(grant.conn, true, now));
                    actions
                }
            }
        };
        cluster.run(actions, None);
        if gone {
            cluster.gone(id);
        }
    }
}

/// A local service's response body. It holds its [`Lease`] until it ends — then the
/// connection goes back to the pool — or fails or is dropped first, which abandons the request
/// (an HTTP/1.1 connection is closed).
pub struct PooledBody {
    inner: LocalResponse,
    lease: Option<Lease>,
}

impl PooledBody {
    fn new(inner: LocalResponse, lease: Lease) -> Self {
        let mut body = Self {
            inner,
            lease: Some(lease),
        };
        if body.is_end_stream() {
            body.recycle();
        }
        body
    }

    fn recycle(&mut self) {
        if let Some(lease) = self.lease.take() {
            let conn = match &mut self.inner {
                LocalResponse::H1(body) => body.take_conn(),
                LocalResponse::H2(_) => None,
            };
            lease.recycle(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            LocalResponse::H1(body) => Pin::new(body).poll_frame(cx).map_err(UpstreamError::from),
            LocalResponse::H2(body) => Pin::new(body).poll_frame(cx).map_err(UpstreamError::from),
        };
        match &polled {
            Poll::Ready(None) => this.recycle(),
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.recycle(),
            // Broken: the lease goes, and the connection with it.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            LocalResponse::H1(body) => body.is_end_stream(),
            LocalResponse::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            LocalResponse::H1(body) => body.size_hint(),
            LocalResponse::H2(body) => body.size_hint(),
        }
    }
}

/// Whether `req` may be sent once more if its attempt meets a reset before any response byte:
/// idempotent (RFC 9110 §9.2.2) and without a body.
fn replayable(req: &Request<LocalBody>) -> bool {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent && req.body().is_end_stream()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::tls::testing::Pki;
    use crate::tls::ServerTls;

    /// A TLS server on loopback that completes handshakes (and holds each connection a
    /// moment), with `alpn`.
    fn tls_server(pki: &Pki, alpn: &'static [&'static [u8]]) -> SocketAddr {
        let leaf = pki.server("svc", &["svc.test", "localhost"]);
        let tls = ServerTls::load(&leaf.server_cfg(None), alpn).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(tls.config().clone()).unwrap();
                    let mut stream = rustls::StreamOwned::new(conn, stream);
                    let _ = stream.conn.complete_io(&mut stream.sock);
                    std::thread::sleep(Duration::from_millis(200));
                });
            }
        });
        addr
    }

    fn cluster(endpoints: &[String], tls: Option<crate::config::ClientTlsConfig>) -> ClusterConfig {
        let mut c = ClusterConfig::new(endpoints.to_vec());
        c.tls = tls;
        c.connect_timeout = Duration::from_secs(2);
        c
    }

    fn local(config: ClusterConfig) -> LocalCluster {
        let tls = config.tls.clone().map(|tls| {
            let cfg = config.clone();
            Arc::new(Reloadable::new(move || ClusterTls::load_with(&tls, &cfg)).unwrap())
        });
        LocalCluster::new("app".into(), config, tls, Metrics::new(1), 0)
    }

    #[test]
    fn the_send_future_fits_the_allocators_per_thread_cache() {
        let pool = Rc::new(local(cluster(&["127.0.0.1:9".to_owned()], None)));
        let send = pool.send(Request::new(LocalBody::empty()));
        let size = std::mem::size_of_val(&send);
        assert!(
            size <= crate::pipeline::BOXED_FUTURE_MAX,
            "LocalCluster::send's future is {size} bytes"
        );
    }

    #[test]
    fn endpoints_share_a_configuration_per_verified_name() {
        let pki = Pki::new("local CA");
        let endpoints = [
            "a.test:443".to_owned(),
            "b.test:443".to_owned(),
            "a.test:8443".to_owned(),
            "[::1]:443".to_owned(),
        ];
        let mut c = cluster(&endpoints, Some(pki.client_cfg(None, vec![])));
        let tls = ClusterTls::load(&c).unwrap().unwrap();
        let names: Vec<String> = tls
            .endpoints
            .iter()
            .map(|t| format!("{:?}", t.server_name()))
            .collect();
        assert!(
            names[0].contains("a.test") && names[1].contains("b.test"),
            "{names:?}"
        );
        assert_eq!(names[0], names[2]);
        assert!(names[3].starts_with("IpAddress"), "{names:?}");
        assert_eq!(
            tls.endpoints[0].config().alpn_protocols,
            [b"http/1.1".to_vec()]
        );

        c.protocol = Protocol::Http2;
        c.tls.as_mut().unwrap().sni = Some("svc.test".into());
        let tls = ClusterTls::load(&c).unwrap().unwrap();
        assert!(tls
            .endpoints
            .iter()
            .all(|t| t.server_name().to_str() == "svc.test"));
        assert_eq!(tls.endpoints[0].config().alpn_protocols, [b"h2".to_vec()]);

        c.tls = None;
        assert!(ClusterTls::load(&c).unwrap().is_none());
    }

    #[monoio::test(timer_enabled = true)]
    async fn verified_tls_connects_and_a_wrong_ca_is_unreachable() {
        let pki = Pki::new("local CA");
        let addr = tls_server(&pki, &[b"http/1.1"]);
        let endpoint = vec![format!("localhost:{}", addr.port())];

        let good = local(cluster(&endpoint, Some(pki.client_cfg(None, vec![]))));
        match good.connect_to(0).await {
            Ok(Dialed::Dialed(stream)) => {
                assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            }
            Ok(_) => panic!("plaintext to a TLS cluster"),
            Err(e) => panic!("TLS to the local service failed: {e}"),
        }

        let other = Pki::new("another CA");
        let wrong = local(cluster(&endpoint, Some(other.client_cfg(None, vec![]))));
        let err = match wrong.connect_to(0).await {
            Err(e) => e,
            Ok(_) => panic!("a server of another CA was accepted"),
        };
        assert!(matches!(err, UpstreamError::Tls { .. }), "{err}");
        let failure = err.into_proxy_error("app");
        assert_eq!(failure.status(), 503);
        let ProxyError::LocalUnreachable { detail, .. } = &failure else {
            panic!("{failure:?}");
        };
        assert!(detail.contains("(unknown_ca)"), "{detail}");
        assert!(!failure.public_message().contains("unknown_ca"));
    }

    #[test]
    fn missing_files_name_the_cluster() {
        let pki = Pki::new("local CA");
        let mut config = Config::empty();
        let mut tls = pki.client_cfg(None, vec![]);
        tls.ca = Some(pki.dir.path().join("nope.pem"));
        config
            .clusters
            .insert("app".into(), cluster(&["127.0.0.1:1".into()], Some(tls)));
        config.initiator = Some(crate::config::InitiatorConfig::new(
            vec![],
            vec![crate::config::InitiatorRoute::new("/", "app")],
        ));
        let err = load_local_tls(&config).unwrap_err();
        assert!(err.to_string().starts_with("clusters.app.tls: "), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    #[test]
    fn local_tls_reloads_from_its_files_and_keeps_the_old_on_error() {
        let pki = Pki::new("local-ca");
        let client = pki.client("edge", "spiffe://acme/edge", "edge.test");
        let mut config = Config::empty();
        config.clusters.insert(
            "app".into(),
            cluster(
                &["localhost:1".into()],
                Some(pki.client_cfg(Some(&client), vec![])),
            ),
        );
        config.initiator = Some(crate::config::InitiatorConfig::new(
            Vec::new(),
            vec![crate::config::InitiatorRoute::new("/", "app")],
        ));
        let local = load_local_tls(&config).unwrap();
        let app = local.get("app").expect("app has TLS");
        let before = app.current();
        assert!(reload_local_tls(&local).is_empty());
        assert!(!Arc::ptr_eq(&before, &app.current()), "reloaded");
        let good = app.current();
        pki.write("edge-key.pem", "not a key\n");
        let failed = reload_local_tls(&local);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].starts_with("clusters.app.tls: "), "{failed:?}");
        assert!(
            Arc::ptr_eq(&good, &app.current()),
            "the old configuration stays"
        );
    }
}
