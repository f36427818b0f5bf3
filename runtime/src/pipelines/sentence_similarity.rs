//! sentence-similarity (contract §4): the cosine similarity of one source sentence to each of a
//! list of sentences, as Hugging Face's inference toolkit answers it
//! (`sentence_transformers_utils.SentenceSimilarityPipeline`: `util.pytorch_cos_sim` of the two
//! `encode` results). `{"inputs": {"source_sentence": "...", "sentences": ["...", ...]}}` gives
//! `{"similarities": [f32, ...]}`, one per sentence in order.
//!
//! Parameters: `truncate` and `prompt_name`, as for sentence-embeddings (normalizing changes
//! no cosine, so `normalize` is not accepted).

use serde_json::{Value, json};

use super::answer::finite;
use super::inputs::{FieldProblem, only_keys, string_field, string_list_field};
use super::sentence_embeddings::{EmbedOptions, SentenceEncoder};
use super::{Envelope, Pipeline, PipelineError, Result, Task, json_kind};

/// Parameter names sentence-similarity accepts.
pub const ACCEPTED: &[&str] = &["truncate", "prompt_name"];

/// The shape this task expects, for error messages.
const EXPECTED: &str = r#"{"source_sentence": string, "sentences": [string, ...]}"#;

/// The source sentence and the sentences to compare it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// `source_sentence`.
    pub source: String,
    /// `sentences`.
    pub sentences: Vec<String>,
}

/// Reads `inputs`; anything but the expected object is a 400 showing the expected shape.
pub fn parse_inputs(inputs: &Value) -> Result<Inputs> {
    let wrong = |what: String| {
        PipelineError::validation(format!(
            "sentence-similarity expects `inputs` as {EXPECTED}, {what}"
        ))
    };
    let Value::Object(map) = inputs else {
        return Err(wrong(format!("got {}", json_kind(inputs))));
    };
    let field = |problem: FieldProblem| wrong(problem.0);
    only_keys(map, &["source_sentence", "sentences"]).map_err(field)?;
    let source = string_field(map, "source_sentence").map_err(field)?;
    // The toolkit encodes a lone string as a list of one.
    let sentences = string_list_field(map, "sentences", true).map_err(field)?;
    Ok(Inputs { source, sentences })
}

/// Cosine similarity as `util.cos_sim`: both vectors L2-normalized (norm clamped at 1e-12),
/// then their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let (na, nb) = (norm(a), norm(b));
    a.iter().zip(b).map(|(x, y)| (x / na) * (y / nb)).sum()
}

/// The sentence-similarity pipeline.
pub struct SentenceSimilarity {
    encoder: SentenceEncoder,
}

impl SentenceSimilarity {
    /// A pipeline over an embedding core.
    pub fn new(encoder: SentenceEncoder) -> Self {
        Self { encoder }
    }
}

impl Pipeline for SentenceSimilarity {
    fn task(&self) -> Task {
        Task::SentenceSimilarity
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let task = Task::SentenceSimilarity;
        // The parameters are the embedding options themselves.
        let options: EmbedOptions = super::params::params(&task, ACCEPTED, request.parameters)?;
        let inputs = parse_inputs(&request.inputs)?;
        // One call, so that the source and the sentences share the forward passes.
        let mut texts = Vec::with_capacity(1 + inputs.sentences.len());
        texts.push(inputs.source);
        texts.extend(inputs.sentences);
        let vectors = self.encoder.embed(&texts, &options)?;
        let (source, others) = vectors
            .split_first()
            .expect("embed returns one vector per text, and there is the source");
        let similarities = others
            .iter()
            .map(|v| finite(cosine(source, v)))
            .collect::<Result<Vec<_>>>()?;
        Ok(json!({ "similarities": similarities }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_shape() {
        let i = parse_inputs(&json!({"source_sentence": "a", "sentences": ["b", "c"]})).unwrap();
        assert_eq!(i.source, "a");
        assert_eq!(i.sentences, vec!["b", "c"]);
        let one = parse_inputs(&json!({"source_sentence": "a", "sentences": "b"})).unwrap();
        assert_eq!(one.sentences, vec!["b"]);
        for bad in [
            json!("a"),
            json!(["a", "b"]),
            json!({"source_sentence": "a"}),
            json!({"sentences": ["b"]}),
            json!({"source_sentence": 1, "sentences": ["b"]}),
            json!({"source_sentence": "a", "sentences": []}),
            json!({"source_sentence": "a", "sentences": ["b", 2]}),
            json!({"source_sentence": "a", "sentences": ["b"], "other": 1}),
        ] {
            let err = parse_inputs(&bad).unwrap_err().to_string();
            assert!(err.contains(EXPECTED), "{bad}: {err}");
        }
    }

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 3.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
