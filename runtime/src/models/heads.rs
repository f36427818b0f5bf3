//! Task heads on top of an encoder's last hidden state, for every family: one small set of
//! shapes ([`HeadModule`]) and, per family, which state-dict names fill them.
//!
//! Dropout is the identity at inference and is left out.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::bert::{self, Flavor};
use super::layers::{self, Activation, Linear};
use super::{Head, ModelConfig, ModelError, Result};
use super::{deberta_v2, distilbert};

/// A loaded head.
#[derive(Debug)]
pub(crate) enum HeadModule {
    /// The last hidden state itself.
    Identity,
    /// First token → `dense` → `act` → `out` (sequence classification).
    Pooled {
        dense: Linear,
        act: Activation,
        out: Linear,
    },
    /// One linear layer on every token (token classification, QA start/end).
    PerToken(Linear),
    /// `dense` → `act` → `norm` → `decoder` on every token (masked LM).
    MaskedLm {
        dense: Linear,
        act: Activation,
        norm: LayerNorm,
        decoder: Linear,
    },
}

/// The LM decoder bias names of BERT-style checkpoints (older ones store `decoder.bias`).
const BERT_BIAS: &[&str] = &["bias", "decoder.bias"];
/// BERT's masked-LM transform: `transform.dense`, `transform.LayerNorm`.
const BERT_TRANSFORM: [&str; 2] = ["transform.dense", "transform.LayerNorm"];
/// The masked-LM transform of ALBERT, ELECTRA and DeBERTa-v2: `dense`, `LayerNorm`.
const DENSE_NORM: [&str; 2] = ["dense", "LayerNorm"];

impl HeadModule {
    /// The masked-LM head every family has under its own names: `{dense}` (h → e) → `act` →
    /// `{norm}` (e, `eps`) under `p`, then `decoder` (see [`tied_decoder`]).
    fn masked_lm(
        p: &VarBuilder<'_>,
        [dense, norm]: [&str; 2],
        (h, e): (usize, usize),
        eps: f64,
        act: Activation,
        decoder: Linear,
    ) -> Result<Self> {
        Ok(Self::MaskedLm {
            dense: layers::linear(h, e, p.pp(dense))?.for_gemm()?,
            act,
            norm: layers::layer_norm(e, eps, p.pp(norm))?,
            decoder,
        })
    }

