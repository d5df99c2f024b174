//! The initiator's TLS for its tunnels: one client configuration per responder endpoint
//! (`clusters.NAME.tls` of a cluster that `initiator.tunnels` dials), loaded once at start,
//! shared by every shard, and reloaded from its files on SIGHUP (new dials use the new files;
//! live tunnels keep their sessions).
//!
//! A configuration reload ([`TunnelTls::follow`], in each shard's applier) builds the set for
//! the new file: an endpoint whose `tls:` settings did not change keeps its loaded
//! configuration (re-read from its files), one whose settings changed or that is new is
//! loaded from the new paths. The process side loaded every file before publishing, so a
//! failure here is a file that changed in between: the endpoint keeps its old configuration,
//! or, if it had none, is marked unavailable and its dials fail (never plaintext).
//!
//! The name the responder must prove is `tls.sni`, or the endpoint's host. No ALPN is offered:
//! the tunnel speaks the HTTP/1.1 handshake and then HTTP/2 on the same session.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ClientTlsConfig, Config};
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
    by_endpoint: BTreeMap<(String, String), EndpointTls>,
}

/// One endpoint's TLS: the settings it was loaded from and the loaded configuration, or
/// `None` when a reload could not load it (dials fail rather than go plaintext).
#[derive(Clone)]
struct EndpointTls {
    settings: ClientTlsConfig,
    loaded: Option<Arc<Reloadable<ClientTls>>>,
}

/// A dial's TLS: none (plaintext), or the configuration to use.
pub enum DialTls {
    Plain,
    Tls(Arc<ClientTls>),
    /// `tls:` is configured but a reload could not load it.
    Unavailable,
}

impl TunnelTls {
    /// Loads the TLS of every responder cluster the initiator dials.
    pub fn load(config: &Config) -> Result<Arc<Self>, TunnelTlsError> {
        let mut by_endpoint = BTreeMap::new();
        for (cluster, endpoint, settings) in dialed_tls(config) {
            let loaded = ClientTls::reloadable(settings, endpoint_host(endpoint), &[])
                .map_err(|source| error(cluster, endpoint, source))?;
            let tls = EndpointTls {
                settings: settings.clone(),
                loaded: Some(Arc::new(loaded)),
            };
            by_endpoint.insert((cluster.to_owned(), endpoint.to_owned()), tls);
        }
        Ok(Arc::new(Self { by_endpoint }))
    }

    /// The TLS for `config` (a reload), reusing what `self` loaded where the settings did not
    /// change (re-reading their files). Never fails: an endpoint that does not load keeps its
    /// old configuration, or is unavailable; the errors are returned for the log.
    pub fn follow(&self, config: &Config) -> (Arc<Self>, Vec<TunnelTlsError>) {
        let mut by_endpoint = BTreeMap::new();
        let mut errors = Vec::new();
        for (cluster, endpoint, settings) in dialed_tls(config) {
            let key = (cluster.to_owned(), endpoint.to_owned());
            let old = self.by_endpoint.get(&key);
            let kept = old
                .filter(|old| &old.settings == settings)
                .and_then(|old| old.loaded.clone());
            let loaded = match kept {
                Some(kept) => {
                    if let Err(e) = kept.reload() {
                        errors.push(error(cluster, endpoint, e));
                    }
                    Some(kept)
                }
                None => match ClientTls::reloadable(settings, endpoint_host(endpoint), &[]) {
                    Ok(loaded) => Some(Arc::new(loaded)),
                    Err(e) => {
                        errors.push(error(cluster, endpoint, e));
                        old.and_then(|old| old.loaded.clone())
                    }
                },
            };
            let settings = settings.clone();
            by_endpoint.insert(key, EndpointTls { settings, loaded });
        }
        (Arc::new(Self { by_endpoint }), errors)
    }

    /// The configuration a new dial to `endpoint` of `cluster` uses.
    pub fn get(&self, cluster: &str, endpoint: &str) -> DialTls {
        match self
            .by_endpoint
            .get(&(cluster.to_owned(), endpoint.to_owned()))
        {
            None => DialTls::Plain,
            Some(EndpointTls {
                loaded: Some(tls), ..
            }) => DialTls::Tls(tls.current()),
            Some(EndpointTls { loaded: None, .. }) => DialTls::Unavailable,
        }
    }

