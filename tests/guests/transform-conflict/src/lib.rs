//! Test guest written against raw wit-bindgen (the frozen 0.1.0 world), because `#[guest_sdk::handler]` makes this a
//! compile error: it reports `transform_fn` and `input_fn` from `implemented()`. The runtime must
//! refuse it when the model loads, with the spec's message.

wit_bindgen::generate!({
    world: "handler",
    path: "../../../wit/0.1.0",
});

use exports::sagebrush::handler::hooks::{
    Context, Error, Guest, GuestModel, HookSet, Model, ModelBorrow, Payload, Response,
};

struct Conflict;

struct NoModel;

impl GuestModel for NoModel {
    fn name(&self) -> String {
        "none".to_owned()
    }
}

impl Guest for Conflict {
    type Model = NoModel;

    fn implemented() -> HookSet {
        HookSet::TRANSFORM_FN | HookSet::INPUT_FN
    }

    fn model_fn(_model_dir: String) -> Result<Model, Error> {
        Err(Error::NotImplemented)
    }

    fn input_fn(body: Vec<u8>, _content_type: String, _ctx: Context) -> Result<Payload, Error> {
        Ok(Payload::Bytes(body))
    }

    fn predict_fn(
        _data: Payload,
        _model: Option<ModelBorrow<'_>>,
        _ctx: Context,
    ) -> Result<Payload, Error> {
        Err(Error::NotImplemented)
    }

    fn output_fn(_prediction: Payload, _accept: String, _ctx: Context) -> Result<Response, Error> {
        Err(Error::NotImplemented)
    }

    fn transform_fn(
        _model: Option<ModelBorrow<'_>>,
        body: Vec<u8>,
        content_type: String,
        _accept: String,
        _ctx: Context,
    ) -> Result<Response, Error> {
        Ok(Response {
            body,
            content_type,
            custom_attributes: None,
            headers: Vec::new(),
        })
    }
}

export!(Conflict);
