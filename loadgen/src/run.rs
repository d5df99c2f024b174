//! A load run: its configuration, the split of connections, request counts and rate
//! over the shards, the up-front reachability check, and the merge of shard results
//! into one summary.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use thiserror::Error;

use crate::client::{self, Clock, ShardPlan, ShardProgress, ShardResult};
use crate::header_template::{HeaderSpec, Pick};
use crate::latency::{HistogramError, LatencyPair};
use crate::outcome::{describe_io_error, ErrorCounts};
use crate::progress::Progress;
use crate::shard::{self, ShardError};
use crate::summary::{RateReport, Summary};
use crate::target::Target;

/// Delay between planning the run and the first intended send, so every shard's
/// runtime is up before its schedule starts.
const START_DELAY: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
        }
    }
}

/// Everything a run needs, checked.
#[derive(Debug)]
pub struct RunConfig {
    pub target: Target,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub threads: usize,
    pub connections: u64,
    /// Concurrent streams per HTTP/2 connection.
    pub streams: u64,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    /// Target total req/s (open loop); None for closed loop.
    pub rate: Option<f64>,
    pub method: Method,
    pub body: Bytes,
    pub headers: Vec<HeaderSpec>,
    pub pick: Pick,
    pub timeout: Duration,
    pub connect_per_request: bool,
    pub pin: bool,
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Histogram(#[from] HistogramError),
}

/// A finished run: its summary and merged histograms.
#[derive(Debug)]
pub struct RunOutput {
    pub summary: Summary,
    pub latency: LatencyPair,
}

/// Checks once, before any load, that the target accepts connections.
pub fn check_reachable(addr: SocketAddr, timeout: Duration) -> Result<(), RunError> {
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| RunError::Unreachable {
            addr,
            reason: describe_io_error(&e),
        })
}

/// Splits the run over shards: connections evenly, requests and rate in proportion to
/// each shard's connections. Shards without connections are dropped.
pub fn plan(cfg: &RunConfig) -> Vec<ShardPlan> {
    let threads = cfg.threads.max(1).min(cfg.connections.max(1) as usize);
    let conns = shard::split_even(cfg.connections, threads);
    let requests = cfg.requests.map(|n| shard::split_proportional(n, &conns));
    conns
        .iter()
        .enumerate()
        .map(|(index, &connections)| ShardPlan {
            index,
            connections,
            requests: requests.as_ref().map(|r| r[index]),
            rate: cfg
                .rate
                .map(|r| r * connections as f64 / cfg.connections.max(1) as f64),
        })
        .collect()
}

