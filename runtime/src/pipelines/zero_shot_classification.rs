//! zero-shot-classification (contract §4): NLI-based classification into labels chosen per request.
//! A port of transformers 4.51.3 `pipelines/zero_shot_classification.py`
//! (<https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/zero_shot_classification.py>):
//! each (sequence, hypothesis) pair — the hypothesis is `hypothesis_template` with the label —
//! goes through a sequence-classification model; the entailment logits are softmaxed over the
//! labels, or with `multi_label` (or a single label) entailment against contradiction per label.
//!
//! Not here: tokenization (`encode`, pairs truncated `only_first`) and running the model.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::utils::truncation::TruncationStrategy;

use super::answer::{one_or_list, vector};
use super::encode::{Truncation, check_length, encode_pair};
use super::inputs::texts;
use super::params::params;
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task, forward_encodings};

/// Parameter names this task accepts (contract §4).
pub const ACCEPTED: &[&str] = &["candidate_labels", "hypothesis_template", "multi_label"];

/// The default hypothesis (transformers').
pub const DEFAULT_TEMPLATE: &str = "This example is {}.";

/// `candidate_labels`: a list, or one string of comma-separated labels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CandidateLabels {
    /// Labels as given.
    List(Vec<String>),
    /// `"a, b,c"`: split on commas, trimmed, empty parts dropped.
    Comma(String),
}

/// The parameters of zero-shot-classification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Required: the labels to choose from.
    #[serde(default)]
    pub candidate_labels: Option<CandidateLabels>,
    /// The hypothesis, with `{}` where the label goes.
    #[serde(default = "default_template")]
    pub hypothesis_template: String,
    /// Score each label on its own (entailment vs contradiction) instead of across labels.
    #[serde(default)]
    pub multi_label: bool,
}

fn default_template() -> String {
    DEFAULT_TEMPLATE.to_owned()
}

