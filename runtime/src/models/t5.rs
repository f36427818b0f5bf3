//! T5 (`T5ForConditionalGeneration`) as transformers 4.51.3 computes it: RMS layer norms
//! (no mean, no bias) before each sub-layer, unscaled attention with relative-position bias
//! (bidirectional buckets in the encoder, causal in the decoder; computed by the first layer and
//! shared by all), ReLU or gated-GELU feed-forward, and the LM head tied to the shared
//! embeddings with the `d_model^-0.5` rescale (`tie_word_embeddings`, the default).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde_json::Value;

use super::layers::{self, Activation, Linear};
use super::seq2seq::{
    DecodeRow, DecoderCache, Seq2SeqIds, Seq2SeqModel, attend, attend_rows, cfg_usize, cross_kvs,
    join_heads, logit_rows, push_self_kv, split_heads,
};
use super::{ModelError, Result};

/// T5's layer norm: `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(d: usize, eps: f64, vb: &VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            weight: vb.get(d, "weight")?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let variance = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let x = x.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        Ok(x.broadcast_mul(&self.weight)?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    /// `relative_attention_bias` `[buckets, heads]`, first layer only.
    relative_bias: Option<Embedding>,
}

impl Attention {
    fn load(
        d: usize,
        inner: usize,
        heads: usize,
        with_bias: bool,
        buckets: usize,
        vb: &VarBuilder<'_>,
    ) -> Result<Self> {
        let lin = |name: &str, i: usize, o: usize| -> Result<Linear> {
            layers::linear_no_bias(i, o, vb.pp(name))
        };
        let relative_bias = if with_bias {
            Some(Embedding::new(
                vb.get((buckets, heads), "relative_attention_bias.weight")?,
                heads,
            ))
        } else {
            None
        };
        Ok(Self {
            q: lin("q", d, inner)?,
            k: lin("k", d, inner)?,
            v: lin("v", d, inner)?,
            o: lin("o", inner, d)?,
            heads,
            relative_bias,
        })
    }

    fn kv(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            split_heads(&self.k.forward(x)?, self.heads)?,
            split_heads(&self.v.forward(x)?, self.heads)?,
        ))
    }

    fn query(&self, x: &Tensor) -> Result<Tensor> {
        split_heads(&self.q.forward(x)?, self.heads)
    }

    /// The output projection of `[B, H, T, Dh]` attention results.
    fn out(&self, ctx: &Tensor) -> Result<Tensor> {
        Ok(self.o.forward(&join_heads(ctx)?)?)
    }

    fn forward(&self, x: &Tensor, kv: &(Tensor, Tensor), bias: Option<&Tensor>) -> Result<Tensor> {
        let q = split_heads(&self.q.forward(x)?, self.heads)?;
        let ctx = attend(&q, &kv.0, &kv.1, bias)?;
        Ok(self.o.forward(&join_heads(&ctx)?)?)
    }
}

/// transformers' `T5Attention._relative_position_bucket`, in f32 as torch computes it.
fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut buckets = 0i64;
    let mut num_buckets = num_buckets as i64;
    let mut rp = relative_position;
    if bidirectional {
        num_buckets /= 2;
        if rp > 0 {
            buckets += num_buckets;
        }
        rp = rp.abs();
    } else {
        rp = -rp.min(0);
    }
    let max_exact = num_buckets / 2;
    if rp < max_exact {
        buckets += rp;
    } else {
        let scaled = ((rp as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32)
            * (num_buckets - max_exact) as f32) as i64;
        buckets += (max_exact + scaled).min(num_buckets - 1);
    }
    buckets as u32
}

#[derive(Debug, Clone)]
enum FeedForward {
    Dense {
        wi: Linear,
        wo: Linear,
        act: Activation,
    },
    Gated {
        wi_0: Linear,
        wi_1: Linear,
        wo: Linear,
        act: Activation,
    },
}

