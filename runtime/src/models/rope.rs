//! Rotary position tables of the Llama family (`llama.rs`: Llama, Mistral, Qwen2, Phi-3,
//! Gemma) as transformers 4.51.3 computes them (`modeling_rope_utils.py`): the inverse
//! frequencies of `rope_theta` over the rotary dimensions (`head_dim × partial_rotary_factor`),
//! and `rope_scaling`:
//!
//! - `linear`: frequencies divided by `factor`;
//! - `llama3`: low frequencies divided by `factor`, high ones kept, the band between smoothed;
//! - `longrope` (Phi-3; `su` is its old name): `short_factor` while a forward pass stays within
//!   `original_max_position_embeddings`, `long_factor` once it passes them (transformers decides
//!   per forward pass, on the pass's largest position: here per row, which is what the row gets
//!   when it runs alone; a cached row that reaches `original` is run again whole, see
//!   [`Rope::switch_position`]), and cos/sin scaled by the attention factor
//!   `sqrt(1 + ln(factor) / ln(original))`;
//! - `dynamic` (NTK): transformers only changes the frequencies once a sequence passes
//!   `max_position_embeddings`, which sequences here never do, so the frequencies are the
//!   default ones.
//!
//! - `yarn`: frequencies blended between the original and the interpolated ones over the
//!   `beta_fast`..`beta_slow` band, cos/sin scaled by its attention factor (`mscale`).
//!
//! Other types are refused at load with a message naming them.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/modeling_rope_utils.py

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::{ModelError, Result};

/// The rotary tables of a model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rope {
    /// Inverse frequencies, `[dim / 2]` (the short ones under longrope).
    inv_freq: Vec<f32>,
    /// Longrope: the long inverse frequencies, used by a row past `original`.
    long: Option<Vec<f32>>,
    /// Longrope's `original_max_position_embeddings`.
    original: usize,
    /// cos and sin are multiplied by it (longrope's attention factor; 1 otherwise).
    scaling: f32,
    /// Rotary dimensions of a head.
    dim: usize,
}

fn bad(reason: String) -> ModelError {
    ModelError::ConfigValue {
        key: "rope_scaling".into(),
        reason,
    }
}

/// A number of `rope_scaling`.
fn number(scaling: &Value, key: &str) -> Result<f64> {
    scaling
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| bad(format!("`{key}` is missing or not a number")))
}

/// A list of numbers of `rope_scaling`, `n` long.
fn factors(scaling: &Value, key: &str, n: usize) -> Result<Vec<f32>> {
    let list: Vec<f32> = scaling
        .get(key)
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_f64)
                .map(|v| v as f32)
                .collect()
        })
        .unwrap_or_default();
    if list.len() != n {
        return Err(bad(format!(
            "`{key}` must hold {n} numbers (half the rotary dimensions), got {}",
            list.len()
        )));
    }
    Ok(list)
}

