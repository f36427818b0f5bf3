//! Models: `config.json` ([`ModelConfig`]), encoder architectures with their task heads
//! ([`Encoder`]), and weight files ([`WeightFiles`]). Serves contract §4: the numbers every encoder
//! task (text/token classification, question answering, fill-mask, feature extraction,
//! zero-shot) post-processes.
//!
//! Does not own tokenization (`crate::tokenizer`) nor task pre/post-processing (`crate::pipelines`).
//!
//! Families (`model_type`): `bert`, `distilbert`, `roberta` / `camembert` / `xlm-roberta`,
//! `electra`, `albert` (all on `bert.rs` or `distilbert.rs`) and `deberta-v2`, each with the
//! heads of [`Head`]. Numerics follow transformers 4.51.3 in f32 on CPU: the conformance
//! fixtures and the tiny checkpoints in `testdata/` (made by `testdata/make_fixtures.py`) are
//! compared within 1e-4 in `tests.rs`.
//!
//! The encoders are ported here rather than taken from candle-transformers because its versions
//! differ from transformers where it matters for exact answers: DistilBERT uses the tanh GELU
//! (transformers: erf), XLM-RoBERTa's LM head drops `lm_head.bias`, BERT has no pooler, ALBERT
//! and ELECTRA are missing, and none fuses the Q/K/V projections (fewer, larger matmuls; see
//! `docs/candle-cpu.md`). On random BERT-base weights our BERT equals
//! candle-transformers' `BertModel` to the bit. DeBERTa-v2's base model is candle-transformers'
//! (`deberta_v2.rs`), with our heads.

mod amx;
mod bart;
mod bert;
mod bf16;
mod deberta_v2;
pub mod decoder;
mod distilbert;
mod fused;
mod gpt2;
mod heads;
mod kernels;
mod layers;
mod llama;
pub mod parallel;
mod roberta;
mod rope;
pub mod sentence_transformers;
pub mod seq2seq;
mod sgemm;
mod t5;
pub mod tapas;
mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

pub use weights::WeightFiles;

/// `Result` with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// How a model's weights are stored and multiplied (`--dtype`). `F32` is exact (the answers of
/// transformers on PyTorch CPU); `Bf16` is an opt-in that trades accuracy for speed and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightDtype {
    /// 32-bit floats throughout.
    #[default]
    F32,
    /// The weights of the linear layers as bfloat16; embeddings and norms stay f32.
    Bf16,
}

impl WeightDtype {
    /// The `--dtype` names, canonical first, then aliases.
    pub const NAMES: [(&'static str, Self); 6] = [
        ("float32", Self::F32),
        ("bfloat16", Self::Bf16),
        ("f32", Self::F32),
        ("fp32", Self::F32),
        ("bf16", Self::Bf16),
        ("float", Self::F32),
    ];

    /// Parses a `--dtype` value (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "float32",
            Self::Bf16 => "bfloat16",
        })
    }
}

