//! The TLS handshake on any tokio stream: [`accept`] for the server side, [`connect`] for the
//! client side, both generic over `T: AsyncRead + AsyncWrite + Unpin` (monoio's
//! `net::completion::CompletionStream`, a [`Rewind`](crate::http::io::Rewind) after [`peek_is_tls`](super::peek_is_tls),
//! an in-memory pipe in tests). The resulting streams are tokio streams again, so h2 and hyper
//! run on them exactly as on plaintext.
//!
//! Failures come back classified ([`HandshakeError`]). Note for TLS 1.3 with client
//! certificates: the client finishes its handshake before the server has judged the client's
//! certificate, so a client that is refused sees `connect` succeed and the refusal (for
//! example `no_client_cert`) on its first read; [`classify`] that error too.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::failure::{classify, TlsFailure};
use super::{ClientTls, ServerTls};

/// The server side of an established TLS session.
pub type ServerStream<T> = tokio_rustls::server::TlsStream<T>;
/// The client side of an established TLS session.
pub type ClientStream<T> = tokio_rustls::client::TlsStream<T>;

/// A failed handshake: its class and the underlying error (which says which side objected).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed: {failure}: {}", describe(source))]
pub struct HandshakeError {
    /// The class, with a stable [`label`](TlsFailure::label).
    pub failure: TlsFailure,
    /// What tokio-rustls returned.
    #[source]
    pub source: io::Error,
}

/// The error's text, with rustls's `Other(OtherError(..))` wrapper around our own verifier
/// errors (an SPKI pin mismatch) replaced by their message.
fn describe(error: &io::Error) -> String {
    let rustls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            format!("invalid peer certificate: {other}")
        }
        _ => error.to_string(),
    }
}

impl From<io::Error> for HandshakeError {
    fn from(source: io::Error) -> Self {
        Self {
            failure: classify(&source),
            source,
        }
    }
}

/// Performs the server side of the handshake with `tls` (with a [`Reloadable`](super::Reloadable),
/// pass `&reloadable.current()` for each new connection). With `client_ca`
/// set, success means the client presented a certificate that chains to it (see
/// [`PeerCertificate`](super::PeerCertificate) for its facts). No timeout: the caller bounds it.
pub async fn accept<T>(tls: &ServerTls, stream: T) -> Result<ServerStream<T>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    Ok(TlsAcceptor::from(tls.config().clone())
        .accept(stream)
        .await?)
}

