//! `rtun::protocol::RpingFilter::feed` over arbitrary chunkings of arbitrary bytes.
//!
//! Input layout: byte 0 is how many chunk lengths follow (mod 16), each one byte; the remaining
//! bytes are the connection's stream, cut into chunks of those lengths (mod what is left), the
//! last chunk taking the rest.
//!
//! Asserts:
//! - nothing is lost, duplicated or reordered: `RPING` × echoes, then the data (each step's
//!   `replay` followed by `chunk[passthrough_from..]`), then `pending()` rebuilds the stream;
//! - the echo count and the data do not depend on the chunking: they equal a one-shot feed of the
//!   whole stream and a reference (count leading `RPING`s; the rest is data unless it is a proper
//!   prefix of `RPING`, which stays pending);
//! - per step: `passthrough_from` is within the chunk; a non-empty `replay` is a prefix of `RPING`
//!   and comes with `passthrough_from == Some(0)`; once done, the filter stays done and every
//!   later step is `{ echo_count: 0, passthrough_from: Some(0), replay: [] }`;
//! - `pending()` is a proper prefix of `RPING`, empty once done; not done means no data yet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtun::protocol::{RpingFilter, RPING};

/// Feeds `chunks` in order: (echoes, data, filter).
fn run(chunks: &[&[u8]]) -> (usize, Vec<u8>, RpingFilter) {
    let mut filter = RpingFilter::new();
    let mut echoes = 0;
    let mut data = Vec::new();
    for chunk in chunks {
        let was_done = filter.is_done();
        let step = filter.feed(chunk);
        if was_done {
            assert_eq!(
                (step.echo_count, step.passthrough_from, step.replay),
                (0, Some(0), &[][..]),
                "a done filter still filters"
            );
        }
        if let Some(from) = step.passthrough_from {
            assert!(from <= chunk.len());
            assert!(filter.is_done(), "passthrough before the filter is done");
        } else {
            assert!(!filter.is_done());
        }
        if !step.replay.is_empty() {
            assert_eq!(step.passthrough_from, Some(0));
            assert!(RPING.starts_with(step.replay));
        }
        echoes += step.echo_count;
        data.extend_from_slice(step.replay);
        if let Some(from) = step.passthrough_from {
            data.extend_from_slice(&chunk[from..]);
        }
        let pending = filter.pending();
        assert!(pending.len() < RPING.len() && RPING.starts_with(pending));
        if filter.is_done() {
            assert!(pending.is_empty());
        } else {
            assert!(data.is_empty(), "data delivered before the filter is done");
        }
    }
    (echoes, data, filter)
}

fuzz_target!(|input: &[u8]| {
    let Some((&count, rest)) = input.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(count);
    let mut chunks: Vec<&[u8]> = Vec::with_capacity(count + 1);
    let mut left = stream;
    for &len in lengths {
        let (chunk, tail) = left.split_at(usize::from(len) % (left.len() + 1));
        chunks.push(chunk);
        left = tail;
    }
    chunks.push(left);

    let (echoes, data, filter) = run(&chunks);

    // Nothing lost, duplicated or reordered.
    let mut rebuilt = RPING.repeat(echoes);
    rebuilt.extend_from_slice(&data);
    rebuilt.extend_from_slice(filter.pending());
    assert_eq!(rebuilt, stream, "chunks {chunks:?}");

    // The chunking does not matter.
    let (one_echoes, one_data, one_filter) = run(&[stream]);
    assert_eq!(
        (echoes, &data),
        (one_echoes, &one_data),
        "chunks {chunks:?}"
    );
    assert_eq!(filter.is_done(), one_filter.is_done());
    assert_eq!(filter.pending(), one_filter.pending());

    // Reference.
    let mut expected_echoes = 0;
    let mut tail = stream;
    while let Some(after) = tail.strip_prefix(&RPING[..]) {
        expected_echoes += 1;
        tail = after;
    }
    assert_eq!(echoes, expected_echoes);
    if RPING.starts_with(tail) && tail.len() < RPING.len() {
        assert!(data.is_empty() && !filter.is_done());
        assert_eq!(filter.pending(), tail);
    } else {
        assert_eq!(data, tail);
        assert!(filter.is_done());
    }
});
