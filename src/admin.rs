//! The admin endpoint: counters and the tunnel directory, for operators and tests.
//!
//! Served by shard 0 only, on `admin.listen` (127.0.0.1:9901 by default: never public unless
//! the configuration says so). `GET /stats` lists every counter as `name value`, `GET /tunnels`
//! lists host ids with their tunnels per shard, `GET /ready` answers 200.

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
use crate::stats::Stats;

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
    accept_loop(listener, &shutdown, "admin", |stream, _| {
        let Ok(io) = stream.try_into_poll_io() else {
            return;
        };
        let (stats, responder) = (stats.clone(), responder.clone());
        monoio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let page = page(&req, &stats, responder.as_deref());
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
    req: &Request<Incoming>,
    stats: &Stats,
    responder: Option<&Responder>,
) -> Response<Full<Bytes>> {
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
            let mut out = String::new();
            for (tenant, host, per_shard) in responder
                .map(|r| r.directory().snapshot())
                .unwrap_or_default()
            {
                let total: u32 = per_shard.iter().sum();
                // `tenant/host` when tenants are isolated; while they share one namespace the
                // tenant key is empty and the host stands alone.
                match tenant.is_empty() {
                    true => out.push_str(&format!("{host} {total} {per_shard:?}\n")),
                    false => out.push_str(&format!("{tenant}/{host} {total} {per_shard:?}\n")),
                }
            }
            text(StatusCode::OK, out.trim_end())
        }
        "/ready" => text(StatusCode::OK, "ready"),
        other => text(
            StatusCode::NOT_FOUND,
            format!("Unknown admin path '{other}': try /stats, /tunnels, /ready"),
        ),
    }
}
