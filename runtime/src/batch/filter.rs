//! SageMaker's DataProcessing (contract §8): the JSONPath subset of `InputFilter` and
//! `OutputFilter`, and `JoinSource=Input`.
//!
//! The subset is the one SageMaker documents for Batch Transform: `$` (the record), `.name` or
//! `['name']` (a key), `['a','b']` (an object of those keys), `[n]` (an element, negative counts
//! from the end), `[n,m]`, `[a:b]`, `[a:]`, `[:b]` and unions such as `[0,5:]` (a list of
//! elements), and `*` or `[*]` (every element or value). A CSV row is a list of cells, so
//! `$[1:]` drops its first column. Selecting what is not there is an error naming the path.

use serde_json::{Map, Value};

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// One key: the value under it.
    Key(String),
    /// Several keys: an object with those keys.
    Keys(Vec<String>),
    /// One index: the element.
    Index(i64),
    /// Indices and slices: a list of the elements.
    Union(Vec<Selector>),
    /// Every element (of a list) or value (of an object), as a list.
    Wildcard,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Selector {
    Index(i64),
    Slice(Option<i64>, Option<i64>),
}

/// A filter that cannot be parsed or does not fit a record.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The expression is not in the supported subset.
    #[error(
        "`{flag}` {path:?} is not a supported JSONPath ({reason}); examples: $, $.features, $[1:], $[0,2], $['id','SageMakerOutput']"
    )]
    Syntax {
        /// `--input-filter` or `--output-filter`.
        flag: &'static str,
        /// The expression.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The expression selects something the record does not have.
    #[error("JSONPath {path:?} does not match the record: {reason}")]
    NoMatch {
        /// The expression.
        path: String,
        /// What is missing.
        reason: String,
    },
}

impl JsonPath {
    /// Parses `text`; `flag` names the option in errors.
    pub fn parse(flag: &'static str, text: &str) -> Result<Self, FilterError> {
        let err = |reason: &str| FilterError::Syntax {
            flag,
            path: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        let mut rest = trimmed
            .strip_prefix('$')
            .ok_or_else(|| err("it must start with `$`"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return Err(err("a `.` must be followed by a key name"));
                }
                steps.push(if name == "*" {
                    Step::Wildcard
                } else {
                    Step::Key(name.to_owned())
                });
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = closing_bracket(after).ok_or_else(|| err("a `[` is not closed"))?;
                steps.push(parse_bracket(after[..end].trim()).map_err(|r| err(&r))?);
                rest = &after[end + 1..];
            } else {
                return Err(err("expected `.` or `[`"));
            }
        }
        Ok(Self {
            text: trimmed.to_owned(),
            steps,
        })
    }

    /// Whether the expression is `$` (selects the whole record).
    pub fn is_root(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the expression to a record.
    pub fn apply(&self, value: &Value) -> Result<Value, FilterError> {
        let mut current = value.clone();
        for step in &self.steps {
            current = self.step(step, current)?;
        }
        Ok(current)
    }

    fn no_match(&self, reason: String) -> FilterError {
        FilterError::NoMatch {
            path: self.text.clone(),
            reason,
        }
    }

    fn step(&self, step: &Step, value: Value) -> Result<Value, FilterError> {
        match (step, value) {
            (Step::Key(key), Value::Object(mut map)) => map
                .remove(key)
                .ok_or_else(|| self.no_match(format!("no key `{key}`"))),
            (Step::Keys(keys), Value::Object(mut map)) => {
                let mut out = Map::new();
                for key in keys {
                    let v = map
                        .remove(key)
                        .ok_or_else(|| self.no_match(format!("no key `{key}`")))?;
                    out.insert(key.clone(), v);
                }
                Ok(Value::Object(out))
            }
            (Step::Index(i), Value::Array(items)) => {
                let len = items.len();
                let at = resolve(*i, len).ok_or_else(|| {
                    self.no_match(format!("index {i} is outside a list of {len}"))
                })?;
                Ok(items.into_iter().nth(at).unwrap_or(Value::Null))
            }
            (Step::Union(selectors), Value::Array(items)) => {
                let len = items.len();
                let mut out = Vec::new();
                for sel in selectors {
                    match *sel {
                        Selector::Index(i) => {
                            let at = resolve(i, len).ok_or_else(|| {
                                self.no_match(format!("index {i} is outside a list of {len}"))
                            })?;
                            out.push(items[at].clone());
                        }
                        Selector::Slice(a, b) => {
                            let clamp = |x: i64| {
                                let x = if x < 0 { x + len as i64 } else { x };
                                x.clamp(0, len as i64) as usize
                            };
                            let start = a.map_or(0, clamp);
                            let end = b.map_or(len, clamp);
                            if start < end {
                                out.extend_from_slice(&items[start..end]);
                            }
                        }
                    }
                }
                Ok(Value::Array(out))
            }
            (Step::Wildcard, Value::Array(items)) => Ok(Value::Array(items)),
            (Step::Wildcard, Value::Object(map)) => Ok(Value::Array(map.into_values().collect())),
            (step, other) => Err(self.no_match(format!(
                "{} cannot be applied to {}",
                step.describe(),
                crate::pipelines::json_kind(&other)
            ))),
        }
    }
}

impl Step {
    fn describe(&self) -> &'static str {
        match self {
            Self::Key(_) | Self::Keys(_) => "a key selector",
            Self::Index(_) | Self::Union(_) => "an index selector",
            Self::Wildcard => "`*`",
        }
    }
}

