//! Dialing and keeping tunnels: connect, handshake, echo leading RPINGs, hand the connection to
//! the tunnel server, and redial on loss with capped exponential backoff plus jitter.
//!
//! A keeper dials one host of an endpoint (`hosts::Target`: the exact resolved address) and
//! runs until its `hosts::Stop` fires: shutdown, or the host leaving the endpoint's set.
//!
//! A `429` handshake answer is honoured with its `Retry-After` (capped at 3600 s); any other
//! answer but the acceptance (`200`, or `101` to `handshake: upgrade`) is a failed attempt that
//! backs off like a failed connect.
//!
//! Every failed attempt is counted by responder cluster and [`DialError::label`]
//! (`rtun_initiator_dial_failures_total`), every tunnel as it comes up and ends
//! (`rtun_initiator_tunnels*`), on the keeper's shard's block through a slot it finds once.
//!
//! With `clusters.NAME.tls` the TLS handshake (within `connect_timeout`) comes first and the
//! session carries the handshake and then HTTP/2 for the tunnel's whole life. A refused TLS
//! handshake is a [`DialError::Tls`] naming its class (`unknown_ca`, `spki_pin_mismatch`, …),
//! counted as `rtun_tls_failures_total{side="initiator",reason=<class>}`. Under TLS 1.3 a responder that refuses our
//! certificate says so only after our side finished: that alert arrives on the first read and
//! is classified the same way.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use super::hosts::{Stop, Target};
use super::tunnel_tls::DialTls;
use super::{InitiatorShard, Snapshot};
use crate::access_log::{TunnelEvent, TunnelEventKind};
use crate::config::{InitiatorConfig, TunnelSpec};
use crate::http::io::Rewind;
use crate::net::completion::CompletionStream;
use crate::protocol::{
    parse_response, HandshakeForm, HandshakeRequest, RpingFilter, TunnelIdentity,
    MAX_HANDSHAKE_BYTES, RPING,
};
use crate::tls::{classify, TlsFailure};
use crate::tunnel::info::{Dialed, TunnelInfo};
use crate::tunnel::{TunnelIo, TunnelStream};