/// Runs the load and merges what the shards measured.
pub fn execute(cfg: RunConfig, show_progress: bool) -> Result<RunOutput, RunError> {
    check_reachable(cfg.addr, cfg.timeout.min(Duration::from_secs(5)))?;
    let plans = plan(&cfg);
    let threads = plans.len();
    let start = Instant::now() + START_DELAY;
    let measure_start = start + cfg.warmup;
    let clock = Clock {
        start,
        measure_start,
        issue_end: cfg.duration.map(|d| measure_start + d),
    };
    let progress: Vec<Arc<ShardProgress>> = (0..threads)
        .map(|_| Arc::new(ShardProgress::default()))
        .collect();
    let cfg = Arc::new(cfg);

    let worker = {
        let cfg = cfg.clone();
        let progress = progress.clone();
        let pin = cfg.pin;
        std::thread::Builder::new()
            .name("loadgen-run".into())
            .spawn(move || {
                shard::run_shards(threads, pin, move |i| {
                    client::run_shard(cfg.clone(), plans[i].clone(), clock, progress[i].clone())
                })
            })
            .map_err(|source| ShardError::Spawn { index: 0, source })?
    };
    let mut ui = show_progress.then(|| Progress::start(cfg.duration, cfg.requests, cfg.warmup));
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(ui) = ui.as_mut() {
            let done = progress
                .iter()
                .map(|p| p.done.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            let errors = progress
                .iter()
                .map(|p| p.errors.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            ui.update(done, errors);
        }
    }
    if let Some(ui) = ui {
        ui.finish();
    }
    let results = worker
        .join()
        .map_err(|_| ShardError::Panicked { index: 0 })??;
    let mut merged = Vec::with_capacity(results.len());
    for r in results {
        merged.push(r?);
    }
    Ok(merge(&cfg, measure_start, merged)?)
}

fn merge(
    cfg: &RunConfig,
    measure_start: Instant,
    results: Vec<ShardResult>,
) -> Result<RunOutput, HistogramError> {
    let mut latency = LatencyPair::new()?;
    let mut errors = ErrorCounts::default();
    let (mut ok, mut received, mut sent) = (0u64, 0u64, 0u64);
    let mut last_done: Option<Instant> = None;
    let mut unsent = 0u64;
    for r in &results {
        latency.merge(&r.latency);
        errors.merge(&r.errors);
        ok += r.ok;
        received += r.bytes_received;
        sent += r.bytes_sent;
        unsent += r.unsent;
        last_done = match (last_done, r.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    // A timed run lasts at least its duration; requests in flight at the end may
    // stretch it. A counted run lasts until its last response.
    let duration = last_done
        .map(|d| d.saturating_duration_since(measure_start))
        .unwrap_or_default()
        .max(cfg.duration.unwrap_or_default());
    let requests = ok + errors.total();
    let secs = duration.as_secs_f64();
    let per_sec = |v: u64| if secs > 0.0 { v as f64 / secs } else { 0.0 };
    let rps = per_sec(requests);
    let summary = Summary {
        url: cfg.target.uri.to_string(),
        protocol: cfg.protocol.name().to_string(),
        mode: if cfg.rate.is_some() { "open" } else { "closed" }.to_string(),
        threads: results.len(),
        driver: shard::driver_name().to_string(),
        connections: cfg.connections,
        streams_per_connection: match cfg.protocol {
            Protocol::Http1 => 1,
            Protocol::H2c => cfg.streams,
        },
        connect_per_request: cfg.connect_per_request,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: secs,
        requests,
        ok,
        errors_total: errors.total(),
        errors,
        rps,
        bytes_received: received,
        bytes_sent: sent,
        received_bytes_per_s: per_sec(received),
        sent_bytes_per_s: per_sec(sent),
        // Achieved rate = requests sent per second of the sending window (-d), so the
        // drain of requests still in flight at the end does not count against it.
        rate: cfg.rate.map(|target| {
            let achieved = match cfg.duration {
                Some(d) if !d.is_zero() => requests as f64 / d.as_secs_f64(),
                _ => rps,
            };
            RateReport::new(target, achieved, unsent)
        }),
        latency_us: crate::summary::LatencyReport::of(&latency),
    };
    Ok(RunOutput { summary, latency })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        connections: u64,
        threads: usize,
        requests: Option<u64>,
        rate: Option<f64>,
    ) -> RunConfig {
        let target = Target::parse("http://127.0.0.1:9/").expect("valid");
        RunConfig {
            addr: target.resolve().expect("resolves"),
            target,
            protocol: Protocol::Http1,
            threads,
            connections,
            streams: 1,
            duration: None,
            requests,
            warmup: Duration::ZERO,
            rate,
            method: Method::GET,
            body: Bytes::new(),
            headers: Vec::new(),
            pick: Pick::RoundRobin,
            timeout: Duration::from_secs(1),
            connect_per_request: false,
            pin: false,
        }
    }

    #[test]
    fn plan_spreads_connections_requests_and_rate() {
        let p = plan(&cfg(3, 2, Some(2000), Some(600.0)));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].connections, 2);
        assert_eq!(p[1].connections, 1);
        assert_eq!(
            p[0].requests.unwrap_or(0) + p[1].requests.unwrap_or(0),
            2000
        );
        assert_eq!(p[0].requests, Some(1334));
        let total_rate: f64 = p.iter().filter_map(|s| s.rate).sum();
        assert!((total_rate - 600.0).abs() < 1e-9);
    }

    #[test]
    fn plan_uses_no_more_threads_than_connections() {
        let p = plan(&cfg(2, 8, None, None));
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|s| s.connections == 1 && s.requests.is_none()));
    }

    #[test]
    fn unreachable_is_one_clear_line() {
        // Port 1 on loopback: nothing listens there in the test environment.
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let err = check_reachable(addr, Duration::from_secs(1)).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "cannot connect to 127.0.0.1:1: Connection refused"
        );
    }
}
