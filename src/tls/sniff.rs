//! Telling a TLS client from a plaintext one by its first bytes, so that a TLS listener can log
//! "plaintext peer on a TLS port" instead of a rustls decoding error.
//!
//! A TLS connection starts with a handshake record: content type `0x16`, then the record
//! version `0x03 0x00..=0x04`. An HTTP/1 request (`GET `, `POST`…) or the h2c preface (`PRI `)
//! starts with printable ASCII. [`peek_is_tls`] reads just enough to decide and hands the bytes
//! back for replay through [`Rewind`], so the handshake (or a plaintext reply) proceeds as if
//! nothing had been read.

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::http::io::Rewind;

/// What the first bytes of a connection look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looks {
    /// A TLS handshake record (a ClientHello).
    Tls,
    /// Printable ASCII: HTTP/1, the h2c preface, or another text protocol.
    Plaintext,
    /// Neither (binary garbage, an SSLv2 hello, an unknown record).
    Unknown,
    /// The peer closed before sending enough to decide.
    Closed,
}

/// Decides from the bytes read so far; `None` if more bytes are needed. Never needs more than
/// three bytes; `Closed` is never returned here.
pub fn looks_like(head: &[u8]) -> Option<Looks> {
    match *head {
        [] => None,
        [0x16] | [0x16, 0x03] => None,
        [0x16, 0x03, minor, ..] if minor <= 0x04 => Some(Looks::Tls),
        [0x16, ..] => Some(Looks::Unknown),
        [first, ..] if first.is_ascii_graphic() => Some(Looks::Plaintext),
        _ => Some(Looks::Unknown),
    }
}

/// The verdict on a connection's first bytes, with those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// What they look like.
    pub looks: Looks,
    /// Everything read from the stream so far (replay it with [`replay`](Self::replay)).
    pub head: Bytes,
}

impl Peek {
    /// The stream with the peeked bytes put back in front.
    pub fn replay<T>(self, stream: T) -> Rewind<T> {
        Rewind::new(self.head, stream)
    }
}

/// Reads from `stream` until its first bytes say TLS or not (at most a few reads; a client
/// sends its ClientHello or request at once). The caller bounds the wait with its handshake
/// timeout.
pub async fn peek_is_tls<T: AsyncRead + Unpin>(stream: &mut T) -> io::Result<Peek> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            let looks = looks_like(&head).unwrap_or(Looks::Closed);
            return Ok(Peek {
                looks,
                head: head.into(),
            });
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(looks) = looks_like(&head) {
            return Ok(Peek {
                looks,
                head: head.into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn first_bytes_are_classified() {
        assert_eq!(looks_like(b""), None);
        assert_eq!(looks_like(&[0x16]), None);
        assert_eq!(looks_like(&[0x16, 0x03]), None);
        assert_eq!(
            looks_like(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Some(Looks::Tls)
        );
        assert_eq!(looks_like(&[0x16, 0x03, 0x03]), Some(Looks::Tls));
        assert_eq!(looks_like(&[0x16, 0x03, 0x09]), Some(Looks::Unknown));
        assert_eq!(looks_like(&[0x16, 0x02]), Some(Looks::Unknown));
        for text in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST",
            b"PRI * HTTP/2.0",
            b"RPING",
            b"{",
        ] {
            assert_eq!(looks_like(text), Some(Looks::Plaintext), "{text:?}");
        }
        assert_eq!(looks_like(&[0x80, 0x2e, 0x01]), Some(Looks::Unknown));
        assert_eq!(looks_like(b"\r\n"), Some(Looks::Unknown));
        assert_eq!(looks_like(&[0x00]), Some(Looks::Unknown));
    }

    #[monoio::test]
    async fn plaintext_is_detected_and_replayed() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let peek = peek_is_tls(&mut b).await.unwrap();
        assert_eq!(peek.looks, Looks::Plaintext);
        let mut replayed = peek.replay(b);
        let mut buf = [0u8; 18];
        replayed.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[monoio::test(timer_enabled = true)]
    async fn tls_record_split_across_reads() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let peeker = async { peek_is_tls(&mut b).await.unwrap() };
        let writer = async {
            a.write_all(&[0x16]).await.unwrap();
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            a.write_all(&[0x03, 0x01, 0x00, 0x10]).await.unwrap();
        };
        let (peek, ()) = futures_util::future::join(peeker, writer).await;
        assert_eq!(peek.looks, Looks::Tls);
        assert_eq!(&peek.head[..], &[0x16, 0x03, 0x01, 0x00, 0x10]);
    }

    #[monoio::test]
    async fn early_close_is_closed() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0x16]).await.unwrap();
        drop(a);
        let peek = peek_is_tls(&mut b).await.unwrap();
        assert_eq!(peek.looks, Looks::Closed);
        assert_eq!(&peek.head[..], &[0x16]);

        let (a, mut b) = tokio::io::duplex(1024);
        drop(a);
        let peek = peek_is_tls(&mut b).await.unwrap();
        assert_eq!(peek.looks, Looks::Closed);
        assert!(peek.head.is_empty());
    }
}
