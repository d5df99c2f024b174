//! The admin endpoint: counters, the tunnel directory and the probes, for operators, tests
//! and orchestrators.
//!
//! Served by shard 0 only, on `admin.listen` (127.0.0.1:9901 by default: never public unless
//! the configuration says so), bound at start like every listener (`crate::shard`). `GET
//! /stats` lists every counter as `name value`, `GET /tunnels[?tenant=ID]` lists host ids with
//! their tunnels per shard (`tunnels`). The probes (`ready`): `GET /ready` answers 200 `ready`
//! when the process can take traffic, else 503 with what is missing; `GET /healthz` answers
//! 200 `ok` while the process runs (liveness). The endpoint keeps serving through the drain,
//! so `/ready` says `draining` and `/healthz` stays 200 until the roles have stopped.
//!
//! With `admin.token_sha256` or `admin.token_file`, every request but the probes needs the
//! bearer token (`access`): a kubelet probe carries no secret, and the probes reveal no
//! identity. Listening beyond loopback without a token is warned about loudly at start.

mod access;
mod ready;
mod tunnels;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;

use crate::config::AdminConfig;
use crate::http::io::HyperIo;
use crate::http::local_reply::text;
use crate::http::rt::ShardTimer;
use crate::initiator::tunnels_up::TunnelsUp;
use crate::responder::Responder;
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::{accept_loop, shard_listener};
use crate::stats::{inc, Stats};

/// What the admin endpoint reads.
pub struct AdminState {
    pub cfg: AdminConfig,
    pub stats: Stats,
    pub responder: Option<Arc<Responder>>,
    /// The initiator's tunnels up per `tunnels` entry; `None` without an initiator.
    pub tunnels_up: Option<Arc<TunnelsUp>>,
    /// The process's shutdown: triggered means draining (`/ready` 503); fatal on failure.
    pub process: ShutdownSignal,
}

/// Serves the admin endpoint on `listener` (bound by `app::start`, `admin.listen`) until
/// `stop`, which the app fires once the roles have drained.
pub async fn run(listener: std::net::TcpListener, state: AdminState, stop: ShutdownSignal) {
    let cfg = &state.cfg;
    let listener = match shard_listener(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot accept on the admin listener {}: {e}", cfg.listen);
            return state.process.fatal();
        }
    };
    if cfg.exposed_without_token() {
        tracing::warn!(
            listen = %cfg.listen,
            "SECURITY: the admin endpoint listens beyond loopback without a token: anyone who \
             reaches it reads every counter and the tunnel directory (node, cluster and tenant \
             ids); set admin.token_sha256 or admin.token_file, or listen on 127.0.0.1"
        );
    }
    let state = Arc::new(state);
    accept_loop(listener, &stop, "admin", |stream, _| {
        let Ok(io) = stream.try_into_poll_io() else {
            return;
        };
        let state = state.clone();
        monoio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let page = page(&state, &req);
                async move { Ok::<_, Infallible>(page) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(ShardTimer)
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(HyperIo(io), service)
                .await;
        });
    })
    .await
}

fn page(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (cfg, stats, responder) = (&state.cfg, &state.stats, state.responder.as_deref());
    match req.uri().path() {
        "/healthz" => return text(StatusCode::OK, "ok"),
        "/ready" => {
            let tunnels_up = state.tunnels_up.as_deref();
            let (status, out) = ready::page(&state.process, responder, tunnels_up, cfg.ready_when);
            return text(status, out);
        }
        _ => {}
    }
    if !access::admitted(cfg.token.as_ref(), req.headers()) {
        // Admin runs on shard 0.
        inc(&stats.shard(0).admin_401_unauthenticated);
        return access::refusal().map(Full::new);
    }
    match req.uri().path() {
        "/stats" => {
            let mut out = String::new();
            for (name, value) in stats.totals() {
                out.push_str(&format!("{name} {value}\n"));
            }
            if let Some(r) = responder {
                out.push_str(&format!("directory_tunnels {}\n", r.directory().total()));
                let (egress, handshakes) = r.open_connections();
                out.push_str(&format!("egress_connections_open {egress}\n"));
                out.push_str(&format!("handshakes_in_progress {handshakes}\n"));
            }
            text(StatusCode::OK, out.trim_end())
        }
        "/tunnels" => {
            let (status, out) = tunnels::page(req.uri().query(), responder);
            text(status, out)
        }
        other => text(
            StatusCode::NOT_FOUND,
            format!("Unknown admin path '{other}': try /stats, /tunnels, /ready, /healthz"),
        ),
    }
}
