//! Model loading: source → model directory → config, task, tokenizer, inference core, pipeline
//! and hook chain. Runs in the background while `/ping` says 503 (contract §1, §3).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::artifact::{self, ArtifactError};
use crate::config::{LoadConfig, ModelSource};
use crate::handler::{Hook, HookChain, HookRuleError, UserCode};
use crate::infer::seq2seq::EncoderDecoder;
use crate::infer::{Infer, InferConfig, Worker};
use crate::models::decoder::CausalLm;
use crate::models::tapas::TapasModel;
use crate::models::{Encoder, ModelConfig, ModelError, seq2seq};
use crate::pipelines::table_question_answering::TableQuestionAnswering;
use crate::pipelines::text2text::{Seq2SeqTokenizer, Text2Text};
use crate::pipelines::{self, Pipeline, Resources};
use crate::task::Task;
use crate::tokenizer::tapas::TapasTokenizer;
use crate::tokenizer::{TextTokenizer, TokenizerError};
use crate::user_code::Located;

/// A model ready to serve.
pub struct LoadedModel {
    /// The request handler.
    pub chain: HookChain,
    /// The task served: `HF_TASK`, or the one `config.json` names; `None` when a guest serves
    /// a model directory that names none.
    pub task: Option<Task>,
    /// The model directory.
    pub model_dir: PathBuf,
    /// The model directory's native pipeline (built at load, or on first use when user code
    /// serves without it), for `/ping`'s health command.
    pub native: Arc<crate::native::LazyNative>,
}

impl LoadedModel {
    /// The health of the native pipeline's worker; ready while none was needed yet.
    pub fn health(&self) -> crate::infer::Health {
        self.native.health()
    }
}

