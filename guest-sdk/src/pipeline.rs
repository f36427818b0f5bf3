//! The native pipeline the runtime loaded for this model (candle, the same one that answers
//! when a hook is not implemented). Calls block until the pipeline answers.

use serde::Serialize;

use crate::Error;
use crate::bindings::sagebrush::handler::pipeline as wit;

/// The task served, e.g. `text-classification`.
pub fn task() -> String {
    wit::task()
}

/// Runs `request` (`{"inputs": .., "parameters": {..}}`, or a bare input) through the native
/// pipeline and returns its JSON answer. A request the pipeline refuses is
/// [`Error::BadRequest`] with the pipeline's message.
pub fn predict<T: Serialize + ?Sized>(request: &T) -> Result<serde_json::Value, Error> {
    let text = crate::json::to_string(request)?;
    let answer = predict_json(&text)?;
    serde_json::from_str(&answer)
        .map_err(|e| Error::Internal(format!("the native pipeline answered invalid JSON: {e}")))
}

/// Like [`predict`], with the request and the answer as JSON text.
pub fn predict_json(request_json: &str) -> Result<String, Error> {
    wit::predict(request_json).map_err(crate::adapter::error_from_wit)
}
