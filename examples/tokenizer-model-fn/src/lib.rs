//! Example guest: `model_fn` + `predict_fn`, no native pipeline. `model_fn` reads `vocab.txt`
//! (one token per line, the id is the line number) and `config.json` (`id2label`) from the
//! model directory. `predict_fn` lower-cases the input, splits it into words and punctuation,
//! looks each piece up in the vocabulary, and answers, per input:
//! `{"label": id2label[sum(ids) % labels], "score": known / total, "tokens": [..], "ids": [..]}`.
//! Deterministic, so tests can recompute the answer from the same files.

use std::collections::HashMap;

use guest_sdk::serde_json::{Value, json};
use guest_sdk::{Context, Error, Handler, Payload};

/// The handler.
pub struct TokenizerModel;

/// What `model_fn` loads.
pub struct Vocab {
    ids: HashMap<String, u64>,
    unk: u64,
    labels: Vec<String>,
}

#[guest_sdk::handler]
impl Handler for TokenizerModel {
    type Model = Vocab;

    fn model_fn(model_dir: &str) -> Result<Vocab, Error> {
        let vocab = std::fs::read_to_string(format!("{model_dir}/vocab.txt"))
            .map_err(|e| Error::internal(format!("cannot read vocab.txt: {e}")))?;
        let ids: HashMap<String, u64> = vocab
            .lines()
            .zip(0u64..)
            .map(|(t, i)| (t.to_owned(), i))
            .collect();
        let unk = *ids
            .get("[UNK]")
            .ok_or_else(|| Error::internal("vocab.txt has no [UNK]"))?;
        let config: Value = guest_sdk::json::from_slice(
            &std::fs::read(format!("{model_dir}/config.json"))
                .map_err(|e| Error::internal(format!("cannot read config.json: {e}")))?,
        )
        .map_err(|e| Error::internal(format!("config.json: {e}")))?;
        let id2label = config["id2label"]
            .as_object()
            .ok_or_else(|| Error::internal("config.json has no id2label"))?;
        let mut labels = vec![String::new(); id2label.len()];
        for (id, label) in id2label {
            let slot = id.parse::<usize>().ok().and_then(|i| labels.get_mut(i));
            match (slot, label.as_str()) {
                (Some(slot), Some(label)) => *slot = label.to_owned(),
                _ => {
                    return Err(Error::internal(format!(
                        "config.json id2label has a bad entry `{id}`"
                    )));
                }
            }
        }
        guest_sdk::info!("loaded {} tokens and {} labels", ids.len(), labels.len());
        Ok(Vocab { ids, unk, labels })
    }

    fn model_name(model: &Vocab) -> String {
        format!(
            "vocab of {} tokens, labels {:?}",
            model.ids.len(),
            model.labels
        )
    }

    fn predict_fn(data: Payload, model: Option<&Vocab>, _ctx: &Context) -> Result<Payload, Error> {
        let vocab =
            model.ok_or_else(|| Error::internal("predict_fn needs the model from model_fn"))?;
        let request: Value = data.to_json()?;
        let inputs = request.get("inputs").unwrap_or(&request);
        let answer = match inputs {
            Value::String(text) => classify(vocab, text),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.as_str().map(|t| classify(vocab, t)))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        Error::bad_request("`inputs` must be a string or a list of strings")
                    })?,
            ),
            _ => {
                return Err(Error::bad_request(
                    "`inputs` must be a string or a list of strings",
                ));
            }
        };
        Payload::from_json(&answer)
    }
}

/// Words and single punctuation characters, lower-cased.
pub fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_alphanumeric() {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn classify(vocab: &Vocab, text: &str) -> Value {
    let pieces = pieces(text);
    let ids: Vec<u64> = pieces
        .iter()
        .map(|p| vocab.ids.get(p).copied().unwrap_or(vocab.unk))
        .collect();
    let known = ids.iter().filter(|&&id| id != vocab.unk).count();
    let score = if ids.is_empty() {
        0.0
    } else {
        known as f64 / ids.len() as f64
    };
    let sum: u64 = ids.iter().sum();
    let label = &vocab.labels[(sum % vocab.labels.len().max(1) as u64) as usize];
    json!({ "label": label, "score": score, "tokens": pieces, "ids": ids })
}
