//! The initiator's TLS for its tunnels: one client configuration per responder endpoint
//! (`clusters.NAME.tls` of a cluster that `initiator.tunnels` dials), loaded once at start,
//! shared by every shard, and reloaded from its files on SIGHUP (new dials use the new files;
//! live tunnels keep their sessions).
//!
//! The name the responder must prove is `tls.sni`, or the endpoint's host. No ALPN is offered:
//! the tunnel speaks the HTTP/1.1 handshake and then HTTP/2 on the same session.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Config;
use crate::tls::{ClientTls, Reloadable, TlsLoadError};

/// A responder endpoint's TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("clusters.{cluster}.tls (endpoint {endpoint}): {source}")]
pub struct TunnelTlsError {
    pub cluster: String,
    pub endpoint: String,
    pub source: Box<TlsLoadError>,
}

/// Client TLS per (responder cluster, endpoint).
#[derive(Default)]
pub struct TunnelTls {
    by_endpoint: BTreeMap<(String, String), Reloadable<ClientTls>>,
}

impl TunnelTls {
    /// Loads the TLS of every responder cluster the initiator dials.
    pub fn load(config: &Config) -> Result<Arc<Self>, TunnelTlsError> {
        let mut by_endpoint = BTreeMap::new();
        let dialed = config.initiator.iter().flat_map(|i| &i.tunnels);
        for spec in dialed {
            let cluster = &spec.remote_cluster;
            let Some(remote) = config.clusters.get(cluster) else {
                continue;
            };
            let Some(tls) = &remote.tls else { continue };
            for endpoint in &remote.endpoints {
                let key = (cluster.clone(), endpoint.clone());
                if by_endpoint.contains_key(&key) {
                    continue;
                }
                let loaded =
                    ClientTls::reloadable(tls, endpoint_host(endpoint), &[]).map_err(|source| {
                        TunnelTlsError {
                            cluster: cluster.clone(),
                            endpoint: endpoint.clone(),
                            source: Box::new(source),
                        }
                    })?;
                by_endpoint.insert(key, loaded);
            }
        }
        Ok(Arc::new(Self { by_endpoint }))
    }

    /// The configuration a new dial to `endpoint` of `cluster` uses; `None`: plaintext.
    pub fn get(&self, cluster: &str, endpoint: &str) -> Option<Arc<ClientTls>> {
        self.by_endpoint
            .get(&(cluster.to_owned(), endpoint.to_owned()))
            .map(Reloadable::current)
    }

    /// Re-reads every file; returns the ones that failed (their old configuration stays).
    pub fn reload(&self) -> Vec<TunnelTlsError> {
        self.by_endpoint
            .iter()
            .filter_map(|((cluster, endpoint), tls)| {
                tls.reload().err().map(|source| TunnelTlsError {
                    cluster: cluster.clone(),
                    endpoint: endpoint.clone(),
                    source: Box::new(source),
                })
            })
            .collect()
    }
}

/// The host part of `host:port` (`[v6]:port` keeps its brackets; `ClientTls` removes them).
fn endpoint_host(endpoint: &str) -> &str {
    endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(host, _port)| host)
}

#[cfg(test)]
mod tests {
    use super::endpoint_host;

    #[test]
    fn host_of_an_endpoint() {
        assert_eq!(
            endpoint_host("responder.example.com:9000"),
            "responder.example.com"
        );
        assert_eq!(endpoint_host("127.0.0.1:9000"), "127.0.0.1");
        assert_eq!(endpoint_host("[::1]:9000"), "[::1]");
    }
}
