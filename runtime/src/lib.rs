//! sagebrush: a SageMaker Hugging Face inference runtime. Native candle pipelines, user code as
//! WebAssembly components, the SageMaker HTTP contract (see `docs/contract.md`).

/// Model artifacts: directories and safely unpacked `model.tar.gz`.
pub mod artifact;
/// `sagebrush batch`: Batch Transform jobs over local files and `s3://`, in-process.
pub mod batch;
/// Media types: decode request bodies, encode answers, negotiate.
pub mod codec;
/// Command line, environment and the checked configuration.
pub mod config;
/// Generation machinery: parameters, logits processors, stopping rules, beam search.
pub mod generate;
/// The hook chain and the types its stages share.
pub mod handler;
/// `HF_MODEL_ID`: Hub download, revision, cache, offline mode, token.
pub mod hub;
/// The inference core: typed request queue, dynamic batching, the model worker thread.
pub mod infer;
/// Source → loaded model, in the background.
pub mod load;
/// How freed memory is kept and returned (glibc's allocator).
pub mod memory;
/// Prometheus metrics and per-request timings.
pub mod metrics;
/// Architectures, heads and weights.
pub mod models;
/// The native pipelines of one model: the model directory's own (lazily) and guests' loads.
pub mod native;
/// `sagebrush package`: a SageMaker `model.tar.gz` from a model directory and a guest.
pub mod package;
/// Tasks and their pre- and post-processing.
pub mod pipelines;
/// The HTTP server.
/// Greedy and beam search over encoder-decoder models, with transformers' logits processors.
pub mod search;
pub mod server;
/// The pipeline task: names, aliases, inference from `config.json`.
pub mod task;
/// Logging.
pub mod telemetry;
/// Tokenizers from `tokenizer.json` or the slow files.
pub mod tokenizer;
/// Where user code is found in SageMaker's layout.
pub mod user_code;
/// User code as WebAssembly components: compile, sandbox, pool, call the hooks.
pub mod wasm;

use std::sync::Arc;

use config::{Cli, Command, Config};
use server::{AppState, ModelState};

/// Runs a parsed command line. Returns when the command is done (for `serve`: after a
/// graceful shutdown).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::from_serve_args(&args)?;
            serve(config).await
        }
        Command::Batch(args) => batch::run(&args).await.map_err(anyhow::Error::from),
        Command::Package(args) => {
            // `--guest` runs a cargo build, which takes a while: not on a runtime worker.
            let archive = tokio::task::spawn_blocking(move || package::run(&args)).await??;
            println!("{}", archive.display());
            Ok(())
        }
    }
}

/// Binds the port at once, loads the model in the background, serves until SIGTERM/Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening on {addr}");
    let state = AppState::new(config.server.clone());
    let loader_state = state.clone();
    let load_config = config.load.clone();
    let startup_timeout = load_config.startup_timeout;
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let load = load::load(load_config);
        let result = match startup_timeout {
            Some(limit) => tokio::time::timeout(limit, load).await.unwrap_or(Err(
                load::LoadError::StartupTimeout {
                    seconds: limit.as_secs(),
                },
            )),
            None => load.await,
        };
        match result {
            Ok(model) => {
                let took = started.elapsed();
                metrics::get().model_load_seconds.set(took.as_secs_f64());
                metrics::get().model_ready.set(1);
                tracing::info!(load_ms = took.as_millis() as u64, "model ready");
                loader_state.set_model(ModelState::Ready(Arc::new(model)));
            }
            Err(err) => {
                let chain = telemetry::error_chain(&err);
                tracing::error!(error = %chain, "model failed to load");
                loader_state.set_model(ModelState::Failed(Arc::new(err)));
            }
        }
    });
    if let Some(metrics_addr) = config.server.metrics_addr {
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {metrics_addr} for metrics: {e}"))?;
        tracing::info!(addr = %metrics_listener.local_addr()?, "metrics also served on {metrics_addr}");
        tokio::spawn(async move {
            if let Err(err) = server::serve_metrics(metrics_listener).await {
                tracing::error!(error = %err, "the metrics listener stopped");
            }
        });
    }
    server::serve(listener, state, server::shutdown::signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
