//! BART (`BartForConditionalGeneration`) and Marian (`MarianMTModel`) as transformers 4.51.3
//! computes them: post-LayerNorm encoder and decoder layers, embeddings scaled by √d when
//! `scale_embedding`, learned positions offset by 2 (BART) or sinusoidal positions (Marian),
//! `layernorm_embedding` (BART), exact GELU, the LM head tied to the shared embeddings plus
//! `final_logits_bias`.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde_json::Value;

use super::layers::{self, Activation, Linear, layer_norm, linear};
use super::seq2seq::{
    DecodeRow, DecoderCache, Seq2SeqIds, Seq2SeqModel, attend, attend_rows, cfg_usize, cross_kvs,
    join_heads, logit_rows, push_self_kv, split_heads,
};
use super::{ModelError, Result};

const LN_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(d: usize, heads: usize, vb: &VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            q: linear(d, d, vb.pp("q_proj"))?,
            k: linear(d, d, vb.pp("k_proj"))?,
            v: linear(d, d, vb.pp("v_proj"))?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    fn kv(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            split_heads(&self.k.forward(x)?, self.heads)?,
            split_heads(&self.v.forward(x)?, self.heads)?,
        ))
    }

    /// The scaled queries `[B, H, T, Dh]`.
    fn query(&self, x: &Tensor) -> Result<Tensor> {
        split_heads(&(self.q.forward(x)? * self.scale)?, self.heads)
    }

    /// The output projection of `[B, H, T, Dh]` attention results.
    fn project(&self, ctx: &Tensor) -> Result<Tensor> {
        Ok(self.out.forward(&join_heads(ctx)?)?)
    }

    /// Attention of `x` over `kv` (no mask: no padding, and a decoder step sees all of the past).
    fn forward(&self, x: &Tensor, kv: &(Tensor, Tensor)) -> Result<Tensor> {
        let ctx = attend(&self.query(x)?, &kv.0, &kv.1, None)?;
        self.project(&ctx)
    }
}

#[derive(Debug, Clone)]
struct Ffn {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Ffn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(x)?)?)?)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    attn: Attention,
    attn_norm: LayerNorm,
    ffn: Ffn,
    final_norm: LayerNorm,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    attn: Attention,
    attn_norm: LayerNorm,
    cross: Attention,
    cross_norm: LayerNorm,
    ffn: Ffn,
    final_norm: LayerNorm,
}

#[derive(Debug, Clone)]
enum Positions {
    /// Learned, row `position + 2`.
    Learned {
        encoder: Embedding,
        decoder: Embedding,
    },
    /// Sinusoidal `[max, d]` (shared by encoder and decoder).
    Sinusoidal(Tensor),
}

/// BART or Marian.
#[derive(Debug, Clone)]
pub struct Bart {
    shared: Tensor,
    embed: Embedding,
    embed_scale: f64,
    positions: Positions,
    enc_ln_embedding: Option<LayerNorm>,
    dec_ln_embedding: Option<LayerNorm>,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    final_logits_bias: Option<Tensor>,
    ids: Seq2SeqIds,
}

/// Marian's sinusoidal table: `sin` in the first half of each row, `cos` in the second.
fn sinusoidal(n_pos: usize, dim: usize) -> Result<Tensor> {
    let sentinel = dim.div_ceil(2);
    let mut data = vec![0f32; n_pos * dim];
    for pos in 0..n_pos {
        for j in 0..dim {
            // transformers computes the table in float64 with numpy, then casts.
            let angle = pos as f64 / 10000f64.powf(2.0 * (j / 2) as f64 / dim as f64);
            if j % 2 == 0 {
                data[pos * dim + j / 2] = angle.sin() as f32;
            } else {
                data[pos * dim + sentinel + j / 2] = angle.cos() as f32;
            }
        }
    }
    Ok(Tensor::from_vec(data, (n_pos, dim), &Device::Cpu)?)
}

