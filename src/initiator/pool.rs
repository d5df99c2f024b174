//! Local services behind the initiator, one client per cluster per shard.
//!
//! HTTP/1.1: a pool of keep-alive connections (hyper's client), a connection going back to the
//! pool once its response has been read in full. HTTP/2: one multiplexed connection per shard,
//! re-established when it closes. A request that meets a pooled connection the service closed
//! meanwhile is retried once on a fresh connection (hyper hands the unsent request back).
//!
//! With `clusters.NAME.tls` every connection is TLS ([`ClusterTls`]): the service is verified
//! against `ca` (and `spki_pins`) under the endpoint's host name or `sni`, the client
//! certificate is presented when configured, and ALPN offers `http/1.1` or `h2` as the
//! cluster's protocol says. The handshake is bounded by `connect_timeout`; a failure makes the
//! request `LocalUnreachable` (503) with the failure's label in the logged detail only.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{ClientTlsConfig, ClusterConfig, Config, Protocol};
use crate::http::body::RecvBody;
use crate::http::io::HyperIo;
use crate::http::rt::{ShardExecutor, ShardTimer};
use crate::pipeline::logged::Counted;
use crate::pipeline::ProxyError;
use crate::tls::{ClientStream, ClientTls, HandshakeError, Reloadable, TlsLoadError};

/// The body of a request forwarded to a local service: the tunnel stream's body, counted.
pub type LocalBody = Counted<RecvBody<()>>;

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
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
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
            UpstreamError::Http(_) => ProxyError::LocalFailed { cluster, detail },
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
        let Some(tls) = cluster.tls.clone() else {
            continue;
        };
        let cluster = cluster.clone();
        let reloadable =
            Reloadable::new(move || ClusterTls::load_with(&tls, &cluster)).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("clusters.{name}.tls: {e}"),
                )
            })?;
        loaded.insert(name.clone(), Arc::new(reloadable));
    }
    Ok(loaded)
}

/// The host of a `host:port` endpoint (IPv6 keeps its brackets; `ClientTls` removes them).
fn endpoint_host(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host)
}

/// A new connection to an endpoint, before HTTP starts.
enum Dialed {
    Plain(TcpStreamPoll),
    Tls(Box<ClientStream<TcpStreamPoll>>),
}

/// One local cluster on one shard.
pub struct LocalCluster {
    pub name: Rc<str>,
    config: ClusterConfig,
    tls: Option<Arc<Reloadable<ClusterTls>>>,
    next_endpoint: Cell<usize>,
    idle: RefCell<Vec<http1::SendRequest<LocalBody>>>,
    h2: RefCell<Option<http2::SendRequest<LocalBody>>>,
}

