//! Command-line surface: the `run`, `serve` and `compare` subcommands and their flags,
//! plus parsing of human durations such as `10s`, `250ms`, `2m`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::header_template::Pick;
use crate::outcome::ErrorBudget;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "HTTP load generator with HDR latency histograms, a fast benchmark service, and histogram comparison"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive load at a URL and report latency percentiles.
    Run(RunArgs),
    /// Serve HTTP/1.1 and h2c (prior knowledge) fast, for benchmarks.
    Serve(ServeArgs),
    /// Compare .hdr/.hgrm histograms side by side, optionally as an SVG plot.
    Compare(CompareArgs),
    /// Open N simulated initiator nodes (rtun handshake, then an h2 service) to one responder.
    Swarm(SwarmArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Target URL (http:// only).
    pub url: String,
    /// Use HTTP/1.1 (the default for http://).
    #[arg(long, conflicts_with = "h2c")]
    pub http1: bool,
    /// Use HTTP/2 over cleartext with prior knowledge.
    #[arg(long)]
    pub h2c: bool,
    /// Worker threads (one monoio runtime each); default: available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Total connections, spread over the threads.
    #[arg(short = 'c', long = "connections", default_value_t = 16)]
    pub connections: u64,
    /// Concurrent streams per HTTP/2 connection (HTTP/1.1: always one in flight).
    #[arg(short = 'm', long = "streams", default_value_t = 1)]
    pub streams: u64,
    /// Measured duration, e.g. 10s (default 10s unless -n is given).
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Total measured requests.
    #[arg(short = 'n', long = "requests")]
    pub requests: Option<u64>,
    /// Warmup before measuring, excluded from results.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Open loop: total requests per second across all threads; latency is measured
    /// from each request's intended send time (coordinated-omission corrected).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request body of this many bytes.
    #[arg(long, default_value_t = 0)]
    pub body_size: usize,
    /// Request header 'name: value' (repeatable). A value may hold one range
    /// template, e.g. 'x-node-id: edge-{0..9999}', picked per request (see --pick).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// How templated header values are picked: round-robin (each thread walks the
    /// range from its own offset) or random (uniform).
    #[arg(long, value_enum, default_value_t = Pick::RoundRobin)]
    pub pick: Pick,
    /// Per-request timeout (from send to the end of the response body).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Open a new connection for every request (HTTP/1.1 only; connection churn).
    #[arg(long)]
    pub connect_per_request: bool,
    /// Write PREFIX.hgrm, PREFIX.hdr, PREFIX.json (and PREFIX.uncorrected.{hgrm,hdr}).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit non-zero when more requests fail than this: a count (default 0) or a share of
    /// the measured requests such as 1%. The summary and --out files are written either way.
    #[arg(long, value_parser = ErrorBudget::parse, default_value = "0")]
    pub max_errors: ErrorBudget,
    /// Do not pin threads to cores.
    #[arg(long)]
    pub no_pin: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Threads (one SO_REUSEPORT listener each); default: available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Size of the fixed response body.
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Delay before each response.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub delay: Duration,
    /// Do not pin threads to cores.
    #[arg(long)]
    pub no_pin: bool,
}

#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// The responder's tunnel listener, e.g. 127.0.0.1:9000.
    #[arg(long)]
    pub responder: SocketAddr,
    /// Simulated initiator nodes; node ids are PREFIX0 .. PREFIX{N-1}.
    #[arg(long)]
    pub nodes: u64,
    /// Cluster id every node announces.
    #[arg(long, default_value = "swarm")]
    pub cluster: String,
    /// Tenant id every node announces (may be empty).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Node id prefix.
    #[arg(long, default_value = "edge-")]
    pub node_prefix: String,
    /// Tunnels per node.
    #[arg(long, default_value_t = 1)]
    pub connections_per_node: u64,
    /// Source addresses used round-robin: a range 127.0.0.2-127.0.0.20 and/or a comma list.
    #[arg(long, default_value = "127.0.0.2-127.0.0.20")]
    pub sources: String,
    /// Threads (one monoio runtime each); default: available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Concurrent dials per thread.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Connect, TLS handshake (with --tls-ca) and rtun handshake timeout, each.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Handshake request path (the responder's request_path).
    #[arg(long, default_value = crate::swarm::REQUEST_PATH)]
    pub request_path: String,
    /// Keep the tunnels (and serve requests on them) this long after dialing, then exit.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub hold: Duration,
    /// Size of the fixed response body.
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Write the connect report as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not pin threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Dial with TLS, verifying the responder against this CA bundle (PEM); plaintext
    /// when absent. rtun's client TLS (rustls, ring), as `clusters.NAME.tls` of an initiator.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented for mutual TLS; needs --tls-key.
    #[arg(long, value_name = "PATH", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name the responder's certificate must be valid for (and SNI); default: the
    /// --responder address (an IP SAN, no SNI sent).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_sni: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum YScale {
    Linear,
    Log,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Histogram files (.hdr or .hgrm); the first is the baseline for ratios.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write an SVG plot of latency by percentile.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Latency axis scale of the plot.
    #[arg(long, value_enum, default_value_t = YScale::Log)]
    pub y_scale: YScale,
}

