//! Decoder-only language models for generation ([`CausalLm`]: GPT-2 in `gpt2.rs`, the Llama
//! family in `llama.rs`) and what they share: the per-sequence key/value cache ([`KvCache`]) and
//! causal attention over it ([`attend`]).
//!
//! A forward pass takes any mix of rows: prompts of any length and decode steps of one token
//! (continuous batching: new requests are started in the same pass as the running rows' next
//! tokens). The new tokens of all rows are laid end to end as one `[N, hidden]` matrix, so each
//! projection reads its weights once a pass for every row ([`super::kernels::matmul_panels`]);
//! attention runs per row over that row's own cache. Every output of a row is computed from that
//! row's data only, in an order that does not depend on the rows beside it, so a row's answer is
//! the same bit for bit alone or in any batch.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use rayon::prelude::*;

use super::{ModelConfig, ModelError, Result, WeightDtype, WeightFiles};

/// The keys and values of one sequence, per layer: `[len, kv_heads × head_dim]` row-major
/// (token-major, so a step appends in place), and the ids they were computed from (a longrope
/// model recomputes them all once: see [`super::llama::Llama::forward`]).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    tokens: Vec<u32>,
}

/// One layer's cached keys and values, `[len, width]` each.
#[derive(Debug, Clone, Default)]
struct LayerKv {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    /// Tokens already in the cache (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids the cache holds, in order.
    pub(crate) fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// One row of a forward pass: the tokens that follow the row's cache.
#[derive(Debug)]
pub struct Step<'a> {
    /// New tokens (the prompt at first, then one token a step).
    pub tokens: &'a [u32],
    /// The row's cache, extended by the pass.
    pub cache: &'a mut KvCache,
}

/// The new tokens of a pass laid end to end: row `r` owns tokens `starts[r]..starts[r + 1]`.
#[derive(Debug)]
pub(crate) struct Pass {
    /// Every new token, row after row.
    pub(crate) ids: Vec<u32>,
    /// The position of each of them.
    pub(crate) positions: Vec<u32>,
    /// Where each row's tokens start, and the total at the end (`rows + 1` entries).
    starts: Vec<usize>,
    /// Each row's cached length before the pass.
    pasts: Vec<usize>,
}

impl Pass {
    /// Lays out `steps`; every row takes at least one token. Nothing is changed on error.
    pub(crate) fn new(steps: &[Step<'_>]) -> Result<Self> {
        if steps.is_empty() || steps.iter().any(|s| s.tokens.is_empty()) {
            return Err(ModelError::BadBatch {
                reason: "every row of a pass takes at least one token".into(),
            });
        }
        let mut pass = Self {
            ids: Vec::new(),
            positions: Vec::new(),
            starts: vec![0],
            pasts: Vec::with_capacity(steps.len()),
        };
        for s in steps {
            let past = s.cache.len;
            pass.ids.extend_from_slice(s.tokens);
            pass.positions
                .extend((0..s.tokens.len()).map(|i| (past + i) as u32));
            pass.starts.push(pass.ids.len());
            pass.pasts.push(past);
        }
        Ok(pass)
    }

    /// The number of new tokens, all rows together.
    pub(crate) fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// Each row's number of new tokens.
    pub(crate) fn lens(&self) -> Vec<usize> {
        self.starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// The index of each row's last new token (the one whose logits predict the next).
    pub(crate) fn last_tokens(&self, device: &Device) -> Result<Tensor> {
        let last: Vec<u32> = self.starts[1..].iter().map(|&e| (e - 1) as u32).collect();
        let n = last.len();
        Ok(Tensor::from_vec(last, n, device)?)
    }
}

/// `width` values a token, at `offset` in rows of `stride` (a view into a projection's output,
/// e.g. the keys inside GPT-2's fused Q/K/V).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows<'a> {
    /// `[N, stride]` row-major.
    pub(crate) data: &'a [f32],
    pub(crate) stride: usize,
    pub(crate) offset: usize,
}

impl<'a> Rows<'a> {
    fn row(&self, i: usize, width: usize) -> &'a [f32] {
        let at = i * self.stride + self.offset;
        &self.data[at..at + width]
    }
}

/// The attention of a model: head counts, scale and sliding window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    /// Multiplies `q · k`.
    pub(crate) scale: f32,
    /// Mistral, Phi-3, Qwen2: the query at position `i` sees the keys at positions
    /// `i - window < j <= i` only, as transformers 4.51's mask does.
    pub(crate) window: Option<usize>,
}

