//! Tokenizer loading, limits, truncation and padding on the conformance fixtures.

use std::path::PathBuf;

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
