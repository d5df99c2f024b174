//! The result of a run as people read it (the final text summary) and as programs
//! read it (`PREFIX.json`).

use std::fmt::Write as _;

use serde::Serialize;

use crate::latency::{format_us, LatencyPair, Percentiles};
use crate::outcome::ErrorCounts;

/// Below this fraction of the target rate, the summary says the target was not reached.
pub const RATE_REACHED_FRACTION: f64 = 0.95;

#[derive(Clone, Debug, Serialize)]
pub struct RateReport {
    pub target: f64,
    pub achieved: f64,
    pub reached: bool,
    /// Requests scheduled in the measured window but never sent, because every lane
    /// was still busy when the run ended.
    pub unsent: u64,
}

impl RateReport {
    pub fn new(target: f64, achieved: f64, unsent: u64) -> Self {
        RateReport {
            target,
            achieved,
            unsent,
            reached: achieved >= target * RATE_REACHED_FRACTION,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    /// From the intended send time (coordinated-omission corrected).
    pub corrected: Percentiles,
    /// From the actual send time.
    pub uncorrected: Percentiles,
}

impl LatencyReport {
    pub fn of(p: &LatencyPair) -> Self {
        LatencyReport {
            corrected: Percentiles::of(&p.corrected),
            uncorrected: Percentiles::of(&p.uncorrected),
        }
    }
}

/// Machine-readable run summary; latencies in µs.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub url: String,
    pub protocol: String,
    /// "closed" or "open".
    pub mode: String,
    pub threads: usize,
    /// "io_uring" or "epoll".
    pub driver: String,
    pub connections: u64,
    pub streams_per_connection: u64,
    pub connect_per_request: bool,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Measured requests: ok + errors.
    pub requests: u64,
    pub ok: u64,
    pub errors_total: u64,
    pub errors: ErrorCounts,
    pub rps: f64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    pub received_bytes_per_s: f64,
    pub sent_bytes_per_s: f64,
    /// Open loop only.
    pub rate: Option<RateReport>,
    pub latency_us: LatencyReport,
}

fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

impl Summary {
    /// The final text summary.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let shape = if self.protocol == "h2c" {
            format!(
                "{} connections x {} streams",
                self.connections, self.streams_per_connection
            )
        } else if self.connect_per_request {
            format!(
                "{} connections, new connection per request",
                self.connections
            )
        } else {
            format!("{} connections", self.connections)
        };
        let _ = writeln!(
            o,
            "loadgen run {} ({}, {} threads on {}, {}, {} loop)",
            self.url, self.protocol, self.threads, self.driver, shape, self.mode
        );
        let _ = writeln!(
            o,
            "  requests    {} in {:.3}s = {:.1} req/s ({} ok)",
            self.requests, self.duration_s, self.rps, self.ok
        );
        let _ = writeln!(
            o,
            "  errors      {} ({})",
            self.errors_total,
            self.errors.describe()
        );
        let _ = writeln!(
            o,
            "  bytes       received {} ({}/s), sent {} ({}/s)",
            human_bytes(self.bytes_received as f64),
            human_bytes(self.received_bytes_per_s),
            human_bytes(self.bytes_sent as f64),
            human_bytes(self.sent_bytes_per_s),
        );
        if let Some(rate) = &self.rate {
            let pct = if rate.target > 0.0 {
                100.0 * rate.achieved / rate.target
            } else {
                0.0
            };
            let _ = writeln!(
                o,
                "  rate        target {:.1} req/s, achieved {:.1} req/s ({pct:.1}%){}",
                rate.target,
                rate.achieved,
                if rate.reached {
                    ""
                } else {
                    " -- target rate NOT reached"
                }
            );
            if rate.unsent > 0 {
                let _ = writeln!(
                    o,
                    "  unsent      {} scheduled requests were never sent (all connections busy); their latency is not in the histograms",
                    rate.unsent
                );
            }
        }
        let c = &self.latency_us.corrected;
        let u = &self.latency_us.uncorrected;
        let _ = writeln!(o, "  latency     {:>12} {:>12}", "corrected", "uncorrected");
        for ((label, cv), (_, uv)) in c.rows().iter().zip(u.rows().iter()) {
            let _ = writeln!(
                o,
                "    {label:<9} {:>12} {:>12}",
                format_us(*cv),
                format_us(*uv)
            );
        }
        if self.mode == "closed" {
            let _ = writeln!(
                o,
                "  (closed loop: each request is sent when the previous one on its lane ends, so corrected = uncorrected)"
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyPair;
    use std::time::Duration;

    fn summary(rate: Option<RateReport>) -> Summary {
        let mut l = LatencyPair::new().expect("histograms");
        l.record(Duration::from_millis(3), Duration::from_millis(1));
        Summary {
            url: "http://127.0.0.1:1/".into(),
            protocol: "http1".into(),
            mode: if rate.is_some() { "open" } else { "closed" }.into(),
            threads: 1,
            driver: "epoll".into(),
            connections: 4,
            streams_per_connection: 1,
            connect_per_request: false,
            warmup_s: 0.0,
            duration_s: 1.0,
            requests: 10,
            ok: 9,
            errors_total: 1,
            errors: ErrorCounts {
                status_5xx: 1,
                ..Default::default()
            },
            rps: 10.0,
            bytes_received: 2048,
            bytes_sent: 0,
            received_bytes_per_s: 2048.0,
            sent_bytes_per_s: 0.0,
            rate,
            latency_us: LatencyReport::of(&l),
        }
    }

    #[test]
    fn rate_reached_threshold() {
        assert!(RateReport::new(100.0, 95.0, 0).reached);
        assert!(!RateReport::new(100.0, 94.9, 0).reached);
    }

    #[test]
    fn renders_counts_and_rate_warning() {
        let text = summary(Some(RateReport::new(500.0, 10.0, 7))).render();
        assert!(text.contains("requests    10 in 1.000s"), "{text}");
        assert!(
            text.contains("errors      1 (connect 0, timeout 0, reset 0, 4xx 0, 5xx 1, other 0)")
        );
        assert!(text.contains("target rate NOT reached"));
        assert!(text.contains("unsent      7 scheduled requests were never sent"));
        assert!(text.contains("p99.99"));
        assert!(text.contains("2.00 KiB"));
        let closed = summary(None).render();
        assert!(!closed.contains("NOT reached"));
    }

    #[test]
    fn json_has_machine_fields() {
        let v =
            serde_json::to_value(summary(Some(RateReport::new(500.0, 499.0, 0)))).expect("json");
        assert_eq!(v["requests"], 10);
        assert_eq!(v["errors"]["5xx"], 1);
        assert_eq!(v["rate"]["reached"], true);
        assert_eq!(v["latency_us"]["corrected"]["count"], 1);
        assert!(v["latency_us"]["uncorrected"]["p99.9"].is_u64());
    }
}
