//! Example guest: `transform_fn` owns the whole request. It reads JSON
//! (`{"inputs": .., "parameters": {..}}`) or plain text, asks the native pipeline, and answers JSON
//! (`{"request_id", "inputs", "prediction"}`) or, for `Accept: text/plain`, one
//! `label<TAB>score` line per prediction. It echoes the custom attributes.

use guest_sdk::serde_json::{Value, json};
use guest_sdk::{Context, Error, Handler, Response};

/// The handler: `transform_fn` only.
pub struct Transform;

#[guest_sdk::handler]
impl Handler for Transform {
    fn transform_fn(
        _model: Option<&()>,
        body: Vec<u8>,
        content_type: &str,
        accept: &str,
        ctx: &Context,
    ) -> Result<Response, Error> {
        let (inputs, parameters) = match guest_sdk::media_type(content_type).as_str() {
            "application/json" => {
                let request: Value = guest_sdk::json::from_slice(&body)?;
                match request.get("inputs") {
                    Some(inputs) => (inputs.clone(), request.get("parameters").cloned()),
                    None => (request, None),
                }
            }
            "text/plain" => (
                Value::String(
                    String::from_utf8(body)
                        .map_err(|_| Error::bad_request("the body is not UTF-8 text"))?,
                ),
                None,
            ),
            other => {
                return Err(Error::unsupported_media_type(format!(
                    "transform reads application/json or text/plain, not `{other}`"
                )));
            }
        };
        let mut request = json!({ "inputs": inputs });
        if let Some(parameters) = parameters {
            request["parameters"] = parameters;
        }
        let prediction = guest_sdk::pipeline::predict(&request)?;
        let response = match guest_sdk::media_type(accept).as_str() {
            "" | "*/*" | "application/json" => Response::json(&json!({
                "request_id": ctx.request_id,
                "inputs": inputs,
                "prediction": prediction,
            }))?,
            "text/plain" => Response::new(lines(&prediction), "text/plain"),
            other => {
                return Err(Error::not_acceptable(format!(
                    "transform answers application/json or text/plain, not `{other}`"
                )));
            }
        };
        Ok(match &ctx.custom_attributes {
            Some(attributes) => {
                response.with_custom_attributes(format!("{attributes};transformed=1"))
            }
            None => response,
        })
    }
}

/// `label<TAB>score` for every `{"label", "score"}` object in the prediction.
fn lines(prediction: &Value) -> String {
    match prediction {
        Value::Array(items) => items.iter().map(lines).collect(),
        Value::Object(object) => format!(
            "{}\t{}\n",
            object.get("label").and_then(Value::as_str).unwrap_or(""),
            object
                .get("score")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        ),
        _ => String::new(),
    }
}
