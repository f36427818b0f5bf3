//! Tokenizer input: text (and a text pair) through the tokenizers of the committed conformance
//! models, as the pipelines call them. The first byte picks the tokenizer; the rest, read as
//! UTF-8 (lossy), is split at the first NUL into the text and its pair (for TAPAS: the question
//! and a table, rows by line, cells by tab).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sagebrush::models::ModelConfig;
use sagebrush::tokenizer::sentencepiece::MarianTokenizer;
use sagebrush::tokenizer::tapas::{Table, TapasTokenizer, Truncation};
use sagebrush::tokenizer::{EncodeInput, TextTokenizer};

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/conformance/models")
        .join(name)
}

fn text_tokenizer(name: &str) -> TextTokenizer {
    let dir = model_dir(name);
    let config = ModelConfig::from_dir(&dir).expect("fixture config.json");
    TextTokenizer::from_dir(&dir, &config).expect("fixture tokenizer")
}

/// WordPiece (tokenizer.json), WordPiece built from vocab.txt, byte-level BPE, SentencePiece
/// unigram (XLM-R), DeBERTa-v2's SentencePiece.
static TEXT: LazyLock<Vec<TextTokenizer>> = LazyLock::new(|| {
    [
        "bert-seqcls",
        "bert-tokcls-slowtok",
        "roberta-seqcls",
        "xlmr-tokcls",
        "deberta-v2-nli",
        "gpt2-gen",
    ]
    .into_iter()
    .map(text_tokenizer)
    .collect()
});

static MARIAN: LazyLock<MarianTokenizer> =
    LazyLock::new(|| MarianTokenizer::from_dir(&model_dir("marian-mt")).expect("marian fixture"));

static TAPAS: LazyLock<TapasTokenizer> = LazyLock::new(|| {
    let dir = model_dir("tapas-tqa");
    let config = ModelConfig::from_dir(&dir).expect("fixture config.json");
    TapasTokenizer::from_dir(&dir, &config).expect("tapas fixture")
});

fn table(text: &str) -> Table {
    let mut lines = text.lines();
    let columns: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split('\t')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|line| {
            let mut row: Vec<String> = line.split('\t').map(str::to_owned).collect();
            row.resize(columns.len(), String::new());
            row
        })
        .collect();
    Table { columns, rows }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let input = String::from_utf8_lossy(rest);
    let (text, pair) = input.split_once('\0').unwrap_or((&input, ""));
    let n = TEXT.len() + 2;
    match usize::from(pick) % n {
        i if i < TEXT.len() => {
            let tokenizer = &TEXT[i];
            let inputs = vec![
                EncodeInput::Single(text.to_owned()),
                EncodeInput::Pair(text.to_owned(), pair.to_owned()),
            ];
            for truncate in [false, true] {
                let Ok(encodings) = tokenizer.encode_batch(inputs.clone(), truncate) else {
                    continue;
                };
                if truncate {
                    for e in &encodings {
                        assert!(e.len() <= tokenizer.max_len(), "truncated past max_len");
                    }
                }
                let batch = tokenizer.pad_batch(&encodings);
                for ids in &batch.input_ids {
                    let _ = tokenizer.inner().decode(ids, true);
                    let _ = tokenizer.inner().decode(ids, false);
                }
            }
        }
        i if i == TEXT.len() => {
            if let Ok((ids, offsets)) = MARIAN.encode(text) {
                assert_eq!(ids.len(), offsets.len());
                let _ = MARIAN.decode(&ids);
            }
        }
        _ => {
            let Ok(tokenized) = TAPAS.tokenize_table(&table(pair)) else {
                return;
            };
            for truncation in [Truncation::DropRowsToFit, Truncation::None] {
                let _ = TAPAS.encode(&tokenized, text, truncation);
            }
        }
    }
});
