//! Decoder-only language models for generation ([`CausalLm`]: GPT-2 in `gpt2.rs`, the Llama
//! family in `llama.rs`) and what they share: the per-sequence key/value cache ([`KvCache`]) and
//! causal attention over it, for one sequence of any length or for a batch of sequences of
//! different lengths that each take one token (a decode step of continuous batching: each row
//! keeps its own cache; keys are padded on the left and masked, so a row's answer does not
//! depend on the rows beside it).

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};

use super::{ModelConfig, ModelError, Result, WeightDtype, WeightFiles};

/// The keys and values of one sequence: `[1, kv_heads, len, head_dim]` per layer, and the ids
/// they were computed from (a longrope model recomputes them all once: see
/// [`super::llama::Llama::forward`]).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    tokens: Vec<u32>,
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

/// Causal attention of a pass over the rows' caches, for one layer.
///
/// `q` is `[B, heads, T, d]`, `k`/`v` `[B, kv_heads, T, d]` (the new tokens); each row's cache
/// for `layer` is extended with its `k`/`v`. `B > 1` needs `T == 1`. Returns `[B, heads, T, d]`.
/// With a sliding `window` (Mistral, Phi-3), the query at position `i` sees the keys at
/// positions `i - window < j <= i` only, as transformers 4.51's mask does.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    caches: &mut [&mut KvCache],
    layer: usize,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    let (b, heads, t, _) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let mut keys = Vec::with_capacity(b);
    let mut values = Vec::with_capacity(b);
    let mut pasts = Vec::with_capacity(b);
    for (i, cache) in caches.iter_mut().enumerate() {
        if cache.layers.len() <= layer {
            cache.layers.resize(layer + 1, None);
        }
        let (ki, vi) = (k.narrow(0, i, 1)?, v.narrow(0, i, 1)?);
        let (ki, vi, past) = match &cache.layers[layer] {
            Some((pk, pv)) => (
                Tensor::cat(&[pk, &ki], 2)?,
                Tensor::cat(&[pv, &vi], 2)?,
                pk.dim(2)?,
            ),
            None => (ki.contiguous()?, vi.contiguous()?, 0),
        };
        cache.layers[layer] = Some((ki.clone(), vi.clone()));
        keys.push(ki);
        values.push(vi);
        pasts.push(past);
    }
    let total = pasts.iter().max().copied().unwrap_or(0) + t;
    let (keys, values, mask) = if b == 1 {
        let past = pasts[0];
        let windowed = window.is_some_and(|w| past + t > w);
        let mask = (t > 1 || windowed)
            .then(|| causal_mask(t, past, window, q.device()))
            .transpose()?;
        (keys.remove(0), values.remove(0), mask)
    } else {
        if t != 1 {
            return Err(ModelError::BadBatch {
                reason: format!("a batched step takes one token a row, got {t}"),
            });
        }
        // Left-pad every row's keys/values to the longest and mask the padding.
        let mut mask = vec![0f32; b * total];
        let pad = |x: &Tensor, n: usize| -> candle_core::Result<Tensor> {
            if n == 0 {
                return Ok(x.clone());
            }
            let (_, h, _, d) = x.dims4()?;
            let zeros = Tensor::zeros((1, h, n, d), x.dtype(), x.device())?;
            Tensor::cat(&[&zeros, x], 2)
        };
        let mut padded_k = Vec::with_capacity(b);
        let mut padded_v = Vec::with_capacity(b);
        for i in 0..b {
            let n = total - (pasts[i] + 1);
            // Padding, and the keys the window has left behind (positions <= past - window).
            let hidden = n + window.map_or(0, |w| (pasts[i] + 1).saturating_sub(w));
            mask[i * total..i * total + hidden].fill(f32::NEG_INFINITY);
            padded_k.push(pad(&keys[i], n)?);
            padded_v.push(pad(&values[i], n)?);
        }
        let mask = Tensor::from_vec(mask, (b, 1, 1, total), q.device())?;
        (
            Tensor::cat(&padded_k, 0)?,
            Tensor::cat(&padded_v, 0)?,
            Some(mask),
        )
    };
    let (keys, values) = (
        repeat_kv(&keys, heads / kv_heads)?,
        repeat_kv(&values, heads / kv_heads)?,
    );
    let scores = (q.matmul(&keys.t()?)? * scale)?;
    let scores = match mask {
        Some(mask) => scores.broadcast_add(&mask)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs.matmul(&values)?)
}

/// `[t, past + t]`: 0 where query `i` may see key `j` (`j <= past + i`, and within the window
/// when there is one), -inf elsewhere.
fn causal_mask(t: usize, past: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let total = past + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= past + i && window.is_none_or(|w| j + w > past + i) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, total), device)?)
}

