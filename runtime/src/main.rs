//! The `sagebrush` binary: parse the command line, start logging, run.

use clap::Parser;

/// candle's element-wise thread pool spins 25,000 iterations waiting for work; on small
/// machines the spinning thread takes the core the next matmul needs (BERT-base 1×128 on two
/// cores: 211 ms with the default, 169 ms with 0; `docs/candle-cpu.md`). Unless the
/// user chose a value, use 0.
const CANDLE_SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

#[allow(unsafe_code)]
fn default_candle_spin_limit() {
    if std::env::var_os(CANDLE_SPIN).is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists, so no thread
        // can read the environment concurrently.
        unsafe { std::env::set_var(CANDLE_SPIN, "0") };
    }
}

/// `serve` and `batch` cut each encoder pass of several rows into one part a core
/// (`models::parallel`), each part on one thread: candle's element-wise pool must then be off, or
/// the parts queue on its lock. Unless the user chose a value.
#[allow(unsafe_code)]
fn forward_parts_threading(cli: &sagebrush::config::Cli) {
    let parts = match &cli.command {
        sagebrush::config::Command::Serve(args) => args.forward_parts(),
        sagebrush::config::Command::Batch(args) => args.model.forward_parts(),
        sagebrush::config::Command::Package(_) => return,
    };
    if parts > 1 && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called in `main` before any other thread exists (no runtime yet).
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

fn main() -> std::process::ExitCode {
    sagebrush::memory::keep_freed();
    default_candle_spin_limit();
    let cli = sagebrush::config::Cli::parse();
    forward_parts_threading(&cli);
    sagebrush::telemetry::init(cli.log_format, &cli.log_filter());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(sagebrush::run(cli));
    // In-flight requests are finished by the graceful shutdown; do not wait for blocking work
    // that cannot be cancelled (e.g. a model load still reading its archive).
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
