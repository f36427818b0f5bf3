//! `sagebrush batch`: a SageMaker Batch Transform job run in-process (contract §8).
//!
//! The model is loaded exactly as `serve` loads it (directory, `model.tar.gz`, `s3://`,
//! `HF_MODEL_ID`), and every request goes through the same hook chain, so user code in
//! `code/inference.wasm` runs as it does behind `/invocations`; there is no HTTP. Each input file
//! gets `<input name>.out`, folders kept. A file whose output exists is skipped, which is how an
//! interrupted job resumes: outputs appear only complete (see `store`).
//!
//! This module owns the job (settings, listing, resumption, the summary and its exit status);
//! `file` runs one file, `records` frames records and answers, `filter` is SageMaker's
//! DataProcessing, `store` is local and S3 I/O, `progress` the bar and log lines.

pub mod file;
pub mod filter;
pub mod progress;
pub mod records;
pub mod store;

use std::path::PathBuf;

use crate::config::{
    AssembleWith, BatchArgs, Config, ConfigError, JoinSource, OnError, SplitType, Strategy,
};
use crate::load::{self, LoadError};
use filter::{FilterError, JsonPath};
use records::{Format, Processing};
use store::Location;

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The model flags are inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--input` or `--output` cannot be used.
    #[error("`{flag}` {value:?} cannot be used: {reason}")]
    BadLocation {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A combination of options that cannot work.
    #[error("`{flag}` {value:?}: {reason}")]
    BadOption {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A filter expression is not supported.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// An S3 operation failed.
    #[error("S3 {url}: {source}")]
    S3 {
        /// The location.
        url: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The input holds no file.
    #[error("`--input` {input} holds no input file")]
    NoInputs {
        /// The location.
        input: String,
    },
    /// A CSV file's header row cannot be filtered.
    #[error("{file}: the CSV header row does not fit `--input-filter`: {reason}")]
    BadHeader {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The model could not be loaded.
    #[error("the model failed to load: {0}")]
    Load(#[source] LoadError),
    /// `--content-type` or `--accept` is refused by the model's hook chain.
    #[error("the model cannot take this job: {0}")]
    Negotiate(String),
    /// Some files had a bad record (`--on-error fail`); the others are done.
    #[error("{} file(s) failed, no output written for them:{}", failures.len(), list_failures(failures))]
    FilesFailed {
        /// Each failed file with its first bad record.
        failures: Vec<FileFailure>,
    },
    /// A worker thread crashed.
    #[error("the batch job crashed: {0}")]
    Crashed(String),
}

/// A file that got no output.
#[derive(Debug, Clone)]
pub struct FileFailure {
    /// The input, relative to `--input`.
    pub file: String,
    /// 1-based line of its first bad record.
    pub line: usize,
    /// Why that record failed.
    pub reason: String,
}

fn list_failures(failures: &[FileFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("\n  {} line {}: {}", f.file, f.line, f.reason))
        .collect()
}

/// The checked settings of a job.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--split-type`.
    pub split: SplitType,
    /// `--strategy`.
    pub strategy: Strategy,
    /// Largest request body (`--max-payload-mb`).
    pub max_payload_bytes: usize,
    /// `--max-records`.
    pub max_records: usize,
    /// `--concurrency`.
    pub concurrency: usize,
    /// `--assemble-with`.
    pub assemble: AssembleWith,
    /// `--content-type`.
    pub content_type: String,
    /// `--accept`.
    pub accept: String,
    /// `--on-error`.
    pub on_error: OnError,
    /// Filters and join.
    pub processing: Processing,
}

impl Settings {
    /// Checks the batch flags; `config` gives the payload limit and the default concurrency.
    pub fn from_args(args: &BatchArgs, config: &Config) -> Result<Self, BatchError> {
        let path = |flag, text: &Option<String>| -> Result<Option<JsonPath>, BatchError> {
            match text {
                Some(t) => Ok(Some(JsonPath::parse(flag, t)?).filter(|p| !p.is_root())),
                None => Ok(None),
            }
        };
        let input = Format::of(&args.content_type);
        let output = Format::of(&args.accept);
        let processing = Processing {
            input,
            output,
            input_filter: path("--input-filter", &args.input_filter)?,
            output_filter: path("--output-filter", &args.output_filter)?,
            join: args.join_source,
        };
        let csv_json_mix = (input == Format::Csv) != (output == Format::Csv);
        if args.join_source == JoinSource::Input && csv_json_mix && output == Format::Csv {
            return Err(BatchError::BadOption {
                flag: "--join-source",
                value: "Input".to_owned(),
                reason: "a CSV answer can only be joined with CSV records; use `--accept application/jsonlines`".to_owned(),
            });
        }
        if (processing.input_filter.is_some() || processing.rewrites_output())
            && (input == Format::Other || output == Format::Other)
        {
            return Err(BatchError::BadOption {
                flag: "--content-type",
                value: args.content_type.clone(),
                reason: "filters and joins need JSON, JSON Lines or CSV records and answers"
                    .to_owned(),
            });
        }
        let concurrency = args
            .concurrency
            .unwrap_or(config.server.max_concurrent_transforms)
            .max(1);
        Ok(Self {
            split: args.split_type,
            strategy: args.strategy,
            max_payload_bytes: config.server.max_payload_bytes,
            max_records: args.max_records,
            concurrency,
            assemble: args.assemble_with,
            content_type: args.content_type.clone(),
            accept: args.accept.clone(),
            on_error: args.on_error,
            processing,
        })
    }
}

