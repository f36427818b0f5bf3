//! Command line and environment: the clap derive `Cli`, and the checked `Config` built from it.
//!
//! This is the only module that reads the environment (through clap's `env`). Every variable of
//! contract §2 has a flag; a bad value fails start-up with a message naming the variable and the
//! accepted values. Everything else takes `&Config` or one of its sub-structs.

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::codec::Encoding;
use crate::models::WeightDtype;
use crate::task::Task;
use crate::telemetry::ContainerLogLevel;

/// `sagebrush`: SageMaker-compatible model server for Hugging Face models.
#[derive(Debug, Parser)]
#[command(name = "sagebrush", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log output format.
    #[arg(long, global = true, env = "SAGEBRUSH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `sagebrush=debug`. Default: from
    /// `--container-log-level`, else `info`.
    #[arg(long, global = true, env = "RUST_LOG")]
    pub log_level: Option<String>,
    /// Log level the SageMaker SDK passes (`container_log_level`): a Python logging level
    /// number (10 debug, 20 info, 30 warning, 40 error, 50 critical) or one of those names.
    /// `--log-level` wins when both are set.
    #[arg(long, global = true, env = "SAGEMAKER_CONTAINER_LOG_LEVEL",
          value_parser = Checked(ContainerLogLevel::parse))]
    pub container_log_level: Option<ContainerLogLevel>,
}

