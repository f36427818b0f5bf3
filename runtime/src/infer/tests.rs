//! The core with a small deterministic model: each token's output is `[id, type id, row
//! length]` (attention mask summed, so padding shows if it leaked), the sequence output the
//! sum of the ids. Checks scatter order, padding, batching, cancellation, panics and the bound.

use std::sync::mpsc as std_mpsc;

use candle_core::{DType, Device};

use super::*;

/// A model that records the shape of every pass and can be held or made to panic.
struct Probe {
    passes: std_mpsc::Sender<(usize, usize)>,
    hold: Option<std_mpsc::Receiver<()>>,
    sequence: bool,
}

impl Probe {
    fn outputs(&self, batch: &EncoderBatch) -> Result<Tensor, ModelError> {
        let (rows, len) = (batch.input_ids.len(), batch.input_ids[0].len());
        let _ = self.passes.send((rows, len));
        if let Some(hold) = &self.hold {
            let _ = hold.recv();
        }
        if batch.input_ids[0][0] == 999 {
            panic!("poisoned input");
        }
        let mut data = Vec::new();
        for r in 0..rows {
            let real: u32 = batch.attention_mask[r].iter().sum();
            for t in 0..len {
                data.extend([
                    batch.input_ids[r][t] as f32,
                    batch.type_ids[r][t] as f32,
                    real as f32,
                ]);
            }
        }
        let t = Tensor::from_vec(data, (rows, len, 3), &Device::Cpu)?;
        if self.sequence {
            Ok(t.narrow(2, 0, 1)?.sum(1)?.squeeze(1)?)
        } else {
            Ok(t)
        }
    }
}

impl Model for Probe {
    fn forward(&mut self, batch: &EncoderBatch) -> Result<Tensor, ModelError> {
        self.outputs(batch)
    }

