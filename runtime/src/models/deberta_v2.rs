//! DeBERTa-v2 / v3 (`model_type` `deberta-v2`): the base model is candle-transformers'
//! `debertav2.rs` (disentangled attention with relative position buckets); the heads are ours
//! (`heads.rs`), with transformers 4.51.3 state-dict names.
//!
//! `config.json` keys that `DebertaV2Config` defaults are filled in before candle-transformers
//! parses the file, since its `Config` requires them.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use candle_transformers::models::debertav2;
use serde_json::{Value, json};

use super::{BatchTensors, ModelConfig, ModelError, Result};

/// The checked configuration: candle-transformers' plus the fields our heads need.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) inner: debertav2::Config,
    /// `pooler_hidden_size` (default `hidden_size`).
    pub(crate) pooler_hidden_size: usize,
    /// `pooler_hidden_act` (default `gelu`).
    pub(crate) pooler_hidden_act: String,
    /// `hidden_act`.
    pub(crate) hidden_act: String,
    /// `embedding_size` (default `hidden_size`).
    pub(crate) embedding_size: usize,
    /// `legacy` (default true): the masked-LM head is BERT's `cls.predictions`.
    pub(crate) legacy: bool,
}

/// `DebertaV2Config` defaults for keys a `config.json` may omit.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/deberta_v2/configuration_deberta_v2.py#L107
fn defaults(hidden: usize) -> [(&'static str, Value); 14] {
    [
        ("hidden_act", json!("gelu")),
        ("hidden_dropout_prob", json!(0.1)),
        ("attention_probs_dropout_prob", json!(0.1)),
        ("type_vocab_size", json!(0)),
        ("initializer_range", json!(0.02)),
        ("relative_attention", json!(false)),
        ("position_biased_input", json!(true)),
        ("layer_norm_eps", json!(1e-7)),
        ("max_relative_positions", json!(-1)),
        ("max_position_embeddings", json!(512)),
        ("pos_att_type", json!([])),
        ("pooler_hidden_size", json!(hidden)),
        ("pooler_hidden_act", json!("gelu")),
        ("pooler_dropout", json!(0.0)),
    ]
}

impl Config {
    /// Reads a DeBERTa-v2 `config.json`.
    pub(crate) fn from_model_config(config: &ModelConfig) -> Result<Self> {
        let mut raw = config.raw.clone();
        let Value::Object(map) = &mut raw else {
            return Err(ModelError::ConfigValue {
                key: "config.json".into(),
                reason: "not a JSON object".into(),
            });
        };
        let hidden = map
            .get("hidden_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| ModelError::ConfigValue {
                key: "hidden_size".into(),
                reason: "missing".into(),
            })? as usize;
        for (key, value) in defaults(hidden) {
            if map.get(key).is_none_or(Value::is_null) {
                map.insert(key.into(), value);
            }
        }
        let str_of = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
        let hidden_act = str_of("hidden_act").unwrap_or_else(|| "gelu".into());
        let pooler_hidden_act = str_of("pooler_hidden_act").unwrap_or_else(|| "gelu".into());
        let embedding_size = map
            .get("embedding_size")
            .and_then(Value::as_u64)
            .map_or(hidden, |e| e as usize);
        let pooler_hidden_size = map
            .get("pooler_hidden_size")
            .and_then(Value::as_u64)
            .map_or(hidden, |e| e as usize);
        let legacy = map.get("legacy").and_then(Value::as_bool).unwrap_or(true);
        let inner: debertav2::Config =
            serde_json::from_value(raw).map_err(|source| ModelError::Config {
                path: "config.json".into(),
                source,
            })?;
        Ok(Self {
            inner,
            pooler_hidden_size,
            pooler_hidden_act,
            hidden_act,
            embedding_size,
            legacy,
        })
    }
}

/// The DeBERTa-v2 base model.
pub(crate) struct DebertaV2 {
    model: debertav2::DebertaV2Model,
}

impl std::fmt::Debug for DebertaV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DebertaV2")
    }
}

impl DebertaV2 {
    /// Loads from `vb` positioned at the base model (`embeddings.*`, `encoder.*`).
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        Ok(Self {
            model: debertav2::DebertaV2Model::load(vb.clone(), &cfg.inner)?,
        })
    }

    /// The last hidden state `[B, T, H]`.
    pub(crate) fn forward(&self, batch: &BatchTensors) -> Result<Tensor> {
        Ok(self.model.forward(
            &batch.input_ids,
            Some(batch.type_ids.clone()),
            Some(batch.mask.clone()),
        )?)
    }
}
