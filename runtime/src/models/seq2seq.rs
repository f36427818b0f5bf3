//! Encoder-decoder models for generation: T5 (`t5.rs`), BART and Marian (`bart.rs`), behind one
//! interface: encode the source once, then decode one token per row per step with a KV cache
//! that keeps each layer's self-attention keys/values (grown a step at a time) and its
//! cross-attention keys/values (computed from the encoder output once). Beam search reorders the
//! cache rows between steps ([`DecoderCache::reorder`]).
//!
//! Written here rather than taken from candle-transformers 0.11: its `t5` keeps the cache in
//! private fields (no beam reordering) and takes no per-step position offset for cached
//! relative-position bias, and its `marian` has no BART (learned positions, `layernorm_embedding`).

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use serde_json::Value;

use super::{ModelConfig, ModelError, Result, WeightFiles};

pub use super::bart::Bart;
pub use super::t5::T5;

/// The ids generation needs from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Seq2SeqIds {
    /// First decoder input.
    pub decoder_start_token_id: u32,
    /// Size of the logits.
    pub vocab_size: usize,
    /// Decoder positions available (`None`: relative positions, unbounded).
    pub max_decoder_positions: Option<usize>,
    /// Encoder positions available (`None`: unbounded).
    pub max_encoder_positions: Option<usize>,
}

/// One layer's cached keys and values, `[B, heads, T, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    /// Self-attention keys/values of the tokens decoded so far.
    pub self_kv: Option<(Tensor, Tensor)>,
    /// Cross-attention keys/values of the encoder output.
    pub cross_kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Appends this step's self-attention keys/values to the cached ones; returns them all.
    pub(crate) fn push_self(&mut self, k: Tensor, v: Tensor) -> Result<&(Tensor, Tensor)> {
        let kv = append_kv(self.self_kv.take(), k, v)?;
        Ok(self.self_kv.insert(kv))
    }

    /// The cross-attention keys/values: computed by `compute` (from the encoder output) on the
    /// first step, cached for the later ones.
    pub(crate) fn cross(
        &mut self,
        compute: impl FnOnce() -> Result<(Tensor, Tensor)>,
    ) -> Result<&(Tensor, Tensor)> {
        let kv = match self.cross_kv.take() {
            Some(kv) => kv,
            None => compute()?,
        };
        Ok(self.cross_kv.insert(kv))
    }
}

/// The decoder's KV cache for a batch of rows.
#[derive(Debug, Clone, Default)]
pub struct DecoderCache {
    /// Per decoder layer.
    pub layers: Vec<LayerCache>,
    /// Tokens decoded so far (the position of the next one).
    pub len: usize,
}

impl DecoderCache {
    /// An empty cache for `layers` decoder layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); layers],
            len: 0,
        }
    }

    /// Keeps rows `rows` (row `i` of the new cache is old row `rows[i]`): beam reordering.
    pub fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        let Some(first) = self.layers.iter().find_map(|l| l.self_kv.as_ref()) else {
            return Ok(());
        };
        let index = Tensor::new(rows, first.0.device())?;
        let pick = |kv: &mut Option<(Tensor, Tensor)>| -> Result<()> {
            if let Some((k, v)) = kv.take() {
                *kv = Some((k.index_select(&index, 0)?, v.index_select(&index, 0)?));
            }
            Ok(())
        };
        for layer in &mut self.layers {
            pick(&mut layer.self_kv)?;
            pick(&mut layer.cross_kv)?;
        }
        Ok(())
    }
}

/// An encoder-decoder language model.
pub trait Seq2SeqModel: Send {
    /// The generation ids of `config.json`.
    fn ids(&self) -> &Seq2SeqIds;
    /// Encodes one source sequence: `[1, S, D]`.
    fn encode(&self, ids: &[u32]) -> Result<Tensor>;
    /// A fresh cache.
    fn new_cache(&self) -> DecoderCache;
    /// Decodes one step: `tokens[i]` is row i's newest token; `encoder` is `[B, S, D]` (the
    /// source for each row). Returns the next-token logits `[B, V]` in f32.
    fn decode_step(
        &self,
        tokens: &[u32],
        encoder: &Tensor,
        cache: &mut DecoderCache,
    ) -> Result<Tensor>;
}

/// Loads the encoder-decoder model of `config` from `dir`.
pub fn load(dir: &Path, config: &ModelConfig) -> Result<Box<dyn Seq2SeqModel>> {
    let files = WeightFiles::find(dir)?;
    let vb = files.var_builder(DType::F32, &Device::Cpu)?;
    match config.model_type.as_str() {
        "t5" => Ok(Box::new(T5::load(&vb, &config.raw)?)),
        "bart" | "marian" => Ok(Box::new(Bart::load(&vb, &config.raw, &config.model_type)?)),
        other => Err(ModelError::UnsupportedArchitecture {
            model_type: other.to_owned(),
        }),
    }
}

/// Whether `model_type` is an encoder-decoder family served here.
pub fn is_seq2seq(model_type: &str) -> bool {
    matches!(model_type, "t5" | "bart" | "marian")
}

/// A `config.json` number, or `default`.
pub(crate) fn cfg_usize(raw: &Value, key: &str, default: Option<usize>) -> Result<usize> {
    match raw.get(key).and_then(Value::as_u64) {
        Some(v) => Ok(v as usize),
        None => default.ok_or_else(|| ModelError::ConfigValue {
            key: key.to_owned(),
            reason: "missing or not a non-negative integer".to_owned(),
        }),
    }
}

/// Splits `[B, T, H*Dh]` into `[B, H, T, Dh]`.
pub(crate) fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    Ok(x.reshape((b, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Joins `[B, H, T, Dh]` into `[B, T, H*Dh]`.
pub(crate) fn join_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, dh) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * dh))?)
}

/// softmax(q kᵀ + bias) v for `[B, H, Tq, Dh]` q and `[B, H, Tk, Dh]` k, v.
pub(crate) fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    Ok(probs.matmul(&v.contiguous()?)?)
}

/// Appends the new keys/values to the cached ones along the time axis.
fn append_kv(cached: Option<(Tensor, Tensor)>, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
    Ok(match cached {
        Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        None => (k, v),
    })
}
