//! Fast tokenizers rebuilt from slow tokenizer files (not yet implemented: reports the files
//! as missing).

use std::path::Path;

use tokenizers::Tokenizer;

use super::{Result, TokenizerConfig, TokenizerError};
use crate::models::ModelConfig;

/// Builds a tokenizer from `vocab.txt` or `vocab.json` + `merges.txt`.
pub(super) fn build(
    dir: &Path,
    _config: &TokenizerConfig,
    _model: &ModelConfig,
) -> Result<Tokenizer> {
    Err(TokenizerError::MissingFiles {
        dir: dir.to_path_buf(),
    })
}
