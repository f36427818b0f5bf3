//! Shared server state: the configuration and the model's lifecycle.

use std::sync::{Arc, RwLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::infer::Health;
use crate::load::{LoadError, LoadedModel};

use super::error::{ApiError, ErrorType};

/// Where the model is in its lifecycle; `/ping` says 200 only for `Ready`.
#[derive(Clone)]
pub enum ModelState {
    /// Being fetched, unpacked or loaded.
    Loading,
    /// Serving.
    Ready(Arc<LoadedModel>),
    /// The load failed; the server keeps answering 503 with the cause.
    Failed(Arc<LoadError>),
}

/// The one state every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// HTTP settings.
    pub config: Arc<ServerConfig>,
    model: Arc<RwLock<ModelState>>,
    /// One permit per admitted invocation (`--queue-size`).
    admission: Arc<Semaphore>,
}

impl AppState {
    /// A state whose model is loading.
    pub fn new(config: ServerConfig) -> Self {
        let admission = Arc::new(Semaphore::new(config.queue_size));
        Self {
            config: Arc::new(config),
            model: Arc::new(RwLock::new(ModelState::Loading)),
            admission,
        }
    }

    /// Replaces the model state.
    pub fn set_model(&self, state: ModelState) {
        // A poisoned lock only means a writer panicked mid-assignment of an enum; the value is
        // still a valid `ModelState`, so keep serving.
        *self
            .model
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// The current model state.
    pub fn model(&self) -> ModelState {
        self.model
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The loaded model, or the 503 that says why there is none.
    pub fn ready_model(&self) -> Result<Arc<LoadedModel>, ApiError> {
        match self.model() {
            ModelState::Ready(model) => Ok(model),
            ModelState::Loading => Err(ApiError::new(
                ErrorType::ModelNotReady,
                "the model is still loading",
            )),
            ModelState::Failed(err) => Err(ApiError::new(
                ErrorType::ModelNotReady,
                format!(
                    "the model failed to load: {}",
                    super::error::error_chain(err.as_ref())
                ),
            )),
        }
    }

    /// The loaded model when its worker can serve, or the 503 that says why not: `/ping`'s
    /// answer (contract §1). Asks the worker's health, not only the load state.
    pub fn healthy_model(&self) -> Result<Arc<LoadedModel>, ApiError> {
        let model = self.ready_model()?;
        match model.health() {
            Health::Ready => Ok(model),
            Health::Wedged { busy_for } => Err(ApiError::new(
                ErrorType::ModelNotReady,
                format!(
                    "the model worker is wedged: one forward pass has run for {} s",
                    busy_for.as_secs()
                ),
            )),
            Health::Stopped { cause } => Err(ApiError::new(
                ErrorType::ModelNotReady,
                format!("the model worker has stopped: {cause}"),
            )),
        }
    }

    /// Admits one invocation, or answers 429 at once when `--queue-size` invocations are
    /// already admitted. The permit is held until the answer is built (or the client leaves).
    pub fn admit(&self) -> Result<Admission, ApiError> {
        Arc::clone(&self.admission)
            .try_acquire_owned()
            .map(Admission::new)
            .map_err(|_| {
                ApiError::new(
                    ErrorType::Overloaded,
                    format!(
                        "too many requests: {} are being served or waiting (SAGEBRUSH_QUEUE_SIZE); retry later",
                        self.config.queue_size
                    ),
                )
            })
    }
}

/// An admitted invocation: holds its place (`--queue-size`) and counts in
/// `sagebrush_invocations_in_flight` until dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        crate::metrics::get().in_flight.inc();
        Self { _permit: permit }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        crate::metrics::get().in_flight.dec();
    }
}
