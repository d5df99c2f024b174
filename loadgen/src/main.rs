//! `loadgen`: load generator, benchmark service and histogram comparison for rtun.
//! This file is the CLI edge: it checks flags, turns them into configurations, runs the
//! subcommand, and reports any failure as one line on stderr with a non-zero exit.

mod cli;
mod client;
mod compare;
mod h2_client;
mod header_template;
mod hgrm;
mod histfile;
mod latency;
mod outcome;
mod plot;
mod progress;
mod run;
mod serve;
mod serve_body;
mod shard;
mod summary;
mod swarm;
mod target;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;

use crate::cli::{Cli, Command, CompareArgs, RunArgs, ServeArgs, SwarmArgs};
use crate::header_template::HeaderSpec;
use crate::run::{Protocol, RunConfig, RunOutput};
use crate::target::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Serve(args) => cmd_serve(args),
        Command::Compare(args) => cmd_compare(args),
        Command::Swarm(args) => cmd_swarm(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the outermost context, then its causes.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("loadgen: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run_config(args: &RunArgs) -> Result<RunConfig> {
    let target = Target::parse(&args.url)?;
    let protocol = if args.h2c {
        Protocol::H2c
    } else {
        Protocol::Http1
    };
    if args.connections == 0 {
        bail!("--connections (-c) must be at least 1");
    }
    if args.streams == 0 {
        bail!("--streams (-m) must be at least 1");
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    if args.requests == Some(0) {
        bail!("--requests (-n) must be at least 1");
    }
    if args.duration == Some(Duration::ZERO) {
        bail!("--duration (-d) must be longer than 0");
    }
    if args.timeout.is_zero() {
        bail!("--timeout must be longer than 0");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
    }
    if args.connect_per_request && protocol == Protocol::H2c {
        bail!("--connect-per-request works with HTTP/1.1 only (drop --h2c)");
    }
    let method = http::Method::from_bytes(args.method.as_bytes())
        .with_context(|| format!("invalid --method {:?}", args.method))?;
    let headers = args
        .headers
        .iter()
        .map(|h| HeaderSpec::parse(h))
        .collect::<Result<Vec<_>, _>>()?;
    let addr = target.resolve()?;
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    Ok(RunConfig {
        addr,
        target,
        protocol,
        threads: args.threads.unwrap_or_else(shard::default_threads),
        connections: args.connections,
        streams: args.streams,
        duration,
        requests: args.requests,
        warmup: args.warmup,
        rate: args.rate,
        method,
        body: Bytes::from(vec![b'x'; args.body_size]),
        headers,
        pick: args.pick,
        timeout: args.timeout,
        connect_per_request: args.connect_per_request,
        pin: !args.no_pin,
    })
}

fn cmd_run(args: RunArgs) -> Result<()> {
    let cfg = run_config(&args)?;
    let show_progress = std::io::stdout().is_terminal();
    let out = run::execute(cfg, show_progress)?;
    if let Some(prefix) = &args.out {
        write_outputs(prefix, &out)?;
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.summary.render().as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the summary")?;
    let (failed, requests) = (out.summary.errors_total, out.summary.requests);
    if failed > args.max_errors.allowed(requests) {
        bail!(
            "{failed} of {requests} requests failed ({}), more than --max-errors {} allows",
            out.summary.errors.describe(),
            args.max_errors
        );
    }
    Ok(())
}

fn write_outputs(prefix: &Path, out: &RunOutput) -> Result<()> {
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    histfile::write_pair(prefix, "", &out.latency.corrected)?;
    histfile::write_pair(prefix, ".uncorrected", &out.latency.uncorrected)?;
    let json_path = histfile::with_suffix(prefix, ".json");
    let json = serde_json::to_string_pretty(&out.summary).context("cannot encode summary")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(())
}

fn cmd_serve(args: ServeArgs) -> Result<()> {
    let threads = args.threads.unwrap_or_else(shard::default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let cfg = serve::ServeConfig {
        listen: args.listen,
        threads,
        body_size: args.body_size,
        delay: args.delay,
        pin: !args.no_pin,
    };
    let (addr, listeners) = serve::bind(&cfg)?;
    println!(
        "loadgen serve: listening on http://{addr} ({threads} threads, {}, HTTP/1.1 and h2c)",
        shard::driver_name()
    );
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    serve::serve(cfg, listeners)?;
    Ok(())
}

fn cmd_compare(args: CompareArgs) -> Result<()> {
    let inputs = compare::load_all(&args.files)?;
    print!("{}", compare::table(&inputs));
    if let Some(path) = &args.plot {
        plot::write_svg(path, &inputs, args.y_scale)
            .with_context(|| format!("cannot write plot {}", path.display()))?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

fn cmd_swarm(args: SwarmArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.connections_per_node == 0 {
        bail!("--connections-per-node must be at least 1");
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    for (name, value, empty_ok) in [
        ("--cluster", &args.cluster, false),
        ("--tenant", &args.tenant, true),
    ] {
        rtun::protocol::validate_id(value, empty_ok)
            .map_err(|e| anyhow::anyhow!("{name} {value:?} {e}"))?;
    }
    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => {
            let tls = rtun::config::ClientTlsConfig {
                cert: args.tls_cert.clone(),
                key: args.tls_key.clone(),
                ca: Some(ca.clone()),
                spki_pins: Vec::new(),
                sni: args.tls_sni.clone(),
            };
            // No ALPN, as rtun's initiator: the session carries the HTTP/1.1 handshake, then h2.
            let host = args.responder.ip().to_string();
            Some(rtun::tls::ClientTls::load(&tls, &host, &[]).context("--tls-*")?)
        }
    };
    let cfg = swarm::SwarmConfig {
        responder: args.responder,
        nodes: args.nodes,
        node_prefix: args.node_prefix,
        cluster: args.cluster,
        tenant: args.tenant,
        connections_per_node: args.connections_per_node,
        sources: swarm::parse_sources(&args.sources)?,
        threads: args.threads.unwrap_or_else(shard::default_threads),
        concurrency: args.concurrency,
        connect_timeout: args.connect_timeout,
        request_path: args.request_path,
        hold: args.hold,
        body: Bytes::from(vec![b'x'; args.body_size]),
        pin: !args.no_pin,
        tls,
    };
    let report = swarm::run(cfg, args.out)?;
    if report.tunnels_connected == 0 {
        bail!("no tunnel connected");
    }
    Ok(())
}
