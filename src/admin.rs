//! The admin endpoint: counters and the tunnel directory, for operators and tests.
//!
//! Served by shard 0 only, on `admin.listen` (127.0.0.1:9901 by default: never public unless
//! the configuration says so). `GET /stats` lists every counter as `name value`,
//! `GET /tunnels[?tenant=ID]` lists host ids with their tunnels per shard (`tunnels`),
//! `GET /ready` answers 200. With `admin.token_sha256` or `admin.token_file`, every request
//! needs the bearer token (`access`); listening beyond loopback without one is warned about
//! loudly at start.

mod access;
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
use crate::responder::Responder;
use crate::shard::accept_loop;
use crate::shard::shutdown::ShutdownSignal;
use crate::stats::{inc, Stats};

/// Serves the admin endpoint until shutdown.
pub async fn run(
    cfg: AdminConfig,
    stats: Stats,
    responder: Option<Arc<Responder>>,
    shutdown: ShutdownSignal,
) {
    let listener = match monoio::net::TcpListener::bind(cfg.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot bind admin listener {}: {e}", cfg.listen);
            return shutdown.fatal();
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
    let cfg = Arc::new(cfg);
    accept_loop(listener, &shutdown, "admin", |stream, _| {
        let Ok(io) = stream.try_into_poll_io() else {
            return;
        };
        let (cfg, stats, responder) = (cfg.clone(), stats.clone(), responder.clone());
        monoio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let page = page(&cfg, &req, &stats, responder.as_deref());
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

fn page(
    cfg: &AdminConfig,
    req: &Request<Incoming>,
    stats: &Stats,
    responder: Option<&Responder>,
) -> Response<Full<Bytes>> {
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
            }
            text(StatusCode::OK, out.trim_end())
        }
        "/tunnels" => {
            let (status, out) = tunnels::page(req.uri().query(), responder);
            text(status, out)
        }
        "/ready" => text(StatusCode::OK, "ready"),
        other => text(
            StatusCode::NOT_FOUND,
            format!("Unknown admin path '{other}': try /stats, /tunnels, /ready"),
        ),
    }
}
