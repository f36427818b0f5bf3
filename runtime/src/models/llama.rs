//! The Llama family (`LlamaForCausalLM`, and `MistralForCausalLM` / `Qwen2ForCausalLM` /
//! `Phi3ForCausalLM` / `GemmaForCausalLM`, which have the same blocks: Qwen2 adds Q/K/V biases;
//! Phi-3 fuses Q/K/V into `qkv_proj` and gate/up into `gate_up_proj`, which are split at load;
//! Gemma scales the embeddings by √hidden, its RMSNorms multiply by `1 + weight`, and its MLP is
//! gated GELU (tanh)): RMSNorm, rotary positions (`rope.rs`: `rope_theta`,
//! `partial_rotary_factor`, `rope_scaling`), grouped-query attention, gated MLP. Written here
//! rather than taken from candle-transformers because its Llama keeps one shared cache for a
//! single sequence, while generation here keeps one cache per sequence and batches rows at
//! different positions. Mistral's, Phi-3's and Qwen2's `sliding_window` masks the keys older
//! than the window in every layer (see [`sliding_window`]).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/llama/modeling_llama.py
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/phi3/modeling_phi3.py
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/gemma/modeling_gemma.py

use candle_core::Tensor;
use candle_nn::{Embedding, Module, VarBuilder};
use serde_json::Value;

use super::decoder::{
    Heads, KvCache, Pass, Rows, Step, advance, attend, config_f64, config_usize, logits_rows,
    rms_norm,
};
use super::kernels::f32_slice;
use super::layers::{self, Activation, Linear};
use super::rope::Rope;
use super::{ModelError, Result, WeightDtype};

#[derive(Debug)]
struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A Llama-family causal LM.
#[derive(Debug)]
pub struct Llama {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    rope: Rope,
    /// Mistral's and Phi-3's sliding window.
    window: Option<usize>,
    /// The MLP's gate activation.
    act: Activation,
    /// Gemma: the embeddings are multiplied by √hidden.
    embed_scale: Option<f64>,
    max_positions: Option<usize>,
    /// Phi-3: a longrope row reaching `original_max_position_embeddings` recomputes its cache
    /// (only `Phi3ForCausalLM` does this in transformers; a Llama with longrope keeps its cache).
    recompute_at_switch: bool,
}

/// A projection, packed for [`super::kernels::matmul_panels`] (as `dtype`).
fn linear(
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    vb: VarBuilder<'_>,
    dtype: WeightDtype,
) -> Result<Linear> {
    if bias {
        layers::linear(in_dim, out_dim, vb)?.packed_as(dtype)
    } else {
        layers::linear_no_bias(in_dim, out_dim, vb)?.packed_as(dtype)
    }
}

