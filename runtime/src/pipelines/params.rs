//! Reading `parameters` into a task's `Params` as transformers reads keyword arguments:
//! unknown names are a 400 naming them, `null` means "not given", a bad value is a 400 naming
//! its parameter; and `truncation`, which every encoder task takes (contract §4).

use serde::Deserialize;
use serde_json::Value;

use super::{PipelineError, Result, Task};

/// `parameters` into a task's `Params`, as transformers reads keyword arguments: unknown names
/// are a 400 naming them, a `null` value means "not given" (the default), and a bad value is a
/// 400 naming its parameter.
pub fn params<P: serde::de::DeserializeOwned>(
    task: &Task,
    accepted: &[&str],
    mut parameters: serde_json::Map<String, Value>,
) -> Result<P> {
    check_names(task, accepted, &parameters)?;
    parameters.retain(|_, v| !v.is_null());
    // Each value alone first, so that the message names the parameter that is wrong.
    for (name, value) in &parameters {
        let one = serde_json::Map::from_iter([(name.clone(), value.clone())]);
        if let Err(e) = serde_json::from_value::<P>(Value::Object(one)) {
            let e = e.to_string();
            let message = if e.contains(&format!("`{name}`")) {
                e
            } else {
                format!("`{name}`: {e}")
            };
            return Err(PipelineError::validation(message));
        }
    }
    serde_json::from_value(Value::Object(parameters))
        .map_err(|e| PipelineError::validation(format!("bad parameters for {task}: {e}")))
}

/// Refuses parameter names a task does not accept (400 naming them).
pub fn check_names(
    task: &Task,
    accepted: &[&str],
    params: &serde_json::Map<String, Value>,
) -> Result<()> {
    let unknown: Vec<String> = params
        .keys()
        .filter(|k| !accepted.contains(&k.as_str()))
        .cloned()
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(PipelineError::UnknownParameters {
        names: unknown,
        task: task.clone(),
        accepted: accepted.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// `truncation` as transformers accepts it: a boolean or a strategy name
/// (`longest_first`, `only_first`, `only_second`: on; `do_not_truncate`: off).
pub fn deserialize_truncation<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Name(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Name(n) => match n.as_str() {
            "longest_first" | "only_first" | "only_second" => Ok(true),
            "do_not_truncate" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "`truncation` must be true, false, \"longest_first\", \"only_first\", \"only_second\" \
                 or \"do_not_truncate\", got \"{other}\""
            ))),
        },
    }
}

/// Default of `truncation`: on (contract §4, long inputs are truncated to the model maximum).
pub fn truncation_default() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_name_the_bad_one_and_treat_null_as_absent() {
        use crate::pipelines::question_answering::{ACCEPTED, Params};
        let task = Task::QuestionAnswering;
        let map = |v: Value| v.as_object().unwrap().clone();
        let p: Params = params(
            &task,
            ACCEPTED,
            map(serde_json::json!({"top_k": null, "doc_stride": 8})),
        )
        .unwrap();
        assert_eq!((p.top_k, p.doc_stride), (1, Some(8)));
        let err = params::<Params>(
            &task,
            ACCEPTED,
            map(serde_json::json!({"top_k": 2, "max_answer_len": "x"})),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`max_answer_len`: invalid type"),
            "{err}"
        );
        let err = params::<Params>(&task, ACCEPTED, map(serde_json::json!({"top_kk": null})))
            .unwrap_err();
        assert!(
            matches!(err, PipelineError::UnknownParameters { .. }),
            "{err}"
        );
    }
}