/// Performs the client side of the handshake, verifying the server against `tls`'s CA, name
/// and pins, and presenting the client certificate if configured. No timeout: the caller
/// bounds it.
pub async fn connect<T>(tls: &ClientTls, stream: T) -> Result<ClientStream<T>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    Ok(TlsConnector::from(tls.config().clone())
        .connect(tls.server_name().clone(), stream)
        .await?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::tls::testing::{handshake, Pki};
    use crate::tls::{peek_is_tls, spki_pin, Looks, PeerCertificate};

    fn server(pki: &Pki, client_ca: bool) -> ServerTls {
        let leaf = pki.server("srv", &["responder.test"]);
        let ca = client_ca.then_some(pki.ca_path.as_path());
        ServerTls::load(&leaf.server_cfg(ca), &[b"h2"]).unwrap()
    }

    fn failure<S>(r: &Result<S, HandshakeError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.failure.label(),
        }
    }

    #[monoio::test]
    async fn mtls_with_matching_pin_succeeds() {
        let pki = Pki::new("tunnel CA");
        let srv = pki.server("srv", &["responder.test"]);
        let server = ServerTls::load(&srv.server_cfg(Some(&pki.ca_path)), &[b"h2"]).unwrap();
        let edge = pki.client("edge", "spiffe://acme/node/edge-42", "edge-42.acme.test");
        let unrelated = base64_of([9u8; 32]);
        let pins = vec![unrelated, spki_pin(&srv.der).unwrap()];
        let client = ClientTls::load(
            &pki.client_cfg(Some(&edge), pins),
            "responder.test",
            &[b"h2"],
        )
        .unwrap();
        assert!(client.pinned());

        let (s, c) = handshake(&server, &client).await;
        let (mut s, mut c) = (s.unwrap(), c.unwrap());
        assert_eq!(c.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let peer = PeerCertificate::from_stream(&s).unwrap().unwrap();
        assert_eq!(
            peer.uri_sans,
            vec!["spiffe://acme/node/edge-42".to_string()]
        );

        c.write_all(b"ping").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        s.write_all(b"pong").await.unwrap();
        s.flush().await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[monoio::test]
    async fn plain_server_without_client_cert_succeeds() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        c.unwrap();
        // No client certificate was requested, so there are no peer facts.
        assert!(PeerCertificate::from_stream(&s.unwrap()).unwrap().is_none());
    }

    #[monoio::test]
    async fn tls12_client_is_accepted() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let only12 = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (s, c) = futures_util::future::join(
            accept(&server, a),
            TlsConnector::from(Arc::new(only12)).connect(client.server_name().clone(), b),
        )
        .await;
        s.unwrap();
        let c = c.unwrap();
        assert_eq!(
            c.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
    }

    #[monoio::test]
    async fn wrong_pin_is_spki_pin_mismatch() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let pins = vec![base64_of([1u8; 32])];
        let client = ClientTls::load(&pki.client_cfg(None, pins), "responder.test", &[]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        assert_eq!(failure(&c), "spki_pin_mismatch");
        let text = c.err().unwrap().to_string();
        assert!(text.contains("spki_pins"), "{text}");
        // The server only hears a generic `bad_certificate` alert.
        assert_eq!(failure(&s), "bad_certificate");
    }

    #[monoio::test]
    async fn foreign_server_ca_is_unknown_ca() {
        let pki = Pki::new("tunnel CA");
        let foreign = Pki::new("foreign CA");
        let server = server(&foreign, false);
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        assert_eq!(failure(&c), "unknown_ca");
        // The client's alert tells the server why.
        assert_eq!(failure(&s), "unknown_ca");
    }

    #[monoio::test]
    async fn pin_does_not_override_the_ca() {
        // Pinning the foreign server's key does not make its unknown CA acceptable.
        let pki = Pki::new("tunnel CA");
        let foreign = Pki::new("foreign CA");
        let srv = foreign.server("srv", &["responder.test"]);
        let server = ServerTls::load(&srv.server_cfg(None), &[]).unwrap();
        let pins = vec![spki_pin(&srv.der).unwrap()];
        let client = ClientTls::load(&pki.client_cfg(None, pins), "responder.test", &[]).unwrap();
        let (_, c) = handshake(&server, &client).await;
        assert_eq!(failure(&c), "unknown_ca");
    }

    #[monoio::test]
    async fn missing_client_cert_is_no_client_cert() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, true);
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        assert_eq!(failure(&s), "no_client_cert");
        // TLS 1.3: the client learns it on its first read.
        let mut c = c.unwrap();
        let mut buf = [0u8; 1];
        let err = c.read(&mut buf).await.unwrap_err();
        assert_eq!(classify(&err), TlsFailure::NoClientCert);
    }

    #[monoio::test]
    async fn foreign_client_cert_is_unknown_ca() {
        let pki = Pki::new("tunnel CA");
        let foreign = Pki::new("foreign CA");
        let server = server(&pki, true);
        let edge = foreign.client("edge", "spiffe://acme/node/edge-42", "edge-42.acme.test");
        let mut cfg = pki.client_cfg(None, vec![]);
        cfg.cert = Some(edge.cert.clone());
        cfg.key = Some(edge.key.clone());
        let client = ClientTls::load(&cfg, "responder.test", &[]).unwrap();
        let (s, _) = handshake(&server, &client).await;
        assert_eq!(failure(&s), "unknown_ca");
    }

    #[monoio::test]
    async fn wrong_name_is_name_mismatch() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let mut cfg = pki.client_cfg(None, vec![]);
        cfg.sni = Some("other.test".into());
        let client = ClientTls::load(&cfg, "responder.test", &[]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        assert_eq!(failure(&c), "name_mismatch");
        assert_eq!(failure(&s), "bad_certificate");
    }

    #[monoio::test]
    async fn expired_server_cert_is_expired() {
        let pki = Pki::new("tunnel CA");
        let srv = pki.expired_server("old", &["responder.test"]);
        let server = ServerTls::load(&srv.server_cfg(None), &[]).unwrap();
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        assert_eq!(failure(&c), "expired");
        assert_eq!(failure(&s), "expired");
    }

    #[monoio::test]
    async fn no_common_alpn_is_incompatible() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let client =
            ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[b"x/1"]).unwrap();
        let (s, c) = handshake(&server, &client).await;
        assert_eq!(failure(&s), "incompatible");
        assert_eq!(failure(&c), "incompatible");
    }

    #[monoio::test]
    async fn plaintext_client_on_tls_port() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        a.write_all(b"GET /reverse_connections/request HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let err = accept(&server, b).await.err().unwrap();
        assert_eq!(err.failure, TlsFailure::PlaintextPeer);
        assert!(err.to_string().contains("plaintext"), "{err}");
    }

    #[monoio::test]
    async fn tls_client_on_plaintext_port() {
        let pki = Pki::new("tunnel CA");
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        // A plaintext HTTP server answers the ClientHello with a 400 and closes.
        b.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let err = connect(&client, a).await.err().unwrap();
        assert_eq!(err.failure, TlsFailure::PlaintextPeer);
        drop(b);
    }

    #[monoio::test]
    async fn peer_closing_mid_handshake_is_closed() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let (a, b) = tokio::io::duplex(64 * 1024);
        drop(a);
        let err = accept(&server, b).await.err().unwrap();
        assert_eq!(err.failure, TlsFailure::Closed);
    }

    #[monoio::test]
    async fn peek_then_accept_replays_the_client_hello() {
        let pki = Pki::new("tunnel CA");
        let server = server(&pki, false);
        let client = ClientTls::load(&pki.client_cfg(None, vec![]), "responder.test", &[]).unwrap();
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let server_side = async {
            let peek = peek_is_tls(&mut b).await.unwrap();
            assert_eq!(peek.looks, Looks::Tls);
            let mut s = accept(&server, peek.replay(b)).await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            Bytes::copy_from_slice(&buf)
        };
        let client_side = async {
            let mut c = connect(&client, a).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            c.flush().await.unwrap();
            c
        };
        let (got, _c) = futures_util::future::join(server_side, client_side).await;
        assert_eq!(&got[..], b"hello");
    }

    fn base64_of(bytes: [u8; 32]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}
