//! A component of `sagebrush:handler@0.1.0`, built from the frozen WIT (`wit/0.1.0`) without
//! the SDK (which moved to 0.2.0), as a user's 0.1.0 component was. `input_fn` upper-cases
//! nothing and passes the JSON body on; `output_fn` wraps the native answer:
//! `{"wit": "0.1.0", "task": pipeline.task(), "answer": .., "again": pipeline.predict(request)}`
//! where `again` is the 0.1.0 `pipeline.predict` import called with the same inputs.

#![allow(unsafe_code)] // the bindings wit-bindgen writes

wit_bindgen::generate!({
    world: "handler",
    path: "../../../wit/0.1.0",
});

use exports::sagebrush::handler::hooks::{
    Context, Error, Guest, GuestModel, HookSet, Model, ModelBorrow, Payload, Response,
};
use sagebrush::handler::{host_log, pipeline};

struct V010;

/// No model_fn; the type must exist.
struct Unused;

impl GuestModel for Unused {
    fn name(&self) -> String {
        "unused".to_owned()
    }
}

impl Guest for V010 {
    type Model = Unused;

    fn implemented() -> HookSet {
        HookSet::INPUT_FN | HookSet::OUTPUT_FN
    }

    fn model_fn(_model_dir: String) -> Result<Model, Error> {
        Err(Error::NotImplemented)
    }

    fn input_fn(body: Vec<u8>, _content_type: String, ctx: Context) -> Result<Payload, Error> {
        let text = String::from_utf8(body).map_err(|e| Error::BadRequest(e.to_string()))?;
        host_log::log(
            host_log::Level::Info,
            &format!("0.1.0 input_fn for {}", ctx.request_id),
        );
        Ok(Payload::Json(text))
    }

    fn predict_fn(
        _data: Payload,
        _model: Option<ModelBorrow<'_>>,
        _ctx: Context,
    ) -> Result<Payload, Error> {
        Err(Error::NotImplemented)
    }

    fn output_fn(prediction: Payload, _accept: String, _ctx: Context) -> Result<Response, Error> {
        let Payload::Json(answer) = prediction else {
            return Err(Error::Internal("expected JSON".to_owned()));
        };
        let again = pipeline::predict(
            r#"{"inputs": "The movie was wonderful and the actors were great. I loved it."}"#,
        )?;
        let body = format!(
            r#"{{"wit": "0.1.0", "task": "{}", "answer": {answer}, "again": {again}}}"#,
            pipeline::task()
        );
        Ok(Response {
            body: body.into_bytes(),
            content_type: "application/json".to_owned(),
            custom_attributes: None,
            headers: Vec::new(),
        })
    }

    fn transform_fn(
        _model: Option<ModelBorrow<'_>>,
        _body: Vec<u8>,
        _content_type: String,
        _accept: String,
        _ctx: Context,
    ) -> Result<Response, Error> {
        Err(Error::NotImplemented)
    }
}

export!(V010);
