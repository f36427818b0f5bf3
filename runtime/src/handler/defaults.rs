//! The native default hooks, as the toolkit's default handler service defines them:
//! `input_fn` decodes the body, `predict_fn` runs the pipeline, `output_fn` encodes.

use serde_json::Value;

use crate::codec::{self, Decoding, Encoding};
use crate::pipelines::{Pipeline, PipelineError, Task};

use super::{Hook, HookError, HookResponse, Payload};

/// Decodes the body into records (one per JSON line).
pub(super) fn input_fn(
    task: Option<&Task>,
    decoding: Decoding,
    body: &[u8],
) -> Result<(Vec<Payload>, bool), HookError> {
    if decoding == Decoding::Csv && task == Some(&Task::ZeroShotClassification) {
        // The toolkit refuses CSV for zero-shot: its rows cannot carry `candidate_labels`.
        return Err(PipelineError::validation(
            "text/csv is not supported for zero-shot-classification (rows cannot carry `candidate_labels`); send application/json",
        )
        .into());
    }
    if decoding == Decoding::Csv && task == Some(&Task::TableQuestionAnswering) {
        // A CSV body is rows of text; a table question needs a table and a query.
        return Err(PipelineError::validation(
            "text/csv is not supported for table-question-answering (a CSV body cannot carry a `query` and a `table`); send application/json: {\"inputs\": {\"query\": \"...\", \"table\": {column: [cells]}}}",
        )
        .into());
    }
    let records = codec::decode(decoding, body)?;
    Ok((
        records.values.into_iter().map(Payload::Json).collect(),
        records.multi,
    ))
}

/// Runs the native pipeline on a JSON payload.
pub(super) fn predict_fn(
    native: &dyn Pipeline,
    data: Payload,
    from: Hook,
) -> Result<Payload, HookError> {
    let request = match data {
        Payload::Json(v) => v,
        Payload::Bytes(bytes) => {
            serde_json::from_slice(&bytes).map_err(|_| HookError::NotJson { hook: from })?
        }
    };
    Ok(Payload::Json(native.predict(request)?))
}

/// Encodes the predictions. Bytes from a user `predict_fn` pass through unchanged when they
/// are not JSON.
pub(super) fn output_fn(
    predictions: Vec<Payload>,
    encoding: Encoding,
    multi: bool,
) -> Result<HookResponse, HookError> {
    if let [Payload::Bytes(bytes)] = predictions.as_slice()
        && serde_json::from_slice::<Value>(bytes).is_err()
    {
        return Ok(HookResponse {
            body: bytes.clone(),
            content_type: "application/octet-stream".to_owned(),
            custom_attributes: None,
            headers: Vec::new(),
        });
    }
    let values = predictions
        .into_iter()
        .map(payload_to_json)
        .collect::<Result<Vec<_>, _>>()?;
    let body = codec::encode(encoding, &values, multi)?;
    Ok(HookResponse {
        body,
        content_type: encoding.content_type().to_owned(),
        custom_attributes: None,
        headers: Vec::new(),
    })
}

/// A payload as JSON; bytes must hold JSON.
pub(super) fn payload_to_json(payload: Payload) -> Result<Value, HookError> {
    match payload {
        Payload::Json(v) => Ok(v),
        Payload::Bytes(bytes) => serde_json::from_slice(&bytes).map_err(|_| HookError::NotJson {
            hook: Hook::PredictFn,
        }),
    }
}
