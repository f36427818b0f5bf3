//! The native pipelines of one model (issue #16): the model directory's own pipeline, built at
//! load or, when user code serves without it, on first use ([`LazyNative`]); and the pipelines
//! and tokenizers guests load by task and subfolder ([`ModelHost`]), each loaded once per model
//! and shared by every guest instance through an `Arc`.
//!
//! Owns: subfolder confinement (a guest names paths inside the model directory only) and the
//! registry of guest loads. Does not own: how a pipeline is built (`load::build_native`), the
//! WIT glue (`wasm::host`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::config::LoadConfig;
use crate::infer::Health;
use crate::load::{LoadError, Native, build_native, infer_task};
use crate::pipelines::Pipeline;
use crate::task::Task;
use crate::wasm::{GuestHost, HostError};

/// The model directory's own pipeline (`/opt/ml/model`, `HF_TASK`), built once, when first
/// needed. A failed build is remembered: every later use gets the same error.
pub struct LazyNative {
    dir: PathBuf,
    cfg: LoadConfig,
    task: Option<Task>,
    built: OnceLock<Result<Native, String>>,
}

impl LazyNative {
    /// Nothing is loaded yet; the task is read from `HF_TASK` or `config.json` (when there).
    pub fn new(dir: &Path, cfg: &LoadConfig) -> Self {
        Self {
            dir: dir.to_owned(),
            cfg: cfg.clone(),
            task: infer_task(dir, cfg.task.as_ref()),
            built: OnceLock::new(),
        }
    }

    /// The task: the built pipeline's, else `HF_TASK`'s or `config.json`'s.
    pub fn task(&self) -> Option<Task> {
        match self.built.get() {
            Some(Ok(native)) => Some(native.pipeline.task()),
            _ => self.task.clone(),
        }
    }

    /// Whether the pipeline has been built.
    pub fn is_built(&self) -> bool {
        matches!(self.built.get(), Some(Ok(_)))
    }

    /// Builds the pipeline now (at load, when something will need it), returning the load
    /// error itself on failure. Blocks.
    pub(crate) fn build_now(&self) -> Result<(), LoadError> {
        let mut first_error = None;
        let built = self.built.get_or_init(|| {
            build_native(&self.dir, &self.cfg, self.cfg.task.as_ref()).map_err(|err| {
                let message = crate::telemetry::error_chain(&err);
                first_error = Some(err);
                message
            })
        });
        match (first_error, built) {
            (Some(err), _) => Err(err),
            (None, Ok(_)) => Ok(()),
            (None, Err(message)) => Err(LoadError::NativeUnavailable {
                message: message.clone(),
            }),
        }
    }

    /// The pipeline, built on the first call (the calls that race it wait for it). Blocks.
    pub fn get(&self) -> Result<Arc<dyn Pipeline>, String> {
        let built = self.built.get_or_init(|| {
            tracing::info!(dir = %self.dir.display(), "building the model directory's native pipeline on first use");
            build_native(&self.dir, &self.cfg, self.cfg.task.as_ref())
                .map_err(|err| crate::telemetry::error_chain(&err))
        });
        match built {
            Ok(native) => Ok(Arc::clone(&native.pipeline)),
            Err(message) => Err(format!(
                "the model directory's native pipeline cannot be loaded: {message}"
            )),
        }
    }

    /// The health of the pipeline's worker; ready while it was never needed.
    pub fn health(&self) -> Health {
        match self.built.get() {
            Some(Ok(native)) => native.worker.health(),
            _ => Health::Ready,
        }
    }
}

impl std::fmt::Debug for LazyNative {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyNative")
            .field("dir", &self.dir)
            .field("task", &self.task)
            .field("built", &self.is_built())
            .finish_non_exhaustive()
    }
}

type Slot<T> = Arc<OnceLock<Result<T, HostError>>>;

/// A guest's pipeline load: (task, resolved folder, options).
type PipelineKey = (String, PathBuf, String);