impl Cli {
    /// The tracing filter to install: `--log-level`, else the SageMaker container log level,
    /// else `info`.
    pub fn log_filter(&self) -> String {
        match (&self.log_level, self.container_log_level) {
            (Some(filter), _) if !filter.trim().is_empty() => filter.clone(),
            (_, Some(level)) => level.filter().to_owned(),
            _ => "info".to_owned(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model over the SageMaker HTTP contract (`GET /ping`, `POST /invocations`).
    Serve(Box<ServeArgs>),
    /// Write a SageMaker `model.tar.gz` from a model directory and an optional guest `.wasm`.
    Package(PackageArgs),
    /// Run a Batch Transform job over local files or an `s3://` prefix, in-process.
    Batch(Box<BatchArgs>),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `sagebrush serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on; SageMaker sets it for the container. 0 picks a free port.
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080,
          value_parser = number(0, u16::MAX, "a port number"))]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "SAGEBRUSH_HOST", default_value = "0.0.0.0")]
    pub host: std::net::IpAddr,
    /// SageMaker base directory; the model is read from `<base-dir>/model`.
    #[arg(long, env = "SAGEMAKER_BASE_DIR", default_value = "/opt/ml")]
    pub base_dir: PathBuf,
    /// Model to serve: a directory or a `model.tar.gz` file. Default: `<base-dir>/model`.
    #[arg(long, env = "SAGEBRUSH_MODEL")]
    pub model: Option<String>,
    /// Seconds one invocation may take before it is answered with 504.
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", value_parser = seconds())]
    pub timeout_seconds: Option<u64>,
    /// Older name of `--timeout-seconds`; `SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS` wins when both are set.
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_TIMEOUT", hide = true, value_parser = seconds())]
    pub timeout_legacy: Option<u64>,
    /// Seconds the model may take to load before the load is declared failed (0: no limit).
    #[arg(long, env = "SAGEMAKER_STARTUP_TIMEOUT", default_value_t = 0, value_parser = number::<u64>(0, 86_400, "a whole number of seconds"))]
    pub startup_timeout: u64,
    /// Largest request body in MiB; larger bodies get 413.
    #[arg(long, env = "SAGEMAKER_MAX_PAYLOAD_IN_MB", default_value_t = 6, value_parser = number::<u64>(1, 102_400, "a whole number of MiB"))]
    pub max_payload_mb: u64,
    /// User-code instances: guest hook calls that run at once (and `MaxConcurrentTransforms`).
    /// Default: CPU count.
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_WORKERS", value_parser = number::<usize>(1, 1024, "a whole number"))]
    pub workers: Option<usize>,
    /// Invocations admitted at once (reading, user code, waiting for or in the model); one more
    /// gets 429 before its body is read.
    #[arg(long, env = "SAGEBRUSH_QUEUE_SIZE", default_value_t = 256, value_parser = number::<usize>(1, 1_000_000, "a whole number"))]
    pub queue_size: usize,
    /// Also serve `GET /metrics` on this port (it is always on the main port too); unset: no
    /// second listener.
    #[arg(long, env = "SAGEBRUSH_METRICS_PORT", value_parser = number::<u16>(1, 65_535, "a port number"))]
    pub metrics_port: Option<u16>,
    /// Most inputs (rows) run through the model in one forward pass.
    #[arg(long, env = "SAGEBRUSH_MAX_BATCH_SIZE", default_value_t = 32, value_parser = number::<usize>(1, 4096, "a whole number"))]
    pub max_batch_size: usize,
    /// Most padded tokens (rows × longest row) in one forward pass.
    #[arg(long, env = "SAGEBRUSH_MAX_BATCH_TOKENS", default_value_t = 16_384, value_parser = number::<usize>(1, 16_777_216, "a whole number of tokens"))]
    pub max_batch_tokens: usize,
    /// Milliseconds the model worker waits for more requests to fill a batch (0: it batches
    /// what arrived while the previous forward pass ran).
    #[arg(long, env = "SAGEBRUSH_MAX_BATCH_WAIT_MS", default_value_t = 0, value_parser = number::<u64>(0, 60_000, "a whole number of milliseconds"))]
    pub max_batch_wait_ms: u64,
    /// How the native model's linear-layer weights are stored and multiplied: `float32` (exact,
    /// the default) or `bfloat16` (opt-in: half the weight memory and faster kernels, answers
    /// drift slightly; README "Weight types"). Aliases: f32, fp32, bf16.
    #[arg(long, env = "SAGEBRUSH_DTYPE", default_value = "float32", value_parser = Checked(parse_dtype))]
    pub dtype: WeightDtype,
    /// Parts each encoder forward pass of two or more rows is cut into, run at once, one a core,
    /// each on one thread (no synchronisation inside operations; a pass of one row uses every
    /// core inside its operations). Default: the CPU count; 1 runs every pass with all cores
    /// inside each operation.
    #[arg(long, env = "SAGEBRUSH_FORWARD_PARTS", value_parser = number::<usize>(1, 1024, "a whole number"))]
    pub forward_parts: Option<usize>,
    /// Test-only control directory of the model worker (built with the `test-gate` feature).
    #[cfg(feature = "test-gate")]
    #[arg(long, env = "SAGEBRUSH_TEST_GATE_DIR", hide = true)]
    pub test_gate_dir: Option<PathBuf>,
    /// Response media type when the request has no `Accept` or `*/*`.
    #[arg(long, env = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", default_value = "application/json",
          value_parser = Checked(parse_default_accept))]
    pub default_accept: Encoding,
    /// Batch Transform job: reported by `/execution-parameters`. Accepts true/false.
    #[arg(long, env = "SAGEMAKER_BATCH", default_value_t = false, action = ArgAction::Set,
          value_parser = BOOL)]
    pub batch: bool,
    /// Batch Transform strategy reported by `/execution-parameters`.
    #[arg(long, env = "SAGEMAKER_BATCH_STRATEGY", default_value = "MULTI_RECORD",
          value_parser = Checked(parse_batch_strategy))]
    pub batch_strategy: BatchStrategy,
    /// `MaxConcurrentTransforms` reported by `/execution-parameters`. Default: `--workers`.
    #[arg(long, env = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", value_parser = number::<usize>(1, 1024, "a whole number"))]
    pub max_concurrent_transforms: Option<usize>,
    /// Multi-model endpoint mode (not implemented yet: `true` fails start-up).
    #[arg(long, env = "SAGEMAKER_MULTI_MODEL", default_value_t = false, action = ArgAction::Set,
          value_parser = BOOL)]
    pub multi_model: bool,
    /// Pipeline task; default: inferred from `config.json` `architectures[0]`.
    #[arg(long, env = "HF_TASK", value_parser = Checked(parse_task))]
    pub task: Option<Task>,
    /// Allow code shipped with the model. Accepts y/yes/t/true/on/1 and n/no/f/false/off/0.
    #[arg(long, env = "HF_TRUST_REMOTE_CODE", default_value_t = false, action = ArgAction::Set,
          value_parser = BOOL)]
    pub trust_remote_code: bool,
    /// User code file inside the code directory. Empty (as the SageMaker SDK sends it when
    /// there is no entry point) means the default.
    #[arg(long, env = "SAGEMAKER_PROGRAM", default_value = "inference.wasm")]
    pub program: String,
    /// Directory of the user code as the SageMaker SDK names it (`source_dir`): a path or a
    /// `file://` URI; searched before `<model>/code` and `<base-dir>/code`. An `s3://` URI is
    /// refused: ship the code in `model.tar.gz` under `code/`.
    #[arg(long, env = "SAGEMAKER_SUBMIT_DIRECTORY")]
    pub submit_directory: Option<String>,
    /// AWS region the endpoint runs in (set by SageMaker); the region of `s3://` model URLs when
    /// `AWS_REGION` and `AWS_DEFAULT_REGION` are unset.
    #[arg(long, env = "SAGEMAKER_REGION")]
    pub region: Option<String>,
    /// Accepted for compatibility with the SageMaker SDK (true/false); sagebrush sends no
    /// CloudWatch metrics of its own (SageMaker's endpoint metrics still appear in CloudWatch;
    /// `--metrics-port` serves Prometheus metrics).
    #[arg(long, env = "SAGEMAKER_ENABLE_CLOUDWATCH_METRICS", default_value_t = false,
          action = ArgAction::Set, value_parser = BOOL)]
    pub enable_cloudwatch_metrics: bool,
    /// Memory limit of one guest instance, in MiB.
    #[arg(long, env = "SAGEBRUSH_GUEST_MEMORY_MB", default_value_t = 512, value_parser = number::<u64>(1, 4096, "a whole number of MiB"))]
    pub guest_memory_mb: u64,
    /// Time limit of one guest hook call, in milliseconds.
    #[arg(long, env = "SAGEBRUSH_GUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = number::<u64>(1, 3_600_000, "a whole number of milliseconds"))]
    pub guest_timeout_ms: u64,
    /// Where compiled guests are cached. Default: `$XDG_CACHE_HOME/sagebrush` or `~/.cache/sagebrush`.
    #[arg(long, env = "SAGEBRUSH_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Largest total size of an unpacked `model.tar.gz`, in MiB.
    #[arg(long, env = "SAGEBRUSH_MAX_UNPACKED_MB", default_value_t = 65_536, value_parser = number::<u64>(1, 16_777_216, "a whole number of MiB"))]
    pub max_unpacked_mb: u64,
    #[command(flatten)]
    pub hub: HubArgs,
}

impl ServeArgs {
    /// `--forward-parts`, or the CPU count.
    pub fn forward_parts(&self) -> usize {
        self.forward_parts.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// Hub download flags (contract §3).
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Hub repository to download at start-up instead of reading `<base-dir>/model`.
    #[arg(long, env = "HF_MODEL_ID")]
    pub model_id: Option<String>,
    /// Branch, tag or commit of `--model-id`.
    #[arg(long, env = "HF_MODEL_REVISION")]
    pub revision: Option<String>,
    /// Bearer token for private repositories (never logged, never given to user code).
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Older name of `--token`; `HF_TOKEN` wins when both are set.
    #[arg(long, env = "HF_API_TOKEN", hide = true, hide_env_values = true)]
    pub api_token: Option<String>,
    /// Hub base URL.
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub hf_endpoint: String,
    /// Hugging Face home; the download cache is `<hf-home>/hub`. Default: `~/.cache/huggingface`.
    #[arg(long, env = "HF_HOME")]
    pub hf_home: Option<PathBuf>,
    /// Serve from the cache only; never contact the Hub.
    #[arg(long, env = "HF_HUB_OFFLINE", default_value_t = false, action = ArgAction::Set,
          value_parser = BOOL)]
    pub offline: bool,
}

/// Flags of `sagebrush package`.
#[derive(Debug, Default, Args)]
pub struct PackageArgs {
    /// Model directory whose files go to the archive root.
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Guest component to ship as `code/inference.wasm`.
    #[arg(long, value_name = "FILE.wasm", conflicts_with = "guest")]
    pub code: Option<PathBuf>,
    /// Guest crate to build (`cargo build --target wasm32-wasip2 --release`, run in DIR) and
    /// ship as `code/inference.wasm`; excludes `--code`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["python", "python_dir"])]
    pub guest: Option<PathBuf>,
    /// Python hooks (`inference.py`) to compile with componentize-py and ship as
    /// `code/inference.wasm`.
    #[arg(long, value_name = "FILE.py", conflicts_with_all = ["code", "python_dir"])]
    pub python: Option<PathBuf>,
    /// A folder of Python modules with the hooks in `inference.py`, compiled like `--python`.
    #[arg(long, value_name = "DIR", conflicts_with = "code")]
    pub python_dir: Option<PathBuf>,
    /// componentize-py to compile Python with. Default: the pinned release, installed from
    /// PyPI on first use into a venv under the cache dir.
    #[arg(long, env = "SAGEBRUSH_COMPONENTIZE_PY", value_name = "PROGRAM")]
    pub componentize_py: Option<PathBuf>,
    /// Cache of componentize-py and compiled Python hooks. Default: `$XDG_CACHE_HOME/sagebrush`
    /// or `~/.cache/sagebrush`.
    #[arg(long, env = "SAGEBRUSH_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Archive to write.
    #[arg(short, long, default_value = "model.tar.gz")]
    pub output: PathBuf,
}

/// Flags of `sagebrush batch` (contract §8). The model flags are those of `serve`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Input: a file, a directory (read recursively) or an `s3://bucket/prefix`.
    #[arg(long)]
    pub input: String,
    /// Output: a directory or an `s3://bucket/prefix`; each input gets `<input name>.out`.
    #[arg(long)]
    pub output: String,
    /// How a file is cut into records: `Line` (one per line) or `None` (the whole file).
    #[arg(long, value_enum, default_value_t = SplitType::Line, ignore_case = true)]
    pub split_type: SplitType,
    /// One record per request, or as many as fit in `--max-payload-mb` (and `--max-records`).
    #[arg(long, value_enum, default_value_t = Strategy::MultiRecord, ignore_case = true)]
    pub strategy: Strategy,
    /// Most records in one MultiRecord request.
    #[arg(long, default_value_t = 64, value_parser = number::<usize>(1, 1_000_000, "a whole number"))]
    pub max_records: usize,
    /// Requests in flight at once. Default: `SAGEMAKER_MAX_CONCURRENT_TRANSFORMS`, else `--workers`.
    #[arg(long, value_parser = number::<usize>(1, 1024, "a whole number"))]
    pub concurrency: Option<usize>,
    /// How outputs are joined in a file: `Line` (a newline after each record) or `None`.
    #[arg(long, value_enum, default_value_t = AssembleWith::Line, ignore_case = true)]
    pub assemble_with: AssembleWith,
    /// Media type of the records (`application/jsonlines`, `text/csv` with a header row, ...).
    #[arg(long, default_value = "application/jsonlines")]
    pub content_type: String,
    /// Media type of the answers.
    #[arg(long, default_value = "application/jsonlines")]
    pub accept: String,
    /// What a bad record does: `fail` its file (no output, non-zero exit) or write a `placeholder` error line.
    #[arg(long, value_enum, default_value_t = OnError::Fail, ignore_case = true)]
    pub on_error: OnError,
    /// JSONPath selecting the part of each input record sent to the model (e.g. `$.features`, `$[1:]`).
    #[arg(long)]
    pub input_filter: Option<String>,
    /// JSONPath selecting the part of each (joined) output record written (e.g. `$['id','SageMakerOutput']`).
    #[arg(long)]
    pub output_filter: Option<String>,
    /// `Input` joins each input record with its output; `None` writes the output alone.
    #[arg(long, value_enum, default_value_t = JoinSource::None, ignore_case = true)]
    pub join_source: JoinSource,
    /// Model, user-code and limit flags, as for `serve`.
    #[command(flatten)]
    pub model: ServeArgs,
}

/// `--split-type` (SageMaker's `SplitType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitType {
    /// One record per line.
    #[value(name = "Line")]
    Line,
    /// The whole file is one record.
    #[value(name = "None")]
    None,
}

/// `--strategy` (SageMaker's `BatchStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// One record per request.
    #[value(name = "SingleRecord")]
    SingleRecord,
    /// Several records per request.
    #[value(name = "MultiRecord")]
    MultiRecord,
}

/// `--assemble-with` (SageMaker's `AssembleWith`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AssembleWith {
    /// A newline after each record's output.
    #[value(name = "Line")]
    Line,
    /// Outputs concatenated as they are.
    #[value(name = "None")]
    None,
}

/// `--on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// A bad record fails its file: no output file, and the job exits non-zero.
    #[value(name = "fail")]
    Fail,
    /// A bad record's output line is an error object; the job goes on.
    #[value(name = "placeholder")]
    Placeholder,
}

/// `--join-source` (SageMaker's `JoinSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JoinSource {
    /// Each output record is joined with its input record.
    #[value(name = "Input")]
    Input,
    /// The output alone.
    #[value(name = "None")]
    None,
}

/// Batch Transform strategy (contract §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStrategy {
    /// One record per request.
    SingleRecord,
    /// Several records per request.
    MultiRecord,
}

impl BatchStrategy {
    /// The name SageMaker uses in `/execution-parameters`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SingleRecord => "SINGLE_RECORD",
            Self::MultiRecord => "MULTI_RECORD",
        }
    }
}

/// A secret string whose `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; call only where it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A local directory or `model.tar.gz` file.
    Path(PathBuf),
    /// An `s3://` or `https://` URL of a `model.tar.gz`.
    Url(String),
    /// A Hub repository (`HF_MODEL_ID`).
    Hub(HubConfig),
}

/// Hub download settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Repository id, e.g. `distilbert/distilbert-base-uncased`.
    pub model_id: String,
    /// Revision; `main` when unset.
    pub revision: String,
    /// Bearer token.
    pub token: Option<Secret>,
    /// Base URL of the Hub.
    pub endpoint: String,
    /// Cache root laid out like huggingface_hub's (`<HF_HOME>/hub`).
    pub cache_dir: PathBuf,
    /// Never contact the Hub.
    pub offline: bool,
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub addr: std::net::SocketAddr,
    /// Time limit of one invocation.
    pub timeout: Duration,
    /// Largest request body in bytes.
    pub max_payload_bytes: usize,
    /// User-code instances (guest hook calls at once).
    pub workers: usize,
    /// Invocations admitted at once; one more is 429.
    pub queue_size: usize,
    /// Default response encoding.
    pub default_accept: Encoding,
    /// Reported by `/execution-parameters`.
    pub max_concurrent_transforms: usize,
    /// Reported by `/execution-parameters`.
    pub batch_strategy: BatchStrategy,
    /// Reported by `/execution-parameters`.
    pub batch: bool,
    /// A second listener for `/metrics` only.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Limits of guest (WebAssembly) user code.
#[derive(Debug, Clone)]
pub struct WasmLimits {
    /// Memory per instance in bytes.
    pub memory_bytes: usize,
    /// Time per hook call.
    pub call_timeout: Duration,
    /// Instances kept warm.
    pub instances: usize,
    /// Compile cache directory.
    pub cache_dir: PathBuf,
}

/// A directory that may hold user code (contract §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeDir {
    /// `code/` inside the model directory (known once the model is fetched or unpacked).
    Model,
    /// A directory of its own, e.g. `/opt/ml/code`.
    Path(PathBuf),
}

/// Model loading settings.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where the model comes from.
    pub source: ModelSource,
    /// Private working directory (unpacked archives, downloads).
    pub work_dir: PathBuf,
    /// `HF_TASK`.
    pub task: Option<Task>,
    /// `SAGEMAKER_PROGRAM`.
    pub program: String,
    /// Where user code is looked for, in order: `SAGEMAKER_SUBMIT_DIRECTORY` (when set), the
    /// model's `code/`, `<base-dir>/code` (where the SDK's local mode mounts `source_dir`).
    pub code_dirs: Vec<CodeDir>,
    /// `SAGEMAKER_REGION`: the S3 region when the AWS environment names none.
    pub region: Option<String>,
    /// Largest unpacked archive size in bytes.
    pub max_unpacked_bytes: u64,
    /// Most inputs per forward pass.
    pub max_batch_size: usize,
    /// Most padded tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Parts an encoder's forward pass is cut into, run at once (1: none; `sagebrush batch`
    /// uses one a core, see `models::parallel`).
    pub data_parallel: usize,
    /// How long the worker waits to fill a batch.
    pub max_batch_wait: Duration,
    /// How the native model's weights are stored (`--dtype`).
    pub dtype: WeightDtype,
    /// Requests that may wait for the model worker.
    pub queue_size: usize,
    /// One forward pass longer than this makes `/ping` report the worker wedged (the
    /// invocation time limit).
    pub wedged_after: Duration,
    /// Test-only control directory of the model worker.
    #[cfg(feature = "test-gate")]
    pub test_gate_dir: Option<PathBuf>,
    /// Load time limit.
    pub startup_timeout: Option<Duration>,
    /// Guest limits.
    pub wasm: WasmLimits,
}

/// The checked configuration of `sagebrush serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP settings.
    pub server: ServerConfig,
    /// Model settings.
    pub load: LoadConfig,
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Multi-model mode is not built yet.
    #[error(
        "`SAGEMAKER_MULTI_MODEL=true` (multi-model endpoints) is not supported yet; unset it or set it to false"
    )]
    MultiModelUnsupported,
    /// `--model` and `HF_MODEL_ID` both given.
    #[error("`--model` ({model}) and `HF_MODEL_ID` ({model_id}) are both set; choose one")]
    TwoSources {
        /// `--model`.
        model: String,
        /// `HF_MODEL_ID`.
        model_id: String,
    },
    /// `SAGEMAKER_SUBMIT_DIRECTORY` names code that is not on this machine.
    #[error(
        "`SAGEMAKER_SUBMIT_DIRECTORY` is {uri}: code is not downloaded from there; ship it in model.tar.gz under code/ (the SageMaker SDK does this when it repacks the model) or mount it at /opt/ml/code"
    )]
    RemoteSubmitDirectory {
        /// The URI given.
        uri: String,
    },
}

impl Config {
    /// Checks the parsed flags and builds the typed configuration.
    pub fn from_serve_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        if args.multi_model {
            return Err(ConfigError::MultiModelUnsupported);
        }
        let workers = args.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        // SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS wins over the older SAGEMAKER_MODEL_SERVER_TIMEOUT.
        // In a Batch Transform container a MultiRecord request holds many records: the default
        // is then SageMaker's own invocation timeout for transform jobs (contract §8).
        let default_timeout = if args.batch {
            BATCH_TIMEOUT_SECONDS
        } else {
            60
        };
        let timeout = args
            .timeout_seconds
            .or(args.timeout_legacy)
            .unwrap_or(default_timeout);
        let source = match (&args.model, &args.hub.model_id) {
            (Some(model), Some(model_id)) => {
                return Err(ConfigError::TwoSources {
                    model: model.clone(),
                    model_id: model_id.clone(),
                });
            }
            (None, Some(model_id)) => ModelSource::Hub(hub_config(&args.hub, model_id)),
            (Some(model), None)
                if model.starts_with("s3://")
                    || model.starts_with("https://")
                    || model.starts_with("http://") =>
            {
                ModelSource::Url(model.clone())
            }
            (Some(model), None) => ModelSource::Path(PathBuf::from(model)),
            (None, None) => ModelSource::Path(args.base_dir.join("model")),
        };
        if args.trust_remote_code {
            // Validated (contract §2) but without effect: transformers uses it to run Python
            // modeling code from the Hub, and sagebrush never runs Python. Not kept in
            // `LoadConfig`, which nothing would read it from.
            tracing::warn!(
                "HF_TRUST_REMOTE_CODE=true has no effect: sagebrush runs no Python model code (user code runs as code/inference.wasm)"
            );
        }
        let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
        let work_dir = std::env::temp_dir().join(format!("sagebrush-{}", std::process::id()));
        Ok(Self {
            server: ServerConfig {
                addr: std::net::SocketAddr::new(args.host, args.port),
                timeout: Duration::from_secs(timeout),
                max_payload_bytes: usize::try_from(args.max_payload_mb * 1024 * 1024)
                    .unwrap_or(usize::MAX),
                workers,
                queue_size: args.queue_size,
                default_accept: args.default_accept,
                // Never more than can wait for the model: beyond the queue, requests get 429.
                max_concurrent_transforms: args
                    .max_concurrent_transforms
                    .unwrap_or(workers)
                    .min(args.queue_size),
                batch_strategy: args.batch_strategy,
                batch: args.batch,
                metrics_addr: args
                    .metrics_port
                    .map(|port| std::net::SocketAddr::new(args.host, port)),
            },
            load: LoadConfig {
                source,
                work_dir,
                task: args.task.clone(),
                program: program_name(&args.program),
                code_dirs: code_dirs(args)?,
                region: args.region.clone().filter(|r| !r.trim().is_empty()),
                max_unpacked_bytes: args.max_unpacked_mb * 1024 * 1024,
                max_batch_size: args.max_batch_size,
                max_batch_tokens: args.max_batch_tokens,
                data_parallel: args.forward_parts(),
                max_batch_wait: Duration::from_millis(args.max_batch_wait_ms),
                dtype: args.dtype,
                queue_size: args.queue_size,
                wedged_after: Duration::from_secs(timeout),
                #[cfg(feature = "test-gate")]
                test_gate_dir: args.test_gate_dir.clone(),
                startup_timeout: (args.startup_timeout > 0)
                    .then(|| Duration::from_secs(args.startup_timeout)),
                wasm: WasmLimits {
                    memory_bytes: usize::try_from(args.guest_memory_mb * 1024 * 1024)
                        .unwrap_or(usize::MAX),
                    call_timeout: Duration::from_millis(args.guest_timeout_ms),
                    instances: workers,
                    cache_dir: cache_dir.join("wasm"),
                },
            },
        })
    }
}

/// SageMaker's default `InvocationsTimeoutInSeconds` for transform jobs.
const BATCH_TIMEOUT_SECONDS: u64 = 600;

/// `SAGEMAKER_PROGRAM`, with the SDK's empty value meaning the default.
fn program_name(program: &str) -> String {
    match program.trim() {
        "" => "inference.wasm".to_owned(),
        name => name.to_owned(),
    }
}

/// The user-code search order of [`LoadConfig::code_dirs`].
fn code_dirs(args: &ServeArgs) -> Result<Vec<CodeDir>, ConfigError> {
    let mut dirs = Vec::new();
    match args.submit_directory.as_deref().map(str::trim) {
        None | Some("") => {}
        Some(uri) if uri.contains("://") && !uri.starts_with("file://") => {
            return Err(ConfigError::RemoteSubmitDirectory {
                uri: uri.to_owned(),
            });
        }
        Some(uri) => dirs.push(CodeDir::Path(PathBuf::from(
            uri.strip_prefix("file://").unwrap_or(uri),
        ))),
    }
    dirs.push(CodeDir::Model);
    let base_code = CodeDir::Path(args.base_dir.join("code"));
    if !dirs.contains(&base_code) {
        dirs.push(base_code);
    }
    Ok(dirs)
}

fn hub_config(hub: &HubArgs, model_id: &str) -> HubConfig {
    let hf_home = hub
        .hf_home
        .clone()
        .unwrap_or_else(|| home_dir().join(".cache/huggingface"));
    // HF_TOKEN wins over the older HF_API_TOKEN.
    let token = hub
        .token
        .clone()
        .or_else(|| hub.api_token.clone())
        .filter(|t| !t.is_empty());
    HubConfig {
        model_id: model_id.to_owned(),
        revision: hub.revision.clone().unwrap_or_else(|| "main".to_owned()),
        token: token.map(Secret),
        endpoint: hub.hf_endpoint.trim_end_matches('/').to_owned(),
        cache_dir: hf_home.join("hub"),
        offline: hub.offline,
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// `$XDG_CACHE_HOME/sagebrush`, else `~/.cache/sagebrush`: compiled guests, componentize-py.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| home_dir().join(".cache"), PathBuf::from)
        .join("sagebrush")
}

/// Accepted spellings of a boolean variable (contract §2).
const TRUTHY: [&str; 6] = ["y", "yes", "t", "true", "on", "1"];
const FALSY: [&str; 6] = ["n", "no", "f", "false", "off", "0"];

/// The error of a bad value: names the argument's environment variable (written once, in its
/// `env = ".."` attribute) and its flag, states `rule` and shows the value given.
fn invalid(cmd: &clap::Command, arg: Option<&clap::Arg>, rule: &str, value: &str) -> clap::Error {
    let env = arg
        .and_then(clap::Arg::get_env)
        .map(|e| e.to_string_lossy().into_owned());
    let flag = arg.and_then(clap::Arg::get_long).map(|l| format!("--{l}"));
    let name = match (env, flag) {
        (Some(env), Some(flag)) => format!("`{env}` (`{flag}`)"),
        (Some(name), None) | (None, Some(name)) => format!("`{name}`"),
        (None, None) => "the value".to_owned(),
    };
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("{name} {rule}, got {value:?}\n"),
    )
    .with_cmd(cmd)
}

/// A value parser from a function that returns the value, or the rule the text broke
/// (e.g. "must be SINGLE_RECORD or MULTI_RECORD"); [`invalid`] adds the variable's name.
#[derive(Clone, Copy)]
struct Checked<F>(F);

impl<T, F> TypedValueParser for Checked<F>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        (self.0)(&text).map_err(|rule| invalid(cmd, arg, &rule, &text))
    }
}

/// A whole number from `min` to `max`; `what` says what it counts ("a whole number of MiB").
fn number<T>(
    min: T,
    max: T,
    what: &'static str,
) -> Checked<impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static,
{
    Checked(move |text: &str| match text.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("must be {what} from {min} to {max}")),
    })
}

/// A checked parser of a truth value.
type BoolParser = Checked<fn(&str) -> Result<bool, String>>;
/// A boolean variable (contract §2's truth values).
const BOOL: BoolParser = Checked(parse_bool);

/// A time limit in whole seconds, shared by the two names of the invocation timeout.
fn seconds() -> impl TypedValueParser<Value = u64> {
    number(1u64, 86_400, "a whole number of seconds")
}

fn parse_bool(value: &str) -> Result<bool, String> {
    let lower = value.trim().to_ascii_lowercase();
    if TRUTHY.contains(&lower.as_str()) {
        Ok(true)
    } else if FALSY.contains(&lower.as_str()) {
        Ok(false)
    } else {
        Err(
            "must be one of y, yes, t, true, on, 1 or n, no, f, false, off, 0 (any case)"
                .to_owned(),
        )
    }
}

fn parse_batch_strategy(value: &str) -> Result<BatchStrategy, String> {
    match value.trim().to_ascii_uppercase().replace('_', "").as_str() {
        "SINGLERECORD" => Ok(BatchStrategy::SingleRecord),
        "MULTIRECORD" => Ok(BatchStrategy::MultiRecord),
        _ => Err("must be SINGLE_RECORD or MULTI_RECORD".to_owned()),
    }
}

fn parse_default_accept(value: &str) -> Result<Encoding, String> {
    Encoding::from_media_type(value)
        .ok_or_else(|| format!("must be one of {}", Encoding::ACCEPTED.join(", ")))
}

fn parse_dtype(value: &str) -> Result<WeightDtype, String> {
    WeightDtype::parse(value).ok_or_else(|| "must be float32 or bfloat16".to_owned())
}

fn parse_task(value: &str) -> Result<Task, String> {
    Task::parse(value).ok_or_else(|| format!("must be one of {}", Task::ACCEPTED.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start-up error of `serve` with `flag value`.
    fn serve_error(flag: &str, value: &str) -> String {
        Cli::try_parse_from(["sagebrush", "serve", flag, value])
            .expect_err("a bad value fails")
            .to_string()
    }

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let args = ["sagebrush", "serve"].iter().chain(extra);
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Serve(args) => *args,
            Command::Package(_) | Command::Batch(_) => unreachable!("serve was asked for"),
        }
    }

    #[test]
    fn trust_remote_code_truth_table() {
        for v in ["y", "YES", "t", "True", "on", "1"] {
            assert!(
                serve_args(&["--trust-remote-code", v]).trust_remote_code,
                "{v}"
            );
        }
        for v in ["n", "No", "F", "false", "OFF", "0"] {
            assert!(
                !serve_args(&["--trust-remote-code", v]).trust_remote_code,
                "{v}"
            );
        }
        let err = serve_error("--trust-remote-code", "maybe");
        assert!(
            err.contains("`HF_TRUST_REMOTE_CODE` (`--trust-remote-code`)")
                && err.contains("yes")
                && err.contains("off")
                && err.contains("\"maybe\""),
            "{err}"
        );
    }

    #[test]
    fn bad_port_names_the_variable_and_the_range() {
        let err = serve_error("--port", "http");
        assert!(
            err.contains("`SAGEMAKER_BIND_TO_PORT` (`--port`) must be a port number from 0 to 65535, got \"http\""),
            "{err}"
        );
    }

    #[test]
    fn every_checked_flag_names_its_own_variable() {
        for (flag, value, var) in [
            (
                "--timeout-seconds",
                "0",
                "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS",
            ),
            ("--timeout-legacy", "x", "SAGEMAKER_MODEL_SERVER_TIMEOUT"),
            ("--max-payload-mb", "lots", "SAGEMAKER_MAX_PAYLOAD_IN_MB"),
            ("--workers", "0", "SAGEMAKER_MODEL_SERVER_WORKERS"),
            ("--offline", "perhaps", "HF_HUB_OFFLINE"),
            ("--task", "sentiment", "HF_TASK"),
            (
                "--default-accept",
                "text/html",
                "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
            ),
        ] {
            let err = serve_error(flag, value);
            assert!(
                err.contains(&format!("`{var}` (`{flag}`)")),
                "{flag}: {err}"
            );
            assert!(err.contains(&format!("{value:?}")), "{flag}: {err}");
        }
    }

    #[test]
    fn dtype_takes_its_names_and_aliases_in_any_case() {
        assert_eq!(serve_args(&[]).dtype, WeightDtype::F32);
        for (name, dtype) in [
            ("bfloat16", WeightDtype::Bf16),
            ("BF16", WeightDtype::Bf16),
            ("fp32", WeightDtype::F32),
            ("Float32", WeightDtype::F32),
        ] {
            assert_eq!(serve_args(&["--dtype", name]).dtype, dtype, "{name}");
        }
        let err = serve_error("--dtype", "float16");
        assert!(err.contains("float32 or bfloat16"), "{err}");
    }

    #[test]
    fn batch_strategy_accepts_both_spellings() {
        assert_eq!(
            serve_args(&["--batch-strategy", "MultiRecord"]).batch_strategy,
            BatchStrategy::MultiRecord
        );
        assert_eq!(
            serve_args(&["--batch-strategy", "SINGLE_RECORD"]).batch_strategy,
            BatchStrategy::SingleRecord
        );
        let err = serve_error("--batch-strategy", "all");
        assert!(
            err.contains("`SAGEMAKER_BATCH_STRATEGY`") && err.contains("MULTI_RECORD"),
            "{err}"
        );
    }

    #[test]
    fn batch_parses_sagemaker_spellings() {
        let cli = Cli::try_parse_from([
            "sagebrush",
            "batch",
            "--input",
            "in",
            "--output",
            "s3://b/out",
            "--strategy",
            "SingleRecord",
            "--split-type",
            "none",
            "--on-error",
            "placeholder",
            "--join-source",
            "Input",
        ])
        .expect("parses");
        let Command::Batch(args) = cli.command else {
            panic!("not batch")
        };
        assert_eq!(args.strategy, Strategy::SingleRecord);
        assert_eq!(args.split_type, SplitType::None);
        assert_eq!(args.on_error, OnError::Placeholder);
        assert_eq!(args.join_source, JoinSource::Input);
        assert_eq!(args.assemble_with, AssembleWith::Line);
        let bad = Cli::try_parse_from([
            "sagebrush",
            "batch",
            "--input",
            "a",
            "--output",
            "b",
            "--strategy",
            "All",
        ]);
        assert!(bad.unwrap_err().to_string().contains("MultiRecord"));
    }

    #[test]
    fn batch_container_defaults() {
        let parse = |env_batch: &str| {
            let cli = Cli::try_parse_from([
                "sagebrush",
                "serve",
                "--batch",
                env_batch,
                "--queue-size",
                "4",
                "--max-concurrent-transforms",
                "9",
            ])
            .expect("parses");
            let Command::Serve(args) = cli.command else {
                panic!("not serve")
            };
            Config::from_serve_args(&args).expect("config")
        };
        let batch = parse("true");
        assert_eq!(
            batch.server.timeout,
            Duration::from_secs(BATCH_TIMEOUT_SECONDS)
        );
        assert_eq!(batch.server.max_concurrent_transforms, 4);
        assert_eq!(parse("false").server.timeout, Duration::from_secs(60));
    }

    #[test]
    fn bare_serve_parses() {
        let cli = Cli::try_parse_from(["sagebrush", "serve", "--port", "0"]).expect("parses");
        assert!(matches!(cli.command, Command::Serve(_)));
    }

    #[test]
    fn log_filter_prefers_rust_log_then_the_container_level() {
        let cli = |args: &[&str]| Cli::try_parse_from(args).expect("parses");
        let both = cli(&[
            "sagebrush",
            "--log-level",
            "debug",
            "--container-log-level",
            "40",
            "serve",
        ]);
        assert_eq!(both.log_filter(), "debug");
        let sagemaker = cli(&["sagebrush", "--container-log-level", "40", "serve"]);
        assert_eq!(sagemaker.log_filter(), "error");
        assert_eq!(cli(&["sagebrush", "serve"]).log_filter(), "info");
        let err = serve_error("--container-log-level", "loud");
        assert!(
            err.contains("`SAGEMAKER_CONTAINER_LOG_LEVEL`") && err.contains("\"loud\""),
            "{err}"
        );
    }

    fn serve_config(extra: &[&str]) -> Result<Config, ConfigError> {
        Config::from_serve_args(&serve_args(extra))
    }

    #[test]
    fn code_is_searched_in_the_submit_directory_then_the_model_then_the_base_dir() {
        let path = |p: &str| CodeDir::Path(PathBuf::from(p));
        let cfg = serve_config(&["--base-dir", "/b", "--submit-directory", "file:///src"])
            .expect("valid");
        let expected = vec![path("/src"), CodeDir::Model, path("/b/code")];
        assert_eq!(cfg.load.code_dirs, expected);
        let local =
            serve_config(&["--base-dir", "/b", "--submit-directory", "/b/code"]).expect("valid");
        assert_eq!(local.load.code_dirs, vec![path("/b/code"), CodeDir::Model]);
        let none = serve_config(&["--base-dir", "/b", "--submit-directory", ""]).expect("valid");
        assert_eq!(none.load.code_dirs, vec![CodeDir::Model, path("/b/code")]);
    }

    #[test]
    fn a_remote_submit_directory_is_refused() {
        let err = serve_config(&["--submit-directory", "s3://b/src.tar.gz"]).unwrap_err();
        assert!(
            matches!(err, ConfigError::RemoteSubmitDirectory { .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_program_means_the_default() {
        let cfg = serve_config(&["--program", ""]).expect("valid");
        assert_eq!(cfg.load.program, "inference.wasm");
    }

    #[test]
    fn sdk_environment_is_accepted() {
        let cfg = serve_config(&[
            "--region",
            "eu-west-1",
            "--enable-cloudwatch-metrics",
            "False",
        ])
        .expect("valid");
        assert_eq!(cfg.load.region.as_deref(), Some("eu-west-1"));
        let err = serve_error("--enable-cloudwatch-metrics", "maybe");
        assert!(
            err.contains("`SAGEMAKER_ENABLE_CLOUDWATCH_METRICS`"),
            "{err}"
        );
    }
}
