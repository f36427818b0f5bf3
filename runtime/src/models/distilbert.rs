//! DistilBERT, ported from transformers 4.51.3 `models/distilbert/modeling_distilbert.py`.
//!
//! candle-transformers' `distilbert.rs` is not used: it applies the tanh GELU where transformers
//! uses the exact (erf) one for `activation: "gelu"`, which moves logits by ~1e-3.

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::bert::{Layer, LayerNames, LayerSizes};
use super::layers::{self, Activation};
use super::{BatchTensors, ModelError, Result};

/// transformers hard-codes this epsilon for every DistilBERT LayerNorm.
pub(crate) const LAYER_NORM_EPS: f64 = 1e-12;

fn default_activation() -> String {
    "gelu".into()
}

/// `DistilBertConfig` (the fields the forward pass needs).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Config {
    pub(crate) vocab_size: usize,
    pub(crate) dim: usize,
    pub(crate) n_layers: usize,
    pub(crate) n_heads: usize,
    pub(crate) hidden_dim: usize,
    #[serde(default = "default_activation")]
    pub(crate) activation: String,
    pub(crate) max_position_embeddings: usize,
}

// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L89
#[derive(Debug)]
struct Embeddings {
    word: Embedding,
    position: Embedding,
    layer_norm: LayerNorm,
    max_positions: usize,
}

impl Embeddings {
    fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        Ok(Self {
            word: candle_nn::embedding(cfg.vocab_size, cfg.dim, vb.pp("word_embeddings"))?,
            // `sinusoidal_pos_embds` models store the sinusoids in this same weight.
            position: candle_nn::embedding(
                cfg.max_position_embeddings,
                cfg.dim,
                vb.pp("position_embeddings"),
            )?,
            layer_norm: layers::layer_norm(cfg.dim, LAYER_NORM_EPS, vb.pp("LayerNorm"))?,
            max_positions: cfg.max_position_embeddings,
        })
    }

    fn forward(&self, batch: &BatchTensors) -> Result<Tensor> {
        let (_, len) = batch.input_ids.dims2()?;
        if len > self.max_positions {
            return Err(ModelError::BadBatch {
                reason: format!(
                    "{len} tokens is more than `max_position_embeddings` {}",
                    self.max_positions
                ),
            });
        }
        let positions = Tensor::arange(0u32, len as u32, batch.input_ids.device())?;
        let xs = self
            .word
            .forward(&batch.input_ids)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        Ok(self.layer_norm.forward(&xs)?)
    }
}

/// Where a DistilBERT layer's parameters live (`TransformerBlock`: BERT's layer under other
/// names).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L468
const NAMES: LayerNames = LayerNames {
    qkv: ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
    attention_out: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
};

/// The DistilBERT base model (`embeddings.*`, `transformer.layer.{i}.*`).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L579
#[derive(Debug)]
pub(crate) struct DistilBertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl DistilBertModel {
    /// Loads from `vb` positioned at the base model.
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        let embeddings = Embeddings::load(&vb.pp("embeddings"), cfg)?;
        let sizes = LayerSizes {
            hidden: cfg.dim,
            heads: cfg.n_heads,
            intermediate: cfg.hidden_dim,
            eps: LAYER_NORM_EPS,
            act: Activation::from_name(&cfg.activation)?,
        };
        let layers = (0..cfg.n_layers)
            .map(|i| Layer::load_sized(&vb.pp(format!("transformer.layer.{i}")), &sizes, &NAMES))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embeddings, layers })
    }

    /// The same model with every linear layer of the encoder in bf16.
    pub(crate) fn into_bf16(mut self) -> Result<Self> {
        self.layers = self
            .layers
            .into_iter()
            .map(Layer::into_bf16)
            .collect::<Result<_>>()?;
        Ok(self)
    }

    /// The last hidden state `[B, T, dim]`.
    pub(crate) fn forward(&self, batch: &BatchTensors) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(batch)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &batch.additive_mask)?;
        }
        Ok(xs)
    }

    /// The input word embedding matrix `[vocab, dim]` (tied to `vocab_projector`).
    pub(crate) fn word_embeddings(&self) -> &Tensor {
        self.embeddings.word.embeddings()
    }
}
