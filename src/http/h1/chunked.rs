//! The chunked transfer coding (RFC 9112 §7.1) on the local hop: an incremental decoder for
//! response bodies, and the pieces the connection writes for request bodies.
//!
//! The decoder owns the other half of body framing (`head` decides *that* a body is chunked):
//! where each chunk and the whole body end. It is a byte-at-a-time state machine for the line
//! parts (size lines, the CRLF after each chunk's data, the trailer section) and hands chunk
//! data out without copying, so that:
//! - its result never depends on how the input was split into reads (tested by feeding every
//!   example in every split);
//! - it never consumes a byte past the message's final CRLF: whatever follows (the next
//!   response on the connection, or garbage a server appended) stays in the caller's buffer;
//! - every line end is exactly CRLF, sizes are plain hex with no whitespace, prefix or sign,
//!   chunk extensions are checked against their grammar (a quoted string cannot hide a line
//!   end), and lines and the trailer section are bounded, so a reader that is more lenient
//!   (or more strict) anywhere along the path cannot end the body elsewhere than we do.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::head::{trim_ows, write_field};

/// Longest chunk-size line (size, extensions, CRLF) and longest trailer section accepted.
pub const MAX_LINE: usize = 4 * 1024;
/// Longest trailer section (field lines and the final empty line, CRLFs included) accepted.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Most significant hex digits in a chunk size: 16 fill a `u64`.
const MAX_SIZE_DIGITS: u32 = 16;

/// What [`ChunkedDecoder::decode`] produced.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes (never empty), split off the front of the input without copying.
    Data(Bytes),
    /// The last chunk and its trailer section (empty map if none). The body ended; nothing after
    /// it was consumed.
    End(HeaderMap),
}

/// Why a chunked body was refused. [`ChunkError::label`] is for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk size is not hex digits followed by `;` or CRLF")]
    BadChunkSize,
    #[error("chunk size over 16 significant hex digits")]
    ChunkSizeOverflow,
    #[error("bad line end in chunked body (bare LF, CR without LF, or no CRLF after chunk data)")]
    BadChunkLine,
    #[error("chunk extension does not follow the grammar of RFC 9112 §7.1.1")]
    BadChunkExtension,
    #[error("chunk-size line over {MAX_LINE} bytes")]
    ChunkLineTooLong,
    #[error("trailer section over {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
    #[error("malformed trailer field line")]
    BadTrailer,
}

impl ChunkError {
    /// A short snake_case reason, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ChunkError::BadChunkSize => "bad_chunk_size",
            ChunkError::ChunkSizeOverflow => "chunk_size_overflow",
            ChunkError::BadChunkLine => "bad_chunk_line",
            ChunkError::BadChunkExtension => "bad_chunk_extension",
            ChunkError::ChunkLineTooLong => "chunk_line_too_long",
            ChunkError::TrailersTooLarge => "trailers_too_large",
            ChunkError::BadTrailer => "bad_trailer",
        }
    }
}

/// Where the decoder is in the body. The `Ext*` states follow
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line: a hex digit must come.
    #[default]
    SizeStart,
    /// Within the size's hex digits.
    Size,
    /// After a `;`: whitespace, then an extension name.
    ExtStart,
    ExtName,
    /// Whitespace after a name: `=`, `;` or the line end may follow.
    ExtAfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    /// After a `\` in a quoted string.
    ExtQuotedPair,
    /// After a value: whitespace, `;` or the line end.
    ExtAfterValue,
    /// The CR of the size line was read: LF must follow.
    SizeLf,
    /// Within a chunk's data (`size` bytes to go).
    Data,
    /// After a chunk's data: CR, then LF.
    DataCr,
    DataLf,
    /// Within a trailer field line, or at the start of one (or of the final empty line).
    Trailer,
    /// The CR of a trailer line was read: LF must follow.
    TrailerLf,
    /// The body ended.
    Done,
    /// The body was refused; the decoder keeps refusing.
    Failed(ChunkError),
}

/// What one line byte did.
enum Step {
    /// Keep reading line bytes.
    More,
    /// A size line ended with a non-zero size: chunk data follows.
    Data,
    /// The final empty line ended the body.
    End,
}

/// An incremental decoder of one chunked body (RFC 9112 §7.1).
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current chunk-size line so far, CRLF included.
    line_len: usize,
    /// The chunk size being read, then the bytes of its data still to come.
    size: u64,
    /// Significant hex digits of `size` read so far.
    digits: u32,
    /// Bytes of the trailer section so far, CRLFs included.
    trailers_len: usize,
    /// The trailer section, allocated at its first field line: most bodies have none, and the
    /// decoder stays small (it lives in every response body of the connection).
    trailers: Option<Box<Trailers>>,
}