impl Llama {
    /// Loads `model.*` and `lm_head.weight` (or the tied embeddings), the projections and the
    /// LM head stored as `dtype` (the embeddings and norms stay f32).
    pub(crate) fn load(
        vb: &VarBuilder<'_>,
        cfg: &Value,
        model_type: &str,
        dtype: WeightDtype,
    ) -> Result<Self> {
        let hidden = config_usize(cfg, "hidden_size")?;
        let heads = config_usize(cfg, "num_attention_heads")?;
        let kv_heads = config_usize(cfg, "num_key_value_heads").unwrap_or(heads);
        let layers = config_usize(cfg, "num_hidden_layers")?;
        let vocab = config_usize(cfg, "vocab_size")?;
        let inter = config_usize(cfg, "intermediate_size")?;
        let head_dim = config_usize(cfg, "head_dim").unwrap_or(hidden / heads.max(1));
        let eps = config_f64(cfg, "rms_norm_eps", 1e-6);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(ModelError::ConfigValue {
                key: "num_key_value_heads".into(),
                reason: format!("{heads} heads are not a multiple of {kv_heads} key/value heads"),
            });
        }
        let rope = Rope::from_config(cfg, head_dim)?;
        let max_positions = cfg
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|v| v as usize);
        let window = sliding_window(cfg, model_type)?;
        let gemma = model_type == "gemma";
        let act = Activation::from_name(
            cfg.get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or(if gemma { "gelu_pytorch_tanh" } else { "silu" }),
        )?;
        let phi3 = model_type == "phi3";
        let qkv_bias = model_type == "qwen2"
            || cfg.get("attention_bias").and_then(Value::as_bool) == Some(true);
        let mlp_bias = cfg.get("mlp_bias").and_then(Value::as_bool) == Some(true);
        let m = vb.pp("model");
        let embed = candle_nn::embedding(vocab, hidden, m.pp("embed_tokens"))?;
        let layers = (0..layers)
            .map(|i| {
                let l = m.pp(format!("layers.{i}"));
                let a = l.pp("self_attn");
                let p = l.pp("mlp");
                let norm = |name: &str| norm_weight(&l.pp(name), hidden, gemma);
                let (q, k, v) = if phi3 {
                    let (qd, kvd) = (heads * head_dim, kv_heads * head_dim);
                    let w = a.pp("qkv_proj").get((qd + 2 * kvd, hidden), "weight")?;
                    (
                        Linear::new(w.narrow(0, 0, qd)?, None)?.packed_as(dtype)?,
                        Linear::new(w.narrow(0, qd, kvd)?, None)?.packed_as(dtype)?,
                        Linear::new(w.narrow(0, qd + kvd, kvd)?, None)?.packed_as(dtype)?,
                    )
                } else {
                    (
                        linear(hidden, heads * head_dim, qkv_bias, a.pp("q_proj"), dtype)?,
                        linear(hidden, kv_heads * head_dim, qkv_bias, a.pp("k_proj"), dtype)?,
                        linear(hidden, kv_heads * head_dim, qkv_bias, a.pp("v_proj"), dtype)?,
                    )
                };
                let (gate, up) = if phi3 {
                    let w = p.pp("gate_up_proj").get((2 * inter, hidden), "weight")?;
                    (
                        Linear::new(w.narrow(0, 0, inter)?, None)?.packed_as(dtype)?,
                        Linear::new(w.narrow(0, inter, inter)?, None)?.packed_as(dtype)?,
                    )
                } else {
                    (
                        linear(hidden, inter, mlp_bias, p.pp("gate_proj"), dtype)?,
                        linear(hidden, inter, mlp_bias, p.pp("up_proj"), dtype)?,
                    )
                };
                Ok(Layer {
                    input_norm: norm("input_layernorm")?,
                    q,
                    k,
                    v,
                    o: linear(
                        heads * head_dim,
                        hidden,
                        model_type == "llama"
                            && cfg.get("attention_bias").and_then(Value::as_bool) == Some(true),
                        a.pp("o_proj"),
                        dtype,
                    )?,
                    post_norm: norm("post_attention_layernorm")?,
                    gate,
                    up,
                    down: linear(inter, hidden, mlp_bias, p.pp("down_proj"), dtype)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = norm_weight(&m.pp("norm"), hidden, gemma)?;
        // Gemma's config ties by default (transformers then leaves the key out).
        let tied = cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(gemma);
        let lm_head = if !tied && vb.contains_tensor("lm_head.weight") {
            Linear::new(vb.get((vocab, hidden), "lm_head.weight")?, None)?.packed_as(dtype)?
        } else {
            Linear::new(embed.embeddings().clone(), None)?.packed_as(dtype)?
        };
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            heads,
            kv_heads,
            head_dim,
            eps,
            rope,
            window,
            act,
            // transformers: torch.tensor(hidden_size ** 0.5, dtype=hidden_states.dtype).
            embed_scale: gemma.then(|| f64::from((hidden as f64).sqrt() as f32)),
            max_positions,
            recompute_at_switch: phi3,
        })
    }

    /// `max_position_embeddings`.
    pub(crate) fn max_positions(&self) -> Option<usize> {
        self.max_positions
    }

    /// Rotates the first `rope.dim()` dimensions of `x` (`[1, N, heads, head_dim]`); the rest
    /// pass unchanged (`partial_rotary_factor`).
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let dim = self.rope.dim();
        let x = x.contiguous()?;
        if dim == self.head_dim {
            return Ok(candle_nn::rotary_emb::rope_thd(&x, cos, sin)?);
        }
        let rot = candle_nn::rotary_emb::rope_thd(&x.narrow(3, 0, dim)?.contiguous()?, cos, sin)?;
        let pass = x.narrow(3, dim, self.head_dim - dim)?;
        Ok(Tensor::cat(&[&rot, &pass], 3)?.contiguous()?)
    }

    /// See [`super::decoder::CausalLm::forward`].
    ///
    /// Phi-3 with longrope: a row whose cached decode step puts its new token at position
    /// `original_max_position_embeddings` drops its cache and runs its whole sequence again,
    /// alone, now with the long factors, as transformers 4.51.3's
    /// `Phi3ForCausalLM.prepare_inputs_for_generation` does (the keys cached with the short
    /// factors would otherwise stay); the other rows of the step run together as usual.
    pub(crate) fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let Some(original) = self
            .rope
            .switch_position()
            .filter(|_| self.recompute_at_switch)
        else {
            return self.forward_rows(steps);
        };
        let crosses = |s: &Step<'_>| {
            !s.cache.is_empty()
                && s.cache.len() <= original
                && s.cache.len() + s.tokens.len() > original
        };
        if !steps.iter().any(crosses) {
            return self.forward_rows(steps);
        }
        let mut logits: Vec<Option<Vec<f32>>> = vec![None; steps.len()];
        let mut rest = Vec::with_capacity(steps.len());
        let mut rest_at = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter_mut().enumerate() {
            if crosses(s) {
                let mut all = s.cache.tokens().to_vec();
                all.extend_from_slice(s.tokens);
                let mut fresh = KvCache::default();
                let mut row = self.forward_rows(&mut [Step {
                    tokens: &all,
                    cache: &mut fresh,
                }])?;
                *s.cache = fresh;
                logits[i] = row.pop();
            } else {
                rest.push(Step {
                    tokens: s.tokens,
                    cache: &mut *s.cache,
                });
                rest_at.push(i);
            }
        }
        if !rest.is_empty() {
            for (i, l) in rest_at.into_iter().zip(self.forward_rows(&mut rest)?) {
                logits[i] = Some(l);
            }
        }
        logits
            .into_iter()
            .map(|l| {
                l.ok_or_else(|| ModelError::BadBatch {
                    reason: "a row got no logits".into(),
                })
            })
            .collect()
    }

    /// One pass over `steps` (no cache switch).
    pub(super) fn forward_rows(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let device = self.embed.embeddings().device().clone();
        let pass = Pass::new(steps)?;
        let n = pass.tokens();
        let (cos, sin) = self.rope.tables(&pass.positions, &pass.lens(), &device)?;
        let ids = Tensor::from_slice(&pass.ids, n, &device)?;
        // `[N, hidden]`: every row's new tokens, end to end.
        let mut h = self.embed.forward(&ids)?;
        if let Some(scale) = self.embed_scale {
            h = (h * scale)?;
        }
        let mut caches: Vec<&mut KvCache> = steps.iter_mut().map(|s| &mut *s.cache).collect();
        let heads = Heads {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            scale: (1.0 / (self.head_dim as f64).sqrt()) as f32,
            window: self.window,
        };
        let (qw, kvw) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        for (i, layer) in self.layers.iter().enumerate() {
            let x = rms_norm(&h, &layer.input_norm, self.eps)?;
            // `[1, N, heads, head_dim]` for the rotation, then `[N, width]` again.
            let rotated = |y: Tensor, count: usize| -> Result<Tensor> {
                let y = y.reshape((1, n, count, self.head_dim))?;
                Ok(self
                    .rotate(&y, &cos, &sin)?
                    .reshape((n, count * self.head_dim))?)
            };
            let q = rotated(layer.q.forward(&x)?, self.heads)?;
            let k = rotated(layer.k.forward(&x)?, self.kv_heads)?;
            let v = layer.v.forward(&x)?.contiguous()?;
            let ctx = {
                let (qs, ql) = q.storage_and_layout();
                let (ks, kl) = k.storage_and_layout();
                let (vs, vl) = v.storage_and_layout();
                let rows = |data, stride| Rows {
                    data,
                    stride,
                    offset: 0,
                };
                attend(
                    &pass,
                    &mut caches,
                    i,
                    rows(f32_slice(&qs, ql, "q")?, qw),
                    rows(f32_slice(&ks, kl, "k")?, kvw),
                    rows(f32_slice(&vs, vl, "v")?, kvw),
                    heads,
                )
            };
            let ctx = Tensor::from_vec(ctx, (n, qw), &device)?;
            h = (h + layer.o.forward(&ctx)?)?;
            let x = rms_norm(&h, &layer.post_norm, self.eps)?;
            let mlp = layer
                .down
                .forward(&(self.act.forward(&layer.gate.forward(&x)?)? * layer.up.forward(&x)?)?)?;
            h = (h + mlp)?;
        }
        drop(caches);
        advance(steps);
        let last = h.index_select(&pass.last_tokens(&device)?, 0)?;
        let logits = self
            .lm_head
            .forward(&rms_norm(&last, &self.norm, self.eps)?)?;
        logits_rows(&logits)
    }
}

