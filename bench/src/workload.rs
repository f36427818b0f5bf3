//! Workloads: named request shapes (`tc-1x128`, `fe-32x128`, ...) and the `/invocations`
//! bodies they send.
//!
//! A name is `<task>-<inputs>x<tokens>[n<new>]`: `tc` is text-classification, `fe`
//! feature-extraction, `se` sentence-embeddings, `gen` text-generation and `t2t`
//! text2text-generation (these two need `n<new>`: the tokens to generate, e.g. `gen-1x16n64`);
//! `<inputs>` 1 sends `{"inputs": "text"}`, more sends a list. Each text is exactly `<tokens>`
//! tokens long including the special tokens the tokenizer adds (`[CLS]`/`[SEP]`, `</s>`): it is
//! made of whole-word vocabulary entries, and the count is checked by encoding it, so both servers
//! run the same sequence length with no padding and no truncation. Generation requests are greedy
//! with `min_new_tokens` = `max_new_tokens` = `<new>`, so every answer has exactly `<new>` tokens.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::json;
use tokenizers::Tokenizer;

/// A workload that cannot be named or built.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The name does not have the form `<task>-<inputs>x<tokens>[n<new>]`.
    #[error(
        "workload `{name}` must look like `tc-1x128`, `se-32x16` or `gen-1x16n64` (task tc|fe|se|gen|t2t, inputs >= 1, tokens >= 3; `n<new>` for gen and t2t only, and required there)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// `tokenizer.json` could not be loaded.
    #[error("cannot load tokenizer `{path}`: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// tokenizers' message (its error type is a boxed `dyn Error`).
        message: String,
    },
    /// Encoding failed.
    #[error("cannot encode a workload text: {message}")]
    Encode {
        /// tokenizers' message.
        message: String,
    },
    /// The vocabulary has no word that encodes to exactly one token.
    #[error("the vocabulary of `{path}` has no whole word that encodes to a single token")]
    NoWords {
        /// The tokenizer file.
        path: PathBuf,
    },
    /// A built text did not encode to the wanted length.
    #[error("a text built for {want} tokens encodes to {got}")]
    WrongLength {
        /// Tokens wanted.
        want: usize,
        /// Tokens got.
        got: usize,
    },
}

/// Result of this module.
pub type Result<T, E = WorkloadError> = std::result::Result<T, E>;

/// The pipeline a workload calls (its `HF_TASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// `text-classification`.
    TextClassification,
    /// `feature-extraction`.
    FeatureExtraction,
    /// `sentence-embeddings` (a sentence-transformers model).
    SentenceEmbeddings,
    /// `text-generation`.
    TextGeneration,
    /// `text2text-generation`.
    Text2Text,
}

impl Task {
    /// The `HF_TASK` value.
    pub fn hf_task(self) -> &'static str {
        match self {
            Self::TextClassification => "text-classification",
            Self::FeatureExtraction => "feature-extraction",
            Self::SentenceEmbeddings => "sentence-embeddings",
            Self::TextGeneration => "text-generation",
            Self::Text2Text => "text2text-generation",
        }
    }

    /// The short name used in workload names.
    pub fn short(self) -> &'static str {
        match self {
            Self::TextClassification => "tc",
            Self::FeatureExtraction => "fe",
            Self::SentenceEmbeddings => "se",
            Self::TextGeneration => "gen",
            Self::Text2Text => "t2t",
        }
    }

    /// Whether the task generates tokens (its workloads name how many).
    pub fn generates(self) -> bool {
        matches!(self, Self::TextGeneration | Self::Text2Text)
    }
}

/// A request shape: task, inputs per request, tokens per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The pipeline.
    pub task: Task,
    /// Inputs in one request (1: a string, more: a list).
    pub inputs: usize,
    /// Tokens per input, including the special tokens.
    pub tokens: usize,
    /// Tokens to generate per input (generation tasks only).
    pub new_tokens: Option<usize>,
}

impl FromStr for Workload {
    type Err = WorkloadError;

