//! `rtun demo`: a responder, an initiator and a small service in one process on loopback.
//!
//! The configuration is `config/demo.yaml`, embedded at build time. `--check` sends requests
//! through the tunnel (HTTP/1.1 and h2c, by node id and by cluster id, a streamed body, and the
//! error replies) and exits non-zero if any answer is wrong.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::config::Config;
use crate::http::io::HyperIo;
use crate::http::rt::{ShardExecutor, ShardTimer};
use crate::net::completion::CompletionStream;

/// The embedded demo configuration.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");

/// How long `--check` waits for the first tunnel to come up.
const TUNNEL_WAIT: Duration = Duration::from_secs(10);

pub fn main(check: bool) -> ExitCode {
    let config = match crate::config::parse(DEMO_CONFIG, "config/demo.yaml (embedded)") {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some((service, egress)) = addresses(&config) else {
        eprintln!("rtun demo: the embedded configuration lacks the local-app cluster or the egress listener");
        return ExitCode::FAILURE;
    };
    crate::app::block_signals();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("demo-service".into())
        .spawn(move || {
            crate::shard::runtime::block_on(
                0,
                crate::service::serve(service, "demo-service".into(), ready_tx),
            )
        });
    if spawned.is_err() || !matches!(ready_rx.recv_timeout(Duration::from_secs(5)), Ok(Ok(()))) {
        eprintln!("rtun demo: cannot start the demo service on {service}");
        return ExitCode::FAILURE;
    }
    let running = match crate::app::start(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rtun demo: cannot start shards: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("rtun demo: responder egress on http://{egress}, a service on {service} behind the initiator.");
    println!("Reach the service through the tunnel with:");
    println!("  curl -H 'x-node-id: demo-node' http://{egress}/hello");
    println!(
        "  curl --http2-prior-knowledge -H 'x-cluster-id: demo-cluster' http://{egress}/hello"
    );
    println!("  curl -H 'x-node-id: demo-node' --data-binary @README.md http://{egress}/echo");
    if !check {
        println!("Serving until Ctrl-C.");
        let reason = running.wait_for_stop();
        tracing::info!("{reason}: draining");
        let failed = running.failed();
        running.stop();
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let mut failures = 0;
    crate::shard::runtime::block_on(0, async {
        failures = run_checks(egress).await;
    });
    let failed = running.failed();
    running.stop();
    if failures == 0 && !failed {
        println!("demo check: all requests answered correctly");
        ExitCode::SUCCESS
    } else {
        println!("demo check: {failures} check(s) failed");
        ExitCode::FAILURE
    }
}

fn addresses(config: &Config) -> Option<(SocketAddr, SocketAddr)> {
    let service = config
        .clusters
        .get("local-app")?
        .endpoints
        .first()?
        .parse()
        .ok()?;
    let egress = config.responder.as_ref()?.egress_listener.listen;
    Some((service, egress))
}

/// One request through the egress listener; returns status and body.
pub async fn request(
    addr: SocketAddr,
    h2: bool,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error>> {
    let stream = monoio::net::TcpStream::connect(addr).await?;
    let io = HyperIo(CompletionStream::new(stream));
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body))?;
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(ShardExecutor)
            .timer(ShardTimer)
            .handshake(io)
            .await?;
        monoio::spawn(conn);
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        monoio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = path.parse()?;
        parts
            .headers
            .insert(http::header::HOST, addr.to_string().parse()?);
        send.send_request(Request::from_parts(parts, body)).await?
    };
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One request of `--check` and the status it must get (an `/echo` must also return its body).
struct Check {
    name: &'static str,
    h2: bool,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Bytes,
    want: StatusCode,
}

async fn run_checks(egress: SocketAddr) -> usize {
    let node = [("x-node-id", "demo-node")];
    let deadline = Instant::now() + TUNNEL_WAIT;
    loop {
        match request(egress, false, Method::GET, "/hello", &node, Bytes::new()).await {
            Ok((StatusCode::OK, _)) => break,
            _ if Instant::now() < deadline => monoio::time::sleep(Duration::from_millis(100)).await,
            other => {
                println!("FAIL tunnel did not come up within {TUNNEL_WAIT:?}: {other:?}");
                return 1;
            }
        }
    }
    let big = Bytes::from(
        (0..1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let get = |name, h2, headers: &'static [(&'static str, &'static str)], want| Check {
        name,
        h2,
        method: Method::GET,
        path: "/hello",
        headers,
        body: Bytes::new(),
        want,
    };
    let echo = |name, h2| Check {
        name,
        h2,
        method: Method::POST,
        path: "/echo",
        headers: &[("x-node-id", "demo-node")],
        body: big.clone(),
        want: StatusCode::OK,
    };
    let checks = [
        get(
            "HTTP/1.1 by node id",
            false,
            &[("x-node-id", "demo-node")],
            StatusCode::OK,
        ),
        get(
            "h2c by node id",
            true,
            &[("x-node-id", "demo-node")],
            StatusCode::OK,
        ),
        get(
            "h2c by cluster id",
            true,
            &[("x-cluster-id", "demo-cluster")],
            StatusCode::OK,
        ),
        echo("1 MiB echoed over HTTP/1.1", false),
        echo("1 MiB echoed over h2c", true),
        get("400 without a host id", false, &[], StatusCode::BAD_REQUEST),
        get(
            "503 for an unknown host",
            false,
            &[("x-node-id", "nobody")],
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ];
    let mut failures = 0;
    for check in checks {
        let name = check.name;
        let sent = check.body.clone();
        let echoes = check.path == "/echo";
        match request(
            egress,
            check.h2,
            check.method,
            check.path,
            check.headers,
            check.body,
        )
        .await
        {
            Ok((status, got)) if status == check.want && (!echoes || got == sent) => {
                println!("ok   {name}: {status}");
            }
            Ok((status, got)) => {
                failures += 1;
                println!(
                    "FAIL {name}: {status} ({} bytes), expected {}",
                    got.len(),
                    check.want
                );
            }
            Err(e) => {
                failures += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
    failures
}
