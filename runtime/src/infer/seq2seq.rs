//! Encoder-decoder models (T5, BART, Marian) as a [`Generator`]: they run on the same
//! generation worker as decoder-only models (`generate.rs`), so concurrent requests share
//! decoder steps (continuous batching: a request joins the running batch at the next step and
//! leaves when done, each with its own parameters; beams are rows), a list input is one
//! request, tokens go out through the queue's stream sender, and a caller that leaves stops its
//! generation at the next step.
//!
//! Starting a sequence encodes its source once and runs the first decoder step (the decoder
//! start token) alone: that step computes the cross-attention keys/values of every decoder
//! layer, which then stay in the sequence's cache (shared, not copied, by its beams and its
//! other return sequences) for the rest of the generation; the encoder output is not kept.
//! Every later step runs the running rows of all requests together
//! ([`Seq2SeqModel::decode_rows`]).

use super::generate::{GenerateSpec, Generator, Next, Start};
use crate::models::ModelError;
use crate::models::seq2seq::{DecodeRow, DecoderCache, Seq2SeqModel};

/// An encoder-decoder model on the generation worker.
pub struct EncoderDecoder {
    model: Box<dyn Seq2SeqModel>,
}

impl EncoderDecoder {
    /// Wraps `model`.
    pub fn new(model: Box<dyn Seq2SeqModel>) -> Self {
        Self { model }
    }
}

impl Generator for EncoderDecoder {
    type Cache = DecoderCache;

    /// Encodes `prompt` (the source ids) and runs the decoder start token: the ids the
    /// processors see are `[decoder_start_token_id]`.
    fn start(
        &mut self,
        prompt: &[u32],
        spec: &GenerateSpec,
    ) -> Result<Start<DecoderCache>, ModelError> {
        let start = spec
            .params
            .decoder_start_token_id
            .unwrap_or(self.model.ids().decoder_start_token_id);
        let encoder = self.model.encode(prompt)?;
        let mut cache = self.model.new_cache();
        let logits = self.model.decode_step(&[start], &encoder, &mut cache)?;
        let rows = logits.to_vec2::<f32>().map_err(ModelError::Candle)?;
        Start::from_pass(cache, vec![start], rows)
    }

    fn step(&mut self, rows: &mut [Next<'_, DecoderCache>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut rows: Vec<DecodeRow<'_>> = rows
            .iter_mut()
            .map(|r| DecodeRow {
                token: r.token,
                cache: &mut *r.cache,
            })
            .collect();
        self.model.decode_rows(&mut rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelConfig;
    use crate::models::seq2seq;
    use crate::models::tests::assert_logits_close as assert_close;

    fn model(name: &str) -> Box<dyn Seq2SeqModel> {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/conformance/models")
            .join(name);
        let config = ModelConfig::from_dir(&dir).expect("config");
        seq2seq::load(&dir, &config).expect("model")
    }

    /// Rows of different source lengths, at different decoder positions, stepped together give
    /// each row's logits alone.
    fn rows_stepped_together_equal_rows_alone(name: &str) {
        let m = model(name);
        let start = m.ids().decoder_start_token_id;
        let sources: [&[u32]; 3] = [&[5, 6, 7, 2], &[8, 9, 10, 11, 12, 13, 14, 2], &[15, 2]];
        // Row i has decoded i + 1 tokens before the shared step.
        let mut caches: Vec<DecoderCache> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let enc = m.encode(s).expect("encode");
                let mut c = m.new_cache();
                m.decode_step(&[start], &enc, &mut c).expect("start");
                for t in 0..i as u32 {
                    m.decode_step(&[20 + t], &enc, &mut c).expect("step");
                }
                c
            })
            .collect();
        let mut alone = caches.clone();
        let next = [40u32, 41, 42];
        let mut rows: Vec<DecodeRow<'_>> = caches
            .iter_mut()
            .zip(next)
            .map(|(cache, token)| DecodeRow { token, cache })
            .collect();
        let together = m.decode_rows(&mut rows).expect("together");
        for ((cache, token), row) in alone.iter_mut().zip(next).zip(&together) {
            let single = m
                .decode_rows(&mut [DecodeRow { token, cache }])
                .expect("alone");
            assert_close(&single[0], row);
        }
        for (i, c) in caches.iter().enumerate() {
            assert_eq!(c.len, i + 2);
        }
    }

    #[test]
    fn t5_rows_stepped_together_equal_rows_alone() {
        rows_stepped_together_equal_rows_alone("t5-t2t");
    }

    #[test]
    fn bart_rows_stepped_together_equal_rows_alone() {
        rows_stepped_together_equal_rows_alone("bart-sum");
    }

    #[test]
    fn marian_rows_stepped_together_equal_rows_alone() {
        rows_stepped_together_equal_rows_alone("marian-mt");
    }
}