/// A trailer section being read.
#[derive(Debug, Default)]
struct Trailers {
    /// The field line being read (no CR, no LF).
    line: Vec<u8>,
    /// The fields read so far.
    map: HeaderMap,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the body ended (a [`Decoded::End`] was returned).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what `src` holds from its front, consuming what it decodes. `Ok(None)`: more
    /// input is needed (everything usable was consumed). Data is returned as it arrives: a
    /// chunk split over several reads comes out as several Data pieces; `max` bounds one Data
    /// piece's length (pass `usize::MAX` for no bound; 0 counts as 1).
    ///
    /// After `End`, further calls return `End` with no trailers and consume nothing; after an
    /// error, they return the same error.
    pub fn decode(
        &mut self,
        src: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Decoded>, ChunkError> {
        loop {
            match &self.state {
                State::Done => return Ok(Some(Decoded::End(HeaderMap::new()))),
                State::Failed(e) => return Err(e.clone()),
                State::Data => {
                    if src.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(src.len())
                        .min(max.max(1));
                    // n <= src.len() and n <= size: neither can fail nor underflow.
                    self.size = self.size.saturating_sub(n as u64);
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Some(Decoded::Data(src.split_to(n).freeze())));
                }
                _ => {}
            }
            let mut used = 0;
            let mut step = Step::More;
            for &b in src.iter() {
                used += 1;
                match self.line_byte(b) {
                    Ok(Step::More) => {}
                    Ok(s) => {
                        step = s;
                        break;
                    }
                    Err(e) => {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                }
            }
            src.advance(used);
            match step {
                Step::More => return Ok(None),
                Step::Data => {}
                Step::End => {
                    let map = self.trailers.take().map(|t| t.map).unwrap_or_default();
                    return Ok(Some(Decoded::End(map)));
                }
            }
        }
    }

    /// Reads one byte of a line: a size line, the CRLF after data, or the trailer section.
    fn line_byte(&mut self, b: u8) -> Result<Step, ChunkError> {
        use State::*;
        if matches!(self.state, Trailer | TrailerLf) {
            return self.trailer_byte(b);
        }
        if matches!(self.state, DataCr | DataLf) {
            // Exactly CRLF after the data: anything else means the data ran longer than its
            // announced size, or a line end we would read differently from someone else.
            return match (&self.state, b) {
                (DataCr, b'\r') => {
                    self.state = DataLf;
                    Ok(Step::More)
                }
                (DataLf, b'\n') => {
                    self.state = SizeStart;
                    self.line_len = 0;
                    self.size = 0;
                    self.digits = 0;
                    Ok(Step::More)
                }
                _ => Err(ChunkError::BadChunkLine),
            };
        }

        // A size line. Too long is reported as soon as the limit is passed.
        self.line_len += 1;
        if self.line_len > MAX_LINE {
            return Err(ChunkError::ChunkLineTooLong);
        }
        let ows = b == b' ' || b == b'\t';
        let next = match (&self.state, b) {
            // A bare LF ends no line (RFC 9112 §2.2 allows accepting it; we do not).
            (SizeLf, b'\n') => return Ok(self.size_line_done()),
            (SizeLf, _) | (_, b'\n') => return Err(ChunkError::BadChunkLine),
            (SizeStart | Size, _) if b.is_ascii_hexdigit() => {
                self.size_digit(b)?;
                Size
            }
            // No digit yet (empty size, `0x`, `-`, whitespace): not a size.
            (SizeStart, _) => return Err(ChunkError::BadChunkSize),
            (Size, b';') => ExtStart,
            (Size, b'\r') => SizeLf,
            // Whitespace before `;` or CRLF is refused too (RFC 9112 allows BWS before `;`,
            // but `5 \r\n` is where parsers have disagreed).
            (Size, _) => return Err(ChunkError::BadChunkSize),
            // A line may end only where an extension is complete.
            (ExtName | ExtAfterName | ExtToken | ExtAfterValue, b'\r') => SizeLf,
            (ExtStart | ExtAfterName | ExtValueStart | ExtAfterValue, _) if ows => {
                self.state.clone()
            }
            (ExtStart | ExtName, _) if is_tchar(b) => ExtName,
            (ExtName | ExtToken, _) if ows => {
                if self.state == ExtName {
                    ExtAfterName
                } else {
                    ExtAfterValue
                }
            }
            (ExtName | ExtAfterName | ExtToken | ExtAfterValue, b';') => ExtStart,
            (ExtName | ExtAfterName, b'=') => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtToken, _) if is_tchar(b) => ExtToken,
            // A line end inside a quoted string: the quote would hide it from a reader that
            // skips quoted strings.
            (ExtQuoted | ExtQuotedPair, b'\r') => return Err(ChunkError::BadChunkLine),
            (ExtQuoted, b'"') => ExtAfterValue,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            (ExtQuoted | ExtQuotedPair, _) if is_text(b) => ExtQuoted,
            _ => return Err(ChunkError::BadChunkExtension),
        };
        self.state = next;
        Ok(Step::More)
    }

