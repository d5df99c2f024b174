//! HTTPS on the egress listener (`egress_listener.tls`): the TLS handshake in front of hyper.
//!
//! The first bytes of each connection are peeked ([`peek_is_tls`]). A plaintext client (its
//! first byte printable ASCII: an HTTP/1 request, the h2c preface) is answered `400` with
//! "plain HTTP request sent to an HTTPS port" (what nginx says with its internal status 497)
//! and the connection is closed; everything else is handed to rustls. The peek and the
//! handshake together must finish within `header_read_timeout`. The negotiated ALPN protocol
//! picks hyper's server: `h2` → HTTP/2, `http/1.1` or none → HTTP/1.1.
//!
//! Every outcome is counted: `egress_tls_handshakes`, `egress_tls_handshake_timeout`, and
//! `egress_tls_failed_<label>` for each [`TlsFailure`] class (a plaintext client counts as
//! `plaintext_peer`); failures are logged at debug level with the peer's address.
//!
//! The server configuration is loaded once per process ([`load`]) into a [`Reloadable`] shared
//! by every shard; each handshake takes the current one, so a reload reaches new connections
//! while established ones keep their session.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::EgressListenerConfig;
use crate::http::io::Rewind;
use crate::metrics::{inc, TlsSide};
use crate::pipeline::{ConnectionInfo, RequestId};
use crate::responder::ResponderShard;
use crate::tls::{
    peek_is_tls, HandshakeError, Looks, PeerCertificate, Reloadable, ServerStream, ServerTls,
    TlsFailure,
};

/// ALPN protocols offered, in the server's order of preference.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The body of the answer to a plaintext request on the HTTPS port (nginx's words).
const PLAINTEXT_REPLY: &str = "plain HTTP request sent to an HTTPS port\n";

/// After answering a plaintext client, how long its remaining bytes are read and discarded
/// (so that closing does not reset the connection before the client has read the answer).
const PLAINTEXT_LINGER: Duration = Duration::from_secs(1);

/// Most bytes discarded while lingering.
const PLAINTEXT_LINGER_BYTES: usize = 64 * 1024;

/// Loads `egress_listener.tls` (certificate, key, optional client CA), or `None` for a
/// plaintext listener. The error names the configuration key and the file.
pub fn load(cfg: &EgressListenerConfig) -> io::Result<Option<Reloadable<ServerTls>>> {
    let Some(tls) = &cfg.tls else {
        return Ok(None);
    };
    ServerTls::reloadable(tls, &ALPN).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("responder.egress_listener.tls: {e}"),
        )
    })
}

/// A client connection whose TLS handshake succeeded.
pub(super) struct Accepted<T> {
    /// Boxed: a TLS session is over a kilobyte, and it lives as long as the connection.
    pub stream: Box<ServerStream<Rewind<T>>>,
    /// The client negotiated `h2` by ALPN.
    pub h2: bool,
    /// The scheme (`https`) and the client's certificate, for each request's context.
    pub connection: ConnectionInfo,
}

/// How the first bytes and the handshake went.
enum Handshake<T> {
    Done(Box<ServerStream<Rewind<T>>>),
    Plaintext(Rewind<T>),
    Failed(HandshakeError),
}

/// Runs the TLS handshake on a new egress connection; `None` when the connection is done
/// (refused, failed or timed out: counted and logged here).
pub(super) async fn accept<T>(
    ctx: &ResponderShard,
    tls: &ServerTls,
    io: T,
    peer: SocketAddr,
) -> Option<Accepted<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let stats = ctx.stats();
    let timeout = ctx.settings().cfg.egress_listener.header_read_timeout;
    let outcome = match monoio::time::timeout(timeout, handshake(tls, io)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            inc(&stats.egress_tls_handshake_timeout);
            tracing::debug!(%peer, "egress TLS handshake: no handshake within {timeout:?}");
            return None;
        }
    };
    let stream = match outcome {
        Handshake::Done(stream) => stream,
        Handshake::Plaintext(io) => {
            stats.tls_failed(TlsSide::Egress, TlsFailure::PlaintextPeer);
            let id = RequestId::generate();
            tracing::debug!(%peer, request_id = %id, "egress: plaintext on the HTTPS port: 400");
            refuse_plaintext(io, &id).await;
            return None;
        }
        Handshake::Failed(e) => {
            stats.tls_failed(TlsSide::Egress, e.failure);
            tracing::debug!(%peer, reason = e.failure.label(), "egress {e}");
            return None;
        }
    };
    let peer_certificate = match PeerCertificate::from_stream(&stream) {
        Ok(cert) => cert.map(Arc::new),
        Err(e) => {
            stats.tls_failed(TlsSide::Egress, TlsFailure::BadCertificate);
            tracing::debug!(%peer, reason = TlsFailure::BadCertificate.label(), "egress TLS: {e}");
            return None;
        }
    };
    inc(&stats.egress_tls_handshakes);
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    Some(Accepted {
        stream,
        h2,
        connection: ConnectionInfo {
            scheme: Scheme::HTTPS,
            peer_certificate,
        },
    })
}

