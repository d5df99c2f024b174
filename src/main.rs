//! The `rtun` command line: `run`, `validate`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing::Instrument;

#[derive(Parser)]
#[command(
    name = "rtun",
    version,
    about = "Reverse-tunnel proxy on thread-per-core io_uring shards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the roles (initiator, responder or both) that the configuration file holds.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a configuration file and print what it would run.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Serve a small HTTP service (h1 + h2c): /echo, /bytes/N, /delay/MS, /status/CODE, hello.
    Service {
        #[arg(short, long, default_value = "127.0.0.1:18080")]
        listen: std::net::SocketAddr,
        /// Sent back in `x-served-by`.
        #[arg(long, default_value = "rtun-service")]
        name: String,
        /// Threads, each with its own SO_REUSEPORT listener.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Run a responder, an initiator and a small service on loopback and show how to reach it.
    Demo {
        /// Send requests through the tunnel and exit non-zero if any fails.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match rtun::config::load(&config) {
            Ok(cfg) => match rtun::app::check_tls_files(&cfg) {
                Ok(()) => {
                    println!("{}: OK\n{}", config.display(), cfg.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let cfg = match rtun::config::load(&config) {
                Ok(cfg) => Arc::new(cfg),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            rtun::app::block_signals();
            let running = match rtun::app::start(cfg) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("rtun: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let reason = running.wait_for_stop();
            tracing::info!("{reason}: draining");
            let failed = running.failed();
            running.stop();
            if failed {
                ExitCode::FAILURE
            } else {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
        }
        Command::Demo { check } => rtun::demo::main(check),
        Command::Service {
            listen,
            name,
            threads,
        } => {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = rtun::shard::runtime::spawn_shards(threads.max(1), move |shard| {
                rtun::service::serve(listen, name.clone(), tx.clone())
                    .instrument(tracing::info_span!("service", shard))
            });
            if let Err(e) = spawned {
                eprintln!("rtun service: cannot start threads: {e}");
                return ExitCode::FAILURE;
            }
            match rx.recv() {
                Ok(Ok(())) => {
                    println!("rtun service listening on {listen}");
                    loop {
                        std::thread::park();
                    }
                }
                Ok(Err(e)) => {
                    eprintln!("rtun service: cannot listen on {listen}: {e}");
                    ExitCode::FAILURE
                }
                Err(_) => ExitCode::FAILURE,
            }
        }
    }
}
