//! Test guest: `input_fn` parses the JSON body and hands it on, `output_fn` writes the prediction
//! back as JSON; the same work as the native defaults, so the difference is the cost of a hook.

use guest_sdk::serde_json::Value;
use guest_sdk::{Context, Error, Handler, Payload, Response};

/// The handler.
pub struct Passthrough;

#[guest_sdk::handler]
impl Handler for Passthrough {
    fn input_fn(body: Vec<u8>, _content_type: &str, _ctx: &Context) -> Result<Payload, Error> {
        let request: Value = guest_sdk::json::from_slice(&body)?;
        Payload::from_json(&request)
    }

    fn output_fn(prediction: Payload, _accept: &str, _ctx: &Context) -> Result<Response, Error> {
        let answer: Value = prediction.to_json()?;
        Response::json(&answer)
    }
}
