//! The encoder task pipelines over HTTP beyond the conformance cases (contract §4): batched answers
//! equal single ones (with a small `SAGEBRUSH_MAX_BATCH_SIZE` so batches split), unknown and
//! bad parameters are 400s that name them, `truncation: false` refuses an over-long input naming
//! its length, token-classification `stride` covers a long text, and bad inputs are 400s that
//! say what the task expects.

use serde_json::{Value, json};

use crate::support::{Server, compare, fixture};

/// ~300 tokens with the fixtures' tokenizers: well over the models' 128.
fn long_text() -> String {
    "The logging module defines functions and classes which implement a flexible event logging \
     system for applications and libraries. Handlers send the log records to the destination. "
        .repeat(10)
}

/// A server on `model` with `HF_TASK` (if any) and batches of at most 2 inputs.
fn server(model: &str, task: Option<&str>) -> Server {
    let mut builder = Server::builder()
        .model(fixture(model))
        .env("SAGEBRUSH_MAX_BATCH_SIZE", "2");
    if let Some(task) = task {
        builder = builder.env("HF_TASK", task);
    }
    builder.start().wait_ready()
}

fn ok(server: &Server, body: &Value) -> Value {
    let a = server.invoke(body);
    assert_eq!(a.status, 200, "{body} -> {}", a.body);
    a.json()
}

/// A list of inputs answers as the same inputs one by one.
fn assert_batch_equals_single(server: &Server, inputs: &[Value], parameters: &Value) {
    let batched = ok(server, &json!({"inputs": inputs, "parameters": parameters}));
    let batched = batched.as_array().expect("a list answer");
    assert_eq!(batched.len(), inputs.len());
    for (input, answer) in inputs.iter().zip(batched) {
        let single = ok(server, &json!({"inputs": input, "parameters": parameters}));
        compare::json_close(answer, &single, 1e-5).unwrap_or_else(|e| panic!("{input}: {e}"));
    }
}

fn assert_400_mentioning(server: &Server, body: &Value, needle: &str) {
    let message = server.invoke(body).expect_error(400, "validation");
    assert!(
        message.contains(needle),
        "{body}: {message:?} lacks {needle:?}"
    );
}

#[test]
fn token_classification_batches_validates_and_windows_with_stride() {
    let server = server("bert-tokcls", None);
    let texts = [
        json!("John Smith lives in Paris."),
        json!("Mary Johnson moved from London to Berlin to join Siemens last year."),
        json!("Kraków"),
    ];
    assert_batch_equals_single(&server, &texts, &json!({}));
    assert_batch_equals_single(&server, &texts, &json!({"aggregation_strategy": "average"}));
    assert_400_mentioning(
        &server,
        &json!({"inputs": "x", "parameters": {"aggregation": "simple"}}),
        "`aggregation`",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": "x", "parameters": {"aggregation_strategy": "mean"}}),
        "aggregation_strategy",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": 3}),
        "token-classification expects",
    );
    let long = long_text();
    assert_400_mentioning(
        &server,
        &json!({"inputs": long, "parameters": {"truncation": false}}),
        "tokens long",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": long, "parameters": {"stride": 16}}),
        "aggregation_strategy",
    );
    // Truncated by default: entities stop early. With a stride, windows cover the whole text.
    let params = json!({"aggregation_strategy": "simple", "ignore_labels": []});
    let truncated = ok(&server, &json!({"inputs": long, "parameters": params}));
    let mut with_stride = params.clone();
    with_stride["stride"] = json!(16);
    let windowed = ok(&server, &json!({"inputs": long, "parameters": with_stride}));
    let last_end = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["end"].as_u64().unwrap())
            .max()
            .unwrap()
    };
    assert_eq!(last_end(&windowed) as usize, long.trim_end().len());
    assert!(
        last_end(&truncated) < last_end(&windowed) / 2,
        "{truncated}"
    );
    let starts: Vec<u64> = windowed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["start"].as_u64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
}

