//! The BERT encoder, also used by RoBERTa / XLM-RoBERTa (`roberta.rs`: position ids after the
//! padding index), ELECTRA (separate embedding size + `embeddings_project`) and ALBERT
//! (`modeling_albert.py`: factorized embeddings, layers shared within groups, other names).
//!
//! Ported from transformers 4.51.3 `models/bert/modeling_bert.py` (eager attention path);
//! state-dict names are kept (`embeddings.word_embeddings`, `encoder.layer.{i}.attention.self.query`…).
//! Q/K/V are fused into one matmul at load time (see `layers::SelfAttention`).

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::layers::{self, Activation, Linear, SelfAttention};
use super::{BatchTensors, Family, ModelConfig, ModelError, Result};

/// Differences between the families that share this encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// BERT: positions `0..T`, prefix `bert`.
    Bert,
    /// RoBERTa / XLM-RoBERTa / CamemBERT: positions after `padding_idx`, prefix `roberta`.
    Roberta,
    /// ELECTRA: embedding size may differ from the hidden size, prefix `electra`.
    Electra,
    /// ALBERT: factorized embeddings (`encoder.embedding_hidden_mapping_in`), layers shared
    /// within groups and named differently, prefix `albert`.
    Albert,
}

impl Flavor {
    pub(super) fn of(family: Family) -> Self {
        match family {
            Family::Roberta | Family::XlmRoberta => Self::Roberta,
            Family::Electra => Self::Electra,
            Family::Albert => Self::Albert,
            _ => Self::Bert,
        }
    }

    /// The state-dict prefix of the base model inside a model with a head.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::Roberta => "roberta",
            Self::Electra => "electra",
            Self::Albert => "albert",
        }
    }
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

/// `config.json` of BERT-like models (`BertConfig`, `RobertaConfig`, `ElectraConfig`).
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default)]
    hidden_act: Option<String>,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
    #[serde(default)]
    embedding_size: Option<usize>,
    #[serde(default)]
    num_hidden_groups: Option<usize>,
    #[serde(default)]
    inner_group_num: Option<usize>,
}

/// The checked configuration of a BERT-like encoder.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) vocab_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) hidden_act: Activation,
    pub(crate) max_position_embeddings: usize,
    pub(crate) type_vocab_size: usize,
    pub(crate) layer_norm_eps: f64,
    pub(crate) pad_token_id: u32,
    /// ELECTRA's and ALBERT's `embedding_size` (equals `hidden_size` elsewhere).
    pub(crate) embedding_size: usize,
    /// ALBERT's `num_hidden_groups` (1 elsewhere).
    pub(crate) num_hidden_groups: usize,
    /// ALBERT's `inner_group_num` (1 elsewhere).
    pub(crate) inner_group_num: usize,
    pub(crate) flavor: Flavor,
}

impl Config {
    /// Reads the BERT-like fields of `config.json`.
    pub(crate) fn from_model_config(config: &ModelConfig, flavor: Flavor) -> Result<Self> {
        let raw: RawConfig = config.parse()?;
        if raw.position_embedding_type != "absolute" {
            return Err(ModelError::ConfigValue {
                key: "position_embedding_type".into(),
                reason: format!(
                    "only `absolute` is supported, got `{}`",
                    raw.position_embedding_type
                ),
            });
        }
        let default_pad = if flavor == Flavor::Roberta { 1 } else { 0 };
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            hidden_act: Activation::from_name(raw.hidden_act.as_deref().unwrap_or(
                if flavor == Flavor::Albert {
                    "gelu_new"
                } else {
                    "gelu"
                },
            ))?,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            pad_token_id: raw.pad_token_id.unwrap_or(default_pad),
            // `AlbertConfig` defaults `embedding_size` to 128.
            embedding_size: raw.embedding_size.unwrap_or(if flavor == Flavor::Albert {
                128
            } else {
                raw.hidden_size
            }),
            num_hidden_groups: raw.num_hidden_groups.unwrap_or(1).max(1),
            inner_group_num: raw.inner_group_num.unwrap_or(1).max(1),
            flavor,
        })
    }
}

/// `vb` at the base model: `vb.pp("bert")` for checkpoints with a head, `vb` for bare ones.
pub(crate) fn base_prefix<'a>(vb: &VarBuilder<'a>, cfg: &Config) -> VarBuilder<'a> {
    let prefix = cfg.flavor.prefix();
    if vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight")) {
        vb.pp(prefix)
    } else {
        vb.clone()
    }
}

// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L184
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/roberta/modeling_roberta.py#L64
#[derive(Debug)]
struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    layer_norm: LayerNorm,
    /// ELECTRA `embeddings_project` when `embedding_size != hidden_size`.
    project: Option<Linear>,
    flavor: Flavor,
    padding_idx: u32,
    max_positions: usize,
}

