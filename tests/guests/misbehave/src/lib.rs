//! Test guest for the runtime's limits. `input_fn` looks at the body: `panic` panics, `loop`
//! never returns, `oom` allocates until the memory limit stops it, `flood` writes 18 MiB to stdout
//! and stderr and then answers normally; anything else is wrapped as
//! `{"inputs": body}`. `output_fn` echoes the prediction as JSON, panics when the prediction
//! contains `panic-in-output`, and tries to set server-owned response headers when the request
//! has `x-test-forge-headers`. Each call also writes a line to stdout and stderr so the runtime's
//! capture is exercised.

use std::hint::black_box;

use guest_sdk::serde_json::json;
use guest_sdk::{Context, Error, Handler, Payload, Response};

/// The handler.
pub struct Misbehave;

#[guest_sdk::handler]
impl Handler for Misbehave {
    fn input_fn(body: Vec<u8>, _content_type: &str, ctx: &Context) -> Result<Payload, Error> {
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        println!("misbehave input_fn {} stdout", ctx.request_id);
        eprintln!("misbehave input_fn {} stderr", ctx.request_id);
        match text.as_str() {
            "panic" => panic!("guest panic: asked to by request {}", ctx.request_id),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                    black_box(&hoard);
                }
            }
            "flood" => {
                let line = "flood ".repeat(10_000);
                for _ in 0..300 {
                    println!("{line}");
                    eprintln!("{line}");
                }
                Payload::from_json(&json!({ "inputs": "flooded" }))
            }
            _ => Payload::from_json(&json!({ "inputs": text })),
        }
    }

    fn output_fn(prediction: Payload, _accept: &str, ctx: &Context) -> Result<Response, Error> {
        let text = String::from_utf8_lossy(prediction.as_bytes()).into_owned();
        if text.contains("panic-in-output") {
            panic!("guest panic in output_fn");
        }
        let response = Response::new(text, "application/json");
        if ctx.header("x-test-forge-headers").is_some() {
            // Headers the server owns: it must ignore these and keep the extra one.
            return Ok(response
                .with_header("x-request-id", "forged-by-guest")
                .with_header("content-length", "1")
                .with_header("x-guest-extra", "kept"));
        }
        Ok(response)
    }
}
