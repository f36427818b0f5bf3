//! The values hooks receive and return: [`Payload`], [`Context`], [`Response`], [`Error`] and
//! [`HookSet`].

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What one stage hands to the next.
///
/// Use [`Payload::Json`] when a native stage is on the other side (the runtime's default
/// `predict_fn` expects `{"inputs": .., "parameters": {..}}` and answers JSON). Bytes are only
/// useful between two hooks of the same guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A JSON document as text.
    Json(String),
    /// Opaque bytes.
    Bytes(Vec<u8>),
}

impl Payload {
    /// Serializes `value` as a JSON payload.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_string(value)
            .map(Self::Json)
            .map_err(|e| Error::Internal(format!("cannot serialize the payload as JSON: {e}")))
    }

    /// Deserializes the payload (JSON text, or bytes holding JSON) into `T`.
    ///
    /// A payload that does not parse is a [`Error::BadRequest`]: payloads are built from the
    /// request, so a wrong shape is the client's to fix.
    pub fn to_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        crate::json::from_slice(self.as_bytes())
    }

    /// The payload's bytes (the JSON text for [`Payload::Json`]).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Json(text) => text.as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }
}

/// The request as a hook sees it (the toolkit's `context`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The `x-request-id` of this request.
    pub request_id: String,
    /// Request headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// `X-Amzn-SageMaker-Custom-Attributes`, when the client sent it.
    pub custom_attributes: Option<String>,
}

impl Context {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The encoded answer of `output_fn` or `transform_fn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response body.
    pub body: Vec<u8>,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// `X-Amzn-SageMaker-Custom-Attributes` to send back.
    pub custom_attributes: Option<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// A response with `body` of media type `content_type`.
    pub fn new(body: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            content_type: content_type.into(),
            custom_attributes: None,
            headers: Vec::new(),
        }
    }

    /// An `application/json` response holding `value`.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Ok(Self::new(crate::json::to_vec(value)?, "application/json"))
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the `X-Amzn-SageMaker-Custom-Attributes` sent back.
    #[must_use]
    pub fn with_custom_attributes(mut self, value: impl Into<String>) -> Self {
        self.custom_attributes = Some(value.into());
        self
    }
}

/// Why a hook failed; the runtime turns each case into an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The hook is not implemented; the runtime's default runs instead. The trait's default
    /// methods return this; you rarely need it yourself.
    NotImplemented,
    /// The request is wrong: 400 with this message.
    BadRequest(String),
    /// The request's `Content-Type` cannot be read: 415.
    UnsupportedMediaType(String),
    /// The `Accept`ed media type cannot be produced: 406.
    NotAcceptable(String),
    /// Anything else: 500 (the message goes to the log).
    Internal(String),
}

impl Error {
    /// A 400 with `message`.
    pub fn bad_request(message: impl fmt::Display) -> Self {
        Self::BadRequest(message.to_string())
    }

    /// A 415 with `message`.
    pub fn unsupported_media_type(message: impl fmt::Display) -> Self {
        Self::UnsupportedMediaType(message.to_string())
    }

    /// A 406 with `message`.
    pub fn not_acceptable(message: impl fmt::Display) -> Self {
        Self::NotAcceptable(message.to_string())
    }

    /// A 500 with `message`.
    pub fn internal(message: impl fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotImplemented => f.write_str("not implemented"),
            Self::BadRequest(m) => write!(f, "bad request: {m}"),
            Self::UnsupportedMediaType(m) => write!(f, "unsupported media type: {m}"),
            Self::NotAcceptable(m) => write!(f, "not acceptable: {m}"),
            Self::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// A set of hooks. `#[guest_sdk::handler]` writes [`crate::Handler::HOOKS`] with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookSet(u8);

impl HookSet {
    /// No hooks.
    pub const EMPTY: Self = Self(0);
    /// `model_fn`.
    pub const MODEL_FN: Self = Self(1);
    /// `input_fn`.
    pub const INPUT_FN: Self = Self(2);
    /// `predict_fn`.
    pub const PREDICT_FN: Self = Self(4);
    /// `output_fn`.
    pub const OUTPUT_FN: Self = Self(8);
    /// `transform_fn`.
    pub const TRANSFORM_FN: Self = Self(16);

    /// The union of both sets.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every hook of `other` is in this set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}