/// Why the model could not be loaded. `/ping` reports it as 503 and it is logged once.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The artifact could not be read or unpacked.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The archive could not be downloaded.
    #[error(transparent)]
    Fetch(#[from] crate::artifact::fetch::FetchError),
    /// The Hub download failed.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// `config.json` is missing or bad, or the weights cannot be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// `generation_config.json` cannot be read.
    #[error(transparent)]
    Generation(#[from] crate::generate::ParamsError),
    /// The tokenizer cannot be loaded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// No `HF_TASK` and no task can be inferred.
    #[error(
        "cannot infer the task from config.json architectures[0] = {architecture}; set HF_TASK (e.g. HF_TASK=text-classification)"
    )]
    NoTask {
        /// `architectures[0]`, or `(none)`.
        architecture: String,
    },
    /// The task is known but has no native pipeline yet.
    #[error("the task {task} is not served natively yet; see the README's list of what is done")]
    TaskNotServed {
        /// The task.
        task: Task,
    },
    /// The task needs an encoder-decoder model and this is not one we run.
    #[error(
        "the task {task} needs an encoder-decoder model (T5, BART, Marian); `model_type` is `{model_type}`"
    )]
    NotSeq2Seq {
        /// The task.
        task: Task,
        /// `config.json` `model_type`.
        model_type: String,
    },
    /// The user code is Python source, which must be compiled with `sagebrush package --python`.
    #[error(
        "{path} is Python user code, and sagebrush runs user code compiled to WebAssembly as code/inference.wasm: compile it with `sagebrush package --model-dir MODEL_DIR --python-dir MODEL_DIR/code -o model.tar.gz` and serve that archive (see the README, \"Python hooks\")"
    )]
    PythonUserCode {
        /// The file found.
        path: PathBuf,
    },
    /// The user code could not be loaded or breaks the hook rules.
    #[error("user code {path}: {message}")]
    UserCode {
        /// The `.wasm` file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The user code's hook set breaks the toolkit's rules.
    #[error("user code {}", path.display())]
    HookRules {
        /// The `.wasm` file.
        path: PathBuf,
        /// The rule broken.
        #[source]
        source: HookRuleError,
    },
    /// The model directory's native pipeline failed to build earlier (first use by a guest).
    #[error("{message}")]
    NativeUnavailable {
        /// The earlier failure.
        message: String,
    },
    /// The model worker thread could not be started.
    #[error("cannot start the model worker thread")]
    Worker(#[source] std::io::Error),
    /// The load took longer than `SAGEMAKER_STARTUP_TIMEOUT`.
    #[error("the model did not load within SAGEMAKER_STARTUP_TIMEOUT ({seconds} s)")]
    StartupTimeout {
        /// The limit.
        seconds: u64,
    },
    /// A loading step on the blocking pool panicked (or was cancelled); the source carries the
    /// panic message.
    #[error("the model loader crashed")]
    Crashed(#[source] tokio::task::JoinError),
}

/// Loads the model named by `cfg`. Blocking parts run on the blocking pool.
pub async fn load(cfg: LoadConfig) -> Result<LoadedModel, LoadError> {
    let load = async move {
        let dir = match &cfg.source {
            ModelSource::Path(path) => {
                let (path, work, max) =
                    (path.clone(), cfg.work_dir.clone(), cfg.max_unpacked_bytes);
                blocking(move || {
                    artifact::resolve_local(&path, &work, max).map_err(LoadError::from)
                })
                .await?
            }
            ModelSource::Url(url) => {
                let archive = artifact::fetch::fetch_archive(
                    url,
                    &cfg.work_dir.join("download"),
                    cfg.region.as_deref(),
                )
                .await?;
                let (work, max) = (cfg.work_dir.clone(), cfg.max_unpacked_bytes);
                blocking(move || {
                    let dir = artifact::resolve_local(&archive, &work, max).map_err(LoadError::from);
                    // The unpacked tree is what is served; the archive only takes disk.
                    if let Err(err) = std::fs::remove_file(&archive) {
                        tracing::warn!(archive = %archive.display(), error = %err, "cannot remove the downloaded archive");
                    }
                    dir
                })
                .await?
            }
            ModelSource::Hub(hub) => crate::hub::download(hub).await?,
        };
        blocking(move || load_dir(&dir, &cfg)).await
    };
    load.await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LoadError> + Send + 'static,
) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(LoadError::Crashed)?
}

/// Loads a model directory: its user code, and its native pipeline unless the user code
/// serves every request without it (issue #16: a guest with `model_fn` + `predict_fn` or
/// `transform_fn`, or whose `model_fn` hands the host a pipeline, needs no weights in the
/// model directory; the native pipeline is then built on first use, if ever).
pub fn load_dir(dir: &Path, cfg: &LoadConfig) -> Result<LoadedModel, LoadError> {
    let native = Arc::new(crate::native::LazyNative::new(dir, cfg));
    let (program, user) = load_user_code(dir, cfg, &native)?;
    let needs_native = user.as_ref().is_none_or(|user| {
        let hooks = user.hooks();
        !hooks.contains(Hook::PredictFn)
            && !hooks.contains(Hook::TransformFn)
            && user.predictor().is_none()
    });
    if needs_native {
        native.build_now()?;
    } else {
        tracing::info!(dir = %dir.display(), "user code predicts by itself: the model directory's native pipeline is built only if a guest asks for it");
    }
    let task = native.task();
    let chain = HookChain::lazy(Arc::clone(&native), task.clone(), user)
        .map(|chain| chain.with_record_parallelism(cfg.max_batch_size))
        .map_err(|source| LoadError::HookRules {
            path: program,
            source,
        })?;
    tracing::info!(task = task.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string), dir = %dir.display(), "model loaded");
    Ok(LoadedModel {
        chain,
        task,
        model_dir: dir.to_owned(),
        native,
    })
}

/// A native pipeline and the worker that runs its model.
pub(crate) struct Native {
    /// The pipeline.
    pub(crate) pipeline: Arc<dyn Pipeline>,
    /// The worker, for `/ping`'s health command.
    pub(crate) worker: Worker,
}

/// The task of the model directory `dir`: `task` when given, else a sentence-transformers
/// folder's, else `config.json` `architectures[0]`'s. `None` when nothing names one (or
/// `config.json` cannot be read).
pub(crate) fn infer_task(dir: &Path, task: Option<&Task>) -> Option<Task> {
    if let Some(task) = task {
        return Some(task.clone());
    }
    if crate::models::sentence_transformers::is_sentence_transformers(dir) {
        return Some(Task::SentenceEmbeddings);
    }
    let config = ModelConfig::from_dir(dir).ok()?;
    config
        .architectures
        .first()
        .and_then(|a| Task::from_architecture(a))
}

/// Builds the native pipeline of `task` (or of the task `config.json` names) over the model
/// directory `dir`, with its worker. Blocks (loads weights).
pub(crate) fn build_native(
    dir: &Path,
    cfg: &LoadConfig,
    task: Option<&Task>,
) -> Result<Native, LoadError> {
    let native = build_native_now(dir, cfg, task);
    crate::memory::give_back();
    native
}