/// A tunnel that lived at least this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// Why a dial attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect to {endpoint} at {addr}: {source}")]
    Connect {
        endpoint: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("handshake I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS refused ({}): {detail}", .failure.label())]
    Tls { failure: TlsFailure, detail: String },
    #[error("clusters.NAME.tls did not load on the last reload (see the log); not dialing")]
    TlsUnavailable,
    #[error("TLS handshake not done within {0:?}")]
    TlsTimeout(Duration),
    #[error("no handshake response within {0:?}")]
    Timeout(Duration),
    #[error("malformed handshake response: {0}")]
    Malformed(#[from] crate::protocol::HandshakeError),
    #[error("responder closed the connection during the handshake")]
    Closed,
    #[error("no bearer token: {0}")]
    Credential(#[from] super::credential::CredentialError),
    #[error("responder rejected the handshake: {status} {body}")]
    Rejected {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// Not an attempt's failure but the endpoint set's (`hosts`): re-resolving the endpoint's
    /// name failed; its last known addresses are still dialed.
    #[error("resolve {endpoint}: {source}")]
    Resolve {
        endpoint: String,
        source: std::io::Error,
    },
}

/// The handshake statuses that keep their own `rejected_<status>` label (what rtun's
/// responder answers: 400 malformed or wrong cluster, 401, 403, 404 not a tunnel request,
/// 429 tunnel limit, 503 shutting down); any other is `rejected_other`.
const REJECTED_STATUSES: [(u16, &str); 6] = [
    (400, "rejected_400"),
    (401, "rejected_401"),
    (403, "rejected_403"),
    (404, "rejected_404"),
    (429, "rejected_429"),
    (503, "rejected_503"),
];

impl DialError {
    /// Every [`DialError::label`], in a fixed order: the `reason` values of
    /// `rtun_initiator_dial_failures_total`.
    pub const LABELS: [&'static str; 18] = [
        "resolve",
        "connect",
        "connect_timeout",
        "tls",
        "tls_timeout",
        "tls_unavailable",
        "credential",
        "io",
        "timeout",
        "closed",
        "malformed_response",
        "rejected_400",
        "rejected_401",
        "rejected_403",
        "rejected_404",
        "rejected_429",
        "rejected_503",
        "rejected_other",
    ];

    /// A stable label for counters and logs (a refused handshake by its status).
    pub fn label(&self) -> &'static str {
        match self {
            DialError::Resolve { .. } => "resolve",
            DialError::Connect { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
                "connect_timeout"
            }
            DialError::Connect { .. } => "connect",
            DialError::Tls { .. } => "tls",
            DialError::TlsTimeout(_) => "tls_timeout",
            DialError::TlsUnavailable => "tls_unavailable",
            DialError::Credential(_) => "credential",
            DialError::Io(_) => "io",
            DialError::Timeout(_) => "timeout",
            DialError::Closed => "closed",
            DialError::Malformed(_) => "malformed_response",
            DialError::Rejected { status, .. } => REJECTED_STATUSES
                .iter()
                .find(|(s, _)| s == status)
                .map_or("rejected_other", |(_, label)| label),
        }
    }
}

/// Keeps one tunnel slot to `target` alive until `stop` fires (shutdown, or the host retired).
pub async fn keep_tunnel(
    ctx: Rc<InitiatorShard>,
    spec: TunnelSpec,
    target: Target,
    slot: u32,
    stop: Stop,
) {
    let span = tracing::info_span!("tunnel", remote = %spec.remote_cluster, endpoint = %target.endpoint, addr = %target.addr, shard = ctx.shard, slot);
    async {
        // The responder cluster's metrics slot, found once for the keeper's life.
        let series = ctx.stats().dialed_slot(&ctx.series, &spec.remote_cluster);
        // Each attempt reads the configuration current when it starts (a reload changes the
        // next dial's settings); no snapshot is held while a tunnel serves.
        let mut backoff = ctx.snapshot().cfg.initial_reconnect_backoff;
        // When this slot first wanted its current tunnel: kept across failed attempts, cleared
        // once one is up (Envoy stamps its initiation-time header once per such episode).
        let mut wanted_since = None;
        loop {
            if stop.is_triggered() {
                return;
            }
            let initiated = *wanted_since.get_or_insert_with(SystemTime::now);
            let (initial, max) = {
                let snapshot = ctx.snapshot();
                let cfg = &snapshot.cfg;
                (cfg.initial_reconnect_backoff, cfg.max_reconnect_backoff)
            };
            let attempt = {
                let snapshot = ctx.snapshot();
                monoio::select! {
                    attempt = establish(&snapshot, &spec, &target, initiated) => attempt,
                    _ = stop.wait() => return,
                }
            };
            let wait = match attempt {
                Ok(io) => {
                    wanted_since = None;
                    ctx.stats().dialed_opened(series);
                    tracing::info!("tunnel up");
                    let event = TunnelEvent {
                        node: Some(&spec.identity.id),
                        cluster: Some(&spec.identity.cluster),
                        tenant: Some(&spec.identity.tenant),
                        peer: Some(target.addr),
                        ..TunnelEvent::default()
                    };
                    ctx.tunnel_event(TunnelEvent {
                        kind: Some(TunnelEventKind::Up),
                        ..event.clone()
                    });
                    let started = Instant::now();
                    let up = ctx.tunnels_up.hold(&spec); // counted for /ready while it serves
                    let info = Arc::new(TunnelInfo::new(
                        ctx.dialed.next_id(),
                        ctx.shard,
                        identity(&spec),
                        target.addr,
                        io.get_ref().is_tls(),
                        Some(Dialed {
                            remote_cluster: spec.remote_cluster.clone(),
                            endpoint: target.endpoint.to_string(),
                        }),
                        Arc::default(),
                        Arc::default(),
                        None,
                    ));
                    let listed = ctx.dialed.list(info.clone()); // on /tunnels while it serves
                    let end = super::tunnel_server::serve(&ctx, io, &stop, &info).await;
                    drop((up, listed));
                    ctx.stats().dialed_closed(series, &end);
                    tracing::info!("tunnel down: {end}");
                    ctx.tunnel_event(TunnelEvent {
                        kind: Some(TunnelEventKind::Down),
                        reason: Some(end.label()),
                        duration: Some(started.elapsed()),
                        ..event
                    });
                    if stop.is_triggered() {
                        return;
                    }
                    if end.redial_now() || started.elapsed() >= STABLE_AFTER {
                        backoff = initial;
                        continue;
                    }
                    next_backoff(&mut backoff, max)
                }
                Err(e) => {
                    ctx.stats().dial_failed(series, &e);
                    match e {
                        DialError::Rejected {
                            status,
                            body,
                            retry_after: Some(after),
                        } => {
                            tracing::warn!(
                                status,
                                "handshake rejected, retrying after {after:?}: {body}"
                            );
                            after
                        }
                        e => {
                            let wait = next_backoff(&mut backoff, max);
                            tracing::warn!("dial failed, retrying in {wait:?}: {e}");
                            wait
                        }
                    }
                }
            };
            monoio::select! {
                _ = monoio::time::sleep(wait) => {}
                _ = stop.wait() => return,
            }
        }
    }
    .instrument(span)
    .await
}

/// Returns the wait before the next attempt (with up to 25 % jitter either side) and doubles
/// `backoff` up to `max`.
fn next_backoff(backoff: &mut Duration, max: Duration) -> Duration {
    let base = (*backoff).min(max);
    *backoff = (*backoff * 2).min(max);
    let jitter = 0.75 + fastrand::f64() * 0.5;
    base.mul_f64(jitter).min(max)
}

/// Connects to `target`'s address and completes the handshake; returns the connection
/// positioned at HTTP/2. The endpoint's name is the handshake's `Host` and picks the TLS
/// configuration (its server name). `initiated` (when the tunnel was first wanted) is sent
/// unless `send_initiation_time` is off.
pub async fn establish(
    snapshot: &Snapshot,
    spec: &TunnelSpec,
    target: &Target,
    initiated: SystemTime,
) -> Result<TunnelIo, DialError> {
    let endpoint: &str = &target.endpoint;
    let cfg = &snapshot.cfg;
    // The token is read before connecting: without one there is nothing to dial for.
    let mut extra_headers = Cow::Borrowed(cfg.extra_handshake_headers.as_slice());
    if let Some(source) = &cfg.auth {
        extra_headers
            .to_mut()
            .push(super::credential::authorization(source)?);
    }
    let remote = snapshot.clusters.get(&spec.remote_cluster);
    let connect_timeout = remote.map_or(Duration::from_secs(30), |c| c.connect_timeout);
    let stream = crate::net::connect_addr(target.addr, connect_timeout)
        .await
        .map_err(|source| DialError::Connect {
            endpoint: endpoint.to_owned(),
            addr: target.addr,
            source,
        })?;
    let io = CompletionStream::new(stream);
    let mut io = match snapshot.tunnel_tls.get(&spec.remote_cluster, endpoint) {
        DialTls::Plain => TunnelStream::Plain(io),
        DialTls::Unavailable => return Err(DialError::TlsUnavailable),
        DialTls::Tls(tls) => match monoio::time::timeout(connect_timeout, tls.connect(io)).await {
            Ok(Ok(stream)) => TunnelStream::Dialed(Box::new(stream)),
            Ok(Err(e)) => {
                return Err(DialError::Tls {
                    failure: e.failure,
                    detail: e.to_string(),
                })
            }
            Err(_) => return Err(DialError::TlsTimeout(connect_timeout)),
        },
    };
    let is_tls = io.is_tls();
    handshake(cfg, spec, endpoint, &extra_headers, initiated, &mut io)
        .await
        .map_err(|e| match e {
            // A TLS alert that arrives after our side of the TLS handshake (TLS 1.3: the
            // responder refusing our certificate) surfaces as an I/O error here.
            DialError::Io(e) if is_tls && classify(&e) != TlsFailure::Io => DialError::Tls {
                failure: classify(&e),
                detail: e.to_string(),
            },
            other => other,
        })
        .map(|prefix| Rewind::new(prefix, io))
}

/// The identity a `tunnels` entry announces.
fn identity(spec: &TunnelSpec) -> TunnelIdentity {
    TunnelIdentity {
        node_id: spec.identity.id.clone(),
        cluster_id: spec.identity.cluster.clone(),
        tenant_id: spec.identity.tenant.clone(),
    }
}

/// Writes the handshake request, reads the answer and skips leading RPINGs; returns the first
/// bytes of HTTP/2.
async fn handshake(
    cfg: &InitiatorConfig,
    spec: &TunnelSpec,
    endpoint: &str,
    extra_headers: &[(String, String)],
    initiated: SystemTime,
    io: &mut TunnelStream,
) -> Result<Bytes, DialError> {
    let identity = identity(spec);
    let request = HandshakeRequest {
        host: endpoint,
        path: &cfg.request_path,
        identity: &identity,
        upstream_cluster: &spec.remote_cluster,
        form: cfg.handshake,
        initiation_time: cfg.send_initiation_time.then_some(initiated),
        extra_headers,
    };
    io.write_all(&request.encode()).await?;
    io.flush().await?;
    let read = read_response(io, cfg.handshake);
    let leftover = monoio::time::timeout(cfg.handshake_timeout, read)
        .await
        .map_err(|_| DialError::Timeout(cfg.handshake_timeout))??;
    skip_rpings(io, leftover, cfg.idle_timeout).await
}

/// Reads the handshake response; on acceptance (200, or 101 to the upgrade form) returns the
/// bytes read past it.
async fn read_response<S: AsyncRead + Unpin>(
    io: &mut S,
    form: HandshakeForm,
) -> Result<Vec<u8>, DialError> {
    let mut buf = Vec::with_capacity(512);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(DialError::Closed);
        }
        if let Some((resp, consumed)) = parse_response(&buf, form)? {
            if !resp.accepted() {
                return Err(DialError::Rejected {
                    status: resp.status,
                    body: resp.body.trim_end().to_owned(),
                    retry_after: resp.retry_after,
                });
            }
            return Ok(buf.split_off(consumed));
        }
        if buf.len() > MAX_HANDSHAKE_BYTES {
            return Err(DialError::Malformed(
                crate::protocol::HandshakeError::TooLarge,
            ));
        }
    }
}

