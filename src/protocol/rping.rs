//! Envoy's `RPING` echo on the initiator (ARCHITECTURE.md §3): before HTTP/2 starts, an Envoy responder
//! may write the raw 5 bytes `RPING` on an idle tunnel; the initiator writes each complete leading
//! `RPING` back and stops looking at the first byte that does not continue one (normally the `P`
//! of the h2 preface `PRI * HTTP/2.0`).
//!
//! [`RpingFilter`] is a sans-IO state machine fed with whatever the read loop received. A prefix
//! of `RPING` at the end of an input is held back until the next input says whether it completes;
//! if it does not, those bytes are h2 data and come back in [`RpingStep::replay`], so no byte is
//! lost or reordered.

/// The 5 bytes an Envoy responder writes, and the initiator echoes.
pub const RPING: &[u8; 5] = b"RPING";

/// What one [`RpingFilter::feed`] found.
///
/// The h2 data this input yields is `replay` followed by `input[passthrough_from..]`, in that
/// order; when `passthrough_from` is `None` the input yields no data (it was all `RPING`s or a
/// held-back prefix of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpingStep {
    /// Complete `RPING`s in this input (including one completed from held-back bytes): write
    /// `RPING` back that many times.
    pub echo_count: usize,
    /// `Some(i)`: the filter is done, and from index `i` of this input on the bytes are h2 data.
    pub passthrough_from: Option<usize>,
    /// Bytes held back by earlier inputs as a possible `RPING` that turned out to be h2 data.
    /// Non-empty only when `passthrough_from == Some(0)`; always a prefix of [`RPING`].
    pub replay: &'static [u8],
}

/// Strips and counts leading `RPING`s from the start of a tunnel, across reads.
#[derive(Debug, Clone, Default)]
pub struct RpingFilter {
    /// Bytes of `RPING` matched and held back from earlier inputs (`0..5`).
    held: usize,
    done: bool,
}

