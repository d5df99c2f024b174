//! Endpoint resolution and dialing.
//!
//! Endpoints are `host:port`. IP literals resolve in place; hostnames are resolved on every dial
//! (Envoy's STRICT_DNS) on a short-lived helper thread, so a slow resolver never blocks a shard.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::net::TcpStream;

/// Resolves `endpoint` (`host:port`) to its addresses.
pub async fn resolve(endpoint: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = endpoint.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    let name = endpoint.to_owned();
    std::thread::Builder::new()
        .name("rtun-resolve".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
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

/// Resolves and connects to the first address that answers within `timeout`, with Nagle off.
pub async fn connect(endpoint: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs = resolve(endpoint).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match monoio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out after {timeout:?}"),
                )
            }
        }
    }
    Err(last)
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
}