impl Bart {
    /// Loads from the state dict (`model.encoder.*`, `model.decoder.*`, `model.shared.weight`,
    /// `final_logits_bias`); `model_type` is `bart` or `marian`.
    pub fn load(vb: &VarBuilder<'_>, raw: &Value, model_type: &str) -> Result<Self> {
        let marian = model_type == "marian";
        let d = cfg_usize(raw, "d_model", None)?;
        let vocab = cfg_usize(raw, "vocab_size", None)?;
        let max_pos = cfg_usize(raw, "max_position_embeddings", Some(1024))?;
        let enc_layers = cfg_usize(raw, "encoder_layers", None)?;
        let dec_layers = cfg_usize(raw, "decoder_layers", None)?;
        let enc_heads = cfg_usize(raw, "encoder_attention_heads", None)?;
        let dec_heads = cfg_usize(raw, "decoder_attention_heads", None)?;
        let enc_ffn = cfg_usize(raw, "encoder_ffn_dim", None)?;
        let dec_ffn = cfg_usize(raw, "decoder_ffn_dim", None)?;
        let act = Activation::from_name(
            raw.get("activation_function")
                .and_then(Value::as_str)
                .unwrap_or("gelu"),
        )?;
        if raw.get("normalize_before").and_then(Value::as_bool) == Some(true) {
            return Err(ModelError::ConfigValue {
                key: "normalize_before".into(),
                reason: "pre-LayerNorm BART variants (mBART) are not supported".into(),
            });
        }
        let scale_embedding = raw
            .get("scale_embedding")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let decoder_start_token_id = cfg_usize(raw, "decoder_start_token_id", None)? as u32;
        let model = vb.pp("model");
        let shared = model.get((vocab, d), "shared.weight")?;
        let embed = Embedding::new(shared.clone(), d);
        let positions = if marian {
            Positions::Sinusoidal(sinusoidal(max_pos, d)?)
        } else {
            let load = |p: &str| -> Result<Embedding> {
                Ok(Embedding::new(
                    model.get((max_pos + 2, d), &format!("{p}.embed_positions.weight"))?,
                    d,
                ))
            };
            Positions::Learned {
                encoder: load("encoder")?,
                decoder: load("decoder")?,
            }
        };
        let ln_embedding = |p: &str| -> Result<Option<LayerNorm>> {
            if marian {
                Ok(None)
            } else {
                Ok(Some(layer_norm(
                    d,
                    LN_EPS,
                    model.pp(p).pp("layernorm_embedding"),
                )?))
            }
        };
        let ffn = |vb: &VarBuilder<'_>, dim: usize| -> Result<Ffn> {
            Ok(Ffn {
                fc1: linear(d, dim, vb.pp("fc1"))?,
                fc2: linear(dim, d, vb.pp("fc2"))?,
                act,
            })
        };
        let encoder = (0..enc_layers)
            .map(|i| {
                let vb = model.pp(format!("encoder.layers.{i}"));
                Ok(EncoderLayer {
                    attn: Attention::load(d, enc_heads, &vb.pp("self_attn"))?,
                    attn_norm: layer_norm(d, LN_EPS, vb.pp("self_attn_layer_norm"))?,
                    ffn: ffn(&vb, enc_ffn)?,
                    final_norm: layer_norm(d, LN_EPS, vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..dec_layers)
            .map(|i| {
                let vb = model.pp(format!("decoder.layers.{i}"));
                Ok(DecoderLayer {
                    attn: Attention::load(d, dec_heads, &vb.pp("self_attn"))?,
                    attn_norm: layer_norm(d, LN_EPS, vb.pp("self_attn_layer_norm"))?,
                    cross: Attention::load(d, dec_heads, &vb.pp("encoder_attn"))?,
                    cross_norm: layer_norm(d, LN_EPS, vb.pp("encoder_attn_layer_norm"))?,
                    ffn: ffn(&vb, dec_ffn)?,
                    final_norm: layer_norm(d, LN_EPS, vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_logits_bias = if vb.contains_tensor("final_logits_bias") {
            Some(vb.get((1, vocab), "final_logits_bias")?)
        } else {
            None
        };
        Ok(Self {
            shared,
            embed,
            embed_scale: if scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            positions,
            enc_ln_embedding: ln_embedding("encoder")?,
            dec_ln_embedding: ln_embedding("decoder")?,
            encoder,
            decoder,
            final_logits_bias,
            ids: Seq2SeqIds {
                decoder_start_token_id,
                vocab_size: vocab,
                max_decoder_positions: Some(max_pos),
                max_encoder_positions: Some(max_pos),
            },
        })
    }

    /// Position embeddings `[T, D]` for positions `start..start+len`.
    fn positions(&self, decoder: bool, start: usize, len: usize) -> Result<Tensor> {
        match &self.positions {
            Positions::Learned {
                encoder,
                decoder: dec,
            } => {
                let table = if decoder { dec } else { encoder };
                let ids: Vec<u32> = (start..start + len).map(|p| (p + 2) as u32).collect();
                Ok(table.forward(&Tensor::new(ids.as_slice(), &Device::Cpu)?)?)
            }
            Positions::Sinusoidal(table) => Ok(table.narrow(0, start, len)?),
        }
    }

    fn embed(&self, ids: &Tensor, decoder: bool, start: usize) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let positions = self.positions(decoder, start, t)?;
        self.embed_at(ids, decoder, &positions)
    }

    /// The decoder embeddings `[B, 1, D]` of one token a row, each at its own position.
    fn embed_rows(&self, tokens: &[u32], positions: &[usize]) -> Result<Tensor> {
        let ids = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(1)?;
        let at = |offset: usize| -> Result<Tensor> {
            let p: Vec<u32> = positions.iter().map(|&p| (p + offset) as u32).collect();
            Ok(Tensor::new(p.as_slice(), &Device::Cpu)?)
        };
        let pos = match &self.positions {
            Positions::Learned { decoder, .. } => decoder.forward(&at(2)?)?,
            Positions::Sinusoidal(table) => table.index_select(&at(0)?, 0)?,
        };
        self.embed_at(&ids, true, &pos.unsqueeze(1)?)
    }

    /// Token embeddings of `ids` plus `positions` (broadcast), then `layernorm_embedding`.
    fn embed_at(&self, ids: &Tensor, decoder: bool, positions: &Tensor) -> Result<Tensor> {
        let tokens = (self.embed.forward(ids)? * self.embed_scale)?;
        let h = tokens.broadcast_add(positions)?;
        let norm = if decoder {
            &self.dec_ln_embedding
        } else {
            &self.enc_ln_embedding
        };
        Ok(match norm {
            Some(ln) => ln.forward(&h)?,
            None => h,
        })
    }
}

impl Seq2SeqModel for Bart {
    fn ids(&self) -> &Seq2SeqIds {
        &self.ids
    }

    fn encode(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let mut h = self.embed(&ids, false, 0)?;
        for layer in &self.encoder {
            let kv = layer.attn.kv(&h)?;
            let a = layer.attn.forward(&h, &kv)?;
            h = layer.attn_norm.forward(&(h + a)?)?;
            let f = layer.ffn.forward(&h)?;
            h = layer.final_norm.forward(&(h + f)?)?;
        }
        Ok(h)
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
        let mut h = self.embed(&ids, true, cache.len)?;
        for (layer, lc) in self.decoder.iter().zip(cache.layers.iter_mut()) {
            let (k, v) = layer.attn.kv(&h)?;
            let a = layer.attn.forward(&h, lc.push_self(k, v)?)?;
            h = layer.attn_norm.forward(&(h + a)?)?;
            let cross_kv = lc.cross(|| layer.cross.kv(encoder))?;
            let c = layer.cross.forward(&h, cross_kv)?;
            h = layer.cross_norm.forward(&(h + c)?)?;
            let f = layer.ffn.forward(&h)?;
            h = layer.final_norm.forward(&(h + f)?)?;
        }
        cache.len += 1;
        self.logits(&h)
    }

    fn decode_rows(&self, rows: &mut [DecodeRow<'_>]) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<u32> = rows.iter().map(|r| r.token).collect();
        let positions: Vec<usize> = rows.iter().map(|r| r.cache.len).collect();
        let mut h = self.embed_rows(&tokens, &positions)?;
        for (l, layer) in self.decoder.iter().enumerate() {
            let (k, v) = layer.attn.kv(&h)?;
            let kvs = push_self_kv(rows, l, &k, &v)?;
            let a = layer
                .attn
                .project(&attend_rows(&layer.attn.query(&h)?, &kvs, None)?)?;
            h = layer.attn_norm.forward(&(h + a)?)?;
            let q = layer.cross.query(&h)?;
            let c = layer
                .cross
                .project(&attend_rows(&q, &cross_kvs(rows, l)?, None)?)?;
            h = layer.cross_norm.forward(&(h + c)?)?;
            let f = layer.ffn.forward(&h)?;
            h = layer.final_norm.forward(&(h + f)?)?;
        }
        for row in rows.iter_mut() {
            row.cache.len += 1;
        }
        logit_rows(&self.logits(&h)?)
    }
}

impl Bart {
    /// The LM head on the decoder's last hidden states `[B, 1, D]`: `[B, V]` in f32.
    fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let h = h.squeeze(1)?;
        let mut logits = layers::matmul_t(&h, &self.shared)?;
        if let Some(bias) = &self.final_logits_bias {
            logits = logits.broadcast_add(bias)?;
        }
        Ok(logits.to_dtype(DType::F32)?.contiguous()?)
    }
}
