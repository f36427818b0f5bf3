//! Tokenizer loading, limits, truncation and padding on the conformance fixtures.

use std::path::{Path, PathBuf};

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/conformance/models")
        .join(name)
}

fn load(name: &str) -> TextTokenizer {
    let dir = fixture(name);
    let config = ModelConfig::from_dir(&dir).expect("config");
    TextTokenizer::from_dir(&dir, &config).expect("tokenizer")
}

const LONG: &str = "The logging module defines functions and classes which implement a flexible \
    event logging system for applications and libraries.";

#[test]
fn max_len_is_min_of_model_max_length_and_positions() {
    let bert = load("bert-seqcls");
    assert_eq!(bert.max_len(), 128);
    // RoBERTa: 130 positions minus pad_token_id + 1 = 128, and model_max_length 128.
    let roberta = load("roberta-seqcls");
    assert_eq!(roberta.max_len(), 128);
}

#[test]
fn special_tokens_and_pad_id_come_from_the_config() {
    let bert = load("bert-seqcls");
    assert_eq!(bert.mask_token(), Some("[MASK]"));
    assert_eq!(bert.pad_id(), 0);
    let roberta = load("roberta-seqcls");
    assert_eq!(roberta.mask_token(), Some("<mask>"));
    assert_eq!(roberta.pad_id(), 1);
}

#[test]
fn encode_adds_special_tokens_and_char_offsets() {
    let bert = load("bert-seqcls");
    let text = "Café naïve résumé — 東京 👍 is this ok?";
    let enc = bert
        .encode_batch(vec![EncodeInput::Single(text.into())], false)
        .expect("encode");
    let e = &enc[0];
    let cls = bert.inner().token_to_id("[CLS]").expect("cls");
    let sep = bert.inner().token_to_id("[SEP]").expect("sep");
    assert_eq!(e.get_ids().first(), Some(&cls));
    assert_eq!(e.get_ids().last(), Some(&sep));
    // Offsets are in chars: the last real token `?` is the last char.
    let chars = text.chars().count();
    let last_real = e.get_offsets()[e.len() - 2];
    assert_eq!(last_real, (chars - 1, chars));
    // `東` is one char at char index 20.
    let east = text.chars().position(|c| c == '東').expect("東");
    assert!(e.get_offsets().contains(&(east, east + 1)));
}

#[test]
fn truncation_is_optional_and_counts_special_tokens() {
    let bert = load("bert-seqcls");
    let long = std::iter::repeat_n(LONG, 20).collect::<Vec<_>>().join(" ");
    let full = bert
        .encode_batch(vec![EncodeInput::Single(long.clone())], false)
        .expect("encode");
    assert!(full[0].len() > 128);
    let cut = bert
        .encode_batch(vec![EncodeInput::Single(long.clone())], true)
        .expect("encode");
    assert_eq!(cut[0].len(), 128);
    assert_eq!(
        cut[0].get_ids().last(),
        bert.inner().token_to_id("[SEP]").as_ref()
    );
    // Pairs: longest first keeps the short side whole.
    let pair = bert
        .encode_batch(vec![EncodeInput::Pair(long, "short one".into())], true)
        .expect("encode");
    assert_eq!(pair[0].len(), 128);
    let second: usize = pair[0].get_type_ids().iter().map(|&t| t as usize).sum();
    assert_eq!(second, 3, "`short one` + [SEP] keep type id 1");
}

#[test]
fn pad_batch_right_pads_with_pad_id_and_zero_mask() {
    let roberta = load("roberta-seqcls");
    let enc = roberta
        .encode_batch(
            vec![
                EncodeInput::Single("Hello world".into()),
                EncodeInput::Single("Hello world, this is RoBERTa.".into()),
            ],
            true,
        )
        .expect("encode");
    let batch = roberta.pad_batch(&enc);
    let (short, long) = (enc[0].len(), enc[1].len());
    assert!(short < long);
    assert!(batch.input_ids.iter().all(|r| r.len() == long));
    assert_eq!(&batch.input_ids[0][..short], enc[0].get_ids());
    assert!(batch.input_ids[0][short..].iter().all(|&id| id == 1));
    assert_eq!(batch.attention_mask[0].iter().sum::<u32>() as usize, short);
    assert!(batch.attention_mask[1].iter().all(|&m| m == 1));
    assert!(batch.type_ids[0].iter().all(|&t| t == 0));
}

