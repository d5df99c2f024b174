//! Endpoint resolution and dialing.
//!
//! Endpoints are `host:port`. IP literals resolve in place ([`literal`]); hostnames are resolved
//! on a short-lived helper thread, so a slow resolver never blocks a shard. Local services
//! resolve on every dial ([`connect`]); the responders an initiator dials are resolved on an
//! interval by `initiator::hosts`, which dials each address ([`connect_addr`]).
//!
//! **Test hook:** when the environment variable `RTUN_TEST_HOSTS_FILE` names a file, every
//! hostname is first looked up there (`/etc/hosts` format: an address, then names; `#`
//! comments). A name the file does not list falls through to the system resolver; a file that
//! cannot be read is a resolution failure. The end-to-end tests use it to change what a name
//! resolves to while rtun runs; it is read on the resolver thread at each resolution.

pub mod completion;

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::net::TcpStream;

/// The environment variable of the resolver's test hook (see the module documentation).
pub const TEST_HOSTS_FILE: &str = "RTUN_TEST_HOSTS_FILE";

/// The address of an IP-literal endpoint (`127.0.0.1:80`, `[::1]:80`); `None` for a hostname.
pub fn literal(endpoint: &str) -> Option<SocketAddr> {
    endpoint.parse().ok()
}

/// Resolves `endpoint` (`host:port`) to its addresses, at least one.
pub async fn resolve(endpoint: &str) -> io::Result<Vec<SocketAddr>> {
    if let Some(addr) = literal(endpoint) {
        return Ok(vec![addr]);
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    let name = endpoint.to_owned();
    std::thread::Builder::new()
        .name("rtun-resolve".into())
        .spawn(move || {
            let _ = tx.send(lookup(&name));
        })?;
    let addrs = rx
        .await
        .map_err(|_| io::Error::other("resolver thread ended"))??;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{endpoint} resolved to no address"),
        ));
    }
    Ok(addrs)
}

/// Blocking resolution of `host:port`: the test hosts file when set and listing the name, else
/// the system resolver.
fn lookup(endpoint: &str) -> io::Result<Vec<SocketAddr>> {
    if let Some(path) = std::env::var_os(TEST_HOSTS_FILE) {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{TEST_HOSTS_FILE} {}: {e}", path.to_string_lossy()),
            )
        })?;
        if let Some(addrs) = hosts_file_lookup(&text, endpoint) {
            return Ok(addrs);
        }
    }
    endpoint.to_socket_addrs().map(Iterator::collect)
}

/// The addresses `text` (hosts-file format) lists for the host of `endpoint`, with its port;
/// `None` when the file does not list the host (or the endpoint has no valid port).
fn hosts_file_lookup(text: &str, endpoint: &str) -> Option<Vec<SocketAddr>> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let addrs: Vec<SocketAddr> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let ip: IpAddr = words.next()?.parse().ok()?;
            words
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(SocketAddr::new(ip, port))
        })
        .collect();
    (!addrs.is_empty()).then_some(addrs)
}

/// Resolves and connects to the first address that answers within `timeout`, with Nagle off.
pub async fn connect(endpoint: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs = resolve(endpoint).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match connect_addr(addr, timeout).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to exactly `addr` within `timeout`, with Nagle off.
pub async fn connect_addr(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match monoio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            stream.set_nodelay(true)?;
            Ok(stream)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out after {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test(timer_enabled = true)]
    async fn resolves_literals_and_names() {
        assert_eq!(
            resolve("127.0.0.1:80").await.expect("literal"),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        let addrs = resolve("localhost:80").await.expect("localhost");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
        assert!(resolve("no-port-here").await.is_err());
    }

    #[test]
    fn literals_need_no_resolver() {
        assert_eq!(literal("[::1]:9000"), Some("[::1]:9000".parse().unwrap()));
        assert_eq!(literal("10.0.0.1:1"), Some("10.0.0.1:1".parse().unwrap()));
        assert_eq!(literal("localhost:9000"), None);
    }

    #[test]
    fn hosts_file_lists_every_address_of_a_name() {
        let text = "# test hosts\n\
                    127.0.0.1 replicas.test other\n\
                    ::1   Replicas.Test # the v6 one\n\
                    not-an-ip replicas.test\n\
                    10.0.0.9 elsewhere\n";
        assert_eq!(
            hosts_file_lookup(text, "replicas.test:9000"),
            Some(vec![
                "127.0.0.1:9000".parse().unwrap(),
                "[::1]:9000".parse().unwrap()
            ])
        );
        assert_eq!(
            hosts_file_lookup(text, "other:1"),
            Some(vec!["127.0.0.1:1".parse().unwrap()])
        );
        assert_eq!(hosts_file_lookup(text, "missing.test:9000"), None);
        assert_eq!(hosts_file_lookup(text, "replicas.test"), None);
    }
}