impl Embeddings {
    fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        let e = vb.pp("embeddings");
        let dim = cfg.embedding_size;
        let project = if cfg.flavor == Flavor::Electra && dim != cfg.hidden_size {
            Some(layers::linear(
                dim,
                cfg.hidden_size,
                vb.pp("embeddings_project"),
            )?)
        } else {
            None
        };
        Ok(Self {
            word: candle_nn::embedding(cfg.vocab_size, dim, e.pp("word_embeddings"))?,
            position: candle_nn::embedding(
                cfg.max_position_embeddings,
                dim,
                e.pp("position_embeddings"),
            )?,
            token_type: candle_nn::embedding(
                cfg.type_vocab_size,
                dim,
                e.pp("token_type_embeddings"),
            )?,
            layer_norm: layers::layer_norm(dim, cfg.layer_norm_eps, e.pp("LayerNorm"))?,
            project,
            flavor: cfg.flavor,
            padding_idx: cfg.pad_token_id,
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Position ids: `0..T` (BERT) or, for RoBERTa, `padding_idx + cumsum(ids != pad)` on real
    /// tokens and `padding_idx` on padding (`create_position_ids_from_input_ids`).
    fn position_ids(&self, batch: &BatchTensors) -> Result<Tensor> {
        let (rows, len) = batch.input_ids.dims2()?;
        let ids: Vec<u32> = match self.flavor {
            Flavor::Roberta => batch
                .ids
                .iter()
                .flat_map(|row| {
                    let mut seen = 0u32;
                    row.iter()
                        .map(move |&id| {
                            if id == self.padding_idx {
                                self.padding_idx
                            } else {
                                seen += 1;
                                self.padding_idx + seen
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            Flavor::Bert | Flavor::Electra | Flavor::Albert => {
                (0..rows).flat_map(|_| 0..len as u32).collect()
            }
        };
        if let Some(&max) = ids.iter().max()
            && max as usize >= self.max_positions
        {
            return Err(ModelError::BadBatch {
                reason: format!(
                    "position id {max} is beyond `max_position_embeddings` {}",
                    self.max_positions
                ),
            });
        }
        Ok(Tensor::from_vec(
            ids,
            (rows, len),
            batch.input_ids.device(),
        )?)
    }

    fn forward(&self, batch: &BatchTensors) -> Result<Tensor> {
        let words = self.word.forward(&batch.input_ids)?;
        let types = self.token_type.forward(&batch.type_ids)?;
        let positions = self.position.forward(&self.position_ids(batch)?)?;
        let xs = ((words + types)? + positions)?;
        let xs = self.layer_norm.forward(&xs)?;
        Ok(match &self.project {
            Some(p) => p.forward(&xs)?,
            None => xs,
        })
    }
}

/// Where a layer's parameters live, relative to the layer.
pub(crate) struct LayerNames {
    pub(crate) qkv: [&'static str; 3],
    pub(crate) attention_out: &'static str,
    pub(crate) attention_norm: &'static str,
    pub(crate) intermediate: &'static str,
    pub(crate) output: &'static str,
    pub(crate) output_norm: &'static str,
}

/// The sizes of an encoder layer.
pub(crate) struct LayerSizes {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) intermediate: usize,
    pub(crate) eps: f64,
    pub(crate) act: Activation,
}

pub(crate) const BERT_NAMES: LayerNames = LayerNames {
    qkv: [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    ],
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/albert/modeling_albert.py#L419
const ALBERT_NAMES: LayerNames = LayerNames {
    qkv: ["attention.query", "attention.key", "attention.value"],
    attention_out: "attention.dense",
    attention_norm: "attention.LayerNorm",
    intermediate: "ffn",
    output: "ffn_output",
    output_norm: "full_layer_layer_norm",
};

/// The post-LayerNorm encoder layer of BERT, ALBERT, TAPAS and DistilBERT.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L523
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/distilbert/modeling_distilbert.py#L468
#[derive(Debug)]
pub(crate) struct Layer {
    attention: SelfAttention,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    act: Activation,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    /// Loads one encoder layer (also TAPAS's, which is BERT's).
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Config, names: &LayerNames) -> Result<Self> {
        let sizes = LayerSizes {
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            intermediate: cfg.intermediate_size,
            eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        };
        Self::load_sized(vb, &sizes, names)
    }

    /// Loads one encoder layer of the given sizes.
    pub(crate) fn load_sized(
        vb: &VarBuilder<'_>,
        sizes: &LayerSizes,
        names: &LayerNames,
    ) -> Result<Self> {
        let LayerSizes {
            hidden: h,
            heads,
            intermediate,
            eps,
            act,
        } = *sizes;
        Ok(Self {
            attention: SelfAttention::load(vb, names.qkv, h, heads)?,
            attention_out: layers::linear(h, h, vb.pp(names.attention_out))?.for_gemm()?,
            attention_norm: layers::layer_norm(h, eps, vb.pp(names.attention_norm))?,
            intermediate: layers::linear(h, intermediate, vb.pp(names.intermediate))?.for_gemm()?,
            act,
            output: layers::linear(intermediate, h, vb.pp(names.output))?.for_gemm()?,
            output_norm: layers::layer_norm(h, eps, vb.pp(names.output_norm))?,
        })
    }

    /// The same layer with its four linear layers in bf16 (`--dtype bfloat16`).
    pub(crate) fn into_bf16(self) -> Result<Self> {
        Ok(Self {
            attention: self.attention.into_bf16()?,
            attention_out: self.attention_out.into_bf16()?,
            intermediate: self.intermediate.into_bf16()?,
            output: self.output.into_bf16()?,
            ..self
        })
    }

    /// `xs` `[B, T, H]` with the additive mask `[B, 1, 1, T]`.
    pub(crate) fn forward(&self, xs: &Tensor, additive_mask: &Tensor) -> Result<Tensor> {
        // The residuals are added inside the output projections' matmuls and the GELU is
        // applied in place on the intermediate one's output (`layers::Linear`, `fused`).
        let context = self.attention.forward(xs, additive_mask)?;
        let attended = self
            .attention_norm
            .forward(&self.attention_out.forward_residual(&context, xs)?)?;
        let inner = self.intermediate.forward_act(&attended, self.act)?;
        let out = self.output.forward_residual(&inner, &attended)?;
        Ok(self.output_norm.forward(&out)?)
    }
}

/// The BERT-like base model: embeddings and encoder layers (no pooler; see `heads`).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/modeling_bert.py#L949
#[derive(Debug)]
pub(crate) struct BertModel {
    embeddings: Embeddings,
    /// ALBERT `encoder.embedding_hidden_mapping_in` (embedding size → hidden size).
    mapping_in: Option<Linear>,
    /// The distinct layers.
    layers: Vec<Layer>,
    /// Which layer runs at each step (ALBERT repeats shared layers).
    order: Vec<usize>,
}

impl BertModel {
    /// Loads from `vb` positioned at the base model (`embeddings.*`, `encoder.layer.*`, or
    /// ALBERT's `encoder.albert_layer_groups.{g}.albert_layers.{j}.*`).
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        let embeddings = Embeddings::load(vb, cfg)?;
        if cfg.flavor != Flavor::Albert {
            let layers = (0..cfg.num_hidden_layers)
                .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), cfg, &BERT_NAMES))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Self {
                embeddings,
                mapping_in: None,
                order: (0..layers.len()).collect(),
                layers,
            });
        }
        // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/albert/modeling_albert.py#L497
        let (groups, inner) = (cfg.num_hidden_groups, cfg.inner_group_num);
        if !cfg.num_hidden_layers.is_multiple_of(groups) {
            return Err(ModelError::ConfigValue {
                key: "num_hidden_groups".into(),
                reason: format!(
                    "{} layers do not split into {groups} groups",
                    cfg.num_hidden_layers
                ),
            });
        }
        let mut layers = Vec::with_capacity(groups * inner);
        for g in 0..groups {
            for j in 0..inner {
                let path = format!("encoder.albert_layer_groups.{g}.albert_layers.{j}");
                layers.push(Layer::load(&vb.pp(path), cfg, &ALBERT_NAMES)?);
            }
        }
        let per_group = cfg.num_hidden_layers / groups;
        let order = (0..cfg.num_hidden_layers)
            .flat_map(|i| (0..inner).map(move |j| (i / per_group) * inner + j))
            .collect();
        Ok(Self {
            embeddings,
            mapping_in: Some(layers::linear(
                cfg.embedding_size,
                cfg.hidden_size,
                vb.pp("encoder.embedding_hidden_mapping_in"),
            )?),
            layers,
            order,
        })
    }

    /// The same model with every linear layer of the encoder (and ELECTRA's / ALBERT's
    /// embedding projection) in bf16; embeddings and norms stay f32.
    pub(crate) fn into_bf16(mut self) -> Result<Self> {
        self.embeddings.project = self.embeddings.project.map(Linear::into_bf16).transpose()?;
        self.mapping_in = self.mapping_in.map(Linear::into_bf16).transpose()?;
        self.layers = self
            .layers
            .into_iter()
            .map(Layer::into_bf16)
            .collect::<Result<_>>()?;
        Ok(self)
    }

    /// The last hidden state `[B, T, H]`.
    pub(crate) fn forward(&self, batch: &BatchTensors) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(batch)?;
        if let Some(mapping) = &self.mapping_in {
            xs = mapping.forward(&xs)?;
        }
        for &i in &self.order {
            xs = self.layers[i].forward(&xs, &batch.additive_mask)?;
        }
        Ok(xs)
    }

    /// The input word embedding matrix `[vocab, E]` (tied to the masked-LM decoder).
    pub(crate) fn word_embeddings(&self) -> &Tensor {
        self.embeddings.word.embeddings()
    }
}