/// transformers' `repeat_kv`: `[B, kv, L, d]` → `[B, kv × n, L, d]`, each kv head `n` times.
fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kv, l, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, n, l, d))?
        .reshape((b, kv * n, l, d))?)
}

/// Marks the rows' caches as `tokens` longer after a pass.
pub(crate) fn advance(steps: &mut [Step<'_>]) {
    for s in steps {
        s.cache.len += s.tokens.len();
        s.cache.tokens.extend_from_slice(s.tokens);
    }
}

/// The position of every new token of every row, `[B, T]` row-major.
pub(crate) fn positions(steps: &[Step<'_>]) -> Vec<u32> {
    steps
        .iter()
        .flat_map(|s| (0..s.tokens.len()).map(move |i| (s.cache.len + i) as u32))
        .collect()
}

/// The ids of a pass as a `[B, T]` tensor; all rows must have the same number of tokens.
pub(crate) fn input_ids(steps: &[Step<'_>], device: &Device) -> Result<Tensor> {
    let t = steps.first().map_or(0, |s| s.tokens.len());
    if t == 0 || steps.iter().any(|s| s.tokens.len() != t) {
        return Err(ModelError::BadBatch {
            reason: "every row of a pass takes the same number of tokens (at least one)".into(),
        });
    }
    if steps.len() > 1 && t != 1 {
        return Err(ModelError::BadBatch {
            reason: format!("a batched step takes one token a row, got {t}"),
        });
    }
    let ids: Vec<u32> = steps
        .iter()
        .flat_map(|s| s.tokens.iter().copied())
        .collect();
    Ok(Tensor::from_vec(ids, (steps.len(), t), device)?)
}

/// The last position's logits of each row of `[B, T, V]`.
pub(crate) fn last_logits(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let t = logits.dim(1)?;
    let last = logits.narrow(1, t - 1, 1)?.squeeze(1)?;
    Ok(last.to_dtype(DType::F32)?.to_vec2()?)
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
        if dtype != WeightDtype::F32 {
            return Err(ModelError::DtypeNotSupported {
                dtype,
                model_type: config.model_type.clone(),
            });
        }
        let files = WeightFiles::find(dir)?;
        let vb = files.var_builder(DType::F32, &Device::Cpu)?;
        match config.model_type.as_str() {
            "gpt2" => Ok(Self::Gpt2(super::gpt2::Gpt2::load(&vb, &config.raw)?)),
            "llama" | "mistral" | "qwen2" | "phi3" | "gemma" => Ok(Self::Llama(
                super::llama::Llama::load(&vb, &config.raw, &config.model_type)?,
            )),
            other => Err(ModelError::UnsupportedArchitecture {
                model_type: other.to_owned(),
            }),
        }
    }

    /// Runs each row's new tokens after its cache and returns each row's last logits. One row
    /// may take any number of tokens (a prompt); several rows take one token each.
    pub fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Gpt2(m) => m.forward(steps),
            Self::Llama(m) => m.forward(steps),
        }
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
        let dir = super::super::tests::fixture(name);
        let config = ModelConfig::from_dir(&dir).expect("config");
        CausalLm::load(&dir, &config, WeightDtype::F32).expect("model")
    }

    fn run(m: &CausalLm, tokens: &[u32], cache: &mut KvCache) -> Vec<f32> {
        m.forward(&mut [Step { tokens, cache }])
            .expect("forward")
            .remove(0)
    }

    /// Runs each prompt into its own cache, then `next` (one token a row) as one batched step;
    /// checks each row's logits against the same token run alone on a copy of its cache and
    /// every cache's length. Returns the batched logits.
    fn batched_step_answers_as_alone(
        m: &CausalLm,
        prompts: &[&[u32]],
        next: &[u32],
    ) -> Vec<Vec<f32>> {
        let mut caches: Vec<KvCache> = prompts
            .iter()
            .map(|p| {
                let mut c = KvCache::default();
                run(m, p, &mut c);
                c
            })
            .collect();
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
            assert_close(&run(m, std::slice::from_ref(t), cache), b);
        }
        for (c, p) in caches.iter().zip(prompts) {
            assert_eq!(c.len(), p.len() + 1);
        }
        batched
    }

    /// Rows of different lengths decoded in one batched step (keys left-padded and masked,
    /// each at its own position) give the logits each row gives alone, and a prompt run at once
    /// gives the logits of the same tokens run one by one.
    fn batched_step_equals_rows_alone(name: &str) {
        let m = model(name);
        let prompts: [&[u32]; 3] = [&[5, 6, 7], &[8, 9, 10, 11, 12, 13, 14], &[15]];
        batched_step_answers_as_alone(&m, &prompts, &[40, 41, 42]);
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
