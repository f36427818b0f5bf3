//! Greedy and beam search on a toy model whose next-token probabilities depend on the last
//! token only; expected hypotheses computed by hand (see each test). Each case also runs on the
//! generation worker (`infer::seq2seq::EncoderDecoder`, continuous batching), which must answer
//! what the one-at-a-time search answers.

use candle_core::{Device, Tensor};

use super::*;
use crate::generate::EarlyStopping;
use crate::models::Result as ModelResult;
use crate::models::seq2seq::{DecodeRow, DecoderCache, Seq2SeqIds};

const START: u32 = 3;
const EOS: u32 = 0;

/// p(next | last): from START 1:.5 2:.4 0:.1; from 1: 0:.3 1:.35 2:.35; from 2: 0:.9 1:.05
/// 2:.05. START itself gets a negligible probability.
struct Toy {
    ids: Seq2SeqIds,
}

impl Toy {
    fn new() -> Self {
        Self {
            ids: Seq2SeqIds {
                decoder_start_token_id: START,
                vocab_size: 4,
                max_decoder_positions: None,
                max_encoder_positions: None,
            },
        }
    }
}

fn probs(last: u32) -> [f32; 4] {
    match last {
        START => [0.1, 0.5, 0.4, 1e-9],
        1 => [0.3, 0.35, 0.35, 1e-9],
        2 => [0.9, 0.05, 0.05, 1e-9],
        _ => [0.25, 0.25, 0.25, 0.25],
    }
}

impl Seq2SeqModel for Toy {
    fn ids(&self) -> &Seq2SeqIds {
        &self.ids
    }

    fn encode(&self, _ids: &[u32]) -> ModelResult<Tensor> {
        Ok(Tensor::zeros(
            (1, 1, 1),
            candle_core::DType::F32,
            &Device::Cpu,
        )?)
    }

    fn new_cache(&self) -> DecoderCache {
        DecoderCache::new(0)
    }

    fn decode_step(
        &self,
        tokens: &[u32],
        _encoder: &Tensor,
        cache: &mut DecoderCache,
    ) -> ModelResult<Tensor> {
        cache.len += 1;
        let data: Vec<f32> = tokens.iter().flat_map(|&t| probs(t).map(f32::ln)).collect();
        Ok(Tensor::from_vec(data, (tokens.len(), 4), &Device::Cpu)?)
    }