/// What guests of one model may load: the model directory's pipeline, pipelines by task and
/// subfolder, tokenizers by subfolder. Each (task, subfolder, options) is loaded once and
/// shared by all instances; a failed load is remembered too (the files will not change).
pub struct ModelHost {
    dir: PathBuf,
    cfg: LoadConfig,
    default: Arc<LazyNative>,
    pipelines: Mutex<HashMap<PipelineKey, Slot<Arc<Native>>>>,
    tokenizers: Mutex<HashMap<PathBuf, Slot<Arc<tokenizers::Tokenizer>>>>,
}

impl ModelHost {
    /// The guests' view of the model directory `dir`.
    pub fn new(dir: &Path, cfg: &LoadConfig, default: Arc<LazyNative>) -> Self {
        Self {
            dir: dir.to_owned(),
            cfg: cfg.clone(),
            default,
            pipelines: Mutex::new(HashMap::new()),
            tokenizers: Mutex::new(HashMap::new()),
        }
    }

    fn slot<K: std::hash::Hash + Eq, T>(map: &Mutex<HashMap<K, Slot<T>>>, key: K) -> Slot<T> {
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key).or_default())
    }
}

impl GuestHost for ModelHost {
    fn default_task(&self) -> Option<Task> {
        self.default.task()
    }

    fn default_pipeline(&self) -> Result<Arc<dyn Pipeline>, HostError> {
        self.default.get().map_err(HostError::Failed)
    }

    fn load_pipeline(
        &self,
        task: &str,
        subfolder: Option<&str>,
        options_json: Option<&str>,
    ) -> Result<Arc<dyn Pipeline>, HostError> {
        let options = parse_options(options_json)?;
        let dir = confine(&self.dir, subfolder)?;
        // An empty task is the one the folder names (a sentence-transformers folder's, else
        // config.json `architectures[0]`'s), as for the model directory itself.
        let parsed = if task.trim().is_empty() {
            infer_task(&dir, None).ok_or_else(|| {
                HostError::Refused(format!(
                    "pipeline.load without a task: {} names none (no config.json `architectures` sagebrush knows); pass the task",
                    shown(subfolder)
                ))
            })?
        } else {
            Task::parse(task).ok_or_else(|| {
                HostError::Refused(format!(
                    "unknown task `{task}` for pipeline.load; accepted: {}",
                    Task::ACCEPTED.join(", ")
                ))
            })?
        };
        // The model directory's own task over the model directory is its own pipeline: built
        // once (lazily), not a second copy of the weights.
        let own = self.default.task().is_some_and(|t| t == parsed);
        if own && options.is_empty() && dir == confine(&self.dir, None)? {
            return self.default.get().map_err(HostError::Refused);
        }
        let key = (parsed.to_string(), dir.clone(), options);
        let slot = Self::slot(&self.pipelines, key);
        let native = slot.get_or_init(|| {
            let started = std::time::Instant::now();
            let built = build_native(&dir, &self.cfg, Some(&parsed)).map_err(|err| {
                HostError::Refused(format!(
                    "cannot load a {parsed} pipeline from {}: {}",
                    shown(subfolder),
                    crate::telemetry::error_chain(&err)
                ))
            })?;
            tracing::info!(task = %parsed, subfolder = shown(subfolder), load_ms = started.elapsed().as_secs_f64() * 1e3, "native pipeline loaded for user code (shared by all instances)");
            Ok(Arc::new(built))
        });
        native
            .as_ref()
            .map(|n| Arc::clone(&n.pipeline))
            .map_err(Clone::clone)
    }

    fn load_tokenizer(
        &self,
        subfolder: Option<&str>,
    ) -> Result<Arc<tokenizers::Tokenizer>, HostError> {
        let dir = confine(&self.dir, subfolder)?;
        let slot = Self::slot(&self.tokenizers, dir.clone());
        slot.get_or_init(|| {
            let file = dir.join("tokenizer.json");
            let mut tokenizer = tokenizers::Tokenizer::from_file(&file).map_err(|err| {
                HostError::Refused(format!(
                    "cannot load the tokenizer of {} (tokenizer.json): {err}",
                    shown(subfolder)
                ))
            })?;
            // Guests see each text as it is: no padding to a batch, no truncation.
            tokenizer.with_padding(None);
            tokenizer
                .with_truncation(None)
                .map_err(|err| HostError::Failed(err.to_string()))?;
            Ok(Arc::new(tokenizer))
        })
        .clone()
    }
}

