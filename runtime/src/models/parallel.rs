//! Data parallelism for throughput jobs (`sagebrush batch`): one forward pass of many rows cut
//! into as many parts as there are cores, each part run single-threaded on its own core, the
//! outputs put back together in row order.
//!
//! Why: candle parallelises *inside* each operation (gemm over two rayon threads, element-wise
//! ops over its barrier pool). For a 32-row BERT-base pass on two cores, a profile of
//! `sagebrush batch` (release build, `perf record`) spent 9 % of the CPU spinning in candle's
//! barrier until the other thread finished its half of an element-wise op, and the model-worker
//! thread ran the serial parts (GELU, copies) while both gemm threads slept: 1.67 cores busy out
//! of 2. The same job with every operation single-threaded took 15 % less CPU a record. Cutting
//! the *rows* instead keeps both cores on their own part of the pass from the first layer to
//! the head, with no synchronisation between operations (README, "Batch Transform").
//!
//! Each part is trimmed to its own longest row (the rows of a pass come sorted by length, so
//! the short half pads less), and the parts are balanced by tokens, not rows. A row's answer
//! does not depend on the rows beside it (padding is masked out), so cutting the pass changes
//! no answer beyond float rounding.
//!
//! Single-threaded operations need candle's own element-wise pool to be off
//! (`CANDLE_NUM_THREADS=1`, which `sagebrush batch` sets unless the user did): otherwise the
//! parts queue one after the other on its lock. gemm and candle-nn's row-wise ops use rayon,
//! and run inside this model's pool: a part's nested parallel work stays on its own core.

use candle_core::Tensor;
use rayon::prelude::*;

use super::{Encoder, EncoderBatch, ModelError, Result};

/// An [`Encoder`] whose passes are cut into `parts` pieces run at once on a rayon pool of
/// `parts` threads.
pub struct DataParallel {
    encoder: Encoder,
    pool: rayon::ThreadPool,
    parts: usize,
}

impl DataParallel {
    /// Wraps `encoder`; `parts` threads (at least 1) named `model-part-N`.
    pub fn new(encoder: Encoder, parts: usize) -> std::io::Result<Self> {
        let parts = parts.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(parts)
            .thread_name(|i| format!("model-part-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            encoder,
            pool,
            parts,
        })
    }

    /// Runs `f` on each part of `batch` at once, in the pool; the results in part order.
    fn each_part<T: Send>(
        &self,
        batch: &EncoderBatch,
        f: impl Fn(&Encoder, usize, &EncoderBatch) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let parts = split(batch, self.parts);
        self.pool.install(|| {
            parts
                .par_iter()
                .map(|(first, part)| f(&self.encoder, *first, part))
                .collect()
        })
    }
}

/// Cuts `batch` into at most `n` parts of consecutive rows with about the same number of real
/// tokens, each trimmed to its own longest row: `(index of its first row, part)`. One part
/// (the batch itself, trimmed) when it has a single row or `n` is 1.
pub(crate) fn split(batch: &EncoderBatch, n: usize) -> Vec<(usize, EncoderBatch)> {
    let rows = batch.input_ids.len();
    let lens: Vec<usize> = batch
        .attention_mask
        .iter()
        .map(|m| m.iter().rposition(|&v| v != 0).map_or(1, |p| p + 1))
        .collect();
    let total: usize = lens.iter().sum();
    let n = n.clamp(1, rows.max(1));
    let mut bounds = vec![0];
    let mut acc = 0;
    for (i, len) in lens.iter().enumerate() {
        acc += len;
        // Cut after row `i` once this part holds its share of the tokens (and rows remain).
        let cut = bounds.len();
        if cut < n && i + 1 < rows && acc * n >= total * cut {
            bounds.push(i + 1);
        }
    }
    bounds.push(rows);
    bounds
        .windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let len = lens[a..b].iter().copied().max().unwrap_or(0);
            let cut = |v: &[Vec<u32>]| -> Vec<Vec<u32>> {
                v[a..b]
                    .iter()
                    .map(|r| r[..len.min(r.len())].to_vec())
                    .collect()
            };
            let part = EncoderBatch {
                input_ids: cut(&batch.input_ids),
                type_ids: cut(&batch.type_ids),
                attention_mask: cut(&batch.attention_mask),
                extra_type_ids: if batch.extra_type_ids.is_empty() {
                    Vec::new()
                } else {
                    batch.extra_type_ids[a..b]
                        .iter()
                        .map(|channels| channels.iter().map(|c| c[..len].to_vec()).collect())
                        .collect()
                },
            };
            (a, part)
        })
        .collect()
}

