//! Models: `config.json`, architectures and heads, weights. (Being written; see issue 5.)

/// A model that cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A candle failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
