//! Tokenizers: `tokenizer.json`, or the slow files (`vocab.txt` WordPiece, `vocab.json` +
//! `merges.txt` byte-level BPE) rebuilt with the `tokenizers` crate the way transformers'
//! converters build the fast tokenizer; the truncation policy; batch padding (contract §4, step 6).
//!
//! Does not choose what to tokenize (the pipelines do) nor run models.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::{
    Encoding, NormalizerWrapper, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::models::{EncoderBatch, ModelConfig};

pub mod sentencepiece;
mod slow;
pub mod tapas;

/// `Result` with [`TokenizerError`].
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// transformers' `VERY_LARGE_INTEGER`: a `model_max_length` at or above it means "no limit".
const VERY_LARGE: f64 = 1e29;
/// The length limit when neither the tokenizer nor the model states one.
const UNBOUNDED: usize = 1 << 20;

/// A tokenizer that cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer file could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON tokenizer file is malformed.
    #[error("invalid `{}`", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The `tokenizers` crate rejected a file or a component built from it.
    #[error("cannot build the tokenizer from `{}`", path.display())]
    Build {
        /// The file the component came from.
        path: PathBuf,
        /// The error from `tokenizers`.
        #[source]
        source: tokenizers::Error,
    },
    /// No tokenizer files we understand in the directory.
    #[error(
        "no tokenizer in `{}`: expected `tokenizer.json`, `vocab.txt` (WordPiece), `vocab.json` + `merges.txt` (byte-level BPE) or `spiece.model` (SentencePiece)",
        dir.display()
    )]
    MissingFiles {
        /// The model directory.
        dir: PathBuf,
    },
    /// A special token named in the config is not in the vocabulary.
    #[error("special token `{token}` (`{key}`) is not in the vocabulary")]
    UnknownSpecialToken {
        /// The config key, e.g. `cls_token`.
        key: String,
        /// The token text.
        token: String,
    },
    /// Encoding failed.
    #[error("tokenization failed")]
    Encode {
        /// The error from `tokenizers`.
        #[source]
        source: tokenizers::Error,
    },
}

/// One input to encode: a text or a text pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeInput {
    /// One sequence.
    Single(String),
    /// A pair of sequences (`text`, `text_pair`).
    Pair(String, String),
}

/// A special token in `tokenizer_config.json`: a string or an `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    fn content(&self) -> &str {
        match self {
            Self::Text(s) | Self::Added { content: s } => s,
        }
    }
}