    /// Adds one hex digit to the size; leading zeros do not count towards the 16 digits.
    fn size_digit(&mut self, b: u8) -> Result<(), ChunkError> {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ChunkError::BadChunkSize),
        };
        if self.digits > 0 || d != 0 {
            self.digits += 1;
            if self.digits > MAX_SIZE_DIGITS {
                return Err(ChunkError::ChunkSizeOverflow);
            }
        }
        // At most 16 significant digits: this neither overflows nor loses bits.
        self.size = (self.size << 4) | u64::from(d);
        Ok(())
    }

    /// A size line ended: data follows, or (size 0) the trailer section.
    fn size_line_done(&mut self) -> Step {
        if self.size == 0 {
            self.state = State::Trailer;
            self.trailers_len = 0;
            self.trailers = None;
            Step::More
        } else {
            self.state = State::Data;
            Step::Data
        }
    }

    /// Reads one byte of the trailer section: field lines up to an empty line.
    fn trailer_byte(&mut self, b: u8) -> Result<Step, ChunkError> {
        self.trailers_len += 1;
        if self.trailers_len > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        match (&self.state, b) {
            (State::Trailer, b'\r') => self.state = State::TrailerLf,
            (State::Trailer, b'\n') => return Err(ChunkError::BadChunkLine),
            (State::Trailer, _) => self.trailers.get_or_insert_default().line.push(b),
            (State::TrailerLf, b'\n') => {
                let Some(t) = self.trailers.as_mut().filter(|t| !t.line.is_empty()) else {
                    self.state = State::Done;
                    return Ok(Step::End);
                };
                let (name, value) = parse_trailer(&t.line)?;
                t.map.append(name, value);
                t.line.clear();
                self.state = State::Trailer;
            }
            _ => return Err(ChunkError::BadChunkLine),
        }
        Ok(Step::More)
    }
}