impl Params {
    /// The labels, checked: at least one, and a template that takes them.
    pub fn labels(&self) -> Result<Vec<String>> {
        let labels = match &self.candidate_labels {
            None => {
                return Err(PipelineError::validation(
                    "`candidate_labels` is required: a list of labels or a comma-separated string",
                ));
            }
            Some(CandidateLabels::List(list)) => list.clone(),
            Some(CandidateLabels::Comma(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        let Some(first) = labels.first() else {
            return Err(PipelineError::validation(
                "`candidate_labels` must hold at least one label",
            ));
        };
        if hypothesis(&self.hypothesis_template, first)? == self.hypothesis_template {
            return Err(PipelineError::validation(format!(
                "the `hypothesis_template` \"{}\" was not able to be formatted with the target labels; \
                 put {{}} where the label should go",
                self.hypothesis_template
            )));
        }
        Ok(labels)
    }
}

/// `template.format(label)` for the forms a template uses: `{}` and `{0}` take the label,
/// `{{` and `}}` are braces; any other field is an error.
pub fn hypothesis(template: &str, label: &str) -> Result<String> {
    let bad = |field: &str| {
        PipelineError::validation(format!(
            "`hypothesis_template` can only use {{}} (or {{0}}) for the label, found \"{field}\""
        ))
    };
    let mut out = String::with_capacity(template.len() + label.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('}') {
            return Err(bad("}"));
        } else {
            let close = tail.find('}').ok_or_else(|| bad(tail))?;
            let field = &tail[..=close];
            if field != "{}" && field != "{0}" {
                return Err(bad(field));
            }
            out.push_str(label);
            rest = &tail[close + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The id of the entailment class: the first label (in `label2id` order) starting with
/// "entail", case-insensitively; an error when the model has none.
pub fn entailment_id<'a>(label2id: impl IntoIterator<Item = (&'a str, usize)>) -> Result<usize> {
    label2id
        .into_iter()
        .find(|(label, _)| label.to_lowercase().starts_with("entail"))
        .map(|(_, id)| id)
        .ok_or_else(|| {
            PipelineError::validation(
                "zero-shot-classification needs an NLI model whose `label2id` has an entailment label \
                 (a label starting with \"entail\"); this model has none",
            )
        })
}

/// Label probabilities of one sequence from its `n_labels` rows of class logits.
pub fn scores(logits: &[Vec<f32>], entailment: usize, multi_label: bool) -> Vec<f32> {
    if multi_label || logits.len() == 1 {
        // Python's `-1 if entailment_id == 0 else 0`: the last class when entailment is first.
        logits
            .iter()
            .map(|row| {
                let contradiction = if entailment == 0 { row.len() - 1 } else { 0 };
                let (c, e) = (row[contradiction], row[entailment]);
                let max = c.max(e);
                let (c, e) = ((c - max).exp(), (e - max).exp());
                e / (c + e)
            })
            .collect()
    } else {
        let entail: Vec<f32> = logits.iter().map(|row| row[entailment]).collect();
        let max = entail.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = entail.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect()
    }
}

/// The answer for one sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classified {
    /// The input text.
    pub sequence: String,
    /// Labels, most likely first.
    pub labels: Vec<String>,
    /// Their scores.
    pub scores: Vec<f32>,
}

/// Sorts labels by score, best first, as `reversed(scores.argsort())` (equal scores: the later
/// label first).
pub fn rank(sequence: &str, labels: &[String], scores: &[f32]) -> Classified {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    order.reverse();
    Classified {
        sequence: sequence.to_owned(),
        labels: order.iter().map(|i| labels[*i].clone()).collect(),
        scores: order.iter().map(|i| scores[*i]).collect(),
    }
}

/// The zero-shot-classification pipeline.
pub struct ZeroShotClassification {
    res: Resources,
}

impl ZeroShotClassification {
    /// A pipeline over an NLI sequence-classification model.
    pub fn new(res: Resources) -> Self {
        Self { res }
    }

    /// The entailment class, looked up in `label2id` in the order of `config.json`.
    fn entailment(&self) -> Result<usize> {
        let config = &self.res.config;
        match config.raw.get("label2id").and_then(Value::as_object) {
            Some(map) => entailment_id(map.iter().filter_map(|(label, id)| {
                Some((label.as_str(), usize::try_from(id.as_u64()?).ok()?))
            })),
            None => entailment_id(
                config
                    .label2id
                    .iter()
                    .map(|(label, id)| (label.as_str(), *id)),
            ),
        }
    }

    /// transformers' `_parse_and_tokenize`: `only_first` truncation so the hypothesis stays
    /// whole; when the premise cannot be cut enough, no truncation (then too long is a 400).
    fn encode(
        &self,
        premise: &str,
        hypothesis: &str,
        input: usize,
    ) -> Result<tokenizers::Encoding> {
        let tokenizer = self.res.tokenizer.inner();
        let max_length = self.res.tokenizer.max_len();
        let t = Truncation {
            max_length,
            stride: 0,
            strategy: TruncationStrategy::OnlyFirst,
        };
        let encodings = match encode_pair(tokenizer, premise, hypothesis, Some(t)) {
            Err(PipelineError::Validation { .. }) => {
                encode_pair(tokenizer, premise, hypothesis, None)?
            }
            other => other?,
        };
        let first = encodings
            .into_iter()
            .next()
            .expect("encode_pair returns at least the main encoding");
        check_length(&first, input, max_length)?;
        Ok(first)
    }
}

impl Pipeline for ZeroShotClassification {
    fn task(&self) -> Task {
        Task::ZeroShotClassification
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let task = Task::ZeroShotClassification;
        let params: Params = params(&task, ACCEPTED, request.parameters)?;
        let labels = params.labels()?;
        let entailment = self.entailment()?;
        let (sequences, listed) = texts(&task, &request.inputs)?;
        if sequences.iter().any(String::is_empty) {
            return Err(PipelineError::validation(
                "zero-shot-classification needs a non-empty sequence to classify",
            ));
        }
        let hypotheses = labels
            .iter()
            .map(|l| hypothesis(&params.hypothesis_template, l))
            .collect::<Result<Vec<_>>>()?;
        // Every (sequence, hypothesis) pair of the request in padded batches.
        let mut encodings = Vec::with_capacity(sequences.len() * labels.len());
        for (i, sequence) in sequences.iter().enumerate() {
            for h in &hypotheses {
                encodings.push(self.encode(sequence, h, i)?);
            }
        }
        let outputs = forward_encodings(&self.res, &encodings)?;
        let rows = outputs.iter().map(vector).collect::<Result<Vec<_>>>()?;
        if rows.iter().any(|r| entailment >= r.len()) {
            return Err(PipelineError::validation(format!(
                "the entailment label id {entailment} is not one of the model's {} classes",
                rows.first().map_or(0, Vec::len)
            )));
        }
        let answers = sequences
            .iter()
            .zip(rows.chunks(labels.len()))
            .map(|(sequence, logits)| {
                let classified = rank(
                    sequence,
                    &labels,
                    &scores(logits, entailment, params.multi_label),
                );
                serde_json::to_value(classified).map_err(|_| PipelineError::NonFinite)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(one_or_list(answers, listed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn labels_from_list_or_comma_string() {
        let p = params(json!({"candidate_labels": "travel, cooking,dancing,, "}));
        assert_eq!(p.labels().unwrap(), ["travel", "cooking", "dancing"]);
        let p = params(json!({"candidate_labels": ["a b", " c"]}));
        assert_eq!(p.labels().unwrap(), ["a b", " c"]);
        for bad in [
            json!({}),
            json!({"candidate_labels": []}),
            json!({"candidate_labels": " , "}),
        ] {
            assert!(matches!(
                params(bad).labels(),
                Err(PipelineError::Validation { .. })
            ));
        }
        let p = params(json!({"candidate_labels": ["x"], "hypothesis_template": "no placeholder"}));
        assert!(p.labels().is_err());
        assert!(
            serde_json::from_value::<Params>(
                json!({"candidate_labels": ["x"], "multi_class": true})
            )
            .is_err()
        );
    }

    #[test]
    fn templates_format_like_python() {
        assert_eq!(
            hypothesis(DEFAULT_TEMPLATE, "sports").unwrap(),
            "This example is sports."
        );
        assert_eq!(hypothesis("{0} and {0}", "x").unwrap(), "x and x");
        assert_eq!(hypothesis("{{literal}} {}", "x").unwrap(), "{literal} x");
        assert!(hypothesis("{label}", "x").is_err());
        assert!(hypothesis("oops }", "x").is_err());
        assert!(hypothesis("open {", "x").is_err());
    }

    #[test]
    fn entailment_label_is_found_or_refused() {
        assert_eq!(
            entailment_id([("contradiction", 2), ("Entailment", 0), ("neutral", 1)]).unwrap(),
            0
        );
        assert!(entailment_id([("LABEL_0", 0), ("LABEL_1", 1)]).is_err());
    }

    #[test]
    fn softmax_across_labels_or_per_label() {
        // Classes: entailment 0, neutral 1, contradiction 2.
        let logits = vec![
            vec![2.0, 0.0, 1.0],
            vec![1.0, 0.0, 0.0],
            vec![0.0, 0.0, 3.0],
        ];
        let s = scores(&logits, 0, false);
        let z = 2f32.exp() + 1f32.exp() + 1.0;
        assert!((s[0] - 2f32.exp() / z).abs() < 1e-6);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // multi_label: entailment vs contradiction (the last class, since entailment is 0).
        let s = scores(&logits, 0, true);
        assert!((s[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
        assert!((s[2] - 1.0 / (1.0 + 3f32.exp())).abs() < 1e-6);
        // A single label is always scored on its own.
        assert_eq!(
            scores(&logits[..1], 0, false),
            scores(&logits[..1], 0, true)
        );
        // Entailment not first: contradiction is class 0.
        let s = scores(&[vec![1.0, 0.0, 2.0]], 2, true);
        assert!((s[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn rank_sorts_best_first() {
        let labels = ["a", "b", "c"].map(String::from);
        let r = rank("s", &labels, &[0.2, 0.5, 0.3]);
        assert_eq!(r.labels, ["b", "c", "a"]);
        assert_eq!(r.scores, [0.5, 0.3, 0.2]);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"sequence": "s", "labels": ["b", "c", "a"], "scores": [0.5f32, 0.3f32, 0.2f32]})
        );
    }
}
