//! `switchyard`: the controller binary. Parses the command line, sets up logging, runs the
//! library, and prints the whole error chain on failure.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use switchyard_cli::{Cli, Command, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints one line per routed request itself: its log leaves out the front
    // door's own per-request line (warnings still show). Colours only on a terminal.
    let default_filter = match cli.command {
        Command::Demo { .. } => "info,switchyard_controller::front=warn,wasmtime=warn,cranelift=warn",
        _ => "info,wasmtime=warn,cranelift=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| default_filter.into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    // One worker thread unless TOKIO_WORKER_THREADS says otherwise: a home cluster's
    // controller routes thousands of requests a second on one core, and fewer threads mean
    // fewer cross-thread wake-ups per request (measured: about 60 µs less added latency on
    // two cores). Policy calls never hold it long: a version runs in place only after its
    // calls proved quick, and slow ones go to the policy threads (see `PolicyEngine`).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