impl FeedForward {
    fn load(
        d: usize,
        d_ff: usize,
        gated: bool,
        act: Activation,
        vb: &VarBuilder<'_>,
    ) -> Result<Self> {
        let vb = vb.pp("DenseReluDense");
        let lin = |name: &str, i: usize, o: usize| -> Result<Linear> {
            layers::linear_no_bias(i, o, vb.pp(name))
        };
        Ok(if gated {
            Self::Gated {
                wi_0: lin("wi_0", d, d_ff)?,
                wi_1: lin("wi_1", d, d_ff)?,
                wo: lin("wo", d_ff, d)?,
                act,
            }
        } else {
            Self::Dense {
                wi: lin("wi", d, d_ff)?,
                wo: lin("wo", d_ff, d)?,
                act,
            }
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense { wi, wo, act } => wo.forward(&act.forward(&wi.forward(x)?)?)?,
            Self::Gated {
                wi_0,
                wi_1,
                wo,
                act,
            } => {
                let g = act.forward(&wi_0.forward(x)?)?;
                wo.forward(&(g * wi_1.forward(x)?)?)?
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    cross: Option<(RmsNorm, Attention)>,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

/// T5 encoder-decoder with the tied LM head.
#[derive(Debug, Clone)]
pub struct T5 {
    shared: Embedding,
    shared_weight: Tensor,
    encoder: Vec<Block>,
    encoder_norm: RmsNorm,
    decoder: Vec<Block>,
    decoder_norm: RmsNorm,
    lm_head: Option<Linear>,
    num_buckets: usize,
    max_distance: usize,
    d_model: usize,
    ids: Seq2SeqIds,
}

impl T5 {
    /// Loads from the state dict (`shared.weight`, `encoder.block.*`, `decoder.block.*`).
    pub fn load(vb: &VarBuilder<'_>, raw: &Value) -> Result<Self> {
        let d = cfg_usize(raw, "d_model", None)?;
        let d_kv = cfg_usize(raw, "d_kv", None)?;
        let d_ff = cfg_usize(raw, "d_ff", None)?;
        let heads = cfg_usize(raw, "num_heads", None)?;
        let layers = cfg_usize(raw, "num_layers", None)?;
        let dec_layers = cfg_usize(raw, "num_decoder_layers", Some(layers))?;
        let vocab = cfg_usize(raw, "vocab_size", None)?;
        let num_buckets = cfg_usize(raw, "relative_attention_num_buckets", Some(32))?;
        let max_distance = cfg_usize(raw, "relative_attention_max_distance", Some(128))?;
        let eps = raw
            .get("layer_norm_epsilon")
            .and_then(Value::as_f64)
            .unwrap_or(1e-6);
        let proj = raw
            .get("feed_forward_proj")
            .and_then(Value::as_str)
            .unwrap_or("relu");
        let (gated, act_name) = match proj.strip_prefix("gated-") {
            Some(act) => (true, act),
            None => (false, proj),
        };
        // transformers: `gated-gelu` means gelu_new.
        let act = if act_name == "gelu" && gated {
            Activation::GeluTanh
        } else {
            Activation::from_name(act_name)?
        };
        let tie = raw
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let decoder_start_token_id = cfg_usize(raw, "decoder_start_token_id", Some(0))? as u32;
        let inner = heads * d_kv;
        let shared_weight = vb.get((vocab, d), "shared.weight")?;
        let block = |prefix: &str, i: usize, decoder: bool| -> Result<Block> {
            let vb = vb.pp(format!("{prefix}.block.{i}.layer"));
            let attn_vb = vb.pp("0");
            let attn = Attention::load(
                d,
                inner,
                heads,
                i == 0,
                num_buckets,
                &attn_vb.pp("SelfAttention"),
            )?;
            let attn_norm = RmsNorm::load(d, eps, &attn_vb.pp("layer_norm"))?;
            let (cross, ff_index) = if decoder {
                let cvb = vb.pp("1");
                (
                    Some((
                        RmsNorm::load(d, eps, &cvb.pp("layer_norm"))?,
                        Attention::load(
                            d,
                            inner,
                            heads,
                            false,
                            num_buckets,
                            &cvb.pp("EncDecAttention"),
                        )?,
                    )),
                    "2",
                )
            } else {
                (None, "1")
            };
            let fvb = vb.pp(ff_index);
            Ok(Block {
                attn_norm,
                attn,
                cross,
                ff_norm: RmsNorm::load(d, eps, &fvb.pp("layer_norm"))?,
                ff: FeedForward::load(d, d_ff, gated, act, &fvb)?,
            })
        };
        let encoder = (0..layers)
            .map(|i| block("encoder", i, false))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..dec_layers)
            .map(|i| block("decoder", i, true))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if tie {
            None
        } else {
            Some(layers::linear_no_bias(d, vocab, vb.pp("lm_head"))?)
        };
        if layers == 0 || dec_layers == 0 {
            return Err(ModelError::ConfigValue {
                key: "num_layers".into(),
                reason: "T5 needs at least one encoder and one decoder layer".into(),
            });
        }
        Ok(Self {
            shared: Embedding::new(shared_weight.clone(), d),
            shared_weight,
            encoder,
            encoder_norm: RmsNorm::load(d, eps, &vb.pp("encoder.final_layer_norm"))?,
            decoder,
            decoder_norm: RmsNorm::load(d, eps, &vb.pp("decoder.final_layer_norm"))?,
            lm_head,
            num_buckets,
            max_distance,
            d_model: d,
            ids: Seq2SeqIds {
                decoder_start_token_id,
                vocab_size: vocab,
                max_decoder_positions: None,
                max_encoder_positions: None,
            },
        })
    }

    /// Position bias `[1, H, q_len, k_len]` for queries at `q_start..q_start+q_len`.
    fn position_bias(
        &self,
        table: &Embedding,
        q_start: usize,
        q_len: usize,
        k_len: usize,
        bidirectional: bool,
    ) -> Result<Tensor> {
        let mut buckets = Vec::with_capacity(q_len * k_len);
        for q in q_start..q_start + q_len {
            for k in 0..k_len {
                buckets.push(relative_position_bucket(
                    k as i64 - q as i64,
                    bidirectional,
                    self.num_buckets,
                    self.max_distance,
                ));
            }
        }
        let buckets = Tensor::from_vec(buckets, (q_len, k_len), &Device::Cpu)?;
        let values = table.forward(&buckets)?; // [q, k, H]
        Ok(values.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }
}

impl Seq2SeqModel for T5 {
    fn ids(&self) -> &Seq2SeqIds {
        &self.ids
    }

    fn encode(&self, ids: &[u32]) -> Result<Tensor> {
        let t = ids.len();
        let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let mut h = self.shared.forward(&ids)?;
        let table = self.encoder[0]
            .attn
            .relative_bias
            .as_ref()
            .expect("the first block has the relative bias");
        let bias = self.position_bias(table, 0, t, t, true)?;
        for block in &self.encoder {
            let n = block.attn_norm.forward(&h)?;
            let kv = block.attn.kv(&n)?;
            h = (h + block.attn.forward(&n, &kv, Some(&bias))?)?;
            let n = block.ff_norm.forward(&h)?;
            h = (h + block.ff.forward(&n)?)?;
        }
        self.encoder_norm.forward(&h)
    }

    fn new_cache(&self) -> DecoderCache {
        DecoderCache::new(self.decoder.len())
    }

    fn decode_step(
        &self,
        tokens: &[u32],
        encoder: &Tensor,
        cache: &mut DecoderCache,
    ) -> Result<Tensor> {
        let ids = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(1)?;
        let mut h = self.shared.forward(&ids)?;
        let pos = cache.len;
        let table = self.decoder[0]
            .attn
            .relative_bias
            .as_ref()
            .expect("the first block has the relative bias");
        let bias = self.position_bias(table, pos, 1, pos + 1, false)?;
        for (block, lc) in self.decoder.iter().zip(cache.layers.iter_mut()) {
            let n = block.attn_norm.forward(&h)?;
            let (k, v) = block.attn.kv(&n)?;
            let a = block.attn.forward(&n, lc.push_self(k, v)?, Some(&bias))?;
            h = (h + a)?;
            let (cross_norm, cross) = block.cross.as_ref().expect("decoder blocks cross-attend");
            let cross_kv = lc.cross(|| cross.kv(encoder))?;
            let n = cross_norm.forward(&h)?;
            let c = cross.forward(&n, cross_kv, None)?;
            h = (h + c)?;
            let n = block.ff_norm.forward(&h)?;
            h = (h + block.ff.forward(&n)?)?;
        }
        cache.len += 1;
        self.logits(&h)
    }

    fn decode_rows(&self, rows: &mut [DecodeRow<'_>]) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<u32> = rows.iter().map(|r| r.token).collect();
        let ids = Tensor::new(tokens.as_slice(), &Device::Cpu)?.unsqueeze(1)?;
        let mut h = self.shared.forward(&ids)?;
        let table = self.decoder[0]
            .attn
            .relative_bias
            .as_ref()
            .expect("the first block has the relative bias");
        // Each row's causal position bias for its own position.
        let biases = rows
            .iter()
            .map(|r| self.position_bias(table, r.cache.len, 1, r.cache.len + 1, false))
            .collect::<Result<Vec<_>>>()?;
        for (l, block) in self.decoder.iter().enumerate() {
            let n = block.attn_norm.forward(&h)?;
            let (k, v) = block.attn.kv(&n)?;
            let kvs = push_self_kv(rows, l, &k, &v)?;
            let ctx = attend_rows(&block.attn.query(&n)?, &kvs, Some(&biases))?;
            h = (h + block.attn.out(&ctx)?)?;
            let (cross_norm, cross) = block.cross.as_ref().expect("decoder blocks cross-attend");
            let n = cross_norm.forward(&h)?;
            let ctx = attend_rows(&cross.query(&n)?, &cross_kvs(rows, l)?, None)?;
            h = (h + cross.out(&ctx)?)?;
            let n = block.ff_norm.forward(&h)?;
            h = (h + block.ff.forward(&n)?)?;
        }
        for row in rows.iter_mut() {
            row.cache.len += 1;
        }
        logit_rows(&self.logits(&h)?)
    }
}

impl T5 {
    /// The LM head on the decoder's last hidden states `[B, 1, D]`: `[B, V]` in f32.
    fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.decoder_norm.forward(h)?.squeeze(1)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => layers::matmul_t(
                &(h * (self.d_model as f64).powf(-0.5))?,
                &self.shared_weight,
            )?,
        };
        Ok(logits.to_dtype(DType::F32)?.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    #[test]
    fn buckets_match_transformers() {
        // Values from transformers' T5Attention._relative_position_bucket (32 buckets, 128).
        let bi: Vec<u32> = [-200, -20, -8, -7, -1, 0, 1, 7, 8, 20, 200]
            .iter()
            .map(|&r| relative_position_bucket(r, true, 32, 128))
            .collect();
        assert_eq!(bi, [15, 10, 8, 7, 1, 0, 17, 23, 24, 26, 31]);
        let causal: Vec<u32> = [-200, -20, -16, -15, -1, 0, 5]
            .iter()
            .map(|&r| relative_position_bucket(r, false, 32, 128))
            .collect();
        assert_eq!(causal, [31, 17, 16, 15, 1, 0, 0]);
    }
}
