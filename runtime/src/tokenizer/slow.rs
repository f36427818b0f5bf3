//! Fast tokenizers rebuilt from slow tokenizer files, component by component as transformers'
//! `convert_slow_tokenizer.py` (v4.51.3) does, so ids and offsets equal those of the
//! `tokenizer.json` transformers would write:
//! - `vocab.txt` → `BertConverter`: WordPiece, `BertNormalizer`, `BertPreTokenizer`, a
//!   `[CLS] $A [SEP] ($B [SEP])` template;
//! - `vocab.json` + `merges.txt` → `RobertaConverter` (byte-level BPE, `RobertaProcessing`), or
//!   `GPT2Converter` for `GPT2Tokenizer` (no special tokens, `ByteLevel` post-processor).
//!
//! Then, as `PreTrainedTokenizerFast.__init__`, the `added_tokens_decoder` entries of
//! `tokenizer_config.json` and any special token not among them are added.

use std::path::Path;

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::{Result, TokenizerConfig, TokenizerError};
use crate::models::ModelConfig;

/// The special-token keys of transformers' `SPECIAL_TOKENS_ATTRIBUTES`, in its order.
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// Builds a tokenizer from `vocab.txt`, `vocab.json` + `merges.txt`, or `spiece.model`.
pub(super) fn build(
    dir: &Path,
    config: &TokenizerConfig,
    _model: &ModelConfig,
) -> Result<Tokenizer> {
    let vocab_txt = dir.join("vocab.txt");
    let vocab_json = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    if vocab_txt.is_file() {
        wordpiece(&vocab_txt, config)
    } else if vocab_json.is_file() && merges.is_file() {
        byte_level_bpe(&vocab_json, &merges, config)
    } else if dir.join("spiece.model").is_file() {
        t5_sentencepiece(&dir.join("spiece.model"), config)
    } else {
        Err(TokenizerError::MissingFiles {
            dir: dir.to_path_buf(),
        })
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn build_error(path: &Path, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build {
        path: path.to_path_buf(),
        source: e.to_string().into(),
    }
}

/// A special token's text and id; the default text when the config has none.
fn special_id(
    tokenizer: &Tokenizer,
    config: &TokenizerConfig,
    key: &str,
    default: &str,
) -> Result<(String, u32)> {
    let token = config.special(key).unwrap_or(default).to_owned();
    match tokenizer.token_to_id(&token) {
        Some(id) => Ok((token, id)),
        None => Err(TokenizerError::UnknownSpecialToken {
            key: key.into(),
            token,
        }),
    }
}

// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/convert_slow_tokenizer.py#L95
fn wordpiece(path: &Path, config: &TokenizerConfig) -> Result<Tokenizer> {
    let text = read(path)?;
    // `load_vocab`: one token per line (the newline removed), id = line number; a repeated
    // token keeps its last line.
    let vocab: tokenizers::models::bpe::Vocab = text
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, line)| {
            let token = line.strip_suffix('\n').unwrap_or(line);
            let token = token.strip_suffix('\r').unwrap_or(token);
            (token.to_owned(), i as u32)
        })
        .collect();
    let unk = config.special("unk_token").unwrap_or("[UNK]").to_owned();
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|source| TokenizerError::Build {
            path: path.to_path_buf(),
            source,
        })?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            config.tokenize_chinese_chars.unwrap_or(true),
            config.strip_accents,
            config.do_lower_case.unwrap_or(true),
        )))
        .map_err(|source| TokenizerError::Build {
            path: path.to_path_buf(),
            source,
        })?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let (cls, cls_id) = special_id(&tokenizer, config, "cls_token", "[CLS]")?;
    let (sep, sep_id) = special_id(&tokenizer, config, "sep_token", "[SEP]")?;
    let template = TemplateProcessing::builder()
        .try_single(format!("{cls}:0 $A:0 {sep}:0"))
        .map_err(|e| build_error(path, e))?
        .try_pair(format!("{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"))
        .map_err(|e| build_error(path, e))?
        .special_tokens(vec![(cls, cls_id), (sep, sep_id)])
        .build()
        .map_err(|e| build_error(path, e))?;
    tokenizer.with_post_processor(Some(template));
    tokenizer.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    add_tokens(&mut tokenizer, config, path, &[])?;
    Ok(tokenizer)
}

// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/convert_slow_tokenizer.py#L395
fn byte_level_bpe(
    vocab_path: &Path,
    merges_path: &Path,
    config: &TokenizerConfig,
) -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab =
        serde_json::from_str(&read(vocab_path)?).map_err(|source| TokenizerError::Json {
            path: vocab_path.to_path_buf(),
            source,
        })?;
    // `RobertaTokenizer.__init__`: `merges_handle.read().split("\n")[1:-1]`, each line split on
    // whitespace: the first line (`#version`) and the last piece are dropped.
    let text = read(merges_path)?;
    let lines: Vec<&str> = text.split('\n').collect();
    let body = if lines.len() >= 2 {
        &lines[1..lines.len() - 1]
    } else {
        &[][..]
    };
    let merges = body
        .iter()
        .map(|line| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_owned(), b.to_owned())),
                _ => Err(build_error(merges_path, format!("bad merge line `{line}`"))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|source| TokenizerError::Build {
            path: merges_path.to_path_buf(),
            source,
        })?;
    let add_prefix_space = config.add_prefix_space.unwrap_or(false);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let gpt2 = config
        .tokenizer_class
        .as_deref()
        .is_some_and(|c| c.starts_with("GPT2"));
    if gpt2 {
        // `GPT2Converter` without `add_bos_token`.
        tokenizer.with_post_processor(Some(ByteLevel::new(true, false, true)));
        add_tokens(&mut tokenizer, config, vocab_path, &[])?;
    } else {
        let (cls, cls_id) = special_id(&tokenizer, config, "cls_token", "<s>")?;
        let (sep, sep_id) = special_id(&tokenizer, config, "sep_token", "</s>")?;
        // `RobertaTokenizerFast.__init__` re-applies `add_prefix_space` / `trim_offsets`.
        let processing = RobertaProcessing::new((sep, sep_id), (cls, cls_id))
            .trim_offsets(config.trim_offsets.unwrap_or(true))
            .add_prefix_space(add_prefix_space);
        tokenizer.with_post_processor(Some(processing));
        // `RobertaTokenizer` makes a plain-string mask token strip the space on its left.
        add_tokens(&mut tokenizer, config, vocab_path, &["mask_token"])?;
    }
    Ok(tokenizer)
}

/// `T5Tokenizer` (`legacy=True`, transformers' default): SentencePiece segmentation in Rust
/// (`super::sentencepiece`), `</s>` appended, the `added_tokens_decoder` entries
/// (`<extra_id_N>`, ...) added.
fn t5_sentencepiece(path: &Path, config: &TokenizerConfig) -> Result<Tokenizer> {
    let model = super::sentencepiece::SpModel::from_file(path)?;
    let mut tokenizer = model.tokenizer().map_err(|e| build_error(path, e))?;
    let (eos, eos_id) = special_id(&tokenizer, config, "eos_token", "</s>")?;
    let template = TemplateProcessing::builder()
        .try_single(format!("$A:0 {eos}:0"))
        .and_then(|b| b.try_pair(format!("$A:0 {eos}:0 $B:0 {eos}:0")))
        .map_err(|e| build_error(path, e))?
        .special_tokens(vec![(eos.clone(), eos_id)])
        .build()
        .map_err(|e| build_error(path, e))?;
    tokenizer.with_post_processor(Some(template));
    add_tokens(&mut tokenizer, config, path, &[])?;
    Ok(tokenizer)
}

/// `PreTrainedTokenizerFast.__init__`: adds the `added_tokens_decoder` entries (by id) with
/// their flags, then every special token not among them (`lstrip_keys`: with `lstrip`).
fn add_tokens(
    tokenizer: &mut Tokenizer,
    config: &TokenizerConfig,
    path: &Path,
    lstrip_keys: &[&str],
) -> Result<()> {
    let mut entries: Vec<(u64, &Value)> = config
        .added_tokens_decoder
        .iter()
        .filter_map(|(id, v)| id.parse().ok().map(|id: u64| (id, v)))
        .collect();
    entries.sort_by_key(|(id, _)| *id);
    let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool);
    let mut tokens: Vec<AddedToken> = Vec::new();
    for (_, v) in entries {
        let Some(content) = v.get("content").and_then(Value::as_str) else {
            return Err(build_error(
                path,
                "an `added_tokens_decoder` entry has no `content`",
            ));
        };
        let special = flag(v, "special").unwrap_or(false);
        tokens.push(
            AddedToken::from(content, special)
                .lstrip(flag(v, "lstrip").unwrap_or(false))
                .rstrip(flag(v, "rstrip").unwrap_or(false))
                .single_word(flag(v, "single_word").unwrap_or(false))
                .normalized(flag(v, "normalized").unwrap_or(!special)),
        );
    }
    for key in SPECIAL_KEYS {
        let Some(content) = config.special(key) else {
            continue;
        };
        if tokens.iter().any(|t| t.content == content) {
            continue;
        }
        tokens.push(
            AddedToken::from(content, true)
                .lstrip(lstrip_keys.contains(&key))
                .normalized(false),
        );
    }
    tokenizer
        .add_tokens(tokens)
        .map_err(|source| TokenizerError::Build {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}