async fn handshake<T>(tls: &ServerTls, mut io: T) -> Handshake<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let peek = match peek_is_tls(&mut io).await {
        Ok(peek) => peek,
        Err(e) => return Handshake::Failed(e.into()),
    };
    match peek.looks {
        Looks::Plaintext => Handshake::Plaintext(peek.replay(io)),
        Looks::Closed => Handshake::Failed(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        // Binary that is not a TLS record: rustls says what is wrong with it.
        Looks::Tls | Looks::Unknown => match tls.accept(peek.replay(io)).await {
            Ok(stream) => Handshake::Done(Box::new(stream)),
            Err(e) => Handshake::Failed(e),
        },
    }
}

/// Answers a plaintext client `400` and closes, reading what it still sends for a moment so
/// that the close does not reset the connection before the answer is read.
async fn refuse_plaintext<T>(mut io: T, id: &RequestId)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n{}: 1\r\nx-request-id: {id}\r\n\r\n{PLAINTEXT_REPLY}",
        PLAINTEXT_REPLY.len(),
        crate::http::local_reply::LOCAL_REPLY_HEADER,
    );
    let answer = async {
        io.write_all(reply.as_bytes()).await?;
        io.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut discarded = 0;
        while discarded < PLAINTEXT_LINGER_BYTES {
            match io.read(&mut buf).await? {
                0 => break,
                n => discarded += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    let _ = monoio::time::timeout(PLAINTEXT_LINGER, answer).await;
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::{Config, ResponderConfig};
    use crate::metrics::Metrics;
    use crate::responder::Responder;
    use crate::shard::shutdown::Shutdown;
    use crate::tls::testing::Pki;

    fn responder(tls: Option<crate::config::ServerTlsConfig>) -> std::io::Result<Arc<Responder>> {
        let mut config = Config::empty();
        let any = "127.0.0.1:0".parse().unwrap();
        let mut r = ResponderConfig::new(any, any);
        r.egress_listener.tls = tls;
        config.responder = Some(r);
        let (_shutdown, signal) = Shutdown::new();
        let built = Responder::new(&config, 1, Metrics::new(1), signal, None)?;
        Ok(built.expect("a responder").0)
    }

    #[test]
    fn loads_once_and_reloads_from_the_files_a_reload_names() {
        let pki = Pki::new("egress CA");
        let first = pki.server("egress", &["egress.test"]);
        let responder = responder(Some(first.server_cfg(Some(&pki.ca_path)))).unwrap();
        let tls = responder.egress_tls().expect("egress TLS");
        let before = tls.current();
        assert_eq!(
            before.config().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(before.client_ca(), Some(pki.ca_path.as_path()));

        let reload = |cfg: &crate::config::ServerTlsConfig| {
            let mut r = ResponderConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            );
            r.egress_listener.tls = Some(cfg.clone());
            let prepared = responder.prepare_certificates(&r)?;
            responder.install_certificates(prepared);
            Ok::<(), String>(())
        };
        // New files at the same paths: a reload swaps the configuration.
        pki.server("egress", &["egress.test"]);
        reload(&first.server_cfg(Some(&pki.ca_path))).unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current()));

        // Other files: a reload takes them, and drops the client CA it no longer names.
        let moved = pki.server("moved", &["egress.test"]);
        reload(&moved.server_cfg(None)).unwrap();
        assert_eq!(tls.current().client_ca(), None);

        // A broken key: the reload fails naming the file, the last good one stays.
        let good = tls.current();
        pki.write("moved-key.pem", "not a key\n");
        let err = reload(&moved.server_cfg(None)).unwrap_err();
        assert!(
            err.contains("egress_listener") && err.contains("moved-key.pem"),
            "{err}"
        );
        assert!(Arc::ptr_eq(&good, &tls.current()));
    }

    fn pki_free_cfg() -> crate::config::ServerTlsConfig {
        crate::config::ServerTlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        }
    }

    #[test]
    fn plaintext_listener_has_nothing_to_reload_and_bad_files_fail_the_start() {
        let plain = responder(None).unwrap();
        assert!(plain.egress_tls().is_none());
        let mut r = ResponderConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        );
        r.egress_listener.tls = Some(pki_free_cfg());
        // Turning TLS on needs a restart: nothing is loaded for a plaintext listener.
        assert!(plain.prepare_certificates(&r).is_ok());
        assert!(plain.egress_tls().is_none());

        let pki = Pki::new("egress CA");
        let mut cfg = pki.server("egress", &["egress.test"]).server_cfg(None);
        cfg.cert = pki.dir.path().join("missing.pem");
        let err = responder(Some(cfg)).err().expect("a load error");
        assert!(
            err.to_string()
                .starts_with("responder.egress_listener.tls: "),
            "{err}"
        );
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    #[test]
    fn every_failure_class_has_its_counter() {
        for failure in TlsFailure::ALL {
            let metrics = crate::metrics::Metrics::new(1);
            metrics.shard(0).tls_failed(TlsSide::Egress, failure);
            let name = format!("egress_tls_failed_{}", failure.label());
            let totals = metrics.totals();
            let counted: Vec<_> = totals.iter().filter(|(_, v)| *v > 0).collect();
            assert_eq!(counted, [&(name, 1)], "{failure:?}");
        }
    }
}
