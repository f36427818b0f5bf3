//! GPT-2 (`GPT2LMHeadModel`), written here because candle-transformers 0.11 has none: learned
//! positions, pre-LayerNorm blocks, fused Q/K/V (`Conv1D`, stored `[in, out]`), `gelu_new`, and
//! the LM head tied to the token embeddings. Runs on the per-sequence [`KvCache`]s of
//! `decoder.rs`.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/gpt2/modeling_gpt2.py

use candle_core::Tensor;
use candle_nn::{Embedding, LayerNorm, Module, VarBuilder};
use serde_json::Value;

use super::decoder::{
    Heads, KvCache, Pass, Rows, Step, advance, attend, config_f64, config_usize, logits_rows,
};
use super::kernels::f32_slice;
use super::layers::{Activation, Linear};
use super::{ModelError, Result, WeightDtype};

/// `Conv1D(nf, nx)`: weight `[in, out]` — transposed once, here, to a `Linear`'s `[out, in]`.
fn conv1d(
    in_dim: usize,
    out_dim: usize,
    vb: &VarBuilder<'_>,
    dtype: WeightDtype,
) -> Result<Linear> {
    let w = vb.get((in_dim, out_dim), "weight")?;
    let b = vb.get(out_dim, "bias")?;
    Linear::new(w.t()?.contiguous()?, Some(b))?.packed_as(dtype)
}

// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/gpt2/modeling_gpt2.py#L565
#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// GPT-2 with its LM head.
#[derive(Debug)]
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    heads: usize,
    hidden: usize,
    n_positions: usize,
    act: Activation,
    scale: f64,
}

impl Gpt2 {
    /// Loads `transformer.*` (and `lm_head.weight` when not tied) from `vb`, the projections
    /// and the LM head stored as `dtype` (the embeddings and LayerNorms stay f32).
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Value, dtype: WeightDtype) -> Result<Self> {
        let hidden = config_usize(cfg, "n_embd")?;
        let heads = config_usize(cfg, "n_head")?;
        let layers = config_usize(cfg, "n_layer")?;
        let vocab = config_usize(cfg, "vocab_size")?;
        let n_positions = config_usize(cfg, "n_positions")?;
        let inner = cfg
            .get("n_inner")
            .and_then(Value::as_u64)
            .map_or(4 * hidden, |v| v as usize);
        let eps = config_f64(cfg, "layer_norm_epsilon", 1e-5);
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(ModelError::ConfigValue {
                key: "n_head".into(),
                reason: format!("n_embd {hidden} is not a multiple of {heads} heads"),
            });
        }
        for (key, unsupported) in [
            ("scale_attn_by_inverse_layer_idx", true),
            ("reorder_and_upcast_attn", true),
            ("scale_attn_weights", false),
        ] {
            if cfg.get(key).and_then(Value::as_bool) == Some(unsupported) {
                return Err(ModelError::ConfigValue {
                    key: key.into(),
                    reason: format!("{unsupported} is not supported"),
                });
            }
        }
        let act = Activation::from_name(
            cfg.get("activation_function")
                .and_then(Value::as_str)
                .unwrap_or("gelu_new"),
        )?;
        let t = vb.pp("transformer");
        let wte = candle_nn::embedding(vocab, hidden, t.pp("wte"))?;
        let wpe = candle_nn::embedding(n_positions, hidden, t.pp("wpe"))?;
        let blocks = (0..layers)
            .map(|i| {
                let b = t.pp(format!("h.{i}"));
                Ok(Block {
                    ln_1: candle_nn::layer_norm(hidden, eps, b.pp("ln_1"))?,
                    c_attn: conv1d(hidden, 3 * hidden, &b.pp("attn.c_attn"), dtype)?,
                    attn_proj: conv1d(hidden, hidden, &b.pp("attn.c_proj"), dtype)?,
                    ln_2: candle_nn::layer_norm(hidden, eps, b.pp("ln_2"))?,
                    c_fc: conv1d(hidden, inner, &b.pp("mlp.c_fc"), dtype)?,
                    mlp_proj: conv1d(inner, hidden, &b.pp("mlp.c_proj"), dtype)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = candle_nn::layer_norm(hidden, eps, t.pp("ln_f"))?;
        let lm_head = if vb.contains_tensor("lm_head.weight")
            && cfg.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false)
        {
            Linear::new(vb.get((vocab, hidden), "lm_head.weight")?, None)?.packed_as(dtype)?
        } else {
            Linear::new(wte.embeddings().clone(), None)?.packed_as(dtype)?
        };
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            heads,
            hidden,
            n_positions,
            act,
            scale: 1.0 / ((hidden / heads) as f64).sqrt(),
        })
    }

    /// The number of learned positions.
    pub(crate) fn max_positions(&self) -> usize {
        self.n_positions
    }

    /// See [`super::decoder::CausalLm::forward`].
    pub(crate) fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let device = self.wte.embeddings().device().clone();
        let pass = Pass::new(steps)?;
        if let Some(&p) = pass.positions.iter().max()
            && p as usize >= self.n_positions
        {
            return Err(ModelError::BadBatch {
                reason: format!(
                    "position {p} is past the model's {} positions",
                    self.n_positions
                ),
            });
        }
        let n = pass.tokens();
        let ids = Tensor::from_slice(&pass.ids, n, &device)?;
        let pos = Tensor::from_slice(&pass.positions, n, &device)?;
        // `[N, hidden]`: every row's new tokens, end to end.
        let mut h = (self.wte.forward(&ids)? + self.wpe.forward(&pos)?)?;
        let hidden = self.hidden;
        let heads = Heads {
            heads: self.heads,
            kv_heads: self.heads,
            head_dim: hidden / self.heads,
            scale: self.scale as f32,
            window: None,
        };
        let mut caches: Vec<&mut KvCache> = steps.iter_mut().map(|s| &mut *s.cache).collect();
        for (i, block) in self.blocks.iter().enumerate() {
            let a = block.ln_1.forward(&h)?;
            let qkv = block.c_attn.forward(&a)?.contiguous()?;
            let ctx = {
                let (s, l) = qkv.storage_and_layout();
                let data = f32_slice(&s, l, "qkv")?;
                let at = |offset| Rows {
                    data,
                    stride: 3 * hidden,
                    offset,
                };
                attend(
                    &pass,
                    &mut caches,
                    i,
                    at(0),
                    at(hidden),
                    at(2 * hidden),
                    heads,
                )
            };
            let ctx = Tensor::from_vec(ctx, (n, hidden), &device)?;
            h = (h + block.attn_proj.forward(&ctx)?)?;
            let m = block.ln_2.forward(&h)?;
            let m = block
                .mlp_proj
                .forward(&block.c_fc.forward_act(&m, self.act)?)?;
            h = (h + m)?;
        }
        drop(caches);
        advance(steps);
        let last = h.index_select(&pass.last_tokens(&device)?, 0)?;
        let logits = self.lm_head.forward(&self.ln_f.forward(&last)?)?;
        logits_rows(&logits)
    }
}