/// The keys of `tokenizer_config.json` / `special_tokens_map.json` that we use.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct TokenizerConfig {
    #[serde(default)]
    model_max_length: Option<f64>,
    #[serde(default)]
    pub(crate) do_lower_case: Option<bool>,
    #[serde(default)]
    pub(crate) strip_accents: Option<bool>,
    #[serde(default)]
    pub(crate) tokenize_chinese_chars: Option<bool>,
    #[serde(default)]
    pub(crate) add_prefix_space: Option<bool>,
    #[serde(default)]
    pub(crate) trim_offsets: Option<bool>,
    #[serde(default)]
    pub(crate) tokenizer_class: Option<String>,
    #[serde(default)]
    clean_up_tokenization_spaces: Option<bool>,
    #[serde(default)]
    cls_token: Option<SpecialToken>,
    #[serde(default)]
    sep_token: Option<SpecialToken>,
    #[serde(default)]
    pad_token: Option<SpecialToken>,
    #[serde(default)]
    unk_token: Option<SpecialToken>,
    #[serde(default)]
    mask_token: Option<SpecialToken>,
    #[serde(default)]
    bos_token: Option<SpecialToken>,
    #[serde(default)]
    eos_token: Option<SpecialToken>,
    /// `added_tokens_decoder`: id → token, in the config's order.
    #[serde(default)]
    pub(crate) added_tokens_decoder: BTreeMap<String, Value>,
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json` and fills missing special tokens from
    /// `special_tokens_map.json`; both are optional.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self> {
        let mut config: Self = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        if let Some(map) = read_json::<Self>(&dir.join("special_tokens_map.json"))? {
            let fill = |a: &mut Option<SpecialToken>, b: Option<SpecialToken>| {
                if a.is_none() {
                    *a = b;
                }
            };
            fill(&mut config.cls_token, map.cls_token);
            fill(&mut config.sep_token, map.sep_token);
            fill(&mut config.pad_token, map.pad_token);
            fill(&mut config.unk_token, map.unk_token);
            fill(&mut config.mask_token, map.mask_token);
            fill(&mut config.bos_token, map.bos_token);
            fill(&mut config.eos_token, map.eos_token);
        }
        Ok(config)
    }

    /// The text of a special token, by its config key (`cls_token`, …).
    pub(crate) fn special(&self, key: &str) -> Option<&str> {
        let token = match key {
            "cls_token" => &self.cls_token,
            "sep_token" => &self.sep_token,
            "pad_token" => &self.pad_token,
            "unk_token" => &self.unk_token,
            "mask_token" => &self.mask_token,
            "bos_token" => &self.bos_token,
            "eos_token" => &self.eos_token,
            _ => &None,
        };
        token.as_ref().map(SpecialToken::content)
    }
}

/// Reads and parses a JSON file; `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| TokenizerError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// `BertTokenizerFast.__init__` (also DistilBERT's and ELECTRA's): when the `BertNormalizer` of
/// `tokenizer.json` disagrees with `tokenizer_config.json` (`do_lower_case` default true,
/// `strip_accents`, `tokenize_chinese_chars` default true), the config wins.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/bert/tokenization_bert_fast.py#L83
fn align_bert_normalizer(
    tokenizer: &mut Tokenizer,
    tok_config: &TokenizerConfig,
    config: &ModelConfig,
) -> tokenizers::Result<()> {
    let class = tok_config
        .tokenizer_class
        .as_deref()
        .map(|c| c.trim_end_matches("Fast").to_owned())
        .unwrap_or_else(|| match config.model_type.as_str() {
            "bert" => "BertTokenizer".into(),
            "distilbert" => "DistilBertTokenizer".into(),
            "electra" => "ElectraTokenizer".into(),
            _ => String::new(),
        });
    if !matches!(
        class.as_str(),
        "BertTokenizer" | "DistilBertTokenizer" | "ElectraTokenizer"
    ) {
        return Ok(());
    }
    let Some(NormalizerWrapper::BertNormalizer(current)) = tokenizer.get_normalizer() else {
        return Ok(());
    };
    let lowercase = tok_config.do_lower_case.unwrap_or(true);
    let chinese = tok_config.tokenize_chinese_chars.unwrap_or(true);
    let accents = tok_config.strip_accents;
    if current.lowercase != lowercase
        || current.strip_accents != accents
        || current.handle_chinese_chars != chinese
    {
        let aligned = BertNormalizer::new(current.clean_text, chinese, accents, lowercase);
        tokenizer.with_normalizer(Some(aligned))?;
    }
    Ok(())
}

/// A loaded tokenizer with the model's length limit and padding id.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    /// `tokenizer_config.json` + `special_tokens_map.json`, for [`special_token`](Self::special_token).
    config: TokenizerConfig,
    /// No truncation, no padding.
    plain: Tokenizer,
    /// Truncation to `max_len` (longest first), no padding.
    truncating: Tokenizer,
    max_len: usize,
    pad_id: u32,
    mask_token: Option<String>,
}

impl TextTokenizer {
    /// `tokenizer.json` when present; otherwise the slow files: WordPiece `vocab.txt` (+
    /// `tokenizer_config.json`: `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`,
    /// special tokens) and byte-level BPE `vocab.json` + `merges.txt` (RoBERTa-style,
    /// `add_prefix_space` from `tokenizer_config.json`), built with the `tokenizers` crate's own
    /// components as transformers' converters build them.
    pub fn from_dir(dir: &Path, config: &ModelConfig) -> Result<Self> {
        let tok_config = TokenizerConfig::from_dir(dir)?;
        let json = dir.join("tokenizer.json");
        let tokenizer = if json.is_file() {
            let mut tokenizer =
                Tokenizer::from_file(&json).map_err(|source| TokenizerError::Build {
                    path: json.clone(),
                    source,
                })?;
            align_bert_normalizer(&mut tokenizer, &tok_config, config).map_err(|source| {
                TokenizerError::Build {
                    path: json.clone(),
                    source,
                }
            })?;
            tokenizer
        } else {
            slow::build(dir, &tok_config, config)?
        };
        Self::new(tokenizer, &tok_config, config)
    }

