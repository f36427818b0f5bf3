//! Example guest: only `input_fn`. It strips HTML tags, decodes the common entities and
//! collapses whitespace in every input text, then hands `{"inputs", "parameters"}` to the
//! runtime's native `predict_fn` and `output_fn`.

use guest_sdk::serde_json::{Map, Value};
use guest_sdk::{Context, Error, Handler, Payload};

/// The handler: `input_fn` only.
pub struct PreprocessOnly;

#[guest_sdk::handler]
impl Handler for PreprocessOnly {
    fn input_fn(body: Vec<u8>, content_type: &str, ctx: &Context) -> Result<Payload, Error> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mut request = match media.as_str() {
            "application/json" => match guest_sdk::json::from_slice::<Value>(&body)? {
                Value::Object(map) if map.contains_key("inputs") => map,
                other => Map::from_iter([("inputs".to_owned(), other)]),
            },
            "text/plain" | "text/html" => {
                let text = String::from_utf8(body)
                    .map_err(|_| Error::bad_request("the body is not UTF-8 text"))?;
                Map::from_iter([("inputs".to_owned(), Value::String(text))])
            }
            other => {
                return Err(Error::unsupported_media_type(format!(
                    "preprocess-only reads application/json, text/plain or text/html, got `{other}`"
                )));
            }
        };
        let inputs = request.remove("inputs").unwrap_or(Value::Null);
        let cleaned = clean_inputs(inputs)?;
        guest_sdk::debug!("request {}: inputs cleaned", ctx.request_id);
        request.insert("inputs".to_owned(), cleaned);
        Payload::from_json(&request)
    }
}

/// Cleans a string or every string of a list.
fn clean_inputs(inputs: Value) -> Result<Value, Error> {
    match inputs {
        Value::String(text) => Ok(Value::String(clean(&text))),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(Value::String(clean(&text))),
                _ => Err(Error::bad_request(
                    "`inputs` must be a string or a list of strings",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Err(Error::bad_request(
            "`inputs` must be a string or a list of strings",
        )),
    }
}

/// Removes tags, decodes entities, collapses whitespace and trims.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            // A tag separates words: `a<br>b` is two words.
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            _ => out.push(c),
        }
    }
    let decoded = decode_entities(&out);
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn decode_entities(text: &str) -> String {
    const ENTITIES: [(&str, &str); 6] = [
        ("&nbsp;", " "),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&amp;", "&"), // last, so `&amp;lt;` becomes `&lt;` and not `<`
    ];
    ENTITIES
        .iter()
        .fold(text.to_owned(), |acc, (entity, plain)| {
            acc.replace(entity, plain)
        })
}
