//! A corpus of more than 1,000 malformed requests replayed over HTTP against one server: every
//! one is answered with a 4xx JSON error in the contract's shape (contract §7), and the server is
//! alive and answers correctly afterwards. The corpus is generated here, deterministically (a
//! fixed seed), from categories that are malformed by construction: strict prefixes of JSON
//! objects, invalid UTF-8 inside strings, junk after an opening brace, nesting past the parser's
//! limit, numbers out of range, wrong shapes and parameter types, bad JSON Lines records, and
//! media types the server cannot read or write.

use serde_json::{Value, json};

use crate::support::{Server, fixture};

/// One malformed request: content type, accept, body, and why it is malformed.
struct Case {
    content_type: String,
    accept: Option<String>,
    body: Vec<u8>,
    why: String,
}

impl Case {
    fn json(body: impl Into<Vec<u8>>, why: impl Into<String>) -> Self {
        Self {
            content_type: "application/json".into(),
            accept: None,
            body: body.into(),
            why: why.into(),
        }
    }
}

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid request bodies for text-classification, whose mutations make the corpus.
fn seeds() -> Vec<String> {
    [
        json!({"inputs": "I love this movie"}),
        json!({"inputs": ["first text", "second text"], "parameters": {"top_k": 2}}),
        json!({"inputs": {"text": "a question", "text_pair": "an answer"}}),
        json!({"inputs": "ünïcödé text ✓", "parameters": {"function_to_apply": "softmax"}}),
        json!({"inputs": "tabs\tand \"quotes\" and \\ backslashes", "parameters": {"top_k": null}}),
        json!({"inputs": ["a", "b", "c", "d"], "parameters": {"truncation": true}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect()
}

fn corpus() -> Vec<Case> {
    let mut rng = Rng(0x5A6E_B2C5_0001_D00D);
    let mut cases = Vec::new();
    let seeds = seeds();
    // Every strict prefix of every seed: an object that never closes.
    for seed in &seeds {
        for cut in 0..seed.len() {
            if seed.is_char_boundary(cut) {
                cases.push(Case::json(
                    &seed.as_bytes()[..cut],
                    format!("prefix {cut} of {seed}"),
                ));
            }
        }
    }
    // Invalid UTF-8 inside a string of every seed, at many places.
    for seed in &seeds {
        let quotes: Vec<usize> = seed.match_indices('"').map(|(i, _)| i).collect();
        for _ in 0..50 {
            let at = quotes[rng.below(quotes.len() - 1)] + 1;
            let mut body = seed.as_bytes().to_vec();
            let bad: &[u8] = match rng.below(4) {
                0 => &[0xFF],
                1 => &[0xC3],             // a lead byte with no continuation
                2 => &[0xED, 0xA0, 0x80], // a UTF-16 surrogate
                _ => &[0x80, 0x80],       // continuation bytes alone
            };
            body.splice(at..at, bad.iter().copied());
            cases.push(Case::json(body, format!("invalid UTF-8 at {at} of {seed}")));
        }
    }
    // Junk after an opening brace (printable bytes, never a closing brace).
    for i in 0..300 {
        let len = 1 + rng.below(60);
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                let b = 0x20 + rng.below(0x5E) as u8;
                if b == b'}' { b'x' } else { b }
            })
            .collect();
        let mut body = b"{".to_vec();
        body.extend(junk);
        cases.push(Case::json(body, format!("junk {i}")));
    }
    // Nesting past serde_json's recursion limit.
    for depth in [129, 200, 1_000, 10_000] {
        let body = format!(
            "{{\"inputs\": {}\"x\"{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        cases.push(Case::json(body, format!("nesting {depth}")));
    }
    // Numbers the parser cannot hold.
    for n in ["1e400", "-1e400", "123456789e999"] {
        cases.push(Case::json(
            format!("{{\"inputs\": \"x\", \"parameters\": {{\"top_k\": {n}}}}}"),
            format!("number {n}"),
        ));
    }
    // Well-formed JSON of the wrong shape or with bad parameters.
    let shapes = [
        json!({"inputs": 5}),
        json!({"inputs": true}),
        json!({"inputs": null}),
        json!({"inputs": [1, 2]}),
        json!({"inputs": [["nested"]]}),
        json!({"inputs": {"no_text": "x"}}),
        json!({"inputs": "x", "parameters": "not an object"}),
        json!({"inputs": "x", "parameters": [1]}),
        json!({"inputs": "x", "parameters": {"top_k": "two"}}),
        json!({"inputs": "x", "parameters": {"top_k": -1}}),
        json!({"inputs": "x", "parameters": {"top_k": 1.5}}),
        json!({"inputs": "x", "parameters": {"function_to_apply": "cube"}}),
        json!({"inputs": "x", "parameters": {"function_to_apply": 3}}),
        json!({"inputs": "x", "parameters": {"truncation": "maybe"}}),
        json!({"inputs": "x", "parameters": {"no_such_parameter": 1}}),
        json!(42),
        json!(null),
        json!({}),
    ];
    for shape in shapes {
        cases.push(Case::json(shape.to_string(), format!("shape {shape}")));
    }
    // JSON Lines with one bad record among good ones.
    for i in 0..30 {
        let mut lines = vec![r#"{"inputs": "good"}"#.to_owned(); 3];
        lines.insert(rng.below(4), format!("{{\"inputs\": \"bad {i}\""));
        cases.push(Case {
            content_type: "application/jsonlines".into(),
            accept: None,
            body: lines.join("\n").into_bytes(),
            why: format!("jsonlines bad record {i}"),
        });
    }
    // Media types the server cannot read, and answers it cannot write.
    for content_type in [
        "image/png",
        "application/x-npy",
        "application/octet-stream",
        "audio/wav",
        "text/html",
        "application/xml",
        "multipart/form-data; boundary=x",
        "not a media type",
        "application/",
        "/json",
    ] {
        cases.push(Case {
            content_type: content_type.into(),
            accept: None,
            body: br#"{"inputs": "x"}"#.to_vec(),
            why: format!("content type {content_type}"),
        });
    }
    for accept in [
        "image/png",
        "application/xml",
        "text/html",
        "application/json;q=0",
        "nonsense",
    ] {
        cases.push(Case {
            content_type: "application/json".into(),
            accept: Some(accept.into()),
            body: br#"{"inputs": "x"}"#.to_vec(),
            why: format!("accept {accept}"),
        });
    }
    cases
}

#[test]
fn a_thousand_malformed_requests_are_each_a_4xx_json_and_the_server_lives() {
    let cases = corpus();
    assert!(cases.len() >= 1_000, "only {} cases", cases.len());
    let server = Server::start(fixture("bert-seqcls")).wait_ready();
    let client = reqwest::blocking::Client::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let mut request = client
            .post(server.url("/invocations"))
            .header("content-type", &case.content_type)
            .body(case.body.clone());
        if let Some(accept) = &case.accept {
            request = request.header("accept", accept);
        }
        let response = request.send().expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let shaped = content_type == "application/json"
            && body["code"] == status
            && body["error_type"].is_string()
            && body["message"].as_str().is_some_and(|m| !m.is_empty());
        if !(400..500).contains(&status) || !shaped {
            wrong.push(format!("{}: {status} {text}", case.why));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} malformed requests were not a 4xx JSON error:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert_eq!(server.get("/ping").status, 200);
    let ok = server.invoke(&json!({"inputs": "still serving"}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.json()[0]["label"].is_string(), "{}", ok.body);
}
