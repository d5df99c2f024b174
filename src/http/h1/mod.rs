//! HTTP/1.1 for the local hop: the initiator's client to local services (initiator → local
//! service), in place of hyper's http1 client.
//!
//! - `head`: the sans-I/O codec of message heads: request heads written, response heads parsed
//!   (httparse underneath) with the body framing decided per RFC 9112 §6.3, strictly: anything
//!   a request-smuggling or response-splitting attempt relies on is refused, not repaired.
//! - `chunked`: the chunked transfer coding (RFC 9112 §7.1): an incremental decoder of
//!   response bodies and the encoder pieces of request bodies.
//! - `client`: the connection on top of both (I/O, body streaming, keep-alive).
//!
//! DESIGN §8 allows httparse only "with framing that is tested against request-smuggling
//! cases": those tests live next to the code in `head` and `chunked`, and fuzz targets
//! (`fuzz/fuzz_targets/h1_*.rs`) run both parsers on arbitrary input.

pub mod chunked;
pub mod client;
pub mod head;

/// Helpers shared by the property tests of `head` and `chunked`.
#[cfg(test)]
pub(crate) mod testing {
    /// xorshift64*: deterministic pseudo-random numbers for the property tests.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        pub(crate) fn pick<'a>(&mut self, from: &[&'a [u8]]) -> &'a [u8] {
            from[self.below(from.len())]
        }
        /// `base` with a few random edits: byte changes, insertions of pieces or bytes,
        /// deletions, duplications.
        pub(crate) fn mutate(&mut self, base: &[u8], pieces: &[&[u8]]) -> Vec<u8> {
            let mut out = base.to_vec();
            for _ in 0..1 + self.below(4) {
                let at = self.below(out.len() + 1);
                match self.below(5) {
                    0 if at < out.len() => out[at] = self.next() as u8,
                    1 => {
                        let piece = self.pick(pieces);
                        out.splice(at..at, piece.iter().copied());
                    }
                    2 if at < out.len() => {
                        let end = (at + 1 + self.below(8)).min(out.len());
                        out.drain(at..end);
                    }
                    3 if at < out.len() => {
                        let end = (at + 1 + self.below(16)).min(out.len());
                        let copy = out[at..end].to_vec();
                        out.splice(at..at, copy);
                    }
                    _ => out.insert(at, self.next() as u8),
                }
            }
            out
        }
    }
}
