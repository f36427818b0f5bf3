//! Shared server state: the configuration and the model's lifecycle.

use std::sync::{Arc, RwLock};

use crate::config::ServerConfig;
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
}

impl AppState {
    /// A state whose model is loading.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config: Arc::new(config),
            model: Arc::new(RwLock::new(ModelState::Loading)),
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
}
