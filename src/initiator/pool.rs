//! Local services behind the initiator, one client per cluster per shard.
//!
//! HTTP/1.1: a pool of keep-alive connections (hyper's client), a connection going back to the
//! pool once its response has been read in full. HTTP/2: one multiplexed connection per shard,
//! re-established when it closes. A request that meets a pooled connection the service closed
//! meanwhile is retried once on a fresh connection (hyper hands the unsent request back).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use crate::config::{ClusterConfig, Protocol};
use crate::http::body::RecvBody;
use crate::http::io::HyperIo;
use crate::http::rt::{ShardExecutor, ShardTimer};
use crate::pipeline::logged::Counted;
use crate::pipeline::ProxyError;

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
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// The request's failure: unreachable (503) when the service could not be reached at all,
    /// failed (502) when it broke off mid-exchange.
    fn into_proxy_error(self, cluster: &str) -> ProxyError {
        let (cluster, detail) = (cluster.to_owned(), self.to_string());
        match self {
            UpstreamError::NoEndpoints | UpstreamError::Connect { .. } => {
                ProxyError::LocalUnreachable { cluster, detail }
            }
            UpstreamError::Http(_) => ProxyError::LocalFailed { cluster, detail },
        }
    }
}

/// One local cluster on one shard.
pub struct LocalCluster {
    pub name: Rc<str>,
    config: ClusterConfig,
    next_endpoint: Cell<usize>,
    idle: RefCell<Vec<http1::SendRequest<LocalBody>>>,
    h2: RefCell<Option<http2::SendRequest<LocalBody>>>,
}

impl LocalCluster {
    pub fn new(name: Rc<str>, config: ClusterConfig) -> Self {
        Self {
            name,
            config,
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
        let io = self.connect().await?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        monoio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("local connection: {e}");
            }
        });
        Ok(sender)
    }

    async fn send_http2(
        &self,
        req: Request<LocalBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let current = self.h2.borrow().clone();
        let mut sender = match current {
            Some(s) if !s.is_closed() => s,
            _ => {
                let io = self.connect().await?;
                let (sender, conn) = http2::Builder::new(ShardExecutor)
                    .timer(ShardTimer)
                    .initial_stream_window_size(crate::tunnel::STREAM_WINDOW)
                    .initial_connection_window_size(crate::tunnel::CONNECTION_WINDOW)
                    .handshake(io)
                    .await?;
                monoio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("local h2 connection: {e}");
                    }
                });
                *self.h2.borrow_mut() = Some(sender.clone());
                sender
            }
        };
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    async fn connect(
        &self,
    ) -> Result<HyperIo<monoio::net::tcp::stream_poll::TcpStreamPoll>, UpstreamError> {
        let endpoints = &self.config.endpoints;
        if endpoints.is_empty() {
            return Err(UpstreamError::NoEndpoints);
        }
        let i = self.next_endpoint.get();
        self.next_endpoint.set(i.wrapping_add(1));
        let endpoint = &endpoints[i % endpoints.len()];
        let connect_err = |source| UpstreamError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let stream = crate::net::connect(endpoint, self.config.connect_timeout)
            .await
            .map_err(connect_err)?;
        let io = stream.try_into_poll_io().map_err(|(e, _)| connect_err(e))?;
        Ok(HyperIo(io))
    }
}