    /// Re-reads every file; returns the ones that failed (their old configuration stays).
    pub fn reload(&self) -> Vec<TunnelTlsError> {
        self.by_endpoint
            .iter()
            .filter_map(|((cluster, endpoint), tls)| {
                let loaded = tls.loaded.as_ref()?;
                loaded
                    .reload()
                    .err()
                    .map(|source| error(cluster, endpoint, source))
            })
            .collect()
    }
}

/// Every (responder cluster, endpoint, `tls:`) that `config`'s tunnels dial, each once.
fn dialed_tls(config: &Config) -> Vec<(&str, &str, &ClientTlsConfig)> {
    let mut seen = Vec::new();
    let dialed = config.initiator.iter().flat_map(|i| &i.tunnels);
    for spec in dialed {
        let cluster = spec.remote_cluster.as_str();
        let Some(remote) = config.clusters.get(cluster) else {
            continue;
        };
        let Some(tls) = &remote.tls else { continue };
        for endpoint in &remote.endpoints {
            if !seen.iter().any(|(c, e, _)| *c == cluster && *e == endpoint) {
                seen.push((cluster, endpoint.as_str(), tls));
            }
        }
    }
    seen
}

fn error(cluster: &str, endpoint: &str, source: TlsLoadError) -> TunnelTlsError {
    TunnelTlsError {
        cluster: cluster.to_owned(),
        endpoint: endpoint.to_owned(),
        source: Box::new(source),
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
    use super::*;
    use crate::tls::testing::Pki;

    fn config(endpoints: &str, tls: &str) -> Config {
        let yaml = format!(
            "clusters:\n  cloud: {{ endpoints: [{endpoints}]{tls} }}\n  app: {{ endpoints: [\"127.0.0.1:8000\"] }}\ninitiator:\n  tunnels: [\"rc://n1:c1:t@cloud:1\"]\n  routes: [{{ prefix: /, cluster: app }}]\n"
        );
        crate::config::parse(&yaml, "t.yaml").expect("config")
    }

    fn loaded<'a>(tls: &'a TunnelTls, endpoint: &str) -> Option<&'a Arc<Reloadable<ClientTls>>> {
        let key = ("cloud".to_owned(), endpoint.to_owned());
        tls.by_endpoint.get(&key).and_then(|t| t.loaded.as_ref())
    }

    #[test]
    fn a_reload_keeps_unchanged_tls_and_never_falls_back_to_plaintext() {
        let pki = Pki::new("test ca");
        let ca = pki.ca_path.display().to_string();
        let other = pki.write("ca2.pem", &std::fs::read_to_string(&pki.ca_path).unwrap());
        let with = |ca: &str| format!(", tls: {{ ca: \"{ca}\" }}");
        let one = "\"10.0.0.1:9000\"";
        let two = "\"10.0.0.1:9000\", \"10.0.0.3:9000\"";

        let start = TunnelTls::load(&config(one, &with(&ca))).expect("load");
        let first = loaded(&start, "10.0.0.1:9000").expect("loaded").clone();
        // Same settings: the same loaded configuration, its files re-read.
        let (same, errors) = start.follow(&config(one, &with(&ca)));
        assert!(errors.is_empty());
        assert!(Arc::ptr_eq(loaded(&same, "10.0.0.1:9000").unwrap(), &first));
        // A new CA path: loaded anew.
        let (moved, errors) = same.follow(&config(one, &with(&other.display().to_string())));
        assert!(errors.is_empty());
        let second = loaded(&moved, "10.0.0.1:9000").unwrap().clone();
        assert!(!Arc::ptr_eq(&second, &first));
        // A path that does not load (it vanished after the process side checked it): the
        // endpoint keeps what it had; a new endpoint is unavailable, not plaintext.
        let (kept, errors) = moved.follow(&config(two, &with("/nonexistent/ca.pem")));
        assert_eq!(
            errors.len(),
            2,
            "{:?}",
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        );
        assert!(errors[1]
            .to_string()
            .contains("clusters.cloud.tls (endpoint 10.0.0.3:9000)"));
        assert!(Arc::ptr_eq(
            loaded(&kept, "10.0.0.1:9000").unwrap(),
            &second
        ));
        assert!(matches!(
            kept.get("cloud", "10.0.0.1:9000"),
            DialTls::Tls(_)
        ));
        assert!(matches!(
            kept.get("cloud", "10.0.0.3:9000"),
            DialTls::Unavailable
        ));
        // `tls:` removed: plaintext.
        let (plain, errors) = kept.follow(&config(one, ""));
        assert!(errors.is_empty());
        assert!(matches!(
            plain.get("cloud", "10.0.0.1:9000"),
            DialTls::Plain
        ));
    }

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