impl LocalCluster {
    /// The cluster `config`, over TLS when `tls` is given (from [`load_local_tls`]).
    pub fn new(
        name: Rc<str>,
        config: ClusterConfig,
        tls: Option<Arc<Reloadable<ClusterTls>>>,
    ) -> Self {
        Self {
            name,
            config,
            tls,
            next_endpoint: Cell::new(0),
            idle: RefCell::new(Vec::new()),
            h2: RefCell::new(None),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.config.protocol
    }

    /// Sends `req` (origin-form URI and `Host` for HTTP/1.1, absolute URI for HTTP/2) and
    /// returns the response head.
    pub async fn send(
        self: &Rc<Self>,
        req: Request<LocalBody>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let sent = match self.config.protocol {
            Protocol::Http1 => self.send_http1(req).await,
            Protocol::Http2 => self.send_http2(req).await,
        };
        sent.map_err(|e| e.into_proxy_error(&self.name))
    }

    async fn send_http1(
        self: &Rc<Self>,
        req: Request<LocalBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let mut req = req;
        // One retry with a pooled connection, then a fresh one.
        for attempt in 0..2 {
            let mut sender = match self.take_idle() {
                Some(s) if attempt == 0 => s,
                _ => self.connect_http1().await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.recycle(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt == 0 => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
        unreachable!("the second attempt always returns")
    }

    fn take_idle(&self) -> Option<http1::SendRequest<LocalBody>> {
        let mut idle = self.idle.borrow_mut();
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// Returns `sender` to the pool once its connection can take another request (the previous
    /// response body fully read); a connection that closes meanwhile is simply dropped.
    fn recycle(self: &Rc<Self>, mut sender: http1::SendRequest<LocalBody>) {
        let cluster = self.clone();
        monoio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = cluster.idle.borrow_mut();
                if idle.len() < cluster.config.max_idle_per_shard {
                    idle.push(sender);
                }
            }
        });
    }

    async fn connect_http1(&self) -> Result<http1::SendRequest<LocalBody>, UpstreamError> {
        match self.connect().await? {
            Dialed::Plain(io) => start_http1(io).await,
            Dialed::Tls(io) => start_http1(io).await,
        }
    }

    async fn send_http2(
        &self,
        req: Request<LocalBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let current = self.h2.borrow().clone();
        let mut sender = match current {
            Some(s) if !s.is_closed() => s,
            _ => {
                let sender = match self.connect().await? {
                    Dialed::Plain(io) => start_http2(io).await?,
                    Dialed::Tls(io) => start_http2(io).await?,
                };
                *self.h2.borrow_mut() = Some(sender.clone());
                sender
            }
        };
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    /// Connects to the next endpoint (round-robin), with TLS when the cluster has it.
    async fn connect(&self) -> Result<Dialed, UpstreamError> {
        let endpoints = &self.config.endpoints;
        if endpoints.is_empty() {
            return Err(UpstreamError::NoEndpoints);
        }
        let i = self.next_endpoint.get() % endpoints.len();
        self.next_endpoint.set(i.wrapping_add(1));
        let endpoint = &endpoints[i];
        let connect_err = |source| UpstreamError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let timeout = self.config.connect_timeout;
        let stream = crate::net::connect(endpoint, timeout)
            .await
            .map_err(connect_err)?;
        let io = stream.try_into_poll_io().map_err(|(e, _)| connect_err(e))?;
        let current = self.tls.as_ref().map(|t| t.current());
        let Some(tls) = current.as_ref().and_then(|t| t.endpoints.get(i)) else {
            return Ok(Dialed::Plain(io));
        };
        match monoio::time::timeout(timeout, tls.connect(io)).await {
            Ok(Ok(stream)) => Ok(Dialed::Tls(Box::new(stream))),
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

/// HTTP/1.1 on a new connection; the connection is driven by a task of its own.
async fn start_http1<I>(io: I) -> Result<http1::SendRequest<LocalBody>, UpstreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(HyperIo(io)).await?;
    monoio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("local connection: {e}");
        }
    });
    Ok(sender)
}

/// HTTP/2 on a new connection; the connection is driven by a task of its own.
async fn start_http2<I>(io: I) -> Result<http2::SendRequest<LocalBody>, UpstreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(ShardExecutor)
        .timer(ShardTimer)
        .initial_stream_window_size(crate::tunnel::STREAM_WINDOW)
        .initial_connection_window_size(crate::tunnel::CONNECTION_WINDOW)
        .handshake(HyperIo(io))
        .await?;
    monoio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("local h2 connection: {e}");
        }
    });
    Ok(sender)
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
        LocalCluster::new("app".into(), config, tls)
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
        match good.connect().await {
            Ok(Dialed::Tls(stream)) => {
                assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            }
            Ok(Dialed::Plain(_)) => panic!("plaintext to a TLS cluster"),
            Err(e) => panic!("TLS to the local service failed: {e}"),
        }

        let other = Pki::new("another CA");
        let wrong = local(cluster(&endpoint, Some(other.client_cfg(None, vec![]))));
        let err = match wrong.connect().await {
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
            vec![crate::config::InitiatorRoute {
                prefix: "/".into(),
                cluster: "app".into(),
                timeout: None,
            }],
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
            vec![crate::config::InitiatorRoute {
                prefix: "/".into(),
                cluster: "app".into(),
                timeout: None,
            }],
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