    fn new(
        mut tokenizer: Tokenizer,
        tok_config: &TokenizerConfig,
        config: &ModelConfig,
    ) -> Result<Self> {
        let pad_id = tok_config
            .special("pad_token")
            .and_then(|t| tokenizer.token_to_id(t))
            .or_else(|| tokenizer.get_padding().map(|p| p.pad_id))
            .or(config.pad_token_id)
            .unwrap_or(0);
        let mask_token = tok_config
            .special("mask_token")
            .map(str::to_owned)
            .or_else(|| {
                ["[MASK]", "<mask>"]
                    .into_iter()
                    .find(|t| tokenizer.token_to_id(t).is_some())
                    .map(str::to_owned)
            });
        let from_tokenizer = tok_config
            .model_max_length
            .filter(|&m| m.is_finite() && m > 0.0 && m < VERY_LARGE)
            .map(|m| m as usize);
        let from_model = config
            .max_position_embeddings
            .map(|m| m.saturating_sub(config.position_offset()));
        let max_len = match (from_tokenizer, from_model) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => UNBOUNDED,
        };
        // transformers' fast tokenizer overrides any truncation/padding stored in tokenizer.json
        // with the call's arguments; padding is ours to do per batch.
        tokenizer.with_padding(None);
        let plain: Tokenizer = tokenizer
            .with_truncation(None)
            .map_err(|source| TokenizerError::Encode { source })?
            .clone()
            .into();
        let truncating: Tokenizer = tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|source| TokenizerError::Encode { source })?
            .clone()
            .into();
        Ok(Self {
            config: tok_config.clone(),
            plain,
            truncating,
            max_len,
            pad_id,
            mask_token,
        })
    }

    /// Adds special tokens; keeps offsets (char offsets into the input, as transformers reports
    /// them); truncates to [`max_len`](Self::max_len) when `truncate` (pairs: longest first) and
    /// does no padding (see [`pad_batch`](Self::pad_batch)).
    pub fn encode_batch(&self, inputs: Vec<EncodeInput>, truncate: bool) -> Result<Vec<Encoding>> {
        let tokenizer = if truncate {
            &self.truncating
        } else {
            &self.plain
        };
        tokenizer
            .encode_batch_char_offsets(to_encode_inputs(inputs), true)
            .map_err(|source| TokenizerError::Encode { source })
    }

    /// min(`tokenizer_config.json` `model_max_length`, `max_position_embeddings` minus the
    /// position offset (RoBERTa: `pad_token_id + 1`)).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Right-pads the encodings to the longest one with [`pad_id`](Self::pad_id), type id 0 and
    /// attention mask 0.
    pub fn pad_batch(&self, encodings: &[Encoding]) -> EncoderBatch {
        let len = encodings.iter().map(Encoding::len).max().unwrap_or(0);
        let mut batch = EncoderBatch {
            input_ids: Vec::with_capacity(encodings.len()),
            type_ids: Vec::with_capacity(encodings.len()),
            attention_mask: Vec::with_capacity(encodings.len()),
            extra_type_ids: Vec::new(),
        };
        for e in encodings {
            let pad = len - e.len();
            let padded = |v: &[u32], fill: u32| {
                let mut row = Vec::with_capacity(len);
                row.extend_from_slice(v);
                row.resize(len, fill);
                row
            };
            batch.input_ids.push(padded(e.get_ids(), self.pad_id));
            batch.type_ids.push(padded(e.get_type_ids(), 0));
            let mut mask = vec![1u32; e.len()];
            mask.resize(e.len() + pad, 0);
            batch.attention_mask.push(mask);
        }
        batch
    }

    /// The underlying `tokenizers` tokenizer (no truncation, no padding).
    pub fn inner(&self) -> &Tokenizer {
        &self.plain
    }

    /// The mask token, e.g. `[MASK]` or `<mask>`.
    pub fn mask_token(&self) -> Option<&str> {
        self.mask_token.as_deref()
    }

    /// The padding token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// A special token named in the tokenizer config by its key (`cls_token`, `unk_token`, ...).
    pub fn special_token(&self, key: &str) -> Option<&str> {
        self.config.special(key)
    }

    /// `clean_up_tokenization_spaces` (transformers' default: false): whether decoded text gets
    /// `clean_up_tokenization` (" ." -> "." and the like).
    pub fn clean_up_tokenization_spaces(&self) -> bool {
        self.config.clean_up_tokenization_spaces.unwrap_or(false)
    }
}

fn to_encode_inputs(inputs: Vec<EncodeInput>) -> Vec<tokenizers::EncodeInput<'static>> {
    inputs
        .into_iter()
        .map(|input| match input {
            EncodeInput::Single(a) => tokenizers::EncodeInput::Single(a.into()),
            EncodeInput::Pair(a, b) => tokenizers::EncodeInput::Dual(a.into(), b.into()),
        })
        .collect()
}

#[cfg(test)]
mod tests;