/// One trailer field line (without its CRLF): `token ":" OWS value OWS`, the value of visible
/// characters, SP, HTAB and obs-text. A line starting with whitespace is obs-fold: refused.
fn parse_trailer(line: &[u8]) -> Result<(HeaderName, HeaderValue), ChunkError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ChunkError::BadTrailer)?;
    let (name, rest) = line.split_at(colon);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(ChunkError::BadTrailer);
    }
    let value = trim_ows(rest.get(1..).unwrap_or_default());
    if !value.iter().all(|&b| is_text(b)) {
        return Err(ChunkError::BadTrailer);
    }
    let name = HeaderName::from_bytes(name).map_err(|_| ChunkError::BadTrailer)?;
    let value = HeaderValue::from_bytes(value).map_err(|_| ChunkError::BadTrailer)?;
    Ok((name, value))
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// HTAB, SP, VCHAR or obs-text: what a field value or a quoted string may hold (the quoted
/// string's `"` and `\` are handled before this).
fn is_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// A line end.
pub const CRLF: &[u8] = b"\r\n";
/// The last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes the size line of a chunk of `len` bytes (`{len:x}\r\n`); the caller writes the data
/// and then `CRLF`. `len` must not be 0: a chunk of size 0 is the last chunk, and would end
/// the body.
pub fn encode_chunk_size(len: usize, dst: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len as u64;
    let mut start = digits.len();
    // A u64 has at most 16 hex digits: `start` stays within the array.
    for slot in digits.iter_mut().rev() {
        *slot = HEX[(n & 0xf) as usize];
        start -= 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(digits.get(start..).unwrap_or_default());
    dst.extend_from_slice(CRLF);
}

/// Whether a field may not be sent in a trailer section: framing (`content-length`,
/// `transfer-encoding`, `trailer`), routing (`host`) and hop-by-hop fields (RFC 9110 §6.5.1,
/// §7.6.1).
pub fn forbidden_in_trailers(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRAILER
        || name == header::HOST
        || crate::http::proxy_headers::is_hop_by_hop(name)
}

/// Writes the last chunk followed by `trailers` as a trailer section, without the fields
/// [`forbidden_in_trailers`] names (and without a value holding CR, LF or NUL), then the final
/// CRLF.
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, dst: &mut Vec<u8>) {
    dst.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        if !forbidden_in_trailers(name) {
            write_field(name, value, dst);
        }
    }
    dst.extend_from_slice(CRLF);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::h1::testing::Rng;

    /// How a run over some input ended.
    #[derive(Debug, Clone, PartialEq)]
    enum Outcome {
        /// More input was needed.
        More,
        End(HeaderMap),
        Err(&'static str),
    }

    /// A whole run: the data bytes, how it ended, and what was left unconsumed.
    #[derive(Debug, Clone, PartialEq)]
    struct Run {
        data: Vec<u8>,
        outcome: Outcome,
        left: Vec<u8>,
    }

    /// Feeds `pieces` one after the other (as reads would deliver them), decoding after each
    /// until more is needed; `max` bounds the Data pieces. Checks on the way that no Data is
    /// empty, over `max`, or more than what its call consumed.
    fn run_pieces(pieces: &[&[u8]], max: usize) -> Run {
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::new();
        let mut data = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            src.extend_from_slice(piece);
            loop {
                let before = src.len();
                let result = decoder.decode(&mut src, max);
                let consumed = before - src.len();
                match result {
                    Ok(Some(Decoded::Data(d))) => {
                        assert!(!d.is_empty() && d.len() <= max.max(1));
                        assert!(d.len() <= consumed, "{} > {consumed}", d.len());
                        data.extend_from_slice(&d);
                    }
                    Ok(None) => {
                        // Everything usable was consumed.
                        assert!(src.is_empty());
                        break;
                    }
                    end => {
                        let outcome = match end {
                            Ok(Some(Decoded::End(trailers))) => {
                                assert!(decoder.is_done());
                                Outcome::End(trailers)
                            }
                            Err(e) => {
                                // A refused body stays refused.
                                assert_eq!(decoder.decode(&mut src, max), Err(e.clone()));
                                Outcome::Err(e.label())
                            }
                            _ => unreachable!(),
                        };
                        let mut left = src.to_vec();
                        for rest in &pieces[i + 1..] {
                            left.extend_from_slice(rest);
                        }
                        return Run {
                            data,
                            outcome,
                            left,
                        };
                    }
                }
            }
        }
        Run {
            data,
            outcome: Outcome::More,
            left: src.to_vec(),
        }
    }

    /// Runs `input` in one piece, byte by byte and in every split in two (with and without a
    /// bound on Data pieces), checks they agree, and returns the one-shot run. Errors are
    /// compared without what was left (an error leaves the buffer unspecified).
    fn run(input: &[u8]) -> Run {
        let one = run_pieces(&[input], usize::MAX);
        let same = |other: Run, how: &str| {
            let mut a = one.clone();
            let mut b = other;
            if matches!(a.outcome, Outcome::Err(_)) {
                a.left.clear();
                b.left.clear();
            }
            assert_eq!(a, b, "{how}: {:?}", String::from_utf8_lossy(input));
        };
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        same(run_pieces(&bytes, usize::MAX), "byte by byte");
        same(run_pieces(&[input], 1), "one-byte data");
        // Every split of short inputs; of the long ones (the limit tests), the splits near
        // either end and a sample between, to keep the tests quick.
        let splits: Vec<usize> = if input.len() <= 512 {
            (0..=input.len()).collect()
        } else {
            (0..=input.len())
                .filter(|&at| at < 64 || input.len() - at < 64 || at % 251 == 0)
                .collect()
        };
        for at in splits {
            let (a, b) = input.split_at(at);
            same(run_pieces(&[a, b], usize::MAX), &format!("split at {at}"));
            same(run_pieces(&[a, b], 3), &format!("split at {at}, max 3"));
        }
        one
    }

    fn trailers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ends(input: &[u8], data: &[u8], fields: &[(&str, &str)], left: &[u8]) {
        let run = run(input);
        let want = Run {
            data: data.to_vec(),
            outcome: Outcome::End(trailers(fields)),
            left: left.to_vec(),
        };
        assert_eq!(run, want, "{:?}", String::from_utf8_lossy(input));
    }

    fn refused(input: &[u8], label: &str) {
        let run = run(input);
        assert_eq!(
            run.outcome,
            Outcome::Err(ChunkError::label(&label_error(label))),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    fn label_error(label: &str) -> ChunkError {
        ALL_ERRORS
            .iter()
            .find(|e| e.label() == label)
            .cloned()
            .unwrap_or_else(|| panic!("no error labelled {label}"))
    }

    const ALL_ERRORS: [ChunkError; 7] = [
        ChunkError::BadChunkSize,
        ChunkError::ChunkSizeOverflow,
        ChunkError::BadChunkLine,
        ChunkError::BadChunkExtension,
        ChunkError::ChunkLineTooLong,
        ChunkError::TrailersTooLarge,
        ChunkError::BadTrailer,
    ];

    #[test]
    fn decodes_chunks() {
        ends(b"0\r\n\r\n", b"", &[], b"");
        ends(b"5\r\nhello\r\n0\r\n\r\n", b"hello", &[], b"");
        ends(
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world",
            &[],
            b"",
        );
        ends(b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", &[], b"");
        ends(b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", &[], b"");
        ends(
            b"1E\r\n0123456789abcdef0123456789abcd\r\n0\r\n\r\n",
            b"0123456789abcdef0123456789abcd",
            &[],
            b"",
        );
        ends(b"0005\r\nhello\r\n000\r\n\r\n", b"hello", &[], b"");
        // Data may hold anything, CRLFs and what looks like chunk lines included.
        ends(
            b"7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n",
            b"\r\n0\r\n\r\n",
            &[],
            b"",
        );
        // Leading zeros do not count towards the 16 digits.
        let size = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(40));
        ends(size.as_bytes(), b"x", &[], b"");
    }

    #[test]
    fn never_consumes_past_the_body() {
        ends(b"1\r\nA\r\n0\r\n\r\nGARBAGE", b"A", &[], b"GARBAGE");
        ends(
            b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"",
            &[],
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        ends(b"0\r\nX: y\r\n\r\n\r\n", b"", &[("x", "y")], b"\r\n");
        ends(b"0\r\n\r\n0\r\n\r\n", b"", &[], b"0\r\n\r\n");
        // After the end, decoding consumes nothing more.
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&b"0\r\n\r\nrest"[..]);
        assert_eq!(
            decoder.decode(&mut src, usize::MAX),
            Ok(Some(Decoded::End(HeaderMap::new())))
        );
        assert_eq!(
            decoder.decode(&mut src, usize::MAX),
            Ok(Some(Decoded::End(HeaderMap::new())))
        );
        assert_eq!(&src[..], b"rest");
    }

    #[test]
    fn incomplete_bodies_need_more() {
        for input in [
            &b""[..],
            b"5",
            b"5\r",
            b"5\r\nhel",
            b"5\r\nhello",
            b"5\r\nhello\r",
            b"5\r\nhello\r\n",
            b"5\r\nhello\r\n0\r\n",
            b"5\r\nhello\r\n0\r\n\r",
            b"0\r\nX: y\r\n",
            b"0\r\nX: y",
            b"5;a=\"b",
            b"ffffffffffffffff\r\n",
        ] {
            let run = run(input);
            assert_eq!(
                run.outcome,
                Outcome::More,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(run.left.is_empty(), "everything usable is consumed");
        }
        assert_eq!(run(b"5\r\nhel").data, b"hel");
    }

    #[test]
    fn data_pieces_follow_reads_and_max() {
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&b"a\r\n01234"[..]);
        assert_eq!(
            decoder.decode(&mut src, 3),
            Ok(Some(Decoded::Data(Bytes::from_static(b"012"))))
        );
        assert_eq!(
            decoder.decode(&mut src, 3),
            Ok(Some(Decoded::Data(Bytes::from_static(b"34"))))
        );
        assert_eq!(decoder.decode(&mut src, 3), Ok(None));
        src.extend_from_slice(b"56789\r\n0\r\n\r\n");
        assert_eq!(
            decoder.decode(&mut src, usize::MAX),
            Ok(Some(Decoded::Data(Bytes::from_static(b"56789"))))
        );
        assert!(!decoder.is_done());
        assert_eq!(
            decoder.decode(&mut src, 0),
            Ok(Some(Decoded::End(HeaderMap::new())))
        );
        assert!(decoder.is_done());
        // max 0 counts as 1.
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&b"2\r\nab"[..]);
        assert_eq!(
            decoder.decode(&mut src, 0),
            Ok(Some(Decoded::Data(Bytes::from_static(b"a"))))
        );
    }

    #[test]
    fn chunk_extensions_are_checked_and_ignored() {
        for ext in [
            ";a",
            ";a=b",
            ";a=b;c",
            ";a=b;c=d",
            "; a = b ; c",
            ";\ta\t=\tb\t",
            ";a=\"\"",
            ";a=\"x;y=z\"",
            ";a=\"with \\\" quote\"",
            ";a=\"\\\\\"",
            ";a=\"\t\u{7e} \"",
            ";name=!#$%&'*+-.^_`|~",
        ] {
            let body = format!("5{ext}\r\nhello\r\n0{ext}\r\n\r\n");
            ends(body.as_bytes(), b"hello", &[], b"");
        }
        // obs-text inside a quoted string.
        ends(b"5;a=\"\xff\"\r\nhello\r\n0\r\n\r\n", b"hello", &[], b"");
        for ext in [
            &b";"[..],
            b";;a",
            b";=b",
            b";a=",
            b";a=;b",
            b";a b",
            b";a=b c",
            b";a=\"x\"y",
            b";a=\"x\" y",
            b";a@b",
            b";a=b@",
            b";a=\"\x01\"",
            b";a=\"\x7f\"",
            b";a=\"\\\x01\"",
            b";a\0",
            b";a=\"x\"\"",
            b";a=\xff",
        ] {
            let mut body = b"5".to_vec();
            body.extend_from_slice(ext);
            body.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
            refused(&body, "bad_chunk_extension");
        }
    }

    #[test]
    fn refuses_bad_sizes() {
        for input in [
            &b"\r\n"[..],
            b"\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\t\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"x5\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-0\r\n\r\n",
            b"g\r\n",
            b"5g\r\n",
            b";a\r\n",
            b"5,5\r\nhello\r\n",
            b"\xef\xbc\x95\r\n",
            b"5\0\r\n",
            // The same after a first chunk.
            b"1\r\nA\r\n 0\r\n\r\n",
            b"1\r\nA\r\n0 \r\n\r\n",
            b"1\r\nA\r\n\r\n",
        ] {
            refused(input, "bad_chunk_size");
        }
    }

    #[test]
    fn refuses_oversized_sizes() {
        refused(b"ffffffffffffffffff\r\n", "chunk_size_overflow");
        refused(b"10000000000000000\r\n", "chunk_size_overflow");
        refused(b"0000010000000000000000\r\n", "chunk_size_overflow");
        // Reported at the 17th digit, without waiting for the line end.
        refused(b"fffffffffffffffff", "chunk_size_overflow");
        // 16 digits fit.
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&b"ffffffffffffffff\r\nabc"[..]);
        assert_eq!(
            decoder.decode(&mut src, usize::MAX),
            Ok(Some(Decoded::Data(Bytes::from_static(b"abc"))))
        );
        assert_eq!(decoder.size, u64::MAX - 3);
    }

    #[test]
    fn refuses_bad_line_ends() {
        for input in [
            // Bare LF as a line end, anywhere.
            &b"0\n\n"[..],
            b"0\n\r\n",
            b"0\r\n\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a=b\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX: y\r\n\n",
            // CR without LF.
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"0\r\n\r\r\n",
            b"0\r\nX: y\rZ\r\n\r\n",
            // Data longer than announced.
            b"5\r\nhelloXX\r\n0\r\n\r\n",
            b"5\r\nhello world\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            // No CRLF after data at all.
            b"1\r\nA0\r\n\r\n",
            // A line end inside a quoted extension value.
            b"5;ext=\"a\r\nb\"\r\nhello\r\n0\r\n\r\n",
            b"5;ext=\"a\nb\"\r\n",
            b"5;ext=\"a\\\r\n",
            b"5;ext=\"a\\\nb\"\r\n",
        ] {
            refused(input, "bad_chunk_line");
        }
        // Data shorter than announced: the body goes on, the next line is still data.
        assert_eq!(
            run(b"5\r\nhel\r\n0\r\n\r\n").outcome,
            Outcome::Err("bad_chunk_line")
        );
    }

    #[test]
    fn line_length_limit() {
        // A size line of exactly MAX_LINE bytes, CRLF included, is fine.
        let ext = format!(";{}", "a".repeat(MAX_LINE - 4));
        let line = format!("5{ext}\r\n");
        assert_eq!(line.len(), MAX_LINE);
        ends(
            format!("{line}hello\r\n0\r\n\r\n").as_bytes(),
            b"hello",
            &[],
            b"",
        );
        let longer = format!("5{ext}a\r\nhello\r\n0\r\n\r\n");
        refused(longer.as_bytes(), "chunk_line_too_long");
        // Reported once MAX_LINE + 1 bytes came without a line end, not later.
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(format!("5;{}", "a".repeat(MAX_LINE - 2)).as_bytes());
        assert_eq!(decoder.decode(&mut src, usize::MAX), Ok(None));
        src.extend_from_slice(b"a");
        assert_eq!(
            decoder.decode(&mut src, usize::MAX),
            Err(ChunkError::ChunkLineTooLong)
        );
        // Leading zeros count towards the line.
        refused(
            format!("{}5\r\n", "0".repeat(MAX_LINE)).as_bytes(),
            "chunk_line_too_long",
        );
        // The last chunk's line too.
        refused(format!("0{ext}a\r\n\r\n").as_bytes(), "chunk_line_too_long");
    }

    #[test]
    fn decodes_trailers() {
        ends(
            b"0\r\nX-Trailer: a\r\n\r\n",
            b"",
            &[("x-trailer", "a")],
            b"",
        );
        ends(
            b"3\r\nabc\r\n0\r\nA: 1\r\nb:2\r\nA:  3 \t\r\nEmpty:\r\nC: x y\r\n\r\n",
            b"abc",
            &[
                ("a", "1"),
                ("a", "3"),
                ("b", "2"),
                ("empty", ""),
                ("c", "x y"),
            ],
            b"",
        );
        // Fields forbidden in trailers are still returned as received: the caller decides.
        ends(
            b"0\r\nContent-Length: 5\r\n\r\n",
            b"",
            &[("content-length", "5")],
            b"",
        );
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::from(&b"0\r\nX: \xff\r\n\r\n"[..]);
        match decoder.decode(&mut src, usize::MAX) {
            Ok(Some(Decoded::End(map))) => assert_eq!(map["x"].as_bytes(), b"\xff"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_bad_trailers() {
        for input in [
            // obs-fold
            &b"0\r\n X: a\r\n\r\n"[..],
            b"0\r\nX: a\r\n continued\r\n\r\n",
            b"0\r\nX: a\r\n\tcontinued\r\n\r\n",
            // whitespace before the colon, bad names
            b"0\r\nX : a\r\n\r\n",
            b"0\r\nX\t: a\r\n\r\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\nX Y: a\r\n\r\n",
            b"0\r\nX\"Y: a\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
            b"0\r\n\xffX: a\r\n\r\n",
            // bad values
            b"0\r\nX: a\0b\r\n\r\n",
            b"0\r\nX: a\x01\r\n\r\n",
            b"0\r\nX: a\x7f\r\n\r\n",
            // a following response's head is not a trailer section
            b"0\r\nHTTP/1.1 200 OK\r\n\r\n",
        ] {
            refused(input, "bad_trailer");
        }
    }

    #[test]
    fn trailer_section_limit() {
        // MAX_TRAILERS bytes, the final CRLF included, is fine.
        let value = "v".repeat(MAX_TRAILERS - "X: \r\n\r\n".len());
        let body = format!("0\r\nX: {value}\r\n\r\n");
        ends(body.as_bytes(), b"", &[("x", &value)], b"");
        let body = format!("0\r\nX: {value}v\r\n\r\n");
        refused(body.as_bytes(), "trailers_too_large");
        // Many small fields add up.
        let many = "A: b\r\n".repeat(MAX_TRAILERS / 6 + 1);
        refused(format!("0\r\n{many}\r\n").as_bytes(), "trailers_too_large");
        // Reported without waiting for a line end.
        refused(
            format!("0\r\nX: {}", "v".repeat(MAX_TRAILERS)).as_bytes(),
            "trailers_too_large",
        );
    }

    #[test]
    fn decoder_stays_small() {
        // It sits in every response body; the trailer section is boxed.
        assert!(std::mem::size_of::<ChunkedDecoder>() <= 48);
    }

    #[test]
    fn labels_are_distinct() {
        let mut labels: Vec<_> = ALL_ERRORS.iter().map(ChunkError::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ALL_ERRORS.len());
    }

    // ---- encoding ----

    #[test]
    fn encodes_chunk_sizes() {
        for (len, want) in [
            (1, "1\r\n"),
            (9, "9\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut dst = b"x".to_vec();
            encode_chunk_size(len, &mut dst);
            assert_eq!(dst, format!("x{want}").as_bytes(), "{len}");
        }
    }

    #[test]
    fn encodes_last_chunk_and_trailers() {
        let mut dst = Vec::new();
        encode_last_chunk(None, &mut dst);
        assert_eq!(dst, LAST_CHUNK);
        let mut dst = Vec::new();
        encode_last_chunk(Some(&HeaderMap::new()), &mut dst);
        assert_eq!(dst, LAST_CHUNK);
        let map = trailers(&[
            ("x-checksum", "abc"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
            ("host", "h"),
            ("connection", "close"),
            ("keep-alive", "x"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("upgrade", "x"),
            ("proxy-connection", "x"),
            ("x-checksum", "def"),
            ("grpc-status", "0"),
        ]);
        let mut dst = Vec::new();
        encode_last_chunk(Some(&map), &mut dst);
        assert_eq!(
            String::from_utf8(dst).unwrap(),
            "0\r\nx-checksum: abc\r\nx-checksum: def\r\ngrpc-status: 0\r\n\r\n"
        );
    }

    #[test]
    fn encoded_bodies_decode_back() {
        let mut rng = Rng::new(0xc4u64 << 32 | 7);
        for _ in 0..300 {
            let mut wire = Vec::new();
            let mut data = Vec::new();
            for _ in 0..rng.below(5) {
                let chunk: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
                encode_chunk_size(chunk.len(), &mut wire);
                wire.extend_from_slice(&chunk);
                wire.extend_from_slice(CRLF);
                data.extend_from_slice(&chunk);
            }
            let map = trailers(&[("x-a", "1"), ("host", "dropped"), ("x-b", "two words")]);
            let with_trailers = rng.below(2) == 0;
            encode_last_chunk(with_trailers.then_some(&map), &mut wire);
            wire.extend_from_slice(b"NEXT");
            let want = if with_trailers {
                trailers(&[("x-a", "1"), ("x-b", "two words")])
            } else {
                HeaderMap::new()
            };
            let got = run_pieces(&[&wire], usize::MAX);
            assert_eq!(
                got,
                Run {
                    data,
                    outcome: Outcome::End(want),
                    left: b"NEXT".to_vec(),
                }
            );
        }
    }

    // ---- fuzz-style ----

    const PIECES: &[&[u8]] = &[
        b"\r\n",
        b"\r",
        b"\n",
        b";",
        b"=",
        b"\"",
        b"\\",
        b" ",
        b"\t",
        b":",
        b"0",
        b"5",
        b"f",
        b"F",
        b"ffffffffffffffff",
        b"0\r\n\r\n",
        b"X-T: v\r\n",
        b"\0",
        b"\xff",
    ];

    const SEEDS: &[&[u8]] = &[
        b"5\r\nhello\r\n0\r\n\r\n",
        b"1\r\nA\r\n0\r\n\r\nGARBAGE",
        b"3;a=b;c=\"d;e\"\r\nabc\r\n0;x\r\nX-Trailer: a\r\nY: b\r\n\r\n",
        b"a\r\n0123456789\r\n2\r\n\r\n\r\n0\r\n\r\n",
        b"0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    ];

    #[test]
    fn fuzz_random_and_mutated_bodies() {
        let mut rng = Rng::new(0x5eed_0002);
        let mut ended = 0;
        let mut failed = 0;
        for i in 0..3_000 {
            let input = if i % 3 == 0 {
                let mut buf = Vec::new();
                for _ in 0..rng.below(30) {
                    if rng.below(2) == 0 {
                        buf.extend_from_slice(rng.pick(PIECES));
                    } else {
                        buf.push(rng.next() as u8);
                    }
                }
                buf
            } else {
                let seed = rng.pick(SEEDS);
                rng.mutate(seed, PIECES)
            };
            // Agreement over all splits, no panic, Data within what was consumed.
            let one = run(&input);
            match &one.outcome {
                Outcome::End(_) => {
                    ended += 1;
                    // What was consumed is exactly a body: it ends the line of the
                    // trailer section, and what is left is the input's tail.
                    let used = input.len() - one.left.len();
                    assert!(
                        input[..used].ends_with(b"\r\n\r\n") || input[..used].ends_with(b"\n\r\n")
                    );
                    assert_eq!(&input[used..], &one.left[..]);
                    assert!(one.data.len() < used);
                }
                Outcome::Err(_) => failed += 1,
                Outcome::More => assert!(one.left.is_empty()),
            }
            // Random splits into many pieces.
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let end = (at + 1 + rng.below(6)).min(input.len());
                pieces.push(&input[at..end]);
                at = end;
            }
            let mut many = run_pieces(&pieces, 1 + rng.below(8));
            let mut want = one;
            if matches!(want.outcome, Outcome::Err(_)) {
                want.left.clear();
                many.left.clear();
            }
            assert_eq!(many, want, "{:?}", String::from_utf8_lossy(&input));
        }
        assert!(
            ended > 100 && failed > 100,
            "ended {ended}, failed {failed}"
        );
    }
}