/// A model that cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `--dtype` names a weight type this architecture does not run in.
    #[error("`--dtype {dtype}` is not supported for `{model_type}` models (use float32)")]
    DtypeNotSupported {
        /// The weight type asked for.
        dtype: WeightDtype,
        /// The `model_type` value.
        model_type: String,
    },
    /// A candle failure (shape mismatch, missing tensor, bad file contents).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// `config.json` could not be read.
    #[error("cannot read `{}`", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` (or another JSON file next to it) is not valid JSON or has a bad field.
    #[error("invalid `{}`", path.display())]
    Config {
        /// The file (`config.json` when parsed from a value).
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A `config.json` key has a value we cannot use.
    #[error("`config.json` key `{key}` has an unusable value: {reason}")]
    ConfigValue {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The directory holds none of the weight files we read.
    #[error(
        "no weights in `{}`: expected `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin` or `pytorch_model.bin.index.json`",
        dir.display()
    )]
    MissingWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// A weight index file could not be read or parsed.
    #[error("invalid weight index `{}`", path.display())]
    WeightIndex {
        /// The index file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `config.json` `model_type` names an architecture we do not run.
    #[error("unsupported architecture: `model_type` is `{model_type}`")]
    UnsupportedArchitecture {
        /// The `model_type` value.
        model_type: String,
    },
    /// The architecture has no such head.
    #[error("`{model_type}` has no {head:?} head")]
    UnsupportedHead {
        /// The `model_type` value.
        model_type: String,
        /// The head asked for.
        head: Head,
    },
    /// `hidden_act` / `activation` names an activation we do not implement.
    #[error("unsupported activation `{name}`")]
    UnsupportedActivation {
        /// The activation name from `config.json`.
        name: String,
    },
    /// A sentence-transformers module file (`modules.json`, `1_Pooling/config.json`, ...) has
    /// a value we cannot use.
    #[error("`{}`: {reason}", path.display())]
    SentenceModule {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The batch given to `forward` is malformed.
    #[error("bad batch: {reason}")]
    BadBatch {
        /// What is wrong.
        reason: String,
    },
}

/// The parsed `config.json` of a model: the fields every layer needs, plus the whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `model_type`, e.g. `bert`, `roberta`, `distilbert`.
    pub model_type: String,
    /// `architectures`, e.g. `["BertForSequenceClassification"]` (empty when absent).
    pub architectures: Vec<String>,
    /// Label of each class index; `LABEL_i` when `id2label` is absent (`num_labels`, default 2).
    pub id2label: Vec<String>,
    /// `label2id`, or the inverse of `id2label` when absent.
    pub label2id: BTreeMap<String, usize>,
    /// `problem_type`, e.g. `multi_label_classification`.
    pub problem_type: Option<String>,
    /// `max_position_embeddings`.
    pub max_position_embeddings: Option<usize>,
    /// `pad_token_id`.
    pub pad_token_id: Option<u32>,
    /// `task_specific_params`.
    pub task_specific_params: Option<Value>,
    /// The whole file, for architecture-specific fields.
    pub raw: Value,
}

/// The subset of `config.json` read by [`ModelConfig`].
#[derive(Deserialize)]
struct RawCommon {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    label2id: Option<BTreeMap<String, usize>>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    problem_type: Option<String>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    task_specific_params: Option<Value>,
}

impl ModelConfig {
    /// Reads and parses `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::ConfigRead {
            path: path.clone(),
            source,
        })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Config { path, source })?;
        Self::from_value(value)
    }

    /// Parses an already-read `config.json` value.
    pub fn from_value(v: Value) -> Result<Self> {
        let common: RawCommon =
            serde_json::from_value(v.clone()).map_err(|source| ModelError::Config {
                path: PathBuf::from("config.json"),
                source,
            })?;
        // transformers `PretrainedConfig.__init__`: `id2label` wins over `num_labels`, whose
        // default is 2; JSON keys are strings and become ints.
        let id2label = match common.id2label {
            Some(map) => {
                let mut pairs = Vec::with_capacity(map.len());
                for (key, label) in map {
                    let index: usize = key.trim().parse().map_err(|_| ModelError::ConfigValue {
                        key: "id2label".into(),
                        reason: format!("key `{key}` is not a class index"),
                    })?;
                    pairs.push((index, label));
                }
                let len = pairs.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
                let mut labels: Vec<String> = (0..len).map(|i| format!("LABEL_{i}")).collect();
                for (i, label) in pairs {
                    labels[i] = label;
                }
                labels
            }
            None => (0..common.num_labels.unwrap_or(2))
                .map(|i| format!("LABEL_{i}"))
                .collect(),
        };
        let label2id = common.label2id.unwrap_or_else(|| {
            id2label
                .iter()
                .enumerate()
                .map(|(i, label)| (label.clone(), i))
                .collect()
        });
        Ok(Self {
            model_type: common.model_type.unwrap_or_default(),
            architectures: common.architectures.unwrap_or_default(),
            id2label,
            label2id,
            problem_type: common.problem_type,
            max_position_embeddings: common.max_position_embeddings,
            pad_token_id: common.pad_token_id,
            task_specific_params: common.task_specific_params,
            raw: v,
        })
    }

    /// Number of classes (`id2label.len()`).
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// How far RoBERTa-style position ids are shifted: `pad_token_id + 1` for the families that
    /// number positions after the padding index, else 0.
    pub fn position_offset(&self) -> usize {
        if Family::of(&self.model_type).is_some_and(Family::pads_positions) {
            self.pad_token_id.map_or(2, |p| p as usize + 1)
        } else {
            0
        }
    }

    /// Parses the whole file into an architecture's own config struct.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.raw.clone()).map_err(|source| ModelError::Config {
            path: PathBuf::from("config.json"),
            source,
        })
    }
}