/// Puts part outputs back together along the rows; per-token outputs (`[b, t, X]`) are padded
/// with zeros back to the batch's length `len` first (those positions are padding).
fn join(outputs: Vec<Tensor>, len: usize) -> Result<Tensor> {
    let outputs = outputs
        .into_iter()
        .map(|t| {
            if t.rank() >= 3 {
                let t_len = t.dim(1)?;
                t.pad_with_zeros(1, 0, len.saturating_sub(t_len))
            } else {
                Ok(t)
            }
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&outputs, 0)?)
}

impl crate::infer::Model for DataParallel {
    fn forward(&mut self, batch: &EncoderBatch) -> Result<Tensor, ModelError> {
        if self.parts == 1 || batch.input_ids.len() < 2 {
            return self.pool.install(|| self.encoder.forward(batch));
        }
        let len = batch.input_ids.first().map_or(0, Vec::len);
        let outputs = self.each_part(batch, |encoder, _, part| encoder.forward(part))?;
        join(outputs, len)
    }

    fn forward_positions(
        &mut self,
        batch: &EncoderBatch,
        positions: &[(usize, usize)],
    ) -> Result<Tensor, ModelError> {
        if self.parts == 1 || batch.input_ids.len() < 2 {
            return self
                .pool
                .install(|| self.encoder.forward_positions(batch, positions));
        }
        // Positions come in row order; each part answers its rows' positions, in that order.
        if positions.windows(2).any(|w| w[1].0 < w[0].0) {
            return self
                .pool
                .install(|| self.encoder.forward_positions(batch, positions));
        }
        let rows = batch.input_ids.len();
        let outputs = self.each_part(batch, |encoder, first, part| {
            let end = first + part.input_ids.len();
            let mine: Vec<(usize, usize)> = positions
                .iter()
                .filter(|(row, _)| (first..end).contains(row))
                .map(|&(row, pos)| (row - first, pos))
                .collect();
            if mine.is_empty() {
                return Ok(None);
            }
            encoder.forward_positions(part, &mine).map(Some)
        })?;
        let outputs: Vec<Tensor> = outputs.into_iter().flatten().collect();
        if outputs.is_empty() {
            // No positions at all: what the whole batch answers.
            return self
                .pool
                .install(|| self.encoder.forward_positions(batch, positions));
        }
        debug_assert!(positions.iter().all(|(r, _)| *r < rows));
        Ok(Tensor::cat(&outputs, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::Model as _;
    use crate::models::tests::{assert_logits_close, load};
    use crate::models::{Head, WeightDtype};
    use crate::tokenizer::EncodeInput;

    /// Rows of different lengths, sorted by length as the worker's passes are.
    fn padded(name: &str, head: Head) -> (crate::models::tests::Loaded, EncoderBatch) {
        let loaded = load(name, head);
        let texts = [
            "Hi.",
            "The food was terrible.",
            "I am not sure how I feel about this new phone.",
            "The movie was wonderful and the actors were great. I loved it, really.",
            "Paris is the capital of France and Berlin is the capital of Germany, they say.",
        ];
        let inputs = texts
            .iter()
            .map(|t| EncodeInput::Single((*t).to_owned()))
            .collect();
        let encodings = loaded.tokenizer.encode_batch(inputs, true).expect("encode");
        let batch = loaded.tokenizer.pad_batch(&encodings);
        (loaded, batch)
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn a_pass_cut_into_parts_answers_as_the_whole_pass() {
        for (name, head) in [
            ("bert-seqcls", Head::SequenceClassification),
            ("bert-tokcls", Head::TokenClassification),
            ("xlmr-qa", Head::QuestionAnswering),
        ] {
            let (loaded, batch) = padded(name, head);
            let whole = loaded.encoder.forward(&batch).expect("whole");
            for parts in [2, 3, 8] {
                let dir = fixture_dir(name);
                let config = crate::models::ModelConfig::from_dir(&dir).unwrap();
                let encoder = Encoder::load(&dir, &config, head, WeightDtype::F32).unwrap();
                let mut model = DataParallel::new(encoder, parts).unwrap();
                let cut = crate::infer::Model::forward(&mut model, &batch).expect("parts");
                assert_eq!(cut.dims(), whole.dims(), "{name} in {parts} parts");
                // Per-token outputs: each row's own tokens (the worker never returns padding).
                for (r, mask) in batch.attention_mask.iter().enumerate() {
                    let real = mask.iter().filter(|&&m| m != 0).count();
                    let row = |t: &Tensor| {
                        let t = t.get(r).unwrap();
                        if t.rank() >= 2 {
                            t.narrow(0, 0, real).unwrap()
                        } else {
                            t
                        }
                    };
                    assert_logits_close(&flat(&row(&cut)), &flat(&row(&whole)));
                }
            }
        }
        // Positions (fill-mask): each part answers its rows' positions, in order.
        let (loaded, batch) = padded("bert-mlm", Head::MaskedLm);
        let positions: Vec<(usize, usize)> = (0..batch.input_ids.len())
            .flat_map(|r| [(r, 0), (r, 1)])
            .collect();
        let whole = loaded
            .encoder
            .forward_positions(&batch, &positions)
            .expect("whole");
        let dir = fixture_dir("bert-mlm");
        let config = crate::models::ModelConfig::from_dir(&dir).unwrap();
        let mut model = DataParallel::new(
            Encoder::load(&dir, &config, Head::MaskedLm, WeightDtype::F32).unwrap(),
            2,
        )
        .unwrap();
        let cut = model.forward_positions(&batch, &positions).expect("parts");
        assert_eq!(cut.dims(), whole.dims());
        assert_logits_close(&flat(&cut), &flat(&whole));
    }

    fn fixture_dir(name: &str) -> std::path::PathBuf {
        crate::models::tests::fixture(name)
    }

    fn batch(lens: &[usize], len: usize) -> EncoderBatch {
        let row = |l: usize, fill: u32| {
            let mut v = vec![fill; l];
            v.resize(len, 0);
            v
        };
        EncoderBatch {
            input_ids: lens.iter().map(|&l| row(l, 7)).collect(),
            type_ids: lens.iter().map(|&l| row(l, 0)).collect(),
            attention_mask: lens.iter().map(|&l| row(l, 1)).collect(),
            extra_type_ids: Vec::new(),
        }
    }

    #[test]
    fn parts_are_consecutive_balanced_by_tokens_and_trimmed() {
        // 2 + 2 + 2 + 2 + 8 tokens: the long row is half the work, so it is a part alone.
        let b = batch(&[2, 2, 2, 2, 8], 8);
        let parts = split(&b, 2);
        let shape: Vec<(usize, usize, usize)> = parts
            .iter()
            .map(|(first, p)| (*first, p.input_ids.len(), p.input_ids[0].len()))
            .collect();
        assert_eq!(shape, [(0, 4, 2), (4, 1, 8)]);
        // Equal rows: equal halves, every row exactly once.
        let b = batch(&[5; 32], 5);
        let parts = split(&b, 2);
        assert_eq!(
            parts
                .iter()
                .map(|(f, p)| (*f, p.input_ids.len()))
                .collect::<Vec<_>>(),
            [(0, 16), (16, 16)]
        );
        // One row, or one part: the batch, trimmed to its longest row.
        let b = batch(&[3], 6);
        let parts = split(&b, 4);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1.attention_mask, vec![vec![1, 1, 1]]);
        let b = batch(&[1, 2, 3], 5);
        assert_eq!(split(&b, 1)[0].1.input_ids[2].len(), 3);
        // More parts than rows: one row each.
        assert_eq!(split(&batch(&[4, 4], 4), 8).len(), 2);
    }
}
