//! `loadgen serve`: a thread-per-core HTTP/1.1 + h2c (prior knowledge) benchmark
//! service. Every shard accepts on its own SO_REUSEPORT listener on the same address;
//! each connection is sniffed for the HTTP/2 preface and served by hyper.
//!
//! Routes: `/echo` streams the request body back; `/bytes/N` streams N bytes in 64 KiB
//! chunks; anything else reads the whole request body (streaming, counting it) and
//! replies with the fixed `--body-size` body. Every response carries
//! `x-echo-length` = request body bytes read (for `/echo`, the declared
//! content-length, since the header leaves before the body is read).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use monoio::io::IntoPollIo;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use crate::serve_body::{ServeBody, CHUNK};
use crate::shard::{self, ShardError};
use rtun::http::io::{sniff_h2, HyperIo};
use rtun::http::rt::ShardExecutor;

const ECHO_LENGTH: &str = "x-echo-length";

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("serving thread {thread} stopped: {reason}")]
    Accept { thread: usize, reason: String },
    #[error(transparent)]
    Shard(#[from] ShardError),
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub threads: usize,
    pub body_size: usize,
    pub delay: Duration,
    pub pin: bool,
}

/// Per-shard state shared by the connections of that shard.
struct Responder {
    body: Bytes,
    chunk: Bytes,
    delay: Duration,
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Binds one SO_REUSEPORT listener per thread (port 0 resolves to one real port
/// shared by all) and returns them with the bound address.
pub fn bind(cfg: &ServeConfig) -> Result<(SocketAddr, Vec<std::net::TcpListener>), ServeError> {
    let listen_err = |e: io::Error| ServeError::Listen {
        addr: cfg.listen,
        reason: crate::outcome::describe_io_error(&e),
    };
    let first = reuseport_listener(cfg.listen).map_err(listen_err)?;
    let addr = first.local_addr().map_err(listen_err)?;
    let mut listeners = vec![first];
    for _ in 1..cfg.threads.max(1) {
        listeners.push(reuseport_listener(addr).map_err(listen_err)?);
    }
    Ok((addr, listeners))
}

/// Serves on `listeners` (one per shard) until the process is stopped.
pub fn serve(cfg: ServeConfig, listeners: Vec<std::net::TcpListener>) -> Result<(), ServeError> {
    let threads = listeners.len();
    let slots: Vec<std::sync::Mutex<Option<std::net::TcpListener>>> = listeners
        .into_iter()
        .map(|l| std::sync::Mutex::new(Some(l)))
        .collect();
    let slots = std::sync::Arc::new(slots);
    let pin = cfg.pin;
    let results = shard::run_shards(threads, pin, move |i| {
        let listener = slots
            .get(i)
            .and_then(|m| m.lock().ok().and_then(|mut l| l.take()));
        let cfg = cfg.clone();
        async move {
            match listener {
                Some(l) => accept_loop(l, cfg).await,
                None => Err(format!("no listener for thread {i}")),
            }
        }
    })?;
    for (thread, r) in results.into_iter().enumerate() {
        r.map_err(|reason| ServeError::Accept { thread, reason })?;
    }
    Ok(())
}

async fn accept_loop(listener: std::net::TcpListener, cfg: ServeConfig) -> Result<(), String> {
    let listener = monoio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let responder = Rc::new(Responder {
        body: Bytes::from(vec![b'x'; cfg.body_size]),
        chunk: Bytes::from(vec![b'x'; CHUNK]),
        delay: cfg.delay,
    });
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                monoio::spawn(serve_connection(stream, responder.clone()));
            }
            Err(_) => {
                // Out of file descriptors or similar: back off briefly and keep serving.
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn serve_connection(stream: monoio::net::TcpStream, responder: Rc<Responder>) {
    let _ = stream.set_nodelay(true);
    let Ok(io) = stream.into_poll_io() else {
        return;
    };
    let Some((is_h2, io)) = sniff_h2(io).await else {
        return;
    };
    let io = HyperIo(io);
    let service = service_fn(move |req| handle(req, responder.clone()));
    if is_h2 {
        let _ = hyper::server::conn::http2::Builder::new(ShardExecutor)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(1 << 16)
            .max_concurrent_streams(1024)
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
            .await;
    }
}

/// Parses `/bytes/N`.
fn bytes_route(path: &str) -> Option<u64> {
    path.strip_prefix("/bytes/")?.parse().ok()
}

async fn handle(
    req: Request<Incoming>,
    responder: Rc<Responder>,
) -> Result<Response<ServeBody>, Infallible> {
    let path = req.uri().path();
    if path == "/echo" {
        let declared = req.headers().get(http::header::CONTENT_LENGTH).cloned();
        let mut resp = Response::new(ServeBody::Echo(req.into_body()));
        if let Some(len) = declared {
            resp.headers_mut().insert(ECHO_LENGTH, len);
        }
        return Ok(resp);
    }
    let stream_len = bytes_route(path);
    let bad_bytes_path = stream_len.is_none() && path.starts_with("/bytes/");
    let mut body = req.into_body();
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    read += d.len() as u64;
                }
            }
            // The client went away mid-body; hyper drops the response anyway.
            Err(_) => break,
        }
    }
    if !responder.delay.is_zero() {
        monoio::time::sleep(responder.delay).await;
    }
    let body = match stream_len {
        Some(n) => ServeBody::Stream {
            chunk: responder.chunk.clone(),
            remaining: n,
        },
        None if bad_bytes_path => ServeBody::Fixed(Some(Bytes::from_static(b"bad /bytes/N\n"))),
        None => ServeBody::Fixed(Some(responder.body.clone())),
    };
    let mut resp = Response::new(body);
    if bad_bytes_path {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
    }
    resp.headers_mut()
        .insert(ECHO_LENGTH, HeaderValue::from(read));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_route() {
        assert_eq!(bytes_route("/bytes/1073741824"), Some(1 << 30));
        assert_eq!(bytes_route("/bytes/x"), None);
        assert_eq!(bytes_route("/other"), None);
    }

    #[test]
    fn binds_reuseport_on_one_port() {
        let cfg = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            threads: 3,
            body_size: 1,
            delay: Duration::ZERO,
            pin: false,
        };
        let (addr, listeners) = bind(&cfg).expect("binds");
        assert_ne!(addr.port(), 0);
        assert_eq!(listeners.len(), 3);
        for l in &listeners {
            assert_eq!(l.local_addr().expect("addr"), addr);
        }
    }
}