/// Runs a job: lists the inputs, skips finished outputs, loads the model and transforms the
/// rest. Fails (non-zero exit) when a file failed, after finishing every other file.
pub async fn run(args: &BatchArgs) -> Result<(), BatchError> {
    let mut config = Config::from_serve_args(&args.model)?;
    let settings = Settings::from_args(args, &config)?;
    // Every worker thread has one request in the model at a time; none may find the queue full.
    config.load.queue_size = config.load.queue_size.max(settings.concurrency);
    let input = Location::parse("--input", &args.input)?;
    let output = Location::parse("--output", &args.output)?;
    let files = input.list_inputs().await?;
    if files.is_empty() {
        return Err(BatchError::NoInputs {
            input: input.describe(),
        });
    }
    let mut todo = Vec::new();
    for file in &files {
        if output.output_exists(&file.rel).await? {
            tracing::info!(
                file = %file.rel,
                output = %output.output_name(&file.rel),
                "skipping {}: its output exists (finished by an earlier run)",
                file.rel
            );
        } else {
            todo.push(file.clone());
        }
    }
    let skipped = files.len() - todo.len();
    if skipped > 0 {
        tracing::info!(
            skipped,
            total = files.len(),
            "resuming: {skipped} of {} files already done, skipped",
            files.len()
        );
    }
    if todo.is_empty() {
        tracing::info!("every input already has its output; nothing to do");
        return Ok(());
    }
    let work_dir = config.load.work_dir.join("batch");
    tokio::fs::create_dir_all(&work_dir)
        .await
        .map_err(|source| BatchError::Io {
            path: work_dir.clone(),
            source,
        })?;
    let result = transform(&settings, &config, &input, &output, &todo, &work_dir).await;
    let _ = tokio::fs::remove_dir_all(&work_dir).await;
    result
}

async fn transform(
    settings: &Settings,
    config: &Config,
    input: &Location,
    output: &Location,
    todo: &[store::InputFile],
    work_dir: &std::path::Path,
) -> Result<(), BatchError> {
    let model = load::load(config.load.clone())
        .await
        .map_err(BatchError::Load)?;
    let plan = model
        .chain
        .negotiate(
            Some(&settings.content_type),
            Some(&settings.accept),
            config.server.default_accept,
        )
        .map_err(|e| BatchError::Negotiate(crate::server::error::error_chain(&e)))?;
    let model = std::sync::Arc::new(model);
    let progress = std::sync::Arc::new(progress::Progress::new(todo.iter().map(|f| f.size).sum()));
    tracing::info!(
        files = todo.len(),
        strategy = ?settings.strategy,
        concurrency = settings.concurrency,
        forward_parts = config.load.data_parallel,
        "batch job started"
    );
    let mut failures = Vec::new();
    let (mut records, mut placeholders) = (0, 0);
    for file in todo {
        let (local, is_copy) = input.fetch(file, work_dir).await?;
        let partial = output.partial_path(&file.rel, work_dir).await?;
        let (job_model, job_progress, job_settings, rel) = (
            model.clone(),
            progress.clone(),
            settings.clone(),
            file.rel.clone(),
        );
        let (local2, partial2) = (local.clone(), partial.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let engine = file::Engine {
                chain: &job_model.chain,
                plan,
                settings: &job_settings,
                progress: &job_progress,
            };
            engine.process(&local2, &rel, &partial2)
        })
        .await
        .map_err(|e| BatchError::Crashed(e.to_string()))?;
        if is_copy {
            let _ = tokio::fs::remove_file(&local).await;
        }
        match outcome {
            Ok(file::FileOutcome::Done {
                records: n,
                placeholders: p,
            }) => {
                output.commit(&file.rel, &partial).await?;
                records += n;
                placeholders += p;
                progress.suspend(|| {
                    tracing::info!(file = %file.rel, output = %output.output_name(&file.rel), records = n, placeholders = p, "file done");
                });
            }
            Ok(file::FileOutcome::Failed(err)) => {
                let _ = tokio::fs::remove_file(&partial).await;
                progress.suspend(|| {
                    tracing::error!(file = %file.rel, line = err.line, error = %err.message, "file failed; no output written");
                });
                failures.push(FileFailure {
                    file: file.rel.clone(),
                    line: err.line,
                    reason: err.message,
                });
            }
            Err(err) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(err);
            }
        }
    }
    progress.finish();
    tracing::info!(
        files = todo.len() - failures.len(),
        failed = failures.len(),
        records,
        placeholders,
        records_per_s = format!("{:.1}", progress.rate()),
        "batch job finished"
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(BatchError::FilesFailed { failures })
    }
}