/// Which output an [`Encoder`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// The last hidden state `[B, T, H]`.
    Base,
    /// Sequence classification logits `[B, num_labels]`.
    SequenceClassification,
    /// Token classification logits `[B, T, num_labels]`.
    TokenClassification,
    /// Extractive QA logits `[B, T, 2]` (start, end).
    QuestionAnswering,
    /// Masked-LM logits `[B, T, vocab]`.
    MaskedLm,
}

/// One padded batch; every row has the same length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncoderBatch {
    /// Token ids.
    pub input_ids: Vec<Vec<u32>>,
    /// Segment (token type) ids.
    pub type_ids: Vec<Vec<u32>>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
    /// More per-token type channels, `[row][channel][token]`, for models that take more than
    /// the segment (TAPAS: column, row, previous answer, ranks, numeric relation). Empty for
    /// every other model, which ignores it.
    pub extra_type_ids: Vec<Vec<Vec<u32>>>,
}

/// The encoder families we run, by `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Bert,
    DistilBert,
    Roberta,
    XlmRoberta,
    Electra,
    Albert,
    DebertaV2,
}

impl Family {
    fn of(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "bert" => Self::Bert,
            "distilbert" => Self::DistilBert,
            "roberta" | "camembert" => Self::Roberta,
            "xlm-roberta" => Self::XlmRoberta,
            "electra" => Self::Electra,
            "albert" => Self::Albert,
            "deberta-v2" => Self::DebertaV2,
            _ => return None,
        })
    }

    fn pads_positions(self) -> bool {
        matches!(self, Self::Roberta | Self::XlmRoberta)
    }
}

/// Tensors of one batch, on the model's device.
pub(crate) struct BatchTensors {
    /// `[B, T]` u32.
    pub(crate) input_ids: Tensor,
    /// `[B, T]` u32.
    pub(crate) type_ids: Tensor,
    /// `[B, T]` u32, 1 = attend.
    pub(crate) mask: Tensor,
    /// The additive mask `[B, 1, 1, T]` f32: 0 where attended, `f32::MIN` on padding.
    pub(crate) additive_mask: Tensor,
    /// The host-side ids (for position ids that depend on them).
    pub(crate) ids: Vec<Vec<u32>>,
}

impl BatchTensors {
    fn new(batch: &EncoderBatch, device: &Device) -> Result<Self> {
        let rows = batch.input_ids.len();
        if rows == 0 {
            return Err(ModelError::BadBatch {
                reason: "no rows".into(),
            });
        }
        let len = batch.input_ids[0].len();
        if len == 0 {
            return Err(ModelError::BadBatch {
                reason: "rows are empty".into(),
            });
        }
        let same = |v: &[Vec<u32>]| v.len() == rows && v.iter().all(|r| r.len() == len);
        if !same(&batch.input_ids) || !same(&batch.type_ids) || !same(&batch.attention_mask) {
            return Err(ModelError::BadBatch {
                reason: format!(
                    "`input_ids`, `type_ids` and `attention_mask` must all be {rows} rows of {len}"
                ),
            });
        }
        let flat = |v: &[Vec<u32>]| v.iter().flatten().copied().collect::<Vec<u32>>();
        let input_ids = Tensor::from_vec(flat(&batch.input_ids), (rows, len), device)?;
        let type_ids = Tensor::from_vec(flat(&batch.type_ids), (rows, len), device)?;
        let mask_flat = flat(&batch.attention_mask);
        // transformers `get_extended_attention_mask`: (1 - mask) * finfo(float32).min.
        let additive: Vec<f32> = mask_flat
            .iter()
            .map(|&m| if m == 0 { f32::MIN } else { 0.0 })
            .collect();
        let additive_mask = Tensor::from_vec(additive, (rows, 1, 1, len), device)?;
        let mask = Tensor::from_vec(mask_flat, (rows, len), device)?;
        Ok(Self {
            input_ids,
            type_ids,
            mask,
            additive_mask,
            ids: batch.input_ids.clone(),
        })
    }
}

