//! Workloads: named request shapes (`tc-1x128`, `fe-32x128`, ...) and the `/invocations`
//! bodies they send.
//!
//! A name is `<task>-<inputs>x<tokens>`: `tc` is text-classification, `fe` feature-extraction;
//! `<inputs>` 1 sends `{"inputs": "text"}`, more sends a list. Each text is exactly `<tokens>`
//! tokens long including `[CLS]` and `[SEP]`: it is made of whole-word vocabulary entries that
//! the tokenizer maps to one token each, and the count is checked by encoding it, so both servers
//! run the same sequence length with no padding and no truncation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::json;
use tokenizers::Tokenizer;

/// A workload that cannot be named or built.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The name does not have the form `<tc|fe>-<inputs>x<tokens>`.
    #[error(
        "workload `{name}` must look like `tc-1x128` or `fe-32x128` (task tc|fe, inputs >= 1, tokens >= 3)"
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
}

impl Task {
    /// The `HF_TASK` value.
    pub fn hf_task(self) -> &'static str {
        match self {
            Self::TextClassification => "text-classification",
            Self::FeatureExtraction => "feature-extraction",
        }
    }
}

/// A request shape: task, inputs per request, tokens per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The pipeline.
    pub task: Task,
    /// Inputs in one request (1: a string, more: a list).
    pub inputs: usize,
    /// Tokens per input, including `[CLS]` and `[SEP]`.
    pub tokens: usize,
}

impl FromStr for Workload {
    type Err = WorkloadError;

    fn from_str(name: &str) -> Result<Self> {
        let bad = || WorkloadError::BadName {
            name: name.to_owned(),
        };
        let (task, shape) = name.split_once('-').ok_or_else(bad)?;
        let task = match task {
            "tc" => Task::TextClassification,
            "fe" => Task::FeatureExtraction,
            _ => return Err(bad()),
        };
        let (inputs, tokens) = shape.split_once('x').ok_or_else(bad)?;
        let inputs: usize = inputs.parse().map_err(|_| bad())?;
        let tokens: usize = tokens.parse().map_err(|_| bad())?;
        if inputs == 0 || tokens < 3 {
            return Err(bad());
        }
        Ok(Self {
            task,
            inputs,
            tokens,
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let task = match self.task {
            Task::TextClassification => "tc",
            Task::FeatureExtraction => "fe",
        };
        write!(f, "{task}-{}x{}", self.inputs, self.tokens)
    }
}

impl Workload {
    /// The same task with one input: what the cold-start probe sends.
    pub fn single(self) -> Self {
        Self { inputs: 1, ..self }
    }

    /// The JSON body of one request, with texts of exactly `tokens` tokens.
    pub fn body(self, texts: &Texts) -> Result<Vec<u8>> {
        let texts = texts.make(self.inputs, self.tokens)?;
        let value = if self.inputs == 1 {
            json!({ "inputs": texts[0] })
        } else {
            json!({ "inputs": texts })
        };
        Ok(value.to_string().into_bytes())
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
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| WorkloadError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut candidates: Vec<(String, u32)> = tokenizer
            .get_vocab(false)
            .into_iter()
            .filter(|(w, _)| w.len() >= 3 && w.bytes().all(|b| b.is_ascii_lowercase()))
            .collect();
        // Vocabulary order (by id), so the texts do not depend on hash-map order.
        candidates.sort_by_key(|(_, id)| *id);
        let mut words = Vec::new();
        for (word, id) in candidates {
            let enc =
                tokenizer
                    .encode(word.as_str(), false)
                    .map_err(|e| WorkloadError::Encode {
                        message: e.to_string(),
                    })?;
            if enc.get_ids() == [id] {
                words.push(word);
            }
        }
        if words.is_empty() {
            return Err(WorkloadError::NoWords { path });
        }
        Ok(Self { tokenizer, words })
    }

    /// `count` different texts of exactly `tokens` tokens each (special tokens included).
    pub fn make(&self, count: usize, tokens: usize) -> Result<Vec<String>> {
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
        for bad in [
            "tc", "xx-1x128", "tc-0x128", "tc-1x2", "tc-1y128", "tc-ax128",
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