    /// Applies the head to `hidden` `[B, T, H]`.
    pub(crate) fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Identity => hidden.clone(),
            Self::Pooled { dense, act, out } => {
                let first = hidden.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
                out.forward(&act.forward(&dense.forward(&first)?)?)?
            }
            Self::PerToken(linear) => linear.forward(hidden)?,
            Self::MaskedLm {
                dense,
                act,
                norm,
                decoder,
            } => decoder.forward(&norm.forward(&act.forward(&dense.forward(hidden)?)?)?)?,
        })
    }

    /// Heads of BERT, RoBERTa / XLM-RoBERTa, ELECTRA and ALBERT. `vb` is the checkpoint root, `base` the
    /// base model's prefix inside it.
    pub(crate) fn load_bert_like(
        vb: &VarBuilder<'_>,
        base: &VarBuilder<'_>,
        cfg: &bert::Config,
        model: &ModelConfig,
        head: Head,
        word_embeddings: &Tensor,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let labels = model.num_labels();
        let eps = cfg.layer_norm_eps;
        Ok(match (head, cfg.flavor) {
            (Head::Base, _) => Self::Identity,
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L1623
            // (pooler: https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L737)
            (Head::SequenceClassification, Flavor::Bert) => Self::Pooled {
                dense: layers::linear(h, h, base.pp("pooler.dense"))?.for_gemm()?,
                act: Activation::Tanh,
                out: layers::linear(h, labels, vb.pp("classifier"))?.for_gemm()?,
            },
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/roberta/modeling_roberta.py#L1446
            (Head::SequenceClassification, Flavor::Roberta) => Self::Pooled {
                dense: layers::linear(h, h, vb.pp("classifier.dense"))?.for_gemm()?,
                act: Activation::Tanh,
                out: layers::linear(h, labels, vb.pp("classifier.out_proj"))?.for_gemm()?,
            },
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/electra/modeling_electra.py#L895
            (Head::SequenceClassification, Flavor::Electra) => Self::Pooled {
                dense: layers::linear(h, h, vb.pp("classifier.dense"))?.for_gemm()?,
                act: Activation::GeluErf,
                out: layers::linear(h, labels, vb.pp("classifier.out_proj"))?.for_gemm()?,
            },
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/albert/modeling_albert.py#L868
            // (pooler: https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/albert/modeling_albert.py#L577)
            (Head::SequenceClassification, Flavor::Albert) => Self::Pooled {
                dense: layers::linear(h, h, base.pp("pooler"))?.for_gemm()?,
                act: Activation::Tanh,
                out: layers::linear(h, labels, vb.pp("classifier"))?.for_gemm()?,
            },
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L1810
            (Head::TokenClassification, _) => {
                Self::PerToken(layers::linear(h, labels, vb.pp("classifier"))?.for_gemm()?)
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L1885
            (Head::QuestionAnswering, _) => {
                Self::PerToken(layers::linear(h, 2, vb.pp("qa_outputs"))?.for_gemm()?)
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L691
            (Head::MaskedLm, Flavor::Bert) => {
                let p = vb.pp("cls.predictions");
                let decoder = tied_decoder(&p, "decoder", BERT_BIAS, word_embeddings)?;
                Self::masked_lm(&p, BERT_TRANSFORM, (h, h), eps, cfg.hidden_act, decoder)?
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/roberta/modeling_roberta.py#L1128
            (Head::MaskedLm, Flavor::Roberta) => {
                let p = vb.pp("lm_head");
                let decoder = tied_decoder(&p, "decoder", BERT_BIAS, word_embeddings)?;
                let names = ["dense", "layer_norm"];
                Self::masked_lm(&p, names, (h, h), eps, Activation::GeluErf, decoder)?
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/albert/modeling_albert.py#L769
            (Head::MaskedLm, Flavor::Albert) => {
                let e = cfg.embedding_size;
                let p = vb.pp("predictions");
                let decoder = tied_decoder(&p, "decoder", BERT_BIAS, word_embeddings)?;
                Self::masked_lm(&p, DENSE_NORM, (h, e), eps, cfg.hidden_act, decoder)?
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/electra/modeling_electra.py#L657
            (Head::MaskedLm, Flavor::Electra) => {
                let e = cfg.embedding_size;
                let p = vb.pp("generator_predictions");
                let decoder = tied_decoder(
                    vb,
                    "generator_lm_head",
                    &["generator_lm_head.bias"],
                    word_embeddings,
                )?;
                Self::masked_lm(&p, DENSE_NORM, (h, e), eps, Activation::GeluErf, decoder)?
            }
        })
    }

    /// Heads of DistilBERT. `vb` is the checkpoint root.
    pub(crate) fn load_distilbert(
        vb: &VarBuilder<'_>,
        cfg: &distilbert::Config,
        model: &ModelConfig,
        head: Head,
        word_embeddings: &Tensor,
    ) -> Result<Self> {
        let d = cfg.dim;
        Ok(match head {
            Head::Base => Self::Identity,
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L927
            Head::SequenceClassification => Self::Pooled {
                dense: layers::linear(d, d, vb.pp("pre_classifier"))?.for_gemm()?,
                act: Activation::Relu,
                out: layers::linear(d, model.num_labels(), vb.pp("classifier"))?.for_gemm()?,
            },
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L1143
            Head::TokenClassification => Self::PerToken(
                layers::linear(d, model.num_labels(), vb.pp("classifier"))?.for_gemm()?,
            ),
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L1029
            Head::QuestionAnswering => {
                Self::PerToken(layers::linear(d, 2, vb.pp("qa_outputs"))?.for_gemm()?)
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L794
            Head::MaskedLm => {
                let decoder = tied_decoder(
                    vb,
                    "vocab_projector",
                    &["vocab_projector.bias"],
                    word_embeddings,
                )?;
                Self::masked_lm(
                    vb,
                    ["vocab_transform", "vocab_layer_norm"],
                    (d, d),
                    distilbert::LAYER_NORM_EPS,
                    Activation::from_name(&cfg.activation)?,
                    decoder,
                )?
            }
        })
    }

    /// Heads of DeBERTa-v2. `vb` is the checkpoint root.
    pub(crate) fn load_deberta_v2(
        vb: &VarBuilder<'_>,
        cfg: &deberta_v2::Config,
        model: &ModelConfig,
        head: Head,
        word_embeddings: &Tensor,
    ) -> Result<Self> {
        let h = cfg.inner.hidden_size;
        let e = cfg.embedding_size;
        let eps = cfg.inner.layer_norm_eps;
        Ok(match head {
            Head::Base => Self::Identity,
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/deberta_v2/modeling_deberta_v2.py#L1036
            // (ContextPooler: https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/deberta_v2/modeling_deberta_v2.py#L43)
            Head::SequenceClassification => {
                let p = cfg.pooler_hidden_size;
                Self::Pooled {
                    dense: layers::linear(h, p, vb.pp("pooler.dense"))?.for_gemm()?,
                    act: Activation::from_name(&cfg.pooler_hidden_act)?,
                    out: layers::linear(p, model.num_labels(), vb.pp("classifier"))?.for_gemm()?,
                }
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/deberta_v2/modeling_deberta_v2.py#L1137
            Head::TokenClassification => Self::PerToken(
                layers::linear(h, model.num_labels(), vb.pp("classifier"))?.for_gemm()?,
            ),
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/deberta_v2/modeling_deberta_v2.py#L1198
            Head::QuestionAnswering => {
                Self::PerToken(layers::linear(h, 2, vb.pp("qa_outputs"))?.for_gemm()?)
            }
            // legacy: https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/deberta_v2/modeling_deberta_v2.py#L857
            Head::MaskedLm if cfg.legacy => {
                let act = Activation::from_name(&cfg.hidden_act)?;
                let p = vb.pp("cls.predictions");
                let decoder = tied_decoder(&p, "decoder", BERT_BIAS, word_embeddings)?;
                Self::masked_lm(&p, BERT_TRANSFORM, (h, e), eps, act, decoder)?
            }
            // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/deberta_v2/modeling_deberta_v2.py#L907
            Head::MaskedLm => {
                let act = Activation::from_name(&cfg.hidden_act)?;
                let p = vb.pp("lm_predictions.lm_head");
                let decoder = tied_decoder(&p, "decoder", &["bias"], word_embeddings)?;
                Self::masked_lm(&p, DENSE_NORM, (h, e), eps, act, decoder)?
            }
        })
    }
}

/// An LM decoder whose weight is tied to the input embeddings: `{name}.weight` when the
/// checkpoint stores it, else `word_embeddings` (transformers drops tied copies when saving
/// safetensors). The bias is the first of `bias_names` present.
fn tied_decoder(
    vb: &VarBuilder<'_>,
    name: &str,
    bias_names: &[&str],
    word_embeddings: &Tensor,
) -> Result<Linear> {
    let (vocab, dim) = word_embeddings.dims2()?;
    let weight_name = format!("{name}.weight");
    let weight = if vb.contains_tensor(&weight_name) {
        vb.get((vocab, dim), &weight_name)?
    } else {
        word_embeddings.clone()
    };
    let bias_name = bias_names
        .iter()
        .find(|b| vb.contains_tensor(b))
        .or(bias_names.first())
        .ok_or_else(|| ModelError::ConfigValue {
            key: name.into(),
            reason: "no bias name".into(),
        })?;
    let bias = vb.get(vocab, bias_name)?;
    Linear::new(weight, Some(bias))
}
