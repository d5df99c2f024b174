//! `rtun service`: a small HTTP service to put behind an initiator — the demo's local service,
//! and the real local service of the end-to-end tests.
//!
//! HTTP/1.1 and h2c (prior knowledge) on one port. Paths:
//! - `/echo` streams the request body back;
//! - `/bytes/N` streams N bytes of a fixed pattern (`i % 251`), in 64 KiB chunks;
//! - `/delay/MS` answers after MS milliseconds (at most 60 000);
//! - `/status/CODE` answers with that status;
//! - `/headers` (and below it) answers with the request line and every request header, one
//!   `name: value` per line, so tests can see what reached the service;
//! - anything else says hello with the method and path.
//!
//! Every response carries `x-served-by: NAME` and `x-request-body-bytes` is not needed: `/echo`
//! returns exactly what it read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;

use crate::http::io::{sniff_h2, HyperIo};
use crate::http::rt::{ShardExecutor, ShardTimer};
use crate::net::completion::CompletionStream;

type ServiceBody = Either<Either<Full<Bytes>, Incoming>, PatternBody>;

/// Serves until the process ends; reports the bind result on `ready`.
pub async fn serve(
    addr: SocketAddr,
    name: String,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let listener = match crate::shard::bind_reuseport(addr) {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let name = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("rtun-service"));
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let io = CompletionStream::new(stream);
        let name = name.clone();
        monoio::spawn(async move {
            let Some((is_h2, io)) = sniff_h2(io).await else {
                return;
            };
            let service = service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(respond(req, name).await) }
            });
            let io = HyperIo(io);
            let _ = if is_h2 {
                hyper::server::conn::http2::Builder::new(ShardExecutor)
                    .timer(ShardTimer)
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .timer(ShardTimer)
                    .serve_connection(io, service)
                    .await
            };
        });
    }
}

async fn respond(req: Request<Incoming>, name: HeaderValue) -> Response<ServiceBody> {
    let path = req.uri().path().to_owned();
    let text = |status: StatusCode, msg: String| {
        let mut r = Response::new(Either::Left(Either::Left(Full::new(Bytes::from(msg)))));
        *r.status_mut() = status;
        r
    };
    let mut resp = if path == "/echo" {
        Response::new(Either::Left(Either::Right(req.into_body())))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        match n.parse::<u64>() {
            Ok(n) => Response::new(Either::Right(PatternBody {
                remaining: n,
                offset: 0,
            })),
            Err(_) => text(StatusCode::BAD_REQUEST, format!("bad byte count '{n}'\n")),
        }
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        match ms.parse::<u64>() {
            Ok(ms) => {
                monoio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
                text(StatusCode::OK, format!("delayed {ms} ms\n"))
            }
            Err(_) => text(StatusCode::BAD_REQUEST, format!("bad delay '{ms}'\n")),
        }
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => text(status, format!("status {status}\n")),
            None => text(StatusCode::BAD_REQUEST, format!("bad status '{code}'\n")),
        }
    } else if path == "/headers" || path.starts_with("/headers/") {
        let mut msg = format!("{} {}\n", req.method(), req.uri());
        for (name, value) in req.headers() {
            msg.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        text(StatusCode::OK, msg)
    } else {
        let msg = format!(
            "Hello from the service behind the initiator: {} {}\n",
            req.method(),
            req.uri()
        );
        text(StatusCode::OK, msg)
    };
    resp.headers_mut().insert("x-served-by", name);
    resp
}

/// Streams `remaining` bytes of the pattern `i % 251` (i counted from the first byte).
pub struct PatternBody {
    remaining: u64,
    offset: u64,
}

/// Size of each chunk `/bytes/N` yields.
const CHUNK: u64 = 64 * 1024;

/// The byte at position `i` of every `/bytes/N` body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK);
        let start = self.offset;
        let chunk: Vec<u8> = (start..start + n).map(pattern_byte).collect();
        self.remaining -= n;
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