    fn from_str(name: &str) -> Result<Self> {
        let bad = || WorkloadError::BadName {
            name: name.to_owned(),
        };
        let (task, shape) = name.split_once('-').ok_or_else(bad)?;
        let task = [
            Task::TextClassification,
            Task::FeatureExtraction,
            Task::SentenceEmbeddings,
            Task::TextGeneration,
            Task::Text2Text,
        ]
        .into_iter()
        .find(|t| t.short() == task)
        .ok_or_else(bad)?;
        let (inputs, rest) = shape.split_once('x').ok_or_else(bad)?;
        let (tokens, new_tokens) = match rest.split_once('n') {
            Some((t, n)) => (t, Some(n.parse::<usize>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let inputs: usize = inputs.parse().map_err(|_| bad())?;
        let tokens: usize = tokens.parse().map_err(|_| bad())?;
        if inputs == 0
            || tokens < 3
            || task.generates() != new_tokens.is_some()
            || new_tokens == Some(0)
        {
            return Err(bad());
        }
        Ok(Self {
            task,
            inputs,
            tokens,
            new_tokens,
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}x{}", self.task.short(), self.inputs, self.tokens)?;
        match self.new_tokens {
            Some(n) => write!(f, "n{n}"),
            None => Ok(()),
        }
    }
}

impl Workload {
    /// The same task with one input: what the cold-start probe sends.
    pub fn single(self) -> Self {
        Self { inputs: 1, ..self }
    }

    /// The JSON body of one request, with texts of exactly `tokens` tokens.
    pub fn body(self, texts: &Texts) -> Result<Vec<u8>> {
        self.body_with(texts, false)
    }

    /// The body of one streamed request (`"stream": true`; generation tasks).
    pub fn stream_body(self, texts: &Texts) -> Result<Vec<u8>> {
        self.body_with(texts, true)
    }

    fn body_with(self, texts: &Texts, stream: bool) -> Result<Vec<u8>> {
        let texts = texts.make(self.inputs, self.tokens)?;
        let mut value = if self.inputs == 1 {
            json!({ "inputs": texts[0] })
        } else {
            json!({ "inputs": texts })
        };
        if let Some(n) = self.new_tokens {
            value["parameters"] =
                json!({ "max_new_tokens": n, "min_new_tokens": n, "do_sample": false });
        }
        if stream {
            value["stream"] = json!(true);
        }
        Ok(value.to_string().into_bytes())
    }

    /// Inputs answered by one request.
    pub fn items(self) -> usize {
        self.inputs
    }

    /// Tokens generated by one request (0 for encoder tasks).
    pub fn generated_tokens(self) -> usize {
        self.inputs * self.new_tokens.unwrap_or(0)
    }
}

/// Whole words of a tokenizer's vocabulary, to build texts of an exact token count.
pub struct Texts {
    tokenizer: Tokenizer,
    words: Vec<String>,
}

impl Texts {
    /// Loads `tokenizer.json` from `model_dir` and collects the single-token words.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| WorkloadError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Counts are of the text itself: a tokenizer.json that pads to a fixed length or
        // truncates (sentence-transformers' do) would hide them.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| WorkloadError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        // Whole words: vocabulary entries of lowercase letters, with the word-start marker of
        // byte-level BPE (`Ġ`) or SentencePiece (`▁`) taken off, that encode to one token.
        let mut candidates: Vec<(String, u32)> = tokenizer
            .get_vocab(false)
            .into_iter()
            .map(|(w, id)| {
                let word = w
                    .strip_prefix('\u{120}')
                    .or_else(|| w.strip_prefix('\u{2581}'))
                    .unwrap_or(&w)
                    .to_owned();
                (word, id)
            })
            .filter(|(w, _)| w.len() >= 3 && w.bytes().all(|b| b.is_ascii_lowercase()))
            .collect();
        // Vocabulary order (by id), so the texts do not depend on hash-map order.
        candidates.sort_by_key(|(_, id)| *id);
        let mut words: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (word, _) in candidates {
            if !seen.insert(word.clone()) {
                continue;
            }
            let enc =
                tokenizer
                    .encode(word.as_str(), false)
                    .map_err(|e| WorkloadError::Encode {
                        message: e.to_string(),
                    })?;
            if enc.get_ids().len() == 1 {
                words.push(word);
            }
        }
        if words.is_empty() {
            return Err(WorkloadError::NoWords { path });
        }
        Ok(Self { tokenizer, words })
    }

    /// `count` different texts of exactly `tokens` tokens each (special tokens included).
    ///
    /// With a WordPiece vocabulary every chosen word is one token, so the text is built at once;
    /// otherwise (byte-level BPE, SentencePiece: a word after a space may be another token than
    /// alone) words are added one at a time while the count stays within `tokens`.
    pub fn make(&self, count: usize, tokens: usize) -> Result<Vec<String>> {
        match self.make_by_words(count, tokens) {
            Err(WorkloadError::WrongLength { .. }) => self.make_greedy(count, tokens),
            other => other,
        }
    }

    fn make_greedy(&self, count: usize, tokens: usize) -> Result<Vec<String>> {
        let n = self.words.len();
        let stride = 7919 % n.max(1) + 1;
        (0..count)
            .map(|k| {
                let mut text = String::new();
                let mut got = self.count_tokens(&text)?;
                let mut j = 0;
                while got < tokens && j < 16 * tokens + n {
                    let word = &self.words[(k * tokens + j) * stride % n];
                    j += 1;
                    let candidate = if text.is_empty() {
                        word.clone()
                    } else {
                        format!("{text} {word}")
                    };
                    let c = self.count_tokens(&candidate)?;
                    if c <= tokens {
                        text = candidate;
                        got = c;
                    }
                }
                if got == tokens {
                    Ok(text)
                } else {
                    Err(WorkloadError::WrongLength { want: tokens, got })
                }
            })
            .collect()
    }

    fn make_by_words(&self, count: usize, tokens: usize) -> Result<Vec<String>> {
        let n_words = tokens.saturating_sub(2);
        let n = self.words.len();
        // A stride coprime-ish with n spreads each text over the vocabulary.
        let stride = 7919 % n.max(1) + 1;
        (0..count)
            .map(|k| {
                let text = (0..n_words)
                    .map(|j| self.words[(k * n_words + j) * stride % n].as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                let got = self.count_tokens(&text)?;
                if got == tokens {
                    Ok(text)
                } else {
                    Err(WorkloadError::WrongLength { want: tokens, got })
                }
            })
            .collect()
    }

    /// Tokens of `text` with the special tokens, as the servers' pipelines encode it.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| WorkloadError::Encode {
                message: e.to_string(),
            })?;
        Ok(enc.len())
    }

    /// The tokenizer, for timing it.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/conformance/models/bert-seqcls")
    }

