//! Example guest: only `output_fn`. The native pipeline decodes and predicts; this guest
//! renames the labels (`POSITIVE` → `good`, `NEGATIVE` → `bad`, others lower-cased), adds a
//! `confident` flag to each prediction and the served `task`, and answers in the `Accept`ed
//! type: JSON (`application/json`, `*/*`) or CSV (`text/csv`); anything else is a 406. It
//! echoes `X-Amzn-SageMaker-Custom-Attributes` and tags the response with a header.

use guest_sdk::serde_json::{Map, Value, json};
use guest_sdk::{Context, Error, Handler, Payload, Response};

/// Scores at or above this are `confident`.
const CONFIDENT: f64 = 0.9;

/// The handler: `output_fn` only.
pub struct Postprocess;

#[guest_sdk::handler]
impl Handler for Postprocess {
    fn output_fn(prediction: Payload, accept: &str, ctx: &Context) -> Result<Response, Error> {
        let answer: Value = prediction.to_json()?;
        let predictions = reshape(answer);
        let mut response = match guest_sdk::media_type(accept).as_str() {
            "" | "*/*" | "application/*" | "application/json" => Response::json(&json!({
                "task": guest_sdk::pipeline::task(),
                "predictions": predictions,
            }))?,
            "text/*" | "text/csv" => Response::new(to_csv(&predictions)?, "text/csv"),
            other => {
                return Err(Error::not_acceptable(format!(
                    "postprocess answers application/json or text/csv, not `{other}`"
                )));
            }
        };
        response = response.with_header("x-sagebrush-guest", "postprocess");
        if let Some(attributes) = &ctx.custom_attributes {
            response = response.with_custom_attributes(attributes.clone());
        }
        Ok(response)
    }
}

/// Renames labels and adds `confident` in every `{"label", "score"}` object, at any depth
/// (a list of inputs or `top_k` nests the lists).
fn reshape(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(reshape).collect()),
        Value::Object(object) if object.contains_key("label") => Value::Object(relabel(object)),
        other => other,
    }
}

fn relabel(mut object: Map<String, Value>) -> Map<String, Value> {
    if let Some(Value::String(label)) = object.get("label") {
        let renamed = match label.as_str() {
            "POSITIVE" => "good".to_owned(),
            "NEGATIVE" => "bad".to_owned(),
            other => other.to_ascii_lowercase(),
        };
        object.insert("label".to_owned(), Value::String(renamed));
    }
    let confident = object
        .get("score")
        .and_then(Value::as_f64)
        .is_some_and(|s| s >= CONFIDENT);
    object.insert("confident".to_owned(), Value::Bool(confident));
    object
}

/// `label,score,confident` rows of every prediction object, in order.
fn to_csv(predictions: &Value) -> Result<String, Error> {
    let mut rows = Vec::new();
    collect(predictions, &mut rows);
    if rows.is_empty() {
        return Err(Error::internal(
            "the pipeline's answer has no label to write as CSV",
        ));
    }
    let mut csv = String::from("label,score,confident\n");
    for row in rows {
        let label = row.get("label").and_then(Value::as_str).unwrap_or("");
        let score = row.get("score").and_then(Value::as_f64).unwrap_or(f64::NAN);
        let confident = row
            .get("confident")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        csv.push_str(&format!("{label},{score},{confident}\n"));
    }
    Ok(csv)
}

fn collect<'a>(value: &'a Value, rows: &mut Vec<&'a Map<String, Value>>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect(item, rows)),
        Value::Object(object) if object.contains_key("label") => rows.push(object),
        _ => {}
    }
}