fn shown(subfolder: Option<&str>) -> String {
    match subfolder {
        Some(s) if !s.is_empty() => format!("subfolder `{s}`"),
        _ => "the model directory".to_owned(),
    }
}

/// `options-json`: a JSON object; no option is defined yet, so any key is refused.
fn parse_options(options_json: Option<&str>) -> Result<String, HostError> {
    let Some(text) = options_json.filter(|t| !t.trim().is_empty()) else {
        return Ok(String::new());
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| HostError::Refused(format!("pipeline.load options are not JSON: {e}")))?;
    let Some(map) = value.as_object() else {
        return Err(HostError::Refused(
            "pipeline.load options must be a JSON object".to_owned(),
        ));
    };
    if let Some(key) = map.keys().next() {
        return Err(HostError::Refused(format!(
            "unknown pipeline.load option `{key}`: no option is defined yet (pass none or {{}})"
        )));
    }
    Ok(String::new())
}

/// The directory `subfolder` names inside `model_dir`: a relative path without `..`, that
/// exists, is a directory, and (symbolic links resolved) stays inside the model directory.
pub(crate) fn confine(model_dir: &Path, subfolder: Option<&str>) -> Result<PathBuf, HostError> {
    let root = model_dir
        .canonicalize()
        .map_err(|e| HostError::Failed(format!("cannot resolve the model directory: {e}")))?;
    let Some(sub) = subfolder.filter(|s| !s.is_empty()) else {
        return Ok(root);
    };
    let path = Path::new(sub);
    let escapes = path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(HostError::Refused(format!(
            "subfolder `{sub}` must be a relative path inside the model directory (no `..`, not absolute)"
        )));
    }
    let resolved = root.join(path).canonicalize().map_err(|_| {
        HostError::Refused(format!(
            "subfolder `{sub}` does not exist in the model directory"
        ))
    })?;
    if !resolved.starts_with(&root) {
        return Err(HostError::Refused(format!(
            "subfolder `{sub}` leads outside the model directory"
        )));
    }
    if !resolved.is_dir() {
        return Err(HostError::Refused(format!(
            "subfolder `{sub}` is not a directory"
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subfolders_stay_inside_the_model_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("a/b")).expect("mkdir");
        std::fs::write(tmp.path().join("file"), b"x").expect("write");
        let root = tmp.path().canonicalize().expect("canonical");
        assert_eq!(confine(tmp.path(), None).expect("root"), root);
        assert_eq!(
            confine(tmp.path(), Some("a/b")).expect("a/b"),
            root.join("a/b")
        );
        assert_eq!(
            confine(tmp.path(), Some("./a")).expect("./a"),
            root.join("a")
        );
        for (bad, says) in [
            ("../x", "no `..`"),
            ("a/../../x", "no `..`"),
            ("/etc", "not absolute"),
            ("missing", "does not exist"),
            ("file", "is not a directory"),
        ] {
            let err = confine(tmp.path(), Some(bad)).expect_err(bad);
            assert!(
                matches!(&err, HostError::Refused(m) if m.contains(says)),
                "{bad}: {err:?}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/tmp", tmp.path().join("out")).expect("symlink");
            let err = confine(tmp.path(), Some("out")).expect_err("symlink out");
            assert!(
                matches!(&err, HostError::Refused(m) if m.contains("leads outside")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn options_must_be_an_empty_object() {
        assert!(parse_options(None).is_ok());
        assert!(parse_options(Some("{}")).is_ok());
        assert!(
            matches!(parse_options(Some("{\"device\": 1}")), Err(HostError::Refused(m)) if m.contains("`device`"))
        );
        assert!(
            matches!(parse_options(Some("[1]")), Err(HostError::Refused(m)) if m.contains("object"))
        );
        assert!(
            matches!(parse_options(Some("{")), Err(HostError::Refused(m)) if m.contains("not JSON"))
        );
    }
}
