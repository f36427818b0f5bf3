//! Typed JSON helpers whose errors are already hook errors: what fails to parse came from the
//! request ([`Error::BadRequest`]); what fails to serialize is the guest's fault
//! ([`Error::Internal`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Parses JSON bytes (e.g. a request body) into `T`; a parse error is a 400 that says why.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(format!("invalid JSON: {e}")))
}

/// Parses JSON text into `T`; a parse error is a 400 that says why.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    from_slice(text.as_bytes())
}

/// Serializes `value` as compact JSON bytes.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("cannot serialize JSON: {e}")))
}

/// Serializes `value` as compact JSON text.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("cannot serialize JSON: {e}")))
}