impl RpingFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a byte that does not continue an `RPING` was seen: every later byte is h2 data
    /// (feeding more returns `passthrough_from: Some(0)` and echoes nothing).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes currently held back as a possible `RPING` (a prefix of it; empty when done). When
    /// the connection ends with bytes held, they were never h2 data worth delivering.
    pub fn pending(&self) -> &'static [u8] {
        &RPING[..self.held]
    }

    /// Looks at the next bytes of the connection. See [`RpingStep`] for what comes out.
    pub fn feed(&mut self, input: &[u8]) -> RpingStep {
        let mut step = RpingStep {
            echo_count: 0,
            passthrough_from: None,
            replay: &[],
        };
        if self.done {
            step.passthrough_from = Some(0);
            return step;
        }
        // Where the candidate RPING being matched started in this input; `None` while it began
        // in an earlier input (its first `held` bytes were held back).
        let carried = self.held;
        let mut start = if carried > 0 { None } else { Some(0) };
        for (i, &byte) in input.iter().enumerate() {
            if byte == RPING[self.held] {
                self.held += 1;
                if self.held == RPING.len() {
                    step.echo_count += 1;
                    self.held = 0;
                    start = Some(i + 1);
                }
                continue;
            }
            // Not an RPING: data starts where this candidate started.
            self.done = true;
            match start {
                Some(s) => step.passthrough_from = Some(s),
                None => {
                    // Only the bytes held from earlier inputs; the rest of the candidate
                    // is `input[..i]`, part of the passthrough.
                    step.replay = &RPING[..carried];
                    step.passthrough_from = Some(0);
                }
            }
            self.held = 0;
            return step;
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// Feeds `chunks` in order; returns the echo count and the h2 data in the order delivered.
    fn run(chunks: &[&[u8]]) -> (usize, Vec<u8>, bool) {
        let mut filter = RpingFilter::new();
        let mut echoes = 0;
        let mut data = Vec::new();
        for chunk in chunks {
            let step = filter.feed(chunk);
            echoes += step.echo_count;
            if !step.replay.is_empty() {
                assert_eq!(step.passthrough_from, Some(0));
            }
            data.extend_from_slice(step.replay);
            if let Some(from) = step.passthrough_from {
                data.extend_from_slice(&chunk[from..]);
            }
        }
        (echoes, data, filter.is_done())
    }

    #[test]
    fn several_rpings_then_preface_in_one_buffer() {
        let input = [&b"RPINGRPINGRPING"[..], PREFACE].concat();
        let mut filter = RpingFilter::new();
        let step = filter.feed(&input);
        assert_eq!(step.echo_count, 3);
        assert_eq!(step.passthrough_from, Some(15));
        assert!(step.replay.is_empty());
        assert!(filter.is_done());
    }

    #[test]
    fn preface_straight_away() {
        let mut filter = RpingFilter::new();
        let step = filter.feed(PREFACE);
        assert_eq!(
            step,
            RpingStep {
                echo_count: 0,
                passthrough_from: Some(0),
                replay: &[],
            }
        );
        assert!(filter.is_done());
        // Once done, everything is data.
        let again = filter.feed(b"RPING");
        assert_eq!((again.echo_count, again.passthrough_from), (0, Some(0)));
    }

    #[test]
    fn rpings_without_preface_yet_hold_nothing_back() {
        let mut filter = RpingFilter::new();
        let step = filter.feed(b"RPINGRPING");
        assert_eq!((step.echo_count, step.passthrough_from), (2, None));
        assert!(!filter.is_done());
        assert!(filter.pending().is_empty());
        let step = filter.feed(b"");
        assert_eq!((step.echo_count, step.passthrough_from), (0, None));
    }

    #[test]
    fn split_across_every_boundary() {
        let input = [&b"RPINGRPING"[..], PREFACE].concat();
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (echoes, data, done) = run(&[&input[..a], &input[a..b], &input[b..]]);
                assert_eq!(echoes, 2, "split at {a},{b}");
                assert_eq!(data, PREFACE, "split at {a},{b}");
                assert!(done);
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let input = [&b"RPINGRPINGRPIX"[..], PREFACE].concat();
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let (echoes, data, done) = run(&chunks);
        assert_eq!(echoes, 2);
        assert_eq!(data, [&b"RPIX"[..], PREFACE].concat());
        assert!(done);
    }

    #[test]
    fn held_prefix_then_preface_comes_back_as_data() {
        let mut filter = RpingFilter::new();
        let step = filter.feed(b"RPI");
        assert_eq!((step.echo_count, step.passthrough_from), (0, None));
        assert_eq!(filter.pending(), b"RPI");
        let step = filter.feed(PREFACE);
        assert_eq!(step.replay, b"RPI");
        assert_eq!(step.echo_count, 0);
        assert_eq!(step.passthrough_from, Some(0));
        assert!(filter.is_done());
        assert!(filter.pending().is_empty());
    }

    #[test]
    fn partial_match_within_one_input_is_data() {
        let (echoes, data, done) = run(&[b"RPINGRPX..."]);
        assert_eq!(echoes, 1);
        assert_eq!(data, b"RPX...");
        assert!(done);
        // A mismatch that starts a new candidate is still data from the old candidate's start.
        let (echoes, data, _) = run(&[b"RRPING"]);
        assert_eq!(echoes, 0);
        assert_eq!(data, b"RRPING");
    }

    #[test]
    fn candidate_spanning_inputs_replays_only_held_bytes() {
        let mut filter = RpingFilter::new();
        filter.feed(b"RP");
        let step = filter.feed(b"IPX");
        assert_eq!(step.replay, b"RP");
        assert_eq!(step.passthrough_from, Some(0));
    }

    #[test]
    fn completed_from_held_bytes_counts_once() {
        let mut filter = RpingFilter::new();
        assert_eq!(filter.feed(b"RP").echo_count, 0);
        let step = filter.feed(b"INGPRI");
        assert_eq!(step.echo_count, 1);
        assert_eq!(step.passthrough_from, Some(3));
        assert!(step.replay.is_empty());
    }

    #[test]
    fn no_byte_lost_on_pseudo_random_input() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            // Mostly RPING letters so that partial matches are common.
            let len = (next() % 40) as usize;
            let input: Vec<u8> = (0..len).map(|_| b"RPINGX"[(next() % 6) as usize]).collect();
            let cut_a = (next() as usize) % (len + 1);
            let cut_b = cut_a + (next() as usize) % (len - cut_a + 1);
            let (echoes, data, _) = run(&[&input[..cut_a], &input[cut_a..cut_b], &input[cut_b..]]);
            // Reference: count leading RPINGs in the whole input; the rest is data, unless it is a
            // proper prefix of RPING still held back.
            let mut expected_echoes = 0;
            let mut rest = &input[..];
            while rest.starts_with(RPING) {
                expected_echoes += 1;
                rest = &rest[RPING.len()..];
            }
            let held = RPING.starts_with(rest);
            assert_eq!(echoes, expected_echoes, "{input:?}");
            if held {
                assert!(data.is_empty(), "{input:?}");
            } else {
                assert_eq!(data, rest, "{input:?}");
            }
        }
    }
}