/// An RMSNorm weight; Gemma's norms multiply by `1 + weight`, folded in here.
fn norm_weight(vb: &VarBuilder<'_>, hidden: usize, gemma: bool) -> Result<Tensor> {
    let w = vb.get(hidden, "weight")?;
    Ok(if gemma { (w + 1.0)? } else { w })
}

/// The sliding window transformers 4.51 applies to every layer on CPU (its sdpa and eager
/// masks): Mistral's and Phi-3's `sliding_window`, and Qwen2's too, whatever
/// `use_sliding_window` and `max_window_layers` say (those reach flash attention only, which
/// the reference does not run). `MistralConfig` and `Qwen2Config` default the window to 4096
/// when the key is absent (transformers 4.51.3), `Phi3Config` to none.
#[allow(clippy::unnecessary_wraps)] // one signature for the checks a family may add
fn sliding_window(cfg: &Value, model_type: &str) -> Result<Option<usize>> {
    let window = cfg.get("sliding_window");
    let size = window.and_then(Value::as_u64).map(|w| w as usize);
    Ok(match model_type {
        // `MistralConfig` and `Qwen2Config` default the window to 4096 when the key is absent
        // (an explicit null is no window); `Phi3Config` defaults it to none.
        "mistral" | "qwen2" if window.is_none() => Some(4096),
        "mistral" | "phi3" => size.filter(|&w| w > 0),
        "qwen2" => size.filter(|&w| w > 0),
        _ => None,
    })
}

/// [`sliding_window`], for the tests.
#[cfg(test)]
pub(super) fn sliding_window_of(cfg: &Value, model_type: &str) -> Option<usize> {
    sliding_window(cfg, model_type).ok().flatten()
}
