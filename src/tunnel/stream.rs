//! The byte stream a tunnel runs on: plaintext TCP or TLS over TCP, as one type, so the
//! handshake codec, the RPING filter and HTTP/2 are written once for both (DESIGN §8: TLS and
//! plaintext share one I/O layer). The initiator's connections to local services are the same
//! two kinds and use the same type (`Plain`, `Dialed`; `initiator::pool`).
//!
//! TLS streams are boxed: a rustls session is a few kilobytes, and a tunnel's stream is moved
//! into its h2 connection once, while the plaintext variant stays small.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::io::Rewind;
use crate::net::completion::CompletionStream;
use crate::tls::{ClientStream, PeerCertificate, ServerStream};

/// A tunnel's connection below HTTP/2.
pub enum TunnelStream {
    /// Plaintext TCP.
    Plain(CompletionStream),
    /// The responder's end of a TLS tunnel (the bytes peeked to detect TLS are replayed).
    Accepted(Box<ServerStream<Rewind<CompletionStream>>>),
    /// The initiator's end of a TLS tunnel.
    Dialed(Box<ClientStream<CompletionStream>>),
}

impl TunnelStream {
    /// Whether the tunnel is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, TunnelStream::Plain(_))
    }

    /// The verified certificate the initiator presented (responder side, mutual TLS only).
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        match self {
            TunnelStream::Accepted(tls) => PeerCertificate::from_stream(tls).ok().flatten(),
            _ => None,
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            TunnelStream::Plain($s) => $e,
            TunnelStream::Accepted($s) => $e,
            TunnelStream::Dialed($s) => $e,
        }
    };
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TunnelStream::Plain(s) => s.is_write_vectored(),
            TunnelStream::Accepted(s) => s.is_write_vectored(),
            TunnelStream::Dialed(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
