//! `loadgen swarm`: many simulated initiator nodes against one responder (the scale
//! scenario of the benchmark).
//!
//! Every node `edge-0 .. edge-{N-1}` opens `--connections-per-node` TCP connections to
//! the responder's tunnel listener, each bound to a source address taken round-robin
//! from `--sources` (several 127.0.0.x, so that 10,000+ tunnels never run out of
//! ephemeral ports of one source address), writes rtun's handshake (encoded by
//! `rtun::protocol::HandshakeRequest`), expects `200` (parsed by
//! `rtun::protocol::parse_response`), and then serves HTTP/2 on the same connection as
//! the initiator does: every request is answered `200` with a small fixed body, so the
//! swarm is also the service behind the tunnels.
//!
//! With `--tls-ca` every connection first does a TLS handshake with rtun's own client TLS
//! (`rtun::tls::ClientTls`: rustls with ring, the responder verified against that CA, the
//! client certificate presented when given), as an initiator with `clusters.NAME.tls` does;
//! the rtun handshake and HTTP/2 then run inside the session (`rtun::tunnel::TunnelStream`).
//! A refused TLS handshake counts as `tls <class>` in the failure breakdown, the class being
//! rtun's `TlsFailure::label()` (`tls no_client_cert`, `tls unknown_ca`, …); under TLS 1.3 a
//! responder that refuses the client certificate says so on the first read after the
//! handshake, which is classified the same way.
//!
//! Thread-per-core: node `i` belongs to shard `i % threads`; each shard runs a bounded
//! number of concurrent dialers. Once every shard has dialed all of its tunnels, one
//! summary line (and optionally a JSON file) reports how long connecting all of them
//! took and what failed; the tunnels are then held (and served) for `--hold`.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::{Response, StatusCode};
use rtun::http::io::Rewind;
use rtun::protocol::{
    parse_response, HandshakeForm, HandshakeRequest, TunnelIdentity, DEFAULT_REQUEST_PATH,
    MAX_HANDSHAKE_BYTES,
};
use rtun::tls::{classify, ClientTls, TlsFailure};
use rtun::tunnel::TunnelStream;
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::shard;

#[derive(Clone, Debug)]
pub struct SwarmConfig {
    pub responder: SocketAddr,
    pub nodes: u64,
    /// Node ids are `{prefix}{i}`.
    pub node_prefix: String,
    pub cluster: String,
    pub tenant: String,
    pub connections_per_node: u64,
    pub sources: Vec<IpAddr>,
    pub threads: usize,
    /// Concurrent dials per shard.
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub request_path: String,
    pub hold: Duration,
    pub body: Bytes,
    pub pin: bool,
    /// TLS (optionally mutual) before the handshake; plaintext when `None`.
    pub tls: Option<ClientTls>,
}

/// What one shard saw while dialing its tunnels.
#[derive(Clone, Debug, Default)]
struct ShardDial {
    connected: u64,
    failures: BTreeMap<String, u64>,
    first_error: Option<String>,
    /// Time from the common start until this shard finished dialing.
    elapsed: Duration,
}

/// What one shard saw while holding its tunnels.
#[derive(Clone, Debug, Default)]
struct ShardHold {
    requests: u64,
    closed_early: u64,
}

#[derive(Debug, Serialize)]
pub struct SwarmReport {
    pub responder: String,
    pub nodes: u64,
    pub connections_per_node: u64,
    pub tunnels_attempted: u64,
    pub tunnels_connected: u64,
    pub failures_total: u64,
    pub failures: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub connect_all_s: f64,
    pub tunnels_per_s: f64,
    pub sources: usize,
    pub threads: usize,
    /// Whether the tunnels ran TLS (`--tls-ca`).
    pub tls: bool,
    /// Whether a client certificate was presented (`--tls-cert`).
    pub tls_client_cert: bool,
}

#[derive(Debug, Serialize)]
pub struct SwarmEnd {
    pub requests_served: u64,
    pub tunnels_closed_early: u64,
}

