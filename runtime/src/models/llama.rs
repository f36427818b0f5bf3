//! The Llama family (`LlamaForCausalLM`, and `MistralForCausalLM` / `Qwen2ForCausalLM`, which
//! have the same blocks: Qwen2 adds Q/K/V biases): RMSNorm, rotary positions (default rope,
//! `rope_theta`), grouped-query attention, SwiGLU MLP. Written here rather than taken from
//! candle-transformers because its Llama keeps one shared cache for a single sequence, while
//! generation here keeps one cache per sequence and batches rows at different positions.
//! Not supported (refused at load): `rope_scaling`, Mistral's sliding window shorter than the
//! sequence is not applied (sequences here stay within `max_position_embeddings`).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/llama/modeling_llama.py

use candle_core::{DType, Tensor};
use candle_nn::{Embedding, Module, VarBuilder};
use serde_json::Value;

use super::decoder::{
    KvCache, Step, advance, attend, config_f64, config_usize, input_ids, last_logits, positions,
    rms_norm,
};
use super::layers::{self, Linear};
use super::{ModelError, Result};

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
    /// `1 / theta^(2i/d)`, `[d/2]`.
    inv_freq: Vec<f32>,
    max_positions: Option<usize>,
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder<'_>) -> Result<Linear> {
    if bias {
        layers::linear(in_dim, out_dim, vb)
    } else {
        layers::linear_no_bias(in_dim, out_dim, vb)
    }
}

impl Llama {
    /// Loads `model.*` and `lm_head.weight` (or the tied embeddings).
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Value, model_type: &str) -> Result<Self> {
        let hidden = config_usize(cfg, "hidden_size")?;
        let heads = config_usize(cfg, "num_attention_heads")?;
        let kv_heads = config_usize(cfg, "num_key_value_heads").unwrap_or(heads);
        let layers = config_usize(cfg, "num_hidden_layers")?;
        let vocab = config_usize(cfg, "vocab_size")?;
        let inter = config_usize(cfg, "intermediate_size")?;
        let head_dim = config_usize(cfg, "head_dim").unwrap_or(hidden / heads.max(1));
        let eps = config_f64(cfg, "rms_norm_eps", 1e-6);
        let theta = config_f64(cfg, "rope_theta", 10_000.0);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(ModelError::ConfigValue {
                key: "num_key_value_heads".into(),
                reason: format!("{heads} heads are not a multiple of {kv_heads} key/value heads"),
            });
        }
        if cfg.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            return Err(ModelError::ConfigValue {
                key: "rope_scaling".into(),
                reason: "scaled rotary positions are not supported yet".into(),
            });
        }
        let act = cfg
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(ModelError::UnsupportedActivation { name: act.into() });
        }
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
                Ok(Layer {
                    input_norm: l.pp("input_layernorm").get(hidden, "weight")?,
                    q: linear(hidden, heads * head_dim, qkv_bias, a.pp("q_proj"))?,
                    k: linear(hidden, kv_heads * head_dim, qkv_bias, a.pp("k_proj"))?,
                    v: linear(hidden, kv_heads * head_dim, qkv_bias, a.pp("v_proj"))?,
                    o: linear(
                        heads * head_dim,
                        hidden,
                        model_type == "llama"
                            && cfg.get("attention_bias").and_then(Value::as_bool) == Some(true),
                        a.pp("o_proj"),
                    )?,
                    post_norm: l.pp("post_attention_layernorm").get(hidden, "weight")?,
                    gate: linear(hidden, inter, mlp_bias, p.pp("gate_proj"))?,
                    up: linear(hidden, inter, mlp_bias, p.pp("up_proj"))?,
                    down: linear(inter, hidden, mlp_bias, p.pp("down_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = m.pp("norm").get(hidden, "weight")?;
        let tied = cfg.get("tie_word_embeddings").and_then(Value::as_bool) == Some(true);
        let lm_head = if !tied && vb.contains_tensor("lm_head.weight") {
            Linear::new(vb.get((vocab, hidden), "lm_head.weight")?, None)?
        } else {
            Linear::new(embed.embeddings().clone(), None)?
        };
        // transformers: inv_freq = 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            heads,
            kv_heads,
            head_dim,
            eps,
            inv_freq,
            max_positions: cfg
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .map(|v| v as usize),
        })
    }

    /// `max_position_embeddings`.
    pub(crate) fn max_positions(&self) -> Option<usize> {
        self.max_positions
    }

    /// cos and sin of every new token's position, `[B, T, d/2]`.
    fn rotary(
        &self,
        pos: &[u32],
        b: usize,
        t: usize,
        device: &candle_core::Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(pos.len() * half);
        let mut sin = Vec::with_capacity(pos.len() * half);
        for &p in pos {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (b, t, half), device)?,
            Tensor::from_vec(sin, (b, t, half), device)?,
        ))
    }

    /// See [`super::decoder::CausalLm::forward`].
    pub(crate) fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let device = self.embed.embeddings().device().clone();
        let ids = input_ids(steps, &device)?;
        let (b, t) = ids.dims2()?;
        let pos = positions(steps);
        let (cos, sin) = self.rotary(&pos, b, t, &device)?;
        let mut h = self.embed.forward(&ids)?;
        let mut caches: Vec<&mut KvCache> = steps.iter_mut().map(|s| &mut *s.cache).collect();
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for (i, layer) in self.layers.iter().enumerate() {
            let x = rms_norm(&h, &layer.input_norm, self.eps)?;
            let shape = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
                y.reshape((b, t, n, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = shape(layer.q.forward(&x)?, self.heads)?;
            let k = shape(layer.k.forward(&x)?, self.kv_heads)?;
            let v = shape(layer.v.forward(&x)?, self.kv_heads)?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            let ctx = attend(&q, &k, &v, &mut caches, i, scale)?;
            let ctx = ctx
                .transpose(1, 2)?
                .reshape((b, t, self.heads * self.head_dim))?;
            h = (h + layer.o.forward(&ctx)?)?;
            let x = rms_norm(&h, &layer.post_norm, self.eps)?;
            let mlp = layer
                .down
                .forward(&(layer.gate.forward(&x)?.silu()? * layer.up.forward(&x)?)?)?;
            h = (h + mlp)?;
        }
        drop(caches);
        advance(steps);
        let last = h.narrow(1, t - 1, 1)?;
        let logits = self
            .lm_head
            .forward(&rms_norm(&last, &self.norm, self.eps)?)?
            .to_dtype(DType::F32)?;
        last_logits(&logits)
    }
}
