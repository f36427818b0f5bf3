//! Test guest for the host's resources (WIT 0.2.0). `model_fn` reads `greeting.txt` from the
//! model directory (a data file, no weights); `transform_fn` reads a JSON body
//! `{"op": .., ...}`:
//!
//! - `greeting`: `{"greeting": <greeting.txt>}`;
//! - `predict` with `task`, `subfolder`, `inputs`: loads the pipeline now (lazily, per
//!   request; the host shares the load) and answers its prediction; a refused load is the
//!   host's 400 naming the cause;
//! - `default` with `inputs`: the model directory's own pipeline (built on first use);
//! - `tokenize` with `subfolder`, `text`: `{"ids", "offsets", "tokens", "decoded"}` from the
//!   host's tokenizer.

use guest_sdk::pipeline::{self, Pipeline};
use guest_sdk::serde_json::{Value, json};
use guest_sdk::tokenizer::Tokenizer;
use guest_sdk::{Context, Error, Handler, Response};

/// The handler.
pub struct HostResources;

/// What `model_fn` reads.
pub struct Greeting(String);

#[guest_sdk::handler]
impl Handler for HostResources {
    type Model = Greeting;

    fn model_fn(model_dir: &str) -> Result<Greeting, Error> {
        std::fs::read_to_string(format!("{model_dir}/greeting.txt"))
            .map(|g| Greeting(g.trim().to_owned()))
            .map_err(|e| Error::internal(format!("cannot read greeting.txt: {e}")))
    }

    fn transform_fn(
        model: Option<&Greeting>,
        body: Vec<u8>,
        _content_type: &str,
        _accept: &str,
        _ctx: &Context,
    ) -> Result<Response, Error> {
        let request: Value = guest_sdk::json::from_slice(&body)?;
        let text = |key: &str| request.get(key).and_then(Value::as_str);
        let answer = match text("op") {
            Some("greeting") => json!({ "greeting": model.map(|g| g.0.clone()) }),
            Some("predict") => {
                let task = text("task").ok_or_else(|| Error::bad_request("`task` is needed"))?;
                let pipeline = Pipeline::load(task, text("subfolder"), None)?;
                json!({ "task": pipeline.task(), "answer": pipeline.predict(&json!({ "inputs": request["inputs"] }))? })
            }
            Some("default") => {
                json!({ "task": pipeline::task(), "answer": pipeline::predict(&json!({ "inputs": request["inputs"] }))? })
            }
            Some("tokenize") => {
                let tokenizer = Tokenizer::load(text("subfolder"))?;
                let input = text("text").ok_or_else(|| Error::bad_request("`text` is needed"))?;
                let encoding = tokenizer.tokenize(input, true)?;
                let decoded = tokenizer.decode(&encoding.ids, true)?;
                json!({
                    "ids": encoding.ids,
                    "offsets": encoding.offsets,
                    "tokens": encoding.tokens,
                    "decoded": decoded,
                })
            }
            _ => {
                return Err(Error::bad_request(
                    "`op` must be greeting, predict, default or tokenize",
                ));
            }
        };
        Response::json(&answer)
    }
}