/// The base network of one family.
enum Backbone {
    Bert(bert::BertModel),
    DistilBert(distilbert::DistilBertModel),
    DebertaV2(Box<deberta_v2::DebertaV2>),
}

impl Backbone {
    fn forward(&self, batch: &BatchTensors) -> Result<Tensor> {
        match self {
            Self::Bert(m) => m.forward(batch),
            Self::DistilBert(m) => m.forward(batch),
            Self::DebertaV2(m) => m.forward(batch),
        }
    }
}

/// Runs `f` on one of rayon's threads (in place when already on one). A pass's products split
/// their work over rayon's threads; run from any other thread, each product is handed over to
/// them while the caller sleeps until it is done, a wake-up and a sleep a product. Decoding four
/// rows of a GPT-2-small-sized model, that took a tenth of the time (`perf`, release build).
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// An encoder model with one head, loaded once and run on a worker thread.
pub struct Encoder {
    backbone: Backbone,
    head_module: heads::HeadModule,
    head: Head,
    device: Device,
}

impl Encoder {
    /// Loads the weights in `dir` for `config`'s architecture with the given head.
    pub fn load(dir: &Path, config: &ModelConfig, head: Head, dtype: WeightDtype) -> Result<Self> {
        // Before touching the weights, so an unknown architecture is reported as such.
        Family::of(&config.model_type).ok_or_else(|| ModelError::UnsupportedArchitecture {
            model_type: config.model_type.clone(),
        })?;
        // bf16 (`bf16.rs`): the linear layers of the BERT-like and DistilBERT encoders.
        // DeBERTa-v2's encoder is candle-transformers' and keeps its own f32 layers.
        if dtype != WeightDtype::F32 && config.model_type == "deberta-v2" {
            return Err(ModelError::DtypeNotSupported {
                dtype,
                model_type: config.model_type.clone(),
            });
        }
        let files = WeightFiles::find(dir)?;
        let vb = files.var_builder(DType::F32, &Device::Cpu)?;
        let encoder = Self::from_var_builder(&vb, config, head)?;
        match dtype {
            WeightDtype::F32 => Ok(encoder),
            WeightDtype::Bf16 => encoder.into_bf16(),
        }
    }

    /// The same encoder with the linear layers of its backbone in bf16 (`--dtype bfloat16`):
    /// each f32 weight is dropped as it is packed. The heads stay f32.
    fn into_bf16(self) -> Result<Self> {
        let backbone = match self.backbone {
            Backbone::Bert(m) => Backbone::Bert(m.into_bf16()?),
            Backbone::DistilBert(m) => Backbone::DistilBert(m.into_bf16()?),
            Backbone::DebertaV2(m) => Backbone::DebertaV2(m),
        };
        Ok(Self { backbone, ..self })
    }