    fn decode_rows(&self, rows: &mut [DecodeRow<'_>]) -> ModelResult<Vec<Vec<f32>>> {
        Ok(rows
            .iter_mut()
            .map(|r| {
                r.cache.len += 1;
                probs(r.token).map(f32::ln).to_vec()
            })
            .collect())
    }
}

/// The same search on the generation worker, with the requests of `others` running beside it.
fn on_worker(config: &SearchConfig, others: &[SearchConfig]) -> Vec<Vec<u32>> {
    use crate::infer::seq2seq::EncoderDecoder;
    use crate::infer::{GenerateSpec, Infer, InferConfig};
    let infer = Infer::spawn_generator(
        EncoderDecoder::new(Box::new(Toy::new())),
        InferConfig {
            queue_size: 8,
            max_batch_rows: 8,
            max_batch_tokens: 1000,
            max_wait: std::time::Duration::ZERO,
            pad_id: 0,
            wedged_after: std::time::Duration::from_secs(60),
            #[cfg(feature = "test-gate")]
            gate_dir: None,
        },
        "toy-generation",
    )
    .expect("worker");
    let spec = |c: &SearchConfig| {
        let mut params = c.params.clone();
        params.decoder_start_token_id = Some(c.decoder_start_token_id);
        GenerateSpec {
            params,
            extra: c.extra.clone(),
            ..GenerateSpec::default()
        }
    };
    let beside: Vec<_> = others
        .iter()
        .map(|c| infer.generate(vec![vec![5]], spec(c)).expect("queued"))
        .collect();
    let out = infer
        .generate_all(vec![vec![5]], spec(config))
        .expect("generated");
    drop(beside);
    out.into_iter()
        .map(|tokens| {
            std::iter::once(config.decoder_start_token_id)
                .chain(tokens)
                .collect()
        })
        .collect()
}

fn config(num_beams: usize, max_length: usize) -> SearchConfig {
    SearchConfig {
        params: GenerationParams {
            max_length,
            default_max_length: false,
            num_beams,
            early_stopping: EarlyStopping::True,
            eos_token_ids: vec![EOS],
            ..GenerationParams::default()
        },
        decoder_start_token_id: START,
        extra: EncDecProcessors::default(),
    }
}

fn run(c: &SearchConfig) -> Vec<Vec<u32>> {
    let alone = generate::<()>(&Toy::new(), &[5], c, &mut || Ok(()))
        .unwrap()
        .unwrap();
    assert_eq!(on_worker(c, &[]), alone, "the worker alone");
    let others = [config(1, 7), config(3, 6), c.clone()];
    assert_eq!(on_worker(c, &others), alone, "the worker with others");
    alone
}

#[test]
fn forced_bos_and_bad_words_steer_the_decoder() {
    // Forcing 2 first, then banning EOS (a bad word that is not EOS-only here: [2, 0]).
    let mut c = config(1, 5);
    c.extra.forced_bos = Some(2);
    c.extra.bad_words_ids = vec![vec![2, 0]];
    // START→2 (forced), 2→0 banned after 2: best of 1 (.05) / 2 (.05): first index, 1.
    assert_eq!(run(&c)[0][..3], [START, 2, 1]);
}

#[test]
fn greedy_takes_the_most_likely_token_each_step_first_index_on_ties() {
    // START→1 (.5), 1→1 (.35, tie with 2: first index), ... until max_length.
    assert_eq!(run(&config(1, 5)), [vec![START, 1, 1, 1, 1]]);
}

#[test]
fn beam_search_finds_the_better_hypothesis_greedy_misses() {
    // Step 1 keeps [S,1] (.5) and [S,2] (.4). Step 2: [S,2,0] = .36 finishes, score
    // ln(.36)/2; running [S,1,1], [S,1,2] (.175 each). Step 3: [S,1,2,0] = .1575 finishes,
    // score ln(.1575)/3. Both slots finished and early_stopping=true: stop.
    let mut c = config(2, 10);
    c.params.num_return_sequences = 2;
    assert_eq!(run(&c), [vec![START, 2, 0], vec![START, 1, 2, 0]]);
}

#[test]
fn early_stopping_false_stops_when_no_running_beam_can_win() {
    // After step 3 the best running beam ([S,1,1,1] = .06125, ln/3 = -0.93) cannot beat the
    // worst finished one (ln(.1575)/3 = -0.62): same answer as early_stopping=true here.
    let mut c = config(2, 10);
    c.params.early_stopping = EarlyStopping::Heuristic;
    assert_eq!(run(&c), [vec![START, 2, 0]]);
}

#[test]
fn length_penalty_changes_the_ranking_of_finished_hypotheses() {
    // With length_penalty 0 the score is the plain log-probability: [S,2,0] (.36) beats
    // [S,1,2,0] (.1575) still; with a large penalty longer hypotheses gain: ln(.36)/2^4 =
    // -0.064 vs ln(.1575)/3^4 = -0.0228, so [S,1,2,0] wins.
    let mut c = config(2, 10);
    c.params.num_return_sequences = 2;
    c.params.length_penalty = 0.0;
    assert_eq!(run(&c)[0], [START, 2, 0]);
    c.params.length_penalty = 4.0;
    assert_eq!(run(&c), [vec![START, 1, 2, 0], vec![START, 2, 0]]);
}

#[test]
fn max_length_finishes_every_beam() {
    // max_length 2: every continuation of step 1 hits the limit; the two best are returned.
    let mut c = config(2, 2);
    c.params.num_return_sequences = 2;
    assert_eq!(run(&c), [vec![START, 1], vec![START, 2]]);
}

#[test]
fn min_length_and_no_repeat_ngram_apply_inside_beam_search() {
    // min_length 4 bans EOS until 4 ids: [S,2,0] cannot finish at step 2.
    let mut c = config(2, 6);
    c.params.min_length = 4;
    let best = &run(&c)[0];
    assert!(best.len() >= 4, "{best:?}");
    // no_repeat_ngram_size 1 forbids repeating any token: no hypothesis repeats one.
    let mut c = config(2, 4);
    c.params.no_repeat_ngram_size = 1;
    c.params.num_return_sequences = 2;
    for h in run(&c) {
        let mut seen = h.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), h.len(), "{h:?}");
    }
}

#[test]
fn a_failing_check_stops_the_search_before_the_next_step() {
    let mut steps = 0;
    let out = generate(&Toy::new(), &[5], &config(2, 10), &mut || {
        steps += 1;
        if steps > 2 { Err("cancelled") } else { Ok(()) }
    })
    .unwrap();
    assert_eq!(out, Err("cancelled"));
    assert_eq!(steps, 3);
}
