//! Reading `inputs`: the shapes the encoder tasks share (one text or a list of texts) and the
//! wording of the 400s for the wrong shape (contract §4).

use serde_json::Value;

use super::{PipelineError, Result, Task};

/// `inputs` as one text or a non-empty list of texts (token-classification, feature-extraction,
/// fill-mask, zero-shot-classification): the texts, and whether a list was given (the answer
/// is then a list too).
pub fn texts(task: &Task, inputs: &Value) -> Result<(Vec<String>, bool)> {
    let wrong = |what: &Value| {
        PipelineError::validation(format!(
            "{task} expects `inputs` as a string or a list of strings, got {}",
            json_kind(what)
        ))
    };
    match inputs {
        Value::String(s) => Ok((vec![s.clone()], false)),
        Value::Array(items) if items.is_empty() => Err(PipelineError::validation(format!(
            "{task} needs at least one input, got an empty list"
        ))),
        Value::Array(items) => {
            let texts = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| wrong(item)))
                .collect::<Result<_>>()?;
            Ok((texts, true))
        }
        other => Err(wrong(other)),
    }
}

/// A short name of a JSON value's kind, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