const SAMPLES: [&str; 8] = [
    "John Smith lives in Paris and works for the United Nations.",
    "Café naïve résumé — 東京 👍 is this ok?",
    "Schwarzenegger visited Kraków with Zbigniew Brzezinski last Tuesday.",
    "  leading and trailing spaces   ",
    "The capital of France is [MASK].",
    "The capital of France is <mask>.",
    "tabs\tand\nnewlines\r\n and \u{0}control \u{200b}zero-width",
    "",
];

/// Builds `dir`'s tokenizer from its slow files, ignoring any `tokenizer.json`.
fn load_slow(dir: &Path) -> TextTokenizer {
    let config = ModelConfig::from_dir(dir).expect("config");
    let tok_config = TokenizerConfig::from_dir(dir).expect("tokenizer config");
    let tokenizer = slow::build(dir, &tok_config, &config).expect("slow build");
    TextTokenizer::new(tokenizer, &tok_config, &config).expect("tokenizer")
}

fn assert_same_encodings(a: &TextTokenizer, b: &TextTokenizer) {
    let mut inputs: Vec<EncodeInput> = SAMPLES
        .iter()
        .map(|s| EncodeInput::Single((*s).into()))
        .collect();
    inputs.push(EncodeInput::Pair(SAMPLES[0].into(), SAMPLES[1].into()));
    inputs.push(EncodeInput::Pair(SAMPLES[4].into(), SAMPLES[2].into()));
    for truncate in [false, true] {
        let x = a.encode_batch(inputs.clone(), truncate).expect("encode");
        let y = b.encode_batch(inputs.clone(), truncate).expect("encode");
        for ((ex, ey), input) in x.iter().zip(&y).zip(&inputs) {
            assert_eq!(ex.get_ids(), ey.get_ids(), "ids of {input:?}");
            assert_eq!(ex.get_offsets(), ey.get_offsets(), "offsets of {input:?}");
            assert_eq!(
                ex.get_type_ids(),
                ey.get_type_ids(),
                "type ids of {input:?}"
            );
            assert_eq!(ex.get_tokens(), ey.get_tokens(), "tokens of {input:?}");
        }
    }
    assert_eq!(a.max_len(), b.max_len());
    assert_eq!(a.pad_id(), b.pad_id());
    assert_eq!(a.mask_token(), b.mask_token());
}

#[test]
fn slow_wordpiece_equals_tokenizer_json() {
    let slow = load("bert-tokcls-slowtok");
    let fast = load("bert-tokcls");
    assert_same_encodings(&slow, &fast);
    // The same holds for the other WordPiece fixtures rebuilt from their vocab.txt.
    for name in ["bert-seqcls", "distilbert-seqcls", "bert-mlm"] {
        assert_same_encodings(&load_slow(&fixture(name)), &load(name));
    }
}

#[test]
fn slow_byte_level_bpe_equals_tokenizer_json() {
    let dir = fixture("roberta-seqcls");
    assert_same_encodings(&load_slow(&dir), &load("roberta-seqcls"));
}

#[test]
fn slow_gpt2_bpe_equals_tokenizer_json() {
    let dir = fixture("gpt2-gen");
    let config = ModelConfig::from_dir(&dir).expect("config");
    let fast = TextTokenizer::from_dir(&dir, &config).expect("fast");
    assert_same_encodings(&load_slow(&dir), &fast);
}

#[test]
fn directory_without_tokenizer_files_is_missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        ModelConfig::from_value(serde_json::json!({"model_type": "bert"})).expect("config");
    assert!(matches!(
        TextTokenizer::from_dir(dir.path(), &config),
        Err(TokenizerError::MissingFiles { .. })
    ));
}

#[test]
fn tokenizer_config_overrides_bert_normalizer_of_tokenizer_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = fixture("bert-seqcls");
    for file in ["tokenizer.json", "config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(file), dir.path().join(file)).expect("copy");
    }
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"tokenizer_class": "BertTokenizer", "do_lower_case": false, "model_max_length": 128}"#,
    )
    .expect("write");
    let config = ModelConfig::from_dir(dir.path()).expect("config");
    let cased = TextTokenizer::from_dir(dir.path(), &config).expect("tokenizer");
    let lower = load("bert-seqcls");
    let text = vec![EncodeInput::Single("Paris".into())];
    let a = cased.encode_batch(text.clone(), false).expect("encode");
    let b = lower.encode_batch(text, false).expect("encode");
    assert_ne!(a[0].get_ids(), b[0].get_ids());
}
