//! Thread-per-core execution: one monoio runtime per OS thread (io_uring where the
//! kernel allows it, epoll otherwise), optionally pinned to a core, each running one
//! future to completion and handing its result back.

use std::future::Future;
use std::thread;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ShardError {
    #[error("cannot start thread {index}: {source}")]
    Spawn {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the runtime of thread {index}: {source}")]
    Runtime {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("thread {index} panicked")]
    Panicked { index: usize },
}

/// Number of threads to use when the user did not say: the available cores.
pub fn default_threads() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The I/O driver the shards use on this machine: "io_uring" or "epoll" (fallback).
pub fn driver_name() -> &'static str {
    if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll"
    }
}

/// Runs `make(index)` on `threads` shards and returns their outputs in index order.
/// `pin` pins shard `i` to core `i % cores`.
pub fn run_shards<T, F, Fut>(threads: usize, pin: bool, make: F) -> Result<Vec<T>, ShardError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    let cores = if pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let make = make.clone();
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[index % cores.len()])
        };
        let handle = thread::Builder::new()
            .name(format!("loadgen-{index}"))
            .spawn(move || -> Result<T, ShardError> {
                if let Some(core) = core {
                    // Best effort: pinning can be refused inside containers.
                    core_affinity::set_for_current(core);
                }
                let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build()
                    .map_err(|source| ShardError::Runtime { index, source })?;
                Ok(rt.block_on(make(index)))
            })
            .map_err(|source| ShardError::Spawn { index, source })?;
        handles.push(handle);
    }
    let mut out = Vec::with_capacity(threads);
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(res) => out.push(res?),
            Err(_) => return Err(ShardError::Panicked { index }),
        }
    }
    Ok(out)
}

/// Splits `total` into `parts` shares proportional to `weights` (which sum to `parts`'
/// total weight), giving the remainder to the first shares.
pub fn split_proportional(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut shares: Vec<u64> = weights
        .iter()
        .map(|w| ((total as u128 * *w as u128) / sum as u128) as u64)
        .collect();
    let mut rest = total - shares.iter().sum::<u64>();
    for (share, w) in shares.iter_mut().zip(weights) {
        if rest == 0 {
            break;
        }
        if *w > 0 {
            *share += 1;
            rest -= 1;
        }
    }
    shares
}

/// Spreads `total` items evenly over `parts` (the first ones get one more).
pub fn split_even(total: u64, parts: usize) -> Vec<u64> {
    split_proportional(total, &vec![1; parts])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_sums_and_balances() {
        assert_eq!(split_even(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(split_even(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split_even(0, 2), vec![0, 0]);
    }

    #[test]
    fn proportional_split_follows_weights() {
        let s = split_proportional(2000, &[3, 1]);
        assert_eq!(s, vec![1500, 500]);
        let s = split_proportional(7, &[1, 1, 1]);
        assert_eq!(s.iter().sum::<u64>(), 7);
        assert_eq!(split_proportional(5, &[0, 2]), vec![0, 5]);
    }

    #[test]
    fn shards_return_in_order() {
        let out = run_shards(2, false, |i| async move { i * 10 }).expect("shards run");
        assert_eq!(out, vec![0, 10]);
    }
}