    #[test]
    fn names_parse_and_print_back() {
        let w: Workload = "fe-32x128".parse().unwrap();
        assert_eq!(w.task, Task::FeatureExtraction);
        assert_eq!((w.inputs, w.tokens), (32, 128));
        assert_eq!(w.to_string(), "fe-32x128");
        assert_eq!(w.single().to_string(), "fe-1x128");
        let g: Workload = "gen-4x16n64".parse().unwrap();
        assert_eq!(
            (g.task, g.inputs, g.tokens, g.new_tokens),
            (Task::TextGeneration, 4, 16, Some(64))
        );
        assert_eq!(g.to_string(), "gen-4x16n64");
        assert_eq!(g.generated_tokens(), 256);
        for bad in [
            "tc",
            "xx-1x128",
            "tc-0x128",
            "tc-1x2",
            "tc-1y128",
            "tc-ax128",
            "gen-1x16",
            "tc-1x16n4",
            "t2t-1x16n0",
        ] {
            assert!(
                matches!(bad.parse::<Workload>(), Err(WorkloadError::BadName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn texts_have_the_exact_token_count_and_differ() {
        let texts = Texts::load(&fixture()).unwrap();
        let made = texts.make(3, 128).unwrap();
        for t in &made {
            assert_eq!(texts.count_tokens(t).unwrap(), 128);
        }
        assert_ne!(made[0], made[1]);
        assert_eq!(texts.make(1, 7).unwrap()[0].split(' ').count(), 5);
    }

    #[test]
    fn bodies_are_a_string_for_one_input_and_a_list_for_more() {
        let texts = Texts::load(&fixture()).unwrap();
        let one: serde_json::Value =
            serde_json::from_slice(&"tc-1x16".parse::<Workload>().unwrap().body(&texts).unwrap())
                .unwrap();
        assert!(one["inputs"].is_string());
        let many: serde_json::Value =
            serde_json::from_slice(&"fe-4x16".parse::<Workload>().unwrap().body(&texts).unwrap())
                .unwrap();
        assert_eq!(many["inputs"].as_array().unwrap().len(), 4);
    }
}