/// [`build_native`] itself.
fn build_native_now(
    dir: &Path,
    cfg: &LoadConfig,
    task: Option<&Task>,
) -> Result<Native, LoadError> {
    let config = ModelConfig::from_dir(dir)?;
    let architecture = config.architectures.first().cloned();
    let task = match task {
        Some(task) => task.clone(),
        // A sentence-transformers folder is served as the toolkit serves it (contract §3).
        None if crate::models::sentence_transformers::is_sentence_transformers(dir) => {
            Task::SentenceEmbeddings
        }
        None => architecture
            .as_deref()
            .and_then(Task::from_architecture)
            .ok_or_else(|| LoadError::NoTask {
                architecture: architecture.clone().unwrap_or_else(|| "(none)".to_owned()),
            })?,
    };
    // Tasks whose models have no bfloat16 kernels refuse `--dtype bfloat16` before any weight is
    // read; the others check their architecture in their loader.
    if cfg.dtype != crate::models::WeightDtype::F32
        && matches!(
            task,
            Task::Text2TextGeneration
                | Task::Summarization
                | Task::Translation { .. }
                | Task::TableQuestionAnswering
        )
    {
        return Err(ModelError::DtypeNotSupported {
            dtype: cfg.dtype,
            model_type: config.model_type.clone(),
        }
        .into());
    }
    if matches!(
        task,
        Task::Text2TextGeneration | Task::Summarization | Task::Translation { .. }
    ) {
        return load_seq2seq(dir, cfg, &config, task);
    }
    if task == Task::TableQuestionAnswering {
        let (pipeline, infer) = load_tapas(dir, &config, cfg)?;
        return Ok(Native {
            pipeline,
            worker: Worker::Encoder(infer),
        });
    }
    let (infer, pipeline) = if matches!(task, Task::TextGeneration) {
        let tokenizer = TextTokenizer::from_dir(dir, &config)?;
        let model = CausalLm::load(dir, &config, cfg.dtype)?;
        let max_positions = model.max_positions();
        let infer = Infer::spawn_generator(
            model,
            infer_config(cfg, tokenizer.pad_id()),
            "generation-worker",
        )
        .map_err(LoadError::Worker)?;
        let resources = resources(tokenizer, config, &infer);
        let pipeline =
            pipelines::text_generation::TextGeneration::new(resources, dir, max_positions)?;
        (infer, Arc::new(pipeline) as Arc<dyn Pipeline>)
    } else {
        let head = pipelines::head_for(&task)
            .ok_or_else(|| LoadError::TaskNotServed { task: task.clone() })?;
        let tokenizer = TextTokenizer::from_dir(dir, &config)?;
        let encoder = Encoder::load(dir, &config, head, cfg.dtype)?;
        let infer_cfg = infer_config(cfg, tokenizer.pad_id());
        let infer = if cfg.data_parallel > 1 {
            let model = crate::models::parallel::DataParallel::new(encoder, cfg.data_parallel)
                .map_err(LoadError::Worker)?;
            Infer::spawn(model, infer_cfg, "model-worker")
        } else {
            Infer::spawn(encoder, infer_cfg, "model-worker")
        }
        .map_err(LoadError::Worker)?;
        let resources = resources(tokenizer, config, &infer);
        let native = match pipelines::sentence_embeddings::build(&task, dir, resources.clone())? {
            Some(pipeline) => pipeline,
            None => pipelines::build(&task, resources)
                .ok_or_else(|| LoadError::TaskNotServed { task: task.clone() })?,
        };
        (infer, native)
    };
    tracing::info!(task = %task, architecture = architecture.as_deref().unwrap_or("-"), dir = %dir.display(), "native pipeline loaded");
    Ok(Native {
        pipeline,
        worker: Worker::Encoder(infer),
    })
}

/// What a pipeline over the inference core needs.
fn resources(tokenizer: TextTokenizer, config: ModelConfig, infer: &Infer) -> Resources {
    Resources {
        tokenizer: Arc::new(tokenizer),
        config: Arc::new(config),
        infer: infer.clone(),
    }
}