/// Parses `10s`, `250ms`, `1.5s`, `2m`, `500us`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 10s, 250ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?} (use us, ms, s, m, h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    /// `path arg` of each argument of `cmd` and its subcommands without help text.
    fn arguments_without_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name()).trim_start().to_owned();
        for arg in cmd.get_arguments() {
            let help = arg.get_help().or(arg.get_long_help());
            if help.is_none_or(|h| h.to_string().trim().is_empty()) {
                out.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                out.push(format!("{path} {} (no about)", sub.get_name()));
            }
            arguments_without_help(sub, &path, out);
        }
    }

    /// Every argument of every subcommand has help text, and every subcommand a description.
    #[test]
    fn every_flag_has_help() {
        let mut cli = Cli::command();
        cli.build();
        let mut missing = Vec::new();
        arguments_without_help(&cli, "", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
        // The walk sees the arguments (a walk that visits nothing passes anything).
        let run = cli.find_subcommand("swarm").expect("subcommand");
        assert!(run.get_arguments().any(|a| a.get_id() == "tls_sni"));
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "run",
            "http://127.0.0.1:1/",
            "--h2c",
            "-c",
            "2",
            "-m",
            "8",
            "-n",
            "2000",
            "-H",
            "x-node-id: edge-{0..9}",
            "-H",
            "a: b",
            "--rate",
            "500",
            "--warmup",
            "2s",
        ])
        .expect("parses");
        let Command::Run(r) = cli.command else {
            panic!("expected run");
        };
        assert!(r.h2c);
        assert_eq!(r.connections, 2);
        assert_eq!(r.streams, 8);
        assert_eq!(r.requests, Some(2000));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.rate, Some(500.0));
        assert_eq!(r.max_errors, ErrorBudget::Count(0));
        assert!(Cli::try_parse_from(["loadgen", "run", "http://x/", "--http1", "--h2c"]).is_err());
    }

    #[test]
    fn swarm_tls_flags_parse() {
        let base = [
            "loadgen",
            "swarm",
            "--responder",
            "127.0.0.1:9",
            "--nodes",
            "3",
        ];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        let cli = parse(&[
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-sni",
            "responder.test",
        ])
        .expect("parses");
        let Command::Swarm(s) = cli.command else {
            panic!("expected swarm");
        };
        assert_eq!(s.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(s.tls_cert.as_deref(), Some(std::path::Path::new("c.pem")));
        assert_eq!(s.tls_key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert_eq!(s.tls_sni.as_deref(), Some("responder.test"));
        let Command::Swarm(s) = parse(&[]).expect("plaintext").command else {
            panic!("expected swarm");
        };
        assert!(s.tls_ca.is_none());
        // A certificate needs its key and a CA; the key and SNI need the rest.
        assert!(parse(&["--tls-ca", "ca.pem", "--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_err());
        assert!(parse(&["--tls-ca", "ca.pem", "--tls-key", "k.pem"]).is_err());
        assert!(parse(&["--tls-sni", "x.test"]).is_err());
        assert!(parse(&["--tls-ca", "ca.pem"]).is_ok());
    }
}