    /// Builds the model from tensors already at hand (state-dict names, on the CPU).
    pub fn from_var_builder(
        vb: &candle_nn::VarBuilder<'_>,
        config: &ModelConfig,
        head: Head,
    ) -> Result<Self> {
        let device = vb.device().clone();
        let family =
            Family::of(&config.model_type).ok_or_else(|| ModelError::UnsupportedArchitecture {
                model_type: config.model_type.clone(),
            })?;
        let (backbone, head_module) = match family {
            Family::Bert
            | Family::Electra
            | Family::Albert
            | Family::Roberta
            | Family::XlmRoberta => {
                let cfg = if family.pads_positions() {
                    roberta::config(config)?
                } else {
                    bert::Config::from_model_config(config, bert::Flavor::of(family))?
                };
                let base = bert::base_prefix(vb, &cfg);
                let model = bert::BertModel::load(&base, &cfg)?;
                let h = heads::HeadModule::load_bert_like(
                    vb,
                    &base,
                    &cfg,
                    config,
                    head,
                    model.word_embeddings(),
                )?;
                (Backbone::Bert(model), h)
            }
            Family::DistilBert => {
                let cfg: distilbert::Config = config.parse()?;
                let base = if vb.contains_tensor("distilbert.embeddings.word_embeddings.weight") {
                    vb.pp("distilbert")
                } else {
                    vb.clone()
                };
                let model = distilbert::DistilBertModel::load(&base, &cfg)?;
                let h = heads::HeadModule::load_distilbert(
                    vb,
                    &cfg,
                    config,
                    head,
                    model.word_embeddings(),
                )?;
                (Backbone::DistilBert(model), h)
            }
            Family::DebertaV2 => {
                let cfg = deberta_v2::Config::from_model_config(config)?;
                let base = if vb.contains_tensor("deberta.embeddings.word_embeddings.weight") {
                    vb.pp("deberta")
                } else {
                    vb.clone()
                };
                let model = deberta_v2::DebertaV2::load(&base, &cfg)?;
                let words = base.get(
                    (cfg.inner.vocab_size, cfg.embedding_size),
                    "embeddings.word_embeddings.weight",
                )?;
                let h = heads::HeadModule::load_deberta_v2(vb, &cfg, config, head, &words)?;
                (Backbone::DebertaV2(Box::new(model)), h)
            }
        };
        Ok(Self {
            backbone,
            head_module,
            head,
            device,
        })
    }

    /// Runs the model. f32 on CPU. Base: `[B,T,H]` last hidden state; SequenceClassification:
    /// `[B,num_labels]` logits; TokenClassification: `[B,T,num_labels]`; QuestionAnswering:
    /// `[B,T,2]` (start, end logits); MaskedLm: `[B,T,vocab]`.
    pub fn forward(&self, batch: &EncoderBatch) -> Result<Tensor> {
        let tensors = BatchTensors::new(batch, &self.device)?;
        let hidden = on_pool(|| self.backbone.forward(&tensors))?;
        self.head_module.forward(&hidden)
    }

    /// Like [`forward`](Self::forward) for the per-token heads (Base, TokenClassification,
    /// QuestionAnswering, MaskedLm), but runs the head only at the given `(row, position)`
    /// pairs: `[N, X]` in their order. Fill-mask needs the vocabulary logits of the mask tokens
    /// only, which saves most of the `T × H × vocab` decoder product.
    pub fn forward_positions(
        &self,
        batch: &EncoderBatch,
        positions: &[(usize, usize)],
    ) -> Result<Tensor> {
        if self.head == Head::SequenceClassification {
            return Err(ModelError::BadBatch {
                reason: "sequence classification has no per-token output".into(),
            });
        }
        let tensors = BatchTensors::new(batch, &self.device)?;
        let (rows, len) = tensors.input_ids.dims2()?;
        let mut flat = Vec::with_capacity(positions.len());
        for &(row, pos) in positions {
            if row >= rows || pos >= len {
                return Err(ModelError::BadBatch {
                    reason: format!("position ({row}, {pos}) is outside the {rows} x {len} batch"),
                });
            }
            flat.push((row * len + pos) as u32);
        }
        let hidden = on_pool(|| self.backbone.forward(&tensors))?;
        let width = hidden.dim(2)?;
        let index = Tensor::from_vec(flat, positions.len(), &self.device)?;
        let picked = hidden
            .reshape((rows * len, width))?
            .index_select(&index, 0)?
            .unsqueeze(0)?;
        Ok(self.head_module.forward(&picked)?.squeeze(0)?)
    }

    /// The head this encoder was loaded with.
    pub fn head(&self) -> Head {
        self.head
    }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod timing;
