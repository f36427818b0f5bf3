//! [`Adapter`] implements the generated `Guest` trait for any [`Handler`]: it converts between
//! the WIT types and the SDK's, and maps the WIT `model` resource onto `Handler::Model`.

use std::marker::PhantomData;

use crate::bindings::exports::sagebrush::handler::hooks as wit;
use crate::bindings::exports::sagebrush::handler::hooks as wit_types;
use crate::{Context, Error, Handler, HookSet, Payload, Response};

/// Exports `H` as the component's `hooks` interface (used by [`crate::export_handler!`]).
#[doc(hidden)]
pub struct Adapter<H>(PhantomData<H>);

/// The WIT `model` resource: the value `H::model_fn` returned.
#[doc(hidden)]
pub struct ModelBox<H: Handler>(H::Model);

impl<H: Handler> wit::GuestModel for ModelBox<H> {
    fn name(&self) -> String {
        H::model_name(&self.0)
    }
}

impl<H: Handler> wit::Guest for Adapter<H> {
    type Model = ModelBox<H>;

    fn implemented() -> wit_types::HookSet {
        let pairs = [
            (HookSet::MODEL_FN, wit_types::HookSet::MODEL_FN),
            (HookSet::INPUT_FN, wit_types::HookSet::INPUT_FN),
            (HookSet::PREDICT_FN, wit_types::HookSet::PREDICT_FN),
            (HookSet::OUTPUT_FN, wit_types::HookSet::OUTPUT_FN),
            (HookSet::TRANSFORM_FN, wit_types::HookSet::TRANSFORM_FN),
        ];
        pairs
            .into_iter()
            .filter(|(sdk, _)| H::HOOKS.contains(*sdk))
            .fold(wit_types::HookSet::empty(), |set, (_, flag)| set | flag)
    }

    fn model_fn(model_dir: String) -> Result<wit::Loaded, wit_types::Error> {
        let model = H::model_fn(&model_dir).map_err(error_to_wit)?;
        let predictor = H::model_pipeline(&model)
            .map(crate::pipeline::Pipeline::try_clone)
            .transpose()
            .map_err(error_to_wit)?
            .map(crate::pipeline::Pipeline::into_wit);
        Ok(wit::Loaded {
            model: wit::Model::new(ModelBox::<H>(model)),
            predictor,
        })
    }

    fn input_fn(
        body: Vec<u8>,
        content_type: String,
        ctx: wit_types::Context,
    ) -> Result<wit_types::Payload, wit_types::Error> {
        H::input_fn(body, &content_type, &context_from_wit(ctx))
            .map(payload_to_wit)
            .map_err(error_to_wit)
    }

    fn predict_fn(
        data: wit_types::Payload,
        model: Option<wit::ModelBorrow<'_>>,
        ctx: wit_types::Context,
    ) -> Result<wit_types::Payload, wit_types::Error> {
        let model = model.as_ref().map(|m| &m.get::<ModelBox<H>>().0);
        H::predict_fn(payload_from_wit(data), model, &context_from_wit(ctx))
            .map(payload_to_wit)
            .map_err(error_to_wit)
    }

    fn output_fn(
        prediction: wit_types::Payload,
        accept: String,
        ctx: wit_types::Context,
    ) -> Result<wit_types::Response, wit_types::Error> {
        H::output_fn(
            payload_from_wit(prediction),
            &accept,
            &context_from_wit(ctx),
        )
        .map(response_to_wit)
        .map_err(error_to_wit)
    }

    fn transform_fn(
        model: Option<wit::ModelBorrow<'_>>,
        body: Vec<u8>,
        content_type: String,
        accept: String,
        ctx: wit_types::Context,
    ) -> Result<wit_types::Response, wit_types::Error> {
        let model = model.as_ref().map(|m| &m.get::<ModelBox<H>>().0);
        H::transform_fn(model, body, &content_type, &accept, &context_from_wit(ctx))
            .map(response_to_wit)
            .map_err(error_to_wit)
    }
}

fn context_from_wit(ctx: wit_types::Context) -> Context {
    Context {
        request_id: ctx.request_id,
        headers: ctx.headers,
        custom_attributes: ctx.custom_attributes,
    }
}

fn payload_from_wit(payload: wit_types::Payload) -> Payload {
    match payload {
        wit_types::Payload::Json(text) => Payload::Json(text),
        wit_types::Payload::Bytes(bytes) => Payload::Bytes(bytes),
    }
}

fn payload_to_wit(payload: Payload) -> wit_types::Payload {
    match payload {
        Payload::Json(text) => wit_types::Payload::Json(text),
        Payload::Bytes(bytes) => wit_types::Payload::Bytes(bytes),
    }
}

fn response_to_wit(response: Response) -> wit_types::Response {
    wit_types::Response {
        body: response.body,
        content_type: response.content_type,
        custom_attributes: response.custom_attributes,
        headers: response.headers,
    }
}

fn error_to_wit(error: Error) -> wit_types::Error {
    match error {
        Error::NotImplemented => wit_types::Error::NotImplemented,
        Error::BadRequest(m) => wit_types::Error::BadRequest(m),
        Error::UnsupportedMediaType(m) => wit_types::Error::UnsupportedMediaType(m),
        Error::NotAcceptable(m) => wit_types::Error::NotAcceptable(m),
        Error::Internal(m) => wit_types::Error::Internal(m),
    }
}

pub(crate) fn error_from_wit(error: wit_types::Error) -> Error {
    match error {
        wit_types::Error::NotImplemented => Error::NotImplemented,
        wit_types::Error::BadRequest(m) => Error::BadRequest(m),
        wit_types::Error::UnsupportedMediaType(m) => Error::UnsupportedMediaType(m),
        wit_types::Error::NotAcceptable(m) => Error::NotAcceptable(m),
        wit_types::Error::Internal(m) => Error::Internal(m),
    }
}