/// Below this many multiply-adds a layer's attention stays on the calling thread.
const ATTEND_PARALLEL_MIN: usize = 1 << 15;

/// Causal attention of one layer for every row of `pass`: appends each row's new keys and
/// values (`k`, `v`: `[N, kv_heads × head_dim]` views) to its cache for `layer`, then, for each
/// new token and head, `softmax(q · kᵀ · scale) · v` over the keys the token may see (its own
/// row's, up to its position). Returns `[N, heads × head_dim]`.
///
/// Each (token, head) output is computed from its row's cache alone, in key order: it does not
/// depend on the other rows of the pass nor on the thread split.
pub(crate) fn attend(
    pass: &Pass,
    caches: &mut [&mut KvCache],
    layer: usize,
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    a: Heads,
) -> Vec<f32> {
    let d = a.head_dim;
    let kv_width = a.kv_heads * d;
    let group = a.heads / a.kv_heads;
    for (r, cache) in caches.iter_mut().enumerate() {
        if cache.layers.len() <= layer {
            cache.layers.resize_with(layer + 1, LayerKv::default);
        }
        let kv = &mut cache.layers[layer];
        // A pass that failed half-way leaves nothing behind: the cache ends at `past`.
        kv.keys.truncate(pass.pasts[r] * kv_width);
        kv.values.truncate(pass.pasts[r] * kv_width);
        for i in pass.starts[r]..pass.starts[r + 1] {
            kv.keys.extend_from_slice(k.row(i, kv_width));
            kv.values.extend_from_slice(v.row(i, kv_width));
        }
    }
    // (row, position) of each new token.
    let mut owner = Vec::with_capacity(pass.tokens());
    for r in 0..caches.len() {
        owner.extend(
            (pass.starts[r]..pass.starts[r + 1]).map(|i| (r, pass.pasts[r] + i - pass.starts[r])),
        );
    }
    let layers: Vec<&LayerKv> = caches.iter().map(|c| &c.layers[layer]).collect();
    let mut out = vec![0f32; pass.tokens() * a.heads * d];
    let one = |(at, out): (usize, &mut [f32])| {
        let (token, head) = (at / a.heads, at % a.heads);
        let (r, p) = owner[token];
        let lo = a.window.map_or(0, |w| (p + 1).saturating_sub(w));
        let kv = layers[r];
        let off = (head / group) * d;
        let qh = q.row(token, a.heads * d);
        let qh = &qh[head * d..(head + 1) * d];
        let mut scores: Vec<f32> = (lo..=p)
            .map(|j| dot(qh, &kv.keys[j * kv_width + off..j * kv_width + off + d]) * a.scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (j, s) in (lo..=p).zip(&scores) {
            let w = s / sum;
            let vj = &kv.values[j * kv_width + off..j * kv_width + off + d];
            for (o, x) in out.iter_mut().zip(vj) {
                *o += w * x;
            }
        }
    };
    let work: usize = owner.iter().map(|&(_, p)| p + 1).sum::<usize>() * a.heads * d;
    if work < ATTEND_PARALLEL_MIN || rayon::current_num_threads() == 1 {
        out.chunks_mut(d).enumerate().for_each(one);
    } else {
        out.par_chunks_mut(d)
            .enumerate()
            .with_min_len(4)
            .for_each(one);
    }
    out
}

/// `a · b`, summed in 16 interleaved lanes (vectorised), then across them.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, at) = a.as_chunks::<16>();
    let (bc, bt) = b.as_chunks::<16>();
    let mut acc = [0f32; 16];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = at.iter().zip(bt).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Marks the rows' caches as `tokens` longer after a pass.
pub(crate) fn advance(steps: &mut [Step<'_>]) {
    for s in steps {
        s.cache.len += s.tokens.len();
        s.cache.tokens.extend_from_slice(s.tokens);
    }
}

/// The rows of `[B, V]` logits.
pub(crate) fn logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2()?)
}

/// Softmax-free helper: `x * rsqrt(mean(x²) + eps) * weight` (Llama's `RMSNorm`, in f32).
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_div(&(variance + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(weight)?)
}

/// A decoder-only language model with a KV cache.
#[derive(Debug)]
pub enum CausalLm {
    /// `gpt2`.
    Gpt2(super::gpt2::Gpt2),
    /// `llama`, `mistral`, `qwen2`, `phi3`, `gemma`.
    Llama(super::llama::Llama),
}