/// Parses `127.0.0.2-127.0.0.20`, `127.0.0.2,127.0.0.3` or a single address.
pub fn parse_sources(s: &str) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .with_context(|| format!("bad address {a:?}"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .with_context(|| format!("bad address {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                bail!("bad source range {part:?}");
            }
            out.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("bad source address {part:?}"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("--sources names no address");
    }
    Ok(out)
}

/// Runs the swarm: prints the connect report when all tunnels are dialed, holds them
/// for `cfg.hold`, then prints the end report. Returns the connect report.
pub fn run(cfg: SwarmConfig, json_out: Option<std::path::PathBuf>) -> Result<SwarmReport> {
    let threads = cfg.threads.max(1);
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<ShardDial>();
    let shard_cfg = cfg.clone();
    let worker = std::thread::Builder::new()
        .name("swarm-main".into())
        .spawn(move || {
            shard::run_shards(threads, shard_cfg.pin, move |index| {
                let cfg = shard_cfg.clone();
                let tx = tx.clone();
                async move { shard_main(index, threads, cfg, start, tx).await }
            })
        })
        .context("cannot start the swarm threads")?;

    let mut total = ShardDial::default();
    for _ in 0..threads {
        let Ok(d) = rx.recv() else { break };
        total.connected += d.connected;
        for (k, v) in d.failures {
            *total.failures.entry(k).or_default() += v;
        }
        if total.first_error.is_none() {
            total.first_error = d.first_error;
        }
        total.elapsed = total.elapsed.max(d.elapsed);
    }
    let attempted = cfg.nodes * cfg.connections_per_node;
    let secs = total.elapsed.as_secs_f64();
    let report = SwarmReport {
        responder: cfg.responder.to_string(),
        nodes: cfg.nodes,
        connections_per_node: cfg.connections_per_node,
        tunnels_attempted: attempted,
        tunnels_connected: total.connected,
        failures_total: total.failures.values().sum(),
        failures: total.failures,
        first_error: total.first_error,
        connect_all_s: secs,
        tunnels_per_s: if secs > 0.0 {
            total.connected as f64 / secs
        } else {
            0.0
        },
        sources: cfg.sources.len(),
        threads,
        tls: cfg.tls.is_some(),
        tls_client_cert: cfg
            .tls
            .as_ref()
            .is_some_and(|t| t.config().client_auth_cert_resolver.has_certs()),
    };
    println!(
        "swarm: {}/{} tunnels connected in {:.3} s ({:.0} tunnels/s), {} failures{}",
        report.tunnels_connected,
        attempted,
        secs,
        report.tunnels_per_s,
        report.failures_total,
        match (&report.first_error, report.failures_total) {
            (Some(e), n) if n > 0 => format!(" (first: {e})"),
            _ => String::new(),
        }
    );
    if let Some(path) = &json_out {
        let json = serde_json::to_string_pretty(&report).context("cannot encode report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let holds = worker
        .join()
        .map_err(|_| anyhow::anyhow!("swarm thread panicked"))??;
    let end = SwarmEnd {
        requests_served: holds.iter().map(|h| h.requests).sum(),
        tunnels_closed_early: holds.iter().map(|h| h.closed_early).sum(),
    };
    println!(
        "swarm: held for {:?}; {} requests served; {} tunnels closed by the responder before the end",
        cfg.hold, end.requests_served, end.tunnels_closed_early
    );
    Ok(report)
}

async fn shard_main(
    index: usize,
    threads: usize,
    cfg: SwarmConfig,
    start: Instant,
    tx: mpsc::Sender<ShardDial>,
) -> ShardHold {
    let cfg = Rc::new(cfg);
    // Tunnels of this shard: global tunnel numbers t with (t / cpn) % threads == index.
    let cpn = cfg.connections_per_node.max(1);
    let mine: Rc<Vec<u64>> = Rc::new(
        (0..cfg.nodes)
            .filter(|n| (*n % threads as u64) as usize == index)
            .flat_map(|n| (0..cpn).map(move |k| n * cpn + k))
            .collect(),
    );
    let next = Rc::new(Cell::new(0usize));
    let dial = Rc::new(RefCell::new(ShardDial::default()));
    let served = Rc::new(Cell::new(0u64));
    let closed = Rc::new(Cell::new(0u64));
    let alive = Rc::new(Cell::new(true));

    let workers = cfg.concurrency.max(1).min(mine.len().max(1));
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (cfg, mine, next, dial) = (cfg.clone(), mine.clone(), next.clone(), dial.clone());
        let (served, closed, alive) = (served.clone(), closed.clone(), alive.clone());
        handles.push(monoio::spawn(async move {
            loop {
                let i = next.get();
                if i >= mine.len() {
                    break;
                }
                next.set(i + 1);
                let tunnel = mine[i];
                let node = tunnel / cpn;
                let source = cfg.sources[(tunnel % cfg.sources.len() as u64) as usize];
                match open_tunnel(&cfg, node, source).await {
                    Ok(io) => {
                        dial.borrow_mut().connected += 1;
                        let (cfg, served, closed, alive) =
                            (cfg.clone(), served.clone(), closed.clone(), alive.clone());
                        monoio::spawn(async move {
                            serve_tunnel(io, cfg.body.clone(), served).await;
                            if alive.get() {
                                closed.set(closed.get() + 1);
                            }
                        });
                    }
                    Err(e) => {
                        let mut d = dial.borrow_mut();
                        *d.failures.entry(e.kind.into_owned()).or_default() += 1;
                        if d.first_error.is_none() {
                            d.first_error = Some(format!("edge-{node}: {}", e.detail));
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await;
    }
    let mut d = dial.borrow().clone();
    d.elapsed = start.elapsed();
    let _ = tx.send(d);

    // Hold from the end of dialing: the report comes first, the load runs next.
    monoio::time::sleep(cfg.hold).await;
    alive.set(false);
    ShardHold {
        requests: served.get(),
        closed_early: closed.get(),
    }
}

struct DialError {
    /// The key in the failure breakdown.
    kind: Cow<'static, str>,
    detail: String,
}

fn dial_err(kind: impl Into<Cow<'static, str>>, detail: impl std::fmt::Display) -> DialError {
    let kind = kind.into();
    DialError {
        detail: format!("{kind}: {detail}"),
        kind,
    }
}

/// A TLS failure's key in the failure breakdown: `tls <label>`.
fn tls_err(failure: TlsFailure, detail: impl std::fmt::Display) -> DialError {
    dial_err(format!("tls {}", failure.label()), detail)
}

/// Connects from `source`, handshakes as node `node`, returns the stream at HTTP/2.
async fn open_tunnel(
    cfg: &SwarmConfig,
    node: u64,
    source: IpAddr,
) -> Result<Rewind<TunnelStream>, DialError> {
    let stream = monoio::time::timeout(cfg.connect_timeout, connect_from(source, cfg.responder))
        .await
        .map_err(|_| dial_err("connect", "timed out"))?
        .map_err(|e| dial_err("connect", e))?;
    let _ = stream.set_nodelay(true);
    let io = rtun::net::completion::CompletionStream::new(stream);
    let mut io = match &cfg.tls {
        None => TunnelStream::Plain(io),
        Some(tls) => match monoio::time::timeout(cfg.connect_timeout, tls.connect(io)).await {
            Ok(Ok(session)) => TunnelStream::Dialed(Box::new(session)),
            Ok(Err(e)) => return Err(tls_err(e.failure, e)),
            Err(_) => return Err(dial_err("tls timeout", "no TLS handshake")),
        },
    };
    // After the TLS handshake, an I/O error carrying a TLS alert (TLS 1.3: the responder
    // refusing our certificate, told on the first read) is a TLS failure.
    let is_tls = io.is_tls();
    let io_err = |e: io::Error| match classify(&e) {
        f if is_tls && f != TlsFailure::Io => tls_err(f, e),
        _ => dial_err("io", e),
    };
    let identity = TunnelIdentity {
        node_id: format!("{}{node}", cfg.node_prefix),
        cluster_id: cfg.cluster.clone(),
        tenant_id: cfg.tenant.clone(),
    };
    let host = cfg.responder.to_string();
    let request = HandshakeRequest {
        host: &host,
        path: &cfg.request_path,
        identity: &identity,
        upstream_cluster: "swarm",
        form: HandshakeForm::Plain,
        initiation_time: None,
        extra_headers: &[],
    };
    let exchange = async {
        io.write_all(&request.encode()).await.map_err(io_err)?;
        io.flush().await.map_err(io_err)?;
        let mut buf = Vec::with_capacity(256);
        loop {
            let n = io.read_buf(&mut buf).await.map_err(io_err)?;
            if n == 0 {
                return Err(dial_err("closed", "responder closed during the handshake"));
            }
            match parse_response(&buf, HandshakeForm::Plain) {
                Ok(Some((resp, used))) => {
                    if resp.status != 200 {
                        let kind = match resp.status {
                            400 => "status 400",
                            403 => "status 403",
                            404 => "status 404",
                            408 => "status 408",
                            429 => "status 429",
                            503 => "status 503",
                            _ => "status other",
                        };
                        return Err(dial_err(
                            kind,
                            format!("{} {}", resp.status, resp.body.trim_end()),
                        ));
                    }
                    return Ok(Bytes::from(buf.split_off(used)));
                }
                Ok(None) if buf.len() > MAX_HANDSHAKE_BYTES => {
                    return Err(dial_err("malformed", "response too large"))
                }
                Ok(None) => {}
                Err(e) => return Err(dial_err("malformed", e)),
            }
        }
    };
    let prefix = monoio::time::timeout(cfg.connect_timeout, exchange)
        .await
        .map_err(|_| dial_err("handshake timeout", "no handshake response"))??;
    Ok(Rewind::new(prefix, io))
}

/// Non-blocking connect bound to `source` (port chosen by the kernel).
async fn connect_from(source: IpAddr, to: SocketAddr) -> io::Result<monoio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    match socket.connect(&SockAddr::from(to)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) /* EINPROGRESS */ => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let std_stream: std::net::TcpStream = socket.into();
    let stream = monoio::net::TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    // SO_ERROR tells whether the connect succeeded.
    // SAFETY: the fd stays owned by `stream`, which outlives `fd` and `probe`.
    let fd =
        unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&stream)) };
    let probe = socket2::SockRef::from(&fd);
    if let Some(e) = probe.take_error()? {
        return Err(e);
    }
    probe.peer_addr()?;
    Ok(stream)
}

/// Serves HTTP/2 on a tunnel until it closes: every request gets `200` and `body`.
async fn serve_tunnel(io: Rewind<TunnelStream>, body: Bytes, served: Rc<Cell<u64>>) {
    let Ok(mut conn) = h2::server::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_concurrent_streams(1000)
        .handshake::<_, Bytes>(io)
        .await
    else {
        return;
    };
    while let Some(next) = conn.accept().await {
        let Ok((req, mut respond)) = next else { break };
        served.set(served.get() + 1);
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        let end_at_headers = body.is_empty();
        if req.body().is_end_stream() {
            drop(req);
            if let Ok(mut send) = respond.send_response(resp, end_at_headers) {
                if !end_at_headers {
                    let _ = send.send_data(body.clone(), true);
                }
            }
        } else {
            // A request with a body: read it (releasing flow control) before answering.
            let body = body.clone();
            monoio::spawn(async move {
                let mut recv = req.into_body();
                while let Some(chunk) = recv.data().await {
                    let Ok(chunk) = chunk else { return };
                    let _ = recv.flow_control().release_capacity(chunk.len());
                }
                if let Ok(mut send) = respond.send_response(resp, end_at_headers) {
                    if !end_at_headers {
                        let _ = send.send_data(body, true);
                    }
                }
            });
        }
    }
}

/// The default request path, re-exported for the CLI.
pub const REQUEST_PATH: &str = DEFAULT_REQUEST_PATH;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        let s = parse_sources("127.0.0.2-127.0.0.4").expect("range");
        assert_eq!(s.len(), 3);
        assert_eq!(s[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        let s = parse_sources("127.0.0.1, 127.0.0.9").expect("list");
        assert_eq!(s.len(), 2);
        assert!(parse_sources("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_sources("").is_err());
        assert!(parse_sources("nope").is_err());
    }
}