impl Rope {
    /// The tables of `config.json` for heads of `head_dim`.
    pub(crate) fn from_config(cfg: &Value, head_dim: usize) -> Result<Self> {
        let f = |key: &str, default: f64| cfg.get(key).and_then(Value::as_f64).unwrap_or(default);
        let theta = f("rope_theta", 10_000.0) as f32;
        // transformers: int(head_dim * partial_rotary_factor).
        let dim = (head_dim as f64 * f("partial_rotary_factor", 1.0)) as usize;
        if dim == 0 || dim > head_dim || !dim.is_multiple_of(2) {
            return Err(ModelError::ConfigValue {
                key: "partial_rotary_factor".into(),
                reason: format!("gives {dim} rotary dimensions of a {head_dim}-dimension head"),
            });
        }
        // base ** (arange(0, dim, 2) / dim), in f32.
        let powers: Vec<f32> = (0..dim / 2)
            .map(|i| theta.powf((2 * i) as f32 / dim as f32))
            .collect();
        let default: Vec<f32> = powers.iter().map(|p| 1.0 / p).collect();
        let mut rope = Self {
            inv_freq: default.clone(),
            long: None,
            original: 0,
            scaling: 1.0,
            dim,
        };
        let Some(scaling) = cfg.get("rope_scaling").filter(|v| !v.is_null()) else {
            return Ok(rope);
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        match kind {
            "default" | "dynamic" => {}
            "linear" => {
                let factor = number(scaling, "factor")? as f32;
                rope.inv_freq = default.iter().map(|v| v / factor).collect();
            }
            "llama3" => rope.inv_freq = llama3(&default, scaling)?,
            "yarn" => {
                let max = cfg
                    .get("max_position_embeddings")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("yarn needs `max_position_embeddings`".into()))?
                    as f64;
                let (inv, attention) = yarn(&powers, dim, f64::from(theta), max, scaling)?;
                rope.inv_freq = inv;
                rope.scaling = attention as f32;
            }
            "longrope" | "su" => {
                let max = cfg
                    .get("max_position_embeddings")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("longrope needs `max_position_embeddings`".into()))?
                    as f64;
                let (original, factor) = match cfg
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                {
                    Some(o) => (o as f64, max / o as f64),
                    None => (max, number(scaling, "factor")?),
                };
                let attention = match scaling.get("attention_factor").and_then(Value::as_f64) {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / original.ln()).sqrt(),
                };
                let scaled = |ext: Vec<f32>| -> Vec<f32> {
                    ext.iter()
                        .zip(&powers)
                        .map(|(e, p)| 1.0 / (e * p))
                        .collect()
                };
                rope.inv_freq = scaled(factors(scaling, "short_factor", dim / 2)?);
                rope.long = Some(scaled(factors(scaling, "long_factor", dim / 2)?));
                rope.original = original as usize;
                rope.scaling = attention as f32;
            }
            other => {
                return Err(bad(format!(
                    "rotary scaling type `{other}` is not supported (supported: linear, dynamic, llama3, longrope, yarn)"
                )));
            }
        }
        Ok(rope)
    }

    /// Rotary dimensions of a head (the first ones rotate, the rest pass).
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// Longrope: `original_max_position_embeddings`, the position at which a cached sequence
    /// switches to the long factors (and its cache is recomputed); `None` otherwise.
    pub(crate) fn switch_position(&self) -> Option<usize> {
        self.long.as_ref().map(|_| self.original)
    }

    /// cos and sin `[N, dim / 2]` of every new token of a pass, `pos` being the rows' positions
    /// end to end, `lens` each row's count (a longrope row takes the long factors when its last
    /// position is past the original length).
    pub(crate) fn tables(
        &self,
        pos: &[u32],
        lens: &[usize],
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.dim / 2;
        let mut cos = Vec::with_capacity(pos.len() * half);
        let mut sin = Vec::with_capacity(pos.len() * half);
        let mut rest = pos;
        for &len in lens {
            let (row, after) = rest.split_at(len.min(rest.len()));
            rest = after;
            let last = row.last().copied().unwrap_or(0) as usize;
            let inv = match &self.long {
                Some(long) if last + 1 > self.original => long,
                _ => &self.inv_freq,
            };
            for &p in row {
                for &f in inv {
                    let angle = p as f32 * f;
                    cos.push(angle.cos() * self.scaling);
                    sin.push(angle.sin() * self.scaling);
                }
            }
        }
        let n = cos.len() / half.max(1);
        Ok((
            Tensor::from_vec(cos, (n, half), device)?,
            Tensor::from_vec(sin, (n, half), device)?,
        ))
    }
}

/// transformers' `_compute_yarn_parameters`: the inverse frequencies (f32, as torch computes
/// them) and the attention factor. `powers` are `theta^(2i/dim)`.
fn yarn(
    powers: &[f32],
    dim: usize,
    theta: f64,
    max: f64,
    scaling: &Value,
) -> Result<(Vec<f32>, f64)> {
    let get = |key: &str| scaling.get(key).and_then(Value::as_f64);
    let mut factor = number(scaling, "factor")?;
    // DeepSeek-V3 style: the ratio of the positions is the factor.
    let original = match get("original_max_position_embeddings") {
        Some(o) => {
            factor = max / o;
            o
        }
        None => max,
    };
    let mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let attention = match (
        get("attention_factor"),
        get("mscale"),
        get("mscale_all_dim"),
    ) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
            mscale(factor, m) / mscale(factor, all)
        }
        _ => mscale(factor, 1.0),
    };
    // `or 32` / `or 1`: a missing or zero value takes the default.
    let beta_fast = get("beta_fast").filter(|v| *v != 0.0).unwrap_or(32.0);
    let beta_slow = get("beta_slow").filter(|v| *v != 0.0).unwrap_or(1.0);
    let correction = |rotations: f64| {
        (dim as f64 * (original / (rotations * 2.0 * std::f64::consts::PI)).ln())
            / (2.0 * theta.ln())
    };
    let low = correction(beta_fast).floor().max(0.0);
    let high = correction(beta_slow).ceil().min(dim as f64 - 1.0);
    let (low, high) = (
        low as f32,
        if low == high { high + 0.001 } else { high } as f32,
    );
    let inv = powers
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation = 1.0 - ramp;
            let interpolated = 1.0 / (factor as f32 * p);
            interpolated * (1.0 - extrapolation) + (1.0 / p) * extrapolation
        })
        .collect();
    Ok((inv, attention))
}

