//! RoBERTa, XLM-RoBERTa and CamemBERT (`model_type` `roberta`, `xlm-roberta`, `camembert`).
//!
//! Their encoder is BERT's (`bert.rs`, flavor [`Flavor::Roberta`]); what differs is ported there
//! and in `heads.rs`:
//! - position ids start at `padding_idx + 1` and skip padding
//!   (https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/roberta/modeling_roberta.py#L1650,
//!   `create_position_ids_from_input_ids`), so the usable length is
//!   `max_position_embeddings - pad_token_id - 1`;
//! - the state-dict prefix is `roberta`, and `token_type_embeddings` usually has one row;
//! - the classification head is `classifier.dense` → tanh → `classifier.out_proj` on `<s>`, and
//!   the LM head is `lm_head.{dense, layer_norm, decoder, bias}` with an erf GELU.
//!
//! XLM-RoBERTa's modeling file is a copy of RoBERTa's (`# Copied from` markers), so it loads here.

use super::bert::{Config, Flavor};
use super::{ModelConfig, Result};

/// Reads a RoBERTa-family `config.json`.
pub(crate) fn config(config: &ModelConfig) -> Result<Config> {
    Config::from_model_config(config, Flavor::Roberta)
}
