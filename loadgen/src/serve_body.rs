//! Response bodies of `loadgen serve`: a fixed shared body, `N` bytes streamed in
//! 64 KiB chunks without allocating per chunk, and the request body streamed back.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Size of the chunks `/bytes/N` streams.
pub const CHUNK: usize = 64 * 1024;

pub enum ServeBody {
    /// A whole body sent in one frame (a cheap clone of a shared buffer).
    Fixed(Option<Bytes>),
    /// `remaining` bytes sliced out of the shared `chunk`.
    Stream { chunk: Bytes, remaining: u64 },
    /// The request body, echoed frame by frame.
    Echo(Incoming),
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ServeBody::Fixed(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ServeBody::Stream { chunk, remaining } => {
                if *remaining == 0 || chunk.is_empty() {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(chunk.len() as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk.slice(..n)))))
            }
            ServeBody::Echo(inner) => loop {
                match Pin::new(&mut *inner).poll_frame(cx) {
                    // Trailers are not echoed; only data frames.
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Err(_) => continue,
                    },
                    other => return other,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServeBody::Fixed(d) => d.is_none(),
            ServeBody::Stream { remaining, .. } => *remaining == 0,
            ServeBody::Echo(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServeBody::Fixed(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            ServeBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
            ServeBody::Echo(inner) => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn collect(body: ServeBody) -> Vec<Bytes> {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut body = body;
            let mut frames = Vec::new();
            while let Some(f) = body.frame().await {
                if let Ok(d) = f.expect("no error").into_data() {
                    frames.push(d);
                }
            }
            frames
        })
    }

    #[test]
    fn stream_slices_chunks() {
        let chunk = Bytes::from(vec![7u8; CHUNK]);
        let body = ServeBody::Stream {
            chunk,
            remaining: (CHUNK * 2 + 10) as u64,
        };
        assert_eq!(body.size_hint().exact(), Some((CHUNK * 2 + 10) as u64));
        let frames = collect(body);
        let sizes: Vec<usize> = frames.iter().map(|f| f.len()).collect();
        assert_eq!(sizes, vec![CHUNK, CHUNK, 10]);
    }

    #[test]
    fn fixed_is_one_frame() {
        let body = ServeBody::Fixed(Some(Bytes::from_static(b"hello")));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(collect(body), vec![Bytes::from_static(b"hello")]);
        assert!(ServeBody::Fixed(None).is_end_stream());
    }
}