/// transformers' `_compute_llama3_parameters`, in f32.
fn llama3(inv: &[f32], scaling: &Value) -> Result<Vec<f32>> {
    let factor = number(scaling, "factor")? as f32;
    let low = number(scaling, "low_freq_factor")? as f32;
    let high = number(scaling, "high_freq_factor")? as f32;
    let old = number(scaling, "original_max_position_embeddings")? as f32;
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    Ok(inv
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            if wavelen < high_wavelen || wavelen > low_wavelen {
                scaled
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (f64::from(*x) - y).abs() <= 1e-6 * y.abs().max(1e-3),
                "{a:?} vs {b:?}"
            );
        }
    }

    /// Expected values: transformers 4.51.3's `ROPE_INIT_FUNCTIONS` on the same configs
    /// (`LlamaConfig(hidden_size=64, num_attention_heads=4, rope_scaling=...)`, head_dim 16).
    #[test]
    fn inverse_frequencies_match_transformers() {
        let base = json!({"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 10000.0,
                          "max_position_embeddings": 128});
        let with = |scaling: Value| {
            let mut c = base.clone();
            c["rope_scaling"] = scaling;
            Rope::from_config(&c, 16).expect("rope")
        };
        let default = [
            1.0,
            0.316_227_76,
            0.1,
            0.031_622_78,
            0.01,
            0.003_162_278,
            0.001,
            0.000_316_227_8,
        ];
        close(&Rope::from_config(&base, 16).unwrap().inv_freq, &default);
        let linear: Vec<f64> = default.iter().map(|v| v / 2.0).collect();
        close(
            &with(json!({"rope_type": "linear", "factor": 2.0})).inv_freq,
            &linear,
        );
        close(
            &with(json!({"rope_type": "dynamic", "factor": 2.0})).inv_freq,
            &default,
        );
        // llama3, factor 8, low 1, high 4, original 64: wavelengths above 64 divided by 8,
        // below 16 kept, between smoothed.
        close(
            &with(
                json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
            )
            .inv_freq,
            &[
                1.0,
                0.244_384_59,
                0.013_042_256,
                0.003_952_847_3,
                0.00125,
                0.000_395_284_73,
                0.000_125,
                0.000_039_528_473,
            ],
        );
    }

    #[test]
    fn longrope_switches_to_the_long_factors_past_the_original_positions() {
        let cfg = json!({"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 10000.0,
            "max_position_embeddings": 128, "original_max_position_embeddings": 32,
            "partial_rotary_factor": 0.5,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.0, 1.0, 1.0],
                             "long_factor": [2.0, 2.0, 2.0, 2.0]}});
        let rope = Rope::from_config(&cfg, 16).expect("rope");
        assert_eq!(rope.dim(), 8);
        let attention = (1.0f64 + 4f64.ln() / 32f64.ln()).sqrt() as f32;
        assert!((rope.scaling - attention).abs() < 1e-7);
        let device = Device::Cpu;
        // Row 0 ends at position 31 (short), row 1 at 32 (long): position 1's angle halves.
        let (cos, _) = rope.tables(&[1, 31, 1, 32], &[2, 2], &device).unwrap();
        let cos = cos.to_vec2::<f32>().unwrap();
        assert!((cos[0][0] - 1f32.cos() * attention).abs() < 1e-6);
        assert!((cos[2][0] - 0.5f32.cos() * attention).abs() < 1e-6);
    }

    /// Expected: transformers 4.51.3's `ROPE_INIT_FUNCTIONS["yarn"]` on
    /// `LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
    /// rope_scaling=...)` (`tests/fixtures/rope/yarn.py` prints them).
    #[test]
    fn yarn_inverse_frequencies_and_attention_factor_match_transformers() {
        let with = |scaling: Value| {
            let cfg = json!({"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 10000.0,
                             "max_position_embeddings": 128, "rope_scaling": scaling});
            Rope::from_config(&cfg, 16).expect("rope")
        };
        let cases = [
            (
                json!({"rope_type": "yarn", "factor": 4.0}),
                [
                    1.0,
                    0.237_170_815,
                    0.049_999_997,
                    0.007_905_694_66,
                    0.002_499_999_94,
                    0.000_790_569_466,
                    0.000_250_000_012,
                    7.905_694_66e-05,
                ],
                1.138_629_436_111_989,
            ),
            (
                json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                       "beta_fast": 16, "beta_slow": 2}),
                [
                    1.0,
                    0.079_056_941,
                    0.025_000_000_4,
                    0.007_905_694_66,
                    0.002_499_999_94,
                    0.000_790_569_466,
                    0.000_250_000_012,
                    7.905_694_66e-05,
                ],
                1.138_629_436_111_989,
            ),
            (
                json!({"rope_type": "yarn", "factor": 2.0, "mscale": 0.707, "mscale_all_dim": 1.0}),
                [
                    1.0,
                    0.263_523_132,
                    0.066_666_662_7,
                    0.015_811_389_3,
                    0.004_999_999_89,
                    0.001_581_138_93,
                    0.000_500_000_024,
                    0.000_158_113_893,
                ],
                0.981_007_263_766_715_4,
            ),
        ];
        for (scaling, inv, attention) in cases {
            let rope = with(scaling);
            close(&rope.inv_freq, &inv);
            assert!((f64::from(rope.scaling) - attention).abs() < 1e-6);
            assert_eq!(rope.switch_position(), None);
        }
    }

    #[test]
    fn unsupported_scaling_is_refused_naming_it() {
        let cfg = json!({"rope_scaling": {"rope_type": "ntk-by-parts", "factor": 2.0}});
        let err = Rope::from_config(&cfg, 16).unwrap_err().to_string();
        assert!(err.contains("ntk-by-parts"), "{err}");
    }
}
