//! JSON and JSON Lines bodies.

use serde_json::Value;

use super::CodecError;

pub(super) fn decode(body: &[u8]) -> Result<Value, CodecError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CodecError::Empty);
    }
    serde_json::from_slice(body).map_err(|source| CodecError::Json { source })
}

pub(super) fn decode_lines(body: &[u8]) -> Result<Vec<Value>, CodecError> {
    let mut records = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = serde_json::from_slice(line).map_err(|source| CodecError::JsonLine {
            line: i + 1,
            source,
        })?;
        records.push(value);
    }
    if records.is_empty() {
        return Err(CodecError::Empty);
    }
    Ok(records)
}

pub(super) fn encode(value: &Value) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(value).map_err(|_| CodecError::NonFinite)
}

pub(super) fn encode_lines(values: &[&Value]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    for value in values {
        out.extend(encode(value)?);
        out.push(b'\n');
    }
    Ok(out)
}

/// `serde_json::Value` cannot hold NaN, but a float that was turned into `null` on the way
/// would be silent data loss; numbers are checked where they are made. This walks the value
/// to reject floats that are not finite (possible with the `arbitrary_precision` feature off
/// only through `Number::from_f64`, which already refuses them) — a cheap second guard.
pub(super) fn check_finite(value: &Value) -> Result<(), CodecError> {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(|f| !f.is_finite()) => {
            Err(CodecError::NonFinite)
        }
        Value::Array(items) => items.iter().try_for_each(check_finite),
        Value::Object(map) => map.values().try_for_each(check_finite),
        _ => Ok(()),
    }
}