impl CausalLm {
    /// Whether `model_type` is served by [`CausalLm`].
    pub fn supports(model_type: &str) -> bool {
        matches!(
            model_type,
            "gpt2" | "llama" | "mistral" | "qwen2" | "phi3" | "gemma"
        )
    }

    /// Loads the model of `dir` (CPU; `dtype` is how the weights are stored).
    pub fn load(dir: &Path, config: &ModelConfig, dtype: WeightDtype) -> Result<Self> {
        let files = WeightFiles::find(dir)?;
        let vb = files.var_builder(DType::F32, &Device::Cpu)?;
        match config.model_type.as_str() {
            "gpt2" => Ok(Self::Gpt2(super::gpt2::Gpt2::load(
                &vb,
                &config.raw,
                dtype,
            )?)),
            "llama" | "mistral" | "qwen2" | "phi3" | "gemma" => Ok(Self::Llama(
                super::llama::Llama::load(&vb, &config.raw, &config.model_type, dtype)?,
            )),
            other => Err(ModelError::UnsupportedArchitecture {
                model_type: other.to_owned(),
            }),
        }
    }

    /// Runs each row's new tokens after its cache and returns each row's last logits. One row
    /// may take any number of tokens (a prompt); several rows take one token each.
    pub fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        super::on_pool(|| match self {
            Self::Gpt2(m) => m.forward(steps),
            Self::Llama(m) => m.forward(steps),
        })
    }

    /// The longest sequence the model can take (learned positions), if bounded.
    pub fn max_positions(&self) -> Option<usize> {
        match self {
            Self::Gpt2(m) => Some(m.max_positions()),
            Self::Llama(m) => m.max_positions(),
        }
    }
}

/// Reads a `usize` key of `config.json`.
pub(crate) fn config_usize(raw: &serde_json::Value, key: &str) -> Result<usize> {
    raw.get(key)
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| ModelError::ConfigValue {
            key: key.to_owned(),
            reason: "missing or not a non-negative integer".into(),
        })
}

