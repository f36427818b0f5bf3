//! Encoder-decoder models for generation: T5 (`t5.rs`), BART and Marian (`bart.rs`), behind one
//! interface: encode the source once, then decode one token per row per step with a KV cache
//! that keeps each layer's self-attention keys/values (grown a step at a time) and its
//! cross-attention keys/values (computed from the encoder output once). Beam search reorders the
//! cache rows between steps ([`DecoderCache::reorder`]).
//!
//! Continuous batching (issue #11) steps rows of different requests together
//! ([`Seq2SeqModel::decode_rows`]): each row keeps its own single-row cache (its decoder
//! keys/values, and the cross-attention keys/values of its request's source, computed once when
//! the request starts); a step pads every row's keys on the left to the longest and masks the
//! padding (-inf before the softmax), so a row's logits do not depend on the rows beside it.
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

/// One row of a batched decoder step: its newest token and its own single-row cache, whose
/// cross-attention keys/values are already computed (by a first [`Seq2SeqModel::decode_step`]).
#[derive(Debug)]
pub struct DecodeRow<'a> {
    /// The row's newest token.
    pub token: u32,
    /// The row's cache (`B = 1`), extended by the step.
    pub cache: &'a mut DecoderCache,
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
    /// Decodes one step for rows that each have their own cache, at their own positions and
    /// with sources of their own lengths; returns each row's next-token logits, in order.
    fn decode_rows(&self, rows: &mut [DecodeRow<'_>]) -> Result<Vec<Vec<f32>>>;
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

/// Appends each row's new self-attention keys/values (`k`, `v`: `[B, H, 1, Dh]`, row `i` for
/// `rows[i]`) to the row's cache of decoder layer `layer`; returns every row's keys/values.
pub(crate) fn push_self_kv(
    rows: &mut [DecodeRow<'_>],
    layer: usize,
    k: &Tensor,
    v: &Tensor,
) -> Result<Vec<(Tensor, Tensor)>> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter_mut().enumerate() {
        let lc = row
            .cache
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::BadBatch {
                reason: format!("a row's cache has no decoder layer {layer}"),
            })?;
        let kv = append_kv(
            lc.self_kv.take(),
            k.narrow(0, i, 1)?.contiguous()?,
            v.narrow(0, i, 1)?.contiguous()?,
        )?;
        lc.self_kv = Some(kv.clone());
        out.push(kv);
    }
    Ok(out)
}

/// Every row's cross-attention keys/values of decoder layer `layer`.
pub(crate) fn cross_kvs(rows: &[DecodeRow<'_>], layer: usize) -> Result<Vec<(Tensor, Tensor)>> {
    rows.iter()
        .map(|row| {
            row.cache
                .layers
                .get(layer)
                .and_then(|l| l.cross_kv.clone())
                .ok_or_else(|| ModelError::BadBatch {
                    reason: "a row joined a decoder step before its source was encoded".into(),
                })
        })
        .collect()
}

/// Attention of one query a row (`q`: `[B, H, 1, Dh]`) over each row's own keys/values
/// (`[1, H, len_i, Dh]`), with an optional bias a row (`[1, H, 1, len_i]`, T5's positions):
/// keys and values are padded on the left to the longest row and the padding is masked, so
/// each row attends to exactly its own keys.
pub(crate) fn attend_rows(
    q: &Tensor,
    kvs: &[(Tensor, Tensor)],
    biases: Option<&[Tensor]>,
) -> Result<Tensor> {
    let lens = kvs
        .iter()
        .map(|(k, _)| k.dim(2))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let longest = lens.iter().copied().max().unwrap_or(0);
    let padded = lens.iter().any(|&l| l != longest);
    let device = q.device();
    let pad = |x: &Tensor, n: usize| -> Result<Tensor> {
        if n == 0 {
            return Ok(x.clone());
        }
        let (_, h, _, d) = x.dims4()?;
        let zeros = Tensor::zeros((1, h, n, d), x.dtype(), x.device())?;
        Ok(Tensor::cat(&[&zeros, x], 2)?)
    };
    let mut keys = Vec::with_capacity(kvs.len());
    let mut values = Vec::with_capacity(kvs.len());
    let mut masks = Vec::with_capacity(kvs.len());
    for (i, ((k, v), &len)) in kvs.iter().zip(&lens).enumerate() {
        let n = longest - len;
        keys.push(pad(k, n)?);
        values.push(pad(v, n)?);
        let row_bias = match biases {
            Some(b) => Some(b.get(i).cloned().ok_or_else(|| ModelError::BadBatch {
                reason: "fewer position biases than rows".into(),
            })?),
            None if padded => Some(Tensor::zeros((1, 1, 1, len), DType::F32, device)?),
            None => None,
        };
        if let Some(bias) = row_bias {
            masks.push(if n == 0 {
                bias
            } else {
                let h = bias.dim(1)?;
                let blocked = Tensor::full(f32::NEG_INFINITY, (1, h, 1, n), device)?;
                Tensor::cat(&[&blocked, &bias], 3)?
            });
        }
    }
    let keys = Tensor::cat(&keys, 0)?;
    let values = Tensor::cat(&values, 0)?;
    let mask = if masks.is_empty() {
        None
    } else {
        Some(Tensor::cat(&masks, 0)?)
    };
    attend(q, &keys, &values, mask.as_ref())
}

/// The last-position logits `[B, V]` of a step as one vector a row.
pub(crate) fn logit_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}