/// Echoes each complete leading `RPING` (Envoy's pre-h2 keepalive) and returns the first bytes
/// of HTTP/2 once a non-RPING byte arrives. Each read may wait up to `idle`: an Envoy responder
/// starts HTTP/2 only when it first needs the tunnel and pings with RPING meanwhile.
async fn skip_rpings<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    mut input: Vec<u8>,
    idle: Duration,
) -> Result<Bytes, DialError> {
    let mut filter = RpingFilter::new();
    loop {
        let step = filter.feed(&input);
        for _ in 0..step.echo_count {
            io.write_all(RPING).await?;
        }
        if step.echo_count > 0 {
            io.flush().await?;
        }
        if let Some(from) = step.passthrough_from {
            let mut h2 = Vec::with_capacity(step.replay.len() + input.len() - from);
            h2.extend_from_slice(step.replay);
            h2.extend_from_slice(&input[from..]);
            return Ok(Bytes::from(h2));
        }
        input.clear();
        let read = monoio::time::timeout(idle, io.read_buf(&mut input))
            .await
            .map_err(|_| DialError::Timeout(idle))?;
        if read? == 0 {
            return Err(DialError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(4);
        let mut b = Duration::from_secs(1);
        let waits: Vec<_> = (0..5).map(|_| next_backoff(&mut b, max)).collect();
        assert!(waits.iter().all(|w| *w <= max));
        assert!(waits[0] >= Duration::from_millis(750) && waits[0] <= Duration::from_millis(1250));
        assert_eq!(b, max);
        assert!(waits[4] >= Duration::from_secs(3));
    }
}
