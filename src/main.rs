//! The `rtun` command line: `run`, `validate`, `reload`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing::Instrument;

#[derive(Parser)]
#[command(
    name = "rtun",
    version,
    about = "Reverse-tunnel proxy on thread-per-core io_uring shards",
    after_help = "Logs go to stderr, colored only when stderr is a terminal. Their level comes \
                  from --log-level, else from the RUST_LOG environment variable (same syntax, \
                  e.g. RUST_LOG=debug or RUST_LOG=info,rtun::initiator=debug), else `info`. \
                  Access logs are configured in the file (`access_log:`)."
)]
struct Cli {
    /// Process log format on stderr: `text` (one readable line per event) or `json` (one
    /// JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Which process log events to keep: a level (`error`, `warn`, `info`, `debug`, `trace`)
    /// or a tracing EnvFilter directive such as `info,rtun::initiator=debug`. Overrides
    /// RUST_LOG; default `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Installs the process log on stderr: `--log-level`, else RUST_LOG, else `info`; colours
/// only on a terminal (a file or journald gets plain text).
fn init_logging(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(directive) => {
            EnvFilter::try_new(directive).map_err(|e| format!("--log-level {directive:?}: {e}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Run the roles (initiator, responder or both) that the configuration file holds.
    Run {
        /// The YAML configuration file (see config/ for examples).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and print what it would run.
    Validate {
        /// The YAML configuration file to check.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running rtun to read its configuration file again (POST /reload on its admin
    /// endpoint); exits non-zero when the reload is refused.
    Reload {
        /// The admin endpoint of the running rtun.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// A file holding the admin token (`admin.token_file`), sent as a bearer token.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Serve a small HTTP service (h1 + h2c): /echo, /bytes/N, /delay/MS, /status/CODE, hello.
    Service {
        /// Address to listen on.
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
    // A panic on any thread ends the process (see the module for why).
    rtun::abort_on_panic::install();
    // Before anything else, while this is the only thread: may execute the binary again.
    rtun::malloc_cache::ensure();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, cli.log_level.as_deref()) {
        eprintln!("rtun: {e}");
        return ExitCode::from(2);
    }
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
            let running = match rtun::app::start_file(cfg, config) {
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
        Command::Reload { admin, token_file } => reload(admin, token_file),
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

/// `rtun reload`: prints the admin endpoint's answer; success only for a 200.
fn reload(admin: std::net::SocketAddr, token_file: Option<PathBuf>) -> ExitCode {
    let token = match token_file.map(std::fs::read_to_string).transpose() {
        Ok(token) => token.map(|t| t.trim().to_owned()),
        Err(e) => {
            eprintln!("rtun reload: cannot read the token file: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rtun::app::reload::request(admin, token.as_deref()) {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("rtun reload: refused ({status}): {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rtun reload: cannot reach the admin endpoint at {admin}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
        let run = cli.find_subcommand("run").expect("subcommand");
        assert!(run.get_arguments().any(|a| a.get_id() == "config"));
    }
}