/// Loads an encoder-decoder model (T5, BART, Marian) for text2text-generation, summarization
/// or translation: its generation worker and the generation pipeline.
fn load_seq2seq(
    dir: &Path,
    cfg: &LoadConfig,
    config: &ModelConfig,
    task: Task,
) -> Result<Native, LoadError> {
    if !seq2seq::is_seq2seq(&config.model_type) {
        return Err(LoadError::NotSeq2Seq {
            task,
            model_type: config.model_type.clone(),
        });
    }
    let tokenizer = Seq2SeqTokenizer::from_dir(dir, config)?;
    let model = seq2seq::load(dir, config)?;
    let ids = model.ids().clone();
    let worker = Infer::spawn_generator(
        EncoderDecoder::new(model),
        infer_config(cfg, tokenizer.pad_id()),
        "generation-worker",
    )
    .map_err(LoadError::Worker)?;
    let pipeline: Arc<dyn Pipeline> = Arc::new(Text2Text::new(
        task.clone(),
        dir,
        config,
        tokenizer,
        worker.clone(),
        ids,
    )?);
    tracing::info!(task = %pipeline.task(), model_type = %config.model_type, dir = %dir.display(), "native pipeline loaded");
    Ok(Native {
        pipeline,
        worker: Worker::Encoder(worker),
    })
}

/// The inference core's limits from the load settings.
fn infer_config(cfg: &LoadConfig, pad_id: u32) -> InferConfig {
    InferConfig {
        // One admitted invocation submits up to `max_batch_size` records of a multi-record
        // body at once (`HookChain::with_record_parallelism`); admission (`queue_size`
        // invocations) is what bounds the load, so the queue holds all they may submit.
        queue_size: cfg.queue_size.saturating_mul(cfg.max_batch_size.max(1)),
        max_batch_rows: cfg.max_batch_size,
        max_batch_tokens: cfg.max_batch_tokens,
        max_wait: cfg.max_batch_wait,
        pad_id,
        wedged_after: cfg.wedged_after,
        #[cfg(feature = "test-gate")]
        gate_dir: cfg.test_gate_dir.clone(),
    }
}

/// table-question-answering runs TAPAS, which has its own tokenizer and model (not an
/// [`Encoder`] head), behind the same inference core.
fn load_tapas(
    dir: &Path,
    config: &ModelConfig,
    cfg: &LoadConfig,
) -> Result<(Arc<dyn Pipeline>, Infer), LoadError> {
    let tokenizer = TapasTokenizer::from_dir(dir, config)?;
    let model = TapasModel::load(dir, config)?;
    let infer = Infer::spawn(model, infer_config(cfg, tokenizer.pad_id()), "model-worker")
        .map_err(LoadError::Worker)?;
    Ok((
        Arc::new(TableQuestionAnswering::new(
            tokenizer,
            infer.clone(),
            config,
        )),
        infer,
    ))
}

/// Finds user code in SageMaker's layout (`user_code::locate`: `SAGEMAKER_SUBMIT_DIRECTORY`,
/// the model's `code/`, `/opt/ml/code`): the WebAssembly component named by `SAGEMAKER_PROGRAM`,
/// or nothing. Python code is refused rather than silently ignored (contract §6). Returns the
/// program's path (where it would be when there is none) for error messages.
fn load_user_code(
    dir: &Path,
    cfg: &LoadConfig,
    native: &Arc<crate::native::LazyNative>,
) -> Result<(PathBuf, Option<Arc<dyn UserCode>>), LoadError> {
    match crate::user_code::locate(dir, &cfg.code_dirs, &cfg.program) {
        Located::Wasm(program) => {
            let host = Arc::new(crate::native::ModelHost::new(dir, cfg, Arc::clone(native)));
            let guest =
                crate::wasm::GuestProgram::load(&program, dir, &cfg.wasm, host).map_err(|err| {
                    LoadError::UserCode {
                        message: crate::telemetry::error_chain(&err),
                        path: program.clone(),
                    }
                })?;
            Ok((program, Some(Arc::new(guest))))
        }
        Located::Python(path) => Err(LoadError::PythonUserCode { path }),
        Located::Nothing => Ok((dir.join("code").join(&cfg.program), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_load_step_is_a_crash_carrying_the_panic_message() {
        let err = blocking::<()>(|| panic!("weights exploded"))
            .await
            .expect_err("a panic is an error");
        assert!(
            matches!(err, LoadError::Crashed(ref e) if e.is_panic()),
            "{err:?}"
        );
        let chain = crate::server::error::error_chain(&err);
        assert!(chain.contains("weights exploded"), "{chain}");
    }
}
