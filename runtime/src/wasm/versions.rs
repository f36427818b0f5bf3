//! 0.2.0's WIT types as 0.1.0's (`bindings`): the types are the same shapes, so the rest of
//! the module speaks one set.

use super::bindings::{WitContext, WitError, WitHookSet, WitPayload, WitResponse, v2};

use v2::sagebrush::handler::types as t2;

impl From<t2::Error> for WitError {
    fn from(e: t2::Error) -> Self {
        match e {
            t2::Error::NotImplemented => Self::NotImplemented,
            t2::Error::BadRequest(m) => Self::BadRequest(m),
            t2::Error::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m),
            t2::Error::NotAcceptable(m) => Self::NotAcceptable(m),
            t2::Error::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<WitError> for t2::Error {
    fn from(e: WitError) -> Self {
        match e {
            WitError::NotImplemented => Self::NotImplemented,
            WitError::BadRequest(m) => Self::BadRequest(m),
            WitError::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m),
            WitError::NotAcceptable(m) => Self::NotAcceptable(m),
            WitError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<t2::Payload> for WitPayload {
    fn from(p: t2::Payload) -> Self {
        match p {
            t2::Payload::Json(s) => Self::Json(s),
            t2::Payload::Bytes(b) => Self::Bytes(b),
        }
    }
}

impl From<WitPayload> for t2::Payload {
    fn from(p: WitPayload) -> Self {
        match p {
            WitPayload::Json(s) => Self::Json(s),
            WitPayload::Bytes(b) => Self::Bytes(b),
        }
    }
}

impl From<&WitContext> for t2::Context {
    fn from(c: &WitContext) -> Self {
        Self {
            request_id: c.request_id.clone(),
            headers: c.headers.clone(),
            custom_attributes: c.custom_attributes.clone(),
        }
    }
}

impl From<t2::Response> for WitResponse {
    fn from(r: t2::Response) -> Self {
        Self {
            body: r.body,
            content_type: r.content_type,
            custom_attributes: r.custom_attributes,
            headers: r.headers,
        }
    }
}

impl From<t2::HookSet> for WitHookSet {
    fn from(set: t2::HookSet) -> Self {
        [
            (t2::HookSet::MODEL_FN, Self::MODEL_FN),
            (t2::HookSet::INPUT_FN, Self::INPUT_FN),
            (t2::HookSet::PREDICT_FN, Self::PREDICT_FN),
            (t2::HookSet::OUTPUT_FN, Self::OUTPUT_FN),
            (t2::HookSet::TRANSFORM_FN, Self::TRANSFORM_FN),
        ]
        .into_iter()
        .filter(|(flag, _)| set.contains(*flag))
        .fold(Self::empty(), |all, (_, flag)| all | flag)
    }
}
