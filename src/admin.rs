//! The admin endpoint: counters, the tunnel directory and the probes, for operators, tests
//! and orchestrators.
//!
//! Served by shard 0 only, on `admin.listen` (127.0.0.1:9901 by default: never public unless
//! the configuration says so), bound at start like every listener (`crate::shard`). `GET
//! /metrics` is every metric in the Prometheus text format, `GET /stats` the same snapshot as
//! `name value` lines for humans (`crate::metrics`), `GET /tunnels[?tenant=ID][&format=text]`
//! lists every live tunnel of both roles with its traffic, as JSON or a text table
//! (`tunnels`). The probes (`ready`): `GET /ready` answers 200 `ready`
//! when the process can take traffic, else 503 with what is missing; `GET /healthz` answers
//! 200 `ok` while the process runs (liveness). The endpoint keeps serving through the drain,
//! so `/ready` says `draining` and `/healthz` stays 200 until the roles have stopped.
//!
//! With `admin.token_sha256` or `admin.token_file`, every request but the probes needs the
//! bearer token (`access`): a kubelet probe carries no secret, and the probes reveal no
//! identity. Listening beyond loopback without a token is warned about loudly at start.
//!
//! `POST /reload` (`reload`) reads the configuration file again and applies it, as SIGHUP does.

mod access;
mod ready;
mod reload;
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
use crate::metrics::exposition::{self, Gauge};
use crate::metrics::{inc, Metrics};
use crate::net::completion::CompletionStream;
use crate::responder::Responder;
use crate::shard::shutdown::ShutdownSignal;
use crate::shard::{accept_loop, shard_listener};
use crate::tunnel::info::TunnelBoard;

/// What the admin endpoint reads.
pub struct AdminState {
    pub cfg: AdminConfig,
    pub stats: Metrics,
    pub responder: Option<Arc<Responder>>,
    /// The initiator's tunnels up per `tunnels` entry; `None` without an initiator.
    pub tunnels_up: Option<Arc<TunnelsUp>>,
    /// The initiator's live tunnels (`/tunnels`); `None` without an initiator.
    pub dialed: Option<Arc<TunnelBoard>>,
    /// The process's shutdown: triggered means draining (`/ready` 503); fatal on failure.
    pub process: ShutdownSignal,
    /// The process's reload (`POST /reload`); `None` refuses it.
    pub reloader: Option<Arc<crate::app::reload::Reloader>>,
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
        let io = CompletionStream::new(stream);
        let state = state.clone();
        monoio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let reload = req.uri().path() == "/reload"
                        && access::admitted(state.cfg.token.as_ref(), req.headers());
                    let page = match reload {
                        true => reload::serve(state.reloader.clone(), req.method()).await,
                        false => page(&state, &req),
                    };
                    Ok::<_, Infallible>(page)
                }
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
        "/metrics" => {
            let page = exposition::render(&stats.snapshot(), &gauges(responder));
            let mut response = text(StatusCode::OK, page.trim_end());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(exposition::CONTENT_TYPE),
            );
            response
        }
        "/stats" => {
            let mut out = String::new();
            for (name, value) in stats.totals() {
                out.push_str(&format!("{name} {value}\n"));
            }
            for gauge in gauges(responder) {
                out.push_str(&format!("{} {}\n", gauge.name, gauge.value));
            }
            text(StatusCode::OK, out.trim_end())
        }
        "/tunnels" => {
            let dialed = state.dialed.as_deref();
            let (status, format, out) = tunnels::page(req.uri().query(), responder, dialed);
            let mut page = text(status, out);
            page.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(format.content_type()),
            );
            page
        }
        other => text(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown admin path '{other}': try /metrics, /stats, /tunnels, /ready, /healthz, POST /reload"
            ),
        ),
    }
}

/// The responder's process-wide gauges, read outside the shards' blocks.
fn gauges(responder: Option<&Responder>) -> Vec<Gauge> {
    let Some(r) = responder else {
        return Vec::new();
    };
    let (egress, handshakes) = r.open_connections();
    vec![
        Gauge {
            name: "directory_tunnels",
            help: "Tunnels in the responder's directory (every shard).",
            value: r.directory().total() as u64,
        },
        Gauge {
            name: "egress_connections_open",
            help: "Client connections open on the egress listener.",
            value: egress as u64,
        },
        Gauge {
            name: "handshakes_in_progress",
            help: "Tunnel connections in TLS or handshake (max_handshakes_in_progress).",
            value: handshakes as u64,
        },
    ]
}
