//! An in-process harness for the request pipeline: build roles from a [`Config`] value, run
//! them on loopback inside the test process, and drive real requests through them.
//!
//! The end-to-end tests in `tests/` spawn the real binary; this harness is for unit-testing a
//! stage or a driver without processes: `Harness::start(config)` runs `app::start` on the
//! caller's thread's behalf (shard threads, real sockets, real tunnels), and
//! [`Harness::request`] is a small blocking HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{self, Running};
use crate::config::{
    ClusterConfig, Config, InitiatorConfig, InitiatorRoute, ResponderConfig, Shards,
};

/// A free port on 127.0.0.1 (the kernel's choice; released before use, as tests do).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Roles running in this process.
pub struct Harness {
    running: Option<Running>,
}

/// A response as the harness client read it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Addresses of a responder + initiator + local service set up by [`Harness::tunnel`].
pub struct TunnelSetup {
    pub egress: SocketAddr,
    pub service: SocketAddr,
    pub config: Config,
}

impl Harness {
    /// A one-shard responder and initiator in one configuration, with one tunnel for node `n1`
    /// (cluster `c1`) and every path routed to a local service on `service` (not started).
    pub fn tunnel_config() -> TunnelSetup {
        let (tunnel, egress, service) = (
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
        );
        let mut config = Config::empty();
        config.shards = Shards::Count(std::num::NonZeroUsize::MIN);
        config.drain_timeout = Duration::from_millis(200);
        config
            .clusters
            .insert("cloud".into(), ClusterConfig::new(vec![tunnel.to_string()]));
        config
            .clusters
            .insert("app".into(), ClusterConfig::new(vec![service.to_string()]));
        let spec = crate::config::TunnelSpec {
            identity: crate::config::NodeIdentity {
                id: "n1".into(),
                cluster: "c1".into(),
                tenant: String::new(),
            },
            remote_cluster: "cloud".into(),
            connections: 1,
        };
        let route = InitiatorRoute::new("/", "app");
        config.initiator = Some(InitiatorConfig::new(vec![spec], vec![route]));
        config.responder = Some(ResponderConfig::new(tunnel, egress));
        TunnelSetup {
            egress,
            service,
            config,
        }
    }

    /// Starts the roles `config` holds and waits (up to 10 s) until every listener accepts
    /// and, if both roles run, `tunnels` tunnels are up.
    pub fn start(config: Config, tunnels: u64) -> Harness {
        let listeners: Vec<SocketAddr> = config
            .responder
            .iter()
            .flat_map(|r| [r.tunnel_listener.listen, r.egress_listener.listen])
            .collect();
        let running = app::start(Arc::new(config)).expect("start shards");
        let harness = Harness {
            running: Some(running),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = || {
            listeners.iter().all(|a| TcpStream::connect(a).is_ok())
                && harness.stat("tunnels_active") >= tunnels
        };
        while !ready() {
            assert!(Instant::now() < deadline, "roles not ready within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        harness
    }

    /// A counter summed over shards.
    pub fn stat(&self, name: &str) -> u64 {
        self.running
            .as_ref()
            .map(|r| r.stats().totals())
            .and_then(|totals| totals.into_iter().find(|(n, _)| *n == name))
            .map_or(0, |(_, v)| v)
    }

    /// Sends one HTTP/1.1 request (`connection: close`) and reads the whole response.
    pub fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_reply(&raw)
    }

    /// `GET path` with `headers`.
    pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        Self::request(addr, "GET", path, headers, b"").expect("GET through the harness")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

/// Starts `rtun service` on `addr` on a thread of its own (it lives until the process ends).
pub fn start_service(addr: SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        crate::shard::runtime::block_on(0, crate::service::serve(addr, "harness".into(), tx))
    });
    let bound = rx.recv_timeout(Duration::from_secs(5));
    assert!(matches!(bound, Ok(Ok(()))), "service on {addr}: {bound:?}");
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Parses a whole HTTP/1.1 response (content-length, chunked, or read to close).
fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(invalid("incomplete or malformed response head")),
    };
    let status = response.code.ok_or_else(|| invalid("no status"))?;
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let rest = &raw[head_len..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("chunk size line"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| invalid("chunk"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or_else(|| invalid("short chunk"))?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| invalid("chunk end"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::REQUEST_ID_HEADER;

    #[test]
    fn a_request_crosses_the_tunnel_in_process() {
        let setup = Harness::tunnel_config();
        start_service(setup.service);
        let harness = Harness::start(setup.config, 1);
        let reply = Harness::get(setup.egress, "/hello/world", &[("x-node-id", "n1")]);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.text().contains("/hello/world"), "{}", reply.text());
        let by_cluster = Harness::get(setup.egress, "/x", &[("x-cluster-id", "c1")]);
        assert_eq!(by_cluster.status, 200, "{}", by_cluster.text());
        assert_eq!(harness.stat("egress_requests"), 2);
        assert_eq!(harness.stat("initiator_requests"), 2);
    }

    #[test]
    fn failures_answer_once_with_status_reason_and_request_id() {
        let setup = Harness::tunnel_config();
        // No local service: the initiator's hop fails.
        let harness = Harness::start(setup.config, 1);
        let no_host = Harness::get(setup.egress, "/", &[]);
        assert_eq!(no_host.status, 400);
        assert!(no_host.text().contains("x-node-id"), "{}", no_host.text());
        assert!(no_host.header(REQUEST_ID_HEADER.as_str()).is_some());
        let unknown = Harness::get(setup.egress, "/", &[("x-node-id", "nobody")]);
        assert_eq!(unknown.status, 503);
        assert!(unknown.text().contains("nobody"));
        let unreachable = Harness::get(setup.egress, "/", &[("x-node-id", "n1")]);
        assert_eq!(unreachable.status, 503, "{}", unreachable.text());
        let service = setup.service.to_string();
        assert!(
            !unreachable.text().contains(&service),
            "{}",
            unreachable.text()
        );
        // The initiator answered with the egress's request id.
        assert!(unreachable.header(REQUEST_ID_HEADER.as_str()).is_some());
        assert_eq!(harness.stat("egress_400_no_host_id"), 1);
        assert_eq!(harness.stat("egress_503_no_tunnel"), 1);
        assert_eq!(harness.stat("initiator_502_local_error"), 1);
    }
}
