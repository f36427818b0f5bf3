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

/// Why a field of an object-shaped `inputs` cannot be used: the caller turns it into its task's
/// 400, which also shows the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem(pub String);

/// The keys of an object-shaped `inputs` must be among `allowed`.
pub fn only_keys(
    map: &serde_json::Map<String, Value>,
    allowed: &[&str],
) -> Result<(), FieldProblem> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(FieldProblem(format!("got the unknown key `{key}`"))),
        None => Ok(()),
    }
}

/// The string field `key` of an object-shaped `inputs`.
pub fn string_field(
    map: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String, FieldProblem> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(FieldProblem(format!("`{key}` is {}", json_kind(other)))),
        None => Err(FieldProblem(format!("`{key}` is missing"))),
    }
}

/// The non-empty list of strings `key` of an object-shaped `inputs`; with `lone_string`, a
/// single string stands for a list of one (as the toolkit encodes it).
pub fn string_list_field(
    map: &serde_json::Map<String, Value>,
    key: &str,
    lone_string: bool,
) -> Result<Vec<String>, FieldProblem> {
    match map.get(key) {
        Some(Value::Array(items)) if items.is_empty() => {
            Err(FieldProblem(format!("`{key}` is an empty list")))
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| FieldProblem(format!("`{key}[{i}]` is {}", json_kind(item))))
            })
            .collect(),
        Some(Value::String(s)) if lone_string => Ok(vec![s.clone()]),
        Some(other) => Err(FieldProblem(format!("`{key}` is {}", json_kind(other)))),
        None => Err(FieldProblem(format!("`{key}` is missing"))),
    }
}