fn resolve(i: i64, len: usize) -> Option<usize> {
    let at = if i < 0 { i + len as i64 } else { i };
    usize::try_from(at).ok().filter(|&a| a < len)
}

/// The position of the `]` closing a bracket, skipping quoted names.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if inner.starts_with('\'') || inner.starts_with('"') {
        let mut keys = Vec::new();
        for part in split_outside_quotes(inner) {
            let part = part.trim();
            let q = part.chars().next().unwrap_or('\'');
            let name = part
                .strip_prefix(q)
                .and_then(|p| p.strip_suffix(q))
                .filter(|_| q == '\'' || q == '"')
                .ok_or_else(|| format!("{part:?} is not a quoted key"))?;
            keys.push(name.to_owned());
        }
        return Ok(match <[String; 1]>::try_from(keys) {
            Ok([one]) => Step::Key(one),
            Err(keys) => Step::Keys(keys),
        });
    }
    let mut selectors = Vec::new();
    for part in inner.split(',') {
        let part = part.trim();
        let number = |s: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse::<i64>()
                    .map(Some)
                    .map_err(|_| format!("{s:?} is not an index"))
            }
        };
        match part.split_once(':') {
            Some((a, b)) => selectors.push(Selector::Slice(number(a)?, number(b)?)),
            None => selectors.push(Selector::Index(
                number(part)?.ok_or_else(|| "an empty index".to_owned())?,
            )),
        }
    }
    Ok(match selectors.as_slice() {
        [Selector::Index(i)] => Step::Index(*i),
        _ => Step::Union(selectors),
    })
}

fn split_outside_quotes(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quote, mut start) = (None, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ',') => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `JoinSource=Input` for JSON records: the output under `SageMakerOutput` in the input object,
/// or `{"SageMakerInput": input, "SageMakerOutput": output}` when the input is not an object.
pub fn join_json(input: Value, output: Value) -> Value {
    match input {
        Value::Object(mut map) => {
            map.insert("SageMakerOutput".to_owned(), output);
            Value::Object(map)
        }
        other => serde_json::json!({ "SageMakerInput": other, "SageMakerOutput": output }),
    }
}

/// `JoinSource=Input` for CSV rows: the output cells appended to the input cells.
pub fn join_csv(input: Value, output: Value) -> Value {
    let mut cells = match input {
        Value::Array(cells) => cells,
        other => vec![other],
    };
    match output {
        Value::Array(more) => cells.extend(more),
        other => cells.push(other),
    }
    Value::Array(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[allow(clippy::needless_pass_by_value)]
    fn apply(path: &str, value: Value) -> Value {
        JsonPath::parse("--input-filter", path)
            .unwrap()
            .apply(&value)
            .unwrap()
    }

    #[test]
    fn sagemaker_examples() {
        let row = json!(["id7", "a", "b", "c", "d", "e", "f"]);
        assert_eq!(apply("$", row.clone()), row);
        assert_eq!(
            apply("$[1:]", row.clone()),
            json!(["a", "b", "c", "d", "e", "f"])
        );
        assert_eq!(apply("$[0,5:]", row.clone()), json!(["id7", "e", "f"]));
        assert_eq!(apply("$[1:3]", row.clone()), json!(["a", "b"]));
        assert_eq!(apply("$[0,2]", row.clone()), json!(["id7", "b"]));
        assert_eq!(apply("$[1]", row.clone()), json!("a"));
        assert_eq!(apply("$[-1]", row.clone()), json!("f"));
        assert_eq!(apply("$[:2]", row), json!(["id7", "a"]));
        let obj = json!({"id": 3, "features": {"inputs": "x"}, "SageMakerOutput": [1]});
        assert_eq!(apply("$.features", obj.clone()), json!({"inputs": "x"}));
        assert_eq!(apply("$.features.inputs", obj.clone()), json!("x"));
        assert_eq!(apply("$['features']", obj.clone()), json!({"inputs": "x"}));
        assert_eq!(
            apply("$['id','SageMakerOutput']", obj.clone()),
            json!({"id": 3, "SageMakerOutput": [1]})
        );
        assert_eq!(apply("$.*", json!({"a": 1, "b": 2})), json!([1, 2]));
        assert_eq!(apply("$[*]", json!([1, 2])), json!([1, 2]));
    }

    #[test]
    fn bad_paths_and_misses_are_errors() {
        for bad in ["features", "$.", "$[1", "$[x]", "$..a"] {
            assert!(
                matches!(
                    JsonPath::parse("--input-filter", bad),
                    Err(FilterError::Syntax { .. })
                ),
                "{bad}"
            );
        }
        let path = JsonPath::parse("--output-filter", "$.missing").unwrap();
        assert!(matches!(
            path.apply(&json!({"a": 1})),
            Err(FilterError::NoMatch { .. })
        ));
        let path = JsonPath::parse("--output-filter", "$[9]").unwrap();
        assert!(matches!(
            path.apply(&json!([1])),
            Err(FilterError::NoMatch { .. })
        ));
    }

    #[test]
    fn joins_follow_sagemaker() {
        assert_eq!(
            join_json(json!({"id": 1}), json!([{"label": "A"}])),
            json!({"id": 1, "SageMakerOutput": [{"label": "A"}]})
        );
        assert_eq!(
            join_json(json!("text"), json!(1)),
            json!({"SageMakerInput": "text", "SageMakerOutput": 1})
        );
        assert_eq!(
            join_csv(json!(["1", "hi"]), json!(["POSITIVE", "0.9"])),
            json!(["1", "hi", "POSITIVE", "0.9"])
        );
    }
}