/// Reads an `f64` key of `config.json`, with a default.
pub(crate) fn config_f64(raw: &serde_json::Value, key: &str, default: f64) -> f64 {
    raw.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::tests::assert_logits_close as assert_close;

    fn model(name: &str) -> CausalLm {
        model_as(name, WeightDtype::F32)
    }

    fn model_as(name: &str, dtype: WeightDtype) -> CausalLm {
        let dir = super::super::tests::fixture(name);
        let config = ModelConfig::from_dir(&dir).expect("config");
        CausalLm::load(&dir, &config, dtype).expect("model")
    }

    fn run(m: &CausalLm, tokens: &[u32], cache: &mut KvCache) -> Vec<f32> {
        m.forward(&mut [Step { tokens, cache }])
            .expect("forward")
            .remove(0)
    }

    /// Runs each prompt into its own cache, then `next` (one token a row) as one batched step;
    /// checks each row's logits against the same token run alone on a copy of its cache (bit
    /// for bit) and every cache's length. Returns the batched logits.
    fn batched_step_answers_as_alone(
        m: &CausalLm,
        prompts: &[&[u32]],
        next: &[u32],
    ) -> Vec<Vec<f32>> {
        let mut caches = prompted(m, prompts);
        let mut alone = caches.clone();
        let mut steps: Vec<Step<'_>> = caches
            .iter_mut()
            .zip(next)
            .map(|(cache, t)| Step {
                tokens: std::slice::from_ref(t),
                cache,
            })
            .collect();
        let batched = m.forward(&mut steps).expect("batched");
        for ((cache, t), b) in alone.iter_mut().zip(next).zip(&batched) {
            assert_eq!(&run(m, std::slice::from_ref(t), cache), b);
        }
        for (c, p) in caches.iter().zip(prompts) {
            assert_eq!(c.len(), p.len() + 1);
        }
        batched
    }

    /// One cache a prompt, each filled by running its prompt alone.
    fn prompted(m: &CausalLm, prompts: &[&[u32]]) -> Vec<KvCache> {
        prompts
            .iter()
            .map(|p| {
                let mut c = KvCache::default();
                run(m, p, &mut c);
                c
            })
            .collect()
    }

    /// A new prompt run in the same pass as decode steps of running rows (continuous batching
    /// admitting a request): the prompt's logits, every row's logits, and the next step after
    /// the pass are the same bit for bit as each row run alone.
    fn mixed_pass_answers_as_alone(m: &CausalLm, prompts: &[&[u32]], next: &[u32], new: &[u32]) {
        let mut caches = prompted(m, prompts);
        let mut alone = caches.clone();
        let mut fresh = KvCache::default();
        let mut steps = vec![Step {
            tokens: new,
            cache: &mut fresh,
        }];
        steps.extend(caches.iter_mut().zip(next).map(|(cache, t)| Step {
            tokens: std::slice::from_ref(t),
            cache,
        }));
        let mixed = m.forward(&mut steps).expect("mixed pass");
        let mut new_alone = KvCache::default();
        assert_eq!(mixed[0], run(m, new, &mut new_alone), "the new prompt");
        for ((cache, t), b) in alone.iter_mut().zip(next).zip(&mixed[1..]) {
            assert_eq!(&run(m, std::slice::from_ref(t), cache), b);
        }
        assert_eq!(fresh.len(), new.len());
        assert_eq!(fresh.tokens(), new);
        // The caches the mixed pass left answer the next step as the caches run alone.
        assert_eq!(run(m, &[50], &mut fresh), run(m, &[50], &mut new_alone));
        for (c, a) in caches.iter_mut().zip(&mut alone) {
            assert_eq!(run(m, &[51], c), run(m, &[51], a));
        }
    }

    /// Rows of different lengths decoded in one batched step (keys left-padded and masked,
    /// each at its own position) give the logits each row gives alone, and a prompt run at once
    /// gives the logits of the same tokens run one by one.
    fn batched_step_equals_rows_alone(name: &str) {
        batched_step_equals_rows_alone_as(name, WeightDtype::F32);
    }

    fn batched_step_equals_rows_alone_as(name: &str, dtype: WeightDtype) {
        let m = model_as(name, dtype);
        let prompts: [&[u32]; 3] = [&[5, 6, 7], &[8, 9, 10, 11, 12, 13, 14], &[15]];
        batched_step_answers_as_alone(&m, &prompts, &[40, 41, 42]);
        mixed_pass_answers_as_alone(&m, &prompts, &[40, 41, 42], &[20, 21, 22, 23, 24]);
        // Prompt at once == token by token.
        let mut whole = KvCache::default();
        let at_once = run(&m, prompts[1], &mut whole);
        let mut stepwise = KvCache::default();
        let mut last = Vec::new();
        for t in prompts[1] {
            last = run(&m, std::slice::from_ref(t), &mut stepwise);
        }
        assert_close(&at_once, &last);
    }

    #[test]
    fn gpt2_batched_step_equals_rows_alone() {
        batched_step_equals_rows_alone("gpt2-gen");
    }

    #[test]
    fn llama_batched_step_equals_rows_alone() {
        batched_step_equals_rows_alone("llama-gen");
    }

    /// `--dtype bfloat16`: rows still answer as alone, bit for bit, in decode batches and in
    /// passes that start new prompts; the logits stay near the f32 ones.
    #[test]
    fn bf16_rows_answer_as_alone_and_near_f32() {
        for name in ["gpt2-gen", "llama-gen", "phi3-gen", "gemma-gen"] {
            batched_step_equals_rows_alone_as(name, WeightDtype::Bf16);
            let prompt: Vec<u32> = (5..=20).collect();
            let exact = run(&model(name), &prompt, &mut KvCache::default());
            let half = run(
                &model_as(name, WeightDtype::Bf16),
                &prompt,
                &mut KvCache::default(),
            );
            let worst = exact
                .iter()
                .zip(&half)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let scale = exact.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(worst > 0.0, "{name}: bfloat16 changed nothing");
            assert!(
                worst < 0.05 * scale.max(1.0),
                "{name}: {worst} (scale {scale})"
            );
        }
    }

    /// Expected: `tests/fixtures/conformance/tools/phi3_longrope_switch.py` (transformers
    /// 4.51.3's `generate` on phi3-gen, greedy, ids 5..=36): the first 6 logits after the
    /// 32-token prompt (short factors), and after the first new token (805), the step at which
    /// transformers drops the cache and runs the 33 tokens again with the long factors.
    #[test]
    fn phi3_longrope_switch_recomputes_the_cache_as_transformers() {
        let m = model("phi3-gen");
        let prompt: Vec<u32> = (5..=36).collect();
        let mut cache = KvCache::default();
        let first = run(&m, &prompt, &mut cache);
        assert_close(
            &first[..6],
            &[
                0.071_799, -0.937_041, 0.833_711, -0.569_533, 0.683_2, 0.694_223,
            ],
        );
        let best = (0..first.len())
            .max_by(|&a, &b| first[a].total_cmp(&first[b]))
            .unwrap();
        assert_eq!(best, 805);
        let expected = [
            2.369_3, -0.140_063, -0.384_71, -0.390_818, -0.344_386, 0.499_362,
        ];
        let mut kept = cache.clone();
        let step = run(&m, &[805], &mut cache);
        assert_close(&step[..6], &expected);
        assert_eq!(cache.len(), 33);
        assert_eq!(cache.tokens().len(), 33);
        // Without the recomputation (the short-factor keys kept) the answer differs.
        let CausalLm::Llama(llama) = &m else {
            panic!("phi3-gen is a Llama-family model")
        };
        let stale = llama
            .forward_rows(&mut [Step {
                tokens: &[805],
                cache: &mut kept,
            }])
            .unwrap()
            .remove(0);
        assert!(
            (stale[0] - step[0]).abs() > 1e-3,
            "{} vs {}",
            stale[0],
            step[0]
        );
        // The next step keeps the recomputed cache.
        let mut whole = KvCache::default();
        let mut ids = prompt.clone();
        ids.extend([805, 1246]);
        let at_once = run(&m, &ids, &mut whole);
        assert_close(&run(&m, &[1246], &mut cache), &at_once);

        // Continuous batching: a row that crosses beside rows that do not (one short of the
        // switch, one past it) answers as each row alone.
        let prompts: [&[u32]; 3] = [&prompt, &prompt[..20], &ids];
        let batched = batched_step_answers_as_alone(&m, &prompts, &[805, 41, 42]);
        assert_close(&batched[0][..6], &expected);
    }

    /// Expected: `tests/fixtures/rope/make_llama_yarn.py` (transformers 4.51.3's
    /// `LlamaForCausalLM` with `rope_scaling` yarn, factor 4 over 32 original positions, on its
    /// random weights): the first 6 logits after ids 5..=44, the prompt at once and stepwise.
    #[test]
    fn llama_yarn_matches_transformers() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/rope/llama-yarn");
        let mut config = ModelConfig::from_dir(&dir).expect("config");
        let m = CausalLm::load(&dir, &config, WeightDtype::F32).expect("model");
        let prompt: Vec<u32> = (5..=44).collect();
        let expected = [
            1.081_028, 0.212_519, -0.614_073, -0.952_284, -0.084_102, -1.387_002,
        ];
        let at_once = run(&m, &prompt, &mut KvCache::default());
        assert_close(&at_once[..6], &expected);
        let mut cache = KvCache::default();
        run(&m, &prompt[..30], &mut cache);
        for t in &prompt[30..39] {
            run(&m, std::slice::from_ref(t), &mut cache);
        }
        assert_close(&run(&m, &prompt[39..], &mut cache)[..6], &expected);
        // Without the scaling the answer differs: yarn is applied.
        config.raw["rope_scaling"] = serde_json::Value::Null;
        let plain = CausalLm::load(&dir, &config, WeightDtype::F32).expect("plain");
        let unscaled = run(&plain, &prompt, &mut KvCache::default());
        assert!((unscaled[0] - at_once[0]).abs() > 1e-3);
    }

    /// Expected: `tests/fixtures/qwen2-window/make_qwen2_window.py` (transformers 4.51.3's
    /// `Qwen2ForCausalLM`, sdpa, `use_sliding_window` true, `max_window_layers` 1,
    /// `sliding_window` 8): the first 6 logits after ids 5..=24. transformers masks with the
    /// window in every layer (the same logits with `use_sliding_window` false), and differently
    /// without a window.
    #[test]
    fn qwen2_sliding_window_matches_transformers() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/qwen2-window/model");
        let mut config = ModelConfig::from_dir(&dir).expect("config");
        let prompt: Vec<u32> = (5..=24).collect();
        let windowed = [
            -2.253_068, 0.582_412, -0.744_8, -1.250_359, 0.304_106, -0.771_472,
        ];
        let m = CausalLm::load(&dir, &config, WeightDtype::F32).expect("model");
        assert_close(&run(&m, &prompt, &mut KvCache::default())[..6], &windowed);
        let mut cache = KvCache::default();
        run(&m, &prompt[..12], &mut cache);
        for t in &prompt[12..19] {
            run(&m, std::slice::from_ref(t), &mut cache);
        }
        assert_close(&run(&m, &prompt[19..], &mut cache)[..6], &windowed);
        config.raw["use_sliding_window"] = serde_json::json!(false);
        let off =
            CausalLm::load(&dir, &config, WeightDtype::F32).expect("use_sliding_window false");
        assert_close(&run(&off, &prompt, &mut KvCache::default())[..6], &windowed);
        config.raw["sliding_window"] = serde_json::Value::Null;
        let none = CausalLm::load(&dir, &config, WeightDtype::F32).expect("no window");
        assert_close(
            &run(&none, &prompt, &mut KvCache::default())[..6],
            &[
                -1.729_236, 1.936_11, -0.382_524, -0.559_591, -0.758_925, -1.701_785,
            ],
        );
    }

    /// A Mistral `config.json` without `sliding_window` gets `MistralConfig`'s default of 4096
    /// (transformers 4.51.3), an explicit null none; Phi-3 without it has none.
    #[test]
    fn mistral_sliding_window_defaults_to_4096_as_mistral_config() {
        let cfg = |v: serde_json::Value| v;
        assert_eq!(
            super::super::llama::sliding_window_of(&cfg(serde_json::json!({})), "mistral"),
            Some(4096)
        );
        assert_eq!(
            super::super::llama::sliding_window_of(
                &cfg(serde_json::json!({"sliding_window": null})),
                "mistral"
            ),
            None
        );
        assert_eq!(
            super::super::llama::sliding_window_of(&cfg(serde_json::json!({})), "phi3"),
            None
        );
        assert_eq!(
            super::super::llama::sliding_window_of(
                &cfg(serde_json::json!({"sliding_window": 8})),
                "mistral"
            ),
            Some(8)
        );
    }

    /// llama-gen's weights as Mistral with a 4-token sliding window.
    fn windowed() -> CausalLm {
        let dir = super::super::tests::fixture("llama-gen");
        let mut config = ModelConfig::from_dir(&dir).expect("config");
        config.model_type = "mistral".into();
        config.raw["sliding_window"] = serde_json::json!(4);
        CausalLm::load(&dir, &config, WeightDtype::F32).expect("model")
    }

    /// Expected: transformers 4.51.3's `MistralForCausalLM` (eager attention) on llama-gen's
    /// weights with `sliding_window` 4, the first logits after ids 5..=14, the prompt at once
    /// and its last token as a cached step.
    #[test]
    fn mistral_sliding_window_matches_transformers_at_once_and_stepwise() {
        let m = windowed();
        let prompt: Vec<u32> = (5..=14).collect();
        let expected = [
            3.306_918_6,
            -0.711_22,
            -2.640_805,
            0.081_449_8,
            0.391_273_8,
            0.006_373_6,
        ];
        let at_once = run(&m, &prompt, &mut KvCache::default());
        assert_close(&at_once[..6], &expected);
        let mut cache = KvCache::default();
        run(&m, &prompt[..9], &mut cache);
        let step = run(&m, &prompt[9..], &mut cache);
        assert_close(&step[..6], &expected);
        // Without the window the answer differs: the window is applied.
        let plain = model("llama-gen");
        let unwindowed = run(&plain, &prompt, &mut KvCache::default());
        assert!((unwindowed[0] - at_once[0]).abs() > 1e-3);
        // Rows of different lengths stepped together, each windowed at its own position.
        let mut caches: Vec<KvCache> = [&prompt[..9], &prompt[..2]]
            .iter()
            .map(|p| {
                let mut c = KvCache::default();
                run(&m, p, &mut c);
                c
            })
            .collect();
        let mut alone = caches.clone();
        let next = [14u32, 7];
        let mut steps: Vec<Step<'_>> = caches
            .iter_mut()
            .zip(&next)
            .map(|(cache, t)| Step {
                tokens: std::slice::from_ref(t),
                cache,
            })
            .collect();
        let batched = m.forward(&mut steps).expect("batched");
        assert_close(&batched[0][..6], &expected);
        for ((cache, t), b) in alone.iter_mut().zip(&next).zip(&batched) {
            assert_close(&run(&m, std::slice::from_ref(t), cache), b);
        }
    }
}