    fn forward_positions(
        &mut self,
        batch: &EncoderBatch,
        positions: &[(usize, usize)],
    ) -> Result<Tensor, ModelError> {
        let all = self.outputs(batch)?;
        let rows: Vec<Tensor> = positions
            .iter()
            .map(|&(r, p)| all.get(r)?.get(p))
            .collect::<candle_core::Result<_>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}

fn config(queue_size: usize) -> InferConfig {
    InferConfig {
        queue_size,
        max_batch_rows: 8,
        max_batch_tokens: 1000,
        max_wait: Duration::ZERO,
        pad_id: 0,
        wedged_after: Duration::from_secs(60),
        #[cfg(feature = "test-gate")]
        gate_dir: None,
    }
}

fn row(ids: &[u32]) -> Row {
    Row::new(ids.to_vec(), vec![1; ids.len()])
}

fn start(
    queue_size: usize,
    held: bool,
    sequence: bool,
) -> (
    Infer,
    std_mpsc::Receiver<(usize, usize)>,
    Option<std_mpsc::Sender<()>>,
) {
    let (passes, seen) = std_mpsc::channel();
    let (release, hold) = std_mpsc::channel();
    let probe = Probe {
        passes,
        hold: held.then_some(hold),
        sequence,
    };
    let infer = Infer::spawn(probe, config(queue_size), "test-worker").unwrap();
    (infer, seen, held.then_some(release))
}

#[test]
fn rows_come_back_in_order_unpadded() {
    let (infer, seen, _) = start(4, false, false);
    let out = infer
        .run(
            vec![row(&[5, 6, 7]), row(&[8]), row(&[9, 10])],
            Outputs::All,
        )
        .unwrap();
    // One pass, sorted and padded to 3.
    assert_eq!(seen.recv().unwrap(), (3, 3));
    let values: Vec<Vec<Vec<f32>>> = out.iter().map(|t| t.to_vec2().unwrap()).collect();
    assert_eq!(
        values,
        [
            vec![
                vec![5.0, 1.0, 3.0],
                vec![6.0, 1.0, 3.0],
                vec![7.0, 1.0, 3.0]
            ],
            vec![vec![8.0, 1.0, 1.0]],
            vec![vec![9.0, 1.0, 2.0], vec![10.0, 1.0, 2.0]],
        ]
    );
}

#[test]
fn positions_pick_only_the_wanted_tokens() {
    let (infer, _seen, _) = start(4, false, false);
    let out = infer
        .run(
            vec![row(&[5, 6, 7]), row(&[8, 9])],
            Outputs::Positions(vec![vec![2, 0], vec![1]]),
        )
        .unwrap();
    assert_eq!(out[0].dims(), [2, 3]);
    let first: Vec<Vec<f32>> = out[0].to_vec2().unwrap();
    assert_eq!(first[0][0], 7.0);
    assert_eq!(first[1][0], 5.0);
    assert_eq!(out[1].to_vec2::<f32>().unwrap()[0][0], 9.0);
    let err = infer
        .run(vec![row(&[1])], Outputs::Positions(vec![vec![3]]))
        .unwrap_err();
    assert!(matches!(err, InferError::BadRequest { .. }), "{err}");
}

#[test]
fn requests_queued_during_a_pass_merge_into_the_next() {
    let (infer, seen, release) = start(8, true, true);
    let release = release.unwrap();
    let first = {
        let infer = infer.clone();
        std::thread::spawn(move || infer.run(vec![row(&[1, 2])], Outputs::All))
    };
    assert_eq!(seen.recv().unwrap(), (1, 2));
    // The worker is busy: queue three requests, then let it go.
    let receivers: Vec<_> = (0..3u32)
        .map(|i| {
            let (request, rx) = Request::once(vec![row(&[i + 10, i + 20])], Outputs::All);
            infer.submit(request).unwrap();
            rx
        })
        .collect();
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(seen.recv().unwrap(), (3, 2), "one pass for the three");
    assert_eq!(
        first.join().unwrap().unwrap()[0].to_vec0::<f32>().unwrap(),
        3.0
    );
    for (i, rx) in receivers.into_iter().enumerate() {
        let out = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(out[0].to_vec0::<f32>().unwrap(), (2 * i + 30) as f32);
    }
    assert_eq!(infer.stats().forward_passes, 2);
}

#[test]
fn a_full_queue_is_overloaded_and_a_cancelled_request_is_never_computed() {
    let (infer, seen, release) = start(1, true, true);
    let release = release.unwrap();
    let busy = {
        let infer = infer.clone();
        std::thread::spawn(move || infer.run(vec![row(&[1])], Outputs::All))
    };
    seen.recv().unwrap();
    let (waiting, rx) = Request::once(vec![row(&[2])], Outputs::All);
    infer.submit(waiting).unwrap();
    let (refused, _rx2) = Request::once(vec![row(&[3])], Outputs::All);
    assert!(matches!(
        infer.submit(refused),
        Err(InferError::Overloaded { capacity: 1 })
    ));
    // The waiting request's caller leaves: its place is free again, and it is not computed.
    drop(rx);
    let (next, rx3) = Request::once(vec![row(&[4])], Outputs::All);
    infer.submit(next).unwrap();
    release.send(()).unwrap();
    release.send(()).unwrap();
    busy.join().unwrap().unwrap();
    assert_eq!(
        rx3.blocking_recv().unwrap().unwrap()[0]
            .to_vec0::<f32>()
            .unwrap(),
        4.0
    );
    assert_eq!(seen.recv().unwrap(), (1, 1));
    let stats = infer.stats();
    assert_eq!(
        (stats.computed, stats.dropped, stats.forward_passes),
        (2, 1, 2)
    );
}

#[test]
fn a_cancel_flag_or_a_passed_deadline_drops_the_request() {
    let (infer, _seen, _) = start(4, false, true);
    let scope = Scope {
        deadline: None,
        cancel: CancelFlag::default(),
        timings: None,
    };
    scope.cancel.set();
    let err = scope
        .run(|| infer.run(vec![row(&[1])], Outputs::All))
        .unwrap_err();
    assert!(matches!(err, InferError::Cancelled), "{err}");
    let scope = Scope {
        deadline: Some(Instant::now()),
        cancel: CancelFlag::default(),
        timings: None,
    };
    let err = scope
        .run(|| infer.run(vec![row(&[1])], Outputs::All))
        .unwrap_err();
    assert!(matches!(err, InferError::DeadlineExceeded), "{err}");
    assert_eq!(infer.stats().forward_passes, 0);
    // Outside a scope, nothing is inherited.
    assert!(infer.run(vec![row(&[1])], Outputs::All).is_ok());
}

#[test]
fn a_panicking_pass_fails_its_requests_and_the_worker_goes_on() {
    let (infer, _seen, _) = start(4, false, true);
    let err = infer.run(vec![row(&[999, 1])], Outputs::All).unwrap_err();
    match &err {
        InferError::WorkerPanicked { message } => assert_eq!(message, "poisoned input"),
        other => panic!("{other:?}"),
    }
    assert_eq!(infer.health(), Health::Ready);
    let out = infer.run(vec![row(&[1, 2])], Outputs::All).unwrap();
    assert_eq!(out[0].to_vec0::<f32>().unwrap(), 3.0);
}

#[test]
fn a_stream_reply_gets_every_row() {
    let (infer, _seen, _) = start(4, false, true);
    let (tx, mut rx) = mpsc::unbounded_channel();
    infer
        .submit(Request {
            rows: vec![row(&[1, 1, 1]), row(&[2])],
            outputs: Outputs::All,
            deadline: None,
            cancel: CancelFlag::default(),
            span: tracing::Span::none(),
            reply: Reply::Stream(tx),
            timings: None,
            queued_at: Instant::now(),
        })
        .unwrap();
    let mut got: Vec<(usize, f32)> = (0..2)
        .map(|_| {
            let (i, t) = rx.blocking_recv().unwrap().unwrap();
            (i, t.to_dtype(DType::F32).unwrap().to_vec0().unwrap())
        })
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(got, [(0, 3.0), (1, 2.0)]);
}

#[test]
fn an_invocation_gets_its_queue_time_inference_time_and_tokens() {
    use crate::metrics::{RequestTimings, Stage};
    // Held: the first request waits in the worker, so the second one waits in the queue.
    let (infer, seen, release) = start(4, true, true);
    let release = release.unwrap();
    let first = {
        let infer = infer.clone();
        std::thread::spawn(move || infer.run(vec![row(&[1, 2, 3])], Outputs::All))
    };
    assert_eq!(seen.recv().unwrap(), (1, 3));
    let timings = Arc::new(RequestTimings::default());
    let scope = Scope {
        deadline: None,
        cancel: CancelFlag::default(),
        timings: Some(Arc::clone(&timings)),
    };
    let second = {
        let infer = infer.clone();
        std::thread::spawn(move || {
            scope.run(|| infer.run(vec![row(&[4, 5]), row(&[6])], Outputs::All))
        })
    };
    // Let the second request reach the queue before the first pass ends.
    while infer.shared().lock_queue().is_empty() {
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    first.join().unwrap().unwrap();
    assert_eq!(seen.recv().unwrap(), (2, 2));
    release.send(()).unwrap();
    second.join().unwrap().unwrap();
    assert_eq!(timings.tokens(), 3, "unpadded tokens of both rows");
    assert!(timings.get(Stage::Queue) > Duration::ZERO);
    assert!(timings.get(Stage::Inference) > Duration::ZERO);
    assert_eq!(timings.get(Stage::Decode), Duration::ZERO);
}

/// A model that sends each padded batch it is given and answers, per token, its segment id
/// and its extra type channels.
struct Channels(std_mpsc::Sender<EncoderBatch>);

impl Model for Channels {
    fn forward(&mut self, batch: &EncoderBatch) -> Result<Tensor, ModelError> {
        let _ = self.0.send(batch.clone());
        let (rows, len) = (batch.input_ids.len(), batch.input_ids[0].len());
        let channels = batch.extra_type_ids.first().map_or(0, Vec::len);
        let mut data = Vec::new();
        for r in 0..rows {
            for t in 0..len {
                data.push(batch.type_ids[r][t] as f32);
                if let Some(extra) = batch.extra_type_ids.get(r) {
                    data.extend(extra.iter().map(|c| c[t] as f32));
                }
            }
        }
        Ok(Tensor::from_vec(
            data,
            (rows, len, 1 + channels),
            &Device::Cpu,
        )?)
    }

    fn forward_positions(
        &mut self,
        _batch: &EncoderBatch,
        _positions: &[(usize, usize)],
    ) -> Result<Tensor, ModelError> {
        unreachable!("not asked for positions")
    }
}

#[test]
fn extra_type_channels_are_padded_with_zeros_and_come_back_per_row() {
    let (tx, batches) = std_mpsc::channel();
    let infer = Infer::spawn(Channels(tx), config(4), "test-worker").unwrap();
    let long = Row {
        extra_type_ids: vec![vec![1, 2, 3], vec![4, 5, 6]],
        ..Row::new(vec![7, 8, 9], vec![1, 1, 1])
    };
    let short = Row {
        extra_type_ids: vec![vec![10], vec![11]],
        ..Row::new(vec![7], vec![0])
    };
    let out = infer.run(vec![short, long], Outputs::All).unwrap();
    let batch = batches.recv().unwrap();
    // Rows are ordered by length inside the pass: find the short one by its mask.
    let short_at = batch
        .attention_mask
        .iter()
        .position(|m| m == &[1, 0, 0])
        .expect("the short row is padded to 3");
    assert_eq!(
        batch.extra_type_ids[short_at],
        vec![vec![10, 0, 0], vec![11, 0, 0]]
    );
    assert_eq!(batch.type_ids[short_at], vec![0, 0, 0]);
    let short: Vec<Vec<f32>> = out[0].to_vec2().unwrap();
    let long: Vec<Vec<f32>> = out[1].to_vec2().unwrap();
    assert_eq!(short, vec![vec![0.0, 10.0, 11.0]]);
    assert_eq!(
        long,
        vec![
            vec![1.0, 1.0, 4.0],
            vec![1.0, 2.0, 5.0],
            vec![1.0, 3.0, 6.0]
        ]
    );
}

#[test]
fn rows_without_extra_channels_give_the_model_none() {
    let (tx, batches) = std_mpsc::channel();
    let infer = Infer::spawn(Channels(tx), config(4), "test-worker").unwrap();
    let out = infer
        .run(vec![row(&[5, 6]), row(&[7])], Outputs::All)
        .unwrap();
    assert!(batches.recv().unwrap().extra_type_ids.is_empty());
    assert_eq!(out[1].to_vec2::<f32>().unwrap(), vec![vec![1.0]]);
}

#[test]
fn an_extra_channel_of_the_wrong_length_is_refused() {
    let (tx, _batches) = std_mpsc::channel();
    let infer = Infer::spawn(Channels(tx), config(4), "test-worker").unwrap();
    let bad = Row {
        extra_type_ids: vec![vec![1]],
        ..Row::new(vec![7, 8], vec![0, 0])
    };
    assert!(matches!(
        infer.run(vec![bad], Outputs::All),
        Err(InferError::BadRequest { .. })
    ));
}
