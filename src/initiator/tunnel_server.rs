//! The initiator's end of a tunnel: an HTTP/2 server on the connection it dialed.
//!
//! Each accepted stream is forwarded to a local service on its own tracked task. The initiator
//! pings too, with its own `ping_interval` and `ping_failure_threshold` (Envoy issue 46677: a
//! silently dead path must be noticed and redialed). On shutdown, or when its host leaves the
//! endpoint's set (`hosts::Stop`), it sends GOAWAY and lets in-flight streams finish within the
//! drain timeout.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use super::hosts::Stop;
use super::InitiatorShard;
use crate::tunnel::info::{Metered, TunnelInfo};
use crate::tunnel::{self, keepalive, End, Keepalive, TunnelIo};

type Accepted = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<bytes::Bytes>,
);

enum Event {
    Stream(Box<Result<Accepted, h2::Error>>),
    End(End),
    Shutdown,
}

/// Serves HTTP/2 on an established tunnel until it ends, or drains it once `stop` fires;
/// counts its traffic and streams in `info`.
pub async fn serve(ctx: &Rc<InitiatorShard>, io: TunnelIo, stop: &Stop, info: &TunnelInfo) -> End {
    let io = Metered::new(io, info.meter.clone());
    // The settings of the generation current when the tunnel came up; the snapshot itself is
    // not held (it would keep that generation's pools alive for the tunnel's life).
    let (max_streams, handshake_timeout, settings) = {
        let snapshot = ctx.snapshot();
        let cfg = &snapshot.cfg;
        let settings = Keepalive {
            interval: cfg.ping_interval,
            failure_threshold: cfg.ping_failure_threshold,
        };
        (cfg.max_concurrent_streams, cfg.handshake_timeout, settings)
    };
    let handshake = h2::server::Builder::new()
        .initial_window_size(tunnel::STREAM_WINDOW)
        .initial_connection_window_size(tunnel::CONNECTION_WINDOW)
        .max_frame_size(tunnel::MAX_FRAME)
        .max_concurrent_streams(max_streams)
        .handshake::<_, bytes::Bytes>(io);
    let mut conn = match monoio::time::timeout(handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return End::Failed(e),
        Err(_) => return End::Dead,
    };
    let mut keepalive = conn
        .ping_pong()
        .map(|pp| Box::pin(keepalive::watch(pp, settings, info.meter.clone())));
    let mut shutdown = pin!(crate::shard::rare::Rare::new(stop.wait()));
    // Request bodies park here what their local services have not read yet; the connection
    // window gets it back at once (`http::body::parking`).
    let parking = tunnel::parking_lot();
    let mut window = parking.window_target(tunnel::CONNECTION_WINDOW);
    // Each stream is forwarded on its own task, counted on the tunnel while it runs.
    let serve_stream = |request, respond| {
        let stream = info.stream_guard();
        // Boxed once: spawning moves the task's future, which is large.
        let handled = Box::pin(super::forward::handle(
            ctx.clone(),
            request,
            respond,
            parking.clone(),
        ));
        ctx.tasks.spawn(async move {
            handled.await;
            drop(stream);
        });
    };
    loop {
        let event = poll_fn(|cx| {
            if let Some(target) = window.poll_target(cx) {
                conn.set_target_window_size(target);
            }
            if let Some(k) = keepalive.as_mut() {
                if let Poll::Ready(end) = k.as_mut().poll(cx) {
                    return Poll::Ready(Event::End(End::from(end)));
                }
            }
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            conn.poll_accept(cx).map(|s| match s {
                Some(s) => Event::Stream(Box::new(s)),
                None => Event::End(End::Closed),
            })
        })
        .await;
        match event {
            Event::Stream(accepted) => match *accepted {
                Ok((request, respond)) => {
                    serve_stream(request, respond);
                }
                Err(e) => return End::Failed(e),
            },
            Event::End(end) => return end,
            Event::Shutdown => {
                info.set_draining();
                conn.graceful_shutdown();
                // Keep serving in-flight streams until the connection closes or the grace
                // period ends; the keepalive no longer matters.
                let drain_timeout = ctx.snapshot().drain_timeout;
                let _ = monoio::time::timeout(drain_timeout, async {
                    // An error ends the connection: h2 would repeat it on every accept.
                    while let Some(Ok((request, respond))) = poll_fn(|cx| {
                        if let Some(target) = window.poll_target(cx) {
                            conn.set_target_window_size(target);
                        }
                        conn.poll_accept(cx)
                    })
                    .await
                    {
                        serve_stream(request, respond);
                    }
                })
                .await;
                return End::Drained;
            }
        }
    }
}
