//! The records of a multi-record body through the native `predict_fn`: at once, in the caller's
//! scope, answered in order, and failing as running them in order would.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::{HookChain, HookError, Invocation, RequestContext};
use crate::codec::Encoding;
use crate::infer::Scope;
use crate::pipelines::{Envelope, Pipeline, PipelineError, Task};

/// Answers `{"echo": inputs}` and fails on inputs starting with `bad`. Each call waits (at most
/// 10 s) until `meet` calls have been in flight at once, which only records predicted together
/// reach; it records the most calls seen at once and each call's scope deadline.
struct Meeting {
    meet: usize,
    /// (in flight, most in flight at once)
    state: Mutex<(usize, usize)>,
    changed: Condvar,
    deadlines: Mutex<Vec<Option<Instant>>>,
}

impl Meeting {
    fn new(meet: usize) -> Arc<Self> {
        Arc::new(Self {
            meet,
            state: Mutex::new((0, 0)),
            changed: Condvar::new(),
            deadlines: Mutex::new(Vec::new()),
        })
    }

    fn most_at_once(&self) -> usize {
        self.state.lock().unwrap().1
    }
}

impl Pipeline for Meeting {
    fn task(&self) -> Task {
        Task::TextClassification
    }

    fn run(&self, request: Envelope) -> Result<Value, PipelineError> {
        self.predict(json!({ "inputs": request.inputs }))
    }

    fn predict(&self, request: Value) -> Result<Value, PipelineError> {
        self.deadlines
            .lock()
            .unwrap()
            .push(Scope::current().deadline);
        {
            let mut state = self.state.lock().unwrap();
            state.0 += 1;
            state.1 = state.1.max(state.0);
            self.changed.notify_all();
            let give_up = Instant::now() + Duration::from_secs(10);
            while state.1 < self.meet && Instant::now() < give_up {
                state = self
                    .changed
                    .wait_timeout(state, Duration::from_millis(20))
                    .unwrap()
                    .0;
            }
            state.0 -= 1;
        }
        let input = request["inputs"].as_str().unwrap_or_default();
        if input.starts_with("bad") {
            return Err(PipelineError::validation(format!("{input} is bad")));
        }
        Ok(json!({ "echo": input }))
    }
}

fn invoke(chain: &HookChain, records: &[&str], deadline: Instant) -> Result<String, HookError> {
    let body: String = records
        .iter()
        .map(|r| format!("{}\n", json!({ "inputs": r })))
        .collect();
    let jsonlines = "application/jsonlines";
    let plan = chain
        .negotiate(Some(jsonlines), Some(jsonlines), Encoding::Json)
        .expect("negotiate");
    let invocation = Invocation {
        body: Bytes::from(body),
        content_type: Some(jsonlines.to_owned()),
        accept: Some(jsonlines.to_owned()),
        plan,
        ctx: RequestContext {
            request_id: "test".to_owned(),
            headers: Vec::new(),
            custom_attributes: None,
        },
    };
    let scope = Scope {
        deadline: Some(deadline),
        ..Scope::default()
    };
    scope
        .run(|| chain.invoke(&invocation))
        .map(|answer| String::from_utf8(answer.body.to_vec()).expect("utf-8"))
}

#[test]
fn the_records_of_a_body_are_predicted_at_once_in_the_callers_scope_and_answered_in_order() {
    let records = ["a", "b", "c", "d", "e", "f"];
    let pipeline = Meeting::new(3);
    let chain = HookChain::new(pipeline.clone(), None)
        .unwrap()
        .with_record_parallelism(3);
    let deadline = Instant::now() + Duration::from_secs(3600);
    let answer = invoke(&chain, &records, deadline).expect("answer");
    let expected: String = records
        .iter()
        .map(|r| format!("{}\n", json!({ "echo": r })))
        .collect();
    assert_eq!(answer.trim_end(), expected.trim_end());
    assert_eq!(pipeline.most_at_once(), 3);
    let deadlines = pipeline.deadlines.lock().unwrap().clone();
    assert_eq!(deadlines, vec![Some(deadline); records.len()]);
}

#[test]
fn records_run_one_at_a_time_without_record_parallelism() {
    let pipeline = Meeting::new(1);
    let chain = HookChain::new(pipeline.clone(), None).unwrap();
    let answer = invoke(
        &chain,
        &["a", "b", "c"],
        Instant::now() + Duration::from_secs(60),
    );
    assert_eq!(answer.expect("answer").lines().count(), 3);
    assert_eq!(pipeline.most_at_once(), 1);
}

#[test]
fn the_error_is_the_first_bad_records_as_in_order() {
    let pipeline = Meeting::new(1);
    let chain = HookChain::new(pipeline, None)
        .unwrap()
        .with_record_parallelism(4);
    let records = ["a", "b", "bad-2", "c", "bad-4", "d", "bad-6", "e"];
    for _ in 0..20 {
        let err = invoke(&chain, &records, Instant::now() + Duration::from_secs(60))
            .expect_err("a bad record");
        assert!(err.to_string().contains("bad-2 is bad"), "{err}");
    }
}