#[test]
fn question_answering_batches_and_validates() {
    let server = server("bert-qa", None);
    let context = "The Eiffel Tower is located in Paris, the capital of France. It was built in 1889 \
                   by the engineer Gustave Eiffel and is about 330 metres tall.";
    let examples = [
        json!({"question": "Where is it?", "context": context}),
        json!({"question": "Who built it?", "context": context}),
        json!({"question": "How tall?", "context": long_text()}),
    ];
    assert_batch_equals_single(&server, &examples, &json!({"top_k": 2}));
    // A list of one answers like the example alone (transformers' rule).
    let one = ok(&server, &json!({"inputs": [examples[0]]}));
    assert_eq!(one, ok(&server, &json!({"inputs": examples[0]})));
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"question": "q"}}),
        "`context` is missing",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": "just text"}),
        "question-answering expects",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": examples[0], "parameters": {"doc_stride": 100, "max_seq_len": 64}}),
        "doc_stride",
    );
    // A question that leaves no room for the context in a 16-token window, and a stride as
    // long as the room left: 400s, not a crash.
    let question = "what is the name of the engineer who built the tower in paris";
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"question": question, "context": context}, "parameters": {"max_seq_len": 16, "doc_stride": 2}}),
        "too short",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"question": "where?", "context": context}, "parameters": {"max_seq_len": 16, "doc_stride": 12}}),
        "stride",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": examples[0], "parameters": {"top_k": 1, "topk": 2}}),
        "`topk`",
    );
    let top0 = server.invoke(&json!({"inputs": examples[0], "parameters": {"top_k": 0}}));
    top0.expect_error(400, "validation");
}

#[test]
fn fill_mask_batches_truncates_and_validates() {
    let server = server("bert-mlm", None);
    let texts = [
        json!("The [MASK] was wonderful."),
        json!("Open the [MASK] and read the [MASK]."),
        json!("Return the [MASK] of the list."),
    ];
    assert_batch_equals_single(&server, &texts, &json!({"top_k": 3}));
    assert_batch_equals_single(&server, &texts, &json!({"targets": ["file", "list"]}));
    // The mask near the start survives truncation; truncation off refuses the text.
    let long = format!("The [MASK] {}", long_text());
    let answer = ok(
        &server,
        &json!({"inputs": long, "parameters": {"top_k": 1}}),
    );
    assert_eq!(answer.as_array().unwrap().len(), 1);
    assert_400_mentioning(
        &server,
        &json!({"inputs": long, "parameters": {"truncation": false}}),
        "tokens long",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": "The [MASK].", "parameters": {"top_k": 0}}),
        "`top_k`",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": "The [MASK].", "parameters": {"target": "file"}}),
        "`target`",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": ["The [MASK].", "no mask"]}),
        "No mask_token ([MASK]) found on the input",
    );
}

#[test]
fn zero_shot_batches_pairs_and_validates() {
    let server = server("distilbert-seqcls", Some("zero-shot-classification"));
    let texts = [
        json!("The movie was wonderful."),
        json!("The food was terrible and the service was slow."),
        json!(long_text()),
    ];
    let params = json!({"candidate_labels": ["travel", "cooking", "dancing"]});
    assert_batch_equals_single(&server, &texts, &params);
    let multi = json!({"candidate_labels": "travel, cooking", "multi_label": true});
    assert_batch_equals_single(&server, &texts, &multi);
    assert_400_mentioning(&server, &json!({"inputs": "x"}), "`candidate_labels`");
    assert_400_mentioning(
        &server,
        &json!({"inputs": "x", "parameters": {"candidate_labels": ["a"], "hypothesis_template": "no slot"}}),
        "hypothesis_template",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": "x", "parameters": {"candidate_labels": ["a"], "multi_class": true}}),
        "`multi_class`",
    );
}

#[test]
fn zero_shot_needs_an_entailment_label() {
    let server = server("bert-seqcls", Some("zero-shot-classification"));
    assert_400_mentioning(
        &server,
        &json!({"inputs": "x", "parameters": {"candidate_labels": ["a", "b"]}}),
        "entail",
    );
}

#[test]
fn feature_extraction_batches_truncates_and_validates() {
    let server = server("roberta-seqcls", Some("feature-extraction"));
    let texts = [
        json!("Hello world"),
        json!("A somewhat longer sentence, so that the batch needs padding."),
        json!("Third"),
    ];
    assert_batch_equals_single(&server, &texts, &json!({}));
    let single = ok(&server, &json!({"inputs": "Hello world"}));
    let tokens = single[0].as_array().unwrap();
    assert_eq!(single.as_array().unwrap().len(), 1, "1 × tokens × hidden");
    assert!(tokens.len() > 2 && tokens.iter().all(|t| t.as_array().unwrap().len() == 64));
    let long = ok(&server, &json!({"inputs": long_text()}));
    assert_eq!(
        long[0].as_array().unwrap().len(),
        128,
        "truncated to the model maximum"
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": long_text(), "parameters": {"truncation": false}}),
        "tokens long",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": "x", "parameters": {"return_tensors": true}}),
        "`return_tensors`",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": [1, 2]}),
        "feature-extraction expects",
    );
}
